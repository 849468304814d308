/* cmd_bench_search.c — `barlowd bench-search`: exact top-k latency and throughput of eng_index
 * on random vectors, beside the memory-bandwidth bound measured in the same process.
 *
 * The bound: a single exact query must read every stored float once, so it cannot beat
 * (rows × stride × 4 bytes) ÷ (single-core read bandwidth). The bandwidth is measured here by
 * summing the very matrix the index scans. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/eng_index.h"
#include "engine/eng_rng.h"
#include "server/cli_util.h"
#include "server/commands.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One core's read bandwidth over the index matrix, in GB/s (best of 5 passes): an XOR over its
 * 64-bit words, which the compiler vectorises, so the loop is limited by memory, not by adds. */
static double read_bandwidth(const eng_index *ix, unsigned long long *sink) {
    size_t words = ix->n * ix->stride * sizeof(float) / sizeof(unsigned long long);
    const unsigned long long *w = (const unsigned long long *)(const void *)ix->rows;
    double best = 1e30;
    for (int pass = 0; pass < 5; pass++) {
        double t = now_ms();
        unsigned long long x = 0;
        for (size_t i = 0; i < words; i++) x ^= w[i];
        *sink ^= x;
        t = now_ms() - t;
        if (t < best) best = t;
    }
    return (double)words * sizeof *w / (best * 1e-3) / 1e9;
}

int cmd_bench_search(int argc, char **argv) {
    static const char *const known[] = {"--n", "--dim", "--queries", "--k", "--batch",
                                        "--kernel", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    long n = cli_flag_long(argc, argv, "--n", 100000, 1, 100000000);
    long dim = cli_flag_long(argc, argv, "--dim", 512, 1, 65536);
    long nq = cli_flag_long(argc, argv, "--queries", 200, 1, 1000000);
    long k = cli_flag_long(argc, argv, "--k", 10, 1, 10000);
    long batch = cli_flag_long(argc, argv, "--batch", 1000, 1, 1000000);
    const char *kernel = cli_flag(argc, argv, "--kernel");
    if (n < 0 || dim < 0 || nq < 0 || k < 0 || batch < 0) return CLI_BAD_INPUT;

    eng_err err = {{0}};
    eng_index ix;
    if (eng_index_init(&ix, (int)dim, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_FAIL;
    }
    if (kernel && eng_index_use_kernel(&ix, kernel)) {
        fprintf(stderr, "error: kernel %s is not available here\n", kernel);
        eng_index_free(&ix);
        return CLI_BAD_INPUT;
    }
    int rc = CLI_FAIL;
    eng_rng rng;
    eng_rng_seed(&rng, 1);
    size_t qn = (size_t)(nq > batch ? nq : batch) * (size_t)dim;
    float *v = malloc((size_t)dim * sizeof(float)), *qs = malloc(qn * sizeof(float));
    eng_hit *hits = malloc((size_t)batch * (size_t)k * sizeof *hits);
    int *counts = malloc((size_t)batch * sizeof *counts);
    double *lat = malloc((size_t)nq * sizeof *lat);
    if (!v || !qs || !hits || !counts || !lat) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    for (long i = 0; i < n; i++) {
        for (long j = 0; j < dim; j++) v[j] = (float)eng_rng_normal(&rng);
        if (eng_index_put(&ix, i, v, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
    }
    for (size_t i = 0; i < qn; i++) qs[i] = (float)eng_rng_normal(&rng);

    unsigned long long sink = 0;
    double gbs = read_bandwidth(&ix, &sink);
    double bound_ms = (double)ix.n * ix.stride * sizeof(float) / (gbs * 1e9) * 1e3;
    int got;
    for (long q = 0; q < nq; q++) {
        double t = now_ms();
        if (eng_index_search(&ix, qs + (size_t)q * dim, (int)k, INT64_MIN, hits, &got, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
        lat[q] = now_ms() - t;
    }
    qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
    double med = lat[nq / 2], p99 = lat[(size_t)((double)(nq - 1) * 0.99)];
    double t = now_ms();
    if (eng_index_search_batch(&ix, qs, (int)batch, (int)k, hits, counts, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    double batch_ms = now_ms() - t;
    printf("barlowd search n=%ld dim=%ld k=%ld kernel=%s single_median_ms=%.2f single_p99_ms=%.2f "
           "bound_ms=%.2f bandwidth_gbs=%.2f ratio_to_bound=%.2f batch=%ld batch_ms=%.1f "
           "batch_qps=%.0f threads=%d checksum=%llx\n",
           n, dim, k, ix.kernel, med, p99, bound_ms, gbs, med / bound_ms, batch, batch_ms,
           (double)batch / (batch_ms * 1e-3), omp_get_max_threads(), sink);
    rc = CLI_OK;
done:
    free(v);
    free(qs);
    free(hits);
    free(counts);
    free(lat);
    eng_index_free(&ix);
    return rc;
}
