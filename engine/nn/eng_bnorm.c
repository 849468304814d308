/* eng_bnorm.c — batch normalisation on oneDNN (reproduces torch.nn.BatchNorm1d/2d, training and
 * eval mode, with optional fused ReLU). */
#include "eng_bnorm.h"

#include <string.h>

int eng_bnorm_build(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md, int groups,
                    int affine, int relu, int training, eng_err *err) {
    dnnl_primitive_desc_t fwd_pd = NULL, bwd_pd = NULL;
    memset(b, 0, sizeof *b);
    if (groups < 1 || groups > ENG_BN_MAX_GROUPS || data_md->dims[0] % groups)
        return eng_fail(err, "bnorm: %d groups do not divide a batch of %lld", groups,
                        (long long)data_md->dims[0]);
    if (!training && groups != 1) return eng_fail(err, "bnorm: inference uses one group");
    b->c = (int)data_md->dims[1];
    b->groups = groups;
    b->affine = affine;
    b->relu = relu;
    b->training = training;
    dnnl_dim_t n = data_md->dims[0] / groups;
    b->count = (long)n;
    for (int i = 2; i < data_md->ndims; i++) b->count *= (long)data_md->dims[i];

    dnnl_memory_desc_t gmd;
    ENG_TRY(eng_md_with_batch(&gmd, data_md, n, err));
    b->group_bytes = dnnl_memory_desc_get_size(&gmd);

    unsigned flags = 0;
    if (affine) flags |= dnnl_use_scale | dnnl_use_shift;
    if (relu) flags |= dnnl_fuse_norm_relu;
    if (!training) flags |= dnnl_use_global_stats;
    dnnl_batch_normalization_desc_t fd;
    ENG_DNNL(dnnl_batch_normalization_forward_desc_init(
        &fd, training ? dnnl_forward_training : dnnl_forward_inference, &gmd, ENG_BN_EPS, flags));
    ENG_TRY(eng_ctx_make_prim(ctx, &fd, NULL, NULL, &fwd_pd, &b->fwd, err));

    ENG_TRY(eng_tensor_wrap(&b->src, ctx, &gmd, NULL, err));
    ENG_TRY(eng_tensor_wrap(&b->dst, ctx, &gmd, NULL, err));
    dnnl_dims_t cdims = {b->c};
    dnnl_memory_desc_t cmd;
    ENG_TRY(eng_md_plain(&cmd, 1, cdims, err));
    ENG_TRY(eng_tensor_wrap(&b->run_mean, ctx, &cmd, NULL, err));
    ENG_TRY(eng_tensor_wrap(&b->run_var, ctx, &cmd, NULL, err));
    /* oneDNN's backward wants SCALE and SHIFT even when the layer is affine-free: give it a
     * dummy pair when the caller binds none. */
    if (affine) {
        ENG_TRY(eng_tensor_wrap(&b->scale, ctx, &cmd, NULL, err));
        ENG_TRY(eng_tensor_wrap(&b->shift, ctx, &cmd, NULL, err));
        ENG_TRY(eng_tensor_wrap(&b->dscale, ctx, &cmd, NULL, err));
        ENG_TRY(eng_tensor_wrap(&b->dshift, ctx, &cmd, NULL, err));
    }
    if (training) {
        for (int g = 0; g < groups; g++) {
            ENG_TRY(eng_tensor_alloc(&b->mean[g], ctx, &cmd, err));
            ENG_TRY(eng_tensor_alloc(&b->var[g], ctx, &cmd, err));
            if (relu)
                ENG_TRY(eng_tensor_alloc(
                    &b->ws[g], ctx, dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_workspace_md, 0),
                    err));
        }
        if (affine && groups > 1) {
            ENG_TRY(eng_tensor_alloc(&b->dscale_tmp, ctx, &cmd, err));
            ENG_TRY(eng_tensor_alloc(&b->dshift_tmp, ctx, &cmd, err));
        }
        ENG_TRY(eng_tensor_wrap(&b->diff_src, ctx, &gmd, NULL, err));
        ENG_TRY(eng_tensor_wrap(&b->diff_dst, ctx, &gmd, NULL, err));
        dnnl_batch_normalization_desc_t bd;
        ENG_DNNL(dnnl_batch_normalization_backward_desc_init(
            &bd, affine ? dnnl_backward : dnnl_backward_data, &gmd, &gmd, ENG_BN_EPS,
            flags & ~(unsigned)dnnl_use_global_stats));
        ENG_TRY(eng_ctx_make_prim(ctx, &bd, NULL, fwd_pd, &bwd_pd, &b->bwd, err));
        dnnl_primitive_desc_destroy(bwd_pd);
    }
    dnnl_primitive_desc_destroy(fwd_pd);
    return 0;
fail:
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    eng_bnorm_free(b);
    return -1;
}

int eng_bnorm_bind(eng_bnorm *b, float *scale, float *shift, float *dscale, float *dshift,
                   float *run_mean, float *run_var, eng_err *err) {
    if (b->affine) {
        ENG_TRY(eng_tensor_point(&b->scale, scale, err));
        ENG_TRY(eng_tensor_point(&b->shift, shift, err));
        if (b->training) {
            ENG_TRY(eng_tensor_point(&b->dscale, dscale, err));
            ENG_TRY(eng_tensor_point(&b->dshift, dshift, err));
        }
    }
    ENG_TRY(eng_tensor_point(&b->run_mean, run_mean, err));
    ENG_TRY(eng_tensor_point(&b->run_var, run_var, err));
    return 0;
fail:
    return -1;
}

/* running = (1 - m)·running + m·batch, with the variance made unbiased (count/(count-1)). */
static void update_running(eng_bnorm *b, int g) {
    const float *mean = b->mean[g].data, *var = b->var[g].data;
    float *rm = b->run_mean.data, *rv = b->run_var.data;
    double unbias = b->count > 1 ? (double)b->count / (double)(b->count - 1) : 1.0;
    for (int i = 0; i < b->c; i++) {
        rm[i] = (float)((1.0 - ENG_BN_MOMENTUM) * rm[i] + ENG_BN_MOMENTUM * mean[i]);
        rv[i] = (float)((1.0 - ENG_BN_MOMENTUM) * rv[i] + ENG_BN_MOMENTUM * var[i] * unbias);
    }
}

int eng_bnorm_forward(eng_bnorm *b, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err) {
    for (int g = 0; g < b->groups; g++) {
        char *s = (char *)src->data + (size_t)g * b->group_bytes;
        char *d = (char *)dst->data + (size_t)g * b->group_bytes;
        ENG_TRY(eng_tensor_point(&b->src, (float *)s, err));
        ENG_TRY(eng_tensor_point(&b->dst, (float *)d, err));
        dnnl_exec_arg_t args[8];
        int n = 0;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, b->src.mem};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, b->dst.mem};
        if (b->training) {
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, b->mean[g].mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, b->var[g].mem};
            if (b->relu) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, b->ws[g].mem};
        } else {
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, b->run_mean.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, b->run_var.mem};
        }
        if (b->affine) {
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, b->scale.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, b->shift.mem};
        }
        ENG_TRY(eng_ctx_exec(ctx, b->fwd, n, args, err));
        if (b->training) update_running(b, g);
    }
    return 0;
fail:
    return -1;
}

int eng_bnorm_backward(eng_bnorm *b, eng_ctx *ctx, eng_tensor *src, eng_tensor *diff_dst,
                       eng_tensor *diff_src, eng_err *err) {
    if (!b->training) return eng_fail(err, "bnorm: built for inference, no backward");
    for (int g = 0; g < b->groups; g++) {
        size_t off = (size_t)g * b->group_bytes;
        ENG_TRY(eng_tensor_point(&b->src, (float *)((char *)src->data + off), err));
        ENG_TRY(eng_tensor_point(&b->diff_dst, (float *)((char *)diff_dst->data + off), err));
        ENG_TRY(eng_tensor_point(&b->diff_src, (float *)((char *)diff_src->data + off), err));
        dnnl_exec_arg_t args[12];
        int n = 0;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, b->src.mem};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, b->mean[g].mem};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, b->var[g].mem};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, b->diff_dst.mem};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, b->diff_src.mem};
        if (b->relu) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, b->ws[g].mem};
        if (b->affine) {
            eng_tensor *ds = g == 0 ? &b->dscale : &b->dscale_tmp;
            eng_tensor *dh = g == 0 ? &b->dshift : &b->dshift_tmp;
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, b->scale.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, b->shift.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SCALE, ds->mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SHIFT, dh->mem};
        }
        ENG_TRY(eng_ctx_exec(ctx, b->bwd, n, args, err));
        if (b->affine && g > 0) {
            for (int i = 0; i < b->c; i++) {
                b->dscale.data[i] += b->dscale_tmp.data[i];
                b->dshift.data[i] += b->dshift_tmp.data[i];
            }
        }
    }
    return 0;
fail:
    return -1;
}

void eng_bnorm_free(eng_bnorm *b) {
    if (b->fwd) dnnl_primitive_destroy(b->fwd);
    if (b->bwd) dnnl_primitive_destroy(b->bwd);
    eng_tensor *ts[] = {&b->src,     &b->dst,      &b->diff_src,   &b->diff_dst,
                        &b->scale,   &b->shift,    &b->dscale,     &b->dshift,
                        &b->run_mean, &b->run_var, &b->dscale_tmp, &b->dshift_tmp};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) eng_tensor_free(ts[i]);
    for (int g = 0; g < ENG_BN_MAX_GROUPS; g++) {
        eng_tensor_free(&b->mean[g]);
        eng_tensor_free(&b->var[g]);
        eng_tensor_free(&b->ws[g]);
    }
    memset(b, 0, sizeof *b);
}
