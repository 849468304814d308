/* eng_resadd.c — residual add + ReLU on oneDNN binary and eltwise primitives. */
#include "engine/eng_resadd.h"

#include <string.h>

int eng_resadd_build(eng_resadd *r, eng_ctx *ctx, const dnnl_memory_desc_t *a_md,
                     const dnnl_memory_desc_t *b_md, int training, eng_err *err) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t hint = NULL;
    memset(r, 0, sizeof *r);
    r->md = *a_md;
    ENG_DNNL(dnnl_primitive_attr_clone(&attr, ctx->attr));
    ENG_DNNL(dnnl_post_ops_create(&po));
    ENG_DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    ENG_DNNL(dnnl_primitive_attr_set_post_ops(attr, po));
    if (!dnnl_memory_desc_equal(a_md, b_md)) {
        ENG_TRY(eng_tensor_alloc(&r->b_re, ctx, a_md, err));
        ENG_TRY(eng_reorder_make(ctx, b_md, a_md, &r->b_in, err));
    }
    dnnl_binary_desc_t bd;
    ENG_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, a_md, a_md, a_md));
    ENG_TRY(eng_ctx_make_prim(ctx, &bd, attr, NULL, NULL, &r->fwd, err));
    if (training) {
        dnnl_eltwise_desc_t fd, ed;
        ENG_DNNL(dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training,
                                                dnnl_eltwise_relu_use_dst_for_bwd, a_md, 0, 0));
        ENG_DNNL(dnnl_primitive_desc_create(&hint, &fd, ctx->attr, ctx->engine, NULL));
        ENG_DNNL(dnnl_eltwise_backward_desc_init(&ed, dnnl_eltwise_relu_use_dst_for_bwd, a_md,
                                                 a_md, 0, 0));
        ENG_TRY(eng_ctx_make_prim(ctx, &ed, NULL, hint, NULL, &r->bwd, err));
        dnnl_primitive_desc_destroy(hint);
    }
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return 0;
fail:
    if (hint) dnnl_primitive_desc_destroy(hint);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    eng_resadd_free(r);
    return -1;
}

int eng_resadd_forward(eng_resadd *r, eng_ctx *ctx, eng_tensor *a, eng_tensor *b, eng_tensor *y,
                       eng_err *err) {
    if (r->b_in) {
        if (eng_reorder_run(ctx, r->b_in, b, &r->b_re, err)) return -1;
        b = &r->b_re;
    }
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC_0, a->mem}, {DNNL_ARG_SRC_1, b->mem}, {DNNL_ARG_DST, y->mem}};
    return eng_ctx_exec(ctx, r->fwd, 3, args, err);
}

int eng_resadd_backward(eng_resadd *r, eng_ctx *ctx, eng_tensor *y, eng_tensor *dy, eng_tensor *g,
                        eng_err *err) {
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_DST, y->mem}, {DNNL_ARG_DIFF_DST, dy->mem}, {DNNL_ARG_DIFF_SRC, g->mem}};
    return eng_ctx_exec(ctx, r->bwd, 3, args, err);
}

void eng_resadd_free(eng_resadd *r) {
    if (r->fwd) dnnl_primitive_destroy(r->fwd);
    if (r->bwd) dnnl_primitive_destroy(r->bwd);
    if (r->b_in) dnnl_primitive_destroy(r->b_in);
    eng_tensor_free(&r->b_re);
    memset(r, 0, sizeof *r);
}

int eng_accum_build(eng_accum *a, eng_ctx *ctx, const dnnl_memory_desc_t *acc_md,
                    const dnnl_memory_desc_t *x_md, eng_err *err) {
    memset(a, 0, sizeof *a);
    if (!dnnl_memory_desc_equal(acc_md, x_md)) {
        ENG_TRY(eng_tensor_alloc(&a->x_re, ctx, acc_md, err));
        ENG_TRY(eng_reorder_make(ctx, x_md, acc_md, &a->x_in, err));
    }
    dnnl_binary_desc_t bd;
    ENG_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, acc_md, acc_md, acc_md));
    return eng_ctx_make_prim(ctx, &bd, NULL, NULL, NULL, &a->prim, err);
fail:
    return -1;
}

int eng_accum_run(eng_accum *a, eng_ctx *ctx, eng_tensor *acc, eng_tensor *x, eng_err *err) {
    if (a->x_in) {
        if (eng_reorder_run(ctx, a->x_in, x, &a->x_re, err)) return -1;
        x = &a->x_re;
    }
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC_0, acc->mem}, {DNNL_ARG_SRC_1, x->mem}, {DNNL_ARG_DST, acc->mem}};
    return eng_ctx_exec(ctx, a->prim, 3, args, err);
}

void eng_accum_free(eng_accum *a) {
    if (a->prim) dnnl_primitive_destroy(a->prim);
    if (a->x_in) dnnl_primitive_destroy(a->x_in);
    eng_tensor_free(&a->x_re);
    memset(a, 0, sizeof *a);
}
