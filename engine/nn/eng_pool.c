/* eng_pool.c — global average pooling on oneDNN (reproduces torch's AdaptiveAvgPool2d(1)). */
#include "eng_pool.h"

#include <string.h>

int eng_pool_build(eng_pool *p, eng_ctx *ctx, const dnnl_memory_desc_t *src_md, int training,
                   eng_err *err) {
    dnnl_primitive_desc_t fwd_pd = NULL;
    memset(p, 0, sizeof *p);
    p->n = (int)src_md->dims[0];
    p->c = (int)src_md->dims[1];
    p->h = (int)src_md->dims[2];
    p->w = (int)src_md->dims[3];
    dnnl_dims_t odims = {p->n, p->c, 1, 1}, kernel = {p->h, p->w}, strides = {p->h, p->w},
                zero = {0, 0};
    dnnl_memory_desc_t o_any, o_plain;
    ENG_TRY(eng_md_any(&o_any, 4, odims, err));
    ENG_TRY(eng_md_plain(&o_plain, 4, odims, err));
    dnnl_pooling_desc_t fd;
    ENG_DNNL(dnnl_pooling_forward_desc_init(
        &fd, training ? dnnl_forward_training : dnnl_forward_inference,
        dnnl_pooling_avg_exclude_padding, src_md, &o_any, strides, kernel, zero, zero));
    ENG_TRY(eng_ctx_make_prim(ctx, &fd, NULL, NULL, &fwd_pd, &p->fwd, err));
    const dnnl_memory_desc_t *o_md = dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_dst_md, 0);
    ENG_TRY(eng_tensor_alloc(&p->out, ctx, o_md, err));
    ENG_TRY(eng_tensor_wrap(&p->out_plain, ctx, &o_plain, NULL, err));
    ENG_TRY(eng_reorder_make(ctx, o_md, &o_plain, &p->to_plain, err));
    if (training) {
        dnnl_pooling_desc_t bd;
        ENG_DNNL(dnnl_pooling_backward_desc_init(&bd, dnnl_pooling_avg_exclude_padding, src_md,
                                                 o_md, strides, kernel, zero, zero));
        ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, NULL, &p->bwd, err));
        ENG_TRY(eng_tensor_alloc(&p->dout, ctx, o_md, err));
        ENG_TRY(eng_tensor_wrap(&p->dout_plain, ctx, &o_plain, NULL, err));
        ENG_TRY(eng_reorder_make(ctx, &o_plain, o_md, &p->from_plain, err));
    }
    dnnl_primitive_desc_destroy(fwd_pd);
    return 0;
fail:
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    eng_pool_free(p);
    return -1;
}

int eng_pool_forward(eng_pool *p, eng_ctx *ctx, eng_tensor *src, float *rows, eng_err *err) {
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src->mem}, {DNNL_ARG_DST, p->out.mem}};
    ENG_TRY(eng_ctx_exec(ctx, p->fwd, 2, args, err));
    ENG_TRY(eng_tensor_point(&p->out_plain, rows, err));
    return eng_reorder_run(ctx, p->to_plain, &p->out, &p->out_plain, err);
fail:
    return -1;
}

int eng_pool_backward(eng_pool *p, eng_ctx *ctx, float *drows, eng_tensor *diff_src, eng_err *err) {
    ENG_TRY(eng_tensor_point(&p->dout_plain, drows, err));
    ENG_TRY(eng_reorder_run(ctx, p->from_plain, &p->dout_plain, &p->dout, err));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, p->dout.mem}, {DNNL_ARG_DIFF_SRC, diff_src->mem}};
    return eng_ctx_exec(ctx, p->bwd, 2, args, err);
fail:
    return -1;
}

void eng_pool_free(eng_pool *p) {
    if (p->fwd) dnnl_primitive_destroy(p->fwd);
    if (p->bwd) dnnl_primitive_destroy(p->bwd);
    if (p->to_plain) dnnl_primitive_destroy(p->to_plain);
    if (p->from_plain) dnnl_primitive_destroy(p->from_plain);
    eng_tensor_free(&p->out);
    eng_tensor_free(&p->dout);
    eng_tensor_free(&p->out_plain);
    eng_tensor_free(&p->dout_plain);
    memset(p, 0, sizeof *p);
}
