/* eng_source.c — in-memory training sets from IDX files and image directories. */
#include "eng_source.h"

#include "eng_copy.h"
#include "eng_idx.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "eng_rng.h"

/* Reads a whole gzip file (e.g. Debian's dataset-fashion-mnist) decompressed into memory. */
static int read_gz(const char *path, uint8_t **data, size_t *len, eng_err *err) {
    *data = NULL;
    *len = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return eng_fail(err, "%.160s: cannot open", path);
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(gz);
            return eng_fail(err, "%.160s: out of memory", path);
        }
        if (n == cap) {
            uint8_t *more = cap < ((size_t)1 << 34) ? realloc(buf, cap * 2) : NULL;
            if (!more) {
                free(buf);
                gzclose(gz);
                return eng_fail(err, "%.160s: too large or out of memory", path);
            }
            buf = more;
            cap *= 2;
        }
        int got = gzread(gz, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (got < 0) {
            free(buf);
            gzclose(gz);
            return eng_fail(err, "%.160s: corrupt gzip data", path);
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(gz);
    *data = buf;
    *len = n;
    return 0;
}

/* Reads a whole file into a malloc'd buffer (gunzipped when the name ends in ".gz"). */
static int read_file(const char *path, uint8_t **data, size_t *len, eng_err *err) {
    size_t pl = strlen(path);
    if (pl > 3 && !strcmp(path + pl - 3, ".gz")) return read_gz(path, data, len, err);
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return eng_fail(err, "%.160s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    long size;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return eng_fail(err, "%.160s: cannot size the file", path);
    }
    buf = malloc(size ? (size_t)size : 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        fclose(f);
        return eng_fail(err, "%.160s: read failed", path);
    }
    fclose(f);
    *data = buf;
    *len = (size_t)size;
    return 0;
}

/* Converts and downscales a decoded image into the source's training copy at slot i. */
static int prepare(eng_source *src, size_t i, eng_image *img, int train_side, eng_err *err) {
    eng_image small;
    if (eng_train_copy_make(img, src->channels, train_side, &small, err)) return -1;
    src->images[i] = small;
    return 0;
}

static int grow_to(eng_source *src, size_t n, eng_err *err) {
    eng_image *imgs = realloc(src->images, (n ? n : 1) * sizeof *imgs);
    if (!imgs) return eng_fail(err, "source: out of memory for %zu images", n);
    src->images = imgs;
    return 0;
}

int eng_source_from_idx(eng_source *src, const char *path, int channels, int train_side,
                        eng_err *err) {
    memset(src, 0, sizeof *src);
    src->channels = channels;
    uint8_t *data;
    size_t len;
    eng_idx idx;
    if (read_file(path, &data, &len, err)) return -1;
    if (eng_idx_parse(data, len, &idx, err)) goto fail;
    if (idx.kind != ENG_IDX_IMAGES) {
        eng_fail(err, "%.160s: an IDX labels file, not images", path);
        goto fail;
    }
    if (grow_to(src, idx.count, err)) goto fail;
    for (size_t i = 0; i < idx.count; i++) {
        eng_image img;
        if (eng_idx_image(&idx, i, &img, err)) goto fail;
        int rc = prepare(src, i, &img, train_side, err);
        eng_image_free(&img);
        if (rc) goto fail;
        src->n = i + 1;
    }
    free(data);
    return 0;
fail:
    free(data);
    eng_source_free(src);
    return -1;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int eng_source_from_dir(eng_source *src, const char *path, int channels, int train_side,
                        eng_err *err) {
    memset(src, 0, sizeof *src);
    src->channels = channels;
    DIR *d = opendir(path);
    if (!d) return eng_fail(err, "%.160s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n_names = 0, cap = 0;
    struct dirent *e;
    int rc = -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n_names == cap) {
            cap = cap ? cap * 2 : 256;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                eng_fail(err, "source: out of memory listing %.160s", path);
                goto done;
            }
            names = nn;
        }
        names[n_names] = malloc(strlen(path) + strlen(e->d_name) + 2);
        if (!names[n_names]) {
            eng_fail(err, "source: out of memory");
            goto done;
        }
        sprintf(names[n_names], "%s/%s", path, e->d_name);
        n_names++;
    }
    /* sorted, so the same directory always gives the same image order (and the same samples) */
    qsort(names, n_names, sizeof *names, cmp_names);
    if (grow_to(src, n_names, err)) goto done;
    for (size_t i = 0; i < n_names; i++) {
        struct stat st;
        if (stat(names[i], &st) != 0 || !S_ISREG(st.st_mode)) continue;
        uint8_t *data;
        size_t len;
        if (read_file(names[i], &data, &len, err)) goto done;
        eng_image small;
        int bad = eng_train_copy_decode(data, len, ENG_DECODE_DEFAULT_MAX_PIXELS, src->channels,
                                        train_side, &small, NULL, err);
        free(data);
        if (bad) {
            eng_err inner = *err;
            eng_fail(err, "%.100s: %.140s", names[i], inner.msg);
            goto done;
        }
        src->images[src->n++] = small;
    }
    if (src->n == 0) {
        eng_fail(err, "%.160s: no images", path);
        goto done;
    }
    rc = 0;
done:
    closedir(d);
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    if (rc) eng_source_free(src);
    return rc;
}

int eng_source_open(eng_source *src, const char *path, int channels, int train_side,
                    eng_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) return eng_fail(err, "%.160s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return eng_source_from_dir(src, path, channels, train_side, err);
    return eng_source_from_idx(src, path, channels, train_side, err);
}

void eng_source_seek(eng_source *src, uint64_t seed, uint64_t batch) {
    src->seed = seed;
    src->next_batch = batch;
}

eng_aug_src eng_source_image(const eng_source *src, size_t i) {
    const eng_image *img = &src->images[i];
    eng_aug_src s = {img->width, img->height, img->channels, img->pixels};
    return s;
}

int eng_source_fill(void *ctx, eng_aug_src *srcs, int n, eng_err *err) {
    eng_source *src = ctx;
    if (src->n == 0) return eng_fail(err, "source: no images to sample");
    eng_rng rng;
    eng_rng_seed(&rng, src->seed * 0x9e3779b97f4a7c15ULL + src->next_batch);
    for (int i = 0; i < n; i++) srcs[i] = eng_source_image(src, eng_rng_next(&rng) % src->n);
    src->next_batch++;
    return 0;
}

void eng_source_free(eng_source *src) {
    for (size_t i = 0; i < src->n; i++) eng_image_free(&src->images[i]);
    free(src->images);
    memset(src, 0, sizeof *src);
}
