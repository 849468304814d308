/* cmd_bench_ingest.c — `barlowd bench-ingest`: images saved per second into a fresh SQLite store
 * by 1, 8 and 32 concurrent writer threads, with synchronous=FULL and NORMAL.
 *
 * The images are small valid PNGs (28×28 grayscale, encoded with libpng before the clock starts,
 * each with different pixels so none is deduplicated), stored with a training copy of the same
 * bytes, as an upload of an image already at training size would be. Each configuration gets a
 * new database (in a temporary directory, or at --db, which must not exist and is deleted after
 * each configuration), and its writers split the images between them and start together (the
 * clock runs from their release to the last one's end). The
 * store group-commits concurrent uploads, so more writers mean fewer fsyncs per image. Prints
 * one line per configuration:
 *   barlowd ingest writers=W sync=full|normal images=N seconds=S images_per_s=R target=2000
 * The target (≥ 2,000 images/s with FULL) is printed for comparison, never asserted. */
#include <errno.h>
#include <png.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "store.h"

#define IMG_SIDE 28
#define MAX_WRITERS 256

typedef struct png_buf {
    unsigned char *data;
    size_t len, cap;
    int oom;
} png_buf;

static void png_buf_write(png_structp png, png_bytep bytes, png_size_t len) {
    png_buf *b = png_get_io_ptr(png);
    if (b->oom) return;
    if (b->len + len > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 512) + len;
        unsigned char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

static void png_buf_flush(png_structp png) { (void)png; }

/* Encodes a side×side 8-bit grayscale image as PNG into *out (malloc'd data); -1 on failure. */
static int encode_png(const unsigned char *pixels, int side, png_buf *out) {
    memset(out, 0, sizeof *out);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(out->data);
        out->data = NULL;
        return -1;
    }
    png_set_write_fn(png, out, png_buf_write, png_buf_flush);
    png_set_IHDR(png, info, (png_uint_32)side, (png_uint_32)side, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < side; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * side));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (out->oom) {
        free(out->data);
        out->data = NULL;
        return -1;
    }
    return 0;
}

/* Holds the writers until every one is running: go is 0 (wait), 1 (start) or -1 (abort). */
typedef struct start_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
} start_gate;

static void gate_open(start_gate *g, int go) {
    pthread_mutex_lock(&g->mu);
    g->go = go;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct writer {
    store *s;
    const png_buf *imgs;
    long n_imgs;
    int index, stride; /* this writer saves images index, index + stride, ... */
    struct start_gate *gate;
    long saved, duplicates;
    int failed;
    store_err err;
} writer;

static void *writer_main(void *arg) {
    writer *w = arg;
    pthread_mutex_lock(&w->gate->mu);
    while (!w->gate->go) pthread_cond_wait(&w->gate->cv, &w->gate->mu);
    int go = w->gate->go;
    pthread_mutex_unlock(&w->gate->mu);
    if (go < 0) return NULL;
    for (long i = w->index; i < w->n_imgs; i += w->stride) {
        store_image_in in = {.bytes = w->imgs[i].data,
                             .len = w->imgs[i].len,
                             .media_type = "image/png",
                             .width = IMG_SIDE,
                             .height = IMG_SIDE,
                             .train_copy = w->imgs[i].data,
                             .train_len = w->imgs[i].len,
                             .meta_json = NULL};
        int64_t id;
        int existed;
        if (store_image_put(w->s, &in, &id, &existed, &w->err)) {
            w->failed = 1;
            return NULL;
        }
        w->saved++;
        w->duplicates += existed;
    }
    return NULL;
}

static void remove_db(const char *path) {
    static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
    char p[4200];
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

/* One configuration: a fresh store at path, `writers` threads, all images. Prints its line. */
static int run_config(const char *path, int writers, int sync_full, const png_buf *imgs, long n) {
    store_opts o = store_defaults();
    o.synchronous_full = sync_full;
    store *s = NULL;
    store_err err = {0};
    if (store_open(path, &o, &s, &err)) {
        fprintf(stderr, "error: store %s: %s\n", path, err.msg);
        return -1;
    }
    writer w[MAX_WRITERS];
    pthread_t th[MAX_WRITERS];
    start_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int started = 0, rc = 0;
    for (int i = 0; i < writers; i++) {
        w[i] = (writer){.s = s, .imgs = imgs, .n_imgs = n, .index = i, .stride = writers,
                        .gate = &gate};
        if (pthread_create(&th[i], NULL, writer_main, &w[i]) != 0) break;
        started++;
    }
    if (started < writers) { /* cannot start them all: release the started ones unworked */
        fprintf(stderr, "error: could not start %d writer threads\n", writers);
        rc = -1;
    }
    double t0 = cli_now();
    gate_open(&gate, rc ? -1 : 1);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    double secs = cli_now() - t0;
    pthread_mutex_destroy(&gate.mu);
    pthread_cond_destroy(&gate.cv);
    long saved = 0, dups = 0;
    for (int i = 0; i < started; i++) {
        if (w[i].failed) {
            fprintf(stderr, "error: writer %d: %s\n", i, w[i].err.msg);
            rc = -1;
        }
        saved += w[i].saved;
        dups += w[i].duplicates;
    }
    int64_t count = store_image_count(s);
    store_close(s);
    if (rc) return -1;
    if (dups || count != n) {
        fprintf(stderr, "error: %ld images saved, %ld deduplicated, %lld in the store; want %ld\n",
                saved, dups, (long long)count, n);
        return -1;
    }
    printf("barlowd ingest writers=%d sync=%s images=%ld seconds=%.3f images_per_s=%.0f "
           "target=2000\n",
           writers, sync_full ? "full" : "normal", n, secs, (double)n / secs);
    fflush(stdout);
    return 0;
}

/* Parses a comma-separated list of writer counts in [1, MAX_WRITERS]; returns how many, -1. */
static int parse_writers(const char *s, int *out, int max) {
    int m = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 1 || v > MAX_WRITERS || m == max || (*end && *end != ','))
            return -1;
        out[m++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return m ? m : -1;
}

int cmd_bench_ingest(int argc, char **argv) {
    static const char *const known[] = {"--db", "--writers", "--images", "--sync", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *db = cli_flag(argc, argv, "--db");
    const char *wlist = cli_flag(argc, argv, "--writers");
    const char *sync = cli_flag(argc, argv, "--sync");
    long n = cli_flag_long(argc, argv, "--images", 2000, 1, 10000000);
    if (n < 0) return CLI_BAD_INPUT;
    int writers[16];
    int n_writers = parse_writers(wlist ? wlist : "1,8,32", writers, 16);
    if (n_writers < 0) {
        fprintf(stderr, "error: --writers wants up to 16 comma-separated counts in [1, %d]\n",
                MAX_WRITERS);
        return CLI_BAD_INPUT;
    }
    int syncs[2], n_syncs = 0;
    if (!sync || !strcmp(sync, "full")) syncs[n_syncs++] = 1;
    if (!sync || !strcmp(sync, "normal")) syncs[n_syncs++] = 0;
    if (!n_syncs) {
        fprintf(stderr, "error: --sync must be full or normal (default: both)\n");
        return CLI_BAD_INPUT;
    }
    if (db && access(db, F_OK) == 0) {
        fprintf(stderr, "error: --db %s already exists; bench-ingest creates (and deletes) it\n",
                db);
        return CLI_BAD_INPUT;
    }

    int rc = CLI_FAIL;
    char dir[] = "/tmp/barlowd-ingest-XXXXXX", path[4096];
    int made_dir = 0;
    png_buf *imgs = calloc((size_t)n, sizeof *imgs);
    unsigned char px[IMG_SIDE * IMG_SIDE];
    if (!imgs) {
        fprintf(stderr, "error: out of memory\n");
        return CLI_FAIL;
    }
    uint64_t st = 0x9e3779b97f4a7c15ULL;
    for (long i = 0; i < n; i++) { /* random pixels, the image's number in the first four */
        for (size_t j = 0; j < sizeof px; j++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            px[j] = (unsigned char)(st >> 56);
        }
        for (int j = 0; j < 4; j++) px[j] = (unsigned char)((unsigned long)i >> (8 * j));
        if (encode_png(px, IMG_SIDE, &imgs[i])) {
            fprintf(stderr, "error: PNG encoding failed\n");
            goto done;
        }
    }
    if (db) {
        snprintf(path, sizeof path, "%s", db);
    } else {
        if (!mkdtemp(dir)) {
            fprintf(stderr, "error: cannot create a temporary directory: %s\n", strerror(errno));
            goto done;
        }
        made_dir = 1;
        snprintf(path, sizeof path, "%s/ingest.db", dir);
    }
    size_t total = 0;
    for (long i = 0; i < n; i++) total += imgs[i].len;
    fprintf(stderr, "bench-ingest: %ld PNGs of %dx%d (%zu bytes on average) into %s\n", n,
            IMG_SIDE, IMG_SIDE, total / (size_t)n, path);
    for (int si = 0; si < n_syncs; si++)
        for (int wi = 0; wi < n_writers; wi++) {
            remove_db(path);
            int bad = run_config(path, writers[wi], syncs[si], imgs, n);
            remove_db(path);
            if (bad) goto done;
        }
    rc = CLI_OK;
done:
    for (long i = 0; i < n; i++) free(imgs[i].data);
    free(imgs);
    if (made_dir) rmdir(dir);
    return rc;
}
