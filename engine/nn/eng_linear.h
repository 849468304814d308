/* eng_linear.h — fully connected layer without bias (torch.nn.Linear(bias=False)).
 *
 * Shapes: x [M, K] plain rows, weights [N, K] canonical (a parameter slice), y [M, N] plain rows.
 * oneDNN's inner product runs with weights in the layout it prefers (2–4× faster than plain);
 * they are reordered from the canonical copy on every forward. */
#ifndef ENG_LINEAR_H
#define ENG_LINEAR_H

#include "eng_tensor.h"

typedef struct eng_linear {
    int m, k, n;              /* rows, in features, out features */
    int training;
    dnnl_primitive_t fwd, bwd_data, bwd_wei;
    eng_staged w_fwd, w_bwd;  /* weights: plain → forward / backward-data layouts */
    eng_staged dw;            /* weight gradient → plain */
} eng_linear;

int eng_linear_build(eng_linear *l, eng_ctx *ctx, int m, int k, int n, int training, eng_err *err);
int eng_linear_bind(eng_linear *l, float *w, float *dw, eng_err *err);
/* x: [M, K] plain tensor; y: [M, N] plain tensor. */
int eng_linear_forward(eng_linear *l, eng_ctx *ctx, eng_tensor *x, eng_tensor *y, eng_err *err);
/* Overwrites the bound weight gradient and, when dx is not NULL, dx. */
int eng_linear_backward(eng_linear *l, eng_ctx *ctx, eng_tensor *x, eng_tensor *dy, eng_tensor *dx,
                        eng_err *err);
void eng_linear_free(eng_linear *l);

#endif
