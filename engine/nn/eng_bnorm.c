/* eng_bnorm.c — batch normalisation on oneDNN (reproduces torch.nn.BatchNorm1d/2d, training and
 * eval mode, with optional fused ReLU), and its synchronised form for data-parallel jobs. */
#include "eng_bnorm.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_isa.h"

/* Channels per block a synced layer's loops keep in registers (nChw16c). */
#define ENG_BN_MAX_BLOCK 16

/* Where channel c of row r at position p of a group lives, for the layouts a synced layer
 * accepts: plain (any dense order) or blocked by channels (nChw8c, nChw16c; the last block padded
 * when B does not divide C), with the spatial positions one dense run.
 * Floats: r·row_stride + (c / B)·chan_stride + p·pos_stride + c % B. */
static int learn_layout(eng_bnorm *b, const dnnl_memory_desc_t *md, eng_err *err) {
    const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
    if (md->format_kind != dnnl_blocked || md->ndims < 2)
        return eng_fail(err, "bnorm: synced statistics need a blocked layout of 2+ dims");
    int block = 1;
    if (bd->inner_nblks == 1 && bd->inner_idxs[0] == 1) block = (int)bd->inner_blks[0];
    else if (bd->inner_nblks != 0)
        return eng_fail(err, "bnorm: synced statistics need channels as the only inner block");
    if (block > ENG_BN_MAX_BLOCK)
        return eng_fail(err, "bnorm: channel blocks of %d (synced statistics take up to %d)",
                        block, ENG_BN_MAX_BLOCK);
    b->chan_block = block;
    /* our AVX2 loops: blocks of 8 or 16 channels */
    b->simd = (block == 8 || block == 16) && __builtin_cpu_supports("avx2") &&
              __builtin_cpu_supports("fma") && eng_isa_cap() >= ENG_ISA_AVX2;
    b->row_stride = (long)bd->strides[0];
    b->chan_stride = (long)bd->strides[1];
    b->positions = 1;
    b->pos_stride = block;
    int nd = md->ndims;
    if (nd > 2) {
        b->pos_stride = (long)bd->strides[nd - 1];
        for (int i = 2; i < nd; i++) b->positions *= (long)md->dims[i];
        for (int i = 2; i + 1 < nd; i++)
            if (bd->strides[i] != bd->strides[i + 1] * md->dims[i + 1])
                return eng_fail(err, "bnorm: synced statistics need dense spatial positions");
    }
    return 0;
}

static int build_layer(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md, int groups,
                       int affine, int relu, int training, long global_n, const eng_reduce *red,
                       eng_err *err) {
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
    b->red = red;
    dnnl_dim_t n = data_md->dims[0] / groups;
    b->count = red ? global_n : (long)n;
    b->shard_rows = (long)n;
    for (int i = 2; i < data_md->ndims; i++) b->count *= (long)data_md->dims[i];

    dnnl_memory_desc_t gmd;
    ENG_TRY(eng_md_with_batch(&gmd, data_md, n, err));
    b->group_bytes = dnnl_memory_desc_get_size(&gmd);
    if (red) ENG_TRY(learn_layout(b, &gmd, err));

    /* Synced: the statistics are given, and the layer always has a scale and shift (ones and
     * zeros without affine) so that the backward reports the shard's Σdy'x̂ and Σdy'. */
    unsigned flags = 0;
    if (affine || red) flags |= dnnl_use_scale | dnnl_use_shift;
    if (relu) flags |= dnnl_fuse_norm_relu;
    if (!training || red) flags |= dnnl_use_global_stats;
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
    if (red) {
        if (!affine) { /* its own ones and zeros (eng_bnorm_bind leaves them alone) */
            ENG_TRY(eng_tensor_alloc(&b->scale, ctx, &cmd, err));
            ENG_TRY(eng_tensor_alloc(&b->shift, ctx, &cmd, err));
            for (int i = 0; i < b->c; i++) b->scale.data[i] = 1.0f;
        }
        for (int g = 0; g < groups; g++) {
            ENG_TRY(eng_tensor_alloc(&b->lscale[g], ctx, &cmd, err));
            ENG_TRY(eng_tensor_alloc(&b->lshift[g], ctx, &cmd, err));
        }
        b->sums = malloc(sizeof *b->sums * 2 * (size_t)b->c * (size_t)groups);
        if (!b->sums) {
            eng_fail(err, "bnorm: out of memory");
            goto fail;
        }
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
        if (affine && groups > 1 && !red) {
            ENG_TRY(eng_tensor_alloc(&b->dscale_tmp, ctx, &cmd, err));
            ENG_TRY(eng_tensor_alloc(&b->dshift_tmp, ctx, &cmd, err));
        }
        ENG_TRY(eng_tensor_wrap(&b->diff_src, ctx, &gmd, NULL, err));
        ENG_TRY(eng_tensor_wrap(&b->diff_dst, ctx, &gmd, NULL, err));
        dnnl_batch_normalization_desc_t bd;
        ENG_DNNL(dnnl_batch_normalization_backward_desc_init(
            &bd, affine || red ? dnnl_backward : dnnl_backward_data, &gmd, &gmd, ENG_BN_EPS,
            red ? flags : flags & ~(unsigned)dnnl_use_global_stats));
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

int eng_bnorm_build(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md, int groups,
                    int affine, int relu, int training, eng_err *err) {
    return build_layer(b, ctx, data_md, groups, affine, relu, training, 0, NULL, err);
}

int eng_bnorm_build_synced(eng_bnorm *b, eng_ctx *ctx, const dnnl_memory_desc_t *data_md,
                           int groups, int affine, int relu, long global_n,
                           const eng_reduce *red, eng_err *err) {
    if (!red) return eng_fail(err, "bnorm: a synced layer needs the job's sums");
    if (global_n < (long)(data_md->dims[0] / groups))
        return eng_fail(err, "bnorm: %ld rows over all ranks, fewer than this rank's", global_n);
    return build_layer(b, ctx, data_md, groups, affine, relu, 1, global_n, red, err);
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

/* Σx and Σx² of one channel block over the shard's rows and positions, B channels wide (the
 * AVX2 loop below is the fast one; this one runs elsewhere and under BARLOWD_MAX_ISA=SCALAR). */
static void block_moments(const eng_bnorm *b, const float *x,
                                                                long cb, int B, double *s,
                                                                double *q) {
    for (int i = 0; i < B; i++) s[i] = q[i] = 0;
    for (long r = 0; r < b->shard_rows; r++) {
        const float *row = x + r * b->row_stride + cb * b->chan_stride;
        for (long p = 0; p < b->positions; p++) {
            const float *v = row + p * b->pos_stride;
            for (int i = 0; i < B; i++) {
                double t = v[i];
                s[i] += t;
                q[i] += t * t;
            }
        }
    }
}

/* block_moments and block_terms for channel blocks of 8 or 16 on AVX2 (each row's positions one
 * run of B-float groups): the same sums in the same order per channel, 4 doubles a vector. */
__attribute__((target("avx2,fma"))) static void block_moments_avx2(const eng_bnorm *b,
                                                                   const float *x, long cb,
                                                                   int B, double *s, double *q) {
    __m256d vs[ENG_BN_MAX_BLOCK / 4], vq[ENG_BN_MAX_BLOCK / 4];
    int nv = B / 4;
    for (int k = 0; k < nv; k++) vs[k] = vq[k] = _mm256_setzero_pd();
    for (long r = 0; r < b->shard_rows; r++) {
        const float *row = x + r * b->row_stride + cb * b->chan_stride;
        for (long p = 0; p < b->positions; p++) {
            const float *v = row + p * b->pos_stride;
            for (int k = 0; k < nv; k++) {
                __m256d t = _mm256_cvtps_pd(_mm_loadu_ps(v + 4 * k));
                vs[k] = _mm256_add_pd(vs[k], t);
                vq[k] = _mm256_add_pd(vq[k], _mm256_mul_pd(t, t)); /* as the scalar loop rounds */
            }
        }
    }
    for (int k = 0; k < nv; k++) {
        _mm256_storeu_pd(s + 4 * k, vs[k]);
        _mm256_storeu_pd(q + 4 * k, vq[k]);
    }
}

__attribute__((target("avx2,fma"))) static void block_terms_avx2(const eng_bnorm *b,
                                                                 const float *x, float *dx,
                                                                 long cb, int B, const float *a,
                                                                 const float *m, const float *mu) {
    __m256 va[ENG_BN_MAX_BLOCK / 8], vm[ENG_BN_MAX_BLOCK / 8], vmu[ENG_BN_MAX_BLOCK / 8];
    int nv = B / 8;
    for (int k = 0; k < nv; k++) {
        va[k] = _mm256_loadu_ps(a + 8 * k);
        vm[k] = _mm256_loadu_ps(m + 8 * k);
        vmu[k] = _mm256_loadu_ps(mu + 8 * k);
    }
    for (long r = 0; r < b->shard_rows; r++) {
        long at = r * b->row_stride + cb * b->chan_stride;
        for (long p = 0; p < b->positions; p++) {
            long o = at + p * b->pos_stride;
            for (int k = 0; k < nv; k++) {
                __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + o + 8 * k), vmu[k]);
                __m256 term = _mm256_add_ps(va[k], _mm256_mul_ps(vm[k], t));
                _mm256_storeu_ps(dx + o + 8 * k, _mm256_sub_ps(_mm256_loadu_ps(dx + o + 8 * k), term));
            }
        }
    }
}

/* The shard's Σx and Σx² per channel of one group at x: out[0..C) and out[C..2C), in double.
 * Threads take whole channel blocks, so each sum has one order whatever the thread count. */
static void shard_moments(const eng_bnorm *b, const float *x, double *out) {
    int B = b->chan_block, c = b->c;
    long blocks = (c + B - 1) / B;
#pragma omp parallel for schedule(static)
    for (long cb = 0; cb < blocks; cb++) {
        double s[ENG_BN_MAX_BLOCK], q[ENG_BN_MAX_BLOCK];
        if (b->simd) block_moments_avx2(b, x, cb, B, s, q);
        else block_moments(b, x, cb, B, s, q);
        int real = c - (int)cb * B < B ? c - (int)cb * B : B; /* channels of a padded block */
        for (int i = 0; i < real; i++) {
            out[cb * B + i] = s[i];
            out[c + cb * B + i] = q[i];
        }
    }
}

/* dx -= a[c] + m[c]·(x − mu[c]) over one channel block, in float as oneDNN's own backward
 * computes it (padded channels have a = m = mu = 0). */
static void block_terms(const eng_bnorm *b,
                                                              const float *restrict x,
                                                              float *restrict dx, long cb, int B,
                                                              const float *restrict a,
                                                              const float *restrict m,
                                                              const float *restrict mu) {
    for (long r = 0; r < b->shard_rows; r++) {
        long at = r * b->row_stride + cb * b->chan_stride;
        for (long p = 0; p < b->positions; p++) {
            long o = at + p * b->pos_stride;
            for (int i = 0; i < B; i++) dx[o + i] -= a[i] + m[i] * (x[o + i] - mu[i]);
        }
    }
}

/* dx -= k0[c] + k1[c]·(x − mean[c]) over one group, k0 and k1 per channel. */
static void add_stat_terms(const eng_bnorm *b, const float *x, float *dx, const float *mean,
                           const double *k0, const double *k1) {
    int B = b->chan_block;
    long blocks = (b->c + B - 1) / B;
#pragma omp parallel for schedule(static)
    for (long cb = 0; cb < blocks; cb++) {
        float a[ENG_BN_MAX_BLOCK] = {0}, m[ENG_BN_MAX_BLOCK] = {0}, mu[ENG_BN_MAX_BLOCK] = {0};
        int real = b->c - (int)cb * B < B ? b->c - (int)cb * B : B; /* padding stays as it is */
        for (int i = 0; i < real; i++) {
            a[i] = (float)k0[cb * B + i];
            m[i] = (float)k1[cb * B + i];
            mu[i] = mean[cb * B + i];
        }
        if (b->simd) block_terms_avx2(b, x, dx, cb, B, a, m, mu);
        else block_terms(b, x, dx, cb, B, a, m, mu);
    }
}

/* Synced forward, before the primitive runs: every group's mean and biased variance over all
 * ranks, from the shards' sums. */
static int synced_stats(eng_bnorm *b, const eng_tensor *src, eng_err *err) {
    size_t c = (size_t)b->c;
    for (int g = 0; g < b->groups; g++)
        shard_moments(b, (const float *)((const char *)src->data + (size_t)g * b->group_bytes),
                      b->sums + 2 * c * (size_t)g);
    if (b->red->sum_f64(b->red->ctx, b->sums, 2 * c * (size_t)b->groups, err)) return -1;
    double inv = 1.0 / (double)b->count;
    for (int g = 0; g < b->groups; g++) {
        const double *s = b->sums + 2 * c * (size_t)g;
        for (size_t i = 0; i < c; i++) {
            double mean = s[i] * inv, var = s[c + i] * inv - mean * mean;
            b->mean[g].data[i] = (float)mean;
            b->var[g].data[i] = (float)(var > 0 ? var : 0);
        }
    }
    return 0;
}

/* Synced backward, after the primitive ran on every group (diff_src = γ/σ·dy', lscale/lshift the
 * shard's Σdy'x̂ and Σdy'): sums those over the ranks and adds the batch statistics' terms. */
static int synced_terms(eng_bnorm *b, const eng_tensor *src, eng_tensor *diff_src, eng_err *err) {
    size_t c = (size_t)b->c;
    for (int g = 0; g < b->groups; g++)
        for (size_t i = 0; i < c; i++) {
            b->sums[2 * c * (size_t)g + i] = b->lscale[g].data[i];
            b->sums[2 * c * (size_t)g + c + i] = b->lshift[g].data[i];
        }
    if (b->red->sum_f64(b->red->ctx, b->sums, 2 * c * (size_t)b->groups, err)) return -1;
    double m = (double)b->count;
    for (int g = 0; g < b->groups; g++) {
        /* k1 = γ/σ · Σdy'x̂ / (M σ) over the Σdy'x̂ slot, k0 = γ/σ · Σdy' / M over the Σdy' slot */
        double *k1 = b->sums + 2 * c * (size_t)g, *k0 = k1 + c;
        const float *gamma = b->scale.data; /* ones without affine */
        for (size_t i = 0; i < c; i++) {
            double inv_sigma = 1.0 / sqrt((double)b->var[g].data[i] + ENG_BN_EPS);
            double k = (double)gamma[i] * inv_sigma / m;
            k1[i] = k * k1[i] * inv_sigma;
            k0[i] = k * k0[i];
        }
        size_t off = (size_t)g * b->group_bytes;
        add_stat_terms(b, (const float *)((const char *)src->data + off),
                       (float *)((char *)diff_src->data + off), b->mean[g].data, k0, k1);
    }
    if (b->affine) /* the shard's own gradients: the job sums all gradients later */
        for (size_t i = 0; i < c; i++) {
            float ds = 0, dh = 0;
            for (int g = 0; g < b->groups; g++) {
                ds += b->lscale[g].data[i];
                dh += b->lshift[g].data[i];
            }
            b->dscale.data[i] = ds;
            b->dshift.data[i] = dh;
        }
    return 0;
}

int eng_bnorm_forward(eng_bnorm *b, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err) {
    if (b->red && synced_stats(b, src, err)) return -1;
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
        if (b->affine || b->red) {
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
        if (b->affine || b->red) {
            /* synced: the shard's Σdy'x̂ and Σdy' per group; else group 0 straight into the
             * gradients, the other group beside them to be added */
            eng_tensor *ds = b->red ? &b->lscale[g] : g == 0 ? &b->dscale : &b->dscale_tmp;
            eng_tensor *dh = b->red ? &b->lshift[g] : g == 0 ? &b->dshift : &b->dshift_tmp;
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, b->scale.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, b->shift.mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SCALE, ds->mem};
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SHIFT, dh->mem};
        }
        ENG_TRY(eng_ctx_exec(ctx, b->bwd, n, args, err));
        if (!b->red && b->affine && g > 0) {
            for (int i = 0; i < b->c; i++) {
                b->dscale.data[i] += b->dscale_tmp.data[i];
                b->dshift.data[i] += b->dshift_tmp.data[i];
            }
        }
    }
    if (b->red) return synced_terms(b, src, diff_src, err);
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
        eng_tensor_free(&b->lscale[g]);
        eng_tensor_free(&b->lshift[g]);
    }
    free(b->sums);
    memset(b, 0, sizeof *b);
}
