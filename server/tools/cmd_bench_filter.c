/* cmd_bench_filter.c — `barlowd bench-filter`: filtered exact search against the unfiltered scan
 * on the same index and queries, through the real pieces: a SQLite store (a temporary file)
 * holding n images whose metadata puts a known fraction of them under each filter, the store's
 * in-memory metadata index evaluating the filter, and eng_index scanning only the matching rows.
 *
 * Each image i gets {"bucket": h(i) mod 100, "label": "l" + h(i) mod 10} (h a hash), so
 * {"bucket": {"$lt": P}} matches P% of them (a range: many postings ORed) and {"label": "l3"}
 * 10% (one posting). Every query is timed unfiltered and with each filter in turn (interleaved,
 * so drift hits all alike); a filtered time includes evaluating the filter (whose own median is
 * printed too). Prints the medians and their ratios to the unfiltered median. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "eng_index.h"
#include "eng_rng.h"
#include "store.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

#define N_FILTERS 4
static const struct {
    const char *name, *json;
    double fraction;
} filters[N_FILTERS] = {
    {"range_50pct", "{\"bucket\": {\"$lt\": 50}}", 0.5},
    {"range_10pct", "{\"bucket\": {\"$lt\": 10}}", 0.1},
    {"range_1pct", "{\"bucket\": {\"$lt\": 1}}", 0.01},
    {"equal_10pct", "{\"label\": \"l3\"}", 0.1},
};

/* Fills a fresh store with n images and their metadata; their ids go to ids. */
static int fill_store(store *st, long n, int64_t *ids) {
    for (long i = 0; i < n; i++) {
        uint64_t bytes[2] = {(uint64_t)i, 0x62617266696c7472ULL};
        uint64_t h = mix((uint64_t)i + 1);
        char meta[64];
        snprintf(meta, sizeof meta, "{\"bucket\": %d, \"label\": \"l%d\"}", (int)(h % 100),
                 (int)(h / 100 % 10));
        store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, NULL, 0, meta};
        store_err se = {0};
        if (store_image_put(st, &in, &ids[i], NULL, &se)) {
            fprintf(stderr, "error: %s\n", se.msg);
            return -1;
        }
    }
    return 0;
}

int cmd_bench_filter(int argc, char **argv) {
    static const char *const known[] = {"--n", "--dim", "--queries", "--k", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    long n = cli_flag_long(argc, argv, "--n", 100000, 1, 10000000);
    long dim = cli_flag_long(argc, argv, "--dim", 256, 1, 65536);
    long nq = cli_flag_long(argc, argv, "--queries", 200, 1, 100000);
    long k = cli_flag_long(argc, argv, "--k", 10, 1, 10000);
    if (n < 0 || dim < 0 || nq < 0 || k < 0) return CLI_BAD_INPUT;

    int rc = CLI_FAIL;
    char dir[] = "/tmp/barlowd-bench-filter-XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return CLI_FAIL;
    }
    snprintf(path, sizeof path, "%s/bench.db", dir);
    store *st = NULL;
    store_opts so = store_defaults();
    so.synchronous_full = 0;
    store_err se = {0};
    eng_err err = {0};
    eng_index ix = {0};
    store_filter *flt[N_FILTERS] = {0};
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    float *v = malloc((size_t)dim * sizeof *v), *qs = malloc((size_t)nq * dim * sizeof *qs);
    double *lat = malloc((size_t)nq * (N_FILTERS + 1) * sizeof *lat);
    double *eval = malloc((size_t)nq * N_FILTERS * sizeof *eval);
    eng_hit *hits = malloc((size_t)k * sizeof *hits);
    if (!ids || !v || !qs || !lat || !eval || !hits) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    if (store_open(path, &so, &st, &se)) {
        fprintf(stderr, "error: %s\n", se.msg);
        goto done;
    }
    double t0 = now_ms();
    if (fill_store(st, n, ids)) goto done;
    double fill_s = (now_ms() - t0) / 1e3;
    if (eng_index_init(&ix, (int)dim, &err)) goto engine_fail;
    eng_rng rng;
    eng_rng_seed(&rng, 1);
    for (long i = 0; i < n; i++) {
        for (long j = 0; j < dim; j++) v[j] = (float)eng_rng_normal(&rng);
        if (eng_index_put(&ix, ids[i], v, &err)) goto engine_fail;
    }
    for (long i = 0; i < nq * dim; i++) qs[i] = (float)eng_rng_normal(&rng);
    for (int f = 0; f < N_FILTERS; f++)
        if (store_filter_parse(filters[f].json, strlen(filters[f].json), &flt[f], &se)) {
            fprintf(stderr, "error: %s\n", se.msg);
            goto done;
        }
    int64_t matched[N_FILTERS] = {0};
    for (long q = 0; q < nq; q++) {
        const float *query = qs + (size_t)q * dim;
        int got;
        for (int f = -1; f < N_FILTERS; f++) {
            eng_search_opts o = eng_search_defaults();
            eng_idset set = {0};
            double t = now_ms();
            if (f >= 0) {
                if (store_filter_eval(st, flt[f], &set, &se)) {
                    fprintf(stderr, "error: %s\n", se.msg);
                    goto done;
                }
                o.allow = &set;
                eval[(size_t)f * nq + q] = now_ms() - t;
            }
            int bad = eng_index_search(&ix, query, (int)k, &o, hits, &got, &err);
            lat[(size_t)(f + 1) * nq + q] = now_ms() - t;
            if (f >= 0 && q == 0) matched[f] = eng_idset_count(&set);
            eng_idset_free(&set);
            if (bad) goto engine_fail;
        }
    }
    for (int f = 0; f <= N_FILTERS; f++)
        qsort(lat + (size_t)f * nq, (size_t)nq, sizeof *lat, cmp_double);
    for (int f = 0; f < N_FILTERS; f++)
        qsort(eval + (size_t)f * nq, (size_t)nq, sizeof *eval, cmp_double);
    double base = lat[nq / 2];
    printf("barlowd filter n=%ld dim=%ld k=%ld kernel=%s queries=%ld store_fill_s=%.1f "
           "unfiltered_median_ms=%.3f unfiltered_p99_ms=%.3f",
           n, dim, k, ix.kernel, nq, fill_s, base, lat[(size_t)((double)(nq - 1) * 0.99)]);
    for (int f = 0; f < N_FILTERS; f++) {
        const double *l = lat + (size_t)(f + 1) * nq;
        printf(" %s_matched=%.4f %s_median_ms=%.3f %s_p99_ms=%.3f %s_ratio=%.3f %s_eval_ms=%.3f",
               filters[f].name, (double)matched[f] / (double)n, filters[f].name, l[nq / 2],
               filters[f].name, l[(size_t)((double)(nq - 1) * 0.99)], filters[f].name,
               l[nq / 2] / base, filters[f].name, eval[(size_t)f * nq + nq / 2]);
    }
    printf("\n");
    rc = CLI_OK;
    goto done;
engine_fail:
    fprintf(stderr, "error: %s\n", err.msg);
done:
    for (int f = 0; f < N_FILTERS; f++) store_filter_free(flt[f]);
    eng_index_free(&ix);
    store_close(st);
    char db[96];
    const char *const suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(db, sizeof db, "%s%s", path, suffixes[i]);
        unlink(db);
    }
    rmdir(dir);
    free(ids);
    free(v);
    free(qs);
    free(lat);
    free(eval);
    free(hits);
    return rc;
}
