/* eng_loss.c — Barlow Twins cross-correlation loss, forward and backward. */
#include "eng_loss.h"

#include <math.h>
#include <string.h>

/* A matmul dst = src · wei · scale, with the context's scratchpad mode. */
static int make_matmul(eng_ctx *ctx, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *wei,
                       const dnnl_memory_desc_t *dst, float scale, dnnl_primitive_t *prim,
                       eng_err *err) {
    dnnl_primitive_attr_t attr = NULL;
    ENG_DNNL(dnnl_primitive_attr_clone(&attr, ctx->attr));
    ENG_DNNL(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale));
    dnnl_matmul_desc_t md;
    ENG_DNNL(dnnl_matmul_desc_init(&md, src, wei, NULL, dst));
    ENG_TRY(eng_ctx_make_prim(ctx, &md, attr, NULL, NULL, prim, err));
    dnnl_primitive_attr_destroy(attr);
    return 0;
fail:
    if (attr) dnnl_primitive_attr_destroy(attr);
    return -1;
}

int eng_bt_loss_build_synced(eng_bt_loss *l, eng_ctx *ctx, int n, long n_global, int d,
                             double lambda, const eng_reduce *red, eng_err *err) {
    memset(l, 0, sizeof *l);
    if (n < 1 || n_global < 2 || n_global < n || d < 1)
        return eng_fail(err, "loss: needs N >= 2, 1 <= n <= N and D >= 1 (n=%d, N=%ld, D=%d)", n,
                        n_global, d);
    l->n = n;
    l->n_global = n_global;
    l->red = red;
    l->d = d;
    l->lambda = lambda;
    dnnl_dims_t nd = {n, d}, dn = {d, n}, dd = {d, d};
    dnnl_dims_t t_nd = {1, d}, t_dd = {1, d}; /* strides of transposed views */
    dnnl_memory_desc_t nd_md, dn_t_md, dd_md, dd_t_md;
    ENG_TRY(eng_md_plain(&nd_md, 2, nd, err));
    ENG_TRY(eng_md_plain(&dd_md, 2, dd, err));
    ENG_DNNL(dnnl_memory_desc_init_by_strides(&dn_t_md, 2, dn, dnnl_f32, t_nd));
    ENG_DNNL(dnnl_memory_desc_init_by_strides(&dd_t_md, 2, dd, dnnl_f32, t_dd));
    float inv_n = 1.0f / (float)n_global;
    ENG_TRY(make_matmul(ctx, &dn_t_md, &nd_md, &dd_md, inv_n, &l->c_mm, err));
    ENG_TRY(make_matmul(ctx, &nd_md, &dd_t_md, &nd_md, inv_n, &l->da_mm, err));
    ENG_TRY(make_matmul(ctx, &nd_md, &dd_md, &nd_md, inv_n, &l->db_mm, err));
    ENG_TRY(eng_tensor_wrap(&l->za_t, ctx, &dn_t_md, NULL, err));
    ENG_TRY(eng_tensor_wrap(&l->zb_w, ctx, &nd_md, NULL, err));
    ENG_TRY(eng_tensor_wrap(&l->za, ctx, &nd_md, NULL, err));
    ENG_TRY(eng_tensor_wrap(&l->zb, ctx, &nd_md, NULL, err));
    ENG_TRY(eng_tensor_wrap(&l->dza, ctx, &nd_md, NULL, err));
    ENG_TRY(eng_tensor_wrap(&l->dzb, ctx, &nd_md, NULL, err));
    ENG_TRY(eng_tensor_alloc(&l->c, ctx, &dd_md, err));
    ENG_TRY(eng_tensor_alloc(&l->g, ctx, &dd_md, err));
    ENG_TRY(eng_tensor_wrap(&l->g_t, ctx, &dd_t_md, l->g.data, err));
    return 0;
fail:
    eng_bt_loss_free(l);
    return -1;
}

int eng_bt_loss_build(eng_bt_loss *l, eng_ctx *ctx, int n, int d, double lambda, eng_err *err) {
    return eng_bt_loss_build_synced(l, ctx, n, n, d, lambda, NULL, err);
}

int eng_bt_loss_run(eng_bt_loss *l, eng_ctx *ctx, float *za, float *zb, float *dza, float *dzb,
                    double *loss, eng_err *err) {
    int d = l->d;
    ENG_TRY(eng_tensor_point(&l->za_t, za, err));
    ENG_TRY(eng_tensor_point(&l->zb_w, zb, err));
    dnnl_exec_arg_t cargs[] = {
        {DNNL_ARG_SRC, l->za_t.mem}, {DNNL_ARG_WEIGHTS, l->zb_w.mem}, {DNNL_ARG_DST, l->c.mem}};
    ENG_TRY(eng_ctx_exec(ctx, l->c_mm, 3, cargs, err));
    if (l->red) ENG_TRY(l->red->sum_f32(l->red->ctx, l->c.data, (size_t)d * (size_t)d, err));

    /* L and G = ∂L/∂c in one pass; sums in double so D² terms don't lose the small ones. */
    const float *c = l->c.data;
    float *g = l->g.data;
    double on = 0, off = 0, diag = 0, offabs = 0, lam = l->lambda;
    for (int i = 0; i < d; i++) {
        for (int j = 0; j < d; j++) {
            double cij = c[(size_t)i * d + j];
            if (i == j) {
                on += (1.0 - cij) * (1.0 - cij);
                diag += cij;
                g[(size_t)i * d + j] = (float)(-2.0 * (1.0 - cij));
            } else {
                off += cij * cij;
                offabs += fabs(cij);
                g[(size_t)i * d + j] = (float)(2.0 * lam * cij);
            }
        }
    }
    *loss = on + lam * off;
    l->diag_mean = diag / d;
    l->offdiag_abs_mean = d > 1 ? offabs / ((double)d * (d - 1)) : 0.0;
    if (!dza && !dzb) return 0;

    ENG_TRY(eng_tensor_point(&l->za, za, err));
    ENG_TRY(eng_tensor_point(&l->zb, zb, err));
    ENG_TRY(eng_tensor_point(&l->dza, dza, err));
    ENG_TRY(eng_tensor_point(&l->dzb, dzb, err));
    dnnl_exec_arg_t aargs[] = {
        {DNNL_ARG_SRC, l->zb.mem}, {DNNL_ARG_WEIGHTS, l->g_t.mem}, {DNNL_ARG_DST, l->dza.mem}};
    ENG_TRY(eng_ctx_exec(ctx, l->da_mm, 3, aargs, err));
    dnnl_exec_arg_t bargs[] = {
        {DNNL_ARG_SRC, l->za.mem}, {DNNL_ARG_WEIGHTS, l->g.mem}, {DNNL_ARG_DST, l->dzb.mem}};
    return eng_ctx_exec(ctx, l->db_mm, 3, bargs, err);
fail:
    return -1;
}

void eng_bt_loss_free(eng_bt_loss *l) {
    if (l->c_mm) dnnl_primitive_destroy(l->c_mm);
    if (l->da_mm) dnnl_primitive_destroy(l->da_mm);
    if (l->db_mm) dnnl_primitive_destroy(l->db_mm);
    eng_tensor *ts[] = {&l->za_t, &l->zb_w, &l->za, &l->zb, &l->dza, &l->dzb, &l->c, &l->g, &l->g_t};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) eng_tensor_free(ts[i]);
    memset(l, 0, sizeof *l);
}
