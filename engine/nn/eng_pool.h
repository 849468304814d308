/* eng_pool.h — global average pooling: [N, C, H, W] (any layout) → [N, C] plain rows.
 *
 * The pooled vector of each image is the representation the server serves. Pooling runs in the
 * layout oneDNN picks; its tiny [N, C, 1, 1] result is reordered to plain rows at the edge (and the
 * incoming gradient back again). */
#ifndef ENG_POOL_H
#define ENG_POOL_H

#include "eng_tensor.h"

typedef struct eng_pool {
    int n, c, h, w;
    dnnl_primitive_t fwd, bwd;
    dnnl_primitive_t to_plain, from_plain; /* NULL when the pooled layout is already plain */
    eng_tensor out, dout;                 /* owned [N, C, 1, 1] in the primitive's layout */
    eng_tensor out_plain, dout_plain;     /* borrowed [N, C, 1, 1] plain views of caller rows */
} eng_pool;

int eng_pool_build(eng_pool *p, eng_ctx *ctx, const dnnl_memory_desc_t *src_md, int training,
                   eng_err *err);
/* rows: caller's [N, C] float buffer. */
int eng_pool_forward(eng_pool *p, eng_ctx *ctx, eng_tensor *src, float *rows, eng_err *err);
int eng_pool_backward(eng_pool *p, eng_ctx *ctx, float *drows, eng_tensor *diff_src, eng_err *err);
void eng_pool_free(eng_pool *p);

#endif
