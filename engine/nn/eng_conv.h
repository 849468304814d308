/* eng_conv.h — 2-D convolution without bias: forward, backward-data, backward-weights.
 *
 * Shapes: src [N, Cin, H, W] in the layout of the activation that feeds it; weights [Cout, Cin, K, K]
 * canonical (plain OIHW, a slice of the model's parameters); dst [N, Cout, OH, OW] in the layout the
 * forward primitive chose. Weights are reordered to the primitives' preferred layouts on every
 * forward (they change every step), and the weight gradient is reordered back to OIHW.
 *
 * Layout negotiation: the convolution first tries to consume its input in the layout it arrives
 * in (and to produce the caller's preferred output layout); if oneDNN has only its slow reference
 * kernel for that combination (it happens for channel counts that are not multiples of 16), the
 * convolution lets oneDNN choose and reorders its input in (and the input gradient back out)
 * through buffers of its own.
 *
 * Winograd on AVX2: a training 3x3 stride-1 pad-1 layer with channels in multiples of 8 whose
 * primitives chose nChw8c (aBcd8b) for input and output runs some passes on eng_winograd when
 * eng_wino_available() (AVX2 cap, no oneDNN Winograd). BARLOWD_WINOGRAD, read at build time:
 * "0" off; unset or "1" the default (all passes when both channel counts are >= 64, measured);
 * or letters of "fdw" (forward, backward-data, backward-weights) to force those passes on every
 * supported shape, for tests and A/B measurements. */
#ifndef ENG_CONV_H
#define ENG_CONV_H

#include "eng_tensor.h"
#include "eng_winograd.h"

typedef struct eng_conv {
    int n, cin, h, w, cout, oh, ow, k, stride, pad;
    int has_bwd_data;                   /* 0 for the first convolution: no input gradient needed */
    int training;                       /* 1: backward primitives exist */
    int frozen;                         /* 1: w_fwd holds the weights for good (eng_conv_freeze) */
    dnnl_memory_desc_t src_md, dst_md;  /* activation layouts the caller sees */
    dnnl_memory_desc_t prim_src_md;     /* input layout the primitives use (src_md if equal) */
    dnnl_primitive_t src_in, dsrc_out;  /* src_md → prim_src_md and back; NULL when equal */
    eng_tensor src_re, dsrc_re;         /* owned buffers in prim_src_md (when reordering) */
    dnnl_primitive_t fwd, bwd_data, bwd_wei;
    eng_staged w_fwd;                   /* weights: plain → forward layout */
    eng_staged w_bwd;                   /* weights: plain → backward-data layout */
    eng_staged dw;                      /* weight gradient: backward-weights layout → plain */
    int wino_passes;                    /* ENG_WINO_* bits: passes run by our Winograd kernel */
    int wino_verbose;                   /* BARLOWD_WINOGRAD_VERBOSE=1: time each pass on stderr */
    eng_wino wino;                      /* its buffers (owned; empty when wino_passes == 0) */
} eng_conv;

/* Passes that may run on eng_winograd instead of oneDNN (see eng_conv_build). */
enum { ENG_WINO_FWD = 1, ENG_WINO_BWD_DATA = 2, ENG_WINO_BWD_WEI = 4 };

/* Builds the primitives for an input of layout src_md. dst_hint (may be NULL): an output layout
 * the caller would like (e.g. the shortcut's, so a residual add needs no conversion); honoured
 * when oneDNN has a fast kernel for it. with_bwd_data: create backward-data. */
int eng_conv_build(eng_conv *c, eng_ctx *ctx, const dnnl_memory_desc_t *src_md,
                   const dnnl_memory_desc_t *dst_hint, int cout, int k, int stride, int pad,
                   int training, int with_bwd_data, eng_err *err);
/* Binds the canonical weights and weight-gradient buffers ([Cout, Cin, K, K] floats each). */
int eng_conv_bind(eng_conv *c, float *w, float *dw, eng_err *err);
int eng_conv_forward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err);
/* Copies the weights into the forward layout once, for good: later forwards skip that reorder
 * (a quarter of a batch-1 inference of small). Only for weights that never change again. */
int eng_conv_freeze(eng_conv *c, eng_ctx *ctx, eng_err *err);
/* Overwrites the bound weight gradient; writes diff_src when built with backward-data. Follows
 * the forward of the same weights (the Winograd passes reuse its transformed weights). */
int eng_conv_backward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *diff_dst,
                      eng_tensor *diff_src, eng_err *err);
void eng_conv_free(eng_conv *c);

#endif
