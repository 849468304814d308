/* eng_tensor.h — a float32 buffer with the oneDNN memory descriptor that says how it is laid out.
 *
 * A tensor either owns its buffer (eng_tensor_alloc) or borrows one (eng_tensor_wrap), e.g. a
 * slice of the model's single parameter allocation or a batch half of an activation. The oneDNN
 * memory object is created once, at build time, so executing a primitive never allocates. */
#ifndef ENG_TENSOR_H
#define ENG_TENSOR_H

#include <stddef.h>

#include "eng_ctx.h"

typedef struct eng_tensor {
    dnnl_memory_desc_t md; /* layout (possibly blocked, possibly padded) */
    dnnl_memory_t mem;     /* oneDNN memory object wrapping data */
    float *data;           /* the bytes; owned iff owns != 0 */
    size_t bytes;          /* dnnl_memory_desc_get_size(md) */
    int owns;              /* 1: freed by eng_tensor_free */
} eng_tensor;

/* Allocates a zeroed, 64-byte aligned buffer for md. On error t stays empty. */
int eng_tensor_alloc(eng_tensor *t, eng_ctx *ctx, const dnnl_memory_desc_t *md, eng_err *err);

/* Wraps caller-owned memory `data` (may be NULL, then set later with eng_tensor_point). */
int eng_tensor_wrap(eng_tensor *t, eng_ctx *ctx, const dnnl_memory_desc_t *md, float *data,
                    eng_err *err);

/* Re-points a borrowed tensor at other memory. Never allocates. */
int eng_tensor_point(eng_tensor *t, float *data, eng_err *err);

/* Frees what t owns and zeroes it; safe on a zeroed tensor. */
void eng_tensor_free(eng_tensor *t);

/* A plain (dense, row-major) descriptor of `ndims` float32 dims. */
int eng_md_plain(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims, eng_err *err);
/* An `any` (let the primitive choose) descriptor of `ndims` float32 dims. */
int eng_md_any(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims, eng_err *err);

/* 1 if md is a dense layout in which dim 0 is outermost, so that a run of rows [a, b) is the
 * contiguous byte range [a*row_bytes, b*row_bytes). Sets *row_bytes. */
int eng_md_rows_contiguous(const dnnl_memory_desc_t *md, size_t *row_bytes);

/* A copy of md with dim 0 replaced by n (same layout tag). */
int eng_md_with_batch(dnnl_memory_desc_t *out, const dnnl_memory_desc_t *md, dnnl_dim_t n,
                      eng_err *err);

/* A reorder primitive from one layout to another (NULL *prim when the layouts are equal). */
int eng_reorder_make(eng_ctx *ctx, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                     dnnl_primitive_t *prim, eng_err *err);
/* Executes a reorder made by eng_reorder_make (a NULL prim means a plain copy). */
int eng_reorder_run(eng_ctx *ctx, dnnl_primitive_t prim, eng_tensor *from, eng_tensor *to,
                    eng_err *err);


/* A parameter-like tensor kept in two layouts: the canonical plain one (a borrowed slice of the
 * model's parameter or gradient allocation) and the layout a primitive prefers. `to_prim` says
 * which way eng_staged_sync copies: plain→primitive (weights before a forward) or primitive→plain
 * (weight gradients after a backward). When the layouts match, both views share one buffer and
 * sync does nothing. */
typedef struct eng_staged {
    eng_tensor plain;         /* borrowed, canonical layout */
    eng_tensor prim;          /* primitive layout: owned copy, or borrowed alias of plain */
    dnnl_primitive_t reorder; /* NULL when the layouts are equal */
    int to_prim;              /* direction of eng_staged_sync */
} eng_staged;

int eng_staged_build(eng_staged *s, eng_ctx *ctx, const dnnl_memory_desc_t *plain_md,
                     const dnnl_memory_desc_t *prim_md, int to_prim, eng_err *err);
/* Points the plain view (and the alias, if any) at caller memory. */
int eng_staged_bind(eng_staged *s, float *plain, eng_err *err);
int eng_staged_sync(eng_staged *s, eng_ctx *ctx, eng_err *err);
void eng_staged_free(eng_staged *s);

#endif
