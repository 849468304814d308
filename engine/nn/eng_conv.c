/* eng_conv.c — convolution layer on oneDNN (reproduces torch.nn.Conv2d(bias=False)). */
#include "eng_conv.h"

#include <assert.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

/* The three primitive descriptors of one layout choice. */
typedef struct conv_pds {
    dnnl_primitive_desc_t fwd, bwd_data, bwd_wei;
} conv_pds;

static void pds_free(conv_pds *p) {
    if (p->fwd) dnnl_primitive_desc_destroy(p->fwd);
    if (p->bwd_data) dnnl_primitive_desc_destroy(p->bwd_data);
    if (p->bwd_wei) dnnl_primitive_desc_destroy(p->bwd_wei);
    memset(p, 0, sizeof *p);
}

/* Creates the descriptors for one (src, dst) layout choice. Returns 1 when every one exists and
 * none is oneDNN's reference kernel (or any exists at all, when accept_ref), else 0 with *p empty. */
static int try_layouts(eng_conv *c, eng_ctx *ctx, const dnnl_memory_desc_t *src,
                       const dnnl_memory_desc_t *dst, int accept_ref, conv_pds *p) {
    dnnl_dims_t wdims = {c->cout, c->cin, c->k, c->k};
    dnnl_dims_t strides = {c->stride, c->stride}, pad_l = {c->pad, c->pad}, pad_r = {c->pad, c->pad};
    dnnl_memory_desc_t w_any;
    dnnl_convolution_desc_t d;
    /* Winograd (F(4x4, 3x3)) does 2.25x fewer multiplications on 3x3 stride-1 layers and oneDNN
     * picks it under "auto" where it is faster. Only when both channel counts fill whole 16-wide
     * blocks: with zero-padded channel blocks its inference kernel gave batch-dependent results. */
    dnnl_alg_kind_t alg = c->cin % 16 == 0 && c->cout % 16 == 0 ? dnnl_convolution_auto
                                                                 : dnnl_convolution_direct;
    memset(p, 0, sizeof *p);
    if (dnnl_memory_desc_init_by_tag(&w_any, 4, wdims, dnnl_f32, dnnl_format_tag_any)) return 0;
    if (dnnl_convolution_forward_desc_init(
            &d, c->training ? dnnl_forward_training : dnnl_forward_inference,
            alg, src, &w_any, NULL, dst, strides, pad_l, pad_r) ||
        dnnl_primitive_desc_create(&p->fwd, &d, ctx->attr, ctx->engine, NULL))
        goto reject;
    int ref = eng_pd_is_ref(p->fwd);
    const dnnl_memory_desc_t *s = dnnl_primitive_desc_query_md(p->fwd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *o = dnnl_primitive_desc_query_md(p->fwd, dnnl_query_dst_md, 0);
    if (c->has_bwd_data) {
        if (dnnl_convolution_backward_data_desc_init(&d, alg, s, &w_any, o,
                                                     strides, pad_l, pad_r) ||
            dnnl_primitive_desc_create(&p->bwd_data, &d, ctx->attr, ctx->engine, p->fwd))
            goto reject;
        ref |= eng_pd_is_ref(p->bwd_data);
    }
    if (c->training) {
        if (dnnl_convolution_backward_weights_desc_init(&d, alg, s, &w_any,
                                                        NULL, o, strides, pad_l, pad_r) ||
            dnnl_primitive_desc_create(&p->bwd_wei, &d, ctx->attr, ctx->engine, p->fwd))
            goto reject;
        ref |= eng_pd_is_ref(p->bwd_wei);
    }
    if (ref && !accept_ref) goto reject;
    return 1;
reject:
    pds_free(p);
    return 0;
}

#define WINO_ALL (ENG_WINO_FWD | ENG_WINO_BWD_DATA | ENG_WINO_BWD_WEI)

/* Which passes BARLOWD_WINOGRAD asks for (before the ISA and layout conditions). By default,
 * all three passes from 64 channels in and out up, none below: at mb512 on AMD EPYC AVX2 (two
 * threads) our kernel took 55/52/53 ms (forward/backward-data/backward-weights) at 64ch 16x16,
 * 40/37/50 at 128ch 8x8, 30/31/53 at 256ch 4x4, against oneDNN direct's 64/67/92, 72/61/84,
 * 85/68/99; but 90-97 ms per pass at 32ch 32x32 against 61/65/94 (tiny GEMMs, transform-bound).
 * Letters force the passes on every supported shape (tests, A/B). */
static int wino_wanted(int cin, int cout) {
    const char *e = getenv("BARLOWD_WINOGRAD");
    if (!e || !*e || !strcmp(e, "1")) return cin >= 64 && cout >= 64 ? WINO_ALL : 0;
    if (!strcmp(e, "0")) return 0;
    int m = 0;
    for (; *e; e++)
        m |= *e == 'f' ? ENG_WINO_FWD : *e == 'd' ? ENG_WINO_BWD_DATA : *e == 'w' ? ENG_WINO_BWD_WEI : 0;
    return m;
}

/* BARLOWD_WINOGRAD_VERBOSE=1 (read at build): one stderr line per Winograd pass with its time,
 * like ONEDNN_VERBOSE's lines for the primitives, for per-layer measurements. */
static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
static void wino_note(const eng_conv *c, const char *pass, double t0) {
    if (c->wino_verbose)
        fprintf(stderr, "barlowd_winograd,%s,mb%d_ic%d_oc%d_ih%d_iw%d,%.3f\n", pass, c->n, c->cin,
                c->cout, c->h, c->w, now_ms() - t0);
}

/* 1 when md is the dense nChw8c layout of its dims. */
static int is_8b(const dnnl_memory_desc_t *md) {
    dnnl_memory_desc_t t;
    if (dnnl_memory_desc_init_by_tag(&t, 4, md->dims, dnnl_f32, dnnl_aBcd8b)) return 0;
    return dnnl_memory_desc_equal(&t, md);
}

int eng_conv_build(eng_conv *c, eng_ctx *ctx, const dnnl_memory_desc_t *src_md,
                   const dnnl_memory_desc_t *dst_hint, int cout, int k, int stride, int pad,
                   int training, int with_bwd_data, eng_err *err) {
    conv_pds pds = {0};
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
    dnnl_dims_t sdims = {c->n, c->cin, c->h, c->w};
    dnnl_memory_desc_t w_plain, s_tag[4], d_tag[4];
    static const dnnl_format_tag_t tags[4] = {dnnl_format_tag_any, dnnl_aBcd16b, dnnl_aBcd8b,
                                              dnnl_acdb};
    ENG_TRY(eng_md_plain(&w_plain, 4, wdims, err));
    for (int i = 0; i < 4; i++) {
        ENG_DNNL(dnnl_memory_desc_init_by_tag(&s_tag[i], 4, sdims, dnnl_f32, tags[i]));
        ENG_DNNL(dnnl_memory_desc_init_by_tag(&d_tag[i], 4, ddims, dnnl_f32, tags[i]));
    }
    /* Layout negotiation, best first: the given input with the wished output, the given input
     * with any output, then common blocked and channels-last layouts with a reordered input; the
     * first choice whose forward and backward kernels are all fast wins, and oneDNN's own pick
     * (reference kernels allowed) is the last resort. */
    const dnnl_memory_desc_t *cand[6][2] = {{src_md, dst_hint},      {src_md, &d_tag[0]},
                                             {&s_tag[1], &d_tag[1]}, {&s_tag[2], &d_tag[2]},
                                             {&s_tag[3], &d_tag[3]}, {&s_tag[0], &d_tag[0]}};
    int found = 0;
    for (int i = 0; i < 6 && !found; i++)
        if (cand[i][1]) found = try_layouts(c, ctx, cand[i][0], cand[i][1], i == 5, &pds);
    if (!found) {
        eng_fail(err, "conv: oneDNN has no implementation for %dx%d %d->%d k%d s%d", c->h, c->w,
                 c->cin, cout, k, stride);
        goto fail;
    }
    ENG_TRY(eng_ctx_note_scratch(ctx, pds.fwd, err));
    ENG_DNNL(dnnl_primitive_create(&c->fwd, pds.fwd));
    c->dst_md = *dnnl_primitive_desc_query_md(pds.fwd, dnnl_query_dst_md, 0);
    c->prim_src_md = *dnnl_primitive_desc_query_md(pds.fwd, dnnl_query_src_md, 0);
    if (!dnnl_memory_desc_equal(&c->prim_src_md, src_md)) {
        ENG_TRY(eng_tensor_alloc(&c->src_re, ctx, &c->prim_src_md, err));
        ENG_TRY(eng_reorder_make(ctx, src_md, &c->prim_src_md, &c->src_in, err));
        if (c->has_bwd_data) {
            ENG_TRY(eng_tensor_alloc(&c->dsrc_re, ctx, &c->prim_src_md, err));
            ENG_TRY(eng_reorder_make(ctx, &c->prim_src_md, src_md, &c->dsrc_out, err));
        }
    }
    ENG_TRY(eng_staged_build(&c->w_fwd, ctx, &w_plain,
                             dnnl_primitive_desc_query_md(pds.fwd, dnnl_query_weights_md, 0), 1,
                             err));
    if (c->has_bwd_data) {
        ENG_TRY(eng_ctx_note_scratch(ctx, pds.bwd_data, err));
        ENG_DNNL(dnnl_primitive_create(&c->bwd_data, pds.bwd_data));
        ENG_TRY(eng_staged_build(
            &c->w_bwd, ctx, &w_plain,
            dnnl_primitive_desc_query_md(pds.bwd_data, dnnl_query_weights_md, 0), 1, err));
    }
    if (training) {
        ENG_TRY(eng_ctx_note_scratch(ctx, pds.bwd_wei, err));
        ENG_DNNL(dnnl_primitive_create(&c->bwd_wei, pds.bwd_wei));
        ENG_TRY(eng_staged_build(
            &c->dw, ctx, &w_plain,
            dnnl_primitive_desc_query_md(pds.bwd_wei, dnnl_query_diff_weights_md, 0), 0, err));
    }
    if (training && eng_wino_shape_ok(c->cin, cout, k, stride, pad) && is_8b(&c->prim_src_md) &&
        is_8b(&c->dst_md) && eng_wino_available()) {
        int m = wino_wanted(c->cin, cout);
        if (!c->has_bwd_data) m &= ~ENG_WINO_BWD_DATA;
        if (m) {
            ENG_TRY(eng_wino_init(&c->wino, c->n, c->cin, cout, c->h, c->w, err));
            c->wino_passes = m;
            const char *v = getenv("BARLOWD_WINOGRAD_VERBOSE");
            c->wino_verbose = v && !strcmp(v, "1");
        }
    }
    pds_free(&pds);
    return 0;
fail:
    pds_free(&pds);
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

/* The input as the primitives see it: src itself, or its reordered copy (filled by forward). */
static eng_tensor *prim_src(eng_conv *c, eng_tensor *src) { return c->src_re.mem ? &c->src_re : src; }

int eng_conv_freeze(eng_conv *c, eng_ctx *ctx, eng_err *err) {
    assert(!c->training);
    if (eng_staged_sync(&c->w_fwd, ctx, err)) return -1;
    c->frozen = 1;
    return 0;
}

int eng_conv_forward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *dst, eng_err *err) {
    if (c->wino_passes & ENG_WINO_FWD) {
        if (c->src_re.mem) ENG_TRY(eng_reorder_run(ctx, c->src_in, src, &c->src_re, err));
        double t0 = now_ms();
        /* this step's weights for both Winograd passes at once (backward-data flips them) */
        eng_wino_set_weights(&c->wino, c->w_fwd.plain.data, 1,
                             (c->wino_passes & ENG_WINO_BWD_DATA) != 0);
        eng_wino_forward(&c->wino, prim_src(c, src)->data, dst->data);
        wino_note(c, "forward", t0);
        return 0;
    }
    if (!c->frozen) ENG_TRY(eng_staged_sync(&c->w_fwd, ctx, err));
    if (c->src_re.mem) ENG_TRY(eng_reorder_run(ctx, c->src_in, src, &c->src_re, err));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, prim_src(c, src)->mem},
                              {DNNL_ARG_WEIGHTS, c->w_fwd.prim.mem},
                              {DNNL_ARG_DST, dst->mem}};
    return eng_ctx_exec(ctx, c->fwd, 3, args, err);
fail:
    return -1;
}

int eng_conv_backward(eng_conv *c, eng_ctx *ctx, eng_tensor *src, eng_tensor *diff_dst,
                      eng_tensor *diff_src, eng_err *err) {
    if (c->wino_passes & ENG_WINO_BWD_DATA) {
        eng_tensor *ds = c->dsrc_re.mem ? &c->dsrc_re : diff_src;
        double t0 = now_ms();
        if (!(c->wino_passes & ENG_WINO_FWD)) /* else the forward transformed them already */
            eng_wino_set_weights(&c->wino, c->w_bwd.plain.data, 0, 1);
        eng_wino_backward_data(&c->wino, diff_dst->data, ds->data);
        wino_note(c, "backward_data", t0);
        if (c->dsrc_re.mem) ENG_TRY(eng_reorder_run(ctx, c->dsrc_out, &c->dsrc_re, diff_src, err));
    } else if (c->has_bwd_data) {
        ENG_TRY(eng_staged_sync(&c->w_bwd, ctx, err));
        eng_tensor *ds = c->dsrc_re.mem ? &c->dsrc_re : diff_src;
        dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, diff_dst->mem},
                                  {DNNL_ARG_WEIGHTS, c->w_bwd.prim.mem},
                                  {DNNL_ARG_DIFF_SRC, ds->mem}};
        ENG_TRY(eng_ctx_exec(ctx, c->bwd_data, 3, args, err));
        if (c->dsrc_re.mem) ENG_TRY(eng_reorder_run(ctx, c->dsrc_out, &c->dsrc_re, diff_src, err));
    }
    /* the reordered copy of src made by the forward is still current */
    if (c->wino_passes & ENG_WINO_BWD_WEI) {
        double t0 = now_ms();
        eng_wino_backward_weights(&c->wino, prim_src(c, src)->data, diff_dst->data,
                                  c->dw.plain.data);
        wino_note(c, "backward_weights", t0);
        return 0;
    }
    dnnl_exec_arg_t wargs[] = {{DNNL_ARG_SRC, prim_src(c, src)->mem},
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
    if (c->src_in) dnnl_primitive_destroy(c->src_in);
    if (c->dsrc_out) dnnl_primitive_destroy(c->dsrc_out);
    eng_tensor_free(&c->src_re);
    eng_tensor_free(&c->dsrc_re);
    if (c->wino_passes) eng_wino_free(&c->wino);
    memset(c, 0, sizeof *c);
}
