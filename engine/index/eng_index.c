/* eng_index.c — the index's core: rows, ids and the id map, kept in step with every back end,
 * and the one search entry that dispatches to them. */
#include "eng_index.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

#define SLOT_EMPTY INT64_MIN
#define SLOT_TOMB (INT64_MIN + 1)

/* The back ends, in eng_index_pass order. */
static const index_backend *const backends[ENG_INDEX_PASSES] = {&index_exact, &index_int8,
                                                                 &index_hnsw};

/* ---------------------------------------------------------------------------------------------
 * Top-k heap: the root is the worst of the best k so far. */

/* 1 if (sa, ia) ranks above (sb, ib): higher score, then lower id. */
static int better(float sa, int64_t ia, float sb, int64_t ib) {
    return sa > sb || (sa == sb && ia < ib);
}

void index_topk_offer(topk *t, float score, int64_t id) {
    eng_hit *h = t->h;
    if (t->n < t->k) { /* sift up */
        int i = t->n++;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!better(h[p].score, h[p].id, score, id)) break;
            h[i] = h[p];
            i = p;
        }
        h[i].score = score;
        h[i].id = id;
        return;
    }
    if (!better(score, id, h[0].score, h[0].id)) return;
    int i = 0; /* replace the root, sift down */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        float ws = score;
        int64_t wi = id;
        if (l < t->n && better(ws, wi, h[l].score, h[l].id)) w = l, ws = h[l].score, wi = h[l].id;
        if (r < t->n && better(ws, wi, h[r].score, h[r].id)) w = r;
        if (w == i) break;
        h[i] = h[w];
        i = w;
    }
    h[i].score = score;
    h[i].id = id;
}

static int cmp_hits(const void *a, const void *b) {
    const eng_hit *x = a, *y = b;
    return better(x->score, x->id, y->score, y->id) ? -1 : better(y->score, y->id, x->score, x->id);
}

void index_topk_sort(topk *t) { qsort(t->h, (size_t)t->n, sizeof *t->h, cmp_hits); }

/* ---------------------------------------------------------------------------------------------
 * Id → row hash map (open addressing with linear probing). */

static size_t hash_id(int64_t id, size_t mask) {
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(x ^ (x >> 29)) & mask;
}

/* Slot holding id, or (size_t)-1. */
static size_t find_slot(const eng_index *ix, int64_t id) {
    size_t mask = ix->n_slots - 1;
    for (size_t i = hash_id(id, mask);; i = (i + 1) & mask) {
        if (ix->slot_id[i] == id) return i;
        if (ix->slot_id[i] == SLOT_EMPTY) return (size_t)-1;
    }
}

static void insert_slot(eng_index *ix, int64_t id, size_t row) {
    size_t mask = ix->n_slots - 1, i = hash_id(id, mask);
    while (ix->slot_id[i] != SLOT_EMPTY && ix->slot_id[i] != SLOT_TOMB) i = (i + 1) & mask;
    if (ix->slot_id[i] == SLOT_TOMB) ix->tombstones--;
    ix->slot_id[i] = id;
    ix->slot_row[i] = row;
}

/* Rebuilds the hash table with n_slots slots from the rows (drops tombstones). */
static int rehash(eng_index *ix, size_t n_slots, eng_err *err) {
    int64_t *sid = malloc(n_slots * sizeof *sid);
    size_t *srow = malloc(n_slots * sizeof *srow);
    if (!sid || !srow) {
        free(sid);
        free(srow);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for %zu hash slots", n_slots);
    }
    for (size_t i = 0; i < n_slots; i++) sid[i] = SLOT_EMPTY;
    free(ix->slot_id);
    free(ix->slot_row);
    ix->slot_id = sid;
    ix->slot_row = srow;
    ix->n_slots = n_slots;
    ix->tombstones = 0;
    for (size_t r = 0; r < ix->n; r++) insert_slot(ix, ix->ids[r], r);
    return 0;
}

/* Room for twice the rows: each back end's state first, then the core's (a back end that
 * grew while the core could not is harmless: its room only exceeds ix->cap). */
static int grow(eng_index *ix, eng_err *err) {
    size_t cap = ix->cap ? ix->cap * 2 : 1024;
    for (int b = 0; b < ENG_INDEX_PASSES; b++)
        if (index_keeps(ix, b) && backends[b]->grow && backends[b]->grow(ix, cap, err)) return -1;
    float *rows = aligned_alloc(64, cap * ix->stride * sizeof(float));
    int64_t *ids = malloc(cap * sizeof *ids);
    if (!rows || !ids) {
        free(rows);
        free(ids);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for %zu vectors", cap);
    }
    if (ix->n) {
        memcpy(rows, ix->rows, ix->n * ix->stride * sizeof(float));
        memcpy(ids, ix->ids, ix->n * sizeof *ids);
    }
    free(ix->rows);
    free(ix->ids);
    ix->rows = rows;
    ix->ids = ids;
    ix->cap = cap;
    return rehash(ix, cap * 2, err);
}

size_t index_row_of(const eng_index *ix, int64_t id) {
    size_t slot = find_slot(ix, id);
    return slot == (size_t)-1 ? (size_t)-1 : ix->slot_row[slot];
}

/* ---------------------------------------------------------------------------------------------
 * Public API. */

int eng_index_init(eng_index *ix, int dim, eng_err *err) {
    return eng_index_init_passes(ix, dim, ENG_INDEX_ALL_PASSES, err);
}

int eng_index_init_passes(eng_index *ix, int dim, unsigned passes, eng_err *err) {
    memset(ix, 0, sizeof *ix);
    ix->passes = (passes | 1u << ENG_INDEX_EXACT) & ENG_INDEX_ALL_PASSES;
    if (dim < 1 || dim > 65536) return eng_fail_code(err, ERR_BAD_INPUT, "index: dimension %d out of range", dim);
    ix->dim = dim;
    ix->stride = ((size_t)dim + 15) / 16 * 16;
    for (int b = 0; b < ENG_INDEX_PASSES; b++)
        if (backends[b]->init) backends[b]->init(ix);
    if (grow(ix, err)) {
        eng_index_free(ix);
        return -1;
    }
    return 0;
}

/* Writes the normalised vec into dst (stride floats, zero padded); -1 if it cannot be, in which
 * case dst is untouched. */
int index_normalise(const eng_index *ix, const float *vec, float *dst, eng_err *err) {
    double ss = 0;
    for (int i = 0; i < ix->dim; i++) {
        if (!isfinite(vec[i])) return eng_fail_code(err, ERR_BAD_INPUT, "index: vector has a non-finite value");
        ss += (double)vec[i] * vec[i];
    }
    if (!(ss > 0)) return eng_fail_code(err, ERR_BAD_INPUT, "index: zero vector has no direction");
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < ix->dim; i++) dst[i] = vec[i] * inv;
    for (size_t i = (size_t)ix->dim; i < ix->stride; i++) dst[i] = 0.0f;
    return 0;
}

/* Tells every back end that float row r changed. */
static void row_set(eng_index *ix, size_t r) {
    for (int b = 0; b < ENG_INDEX_PASSES; b++)
        if (index_keeps(ix, b) && backends[b]->row_set) backends[b]->row_set(ix, r);
}

int eng_index_put(eng_index *ix, int64_t id, const float *vec, eng_err *err) {
    if (id == SLOT_EMPTY || id == SLOT_TOMB) return eng_fail(err, "index: id %lld is reserved", (long long)id);
    size_t slot = find_slot(ix, id);
    if (slot != (size_t)-1) { /* replace in place (index_normalise checks before it writes) */
        size_t r = ix->slot_row[slot];
        if (index_normalise(ix, vec, ix->rows + r * ix->stride, err)) return -1;
        row_set(ix, r);
        return 0;
    }
    if (ix->n == ix->cap && grow(ix, err)) return -1;
    float *row = ix->rows + ix->n * ix->stride;
    if (index_normalise(ix, vec, row, err)) return -1;
    row_set(ix, ix->n);
    ix->ids[ix->n] = id;
    if ((ix->n + 1 + ix->tombstones) * 2 > ix->n_slots) { /* keep the table at most half full */
        size_t slots = ix->n_slots;
        while ((ix->n + 1) * 2 > slots) slots *= 2;
        if (rehash(ix, slots, err)) return -1;
    }
    insert_slot(ix, id, ix->n);
    ix->n++;
    return 0;
}

int eng_index_remove(eng_index *ix, int64_t id) {
    size_t slot = find_slot(ix, id);
    if (slot == (size_t)-1) return 0;
    size_t row = ix->slot_row[slot], last = ix->n - 1;
    for (int b = 0; b < ENG_INDEX_PASSES; b++)
        if (index_keeps(ix, b) && backends[b]->row_drop) backends[b]->row_drop(ix, row);
    ix->slot_id[slot] = SLOT_TOMB;
    ix->tombstones++;
    if (row != last) { /* move the last row into the hole */
        memcpy(ix->rows + row * ix->stride, ix->rows + last * ix->stride,
               ix->stride * sizeof(float));
        for (int b = 0; b < ENG_INDEX_PASSES; b++)
            if (index_keeps(ix, b) && backends[b]->row_move) backends[b]->row_move(ix, row, last);
        ix->ids[row] = ix->ids[last];
        ix->slot_row[find_slot(ix, ix->ids[row])] = row;
    }
    ix->n--;
    return 1;
}

const float *eng_index_get(const eng_index *ix, int64_t id) {
    size_t slot = find_slot(ix, id);
    return slot == (size_t)-1 ? NULL : ix->rows + ix->slot_row[slot] * ix->stride;
}

eng_search_opts eng_search_defaults(void) {
    eng_search_opts o = {ENG_INDEX_EXACT, INT64_MIN, 0, NULL, 0, NULL};
    return o;
}

const char *eng_index_pass_name(eng_index_pass pass) {
    return pass >= 0 && pass < ENG_INDEX_PASSES ? backends[pass]->name : NULL;
}

int eng_index_search(const eng_index *ix, const float *query, int k, const eng_search_opts *opts,
                     eng_hit *out, int *n_out, eng_err *err) {
    *n_out = 0;
    eng_search_opts o = opts ? *opts : eng_search_defaults();
    if (k < 1) return eng_fail_code(err, ERR_BAD_INPUT, "index: k must be at least 1 (got %d)", k);
    if (o.pass < 0 || o.pass >= ENG_INDEX_PASSES)
        return eng_fail_code(err, ERR_BAD_INPUT, "index: unknown search pass %d", (int)o.pass);
    if (!index_keeps(ix, o.pass))
        return eng_fail_code(err, ERR_BAD_INPUT, "index: this index does not keep the %s pass",
                             backends[o.pass]->name);
    if (o.rerank < 0)
        return eng_fail_code(err, ERR_BAD_INPUT, "index: rerank factor must be >= 0 (got %d)",
                             o.rerank);
    float *q = aligned_alloc(64, ix->stride * sizeof(float));
    if (!q) return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory");
    if (index_normalise(ix, query, q, err)) {
        free(q);
        return -1;
    }
    if (o.exact_out) *o.exact_out = o.pass == ENG_INDEX_EXACT; /* a back end may say otherwise */
    topk t = {out, 0, k};
    int rc = backends[o.pass]->search(ix, q, &o, &t, err);
    if (rc == 0) {
        index_topk_sort(&t);
        *n_out = t.n;
    }
    free(q);
    return rc;
}

int eng_index_neighbors(const eng_index *ix, int64_t id, int k, const eng_idset *allow,
                        eng_hit *out, int *n_out,
                        eng_err *err) {
    *n_out = 0;
    const float *v = eng_index_get(ix, id);
    if (!v) return eng_fail(err, "index: no vector with id %lld", (long long)id);
    eng_search_opts o = eng_search_defaults();
    o.exclude = id;
    o.allow = allow;
    return eng_index_search(ix, v, k, &o, out, n_out, err);
}

double eng_index_recall(const eng_hit *hits, int nf, const eng_hit *exact, int ne) {
    if (ne == 0) return 1.0;
    int found = 0;
    for (int i = 0; i < nf; i++) {
        int in = hits[i].score >= exact[ne - 1].score - 1e-6f;
        for (int j = 0; j < ne && !in; j++) in = hits[i].id == exact[j].id;
        found += in;
    }
    return (double)found / ne;
}

void eng_index_free(eng_index *ix) {
    free(ix->rows);
    free(ix->ids);
    free(ix->slot_id);
    free(ix->slot_row);
    for (int b = 0; b < ENG_INDEX_PASSES; b++)
        if (index_keeps(ix, b) && backends[b]->release) backends[b]->release(ix);
    memset(ix, 0, sizeof *ix);
}
