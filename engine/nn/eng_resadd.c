/* eng_resadd.c — residual add + ReLU on oneDNN binary and eltwise primitives.
 *
 * Both operations are elementwise, so once both operands share one layout they run on flat 1-D
 * views of the buffers (padding included: 0 + 0 and ReLU(0) stay 0). Besides being the simplest
 * description, this sidesteps a oneDNN 2.6 defect: its binary kernel ("jit:uni") computed wrong
 * sums and wrote past its output for 8-channel blocked tensors on our AVX-512 machines (see the
 * layer test residual_add_writes_nothing_outside_its_tensors_in_8_channel_blocks). */
#include "eng_resadd.h"

#include <string.h>

/* A plain 1-D descriptor covering every float of md's buffer. */
static int flat_md(dnnl_memory_desc_t *flat, const dnnl_memory_desc_t *md, eng_err *err) {
    dnnl_dims_t n = {(dnnl_dim_t)(dnnl_memory_desc_get_size(md) / sizeof(float))};
    return eng_md_plain(flat, 1, n, err);
}

/* Three borrowed flat views, wrapped once and re-pointed per call. */
static int flat_views(eng_tensor v[3], eng_ctx *ctx, const dnnl_memory_desc_t *flat,
                      eng_err *err) {
    for (int i = 0; i < 3; i++)
        if (eng_tensor_wrap(&v[i], ctx, flat, NULL, err)) return -1;
    return 0;
}

static int point3(eng_tensor v[3], float *a, float *b, float *c, eng_err *err) {
    if (eng_tensor_point(&v[0], a, err) || eng_tensor_point(&v[1], b, err) ||
        eng_tensor_point(&v[2], c, err))
        return -1;
    return 0;
}

int eng_resadd_build(eng_resadd *r, eng_ctx *ctx, const dnnl_memory_desc_t *a_md,
                     const dnnl_memory_desc_t *b_md, int training, eng_err *err) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t hint = NULL;
    dnnl_memory_desc_t flat;
    memset(r, 0, sizeof *r);
    r->md = *a_md;
    ENG_TRY(flat_md(&flat, a_md, err));
    ENG_TRY(flat_views(r->v, ctx, &flat, err));
    ENG_DNNL(dnnl_primitive_attr_clone(&attr, ctx->attr));
    ENG_DNNL(dnnl_post_ops_create(&po));
    ENG_DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    ENG_DNNL(dnnl_primitive_attr_set_post_ops(attr, po));
    if (!dnnl_memory_desc_equal(a_md, b_md)) {
        ENG_TRY(eng_tensor_alloc(&r->b_re, ctx, a_md, err));
        ENG_TRY(eng_reorder_make(ctx, b_md, a_md, &r->b_in, err));
    }
    dnnl_binary_desc_t bd;
    ENG_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, &flat, &flat, &flat));
    ENG_TRY(eng_ctx_make_prim(ctx, &bd, attr, NULL, NULL, &r->fwd, err));
    if (training) {
        dnnl_eltwise_desc_t fd, ed;
        ENG_DNNL(dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training,
                                                dnnl_eltwise_relu_use_dst_for_bwd, &flat, 0, 0));
        ENG_DNNL(dnnl_primitive_desc_create(&hint, &fd, ctx->attr, ctx->engine, NULL));
        ENG_DNNL(dnnl_eltwise_backward_desc_init(&ed, dnnl_eltwise_relu_use_dst_for_bwd, &flat,
                                                 &flat, 0, 0));
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
    if (point3(r->v, a->data, b->data, y->data, err)) return -1;
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC_0, r->v[0].mem}, {DNNL_ARG_SRC_1, r->v[1].mem}, {DNNL_ARG_DST, r->v[2].mem}};
    return eng_ctx_exec(ctx, r->fwd, 3, args, err);
}

int eng_resadd_backward(eng_resadd *r, eng_ctx *ctx, eng_tensor *y, eng_tensor *dy, eng_tensor *g,
                        eng_err *err) {
    if (point3(r->v, y->data, dy->data, g->data, err)) return -1;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_DST, r->v[0].mem},
                              {DNNL_ARG_DIFF_DST, r->v[1].mem},
                              {DNNL_ARG_DIFF_SRC, r->v[2].mem}};
    return eng_ctx_exec(ctx, r->bwd, 3, args, err);
}

void eng_resadd_free(eng_resadd *r) {
    if (r->fwd) dnnl_primitive_destroy(r->fwd);
    if (r->bwd) dnnl_primitive_destroy(r->bwd);
    if (r->b_in) dnnl_primitive_destroy(r->b_in);
    eng_tensor_free(&r->b_re);
    for (int i = 0; i < 3; i++) eng_tensor_free(&r->v[i]);
    memset(r, 0, sizeof *r);
}

int eng_accum_build(eng_accum *a, eng_ctx *ctx, const dnnl_memory_desc_t *acc_md,
                    const dnnl_memory_desc_t *x_md, eng_err *err) {
    dnnl_memory_desc_t flat;
    memset(a, 0, sizeof *a);
    ENG_TRY(flat_md(&flat, acc_md, err));
    ENG_TRY(flat_views(a->v, ctx, &flat, err));
    if (!dnnl_memory_desc_equal(acc_md, x_md)) {
        ENG_TRY(eng_tensor_alloc(&a->x_re, ctx, acc_md, err));
        ENG_TRY(eng_reorder_make(ctx, x_md, acc_md, &a->x_in, err));
    }
    dnnl_binary_desc_t bd;
    ENG_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, &flat, &flat, &flat));
    ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, NULL, NULL, &a->prim, err));
    return 0;
fail:
    eng_accum_free(a);
    return -1;
}

int eng_accum_run(eng_accum *a, eng_ctx *ctx, eng_tensor *acc, eng_tensor *x, eng_err *err) {
    if (a->x_in) {
        if (eng_reorder_run(ctx, a->x_in, x, &a->x_re, err)) return -1;
        x = &a->x_re;
    }
    if (point3(a->v, acc->data, x->data, acc->data, err)) return -1;
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC_0, a->v[0].mem}, {DNNL_ARG_SRC_1, a->v[1].mem}, {DNNL_ARG_DST, a->v[2].mem}};
    return eng_ctx_exec(ctx, a->prim, 3, args, err);
}

void eng_accum_free(eng_accum *a) {
    if (a->prim) dnnl_primitive_destroy(a->prim);
    if (a->x_in) dnnl_primitive_destroy(a->x_in);
    eng_tensor_free(&a->x_re);
    for (int i = 0; i < 3; i++) eng_tensor_free(&a->v[i]);
    memset(a, 0, sizeof *a);
}
