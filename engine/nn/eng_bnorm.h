/* eng_bnorm.h — batch normalisation over [N, C, H, W] (1-D batch norm is the H = W = 1 case).
 *
 * Training: normalises with the batch mean and biased variance, eps 1e-5, and updates the running
 * mean/variance with momentum 0.1 and the *unbiased* variance, as torch.nn.BatchNorm does.
 * Inference: normalises with the running statistics.
 *
 * One layer may serve `groups` independent sub-batches stacked along N (the two Barlow Twins views
 * run as one 2N batch through the batch-independent layers; each view keeps its own batch
 * statistics here, exactly as two separate forward passes would). Groups are processed in order,
 * so running statistics are updated for group 0 then group 1.
 *
 * Options: affine (learned scale and shift, canonical [C] slices of the parameters) and relu (a
 * ReLU fused after the normalisation; its backward mask is kept in a workspace). */
#ifndef ENG_BNORM_H
#define ENG_BNORM_H

#include "eng_tensor.h"

#define ENG_BN_MAX_GROUPS 2
#define ENG_BN_EPS 1e-5f
#define ENG_BN_MOMENTUM 0.1

typedef struct eng_bnorm {
    int c;                          /* channels */
    int groups;                     /* sub-batches with their own statistics */
    int affine, relu, training;     /* options */
    long count;                     /* elements per channel in one group: n·H·W */
    size_t group_bytes;             /* bytes of one group in the data layout */
    dnnl_primitive_t fwd, bwd;
    eng_tensor src, dst, diff_src, diff_dst; /* borrowed one-group views, re-pointed per group */
    eng_tensor mean[ENG_BN_MAX_GROUPS], var[ENG_BN_MAX_GROUPS]; /* owned batch stats [C] */
    eng_tensor ws[ENG_BN_MAX_GROUPS];  /* owned ReLU workspace per group (relu only) */
    eng_tensor scale, shift;           /* borrowed parameters [C] (a dummy pair when !affine) */
    eng_tensor dscale, dshift;         /* borrowed gradients [C] */
    eng_tensor dscale_tmp, dshift_tmp; /* owned: gradients of groups after the first */
    eng_tensor run_mean, run_var;      /* borrowed running statistics [C] */
} eng_bnorm;

/* data_md: layout of the whole (groups × n)-row tensor; rows of a group must be contiguous. */
int eng_bnorm_build(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md, int groups,
                    int affine, int relu, int training, eng_err *err);
/* Binds the [C] buffers: scale/shift and their gradients (NULL when not affine), and the running
 * mean and variance. */
int eng_bnorm_bind(eng_bnorm *b, float *scale, float *shift, float *dscale, float *dshift,
                   float *run_mean, float *run_var, eng_err *err);
/* src and dst cover all groups; dst may equal src. */
int eng_bnorm_forward(eng_bnorm *b, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err);
/* Needs the forward's src; overwrites diff_src and the bound scale/shift gradients (summed over
 * groups). diff_src may equal diff_dst. */
int eng_bnorm_backward(eng_bnorm *b, eng_ctx *ctx, eng_tensor *src, eng_tensor *diff_dst,
                       eng_tensor *diff_src, eng_err *err);
void eng_bnorm_free(eng_bnorm *b);

#endif
