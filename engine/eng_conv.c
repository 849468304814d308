/* eng_conv.c — convolution layer on oneDNN (reproduces torch.nn.Conv2d(bias=False)). */
#include "engine/eng_conv.h"

#include <string.h>

int eng_conv_build(eng_conv *c, eng_ctx *ctx, const dnnl_memory_desc_t *src_md, int cout, int k,
                   int stride, int pad, int training, int with_bwd_data, eng_err *err) {
    dnnl_primitive_desc_t fwd_pd = NULL, pd = NULL;
    memset(c, 0, sizeof *c);
    if (src_md->ndims != 4) return eng_fail(err, "conv: source must be 4-D");
    c->n = (int)src_md->dims[0];
    c->cin = (int)src_md->dims[1];
    c->h = (int)src_md->dims[2];
    c->w = (int)src_md->dims[3];
    c->cout = cout;
    c->k = k;
    c->stride = stride;
    c->pad = pad;
    c->oh = (c->h + 2 * pad - k) / stride + 1;
    c->ow = (c->w + 2 * pad - k) / stride + 1;
    c->training = training;
    c->has_bwd_data = training && with_bwd_data;
    c->src_md = *src_md;
    if (c->oh < 1 || c->ow < 1) return eng_fail(err, "conv: input %dx%d too small", c->h, c->w);

    dnnl_dims_t wdims = {cout, c->cin, k, k}, ddims = {c->n, cout, c->oh, c->ow};
    dnnl_dims_t strides = {stride, stride}, pad_l = {pad, pad}, pad_r = {pad, pad};
    dnnl_memory_desc_t w_any, w_plain, d_any;
    ENG_TRY(eng_md_any(&w_any, 4, wdims, err));
    ENG_TRY(eng_md_plain(&w_plain, 4, wdims, err));
    ENG_TRY(eng_md_any(&d_any, 4, ddims, err));

    dnnl_convolution_desc_t fd;
    ENG_DNNL(dnnl_convolution_forward_desc_init(
        &fd, training ? dnnl_forward_training : dnnl_forward_inference, dnnl_convolution_direct,
        src_md, &w_any, NULL, &d_any, strides, pad_l, pad_r));
    ENG_TRY(eng_ctx_make_prim(ctx, &fd, NULL, NULL, &fwd_pd, &c->fwd, err));
    c->dst_md = *dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_dst_md, 0);
    ENG_TRY(eng_staged_build(&c->w_fwd, ctx, &w_plain,
                             dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_weights_md, 0), 1,
                             err));
    if (training) {
        dnnl_convolution_desc_t bd;
        if (c->has_bwd_data) {
            ENG_DNNL(dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct,
                                                              src_md, &w_any, &c->dst_md, strides,
                                                              pad_l, pad_r));
            ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, &pd, &c->bwd_data, err));
            ENG_TRY(eng_staged_build(&c->w_bwd, ctx, &w_plain,
                                     dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 1,
                                     err));
            dnnl_primitive_desc_destroy(pd);
            pd = NULL;
        }
        ENG_DNNL(dnnl_convolution_backward_weights_desc_init(&bd, dnnl_convolution_direct, src_md,
                                                             &w_any, NULL, &c->dst_md, strides,
                                                             pad_l, pad_r));
        ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, &pd, &c->bwd_wei, err));
        ENG_TRY(eng_staged_build(&c->dw, ctx, &w_plain,
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0),
                                 0, err));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    dnnl_primitive_desc_destroy(fwd_pd);
    return 0;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    eng_conv_free(c);
    return -1;
}

int eng_conv_bind(eng_conv *c, float *w, float *dw, eng_err *err) {
    ENG_TRY(eng_staged_bind(&c->w_fwd, w, err));
    if (c->has_bwd_data) ENG_TRY(eng_staged_bind(&c->w_bwd, w, err));
    if (c->training) ENG_TRY(eng_staged_bind(&c->dw, dw, err));
    return 0;
fail:
    return -1;
}

int eng_conv_forward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err) {
    ENG_TRY(eng_staged_sync(&c->w_fwd, ctx, err));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src->mem},
                              {DNNL_ARG_WEIGHTS, c->w_fwd.prim.mem},
                              {DNNL_ARG_DST, dst->mem}};
    return eng_ctx_exec(ctx, c->fwd, 3, args, err);
fail:
    return -1;
}

int eng_conv_backward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *diff_dst,
                      eng_tensor *diff_src, eng_err *err) {
    if (c->has_bwd_data) {
        ENG_TRY(eng_staged_sync(&c->w_bwd, ctx, err));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, diff_dst->mem},
                                  {DNNL_ARG_WEIGHTS, c->w_bwd.prim.mem},
                                  {DNNL_ARG_DIFF_SRC, diff_src->mem}};
        ENG_TRY(eng_ctx_exec(ctx, c->bwd_data, 3, args, err));
    }
    dnnl_exec_arg_t wargs[] = {{DNNL_ARG_SRC, src->mem},
                               {DNNL_ARG_DIFF_DST, diff_dst->mem},
                               {DNNL_ARG_DIFF_WEIGHTS, c->dw.prim.mem}};
    ENG_TRY(eng_ctx_exec(ctx, c->bwd_wei, 3, wargs, err));
    return eng_staged_sync(&c->dw, ctx, err);
fail:
    return -1;
}

void eng_conv_free(eng_conv *c) {
    if (c->fwd) dnnl_primitive_destroy(c->fwd);
    if (c->bwd_data) dnnl_primitive_destroy(c->bwd_data);
    if (c->bwd_wei) dnnl_primitive_destroy(c->bwd_wei);
    eng_staged_free(&c->w_fwd);
    eng_staged_free(&c->w_bwd);
    eng_staged_free(&c->dw);
    memset(c, 0, sizeof *c);
}
