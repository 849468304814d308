/* test_index.c — exact cosine top-k against a brute-force double-precision reference, with
 * inserts, replacements and deletes; deterministic ties; every kernel this CPU has. The int8
 * first pass with exact re-ranking (the int8 pass): recall@10 against exact search on
 * random and clustered data, exact scores in order, updates, kernel agreement, bad input.
 * Batches against single queries (filters, uneven blocks, k above the rows, ties across threads)
 * and the ISA cap of the kernels (BARLOWD_MAX_ISA, ONEDNN_MAX_CPU_ISA). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eng_index.h"
#include "eng_isa.h"
#include "eng_rng.h"
#include "test_util.h"

/* Search options: the int8 first pass (excluding an id, rerank factor) or the exact scan. */
#define INT8_PASS(ex, rr) (&(eng_search_opts){.pass = ENG_INDEX_INT8, .exclude = (ex), .rerank = (rr)})
#define EXACT_PASS(ex) (&(eng_search_opts){.pass = ENG_INDEX_EXACT, .exclude = (ex)})

/* The reference: every live vector's cosine in double, sorted (score desc, id asc). */
typedef struct ref_set {
    int dim;
    int n;
    int64_t *ids;
    float *vecs;
    char *live;
} ref_set;

static int cmp_ref(const void *a, const void *b) {
    const eng_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int ref_topk(const ref_set *r, const float *q, int k, int64_t exclude, eng_hit *out) {
    eng_hit *all = malloc(sizeof *all * (size_t)r->n);
    int m = 0;
    double qn = 0;
    for (int j = 0; j < r->dim; j++) qn += (double)q[j] * q[j];
    for (int i = 0; i < r->n; i++) {
        if (!r->live[i] || r->ids[i] == exclude) continue;
        const float *v = r->vecs + (size_t)i * r->dim;
        double d = 0, vn = 0;
        for (int j = 0; j < r->dim; j++) {
            d += (double)q[j] * v[j];
            vn += (double)v[j] * v[j];
        }
        all[m].id = r->ids[i];
        all[m++].score = (float)(d / sqrt(qn * vn));
    }
    qsort(all, (size_t)m, sizeof *all, cmp_ref);
    int got = m < k ? m : k;
    memcpy(out, all, sizeof *out * (size_t)got);
    free(all);
    return got;
}

/* Same ranking as the reference: ids equal except where scores are within float rounding. */
static void expect_same_hits(const eng_hit *got, int ng, const eng_hit *want, int nw,
                             const char *what) {
    cr_expect_eq(ng, nw, "%s: %d hits, want %d", what, ng, nw);
    for (int i = 0; i < ng && i < nw; i++) {
        cr_expect(fabsf(got[i].score - want[i].score) < 1e-5f, "%s: hit %d score %.7f want %.7f",
                  what, i, got[i].score, want[i].score);
        if (got[i].id != want[i].id)
            cr_expect(fabsf(want[i].score - got[i].score) < 1e-5f,
                      "%s: hit %d id %lld want %lld", what, i, (long long)got[i].id,
                      (long long)want[i].id);
    }
}

static void random_vec(eng_rng *r, float *v, int dim) {
    for (int j = 0; j < dim; j++) v[j] = (float)eng_rng_normal(r);
}

static void check_kernel(const char *kernel) {
    const int dim = 72, n = 3000, k = 10; /* dim not a multiple of 16: padding is exercised */
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    int usable = eng_index_use_kernel(&ix, kernel) == 0;
    /* the kernel is offered exactly when the CPU has what it needs: a wrong answer either way
     * would crash (SIGILL) or leave the fast path unused */
    eng_isa cap = eng_isa_cap();
    int has = !strcmp(kernel, "avx512") ? tu_cpu_has("avx512f") && cap >= ENG_ISA_AVX512_CORE
              : !strcmp(kernel, "avx2") ? tu_cpu_has("avx2") && tu_cpu_has("fma") && cap >= ENG_ISA_AVX2
                                        : 1;
    cr_expect_eq(usable, has, "kernel %s: offered %d, /proc/cpuinfo and the cap %s say %d", kernel,
                 usable, eng_isa_name(cap), has);
    if (!usable) {
        tu_coverage("index kernel %s: not run, this CPU lacks it or the ISA cap (%s) forbids it",
                    kernel, eng_isa_name(cap));
        eng_index_free(&ix);
        return;
    }
    tu_coverage("index kernel %s: ran", kernel);
    ref_set r = {dim, n, malloc(sizeof(int64_t) * n), malloc(sizeof(float) * (size_t)n * dim),
                 calloc((size_t)n, 1)};
    eng_rng rng;
    eng_rng_seed(&rng, 77);
    for (int i = 0; i < n; i++) {
        r.ids[i] = 1000 + 7 * (int64_t)i; /* sparse ids */
        random_vec(&rng, r.vecs + (size_t)i * dim, dim);
        r.live[i] = 1;
        cr_assert(eng_index_put(&ix, r.ids[i], r.vecs + (size_t)i * dim, &err) == 0, "%s", err.msg);
    }
    /* delete a third, replace a tenth */
    for (int i = 0; i < n; i += 3) {
        cr_assert_eq(eng_index_remove(&ix, r.ids[i]), 1);
        r.live[i] = 0;
    }
    cr_expect_eq(eng_index_remove(&ix, r.ids[0]), 0, "a removed id is gone");
    /* put a new vector under every tenth id: replaces live ones, brings removed ones back */
    for (int i = 1; i < n; i += 10) {
        random_vec(&rng, r.vecs + (size_t)i * dim, dim);
        cr_assert(eng_index_put(&ix, r.ids[i], r.vecs + (size_t)i * dim, &err) == 0, "%s", err.msg);
        r.live[i] = 1;
    }
    eng_hit got[16], want[16];
    float q[72];
    for (int t = 0; t < 25; t++) {
        random_vec(&rng, q, dim);
        int ng, nw = ref_topk(&r, q, k, INT64_MIN, want);
        cr_assert(eng_index_search(&ix, q, k, NULL, got, &ng, &err) == 0, "%s", err.msg);
        char what[64];
        snprintf(what, sizeof what, "%s query %d", kernel, t);
        expect_same_hits(got, ng, want, nw, what);
    }
    /* neighbours of a stored id exclude the id itself */
    int ng, nw = ref_topk(&r, r.vecs + 2 * dim, k, r.ids[2], want);
    cr_assert(eng_index_neighbors(&ix, r.ids[2], k, NULL, got, &ng, &err) == 0, "%s", err.msg);
    expect_same_hits(got, ng, want, nw, "neighbors");
    for (int i = 0; i < ng; i++) cr_expect(got[i].id != r.ids[2], "neighbors returned itself");
    free(r.ids);
    free(r.vecs);
    free(r.live);
    eng_index_free(&ix);
}

Test(index, top_k_equals_a_double_precision_brute_force_with_avx512) { check_kernel("avx512"); }
Test(index, top_k_equals_a_double_precision_brute_force_with_avx2) { check_kernel("avx2"); }
Test(index, top_k_equals_a_double_precision_brute_force_with_scalar) { check_kernel("scalar"); }

Test(index, ties_rank_by_lower_id_whatever_the_insertion_order) {
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 3, &err) == 0);
    float a[3] = {1, 0, 0}, b[3] = {0, 1, 0};
    int64_t order[6] = {50, 7, 33, 12, 99, 1};
    for (int i = 0; i < 6; i++) cr_assert(eng_index_put(&ix, order[i], i % 2 ? a : b, &err) == 0);
    /* ids 7, 12, 1 hold a; 50, 33, 99 hold b */
    eng_hit hits[6];
    int n;
    cr_assert(eng_index_search(&ix, a, 4, NULL, hits, &n, &err) == 0);
    cr_assert_eq(n, 4);
    int64_t want[4] = {1, 7, 12, 33};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(hits[i].id, want[i], "hit %d: id %lld, want %lld", i, (long long)hits[i].id,
                     (long long)want[i]);
    cr_expect(hits[0].score == 1.0f && hits[3].score == 0.0f);
    eng_index_free(&ix);
}

Test(index, batch_search_equals_one_query_at_a_time) {
    eng_err err = {0};
    eng_index ix;
    const int dim = 64, n = 2000, nq = 37, k = 5;
    cr_assert(eng_index_init(&ix, dim, &err) == 0);
    eng_rng rng;
    eng_rng_seed(&rng, 3);
    float v[64];
    for (int i = 0; i < n; i++) {
        random_vec(&rng, v, dim);
        cr_assert(eng_index_put(&ix, i, v, &err) == 0);
    }
    float *qs = malloc(sizeof(float) * nq * dim);
    for (int i = 0; i < nq * dim; i++) qs[i] = (float)eng_rng_normal(&rng);
    eng_hit *batch = malloc(sizeof *batch * nq * k), one[5];
    int counts[37], n1;
    cr_assert(eng_index_search_batch(&ix, qs, nq, k, NULL, batch, counts, &err) == 0, "%s", err.msg);
    for (int i = 0; i < nq; i++) {
        cr_assert(eng_index_search(&ix, qs + i * dim, k, NULL, one, &n1, &err) == 0);
        char what[32];
        snprintf(what, sizeof what, "batch query %d", i);
        /* the batch scores by GEMM: equal to the last float bits, so ties may order differently */
        expect_same_hits(batch + i * k, counts[i], one, n1, what);
    }
    free(qs);
    free(batch);
    eng_index_free(&ix);
}

/* The batch against single queries with the same filter, over shapes that cut its blocks
 * unevenly: rows and queries not multiples of the batch's blocks (256), a filter keeping some
 * rows, and k above the rows left (every allowed row returned, in order). */
static void check_batch_against_single(int n, int nq, int k, int keep_every) {
    const int dim = 40;
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    eng_rng rng;
    eng_rng_seed(&rng, (uint64_t)(n + nq + k));
    float v[40];
    eng_idset allow;
    cr_assert(eng_idset_init(&allow, 3 * (int64_t)n + 1, &err) == 0);
    int n_allowed = 0;
    for (int i = 0; i < n; i++) {
        int64_t id = 3 * (int64_t)(n - 1 - i) + 1; /* ids descend as rows ascend */
        random_vec(&rng, v, dim);
        cr_assert(eng_index_put(&ix, id, v, &err) == 0, "%s", err.msg);
        if (keep_every && i % keep_every == 0) {
            eng_idset_add(&allow, id);
            n_allowed++;
        }
    }
    const eng_idset *set = keep_every ? &allow : NULL;
    float *qs = malloc(sizeof(float) * (size_t)nq * dim);
    random_vec(&rng, qs, nq * dim);
    eng_hit *batch = malloc(sizeof *batch * (size_t)nq * k), *one = malloc(sizeof *one * k);
    int *counts = malloc(sizeof(int) * (size_t)nq), n1;
    cr_assert(eng_index_search_batch(&ix, qs, nq, k, set, batch, counts, &err) == 0, "%s", err.msg);
    int want_n = (keep_every ? n_allowed : n) < k ? (keep_every ? n_allowed : n) : k;
    eng_search_opts o = eng_search_defaults();
    o.allow = set;
    for (int i = 0; i < nq; i++) {
        cr_expect_eq(counts[i], want_n, "query %d: %d hits, want %d", i, counts[i], want_n);
        cr_assert(eng_index_search(&ix, qs + (size_t)i * dim, k, &o, one, &n1, &err) == 0);
        char what[64];
        snprintf(what, sizeof what, "n %d nq %d k %d batch query %d", n, nq, k, i);
        expect_same_hits(batch + (size_t)i * k, counts[i], one, n1, what);
        for (int j = 0; j < counts[i]; j++) {
            const eng_hit *h = batch + (size_t)i * k + j;
            if (set) cr_expect(eng_idset_has(set, h->id), "%s: id %lld not allowed", what, (long long)h->id);
            if (j) cr_expect(h[-1].score > h->score || (h[-1].score == h->score && h[-1].id < h->id),
                             "%s: hits %d and %d out of order", what, j - 1, j);
        }
    }
    free(qs);
    free(batch);
    free(one);
    free(counts);
    eng_idset_free(&allow);
    eng_index_free(&ix);
}

Test(index, batch_of_uneven_blocks_equals_single_queries) { check_batch_against_single(1037, 300, 7, 0); }
Test(index, batch_with_a_filter_equals_filtered_single_queries) {
    check_batch_against_single(1037, 261, 10, 3);
}
Test(index, batch_with_k_above_the_rows_returns_every_row_in_order) {
    check_batch_against_single(150, 19, 200, 0);
}
Test(index, batch_with_a_filter_and_k_above_the_allowed_rows_returns_them_all) {
    check_batch_against_single(700, 33, 100, 9); /* 78 allowed */
}

/* Ties across blocks and threads: 600 rows hold one of two unit vectors under scrambled ids, so
 * every score is exactly 1 or 0 and only the id decides; the batch must give the lowest ids. */
Test(index, batch_ranks_ties_by_lower_id_across_blocks) {
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 3, &err) == 0);
    float a[3] = {1, 0, 0}, b[3] = {0, 1, 0};
    const int n = 600, nq = 270, k = 12;
    for (int i = 0; i < n; i++) { /* id (i·389) mod 601 visits every id 1..600 out of order */
        int64_t id = (int64_t)((i + 1) * 389 % 601);
        cr_assert(eng_index_put(&ix, id, id % 2 ? a : b, &err) == 0);
    }
    float qs[270 * 3];
    for (int i = 0; i < nq; i++) memcpy(qs + 3 * i, i % 2 ? a : b, sizeof a);
    eng_hit hits[270 * 12];
    int counts[270];
    cr_assert(eng_index_search_batch(&ix, qs, nq, k, NULL, hits, counts, &err) == 0, "%s", err.msg);
    for (int i = 0; i < nq; i++) {
        cr_assert_eq(counts[i], k);
        for (int j = 0; j < k; j++) { /* odd ids hold a: 1, 3, 5, ...; even ones b: 2, 4, ... */
            int64_t want = i % 2 ? 2 * j + 1 : 2 * j + 2;
            cr_expect(hits[i * k + j].id == want && hits[i * k + j].score == 1.0f,
                      "query %d hit %d: id %lld score %g, want id %lld score 1", i, j,
                      (long long)hits[i * k + j].id, hits[i * k + j].score, (long long)want);
        }
    }
    cr_expect(eng_index_search_batch(&ix, qs, 0, k, NULL, hits, counts, &err) == 0,
              "an empty batch is answered");
    eng_index_free(&ix);
}

/* ---------------------------------------------------------------------------------------------
 * The ISA cap of our kernels (eng_isa.h). */

/* The kernels an index picks at init must be the best this CPU has below the cap in force. */
static void expect_kernels_under_the_cap(const char *why) {
    eng_isa cap = eng_isa_cap();
    const char *want = cap >= ENG_ISA_AVX512_CORE && tu_cpu_has("avx512f")           ? "avx512"
                       : cap >= ENG_ISA_AVX2 && tu_cpu_has("avx2") && tu_cpu_has("fma") ? "avx2"
                                                                                       : "scalar";
    int has512 = tu_cpu_has("avx512f") && tu_cpu_has("avx512bw");
    const char *want8 =
        cap >= ENG_ISA_AVX512_CORE_VNNI && has512 && tu_cpu_has("avx512_vnni") ? "vnni"
        : cap >= ENG_ISA_AVX512_CORE && has512                                 ? "avx512bw"
        : cap >= ENG_ISA_AVX2 && tu_cpu_has("avx2")                            ? "avx2"
                                                                               : "scalar";
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 8, &err) == 0, "%s", err.msg);
    cr_expect_str_eq(ix.kernel, want, "%s: cap %s, float kernel %s, want %s", why,
                     eng_isa_name(cap), ix.kernel, want);
    cr_expect_str_eq(ix.kernel8, want8, "%s: cap %s, int8 kernel %s, want %s", why,
                     eng_isa_name(cap), ix.kernel8, want8);
    tu_coverage("index kernels under cap %s (%s): %s, %s", eng_isa_name(cap), why, ix.kernel,
                ix.kernel8);
    eng_index_free(&ix);
}

/* Runs in both passes: on an AVX-512 CPU the second runs under ONEDNN_MAX_CPU_ISA=AVX2, and
 * then the kernels must be the AVX2 ones. */
Test(index_isa, kernels_at_init_are_the_best_the_cpu_has_under_the_cap) {
    expect_kernels_under_the_cap("environment as given");
    const char *onednn = getenv("ONEDNN_MAX_CPU_ISA");
    if (!getenv("BARLOWD_MAX_ISA") && onednn && !strcasecmp(onednn, "AVX2") && tu_cpu_has("avx2")) {
        eng_index ix;
        eng_err err = {0};
        cr_assert(eng_index_init(&ix, 8, &err) == 0, "%s", err.msg);
        cr_expect_str_eq(ix.kernel, "avx2", "ONEDNN_MAX_CPU_ISA=AVX2 but float kernel %s", ix.kernel);
        cr_expect_str_eq(ix.kernel8, "avx2", "ONEDNN_MAX_CPU_ISA=AVX2 but int8 kernel %s", ix.kernel8);
        eng_index_free(&ix);
    }
}

/* Below AVX2 only the scalar kernels are left, whatever this CPU has; and they still answer. */
Test(index_isa, a_cap_below_avx2_selects_the_scalar_kernels) {
    static const char *const below[] = {"SSE41", "scalar", "Avx"};
    for (size_t i = 0; i < sizeof below / sizeof *below; i++) {
        cr_assert(setenv("BARLOWD_MAX_ISA", below[i], 1) == 0);
        eng_err err = {0};
        eng_index ix;
        cr_assert(eng_index_init(&ix, 20, &err) == 0, "%s", err.msg);
        cr_expect_str_eq(ix.kernel, "scalar", "BARLOWD_MAX_ISA=%s: float kernel %s", below[i], ix.kernel);
        cr_expect_str_eq(ix.kernel8, "scalar", "BARLOWD_MAX_ISA=%s: int8 kernel %s", below[i], ix.kernel8);
        cr_expect(eng_index_use_kernel(&ix, "avx2") != 0, "BARLOWD_MAX_ISA=%s offered avx2", below[i]);
        cr_expect(eng_index_use_kernel8(&ix, "avx2") != 0, "BARLOWD_MAX_ISA=%s offered int8 avx2", below[i]);
        cr_expect_str_eq(ix.kernel, "scalar", "a refused kernel leaves the current one");
        float v[20] = {1, 2, 3}, w[20] = {0, 1}, q[20] = {1, 2, 3.5f};
        cr_assert(eng_index_put(&ix, 4, v, &err) == 0 && eng_index_put(&ix, 9, w, &err) == 0);
        eng_hit h[2];
        int n;
        cr_assert(eng_index_search(&ix, q, 2, NULL, h, &n, &err) == 0, "%s", err.msg);
        cr_expect(n == 2 && h[0].id == 4 && h[1].id == 9, "scalar kernels answer in order");
        eng_index_free(&ix);
    }
    unsetenv("BARLOWD_MAX_ISA");
}

/* BARLOWD_MAX_ISA wins over ONEDNN_MAX_CPU_ISA; an unknown value is ignored, as oneDNN ignores
 * one; names are matched in any case. */
Test(index_isa, barlowd_max_isa_wins_over_onednn_and_unknown_values_are_ignored) {
    unsetenv("DNNL_MAX_CPU_ISA");
    cr_assert(setenv("ONEDNN_MAX_CPU_ISA", "sse41", 1) == 0);
    unsetenv("BARLOWD_MAX_ISA");
    cr_expect_eq(eng_isa_cap(), ENG_ISA_SCALAR, "ONEDNN_MAX_CPU_ISA alone caps");
    expect_kernels_under_the_cap("ONEDNN_MAX_CPU_ISA=sse41");
    cr_assert(setenv("BARLOWD_MAX_ISA", "avx2", 1) == 0);
    cr_expect_eq(eng_isa_cap(), ENG_ISA_AVX2, "BARLOWD_MAX_ISA wins");
    expect_kernels_under_the_cap("BARLOWD_MAX_ISA=avx2 over ONEDNN_MAX_CPU_ISA=sse41");
    cr_assert(setenv("BARLOWD_MAX_ISA", "avx3000", 1) == 0);
    cr_expect_eq(eng_isa_cap(), ENG_ISA_SCALAR, "an unknown BARLOWD_MAX_ISA falls back to oneDNN's");
    unsetenv("BARLOWD_MAX_ISA");
    unsetenv("ONEDNN_MAX_CPU_ISA");
    cr_expect_eq(eng_isa_cap(), ENG_ISA_ALL, "no cap set");
    expect_kernels_under_the_cap("no cap");
    static const struct {
        const char *name;
        eng_isa want;
    } names[] = {{"AVX512_CORE", ENG_ISA_AVX512_CORE}, {"avx512_core_vnni", ENG_ISA_AVX512_CORE_VNNI},
                 {"Avx2_Vnni", ENG_ISA_AVX2}, {"AVX512_MIC", ENG_ISA_AVX2},
                 {"avx512_core_amx", ENG_ISA_ALL}, {"all", ENG_ISA_ALL}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        eng_isa got = ENG_ISA_SCALAR;
        cr_expect(eng_isa_parse(names[i].name, &got) == 0 && got == names[i].want,
                  "%s parsed as %s, want %s", names[i].name, eng_isa_name(got),
                  eng_isa_name(names[i].want));
    }
    eng_isa kept = ENG_ISA_AVX2;
    cr_expect(eng_isa_parse("AVX512", &kept) != 0 && kept == ENG_ISA_AVX2,
              "an unknown name is refused and changes nothing");
    cr_expect(eng_isa_parse(NULL, &kept) != 0);
}

Test(index, bad_input_is_refused_and_changes_nothing) {
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 4, &err) == 0);
    float good[4] = {1, 2, 3, 4}, zero[4] = {0}, nan[4] = {1, NAN, 0, 0};
    cr_assert(eng_index_put(&ix, 5, good, &err) == 0);
    cr_expect(eng_index_put(&ix, 6, zero, &err) != 0 && strstr(err.msg, "zero"));
    cr_expect(eng_index_put(&ix, 5, nan, &err) != 0 && strstr(err.msg, "finite"));
    cr_expect_eq(ix.n, 1);
    const float *stored = eng_index_get(&ix, 5);
    cr_assert(stored != NULL);
    cr_expect(fabsf(stored[3] - 4.0f / sqrtf(30.0f)) < 1e-6f, "replacement by NaN changed the row");
    eng_hit h[2];
    int n;
    cr_expect(eng_index_search(&ix, good, 0, NULL, h, &n, &err) != 0);
    cr_expect(eng_index_search(&ix, zero, 1, NULL, h, &n, &err) != 0);
    cr_expect(eng_index_neighbors(&ix, 42, 1, NULL, h, &n, &err) != 0 && strstr(err.msg, "42"));
    cr_assert(eng_index_search(&ix, good, 10, NULL, h, &n, &err) == 0);
    cr_expect_eq(n, 1, "k larger than the index returns every row");
    eng_index_free(&ix);
    eng_index none;
    cr_expect(eng_index_init(&none, 0, &err) != 0 && strstr(err.msg, "dimension"));
}

Test(index, many_inserts_and_deletes_keep_every_id_findable) {
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 16, &err) == 0);
    float v[16];
    for (int round = 0; round < 3; round++) {
        for (int64_t id = 0; id < 20000; id++) {
            for (int j = 0; j < 16; j++) v[j] = (float)((id * 31 + j * 7 + round) % 13) - 6.0f;
            v[0] = 100.0f; /* never the zero vector */
            cr_assert(eng_index_put(&ix, id, v, &err) == 0, "%s", err.msg);
        }
        /* rounds 0 and 2 remove the even ids, round 1 the odd ones */
        for (int64_t id = round % 2; id < 20000; id += 2)
            cr_assert_eq(eng_index_remove(&ix, id), 1);
    }
    for (int64_t id = 0; id < 20000; id++) {
        const float *row = eng_index_get(&ix, id);
        cr_expect((row != NULL) == (id % 2 == 1), "id %lld: %s", (long long)id,
                  row ? "present after its removal" : "missing");
        if (row) /* the row holds this id's vector (direction of the last put) */
            cr_expect(fabsf(row[1] * 100.0f / row[0] - (float)((id * 31 + 7 + 2) % 13 - 6)) < 1e-3f,
                      "id %lld holds another id's vector", (long long)id);
    }
    cr_expect_eq(ix.n, 10000, "the last round removed every other id");
    eng_index_free(&ix);
}

/* ---------------------------------------------------------------------------------------------
 * the int8 pass */


/* Checks that fast hits are ordered and carry the exact cosine of the id's stored row. */
static void expect_exact_and_ordered(const eng_index *ix, const float *q, const eng_hit *h, int n,
                                     const char *what) {
    double qn = 0;
    for (int j = 0; j < ix->dim; j++) qn += (double)q[j] * q[j];
    for (int i = 0; i < n; i++) {
        const float *row = eng_index_get(ix, h[i].id);
        cr_assert(row != NULL, "%s: hit %d id %lld is not in the index", what, i,
                  (long long)h[i].id);
        double d = 0;
        for (int j = 0; j < ix->dim; j++) d += (double)q[j] * row[j];
        cr_expect(fabs(d / sqrt(qn) - h[i].score) < 1e-5, "%s: hit %d score %.7f, exact %.7f",
                  what, i, h[i].score, d / sqrt(qn));
        if (i)
            cr_expect(h[i - 1].score > h[i].score ||
                          (h[i - 1].score == h[i].score && h[i - 1].id < h[i].id),
                      "%s: hits %d and %d out of order", what, i - 1, i);
    }
}

/* Runs nq queries through both searches; returns the mean recall@k. Fast hits that the exact
 * search also returned must carry the very same score (both use the float kernel). */
static double measure_recall(const eng_index *ix, const float *qs, int nq, int k, int rerank,
                             const char *what) {
    eng_err err = {0};
    eng_hit fast[64], exact[64];
    double sum = 0;
    for (int t = 0; t < nq; t++) {
        const float *q = qs + (size_t)t * ix->dim;
        int nf, ne;
        cr_assert(eng_index_search(ix, q, k, INT8_PASS(INT64_MIN, rerank), fast, &nf, &err) == 0,
                  "%s", err.msg);
        cr_assert(eng_index_search(ix, q, k, NULL, exact, &ne, &err) == 0, "%s", err.msg);
        cr_assert_eq(nf, ne, "%s query %d: %d fast hits, %d exact", what, t, nf, ne);
        char w[96];
        snprintf(w, sizeof w, "%s query %d", what, t);
        expect_exact_and_ordered(ix, q, fast, nf, w);
        for (int i = 0; i < nf; i++)
            for (int j = 0; j < ne; j++)
                if (fast[i].id == exact[j].id)
                    cr_expect(fast[i].score == exact[j].score, "%s: id %lld scored %.8f vs %.8f",
                              w, (long long)fast[i].id, fast[i].score, exact[j].score);
        sum += eng_index_recall(fast, nf, exact, ne);
    }
    return sum / nq;
}

/* n vectors around n_clusters random centres (spread sigma per component), or plain random
 * normals when n_clusters is 0; ids 0..n-1. Returns the centres (malloc'd) when clustered. */
static float *fill_index(eng_index *ix, eng_rng *rng, int n, int n_clusters, double sigma) {
    int dim = ix->dim;
    eng_err err = {0};
    float *centres = n_clusters ? malloc(sizeof(float) * (size_t)n_clusters * dim) : NULL;
    for (int c = 0; c < n_clusters; c++) random_vec(rng, centres + (size_t)c * dim, dim);
    float *v = malloc(sizeof(float) * (size_t)dim);
    for (int i = 0; i < n; i++) {
        random_vec(rng, v, dim);
        if (n_clusters) {
            const float *c = centres + (size_t)(i % n_clusters) * dim;
            for (int j = 0; j < dim; j++) v[j] = c[j] + (float)sigma * v[j];
        }
        cr_assert(eng_index_put(ix, i, v, &err) == 0, "%s", err.msg);
    }
    free(v);
    return centres;
}

Test(index_fast, recall_at_10_on_random_vectors_is_at_least_0_99) {
    const int dim = 96, n = 4000, nq = 250;
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    eng_rng rng;
    eng_rng_seed(&rng, 11);
    fill_index(&ix, &rng, n, 0, 0);
    float *qs = malloc(sizeof(float) * (size_t)nq * dim);
    random_vec(&rng, qs, nq * dim);
    double rec = measure_recall(&ix, qs, nq, 10, 0, "random");
    printf("index_fast: random n=%d dim=%d queries=%d kernel8=%s recall@10=%.4f\n", n, dim, nq,
           ix.kernel8, rec);
    cr_expect(rec >= 0.99, "recall@10 %.4f < 0.99", rec);
    free(qs);
    eng_index_free(&ix);
}

/* Clustered data: n vectors around 25 random centres, queries drawn around the same centres, so
 * a query's top 10 and the next hundred rows all lie in one cluster, their cosines close. */
static void clustered_recall(double sigma, int rerank, double *rec_default, double *rec_given) {
    const int dim = 64, n = 5000, nq = 250, n_clusters = 25;
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    eng_rng rng;
    eng_rng_seed(&rng, 12);
    float *centres = fill_index(&ix, &rng, n, n_clusters, sigma);
    float *qs = malloc(sizeof(float) * (size_t)nq * dim);
    for (int t = 0; t < nq; t++) {
        float *q = qs + (size_t)t * dim;
        random_vec(&rng, q, dim);
        const float *c = centres + (size_t)(t % n_clusters) * dim;
        for (int j = 0; j < dim; j++) q[j] = c[j] + (float)sigma * q[j];
    }
    *rec_default = measure_recall(&ix, qs, nq, 10, 0, "clustered");
    *rec_given = measure_recall(&ix, qs, nq, 10, rerank, "clustered, given rerank");
    printf("index_fast: clustered n=%d dim=%d clusters=%d sigma=%.2f queries=%d kernel8=%s "
           "recall@10=%.4f (rerank %d) %.4f (rerank %d)\n",
           n, dim, n_clusters, sigma, nq, ix.kernel8, *rec_default, ENG_INDEX_RERANK_FACTOR,
           *rec_given, rerank);
    free(centres);
    free(qs);
    eng_index_free(&ix);
}

Test(index_fast, recall_at_10_on_clustered_vectors_is_at_least_0_99) {
    /* sigma 0.12: a cluster's rows have cosine ≈ 0.98 with each other */
    double rec, rec1;
    clustered_recall(0.12, 1, &rec, &rec1);
    cr_expect(rec >= 0.99, "recall@10 %.4f < 0.99 at the default rerank factor", rec);
}

Test(index_fast, very_tight_clusters_need_a_larger_rerank_factor) {
    /* sigma 0.08: cosines ≈ 0.994 within a cluster, so the top 10 and the next 100 rows differ
     * by less than the int8 rounding error; the default factor then misses a few (documented),
     * and a larger factor buys the recall back */
    double rec, rec32;
    clustered_recall(0.08, 32, &rec, &rec32);
    cr_expect(rec >= 0.95, "recall@10 %.4f < 0.95 at the default rerank factor", rec);
    cr_expect(rec32 >= 0.99, "recall@10 %.4f < 0.99 with rerank 32", rec32);
}

Test(index_fast, stays_consistent_through_removes_and_replaces) {
    const int dim = 72, n = 3000, nq = 200; /* dim not a multiple of 64: int8 padding exercised */
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    eng_rng rng;
    eng_rng_seed(&rng, 13);
    fill_index(&ix, &rng, n, 0, 0);
    float v[72];
    for (int i = 0; i < n; i += 3) cr_assert_eq(eng_index_remove(&ix, i), 1);
    for (int i = 1; i < n; i += 10) { /* replaces live ids, brings back removed ones */
        random_vec(&rng, v, dim);
        cr_assert(eng_index_put(&ix, i, v, &err) == 0, "%s", err.msg);
    }
    /* a replaced row is found by its new vector, with score 1 */
    random_vec(&rng, v, dim);
    cr_assert(eng_index_put(&ix, 2, v, &err) == 0, "%s", err.msg);
    eng_hit h[10];
    int nh;
    cr_assert(eng_index_search(&ix, v, 1, INT8_PASS(INT64_MIN, 0), h, &nh, &err) == 0, "%s",
              err.msg);
    cr_expect(nh == 1 && h[0].id == 2 && fabsf(h[0].score - 1.0f) < 1e-5f,
              "replaced id 2 not found by its new vector (got id %lld score %f)",
              (long long)h[0].id, h[0].score);
    /* exclude skips it */
    cr_assert(eng_index_search(&ix, v, 10, INT8_PASS(2, 0), h, &nh, &err) == 0, "%s", err.msg);
    for (int i = 0; i < nh; i++) cr_expect(h[i].id != 2, "excluded id returned");
    float *qs = malloc(sizeof(float) * (size_t)nq * dim);
    random_vec(&rng, qs, nq * dim);
    double rec = measure_recall(&ix, qs, nq, 10, 0, "after updates");
    for (int t = 0; t < nq; t++) { /* removed ids (multiples of 3 not put back) never appear */
        cr_assert(eng_index_search(&ix, qs + (size_t)t * dim, 10, INT8_PASS(INT64_MIN, 0), h, &nh,
                                   &err) == 0);
        for (int i = 0; i < nh; i++)
            cr_expect(!(h[i].id % 3 == 0 && h[i].id % 10 != 1),
                      "removed id %lld returned", (long long)h[i].id);
    }
    printf("index_fast: after removes/replaces n=%zu recall@10=%.4f\n", ix.n, rec);
    cr_expect(rec >= 0.99, "recall@10 %.4f < 0.99", rec);
    /* remove everything: the int8 copy shrinks with the rows */
    for (int i = 0; i < n; i++) eng_index_remove(&ix, i);
    cr_assert(eng_index_search(&ix, v, 10, INT8_PASS(INT64_MIN, 0), h, &nh, &err) == 0, "%s",
              err.msg);
    cr_expect_eq(nh, 0);
    free(qs);
    eng_index_free(&ix);
}

Test(index_fast, every_int8_kernel_computes_the_same_exact_dot_products) {
    static const char *const kernels[] = {"vnni", "avx512bw", "avx2", "scalar"};
    const int dim = 200, n = 333; /* odd row count: the VNNI kernel's one-row tail runs */
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    eng_rng rng;
    eng_rng_seed(&rng, 14);
    fill_index(&ix, &rng, n, 0, 0);
    /* an int8 query with the extreme values ±127 and every value between */
    int8_t *q = aligned_alloc(64, ix.stride8);
    memset(q, 0, ix.stride8);
    for (int j = 0; j < dim; j++)
        q[j] = (int8_t)(j % 3 == 0 ? (j % 2 ? 127 : -127) : (j * 37) % 255 - 127);
    int32_t *want = malloc(sizeof(int32_t) * n), *got = malloc(sizeof(int32_t) * n);
    for (int r = 0; r < n; r++) {
        int64_t s = 0, sum = 0;
        for (size_t j = 0; j < ix.stride8; j++) {
            s += (int64_t)q[j] * ix.rows8[(size_t)r * ix.stride8 + j];
            sum += ix.rows8[(size_t)r * ix.stride8 + j];
        }
        want[r] = (int32_t)s;
        cr_expect_eq(sum, ix.rsum8[r], "row %d: stored sum %d, want %lld", r, ix.rsum8[r],
                     (long long)sum);
    }
    /* the fast search's results with a small candidate set, per kernel */
    float *qf = malloc(sizeof(float) * 20 * dim);
    random_vec(&rng, qf, 20 * dim);
    eng_hit ref[20][10];
    int nref[20];
    cr_assert(eng_index_use_kernel8(&ix, "scalar") == 0);
    for (int t = 0; t < 20; t++)
        cr_assert(eng_index_search(&ix, qf + t * dim, 10, INT8_PASS(INT64_MIN, 1), ref[t], &nref[t],
                                   &err) == 0);
    for (size_t kk = 0; kk < sizeof kernels / sizeof *kernels; kk++) {
        int usable = eng_index_use_kernel8(&ix, kernels[kk]) == 0;
        eng_isa cap = eng_isa_cap();
        int has = kk == 0   ? tu_cpu_has("avx512f") && tu_cpu_has("avx512bw") &&
                                tu_cpu_has("avx512_vnni") && cap >= ENG_ISA_AVX512_CORE_VNNI
                  : kk == 1 ? tu_cpu_has("avx512f") && tu_cpu_has("avx512bw") &&
                                cap >= ENG_ISA_AVX512_CORE
                  : kk == 2 ? tu_cpu_has("avx2") && cap >= ENG_ISA_AVX2
                            : 1;
        cr_expect_eq(usable, has, "int8 kernel %s: offered %d, /proc/cpuinfo and the cap %s say %d",
                     kernels[kk], usable, eng_isa_name(cap), has);
        if (!usable) {
            tu_coverage("int8 kernel %s: not run, this CPU lacks it or the ISA cap (%s) forbids it",
                        kernels[kk], eng_isa_name(cap));
            continue;
        }
        tu_coverage("int8 kernel %s: ran", kernels[kk]);
        cr_expect_str_eq(ix.kernel8, kernels[kk]);
        memset(got, 0x55, sizeof(int32_t) * n);
        ix.dot8(q, ix.rows8, ix.rsum8, ix.stride8, (size_t)n, got);
        for (int r = 0; r < n; r++)
            cr_expect_eq(got[r], want[r], "%s row %d: %d, want %d", kernels[kk], r, got[r],
                         want[r]);
        for (int t = 0; t < 20; t++) {
            eng_hit h[10];
            int nh;
            cr_assert(eng_index_search(&ix, qf + t * dim, 10, INT8_PASS(INT64_MIN, 1), h, &nh,
                                       &err) == 0);
            cr_assert_eq(nh, nref[t]);
            for (int i = 0; i < nh; i++)
                cr_expect(h[i].id == ref[t][i].id && h[i].score == ref[t][i].score,
                          "%s query %d hit %d differs from the scalar kernel's", kernels[kk], t, i);
        }
    }
    cr_expect(eng_index_use_kernel8(&ix, "nonsense") != 0);
    free(q);
    free(want);
    free(got);
    free(qf);
    eng_index_free(&ix);
}

Test(index_fast, bad_input_is_refused) {
    eng_err err = {0};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 4, &err) == 0);
    float good[4] = {1, 2, 3, 4}, zero[4] = {0}, nan[4] = {1, NAN, 0, 0},
          inf[4] = {INFINITY, 0, 0, 0};
    eng_hit h[8];
    int n = 99;
    /* an empty index answers with no hits */
    cr_assert(eng_index_search(&ix, good, 3, INT8_PASS(INT64_MIN, 0), h, &n, &err) == 0, "%s",
              err.msg);
    cr_expect_eq(n, 0);
    cr_assert(eng_index_put(&ix, 5, good, &err) == 0);
    cr_assert(eng_index_put(&ix, 6, (float[4]){4, 3, 2, 1}, &err) == 0);
    n = 99;
    cr_expect(eng_index_search(&ix, good, 0, INT8_PASS(INT64_MIN, 0), h, &n, &err) != 0 &&
              strstr(err.msg, "k must"));
    cr_expect_eq(n, 0, "a refused search reports no hits");
    cr_expect(eng_index_search(&ix, good, 1, INT8_PASS(INT64_MIN, -1), h, &n, &err) != 0 &&
              strstr(err.msg, "rerank"));
    cr_expect(eng_index_search(&ix, zero, 1, INT8_PASS(INT64_MIN, 0), h, &n, &err) != 0 &&
              strstr(err.msg, "zero"));
    cr_expect(eng_index_search(&ix, nan, 1, INT8_PASS(INT64_MIN, 0), h, &n, &err) != 0 &&
              strstr(err.msg, "finite"));
    cr_expect(eng_index_search(&ix, inf, 1, INT8_PASS(INT64_MIN, 0), h, &n, &err) != 0);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "a query's fault is bad input");
    /* an unknown back end is the caller's fault too; each pass has a name */
    cr_expect(eng_index_search(&ix, good, 1, &(eng_search_opts){.pass = (eng_index_pass)7, .exclude = INT64_MIN},
                               h, &n, &err) != 0 &&
              err.code == ERR_BAD_INPUT && strstr(err.msg, "pass"));
    cr_expect(eng_index_search(&ix, good, 1, EXACT_PASS(INT64_MIN), h, &n, &err) == 0);
    cr_expect(eng_index_search(&ix, good, 1, &(eng_search_opts){.pass = ENG_INDEX_EXACT, .exclude = INT64_MIN, .rerank = -1},
                               h, &n, &err) != 0 &&
                  err.code == ERR_BAD_INPUT,
              "a negative rerank is refused whatever the pass");
    cr_expect_str_eq(eng_index_pass_name(ENG_INDEX_EXACT), "exact");
    cr_expect_str_eq(eng_index_pass_name(ENG_INDEX_INT8), "int8");
    cr_expect_null(eng_index_pass_name(ENG_INDEX_PASSES));
    /* NULL options are the exact pass: the same hits as asking for it */
    eng_hit he[2], hn[2];
    int ne = 0, nn = 0;
    eng_search_opts exact = eng_search_defaults();
    cr_assert(eng_index_search(&ix, good, 2, &exact, he, &ne, &err) == 0, "%s", err.msg);
    cr_assert(eng_index_search(&ix, good, 2, NULL, hn, &nn, &err) == 0, "%s", err.msg);
    cr_expect_eq(ne, nn);
    for (int i = 0; i < ne && i < nn; i++)
        cr_expect(he[i].id == hn[i].id && he[i].score == hn[i].score, "hit %d", i);
    /* k larger than the index returns every row, best first */
    cr_assert(eng_index_search(&ix, good, 8, INT8_PASS(INT64_MIN, 0), h, &n, &err) == 0, "%s",
              err.msg);
    cr_expect(n == 2 && h[0].id == 5 && h[1].id == 6);
    cr_assert(eng_index_search(&ix, good, 8, INT8_PASS(5, 0), h, &n, &err) == 0, "%s", err.msg);
    cr_expect(n == 1 && h[0].id == 6, "exclude skips the row");
    eng_index_free(&ix);
}

/* Labels for the leave-one-out test: id → label. */
static int label_from_table(void *ctx, int64_t id) { return ((const int *)ctx)[id]; }

Test(index, leave_one_out_knn_equals_a_brute_force_count) {
    enum { N = 400, DIM = 24, K = 20, CLASSES = 4 };
    eng_rng rng;
    eng_rng_seed(&rng, 77);
    float *v = malloc(sizeof(float) * N * DIM), centre[CLASSES][DIM];
    int labels[N];
    for (int c = 0; c < CLASSES; c++) random_vec(&rng, centre[c], DIM);
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0, "%s", err.msg);
    for (int i = 0; i < N; i++) { /* noisy copies of a class centre; some labels flipped */
        labels[i] = i % CLASSES;
        random_vec(&rng, v + i * DIM, DIM);
        for (int d = 0; d < DIM; d++) v[i * DIM + d] = centre[labels[i]][d] + 0.8f * v[i * DIM + d];
        if (i % 9 == 0) labels[i] = (labels[i] + 1) % CLASSES;
        cr_assert(eng_index_put(&ix, i, v + i * DIM, &err) == 0, "%s", err.msg);
    }
    double acc = -1;
    cr_assert(eng_index_knn_loo(&ix, K, label_from_table, labels, &acc, &err) == 0, "%s", err.msg);
    /* brute force in double: each row's K nearest others (score desc, id asc), majority label,
     * ties to the label met first */
    int right = 0;
    for (int i = 0; i < N; i++) {
        double s[N];
        int order[N], m = 0;
        for (int j = 0; j < N; j++) {
            if (j == i) continue;
            double dot = 0, ni = 0, nj = 0;
            for (int d = 0; d < DIM; d++) {
                dot += (double)v[i * DIM + d] * v[j * DIM + d];
                ni += (double)v[i * DIM + d] * v[i * DIM + d];
                nj += (double)v[j * DIM + d] * v[j * DIM + d];
            }
            s[j] = dot / sqrt(ni * nj);
            order[m++] = j;
        }
        for (int a = 0; a < K; a++) /* partial selection sort: the K best first */
            for (int b = a + 1; b < m; b++)
                if (s[order[b]] > s[order[a]] || (s[order[b]] == s[order[a]] && order[b] < order[a])) {
                    int t = order[a];
                    order[a] = order[b];
                    order[b] = t;
                }
        int count[CLASSES] = {0}, first[CLASSES];
        for (int c = 0; c < CLASSES; c++) first[c] = K;
        for (int a = 0; a < K; a++) {
            int l = labels[order[a]];
            if (!count[l]++) first[l] = a;
        }
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (count[c] > count[best] || (count[c] == count[best] && first[c] < first[best]))
                best = c;
        right += best == labels[i];
    }
    cr_expect_eq(acc, (double)right / N, "monitor %.6f, brute force %.6f", acc, (double)right / N);
    cr_expect(acc > 0.5 && acc < 0.99, "a figure that can tell better from worse: %.4f", acc);
    /* too few rows, or k < 1, is refused */
    cr_expect_neq(eng_index_knn_loo(&ix, N, label_from_table, labels, &acc, &err), 0);
    cr_expect_neq(eng_index_knn_loo(&ix, 0, label_from_table, labels, &acc, &err), 0);
    eng_index_free(&ix);
    free(v);
}

Test(index, health_counts_the_directions_the_rows_spread_over) {
    enum { DIM = 8 };
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0, "%s", err.msg);
    /* ±e1, ±e2, ±e3: centred, three equal singular values → effective rank 3 */
    for (int i = 0; i < 6; i++) {
        float v[DIM] = {0};
        v[i / 2] = i % 2 ? -1.0f : 1.0f;
        cr_assert(eng_index_put(&ix, i, v, &err) == 0, "%s", err.msg);
    }
    double eff, spread;
    cr_assert(eng_index_health(&ix, &eff, &spread, &err) == 0, "%s", err.msg);
    cr_expect(fabs(eff - 3.0) < 1e-9, "effective rank %.12f", eff);
    cr_expect(fabs(spread - 3.0 * sqrt(2.0 / 5.0) / DIM) < 1e-9, "spread %.12f", spread);
    /* unequal spread: a fourth direction with a smaller share lands between 3 and 4 */
    float w[DIM] = {0};
    w[3] = 1.0f;
    w[0] = 1.0f;
    cr_assert(eng_index_put(&ix, 6, w, &err) == 0);
    cr_assert(eng_index_health(&ix, &eff, &spread, &err) == 0);
    cr_expect(eff > 3.0 && eff < 4.0, "effective rank %.6f", eff);
    eng_index_free(&ix);
    /* every row the same: no spread at all */
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    float same[DIM] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int i = 0; i < 5; i++) cr_assert(eng_index_put(&ix, i, same, &err) == 0);
    cr_assert(eng_index_health(&ix, &eff, &spread, &err) == 0);
    cr_expect(eff < 1e-6 && spread < 1e-6, "identical rows: rank %g spread %g", eff, spread);
    eng_index_free(&ix);
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    cr_assert(eng_index_put(&ix, 1, same, &err) == 0);
    cr_expect_neq(eng_index_health(&ix, &eff, &spread, &err), 0, "one row is too few");
    eng_index_free(&ix);
}

Test(index, an_index_without_the_int8_pass_holds_no_copy_and_refuses_that_pass) {
    const int dim = 40, n = 2500, k = 5;
    eng_err err = {0};
    eng_index full, lean;
    cr_assert(eng_index_init(&full, dim, &err) == 0, "%s", err.msg);
    cr_assert(eng_index_init_passes(&lean, dim, 0, &err) == 0, "%s", err.msg); /* exact only */
    eng_rng r;
    eng_rng_seed(&r, 11);
    float v[40];
    for (int i = 0; i < n; i++) {
        random_vec(&r, v, dim);
        cr_assert(eng_index_put(&full, i, v, &err) == 0, "%s", err.msg);
        cr_assert(eng_index_put(&lean, i, v, &err) == 0, "%s", err.msg);
    }
    for (int i = 0; i < n; i += 3) { /* removals move rows: the lean index must keep up too */
        eng_index_remove(&full, i);
        eng_index_remove(&lean, i);
    }
    cr_expect(lean.rows8 == NULL && lean.scale8 == NULL, "the lean index allocated an int8 copy");
    cr_expect(full.rows8 != NULL, "the full index has no int8 copy");
    eng_hit a[5], b[5], c[5];
    int na, nb;
    random_vec(&r, v, dim);
    cr_assert(eng_index_search(&full, v, k, NULL, a, &na, &err) == 0, "%s", err.msg);
    cr_assert(eng_index_search(&lean, v, k, NULL, b, &nb, &err) == 0, "%s", err.msg);
    expect_same_hits(b, nb, a, na, "lean vs full, exact");
    eng_search_opts o = eng_search_defaults();
    o.pass = ENG_INDEX_INT8;
    int nc = -1;
    cr_expect(eng_index_search(&lean, v, k, &o, c, &nc, &err) != 0, "the int8 pass answered");
    cr_expect(err.code == ERR_BAD_INPUT && strstr(err.msg, "int8"), "error %d \"%s\"", err.code,
              err.msg);
    cr_expect(eng_index_search(&full, v, k, &o, c, &nc, &(eng_err){0}) == 0,
              "the full index refused its int8 pass");
    cr_expect(eng_index_hnsw_build(&lean, NULL, &err) != 0, "a graph was built on an index that "
              "does not keep it in step");
    eng_index_free(&full);
    eng_index_free(&lean);
}
