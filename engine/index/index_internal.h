/* index_internal.h — what the index's core (eng_index.c) and its back ends (index_exact.c,
 * index_int8.c, index_hnsw.c) share: the top-k heap, row lookup, and the back-end table. Not an API. */
#ifndef INDEX_INTERNAL_H
#define INDEX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "eng_index.h"

/* Top-k heap over the caller's buffer: the root is the worst of the best k so far. */
typedef struct topk {
    eng_hit *h; /* heap storage [k] (the caller's output buffer) */
    int n, k;
} topk;

/* Offers (score, id); kept when the heap has room or it ranks above the root. */
void index_topk_offer(topk *t, float score, int64_t id);
/* Sorts the heap's hits best first (higher score, then lower id). */
void index_topk_sort(topk *t);

/* Writes the normalised vec into dst (ix->stride floats, zero padded); -1 (ERR_BAD_INPUT) for a
 * zero or non-finite vector, dst then untouched. */
int index_normalise(const eng_index *ix, const float *vec, float *dst, eng_err *err);

/* Whether ix keeps back end `pass` (eng_index_init_passes). */
static inline int index_keeps(const eng_index *ix, int pass) { return (int)(ix->passes >> pass & 1u); }

/* The row holding id, or (size_t)-1. */
size_t index_row_of(const eng_index *ix, int64_t id);

/* A back end. The core owns the float rows; a back end may keep its own per-row state, kept in
 * step through the hooks (any may be NULL). */
typedef struct index_backend {
    eng_index_pass pass;
    const char *name;
    void (*init)(eng_index *ix); /* picks this CPU's kernels; can't fail */
    /* room for cap rows, the first ix->n kept; on error -1 and the old state is kept */
    int (*grow)(eng_index *ix, size_t cap, eng_err *err);
    void (*row_set)(eng_index *ix, size_t r);                /* float row r was written */
    void (*row_move)(eng_index *ix, size_t dst, size_t src); /* row src now lives at dst */
    void (*row_drop)(eng_index *ix, size_t r); /* row r is about to be removed (before any move) */
    void (*release)(eng_index *ix);
    /* Offers the rows for the unit query q (ix->stride floats, zero padded) to t. */
    int (*search)(const eng_index *ix, const float *q, const eng_search_opts *o, topk *t,
                  eng_err *err);
} index_backend;

extern const index_backend index_exact;
extern const index_backend index_int8;
extern const index_backend index_hnsw;

#endif
