/* test_index.c — exact cosine top-k against a brute-force double-precision reference, with
 * inserts, replacements and deletes; deterministic ties; every kernel this CPU has. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_index.h"
#include "engine/eng_rng.h"
#include "tests/test_util.h"

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
    eng_err err = {{0}};
    eng_index ix;
    cr_assert(eng_index_init(&ix, dim, &err) == 0, "%s", err.msg);
    if (eng_index_use_kernel(&ix, kernel) != 0) {
        cr_log_warn("kernel %s not available on this CPU; checked the others", kernel);
        eng_index_free(&ix);
        return;
    }
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
        cr_assert(eng_index_search(&ix, q, k, INT64_MIN, got, &ng, &err) == 0, "%s", err.msg);
        char what[64];
        snprintf(what, sizeof what, "%s query %d", kernel, t);
        expect_same_hits(got, ng, want, nw, what);
    }
    /* neighbours of a stored id exclude the id itself */
    int ng, nw = ref_topk(&r, r.vecs + 2 * dim, k, r.ids[2], want);
    cr_assert(eng_index_neighbors(&ix, r.ids[2], k, got, &ng, &err) == 0, "%s", err.msg);
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
    eng_err err = {{0}};
    eng_index ix;
    cr_assert(eng_index_init(&ix, 3, &err) == 0);
    float a[3] = {1, 0, 0}, b[3] = {0, 1, 0};
    int64_t order[6] = {50, 7, 33, 12, 99, 1};
    for (int i = 0; i < 6; i++) cr_assert(eng_index_put(&ix, order[i], i % 2 ? a : b, &err) == 0);
    /* ids 7, 12, 1 hold a; 50, 33, 99 hold b */
    eng_hit hits[6];
    int n;
    cr_assert(eng_index_search(&ix, a, 4, INT64_MIN, hits, &n, &err) == 0);
    cr_assert_eq(n, 4);
    int64_t want[4] = {1, 7, 12, 33};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(hits[i].id, want[i], "hit %d: id %lld, want %lld", i, (long long)hits[i].id,
                     (long long)want[i]);
    cr_expect(hits[0].score == 1.0f && hits[3].score == 0.0f);
    eng_index_free(&ix);
}

Test(index, batch_search_equals_one_query_at_a_time) {
    eng_err err = {{0}};
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
    cr_assert(eng_index_search_batch(&ix, qs, nq, k, batch, counts, &err) == 0, "%s", err.msg);
    for (int i = 0; i < nq; i++) {
        cr_assert(eng_index_search(&ix, qs + i * dim, k, INT64_MIN, one, &n1, &err) == 0);
        char what[32];
        snprintf(what, sizeof what, "batch query %d", i);
        /* the batch scores by GEMM: equal to the last float bits, so ties may order differently */
        expect_same_hits(batch + i * k, counts[i], one, n1, what);
    }
    free(qs);
    free(batch);
    eng_index_free(&ix);
}

Test(index, bad_input_is_refused_and_changes_nothing) {
    eng_err err = {{0}};
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
    cr_expect(eng_index_search(&ix, good, 0, INT64_MIN, h, &n, &err) != 0);
    cr_expect(eng_index_search(&ix, zero, 1, INT64_MIN, h, &n, &err) != 0);
    cr_expect(eng_index_neighbors(&ix, 42, 1, h, &n, &err) != 0 && strstr(err.msg, "42"));
    cr_assert(eng_index_search(&ix, good, 10, INT64_MIN, h, &n, &err) == 0);
    cr_expect_eq(n, 1, "k larger than the index returns every row");
    eng_index_free(&ix);
    eng_index none;
    cr_expect(eng_index_init(&none, 0, &err) != 0 && strstr(err.msg, "dimension"));
}

Test(index, many_inserts_and_deletes_keep_every_id_findable) {
    eng_err err = {{0}};
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
        for (int64_t id = round % 2; id < 20000; id += 2) cr_assert_eq(eng_index_remove(&ix, id), 1);
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
