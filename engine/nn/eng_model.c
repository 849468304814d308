/* eng_model.c — building, initialising and running the Barlow Twins network.
 *
 * Reproduces, for the same config, a torch module tree of: stem Conv2d-BN-ReLU; per stage
 * torchvision BasicBlocks (with 1×1 conv + BN downsample shortcuts); AdaptiveAvgPool2d(1); the
 * projector of the Barlow Twins reference (Linear(bias=False)-BN1d-ReLU …, Linear(bias=False)),
 * and BatchNorm1d(affine=False) before the loss. */
#include "eng_model.h"

#include <assert.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_alloc.h"
#include "eng_rng.h"

/* ---------------------------------------------------------------------------------------------
 * The canonical parameter table. */

typedef struct table_builder {
    eng_param *tab;
    int n, cap;
    size_t floats;
} table_builder;

static int tb_push(table_builder *tb, const char *name, int ndims, int s0, int s1, int s2, int s3,
                   eng_err *err) {
    if (tb->n == tb->cap) {
        int cap = tb->cap ? tb->cap * 2 : 64;
        eng_param *t = realloc(tb->tab, sizeof *t * (size_t)cap);
        if (!t) return eng_fail(err, "out of memory for the parameter table");
        tb->tab = t;
        tb->cap = cap;
    }
    eng_param *p = &tb->tab[tb->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndims = ndims;
    int s[4] = {s0, s1, s2, s3};
    p->count = 1;
    for (int i = 0; i < ndims; i++) {
        p->shape[i] = s[i];
        p->count *= (size_t)s[i];
    }
    p->offset = tb->floats;
    tb->floats += p->count;
    return 0;
}

static int tb_bn(table_builder *tb, const char *prefix, int c, eng_err *err) {
    char name[48];
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (tb_push(tb, name, 1, c, 0, 0, 0, err)) return -1;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return tb_push(tb, name, 1, c, 0, 0, 0, err);
}

static int tb_conv(table_builder *tb, const char *prefix, int out, int in, int k, eng_err *err) {
    char name[48];
    snprintf(name, sizeof name, "%s.weight", prefix);
    return tb_push(tb, name, 4, out, in, k, k, err);
}

int eng_model_param_table(const eng_config *cfg, eng_param **tab, int *n, size_t *n_floats,
                          eng_err *err) {
    table_builder tb = {0};
    char pre[40];
    int c = cfg->stem_width;
    if (tb_conv(&tb, "stem.conv", c, cfg->in_channels, 3, err) || tb_bn(&tb, "stem.bn", c, err))
        goto fail;
    for (int s = 0; s < cfg->n_stages; s++) {
        for (int b = 0; b < cfg->stage_blocks[s]; b++) {
            int w = cfg->stage_width[s], stride = (s > 0 && b == 0) ? 2 : 1;
#define BLK(suffix) (snprintf(pre, sizeof pre, "s%d.b%d.%s", s, b, suffix), pre)
            if (tb_conv(&tb, BLK("conv1"), w, c, 3, err) || tb_bn(&tb, BLK("bn1"), w, err) ||
                tb_conv(&tb, BLK("conv2"), w, w, 3, err) || tb_bn(&tb, BLK("bn2"), w, err))
                goto fail;
            if ((stride != 1 || c != w) &&
                (tb_conv(&tb, BLK("short.conv"), w, c, 1, err) || tb_bn(&tb, BLK("short.bn"), w, err)))
                goto fail;
#undef BLK
            c = w;
        }
    }
    for (int i = 0; i < cfg->n_proj; i++) {
        snprintf(pre, sizeof pre, "proj%d.linear.weight", i);
        if (tb_push(&tb, pre, 2, cfg->proj[i], c, 0, 0, err)) goto fail;
        if (i + 1 < cfg->n_proj) {
            snprintf(pre, sizeof pre, "proj%d.bn", i);
            if (tb_bn(&tb, pre, cfg->proj[i], err)) goto fail;
        }
        c = cfg->proj[i];
    }
    *tab = tb.tab;
    *n = tb.n;
    *n_floats = tb.floats;
    return 0;
fail:
    free(tb.tab);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Building. A cursor walks the parameter table in the same canonical order as the layers are
 * built, handing each layer its slice; BN running statistics are laid out the same way. */

typedef struct cursor {
    eng_model *m;
    int param;     /* next entry of m->tab */
    size_t stat;   /* next float of m->stats */
} cursor;

static int take(cursor *cur, int ndims, float **p, float **g, eng_err *err) {
    eng_model *m = cur->m;
    if (cur->param >= m->n_params || m->tab[cur->param].ndims != ndims)
        return eng_fail(err, "model: parameter table out of step at entry %d", cur->param);
    const eng_param *t = &m->tab[cur->param++];
    *p = m->params + t->offset;
    *g = m->grads ? m->grads + t->offset : NULL;
    return 0;
}

static int bind_conv(cursor *cur, eng_conv *c, eng_err *err) {
    float *p = NULL, *g = NULL;
    if (take(cur, 4, &p, &g, err)) return -1;
    return eng_conv_bind(c, p, g, err);
}

static int bind_bn(cursor *cur, eng_bnorm *b, eng_err *err) {
    float *w = NULL, *gw = NULL, *bias = NULL, *gb = NULL;
    if (b->affine && (take(cur, 1, &w, &gw, err) || take(cur, 1, &bias, &gb, err))) return -1;
    float *rm = cur->m->stats + cur->stat, *rv = rm + b->c;
    cur->stat += 2 * (size_t)b->c;
    return eng_bnorm_bind(b, w, bias, gw, gb, rm, rv, err);
}

static int bind_linear(cursor *cur, eng_linear *l, eng_err *err) {
    float *p = NULL, *g = NULL;
    if (take(cur, 2, &p, &g, err)) return -1;
    return eng_linear_bind(l, p, g, err);
}

static int alloc_like(eng_model *m, eng_tensor *t, const dnnl_memory_desc_t *md, eng_err *err) {
    return eng_tensor_alloc(t, &m->ctx, md, err);
}

/* A tensor of layout md that will borrow the shared buffer of `role` (pointed at by
 * bind_shared_views once every size is known). */
static int shared_view(eng_model *m, eng_tensor *t, const dnnl_memory_desc_t *md, int role,
                     eng_err *err) {
    if (eng_tensor_wrap(t, &m->ctx, md, NULL, err)) return -1;
    if (t->bytes > m->shared_bytes[role]) m->shared_bytes[role] = t->bytes;
    m->shared_views[m->n_shared_views].t = t;
    m->shared_views[m->n_shared_views++].role = role;
    return 0;
}

/* An activation of the block graph: owned when training keeps it for the backward, else a view
 * of the inference buffer `role`. */
static int activation(eng_model *m, eng_tensor *t, const dnnl_memory_desc_t *md, int role,
                      eng_err *err) {
    return m->training ? alloc_like(m, t, md, err) : shared_view(m, t, md, role, err);
}

static int bind_shared_views(eng_model *m, eng_err *err) {
    for (int r = 0; r < ENG_SHARED_ROLES; r++) {
        if (!m->shared_bytes[r]) continue;
        m->shared_buf[r] = eng_alloc_zeroed(m->shared_bytes[r]);
        if (!m->shared_buf[r])
            return eng_fail(err, "out of memory for %zu bytes of shared buffers", m->shared_bytes[r]);
    }
    for (int i = 0; i < m->n_shared_views; i++)
        if (eng_tensor_point(m->shared_views[i].t, m->shared_buf[m->shared_views[i].role], err))
            return -1;
    return 0;
}

static int plain_rows(eng_model *m, eng_tensor *t, int cols, eng_err *err) {
    dnnl_dims_t d = {m->rows, cols};
    dnnl_memory_desc_t md;
    if (eng_md_plain(&md, 2, d, err)) return -1;
    return eng_tensor_alloc(t, &m->ctx, &md, err);
}

/* A [R, D] row matrix described as [R, D, 1, 1] for batch norm, blocked by the channel count
 * oneDNN's jit kernel of this CPU (or of the ONEDNN_MAX_CPU_ISA cap) takes: 16 from AVX-512 on,
 * 8 below (with 1x1 spatial both are the same bytes as plain rows). oneDNN 2.6 has no AVX2 jit
 * for 16-blocked data: blocked by 16 on an AVX2 CPU, each projector norm ran bnorm_ref:any,
 * 7.8 ms a forward at batch 256 x 512 (AMD EPYC). */
static int bn1d_md(dnnl_memory_desc_t *md, int rows, int d, eng_err *err) {
    dnnl_dims_t dims = {rows, d, 1, 1};
    /* the ISA values are nested bit sets (avx2_vnni, 0x407, is numerically above avx512_core) */
    int wide = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
    dnnl_format_tag_t tag = wide && d % 16 == 0 ? dnnl_aBcd16b
                          : d % 8 == 0          ? dnnl_aBcd8b
                                                : dnnl_abcd;
    ENG_DNNL(dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, tag));
    return 0;
fail:
    return -1;
}

/* The activation layout oneDNN's fast AVX-512/AVX2 kernels favour for a channel count: blocked by
 * 16 or by 8 channels, else channels-last. Used as the wished layout of convolution outputs, so
 * consecutive layers agree without reorders. */
static int preferred_act_md(dnnl_memory_desc_t *md, int n, int c, int h, int w, eng_err *err) {
    dnnl_dims_t d = {n, c, h, w};
    dnnl_format_tag_t tag = c % 16 == 0 ? dnnl_aBcd16b : c % 8 == 0 ? dnnl_aBcd8b : dnnl_acdb;
    ENG_DNNL(dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, tag));
    return 0;
fail:
    return -1;
}

/* A batch norm of the model: synchronised over the job's ranks when the model is a shard. */
static int model_bn(eng_model *m, eng_bnorm *b, const dnnl_memory_desc_t *md, int groups,
                    int affine, int relu, int training, eng_err *err) {
    if (m->red)
        return eng_bnorm_build_synced(b, &m->ctx, md, groups, affine, relu, m->global_batch,
                                      m->red, err);
    return eng_bnorm_build(b, &m->ctx, md, groups, affine, relu, training, err);
}

static int build_block(eng_model *m, eng_block *b, int index, eng_tensor *x, eng_tensor *dx,
                       int x_role, int cout, int stride, eng_err *err) {
    eng_ctx *ctx = &m->ctx;
    int tr = m->training, groups = tr ? 2 : 1;
    b->x = x;
    b->dx = dx;
    b->cin = (int)x->md.dims[1];
    b->cout = cout;
    b->stride = stride;
    b->has_proj = stride != 1 || b->cin != cout;
    /* Identity blocks ask for their outputs in the input's layout, so the residual add and the
     * gradient accumulation see one layout. */
    int oh = ((int)x->md.dims[2] - 1) / stride + 1, ow = ((int)x->md.dims[3] - 1) / stride + 1;
    dnnl_memory_desc_t pref;
    ENG_TRY(preferred_act_md(&pref, m->rows, cout, oh, ow, err));
    const dnnl_memory_desc_t *hint = b->has_proj ? &pref : &x->md;
    /* inference: x in x_role, c1 (then cs) in the next role, c2 = y in the one after */
    int r1 = ENG_ACT_0 + (x_role - ENG_ACT_0 + 1) % 3, r2 = ENG_ACT_0 + (x_role - ENG_ACT_0 + 2) % 3;
    ENG_TRY(eng_conv_build(&b->conv1, ctx, &x->md, hint, cout, 3, stride, 1, tr, 1, err));
    ENG_TRY(activation(m, &b->c1, &b->conv1.dst_md, r1, err));
    ENG_TRY(model_bn(m, &b->bn1, &b->c1.md, groups, 1, 1, tr, err));
    ENG_TRY(activation(m, &b->a1, &b->c1.md, r1, err));
    ENG_TRY(eng_conv_build(&b->conv2, ctx, &b->a1.md, hint, cout, 3, 1, 1, tr, 1, err));
    ENG_TRY(activation(m, &b->c2, &b->conv2.dst_md, r2, err));
    ENG_TRY(model_bn(m, &b->bn2, &b->c2.md, groups, 1, 0, tr, err));
    ENG_TRY(activation(m, &b->y, &b->c2.md, r2, err));
    const dnnl_memory_desc_t *short_md = &x->md;
    if (b->has_proj) {
        ENG_TRY(eng_conv_build(&b->convs, ctx, &x->md, &b->c2.md, cout, 1, stride, 0, tr, 1, err));
        ENG_TRY(activation(m, &b->cs, &b->convs.dst_md, r1, err)); /* c1 is dead by then */
        ENG_TRY(model_bn(m, &b->bns, &b->cs.md, groups, 1, 0, tr, err));
        ENG_TRY(activation(m, &b->bs, &b->cs.md, r1, err));
        short_md = &b->bs.md;
    }
    ENG_TRY(eng_resadd_build(&b->add, ctx, &b->y.md, short_md, tr, err));
    if (tr) {
        /* the stem's da0 uses DY0, so block i's output gradient uses DY1 for even i */
        ENG_TRY(shared_view(m, &b->dy, &b->y.md, index % 2 ? ENG_DIFF_DY0 : ENG_DIFF_DY1, err));
        ENG_TRY(shared_view(m, &b->g, &b->y.md, ENG_DIFF_G, err));
        ENG_TRY(shared_view(m, &b->dc2, &b->c2.md, ENG_DIFF_B, err));
        ENG_TRY(shared_view(m, &b->da1, &b->a1.md, ENG_DIFF_C, err));
        ENG_TRY(shared_view(m, &b->dc1, &b->c1.md, ENG_DIFF_B, err));
        if (b->has_proj) {
            ENG_TRY(shared_view(m, &b->dcs, &b->cs.md, ENG_DIFF_C, err));
            ENG_TRY(shared_view(m, &b->dxs, &x->md, ENG_DIFF_D, err));
            ENG_TRY(eng_accum_build(&b->acc, ctx, &dx->md, &x->md, err));
        } else {
            ENG_TRY(eng_accum_build(&b->acc, ctx, &dx->md, &b->g.md, err));
        }
    }
    return 0;
fail:
    return -1;
}

static int bind_block(cursor *cur, eng_block *b, eng_err *err) {
    if (bind_conv(cur, &b->conv1, err) || bind_bn(cur, &b->bn1, err) ||
        bind_conv(cur, &b->conv2, err) || bind_bn(cur, &b->bn2, err))
        return -1;
    if (b->has_proj && (bind_conv(cur, &b->convs, err) || bind_bn(cur, &b->bns, err))) return -1;
    return 0;
}

int eng_model_build(eng_model *m, const eng_config *cfg, int batch, int training, eng_err *err) {
    return eng_model_build_shard(m, cfg, batch, batch, NULL, training, err);
}

int eng_model_build_shard(eng_model *m, const eng_config *cfg, int batch, int global_batch,
                          const eng_reduce *red, int training, eng_err *err) {
    memset(m, 0, sizeof *m);
    if (batch < 1 || (training && global_batch < 2) || global_batch < batch)
        return eng_fail(err, "model: batch %d of %d is too small%s", batch, global_batch,
                        training ? " (training needs at least 2 images)" : "");
    if (red && !training) return eng_fail(err, "model: only a training model is sharded");
    m->red = red;
    m->global_batch = global_batch;
    m->cfg = *cfg;
    m->batch = batch;
    m->training = training;
    m->rows = training ? 2 * batch : batch;
    int groups = training ? 2 : 1;
    ENG_TRY(eng_ctx_init(&m->ctx, err));
    eng_ctx *ctx = &m->ctx;
    ENG_TRY(eng_model_param_table(cfg, &m->tab, &m->n_params, &m->n_floats, err));

    /* Stem. */
    dnnl_dims_t in_dims = {m->rows, cfg->in_channels, cfg->input_size, cfg->input_size};
    dnnl_memory_desc_t in_md;
    ENG_TRY(eng_md_plain(&in_md, 4, in_dims, err));
    ENG_TRY(eng_tensor_alloc(&m->input, ctx, &in_md, err));
    dnnl_memory_desc_t stem_pref;
    ENG_TRY(preferred_act_md(&stem_pref, m->rows, cfg->stem_width, cfg->input_size,
                             cfg->input_size, err));
    ENG_TRY(eng_conv_build(&m->stem_conv, ctx, &in_md, &stem_pref, cfg->stem_width, 3, 1, 1,
                           training, 0, err));
    /* Residual stages. */
    for (int s = 0; s < cfg->n_stages; s++) m->n_blocks += cfg->stage_blocks[s];
    /* views: training 2 + 7 per block (gradients), inference 2 + 6 per block (activations) */
    m->shared_views = calloc(2 + 7 * (size_t)m->n_blocks, sizeof *m->shared_views);
    if (!m->shared_views) {
        eng_fail(err, "out of memory");
        goto fail;
    }
    ENG_TRY(activation(m, &m->c0, &m->stem_conv.dst_md, ENG_ACT_0, err));
    ENG_TRY(model_bn(m, &m->stem_bn, &m->c0.md, groups, 1, 1, training, err));
    ENG_TRY(activation(m, &m->a0, &m->c0.md, ENG_ACT_0, err));
    if (training) {
        ENG_TRY(shared_view(m, &m->dc0, &m->c0.md, ENG_DIFF_B, err));
        ENG_TRY(shared_view(m, &m->da0, &m->a0.md, ENG_DIFF_DY0, err));
    }
    m->blocks = calloc((size_t)m->n_blocks, sizeof *m->blocks);
    if (!m->blocks) {
        eng_fail(err, "out of memory for %d blocks", m->n_blocks);
        goto fail;
    }
    eng_tensor *x = &m->a0, *dx = &m->da0;
    int bi = 0, x_role = ENG_ACT_0;
    for (int s = 0; s < cfg->n_stages; s++) {
        for (int b = 0; b < cfg->stage_blocks[s]; b++, bi++) {
            eng_block *blk = &m->blocks[bi];
            ENG_TRY(build_block(m, blk, bi, x, dx, x_role, cfg->stage_width[s],
                                (s > 0 && b == 0) ? 2 : 1, err));
            x = &blk->y;
            dx = &blk->dy;
            x_role = ENG_ACT_0 + (x_role - ENG_ACT_0 + 2) % 3; /* y's role */
        }
    }

    /* Pooling → representation rows h[0]. */
    ENG_TRY(eng_pool_build(&m->pool, ctx, &x->md, training, err));
    int width = eng_config_rep_dim(cfg);
    ENG_TRY(plain_rows(m, &m->h[0], width, err));

    /* Projector and loss (training only: inference serves the representation). */
    if (training) {
        ENG_TRY(plain_rows(m, &m->dh[0], width, err));
        for (int i = 0; i < cfg->n_proj; i++) {
            int d = cfg->proj[i], last = i + 1 == cfg->n_proj;
            ENG_TRY(eng_linear_build(&m->lin[i], ctx, m->rows, width, d, 1, err));
            ENG_TRY(plain_rows(m, &m->l[i], d, err));
            ENG_TRY(plain_rows(m, &m->dl[i], d, err));
            dnnl_memory_desc_t bmd;
            ENG_TRY(bn1d_md(&bmd, m->rows, d, err));
            ENG_TRY(model_bn(m, &m->pbn[i], &bmd, 2, !last, !last, 1, err));
            eng_tensor *out = last ? &m->z : &m->h[i + 1], *dout = last ? &m->dz : &m->dh[i + 1];
            ENG_TRY(plain_rows(m, out, d, err));
            ENG_TRY(plain_rows(m, dout, d, err));
            width = d;
        }
        ENG_TRY(eng_bt_loss_build_synced(&m->loss, ctx, batch, global_batch, width, cfg->lambda,
                                         red, err));
    }
    ENG_TRY(eng_ctx_finish_build(ctx, err));
    ENG_TRY(bind_shared_views(m, err));

    /* One allocation each for parameters, gradients, optimiser state and running statistics;
     * then hand every layer its slices in canonical order. */
    m->params = calloc(m->n_floats, sizeof(float));
    if (training) {
        m->grads = calloc(m->n_floats, sizeof(float));
        m->momentum = calloc(m->n_floats, sizeof(float));
    }
    /* Batch norms in canonical order, for the running statistics. */
    m->bn_list = calloc(1 + 3 * (size_t)m->n_blocks + ENG_MAX_PROJ, sizeof *m->bn_list);
    if (!m->bn_list) {
        eng_fail(err, "out of memory");
        goto fail;
    }
    int nb = 0;
    m->bn_list[nb++] = &m->stem_bn;
    for (int i = 0; i < m->n_blocks; i++) {
        eng_block *b = &m->blocks[i];
        m->bn_list[nb++] = &b->bn1;
        m->bn_list[nb++] = &b->bn2;
        if (b->has_proj) m->bn_list[nb++] = &b->bns;
    }
    if (training)
        for (int i = 0; i < cfg->n_proj; i++) m->bn_list[nb++] = &m->pbn[i];
    m->n_bn = nb;
    m->n_stats = 0;
    for (int i = 0; i < nb; i++) m->n_stats += 2 * (size_t)m->bn_list[i]->c;
    m->stats = calloc(m->n_stats, sizeof(float));
    if (!m->params || !m->stats || (training && (!m->grads || !m->momentum))) {
        eng_fail(err, "out of memory for %zu parameters", m->n_floats);
        goto fail;
    }
    cursor cur = {m, 0, 0};
    ENG_TRY(bind_conv(&cur, &m->stem_conv, err));
    ENG_TRY(bind_bn(&cur, &m->stem_bn, err));
    for (int i = 0; i < m->n_blocks; i++) ENG_TRY(bind_block(&cur, &m->blocks[i], err));
    if (training) {
        for (int i = 0; i < cfg->n_proj; i++) {
            ENG_TRY(bind_linear(&cur, &m->lin[i], err));
            ENG_TRY(bind_bn(&cur, &m->pbn[i], err));
        }
        if (cur.param != m->n_params) {
            eng_fail(err, "model: %d of %d parameters bound", cur.param, m->n_params);
            goto fail;
        }
    }
    eng_model_init_params(m, 0);
    return 0;
fail:
    eng_model_free(m);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Initialisation. */

void eng_model_init_params(eng_model *m, uint64_t seed) {
    eng_rng rng;
    eng_rng_seed(&rng, seed);
    for (int t = 0; t < m->n_params; t++) {
        const eng_param *p = &m->tab[t];
        float *w = m->params + p->offset;
        size_t len = strlen(p->name);
        if (p->ndims == 4) {
            /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out) */
            double std = sqrt(2.0 / ((double)p->shape[0] * p->shape[2] * p->shape[3]));
            for (size_t i = 0; i < p->count; i++) w[i] = (float)(std * eng_rng_normal(&rng));
        } else if (p->ndims == 2) {
            /* nn.Linear default: kaiming_uniform_(a=√5) = U(±1/√fan_in) */
            double bound = 1.0 / sqrt((double)p->shape[1]);
            for (size_t i = 0; i < p->count; i++)
                w[i] = (float)(bound * (2.0 * eng_rng_uniform(&rng) - 1.0));
        } else {
            int is_weight = len > 7 && !strcmp(p->name + len - 7, ".weight");
            int zero_init = is_weight && strstr(p->name, ".bn2.") != NULL;
            float v = is_weight && !zero_init ? 1.0f : 0.0f;
            for (size_t i = 0; i < p->count; i++) w[i] = v;
        }
    }
    /* Running statistics: mean 0, variance 1, per BN as mean[C] then var[C]. */
    float *st = m->stats;
    for (int b = 0; b < m->n_bn; b++) {
        size_t c = (size_t)m->bn_list[b]->c;
        for (size_t i = 0; i < c; i++) {
            st[i] = 0.0f;
            st[c + i] = 1.0f;
        }
        st += 2 * c;
    }
    if (m->momentum) memset(m->momentum, 0, m->n_floats * sizeof(float));
}

/* ---------------------------------------------------------------------------------------------
 * Running. */

float *eng_model_input(eng_model *m) { return m->input.data; }
const float *eng_model_rep(const eng_model *m) { return m->h[0].data; }

int eng_model_stopped(const eng_model *m) { return m->stop && atomic_load(m->stop); }

/* Between layers of a training step: gives up once the owner asked the model to stop. */
#define STOP_POINT(m)                                                                           \
    do {                                                                                        \
        if (eng_model_stopped(m)) {                                                             \
            eng_fail(err, "model: training step interrupted");                                  \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

static int block_forward(eng_model *m, eng_block *b, eng_err *err) {
    eng_ctx *ctx = &m->ctx;
    ENG_TRY(eng_conv_forward(&b->conv1, ctx, b->x, &b->c1, err));
    ENG_TRY(eng_bnorm_forward(&b->bn1, ctx, &b->c1, &b->a1, err));
    ENG_TRY(eng_conv_forward(&b->conv2, ctx, &b->a1, &b->c2, err));
    ENG_TRY(eng_bnorm_forward(&b->bn2, ctx, &b->c2, &b->y, err));
    eng_tensor *shortcut = b->x;
    if (b->has_proj) {
        ENG_TRY(eng_conv_forward(&b->convs, ctx, b->x, &b->cs, err));
        ENG_TRY(eng_bnorm_forward(&b->bns, ctx, &b->cs, &b->bs, err));
        shortcut = &b->bs;
    }
    return eng_resadd_forward(&b->add, ctx, &b->y, shortcut, &b->y, err);
fail:
    return -1;
}

static int block_backward(eng_model *m, eng_block *b, eng_err *err) {
    eng_ctx *ctx = &m->ctx;
    ENG_TRY(eng_resadd_backward(&b->add, ctx, &b->y, &b->dy, &b->g, err));
    ENG_TRY(eng_bnorm_backward(&b->bn2, ctx, &b->c2, &b->g, &b->dc2, err));
    ENG_TRY(eng_conv_backward(&b->conv2, ctx, &b->a1, &b->dc2, &b->da1, err));
    ENG_TRY(eng_bnorm_backward(&b->bn1, ctx, &b->c1, &b->da1, &b->dc1, err));
    ENG_TRY(eng_conv_backward(&b->conv1, ctx, b->x, &b->dc1, b->dx, err));
    if (b->has_proj) {
        ENG_TRY(eng_bnorm_backward(&b->bns, ctx, &b->cs, &b->g, &b->dcs, err));
        ENG_TRY(eng_conv_backward(&b->convs, ctx, b->x, &b->dcs, &b->dxs, err));
        return eng_accum_run(&b->acc, ctx, b->dx, &b->dxs, err);
    }
    return eng_accum_run(&b->acc, ctx, b->dx, &b->g, err);
fail:
    return -1;
}

/* Stem, blocks and pooling: input → h[0]. */
static int encoder_forward(eng_model *m, eng_err *err) {
    eng_ctx *ctx = &m->ctx;
    ENG_TRY(eng_conv_forward(&m->stem_conv, ctx, &m->input, &m->c0, err));
    ENG_TRY(eng_bnorm_forward(&m->stem_bn, ctx, &m->c0, &m->a0, err));
    for (int i = 0; i < m->n_blocks; i++) {
        STOP_POINT(m); /* inference models have no stop flag */
        ENG_TRY(block_forward(m, &m->blocks[i], err));
    }
    eng_tensor *last = m->n_blocks ? &m->blocks[m->n_blocks - 1].y : &m->a0;
    return eng_pool_forward(&m->pool, ctx, last, m->h[0].data, err);
fail:
    return -1;
}

int eng_model_freeze(eng_model *m, eng_err *err) {
    assert(!m->training);
    ENG_TRY(eng_conv_freeze(&m->stem_conv, &m->ctx, err));
    for (int i = 0; i < m->n_blocks; i++) {
        eng_block *b = &m->blocks[i];
        ENG_TRY(eng_conv_freeze(&b->conv1, &m->ctx, err));
        ENG_TRY(eng_conv_freeze(&b->conv2, &m->ctx, err));
        if (b->has_proj) ENG_TRY(eng_conv_freeze(&b->convs, &m->ctx, err));
    }
    ENG_DNNL(dnnl_stream_wait(m->ctx.stream));
    return 0;
fail:
    return -1;
}

int eng_model_forward(eng_model *m, eng_err *err) {
    if (encoder_forward(m, err)) return -1;
    ENG_DNNL(dnnl_stream_wait(m->ctx.stream));
    return 0;
fail:
    return -1;
}

int eng_model_forward_backward(eng_model *m, eng_err *err) {
    if (!m->training) return eng_fail(err, "model: built for inference, cannot train");
    eng_ctx *ctx = &m->ctx;
    int np = m->cfg.n_proj, n = m->batch;
    ENG_TRY(encoder_forward(m, err));
    for (int i = 0; i < np; i++) {
        STOP_POINT(m);
        eng_tensor *out = i + 1 == np ? &m->z : &m->h[i + 1];
        ENG_TRY(eng_linear_forward(&m->lin[i], ctx, &m->h[i], &m->l[i], err));
        ENG_TRY(eng_bnorm_forward(&m->pbn[i], ctx, &m->l[i], out, err));
    }
    size_t half = (size_t)n * (size_t)m->loss.d;
    ENG_TRY(eng_bt_loss_run(&m->loss, ctx, m->z.data, m->z.data + half, m->dz.data,
                            m->dz.data + half, &m->last_loss, err));
    for (int i = np - 1; i >= 0; i--) {
        STOP_POINT(m);
        eng_tensor *dout = i + 1 == np ? &m->dz : &m->dh[i + 1];
        ENG_TRY(eng_bnorm_backward(&m->pbn[i], ctx, &m->l[i], dout, &m->dl[i], err));
        ENG_TRY(eng_linear_backward(&m->lin[i], ctx, &m->h[i], &m->dl[i], &m->dh[i], err));
    }
    eng_tensor *last_dy = m->n_blocks ? &m->blocks[m->n_blocks - 1].dy : &m->da0;
    ENG_TRY(eng_pool_backward(&m->pool, ctx, m->dh[0].data, last_dy, err));
    for (int i = m->n_blocks - 1; i >= 0; i--) {
        STOP_POINT(m);
        ENG_TRY(block_backward(m, &m->blocks[i], err));
    }
    ENG_TRY(eng_bnorm_backward(&m->stem_bn, ctx, &m->c0, &m->da0, &m->dc0, err));
    ENG_TRY(eng_conv_backward(&m->stem_conv, ctx, &m->input, &m->dc0, NULL, err));
    ENG_DNNL(dnnl_stream_wait(ctx->stream));
    if (!isfinite(m->last_loss)) return eng_fail(err, "loss is not finite (%g)", m->last_loss);
    /* the shards' gradients summed: every rank applies LARS to the same bits */
    if (m->red) ENG_TRY(m->red->sum_f32(m->red->ctx, m->grads, m->n_floats, err));
    return 0;
fail:
    return -1;
}

int eng_model_train_step(eng_model *m, const eng_lars_cfg *opt, long step, eng_err *err) {
    if (eng_model_forward_backward(m, err)) return -1;
    eng_lars_step(opt, m->tab, m->n_params, m->params, m->grads, m->momentum, step);
    return 0;
}

static size_t tensor_bytes(const eng_tensor *t) { return t->owns ? t->bytes : 0; }

size_t eng_model_bytes(const eng_model *m) {
    size_t b = m->n_floats * sizeof(float) * (m->training ? 3 : 1) + m->n_stats * sizeof(float);
    b += m->ctx.scratch_bytes + tensor_bytes(&m->input);
    for (int r = 0; r < ENG_SHARED_ROLES; r++) b += m->shared_bytes[r];
    const eng_tensor *stem[] = {&m->c0, &m->a0, &m->dc0, &m->da0};
    for (int i = 0; i < 4; i++) b += tensor_bytes(stem[i]);
    for (int i = 0; i < m->n_blocks; i++) {
        const eng_block *k = &m->blocks[i];
        const eng_tensor *ts[] = {&k->c1, &k->a1, &k->c2, &k->y,   &k->cs,  &k->bs,
                                  &k->dy, &k->g,  &k->dc2, &k->da1, &k->dc1, &k->dcs, &k->dxs};
        for (size_t j = 0; j < sizeof ts / sizeof *ts; j++) b += tensor_bytes(ts[j]);
    }
    for (int i = 0; i < ENG_MAX_PROJ; i++)
        b += tensor_bytes(&m->h[i]) + tensor_bytes(&m->dh[i]) + tensor_bytes(&m->l[i]) +
             tensor_bytes(&m->dl[i]);
    return b + tensor_bytes(&m->z) + tensor_bytes(&m->dz);
}

static void block_free(eng_block *b) {
    eng_conv_free(&b->conv1);
    eng_conv_free(&b->conv2);
    eng_conv_free(&b->convs);
    eng_bnorm_free(&b->bn1);
    eng_bnorm_free(&b->bn2);
    eng_bnorm_free(&b->bns);
    eng_resadd_free(&b->add);
    eng_accum_free(&b->acc);
    eng_tensor *ts[] = {&b->c1, &b->a1, &b->c2, &b->y,   &b->cs,  &b->bs, &b->dy,
                        &b->g,  &b->dc2, &b->da1, &b->dc1, &b->dcs, &b->dxs};
    for (size_t j = 0; j < sizeof ts / sizeof *ts; j++) eng_tensor_free(ts[j]);
}

void eng_model_free(eng_model *m) {
    for (int i = 0; m->blocks && i < m->n_blocks; i++) block_free(&m->blocks[i]);
    free(m->blocks);
    eng_conv_free(&m->stem_conv);
    eng_bnorm_free(&m->stem_bn);
    eng_tensor *ts[] = {&m->input, &m->c0, &m->a0, &m->dc0, &m->da0, &m->z, &m->dz};
    for (size_t j = 0; j < sizeof ts / sizeof *ts; j++) eng_tensor_free(ts[j]);
    eng_pool_free(&m->pool);
    for (int i = 0; i < ENG_MAX_PROJ; i++) {
        eng_linear_free(&m->lin[i]);
        eng_bnorm_free(&m->pbn[i]);
        eng_tensor_free(&m->h[i]);
        eng_tensor_free(&m->dh[i]);
        eng_tensor_free(&m->l[i]);
        eng_tensor_free(&m->dl[i]);
    }
    eng_bt_loss_free(&m->loss);
    free(m->tab);
    free(m->params);
    free(m->grads);
    free(m->momentum);
    free(m->stats);
    free(m->bn_list);
    for (int r = 0; r < ENG_SHARED_ROLES; r++) free(m->shared_buf[r]);
    free(m->shared_views);
    eng_ctx_free(&m->ctx);
    memset(m, 0, sizeof *m);
}
