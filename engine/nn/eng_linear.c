/* eng_linear.c — inner product layer on oneDNN. */
#include "eng_linear.h"

#include <string.h>

int eng_linear_build(eng_linear *l, eng_ctx *ctx, int m, int k, int n, int training, eng_err *err) {
    dnnl_primitive_desc_t fwd_pd = NULL, pd = NULL;
    memset(l, 0, sizeof *l);
    l->m = m;
    l->k = k;
    l->n = n;
    l->training = training;
    dnnl_dims_t xd = {m, k}, wd = {n, k}, yd = {m, n};
    dnnl_memory_desc_t x_md, y_md, w_any, w_plain;
    ENG_TRY(eng_md_plain(&x_md, 2, xd, err));
    ENG_TRY(eng_md_plain(&y_md, 2, yd, err));
    ENG_TRY(eng_md_any(&w_any, 2, wd, err));
    ENG_TRY(eng_md_plain(&w_plain, 2, wd, err));
    dnnl_inner_product_desc_t fd, bd;
    ENG_DNNL(dnnl_inner_product_forward_desc_init(
        &fd, training ? dnnl_forward_training : dnnl_forward_inference, &x_md, &w_any, NULL, &y_md));
    ENG_TRY(eng_ctx_make_prim(ctx, &fd, NULL, NULL, &fwd_pd, &l->fwd, err));
    ENG_TRY(eng_staged_build(&l->w_fwd, ctx, &w_plain,
                             dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_weights_md, 0), 1, err));
    if (training) {
        ENG_DNNL(dnnl_inner_product_backward_data_desc_init(&bd, &x_md, &w_any, &y_md));
        ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, &pd, &l->bwd_data, err));
        ENG_TRY(eng_staged_build(&l->w_bwd, ctx, &w_plain,
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), 1, err));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        ENG_DNNL(dnnl_inner_product_backward_weights_desc_init(&bd, &x_md, &w_any, NULL, &y_md));
        ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, &pd, &l->bwd_wei, err));
        ENG_TRY(eng_staged_build(&l->dw, ctx, &w_plain,
                                 dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0), 0,
                                 err));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    dnnl_primitive_desc_destroy(fwd_pd);
    return 0;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    eng_linear_free(l);
    return -1;
}

int eng_linear_bind(eng_linear *l, float *w, float *dw, eng_err *err) {
    ENG_TRY(eng_staged_bind(&l->w_fwd, w, err));
    if (l->training) {
        ENG_TRY(eng_staged_bind(&l->w_bwd, w, err));
        ENG_TRY(eng_staged_bind(&l->dw, dw, err));
    }
    return 0;
fail:
    return -1;
}

int eng_linear_forward(eng_linear *l, eng_ctx *ctx, eng_tensor *x, eng_tensor *y, eng_err *err) {
    ENG_TRY(eng_staged_sync(&l->w_fwd, ctx, err));
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC, x->mem}, {DNNL_ARG_WEIGHTS, l->w_fwd.prim.mem}, {DNNL_ARG_DST, y->mem}};
    return eng_ctx_exec(ctx, l->fwd, 3, args, err);
fail:
    return -1;
}

int eng_linear_backward(eng_linear *l, eng_ctx *ctx, eng_tensor *x, eng_tensor *dy, eng_tensor *dx,
                        eng_err *err) {
    if (dx) {
        ENG_TRY(eng_staged_sync(&l->w_bwd, ctx, err));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, dy->mem},
                                  {DNNL_ARG_WEIGHTS, l->w_bwd.prim.mem},
                                  {DNNL_ARG_DIFF_SRC, dx->mem}};
        ENG_TRY(eng_ctx_exec(ctx, l->bwd_data, 3, args, err));
    }
    dnnl_exec_arg_t wargs[] = {
        {DNNL_ARG_SRC, x->mem}, {DNNL_ARG_DIFF_DST, dy->mem}, {DNNL_ARG_DIFF_WEIGHTS, l->dw.prim.mem}};
    ENG_TRY(eng_ctx_exec(ctx, l->bwd_wei, 3, wargs, err));
    return eng_staged_sync(&l->dw, ctx, err);
fail:
    return -1;
}

void eng_linear_free(eng_linear *l) {
    if (l->fwd) dnnl_primitive_destroy(l->fwd);
    if (l->bwd_data) dnnl_primitive_destroy(l->bwd_data);
    if (l->bwd_wei) dnnl_primitive_destroy(l->bwd_wei);
    eng_staged_free(&l->w_fwd);
    eng_staged_free(&l->w_bwd);
    eng_staged_free(&l->dw);
    memset(l, 0, sizeof *l);
}
