/* export_case.c — see export_case.h. Plain C (no Criterion), so the export_case tool links it. */
#include "export_case.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_checkpoint.h"
#include "eng_infer.h"
#include "eng_rng.h"
#include "store.h"

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A whole file (malloc'd). */
static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)size + 1)) &&
        fread(b, 1, (size_t)size, f) != (size_t)size) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = size > 0 ? (size_t)size : 0;
    return b;
}

static int write_all(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return (fclose(f) != 0 || w != n) ? -1 : 0;
}

int export_fixture_blob(const char *fixtures, const char *name, uint64_t step, uint8_t **blob,
                        size_t *len, char *err, size_t err_len) {
    *blob = NULL;
    char path[512];
    size_t n;
    eng_config cfg;
    eng_err e = {0};
    snprintf(path, sizeof path, "%s/%s/config.json", fixtures, name);
    if (eng_config_load(&cfg, path, &e)) return fail(err, err_len, "%s", e.msg);
    snprintf(path, sizeof path, "%s/%s/params.bin", fixtures, name);
    uint8_t *params = read_all(path, &n);
    if (!params) return fail(err, err_len, "cannot read %s", path);
    eng_model m;
    if (eng_model_build(&m, &cfg, 2, 1, &e)) {
        free(params);
        return fail(err, err_len, "%s", e.msg);
    }
    int rc = -1;
    if (n != m.n_floats * sizeof(float)) {
        fail(err, err_len, "%s: %zu bytes for %zu parameters", path, n, m.n_floats);
        goto done;
    }
    memcpy(m.params, params, n);
    eng_rng r;
    eng_rng_seed(&r, 0x5eed + step);
    float *stat = m.stats; /* per batch norm in canonical order: mean[C], then var[C] */
    for (int b = 0; b < m.n_bn; b++) {
        int c = m.bn_list[b]->c;
        for (int i = 0; i < c; i++) stat[i] = (float)(0.3 * eng_rng_normal(&r));
        for (int i = 0; i < c; i++) stat[c + i] = (float)(0.5 + 1.5 * eng_rng_uniform(&r));
        stat += 2 * (size_t)c;
    }
    if (stat != m.stats + m.n_stats) {
        fail(err, err_len, "the batch norms hold %zu statistics, the model %zu",
             (size_t)(stat - m.stats), m.n_stats);
        goto done;
    }
    eng_ckpt_meta meta = {.step = step, .loss = NAN};
    if (eng_checkpoint_save(&m, &meta, blob, len, &e)) {
        fail(err, err_len, "%s", e.msg);
        goto done;
    }
    rc = 0;
done:
    eng_model_free(&m);
    free(params);
    return rc;
}

/* Image i of a case: its size (S/2 to about 2S a side, as training copies are; square and not)
 * and its pixels (smooth patterns with a little noise), all from i. */
static void image_size(int i, int s, int *w, int *h) {
    static const int num[][2] = {{4, 4}, {5, 3}, {8, 6}, {2, 3}, {7, 8}, {3, 3}, {6, 5}};
    const int k = i % (int)(sizeof num / sizeof *num);
    *w = num[k][0] * s / 4 + i / 7;
    *h = num[k][1] * s / 4 + i / 7;
}

static void image_pixels(int i, int w, int h, int c, uint8_t *px) {
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
    for (int y = 0; y < h; y++)
        for (int col = 0; col < w; col++)
            for (int k = 0; k < c; k++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                double v = 128 + 90 * sin(0.37 * col * (k + 1) + 0.23 * y + i) *
                                     cos(0.19 * y * (i % 3 + 1) - 0.11 * col);
                int q = (int)v + (int)(x >> 60) - 8;
                px[((size_t)y * w + col) * c + k] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
            }
}

int export_case_write(const char *dir, const uint8_t *blob, size_t len, int n_images, char *err,
                      size_t err_len) {
    if (n_images < 1 || n_images > 64) return fail(err, err_len, "1 to 64 images");
    eng_infer inf;
    eng_err e = {0};
    if (eng_infer_create(&inf, blob, len, n_images, 1, &e)) return fail(err, err_len, "%s", e.msg);
    int s = inf.cfg.input_size, c = inf.cfg.in_channels, dim = inf.dim, rc = -1;
    size_t per = (size_t)c * s * s, total = 0;
    int sizes[64][2];
    for (int i = 0; i < n_images; i++) {
        image_size(i, s, &sizes[i][0], &sizes[i][1]);
        total += (size_t)sizes[i][0] * sizes[i][1] * c;
    }
    uint8_t *pixels = malloc(total);
    float *input = malloc(sizeof(float) * per * (size_t)n_images);
    float *want = malloc(sizeof(float) * (size_t)dim * (size_t)n_images);
    eng_aug_src srcs[64];
    char json[4096];
    store *st = NULL;
    if (!pixels || !input || !want) {
        fail(err, err_len, "out of memory");
        goto done;
    }
    int at = snprintf(json, sizeof json, "{\"n\": %d, \"channels\": %d, \"size\": %d, "
                      "\"dim\": %d, \"images\": [", n_images, c, s, dim);
    size_t off = 0;
    for (int i = 0; i < n_images; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        image_pixels(i, w, h, c, pixels + off);
        srcs[i] = (eng_aug_src){.width = w, .height = h, .channels = c, .pixels = pixels + off};
        off += (size_t)w * h * c;
        if (eng_infer_view(&inf.view, &srcs[i], input + per * (size_t)i, &e)) {
            fail(err, err_len, "%s", e.msg);
            goto done;
        }
        at += snprintf(json + at, sizeof json - (size_t)at, "%s[%d, %d]", i ? ", " : "", w, h);
    }
    snprintf(json + at, sizeof json - (size_t)at, "]}\n");
    if (eng_infer_embed(&inf, srcs, n_images, want, &e)) {
        fail(err, err_len, "%s", e.msg);
        goto done;
    }
    if (write_all(dir, "case.json", json, strlen(json)) ||
        write_all(dir, "pixels.u8", pixels, total) ||
        write_all(dir, "input.f32", input, sizeof(float) * per * (size_t)n_images) ||
        write_all(dir, "want.f32", want, sizeof(float) * (size_t)dim * (size_t)n_images)) {
        fail(err, err_len, "cannot write the case files in %s", dir);
        goto done;
    }
    char db[512];
    snprintf(db, sizeof db, "%s/barlowd.db", dir);
    store_err se = {0};
    char *model_json = eng_config_to_json(&inf.cfg);
    int64_t version;
    if (!model_json || store_open(db, NULL, &st, &se) ||
        store_checkpoint_put(st, (int64_t)inf.step, model_json, NAN, blob, len, 0, &version,
                             &se)) {
        free(model_json);
        fail(err, err_len, "store %s: %s", db, se.msg);
        goto done;
    }
    free(model_json);
    rc = 0;
done:
    if (st) store_close(st);
    free(pixels);
    free(input);
    free(want);
    eng_infer_free(&inf);
    return rc;
}
