/* test_filter.c — metadata filters on a real store: every operator against a brute-force
 * evaluator written here (straight from the filter language's definition, over each image's
 * meta JSON), random filters over random metadata, the index kept in step with deletes and
 * rebuilt on reopen, bad filters refused with a message naming the fault, and a filtered
 * search over the index returning the exact top k among the matching images. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_index.h"
#include "store.h"

static char dir[64], path[96];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/barlowd-filter-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/test.db", dir);
}

static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(system(cmd) == 0);
}

TestSuite(filter, .init = make_dir, .fini = remove_dir, .timeout = 120);

static store *open_store(void) {
    store *s;
    store_err err = {0};
    cr_assert(store_open(path, NULL, &s, &err) == 0, "%s", err.msg);
    return s;
}

static int64_t put(store *s, unsigned seed, const char *meta) {
    unsigned char bytes[64];
    memset(bytes, 0, sizeof bytes);
    memcpy(bytes, &seed, sizeof seed); /* distinct seeds, distinct bytes (no dedup) */
    store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, NULL, 0, meta};
    int64_t id;
    int existed;
    store_err err = {0};
    cr_assert(store_image_put(s, &in, &id, &existed, &err) == 0, "%s", err.msg);
    cr_assert(!existed);
    return id;
}

/* ---- the reference: the language's definition, applied to one image's meta ---- */

static int scalar(const json_t *v) {
    return json_is_string(v) || json_is_number(v) || json_is_boolean(v);
}

static int ref_equal(const json_t *stored, const json_t *want) {
    if (!stored || !scalar(stored)) return 0;
    if (json_is_number(stored) && json_is_number(want))
        return json_number_value(stored) == json_number_value(want);
    if (json_is_string(stored) && json_is_string(want))
        return json_string_length(stored) == json_string_length(want) &&
               !memcmp(json_string_value(stored), json_string_value(want),
                       json_string_length(want));
    if (json_is_boolean(stored) && json_is_boolean(want))
        return json_is_true(stored) == json_is_true(want);
    return 0;
}

static int ref_op(const json_t *stored, const char *op, const json_t *arg) {
    if (!strcmp(op, "$eq")) return ref_equal(stored, arg);
    if (!strcmp(op, "$ne")) return !ref_equal(stored, arg);
    if (!strcmp(op, "$in") || !strcmp(op, "$nin")) {
        int any = 0;
        for (size_t i = 0; i < json_array_size(arg); i++)
            any |= ref_equal(stored, json_array_get(arg, i));
        return op[1] == 'i' ? any : !any;
    }
    if (!strcmp(op, "$exists")) return (stored != NULL) == json_is_true(arg);
    if (!stored || !json_is_number(stored)) return 0;
    double x = json_number_value(stored), y = json_number_value(arg);
    if (!strcmp(op, "$gt")) return x > y;
    if (!strcmp(op, "$gte")) return x >= y;
    if (!strcmp(op, "$lt")) return x < y;
    if (!strcmp(op, "$lte")) return x <= y;
    cr_assert_fail("unknown operator %s in a test filter", op);
    return 0;
}

static int ref_match(const char *meta_text, const json_t *filter) {
    json_t *meta = meta_text ? json_loads(meta_text, 0, NULL) : NULL;
    int ok = 1;
    const char *key;
    json_t *cond;
    json_object_foreach((json_t *)filter, key, cond) {
        json_t *stored = meta ? json_object_get(meta, key) : NULL;
        if (json_is_object(cond)) {
            const char *op;
            json_t *arg;
            json_object_foreach(cond, op, arg) ok &= ref_op(stored, op, arg);
        } else {
            ok &= ref_equal(stored, cond);
        }
    }
    json_decref(meta);
    return ok;
}

/* ---- fixtures ---- */

#define N_IMAGES 300
static char *metas[N_IMAGES + 1]; /* by id (ids start at 1 in a fresh store) */

static uint64_t rng = 12345;
static unsigned rnd(unsigned n) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)((rng >> 33) % n);
}

static const char *const labels[] = {"shoe", "bag", "shirt", "dress", "coat"};

/* Random metadata: a label string (sometimes missing or null), a number (integer or real, a few
 * stored as the string "3"), a boolean, sometimes an array or object. */
static char *random_meta(unsigned i) {
    json_t *m = json_object();
    unsigned r = rnd(10);
    if (r < 7) json_object_set_new(m, "label", json_string(labels[rnd(5)]));
    else if (r == 7) json_object_set_new(m, "label", json_null());
    r = rnd(10);
    if (r < 5) json_object_set_new(m, "batch", json_integer((json_int_t)rnd(10)));
    else if (r < 8) json_object_set_new(m, "batch", json_real(rnd(20) / 2.0));
    else if (r == 8) json_object_set_new(m, "batch", json_string("3"));
    if (rnd(3)) json_object_set_new(m, "ok", json_boolean(rnd(2)));
    if (rnd(8) == 0) json_object_set_new(m, "tags", json_pack("[s,s]", "a", "b"));
    if (rnd(8) == 0) json_object_set_new(m, "extra", json_pack("{s:i}", "x", 1));
    json_object_set_new(m, "i", json_integer((json_int_t)i));
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return text;
}

static void expect_filter(store *s, const char *filter_text, int64_t max_id) {
    store_filter *f;
    store_err err = {0};
    cr_assert(store_filter_parse(filter_text, strlen(filter_text), &f, &err) == 0, "%s: %s",
              filter_text, err.msg);
    eng_idset got;
    cr_assert(store_filter_eval(s, f, &got, &err) == 0, "%s", err.msg);
    json_t *fj = json_loads(filter_text, 0, NULL);
    int64_t want_n = 0;
    for (int64_t id = 1; id <= max_id; id++) {
        int want = metas[id] && ref_match(metas[id], fj);
        if (metas[id] == NULL) want = 0; /* deleted */
        want_n += want;
        cr_expect_eq(eng_idset_has(&got, id), want, "%s: image %lld (%s) should%s match",
                     filter_text, (long long)id, metas[id] ? metas[id] : "deleted",
                     want ? "" : " not");
    }
    cr_expect_eq(eng_idset_count(&got), want_n, "%s: count", filter_text);
    json_decref(fj);
    eng_idset_free(&got);
    store_filter_free(f);
}

static const char *const fixed_filters[] = {
    "{}",
    "{\"label\": \"shoe\"}",
    "{\"label\": {\"$eq\": \"bag\"}}",
    "{\"label\": {\"$ne\": \"bag\"}}",
    "{\"label\": {\"$in\": [\"shoe\", \"bag\"]}}",
    "{\"label\": {\"$nin\": [\"shoe\", \"bag\"]}}",
    "{\"label\": {\"$in\": []}}",
    "{\"label\": {\"$nin\": []}}",
    "{\"label\": {\"$exists\": true}}",
    "{\"label\": {\"$exists\": false}}",
    "{\"batch\": 3}",
    "{\"batch\": 3.0}",
    "{\"batch\": \"3\"}",
    "{\"batch\": {\"$gte\": 3, \"$lt\": 7}}",
    "{\"batch\": {\"$gt\": 2.5}}",
    "{\"batch\": {\"$lte\": 0}}",
    "{\"batch\": {\"$lt\": -1}}",
    "{\"batch\": {\"$in\": [1, 2.5, \"3\"]}}",
    "{\"batch\": {\"$ne\": 4}}",
    "{\"ok\": true}",
    "{\"ok\": false}",
    "{\"ok\": {\"$ne\": true}}",
    "{\"ok\": 1}",
    "{\"tags\": {\"$exists\": true}}",
    "{\"extra\": {\"$exists\": true}, \"ok\": true}",
    "{\"label\": \"shoe\", \"batch\": {\"$gte\": 5}}",
    "{\"label\": {\"$in\": [\"coat\"], \"$ne\": \"coat\"}}",
    "{\"missing\": {\"$exists\": false}}",
    "{\"missing\": \"x\"}",
    "{\"missing\": {\"$nin\": [\"x\"]}}",
    "{\"i\": {\"$gte\": 100, \"$lt\": 110}}",
};

Test(filter, every_operator_matches_the_reference_through_deletes_and_a_reopen) {
    store *s = open_store();
    for (unsigned i = 1; i <= N_IMAGES; i++) {
        metas[i] = random_meta(i);
        cr_assert_eq(put(s, i, metas[i]), (int64_t)i);
    }
    size_t nf = sizeof fixed_filters / sizeof *fixed_filters;
    for (size_t i = 0; i < nf; i++) expect_filter(s, fixed_filters[i], N_IMAGES);

    /* delete a third (one transaction) and check again: the index follows */
    int64_t del[N_IMAGES / 3], gone[N_IMAGES / 3];
    for (int i = 0; i < N_IMAGES / 3; i++) del[i] = 3 * i + 2;
    store_err err = {0};
    cr_assert_eq(store_images_delete(s, del, N_IMAGES / 3, gone, &err), N_IMAGES / 3, "%s",
                 err.msg);
    for (int i = 0; i < N_IMAGES / 3; i++) {
        cr_expect_eq(gone[i], del[i]);
        free(metas[del[i]]);
        metas[del[i]] = NULL;
    }
    cr_expect_eq(store_images_delete(s, del, 2, NULL, &err), 0, "deleting twice deletes none");
    for (size_t i = 0; i < nf; i++) expect_filter(s, fixed_filters[i], N_IMAGES);
    store_close(s);

    /* reopened: the index is rebuilt from the database */
    s = open_store();
    for (size_t i = 0; i < nf; i++) expect_filter(s, fixed_filters[i], N_IMAGES);

    /* random filters: a random key, operator and operand */
    static const char *const keys[] = {"label", "batch", "ok", "tags", "missing"};
    static const char *const ops[] = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte",
                                      "$exists"};
    for (int t = 0; t < 300; t++) {
        json_t *f = json_object();
        int nk = 1 + (int)rnd(2);
        for (int c = 0; c < nk; c++) {
            const char *op = ops[rnd(9)];
            json_t *arg;
            if (!strcmp(op, "$exists")) {
                arg = json_boolean(rnd(2));
            } else if (op[1] == 'g' || op[1] == 'l') {
                arg = json_real(rnd(24) / 2.0 - 1);
            } else {
                json_t *one = rnd(2) ? json_string(labels[rnd(5)])
                                     : rnd(2) ? json_integer((json_int_t)rnd(10))
                                              : json_boolean(rnd(2));
                if (!strcmp(op, "$in") || !strcmp(op, "$nin")) {
                    arg = json_array();
                    json_array_append_new(arg, one);
                    if (rnd(2)) json_array_append_new(arg, json_string(labels[rnd(5)]));
                } else {
                    arg = one;
                }
            }
            const char *key = keys[rnd(5)];
            json_t *cond = json_object_get(f, key);
            if (!cond) {
                cond = json_object();
                json_object_set_new(f, key, cond);
            }
            json_object_set_new(cond, op, arg);
        }
        char *text = json_dumps(f, JSON_COMPACT);
        expect_filter(s, text, N_IMAGES);
        free(text);
        json_decref(f);
    }
    store_close(s);
    for (int i = 0; i <= N_IMAGES; i++) free(metas[i]);
}

Test(filter, bad_filters_are_refused_naming_the_fault) {
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"[]", "object"},
        {"\"shoe\"", "object"},
        {"{\"label\": null}", "null"},
        {"{\"label\": [1, 2]}", "array"},
        {"{\"label\": {\"x\": 1}}", "objects are not values"},
        {"{\"label\": {}}", "empty object"},
        {"{\"label\": {\"$regex\": \"s.*\"}}", "unknown operator \"$regex\""},
        {"{\"$and\": [{\"a\": 1}]}", "top level"},
        {"{\"batch\": {\"$gt\": \"3\"}}", "$gt needs a number"},
        {"{\"batch\": {\"$lte\": true}}", "$lte needs a number"},
        {"{\"label\": {\"$in\": \"shoe\"}}", "$in needs an array"},
        {"{\"label\": {\"$nin\": [null]}}", "every value of $nin"},
        {"{\"label\": {\"$in\": [[1]]}}", "every value of $in"},
        {"{\"label\": {\"$exists\": 1}}", "$exists needs true or false"},
        {"{\"label\": {\"$eq\": null}}", "$eq needs a string"},
        {"{\"label\": {\"$ne\": {}}}", "$ne needs a string"},
        {"{\"label\": \"a\", \"label\": \"b\"}", "not JSON"},
        {"{\"label\": ", "not JSON"},
        {"", "not JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        store_filter *f = (store_filter *)&f;
        store_err err = {0};
        cr_expect_eq(store_filter_parse(bad[i].text, strlen(bad[i].text), &f, &err), -1, "%s",
                     bad[i].text);
        cr_expect_null(f, "%s: no filter on failure", bad[i].text);
        cr_expect_eq(err.code, ERR_BAD_INPUT, "%s", bad[i].text);
        cr_expect(strstr(err.msg, bad[i].says) != NULL, "%s: \"%s\" should say \"%s\"",
                  bad[i].text, err.msg, bad[i].says);
        if (strstr(bad[i].text, "\"label\"") && strcmp(bad[i].says, "not JSON"))
            cr_expect(strstr(err.msg, "label") != NULL, "%s: names the key: %s", bad[i].text,
                      err.msg);
    }
    store_filter *f;
    store_err err = {0};
    cr_assert(store_filter_parse("{}", 2, &f, &err) == 0);
    cr_expect(store_filter_is_empty(f));
    store_filter_free(f);
    cr_assert(store_filter_parse("{\"a\": 1}", 8, &f, &err) == 0);
    cr_expect(!store_filter_is_empty(f));
    store_filter_free(f);
}

/* The exact top k of the allowed rows, by brute force. */
static int ref_topk(const float *vecs, int n, int dim, const float *q, const eng_idset *allow,
                    int64_t exclude, int k, eng_hit *out) {
    int m = 0;
    double qn = 0;
    for (int d = 0; d < dim; d++) qn += (double)q[d] * q[d];
    for (int i = 0; i < n; i++) {
        int64_t id = i + 1;
        if (id == exclude || (allow && !eng_idset_has(allow, id))) continue;
        double dot = 0, vn = 0;
        for (int d = 0; d < dim; d++) {
            dot += (double)q[d] * vecs[(size_t)i * dim + d];
            vn += (double)vecs[(size_t)i * dim + d] * vecs[(size_t)i * dim + d];
        }
        eng_hit h = {id, (float)(dot / sqrt(qn * vn))};
        if (m == k && h.score <= out[k - 1].score) continue;
        int at = m < k ? m++ : k - 1; /* the slot freed: a new one, or the worst kept */
        while (at > 0 && out[at - 1].score < h.score) {
            out[at] = out[at - 1];
            at--;
        }
        out[at] = h;
    }
    return m;
}

Test(filter, a_filtered_search_is_the_exact_top_k_of_the_matching_rows) {
    enum { N = 2000, DIM = 48, K = 10 };
    eng_index ix;
    eng_err err = {0};
    cr_assert(eng_index_init(&ix, DIM, &err) == 0);
    float *vecs = malloc((size_t)N * DIM * sizeof *vecs);
    for (size_t i = 0; i < (size_t)N * DIM; i++) vecs[i] = (float)rnd(2001) / 1000.0f - 1.0f;
    for (int i = 0; i < N; i++)
        cr_assert(eng_index_put(&ix, i + 1, vecs + (size_t)i * DIM, &err) == 0);
    /* sets of 50%, 10%, 1%, 3 rows (fewer than k) and none */
    const int every[] = {2, 10, 100, 700, 0};
    for (size_t t = 0; t < sizeof every / sizeof *every; t++) {
        eng_idset allow;
        cr_assert(eng_idset_init(&allow, N + 1, &err) == 0);
        for (int id = 1; every[t] && id <= N; id++)
            if (id % every[t] == 0) eng_idset_add(&allow, id);
        int64_t matching = eng_idset_count(&allow);
        for (int q = 0; q < 5; q++) {
            const float *query = vecs + (size_t)(q * 37) * DIM;
            eng_hit got[K], want[K];
            int ng;
            eng_search_opts o = eng_search_defaults();
            o.allow = &allow;
            cr_assert(eng_index_search(&ix, query, K, &o, got, &ng, &err) == 0, "%s", err.msg);
            int nw = ref_topk(vecs, N, DIM, query, &allow, INT64_MIN, K, want);
            cr_expect_eq(ng, matching < K ? (int)matching : K, "every %d: k hits when k match",
                         every[t]);
            cr_expect_eq(ng, nw);
            for (int i = 0; i < ng && i < nw; i++) {
                cr_expect(eng_idset_has(&allow, got[i].id), "every %d: hit %lld not allowed",
                          every[t], (long long)got[i].id);
                cr_expect(fabsf(got[i].score - want[i].score) < 1e-5f, "every %d: rank %d",
                          every[t], i);
            }
            /* the int8 pass and a batch honour the set too */
            o.pass = ENG_INDEX_INT8;
            cr_assert(eng_index_search(&ix, query, K, &o, got, &ng, &err) == 0, "%s", err.msg);
            cr_expect_eq(ng, nw);
            for (int i = 0; i < ng; i++) cr_expect(eng_idset_has(&allow, got[i].id));
            int counts[1];
            cr_assert(eng_index_search_batch(&ix, query, 1, K, &allow, got, counts, &err) == 0);
            cr_expect_eq(counts[0], nw);
            for (int i = 0; i < counts[0] && i < nw; i++)
                cr_expect(fabsf(got[i].score - want[i].score) < 1e-4f, "batch rank %d", i);
            /* neighbours of a stored row: itself excluded, the set honoured */
            int64_t self = q * 37 + 1;
            cr_assert(eng_index_neighbors(&ix, self, K, &allow, got, &ng, &err) == 0);
            nw = ref_topk(vecs, N, DIM, query, &allow, self, K, want);
            cr_expect_eq(ng, nw);
            for (int i = 0; i < ng && i < nw; i++) {
                cr_expect_neq(got[i].id, self);
                cr_expect(fabsf(got[i].score - want[i].score) < 1e-5f);
            }
        }
        eng_idset_free(&allow);
    }
    free(vecs);
    eng_index_free(&ix);
}
