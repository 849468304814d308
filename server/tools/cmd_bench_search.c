/* cmd_bench_search.c — `barlowd bench-search`: exact top-k latency and throughput of eng_index
 * on random vectors, beside the memory-bandwidth bound measured in the same process.
 *
 * The bound: a single exact query must read every stored float once, so it cannot beat
 * (rows × stride × 4 bytes) ÷ (single-core read bandwidth). The bandwidth is measured here by
 * summing the very matrix the index scans.
 *
 * The compact pass (the int8 pass: int8 first pass, exact re-ranking of the best
 * R = max(rerank·k, k + 32)) is timed on the same queries and reported beside it: its latency,
 * its recall@k against the exact results of the same queries (a hit tying the exact k-th score
 * counts as found), and its median's ratio to the fp32 bound (below 1 means faster than any exact
 * fp32 scan can be). int8_bound_ms is the same bound for the int8 copy's bytes.
 *
 * --dump-prefix P writes the generated vectors as raw float32 (P.base.f32 [n, dim],
 * P.query.f32 [max(queries, batch), dim], as generated, not normalised) and the exact top-k ids
 * of the timed queries (P.truth.i64 [queries, k], int64 LE), so that a peer (bench/search_faiss.py)
 * searches the very same data and can check its answers. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "eng_index.h"
#include "eng_rng.h"
#include "cli_util.h"
#include "commands.h"

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
/* XOR of every 64-bit word: the compiler vectorises it at -O2 (SSE/AVX2 width). */
static unsigned long long xor_words(const unsigned long long *w, size_t words) {
    unsigned long long x = 0;
    for (size_t i = 0; i < words; i++) x ^= w[i];
    return x;
}

/* The same with 512-bit loads and four independent accumulators, where the CPU has AVX-512:
 * narrower loads left single-core bandwidth unmeasured (the exact scan beat the "bound"). */
__attribute__((target("avx512f"))) static unsigned long long xor_words_avx512(
    const unsigned long long *w, size_t words) {
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= words; i += 32) {
        a = _mm512_xor_si512(a, _mm512_load_si512((const void *)(w + i)));
        b = _mm512_xor_si512(b, _mm512_load_si512((const void *)(w + i + 8)));
        c = _mm512_xor_si512(c, _mm512_load_si512((const void *)(w + i + 16)));
        d = _mm512_xor_si512(d, _mm512_load_si512((const void *)(w + i + 24)));
    }
    unsigned long long out[8];
    _mm512_storeu_si512((void *)out,
                        _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
    unsigned long long x = 0;
    for (int k = 0; k < 8; k++) x ^= out[k];
    return x ^ xor_words(w + i, words - i);
}

/* One core's read bandwidth over the index matrix, in GB/s: the best of 5 passes of the widest
 * streaming read this CPU has, so the bound is not set by the probe's own arithmetic. */
static double read_bandwidth(const eng_index *ix, unsigned long long *sink) {
    size_t words = ix->n * ix->stride * sizeof(float) / sizeof(unsigned long long);
    const unsigned long long *w = (const unsigned long long *)(const void *)ix->rows;
    __builtin_cpu_init();
    int wide = __builtin_cpu_supports("avx512f");
    double best = 1e30;
    for (int pass = 0; pass < 5; pass++) {
        double t = now_ms();
        *sink ^= wide ? xor_words_avx512(w, words) : xor_words(w, words);
        t = now_ms() - t;
        if (t < best) best = t;
    }
    return (double)words * sizeof *w / (best * 1e-3) / 1e9;
}

/* Writes count items of size bytes to path; -1 with a message on failure. */
static int write_raw(const char *path, const void *data, size_t size, size_t count) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, size, count, f) != count || fclose(f) != 0) {
        fprintf(stderr, "error: cannot write %s\n", path);
        return -1;
    }
    return 0;
}


int cmd_bench_search(int argc, char **argv) {
    static const char *const known[] = {"--n", "--dim", "--queries", "--k", "--batch",
                                        "--kernel", "--kernel8", "--rerank", "--dump-prefix",
                                        NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    long n = cli_flag_long(argc, argv, "--n", 100000, 1, 100000000);
    long dim = cli_flag_long(argc, argv, "--dim", 512, 1, 65536);
    long nq = cli_flag_long(argc, argv, "--queries", 200, 1, 1000000);
    long k = cli_flag_long(argc, argv, "--k", 10, 1, 10000);
    long batch = cli_flag_long(argc, argv, "--batch", 1000, 1, 1000000);
    long rerank = cli_flag_long(argc, argv, "--rerank", ENG_INDEX_RERANK_FACTOR, 1, 100000);
    const char *kernel = cli_flag(argc, argv, "--kernel");
    const char *kernel8 = cli_flag(argc, argv, "--kernel8");
    const char *dump = cli_flag(argc, argv, "--dump-prefix");
    if (n < 0 || dim < 0 || nq < 0 || k < 0 || batch < 0 || rerank < 0) return CLI_BAD_INPUT;

    eng_err err = {0};
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
    if (kernel8 && eng_index_use_kernel8(&ix, kernel8)) {
        fprintf(stderr, "error: int8 kernel %s is not available here\n", kernel8);
        eng_index_free(&ix);
        return CLI_BAD_INPUT;
    }
    int rc = CLI_FAIL;
    FILE *base = NULL;
    char path[4096];
    eng_rng rng;
    eng_rng_seed(&rng, 1);
    size_t qn = (size_t)(nq > batch ? nq : batch) * (size_t)dim;
    float *v = malloc((size_t)dim * sizeof(float)), *qs = malloc(qn * sizeof(float));
    eng_hit *hits = malloc((size_t)batch * (size_t)k * sizeof *hits);
    int *counts = malloc((size_t)batch * sizeof *counts);
    double *lat = malloc((size_t)nq * sizeof *lat);
    eng_hit *exact = malloc((size_t)nq * (size_t)k * sizeof *exact);
    eng_hit *fast = malloc((size_t)k * sizeof *fast);
    int *n_exact = malloc((size_t)nq * sizeof *n_exact);
    int64_t *truth = malloc((size_t)nq * (size_t)k * sizeof *truth);
    if (!v || !qs || !hits || !counts || !lat || !exact || !fast || !n_exact || !truth) {
        fprintf(stderr, "error: out of memory\n");
        goto done;
    }
    if (dump) {
        snprintf(path, sizeof path, "%s.base.f32", dump);
        if (!(base = fopen(path, "wb"))) {
            fprintf(stderr, "error: cannot write %s\n", path);
            goto done;
        }
    }
    for (long i = 0; i < n; i++) {
        for (long j = 0; j < dim; j++) v[j] = (float)eng_rng_normal(&rng);
        if (base && fwrite(v, sizeof(float), (size_t)dim, base) != (size_t)dim) {
            fprintf(stderr, "error: cannot write %s\n", path);
            goto done;
        }
        if (eng_index_put(&ix, i, v, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
    }
    for (size_t i = 0; i < qn; i++) qs[i] = (float)eng_rng_normal(&rng);
    if (base) {
        int bad = fclose(base) != 0;
        base = NULL;
        snprintf(path, sizeof path, "%s.query.f32", dump);
        if (bad || write_raw(path, qs, sizeof(float), qn)) goto done;
    }

    unsigned long long sink = 0;
    double gbs = read_bandwidth(&ix, &sink);
    double bound_ms = (double)ix.n * ix.stride * sizeof(float) / (gbs * 1e9) * 1e3;
    int got;
    for (long q = 0; q < nq; q++) {
        double t = now_ms();
        if (eng_index_search(&ix, qs + (size_t)q * dim, (int)k, NULL, hits, &got, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
        lat[q] = now_ms() - t;
        for (int i = 0; i < got; i++) exact[(size_t)q * k + i] = hits[i];
        n_exact[q] = got;
    }
    qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
    double med = lat[nq / 2], p99 = lat[(size_t)((double)(nq - 1) * 0.99)];
    if (dump) {
        for (long q = 0; q < nq; q++)
            for (long i = 0; i < k; i++)
                truth[q * k + i] = i < n_exact[q] ? exact[q * k + i].id : -1;
        snprintf(path, sizeof path, "%s.truth.i64", dump);
        if (write_raw(path, truth, sizeof *truth, (size_t)(nq * k))) goto done;
    }

    /* the compact pass on the same queries */
    double recall = 0;
    for (long q = 0; q < nq; q++) {
        double t = now_ms();
        if (eng_index_search(&ix, qs + (size_t)q * dim, (int)k,
                             &(eng_search_opts){.pass = ENG_INDEX_INT8, .exclude = INT64_MIN, .rerank = (int)rerank}, fast, &got,
                             &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
        lat[q] = now_ms() - t;
        recall += eng_index_recall(fast, got, exact + (size_t)q * k, n_exact[q]);
    }
    recall /= (double)nq;
    qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
    double fmed = lat[nq / 2], fp99 = lat[(size_t)((double)(nq - 1) * 0.99)];
    double bound8_ms = (double)ix.n * ix.stride8 / (gbs * 1e9) * 1e3;
    double t = now_ms();
    if (eng_index_search_batch(&ix, qs, (int)batch, (int)k, NULL, hits, counts, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    double batch_ms = now_ms() - t;
    printf("barlowd search n=%ld dim=%ld k=%ld kernel=%s single_median_ms=%.2f single_p99_ms=%.2f "
           "bound_ms=%.2f bandwidth_gbs=%.2f ratio_to_bound=%.2f batch=%ld batch_ms=%.1f "
           "batch_qps=%.0f threads=%d fast_kernel=%s rerank=%ld fast_median_ms=%.2f "
           "fast_p99_ms=%.2f fast_recall_at_k=%.4f fast_ratio_to_bound=%.2f "
           "fast_speedup=%.2f int8_bound_ms=%.2f checksum=%llx\n",
           n, dim, k, ix.kernel, med, p99, bound_ms, gbs, med / bound_ms, batch, batch_ms,
           (double)batch / (batch_ms * 1e-3), omp_get_max_threads(), ix.kernel8, rerank, fmed,
           fp99, recall, fmed / bound_ms, med / fmed, bound8_ms, sink);
    rc = CLI_OK;
done:
    free(v);
    free(qs);
    free(hits);
    free(counts);
    free(lat);
    free(exact);
    free(fast);
    free(n_exact);
    free(truth);
    if (base) fclose(base);
    eng_index_free(&ix);
    return rc;
}
