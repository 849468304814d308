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
 * ReLU fused after the normalisation; its backward mask is kept in a workspace).
 *
 * Synchronised (eng_bnorm_build_synced): the layer holds this rank's shard of every group of a
 * data-parallel job and normalises with the statistics of the whole group over all ranks, as
 * the single-process layer on the union of the shards would. Forward: per-channel sums and sums
 * of squares of the shard (in double) are summed over the ranks, and oneDNN normalises with the
 * resulting mean and biased variance as given statistics; the running statistics use the global
 * count. Backward: oneDNN with given statistics yields γ/σ·dy' (dy' the gradient after the ReLU
 * mask) and the shard's Σdy'·x̂ and Σdy'; those two sums are summed over the ranks and the terms
 * that the batch statistics contribute, −γ/σ·(Σdy' + x̂·Σdy'x̂)/M, are added here. The scale and
 * shift gradients stay the shard's own (the job sums every gradient after the backward). */
#ifndef ENG_BNORM_H
#define ENG_BNORM_H

#include "eng_reduce.h"
#include "eng_tensor.h"

#define ENG_BN_MAX_GROUPS 2
#define ENG_BN_EPS 1e-5f
#define ENG_BN_MOMENTUM 0.1

typedef struct eng_bnorm {
    int c;                          /* channels */
    int groups;                     /* sub-batches with their own statistics */
    int affine, relu, training;     /* options */
    long count;                     /* elements per channel in one group: n·H·W (synced: over all
                                     * ranks, so the running variance's unbiasing is the job's) */
    size_t group_bytes;             /* bytes of one group in the data layout */
    dnnl_primitive_t fwd, bwd;
    eng_tensor src, dst, diff_src, diff_dst; /* borrowed one-group views, re-pointed per group */
    eng_tensor mean[ENG_BN_MAX_GROUPS], var[ENG_BN_MAX_GROUPS]; /* owned batch stats [C] */
    eng_tensor ws[ENG_BN_MAX_GROUPS];  /* owned ReLU workspace per group (relu only) */
    eng_tensor scale, shift;           /* borrowed parameters [C] (synced without affine: owned
                                        * ones and zeros) */
    eng_tensor dscale, dshift;         /* borrowed gradients [C] */
    eng_tensor dscale_tmp, dshift_tmp; /* owned: gradients of groups after the first */
    eng_tensor run_mean, run_var;      /* borrowed running statistics [C] */
    /* Synced layers only. */
    const eng_reduce *red;             /* borrowed: the job's sums (NULL: not synced) */
    long chan_stride, row_stride, pos_stride; /* floats between channel blocks, rows, positions */
    int chan_block;                    /* channels per block of the layout (1: plain) */
    int simd;                          /* 1: the AVX2 loops (blocks of 8 or 16, CPU and cap) */
    long positions;                    /* H·W */
    long shard_rows;                   /* rows of one group on this rank */
    eng_tensor lscale[ENG_BN_MAX_GROUPS], lshift[ENG_BN_MAX_GROUPS]; /* owned: shard's Σdy'x̂, Σdy' */
    double *sums;                      /* owned [groups · 2C]: the sums sent to the other ranks */
} eng_bnorm;

/* data_md: layout of the whole (groups × n)-row tensor; rows of a group must be contiguous. */
int eng_bnorm_build(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md, int groups,
                    int affine, int relu, int training, eng_err *err);
/* A training layer whose groups are this rank's shards: data_md has groups × n rows, the
 * group's rows over all ranks number global_n, and red sums over the ranks. */
int eng_bnorm_build_synced(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md,
                           int groups, int affine, int relu, long global_n,
                           const eng_reduce *red, eng_err *err);
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
