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
 * searches the very same data and can check its answers.
 *
 * --data clusters draws the vectors (base and queries) from a Gaussian mixture of --clusters
 * centres (unit normals per component) with --sigma spread per component, instead of plain
 * normals (--data random, "uniformly random directions").
 *
 * --ann 1 adds the approximate pass: builds the HNSW graph (--m, --ef-construction; OpenMP's
 * threads) and reports its build time, its bytes and the process's resident memory, then times
 * single queries at each ef of --ef (comma-separated) with recall@k against the exact answers of
 * the same queries: one `barlowd ann ...` line per ef; then, per filter share from 50% down to
 * 0.2%, the exact scan of the allowed rows beside the graph walk forced at that size (one
 * `barlowd ann_filter ...` line each). --skip-int8 1 leaves out the int8 pass
 * and the batch (for large runs where only the graph is of interest). */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* A line of /proc/self/status in kB ("VmRSS:", "VmHWM:"); -1 when absent. */
static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) kb = strtol(line + kl, NULL, 10);
    if (f) fclose(f);
    return kb;
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

/* One vector: plain normals (centres NULL), or a random centre plus sigma·normals. */
static void draw(eng_rng *rng, const float *centres, long n_clusters, double sigma, float *v,
                 long dim) {
    if (!centres) {
        for (long j = 0; j < dim; j++) v[j] = (float)eng_rng_normal(rng);
        return;
    }
    const float *c = centres + (size_t)(eng_rng_next(rng) % (uint64_t)n_clusters) * (size_t)dim;
    for (long j = 0; j < dim; j++) v[j] = c[j] + (float)(sigma * eng_rng_normal(rng));
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

/* Filtered queries allowing a share of the ids (id mod 1000 below share·1000): the exact scan of
 * the allowed rows beside the graph walk forced for every filter size (ef = the graph's
 * default), with the walk's recall against the scan; where the walk starts to win tells the
 * index's exact-below threshold (eng_index_hnsw_filter_exact_below). */
static int run_filtered(eng_index *ix, const float *qs, long nq, long k, long dim, double *lat,
                        eng_hit *hits) {
    static const double shares[] = {0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.002};
    eng_err err = {0};
    eng_hit *want = malloc((size_t)nq * (size_t)k * sizeof *want);
    int *n_want = malloc((size_t)nq * sizeof *n_want);
    eng_idset allow = {0};
    int rc = -1;
    if (!want || !n_want || eng_idset_init(&allow, (int64_t)ix->n, &err)) goto done;
    for (size_t si = 0; si < sizeof shares / sizeof *shares; si++) {
        eng_idset_clear(&allow);
        for (size_t i = 0; i < ix->n; i++)
            if ((double)(ix->ids[i] % 1000) < shares[si] * 1000) eng_idset_add(&allow, ix->ids[i]);
        double med[2];
        double recall = 0;
        for (int pass = 0; pass < 2; pass++) {
            eng_search_opts o = eng_search_defaults();
            o.allow = &allow;
            o.pass = pass ? ENG_INDEX_HNSW : ENG_INDEX_EXACT;
            eng_index_hnsw_set_filter_c(ix, 0);
            for (long q = 0; q < nq; q++) {
                int got;
                eng_hit *out = pass ? hits : want + (size_t)q * k;
                double t0 = now_ms();
                if (eng_index_search(ix, qs + (size_t)q * dim, (int)k, &o, out, &got, &err)) goto done;
                lat[q] = now_ms() - t0;
                if (pass)
                    recall += eng_index_recall(hits, got, want + (size_t)q * k, n_want[q]);
                else
                    n_want[q] = got;
            }
            qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
            med[pass] = lat[nq / 2];
        }
        eng_index_hnsw_set_filter_c(ix, 4096);
        printf("barlowd ann_filter n=%zu share=%.3f allowed=%lld exact_median_ms=%.3f "
               "walk_median_ms=%.3f walk_recall_at_k=%.4f exact_below=%lld\n",
               ix->n, shares[si], (long long)eng_idset_count(&allow), med[0], med[1],
               recall / (double)nq, (long long)eng_index_hnsw_filter_exact_below(ix));
        fflush(stdout);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "error: %s\n", err.msg[0] ? err.msg : "out of memory");
    eng_idset_free(&allow);
    free(want);
    free(n_want);
    return rc;
}

/* The approximate pass: builds the graph, then times the queries at each ef of efs. */
static int run_ann(eng_index *ix, const float *qs, long nq, long k, long dim, const eng_hit *exact,
                   const int *n_exact, double *lat, eng_hit *hits, long m, long efc,
                   const char *efs, int clustered, long n_clusters, double sigma) {
    eng_err err = {0};
    eng_hnsw_params p = eng_hnsw_defaults();
    p.m = (int)m;
    p.ef_construction = (int)efc;
    long rss0 = status_kb("VmRSS:");
    double t = now_ms();
    if (eng_index_hnsw_build(ix, &p, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return -1;
    }
    double build_s = (now_ms() - t) * 1e-3;
    long rss1 = status_kb("VmRSS:"), hwm = status_kb("VmHWM:");
    char data[64];
    if (clustered)
        snprintf(data, sizeof data, "clusters%ld_sigma%.3g", n_clusters, sigma);
    else
        snprintf(data, sizeof data, "random");
    for (const char *e = efs; *e;) {
        char *end;
        long ef = strtol(e, &end, 10);
        if (end == e || ef < 1) {
            fprintf(stderr, "error: --ef wants a comma-separated list of positive integers\n");
            return -1;
        }
        e = *end == ',' ? end + 1 : end;
        eng_search_opts o = eng_search_defaults();
        o.pass = ENG_INDEX_HNSW;
        o.ef = (int)ef;
        double recall = 0;
        int got;
        for (long q = 0; q < nq; q++) {
            double t0 = now_ms();
            if (eng_index_search(ix, qs + (size_t)q * dim, (int)k, &o, hits, &got, &err)) {
                fprintf(stderr, "error: %s\n", err.msg);
                return -1;
            }
            lat[q] = now_ms() - t0;
            recall += eng_index_recall(hits, got, exact + (size_t)q * k, n_exact[q]);
        }
        qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
        printf("barlowd ann data=%s n=%zu dim=%ld k=%ld m=%ld ef_construction=%ld ef=%ld "
               "build_s=%.1f build_threads=%d graph_bytes=%zu rss_before_kb=%ld rss_after_kb=%ld "
               "hwm_kb=%ld median_ms=%.3f p99_ms=%.3f recall_at_k=%.4f\n",
               data, ix->n, dim, k, m, efc, ef, build_s, omp_get_max_threads(),
               eng_index_hnsw_bytes(ix), rss0, rss1, hwm, lat[nq / 2],
               lat[(size_t)((double)(nq - 1) * 0.99)], recall / (double)nq);
        fflush(stdout);
    }
    return run_filtered(ix, qs, nq, k, dim, lat, hits);
}

int cmd_bench_search(int argc, char **argv) {
    static const char *const known[] = {"--n", "--dim", "--queries", "--k", "--batch",
                                        "--kernel", "--kernel8", "--rerank", "--dump-prefix",
                                        "--data", "--clusters", "--sigma", "--ann", "--m",
                                        "--ef-construction", "--ef", "--skip-int8", NULL};
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
    const char *data = cli_flag(argc, argv, "--data");
    long n_clusters = cli_flag_long(argc, argv, "--clusters", 1000, 1, 10000000);
    long sigma_milli = cli_flag_long(argc, argv, "--sigma", 1000, 1, 1000000); /* thousandths */
    long ann = cli_flag_long(argc, argv, "--ann", 0, 0, 1);
    long skip8 = cli_flag_long(argc, argv, "--skip-int8", 0, 0, 1);
    eng_hnsw_params hp = eng_hnsw_defaults();
    long m = cli_flag_long(argc, argv, "--m", hp.m, 2, 64);
    long efc = cli_flag_long(argc, argv, "--ef-construction", hp.ef_construction, 2, 100000);
    const char *efs = cli_flag(argc, argv, "--ef");
    if (!efs) efs = "16,32,64,128,256";
    int clustered = data && !strcmp(data, "clusters");
    if (data && !clustered && strcmp(data, "random")) {
        fprintf(stderr, "error: --data is random or clusters\n");
        return CLI_BAD_INPUT;
    }
    if (n_clusters < 0 || sigma_milli < 0 || ann < 0 || skip8 < 0 || m < 0 || efc < 0 || efc < m)
        return CLI_BAD_INPUT;
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
    float *centres = clustered ? malloc((size_t)n_clusters * (size_t)dim * sizeof(float)) : NULL;
    double sigma = (double)sigma_milli / 1000.0;
    if (!v || !qs || !hits || !counts || !lat || !exact || !fast || !n_exact || !truth ||
        (clustered && !centres)) {
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
    for (long i = 0; clustered && i < n_clusters * dim; i++) centres[i] = (float)eng_rng_normal(&rng);
    for (long i = 0; i < n; i++) {
        draw(&rng, centres, n_clusters, sigma, v, dim);
        if (base && fwrite(v, sizeof(float), (size_t)dim, base) != (size_t)dim) {
            fprintf(stderr, "error: cannot write %s\n", path);
            goto done;
        }
        if (eng_index_put(&ix, i, v, &err)) {
            fprintf(stderr, "error: %s\n", err.msg);
            goto done;
        }
    }
    for (size_t i = 0; i < qn; i += (size_t)dim) draw(&rng, centres, n_clusters, sigma, qs + i, dim);
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

    if (ann && run_ann(&ix, qs, nq, k, dim, exact, n_exact, lat, hits, m, efc, efs, clustered,
                       n_clusters, sigma))
        goto done;
    if (skip8) {
        printf("barlowd search n=%ld dim=%ld k=%ld kernel=%s single_median_ms=%.2f "
               "single_p99_ms=%.2f bound_ms=%.2f bandwidth_gbs=%.2f ratio_to_bound=%.2f "
               "threads=%d checksum=%llx\n",
               n, dim, k, ix.kernel, med, p99, bound_ms, gbs, med / bound_ms, omp_get_max_threads(), sink);
        rc = CLI_OK;
        goto done;
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
    free(centres);
    if (base) fclose(base);
    eng_index_free(&ix);
    return rc;
}
