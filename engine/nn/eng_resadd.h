/* eng_resadd.h — the residual join of a basic block: y = ReLU(a + b).
 *
 * Forward is one oneDNN binary-add with a ReLU post-op (y may overwrite a). Backward is the ReLU's
 * backward computed from y: g = dy where y > 0, else 0; g is then the gradient of both a and b.
 * A shortcut in another layout than the branch is reordered first, so the elementwise work always
 * sees one layout and runs on flat 1-D views. */
#ifndef ENG_RESADD_H
#define ENG_RESADD_H

#include "eng_tensor.h"

typedef struct eng_resadd {
    dnnl_memory_desc_t md; /* layout of a and y */
    dnnl_primitive_t fwd, bwd;
    dnnl_primitive_t b_in; /* b's layout → a's, when they differ (binary ops on mixed layouts
                            * only have oneDNN's slow reference kernel) */
    eng_tensor b_re;       /* owned copy of b in a's layout (when b_in) */
    eng_tensor v[3];       /* borrowed flat 1-D views of the operands, re-pointed per call */
} eng_resadd;

/* a_md: layout of the residual branch (and of y); b_md: layout of the shortcut. */
int eng_resadd_build(eng_resadd *r, eng_ctx *ctx, const dnnl_memory_desc_t *a_md,
                     const dnnl_memory_desc_t *b_md, int training, eng_err *err);
int eng_resadd_forward(eng_resadd *r, eng_ctx *ctx, eng_tensor *a, eng_tensor *b, eng_tensor *y,
                       eng_err *err);
/* g may equal dy. */
int eng_resadd_backward(eng_resadd *r, eng_ctx *ctx, eng_tensor *y, eng_tensor *dy, eng_tensor *g,
                        eng_err *err);
void eng_resadd_free(eng_resadd *r);


/* Gradient accumulation: acc += x (a oneDNN binary add, in place; layouts may differ). */
typedef struct eng_accum {
    dnnl_primitive_t prim;
    dnnl_primitive_t x_in; /* x's layout → acc's, when they differ */
    eng_tensor x_re;       /* owned copy of x in acc's layout (when x_in) */
    eng_tensor v[3];       /* borrowed flat 1-D views of the operands, re-pointed per call */
} eng_accum;

int eng_accum_build(eng_accum *a, eng_ctx *ctx, const dnnl_memory_desc_t *acc_md,
                    const dnnl_memory_desc_t *x_md, eng_err *err);
int eng_accum_run(eng_accum *a, eng_ctx *ctx, eng_tensor *acc, eng_tensor *x, eng_err *err);
void eng_accum_free(eng_accum *a);

#endif
