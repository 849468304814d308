/* test_ann.c — the HNSW back end (index_hnsw.c) against the exact scan computed in the same test:
 * recall@10 on clustered vectors, live inserts, deletes and replacements, filters (the graph
 * walk and the exact fallback), which answers say they are exact, and one graph per seed
 * whatever the thread count. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eng_index.h"
#include "eng_rng.h"

#define DIM 48
#define N 20000
#define CLUSTERS 200
#define QUERIES 200
#define K 10
#define SIGMA 0.8f /* spread of a cluster per component (a centre's are unit normals) */

#define HNSW_PASS(ex, allow_, exact_) \
    (&(eng_search_opts){.pass = ENG_INDEX_HNSW, .exclude = (ex), .allow = (allow_), .exact_out = (exact_)})
#define EXACT_PASS(ex, allow_) \
    (&(eng_search_opts){.pass = ENG_INDEX_EXACT, .exclude = (ex), .allow = (allow_)})

/* A Gaussian mixture: n_clusters centres (unit normals), each point a centre plus sigma·noise. */
typedef struct mixture {
    int n_clusters;
    float *centres; /* owned [n_clusters, DIM] */
    eng_rng rng;
} mixture;

static void mixture_init(mixture *m, int n_clusters, uint64_t seed) {
    m->n_clusters = n_clusters;
    eng_rng_seed(&m->rng, seed);
    m->centres = malloc(sizeof(float) * (size_t)n_clusters * DIM);
    cr_assert(m->centres);
    for (size_t i = 0; i < (size_t)n_clusters * DIM; i++)
        m->centres[i] = (float)eng_rng_normal(&m->rng);
}

/* A point of cluster c (c < 0: a cluster drawn at random); returns its cluster. */
static int mixture_draw(mixture *m, int c, float *v) {
    if (c < 0) c = (int)(eng_rng_next(&m->rng) % (uint64_t)m->n_clusters);
    for (int j = 0; j < DIM; j++)
        v[j] = m->centres[(size_t)c * DIM + j] + SIGMA * (float)eng_rng_normal(&m->rng);
    return c;
}

/* n points of the mixture under ids 0..n-1; cluster_of[i] (if not NULL) says which. */
static void fill(eng_index *ix, mixture *m, int n, int *cluster_of) {
    eng_err err = {0};
    float v[DIM];
    for (int i = 0; i < n; i++) {
        int c = mixture_draw(m, -1, v);
        if (cluster_of) cluster_of[i] = c;
        cr_assert(eng_index_put(ix, i, v, &err) == 0, "%s", err.msg);
    }
}

static void build(eng_index *ix, uint64_t seed) {
    eng_err err = {0};
    eng_hnsw_params p = eng_hnsw_defaults();
    p.seed = seed;
    cr_assert(eng_index_hnsw_build(ix, &p, &err) == 0, "%s", err.msg);
    cr_assert(eng_index_hnsw_bytes(ix) > 0);
}

/* Mean recall@K of the graph against the exact scan over QUERIES mixture queries, both under
 * allow; checks every hit is allowed and that K come back whenever K rows are allowed. */
static double recall(const eng_index *ix, mixture *m, const eng_idset *allow, int64_t n_allowed) {
    eng_err err = {0};
    float q[DIM];
    eng_hit got[K], want[K];
    int ng, nw;
    double sum = 0;
    for (int t = 0; t < QUERIES; t++) {
        mixture_draw(m, -1, q);
        int exact = -1;
        cr_assert(eng_index_search(ix, q, K, HNSW_PASS(INT64_MIN, allow, &exact), got, &ng, &err) == 0,
                  "%s", err.msg);
        cr_assert(eng_index_search(ix, q, K, EXACT_PASS(INT64_MIN, allow), want, &nw, &err) == 0,
                  "%s", err.msg);
        int64_t expect = n_allowed < K ? n_allowed : K;
        cr_assert_eq(ng, (int)expect, "query %d: %d hits, %lld allowed", t, ng, (long long)n_allowed);
        for (int i = 0; i < ng; i++) {
            cr_assert(eng_index_get(ix, got[i].id) != NULL, "hit %lld is not in the index",
                      (long long)got[i].id);
            if (allow) cr_assert(eng_idset_has(allow, got[i].id), "hit %lld is filtered out", (long long)got[i].id);
            if (i) cr_assert(got[i - 1].score >= got[i].score, "hits out of order");
        }
        sum += eng_index_recall(got, ng, want, nw);
    }
    return sum / QUERIES;
}

Test(ann, recall_at_10_on_clustered_vectors_is_at_least_0_95) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 1);
    fill(&ix, &m, N, NULL);
    build(&ix, 1);
    double r = recall(&ix, &m, NULL, N);
    cr_log_info("recall@10 %.4f at %d rows, graph %zu bytes", r, N, eng_index_hnsw_bytes(&ix));
    cr_expect(r >= 0.95, "recall@10 %.4f", r);
    /* a larger ef finds at least as much */
    eng_index_hnsw_set_ef(&ix, 256);
    double r2 = recall(&ix, &m, NULL, N);
    cr_expect(r2 >= r - 0.01 && r2 >= 0.98, "recall@10 at ef 256: %.4f (ef 64: %.4f)", r2, r);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, answers_say_whether_they_are_exact) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 2);
    fill(&ix, &m, 5000, NULL);
    float q[DIM];
    mixture_draw(&m, -1, q);
    eng_hit got[K], want[K];
    int ng, nw, exact = -1;
    /* no graph yet: the exact scan, said so */
    cr_assert(eng_index_search(&ix, q, K, HNSW_PASS(INT64_MIN, NULL, &exact), got, &ng, &err) == 0);
    cr_expect_eq(exact, 1);
    cr_assert(eng_index_search(&ix, q, K, EXACT_PASS(INT64_MIN, NULL), want, &nw, &err) == 0);
    cr_expect_eq(ng, nw);
    for (int i = 0; i < ng; i++) cr_expect_eq(got[i].id, want[i].id);
    build(&ix, 1);
    cr_assert(eng_index_search(&ix, q, K, HNSW_PASS(INT64_MIN, NULL, &exact), got, &ng, &err) == 0);
    cr_expect_eq(exact, 0);
    /* a filter allowing few rows: the exact scan of those rows */
    eng_idset few;
    cr_assert(eng_idset_init(&few, 5000, &err) == 0);
    for (int i = 0; i < 100; i++) eng_idset_add(&few, i * 7);
    cr_assert(eng_index_hnsw_filter_exact_below(&ix) > 100);
    cr_assert(eng_index_search(&ix, q, K, HNSW_PASS(INT64_MIN, &few, &exact), got, &ng, &err) == 0);
    cr_expect_eq(exact, 1);
    cr_assert(eng_index_search(&ix, q, K, EXACT_PASS(INT64_MIN, &few), want, &nw, &err) == 0);
    cr_assert_eq(ng, nw);
    for (int i = 0; i < ng; i++) cr_expect_eq(got[i].id, want[i].id);
    /* the exact passes say so too, and int8 does not */
    cr_assert(eng_index_search(&ix, q, K, &(eng_search_opts){.pass = ENG_INDEX_EXACT, .exclude = INT64_MIN, .exact_out = &exact}, got, &ng, &err) == 0);
    cr_expect_eq(exact, 1);
    cr_assert(eng_index_search(&ix, q, K, &(eng_search_opts){.pass = ENG_INDEX_INT8, .exclude = INT64_MIN, .exact_out = &exact}, got, &ng, &err) == 0);
    cr_expect_eq(exact, 0);
    /* dropped: exact again */
    eng_index_hnsw_drop(&ix);
    cr_expect_eq(eng_index_hnsw_bytes(&ix), 0);
    cr_assert(eng_index_search(&ix, q, K, HNSW_PASS(INT64_MIN, NULL, &exact), got, &ng, &err) == 0);
    cr_expect_eq(exact, 1);
    eng_idset_free(&few);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, rows_inserted_after_the_build_are_found) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 3);
    fill(&ix, &m, N / 2, NULL);
    build(&ix, 1);
    float v[DIM];
    eng_hit got[K];
    int ng;
    for (int i = N / 2; i < N; i++) { /* live inserts, each one found at once as its own nearest */
        mixture_draw(&m, -1, v);
        cr_assert(eng_index_put(&ix, i, v, &err) == 0, "%s", err.msg);
        if (i % 10) continue;
        cr_assert(eng_index_search(&ix, v, 1, HNSW_PASS(INT64_MIN, NULL, NULL), got, &ng, &err) == 0);
        cr_expect(ng == 1 && (got[0].id == i || got[0].score >= 0.99999f),
                  "inserted %d, nearest %lld (%.6f)", i, (long long)got[0].id, got[0].score);
    }
    double r = recall(&ix, &m, NULL, N);
    cr_expect(r >= 0.95, "recall@10 %.4f after %d live inserts", r, N / 2);
    eng_index_free(&ix);
    free(m.centres);
}

/* The graph built a few batches at a time (as the service does, beside its searches): while it
 * builds, queries are exact scans that say so; puts, replacements and removes in between the
 * batches land in it; once finished it walks with the recall of a graph built at once, and finds
 * every row, even those the removes moved behind the build's cursor. */
Test(ann, a_graph_built_in_steps_answers_exactly_until_finished_and_keeps_every_write) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 11);
    fill(&ix, &m, N / 2, NULL);
    cr_assert(eng_index_hnsw_begin(&ix, NULL, &err) == 0, "%s", err.msg);
    cr_expect(eng_index_hnsw_building(&ix));
    cr_expect_eq(eng_index_hnsw_bytes(&ix), 0, "a building graph reports no bytes");
    float v[DIM];
    eng_hit got[K], want[K];
    int ng, nw, steps = 0, r, next_id = N / 2;
    while ((r = eng_index_hnsw_extend(&ix, 700, &err)) == 1) {
        steps++;
        /* a query mid-build: the exact answer, marked exact */
        mixture_draw(&m, -1, v);
        int exact = -1;
        cr_assert(eng_index_search(&ix, v, K, HNSW_PASS(INT64_MIN, NULL, &exact), got, &ng, &err) == 0);
        cr_assert(eng_index_search(&ix, v, K, EXACT_PASS(INT64_MIN, NULL), want, &nw, &err) == 0);
        cr_expect_eq(exact, 1, "step %d: a building graph answered", steps);
        cr_expect_eq(ng, nw, "step %d", steps);
        for (int i = 0; i < ng && i < nw; i++)
            cr_expect(got[i].id == want[i].id && got[i].score == want[i].score, "step %d hit %d", steps, i);
        /* writes between the steps: removes of rows the cursor has passed (the first step's move
         * the last rows, not linked yet, into those holes), new rows, a replacement */
        for (int i = 0; i < 20; i++) eng_index_remove(&ix, steps * 20 + i);
        for (int i = 0; i < 50; i++) {
            mixture_draw(&m, -1, v);
            cr_assert(eng_index_put(&ix, next_id++, v, &err) == 0, "%s", err.msg);
        }
        mixture_draw(&m, -1, v);
        cr_assert(eng_index_put(&ix, 5000 + steps, v, &err) == 0, "%s", err.msg);
    }
    cr_assert_eq(r, 0, "%s", err.msg);
    cr_expect(steps >= 10, "%d steps for %d rows at 700 a step", steps, N / 2);
    cr_expect(eng_index_hnsw_building(&ix), "extend does not finish by itself");
    eng_index_hnsw_finish(&ix);
    cr_expect(!eng_index_hnsw_building(&ix));
    cr_expect(eng_index_hnsw_bytes(&ix) > 0);
    /* every row is a node: each row's own vector finds it (or an identical score) first */
    for (int64_t id = 0; id < next_id; id++) {
        const float *row = eng_index_get(&ix, id);
        if (!row) continue;
        memcpy(v, row, sizeof v);
        int exact = -1;
        eng_search_opts o = {.pass = ENG_INDEX_HNSW, .exclude = INT64_MIN, .exact_out = &exact,
                             .ef = 128};
        cr_assert(eng_index_search(&ix, v, 1, &o, got, &ng, &err) == 0);
        cr_assert_eq(exact, 0);
        cr_assert(ng == 1 && (got[0].id == id || got[0].score >= 0.99999f),
                  "row %lld not found first (%lld, %.6f)", (long long)id, (long long)got[0].id,
                  got[0].score);
    }
    double rec = recall(&ix, &m, NULL, (int64_t)ix.n);
    cr_log_info("built in %d steps: recall@10 %.4f at %zu rows", steps, rec, ix.n);
    cr_expect(rec >= 0.95, "recall@10 %.4f", rec);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, deleted_ids_are_never_returned_and_recall_holds_after_deleting_30_percent) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 4);
    fill(&ix, &m, N, NULL);
    build(&ix, 1);
    char *gone = calloc(N, 1);
    cr_assert(gone);
    eng_rng rng;
    eng_rng_seed(&rng, 9);
    int removed = 0;
    while (removed < N * 3 / 10) {
        int id = (int)(eng_rng_next(&rng) % N);
        if (gone[id]) continue;
        cr_assert_eq(eng_index_remove(&ix, id), 1);
        gone[id] = 1;
        removed++;
    }
    float q[DIM];
    eng_hit got[K];
    int ng;
    for (int t = 0; t < QUERIES; t++) {
        mixture_draw(&m, -1, q);
        cr_assert(eng_index_search(&ix, q, K, HNSW_PASS(INT64_MIN, NULL, NULL), got, &ng, &err) == 0);
        cr_assert_eq(ng, K);
        for (int i = 0; i < ng; i++) cr_assert(!gone[got[i].id], "deleted id %lld returned", (long long)got[i].id);
    }
    double r = recall(&ix, &m, NULL, N - removed);
    cr_log_info("recall@10 %.4f after deleting %d of %d rows", r, removed, N);
    cr_expect(r >= 0.95, "recall@10 %.4f after deleting 30%%", r);
    free(gone);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, a_replacement_moves_the_vector) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 5);
    int *cluster_of = malloc(sizeof(int) * N);
    cr_assert(cluster_of);
    fill(&ix, &m, N, cluster_of);
    build(&ix, 1);
    float old[DIM], v[DIM];
    eng_hit got[K];
    int ng;
    for (int t = 0; t < 50; t++) {
        int id = t * 397 % N;
        memcpy(old, eng_index_get(&ix, id), sizeof old);
        mixture_draw(&m, (cluster_of[id] + 1 + t) % CLUSTERS, v); /* another cluster */
        cr_assert(eng_index_put(&ix, id, v, &err) == 0, "%s", err.msg);
        cr_assert(eng_index_search(&ix, v, 1, HNSW_PASS(INT64_MIN, NULL, NULL), got, &ng, &err) == 0);
        cr_expect(got[0].id == id || got[0].score >= 0.99999f, "replaced %d not found where it went", id);
        cr_assert(eng_index_search(&ix, old, K, HNSW_PASS(INT64_MIN, NULL, NULL), got, &ng, &err) == 0);
        for (int i = 0; i < ng; i++) cr_expect(got[i].id != id, "replaced %d still found where it was", id);
    }
    double r = recall(&ix, &m, NULL, N);
    cr_expect(r >= 0.95, "recall@10 %.4f after replacements", r);
    free(cluster_of);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, filters_return_only_allowed_ids_and_k_of_them) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 6);
    int *cluster_of = malloc(sizeof(int) * N);
    cr_assert(cluster_of);
    fill(&ix, &m, N, cluster_of);
    build(&ix, 1);
    eng_idset half, odd, few;
    cr_assert(eng_idset_init(&half, N, &err) == 0 && eng_idset_init(&odd, N, &err) == 0 &&
              eng_idset_init(&few, N, &err) == 0);
    int64_t n_half = 0, n_odd = 0, n_few = 0;
    for (int i = 0; i < N; i++) {
        if (i % 2) eng_idset_add(&half, i), n_half++;
        if (cluster_of[i] % 2) eng_idset_add(&odd, i), n_odd++; /* whole clusters out */
        if (i % 500 == 0) eng_idset_add(&few, i), n_few++;
    }
    cr_assert(n_odd >= eng_index_hnsw_filter_exact_below(&ix), "the graph walk is not tested");
    cr_assert(n_few < eng_index_hnsw_filter_exact_below(&ix) && n_few >= K);
    double rh = recall(&ix, &m, &half, n_half);
    double ro = recall(&ix, &m, &odd, n_odd); /* half the queries fall in clusters filtered out */
    double rf = recall(&ix, &m, &few, n_few);
    cr_log_info("filtered recall@10: every other id %.4f, odd clusters %.4f, 1 in 500 %.4f", rh, ro, rf);
    cr_expect(rh >= 0.95, "recall@10 %.4f with every other id", rh);
    cr_expect(ro >= 0.90, "recall@10 %.4f with odd clusters only", ro);
    cr_expect(rf >= 0.9999, "recall@10 %.4f with the exact fallback", rf);
    /* exactly K allowed: all K come back, whatever the walk meets */
    eng_idset_clear(&few);
    for (int i = 0; i < K; i++) eng_idset_add(&few, i * 1999);
    double rk = recall(&ix, &m, &few, K);
    cr_expect(rk >= 0.9999, "recall@10 %.4f with K allowed", rk);
    eng_idset_free(&half);
    eng_idset_free(&odd);
    eng_idset_free(&few);
    free(cluster_of);
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, a_neighbours_query_never_returns_its_own_id) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 7);
    fill(&ix, &m, 5000, NULL);
    build(&ix, 1);
    eng_hit got[K];
    int ng;
    for (int id = 0; id < 5000; id += 101) {
        cr_assert(eng_index_search(&ix, eng_index_get(&ix, id), K, HNSW_PASS(id, NULL, NULL), got, &ng, &err) == 0);
        cr_assert_eq(ng, K);
        for (int i = 0; i < ng; i++) cr_expect(got[i].id != id);
    }
    eng_index_free(&ix);
    free(m.centres);
}

/* The hits of QUERIES queries on a graph built with threads threads and seed. */
static void answers(int threads, uint64_t seed, eng_hit *out, size_t *bytes) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    mixture m;
    mixture_init(&m, CLUSTERS, 8);
    fill(&ix, &m, 8000, NULL);
    int was = omp_get_max_threads();
    omp_set_num_threads(threads);
    build(&ix, seed);
    omp_set_num_threads(was);
    *bytes = eng_index_hnsw_bytes(&ix);
    float q[DIM];
    int ng;
    memset(out, 0, sizeof *out * QUERIES * K);
    for (int t = 0; t < QUERIES; t++) {
        mixture_draw(&m, -1, q);
        cr_assert(eng_index_search(&ix, q, K, &(eng_search_opts){.pass = ENG_INDEX_HNSW, .exclude = INT64_MIN, .ef = 12},
                                   out + (size_t)t * K, &ng, &err) == 0);
    }
    eng_index_free(&ix);
    free(m.centres);
}

Test(ann, one_seed_gives_one_graph_whatever_the_thread_count) {
    eng_hit *a = malloc(sizeof *a * QUERIES * K), *b = malloc(sizeof *b * QUERIES * K),
            *c = malloc(sizeof *c * QUERIES * K);
    cr_assert(a && b && c);
    size_t ba, bb, bc;
    answers(1, 42, a, &ba);
    answers(2, 42, b, &bb);
    answers(2, 43, c, &bc);
    cr_expect_eq(ba, bb);
    cr_expect(memcmp(a, b, sizeof *a * QUERIES * K) == 0, "1 and 2 threads built different graphs");
    cr_expect(memcmp(a, c, sizeof *a * QUERIES * K) != 0, "another seed gave the same answers at ef 12");
    free(a);
    free(b);
    free(c);
}

Test(ann, bad_parameters_are_refused_and_leave_no_graph) {
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    eng_hnsw_params p = eng_hnsw_defaults();
    p.m = 1;
    cr_expect(eng_index_hnsw_build(&ix, &p, &err) == -1);
    cr_expect_eq(err.code, ERR_BAD_INPUT);
    p = eng_hnsw_defaults();
    p.ef_construction = p.m - 1;
    cr_expect(eng_index_hnsw_build(&ix, &p, &err) == -1);
    cr_expect(eng_index_hnsw_bytes(&ix) == 0);
    /* an empty graph: inserts make it, searches find them */
    cr_assert(eng_index_hnsw_build(&ix, NULL, &err) == 0);
    float v[DIM] = {1};
    cr_assert(eng_index_put(&ix, 5, v, &err) == 0);
    eng_hit h[K];
    int n;
    cr_assert(eng_index_search(&ix, v, 1, HNSW_PASS(INT64_MIN, NULL, NULL), h, &n, &err) == 0);
    cr_expect(n == 1 && h[0].id == 5);
    cr_expect(eng_index_remove(&ix, 5) == 1);
    cr_assert(eng_index_search(&ix, v, 1, HNSW_PASS(INT64_MIN, NULL, NULL), h, &n, &err) == 0);
    cr_expect_eq(n, 0);
    eng_index_free(&ix);
}
