/* test_layers.c — every layer's backward on its own, against central finite differences of
 * f(x, w) = Σ r ⊙ layer(x, w) for a fixed random r; plus the inference batch norm against its
 * formula. Inputs are kept as plain arrays and copied into each layer's own layout per call. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_bnorm.h"
#include "eng_conv.h"
#include "eng_linear.h"
#include "eng_pool.h"
#include "eng_resadd.h"
#include "test_util.h"

typedef double (*objective_fn)(void *state);

/* Which outputs are positive at the last objective evaluation, hashed: where a perturbation moves
 * an output across a ReLU's kink the function is not differentiable there, and a finite
 * difference says nothing about the gradient; such samples are skipped (and counted). */
static unsigned long long relu_pattern;

static void note_pattern(const float *y, size_t n) {
    unsigned long long h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned long long)(y[i] > 0)) * 1099511628211ULL;
    relu_pattern = h;
}

/* Central difference of f with respect to x[i], using the step float can actually represent.
 * Returns 0 and leaves *fd unset when the step crosses a ReLU kink. */
static int finite_diff(float *x, size_t i, double h, objective_fn f, void *s, double *fd) {
    float keep = x[i];
    x[i] = (float)(keep + h);
    double step = (double)x[i] - keep;
    double fp = f(s);
    unsigned long long pat = relu_pattern;
    x[i] = (float)(keep - h);
    step += keep - (double)x[i];
    double fm = f(s);
    x[i] = keep;
    if (pat != relu_pattern) return 0;
    *fd = (fp - fm) / step;
    return 1;
}

/* Finite-difference step: 1e-2 keeps float32 rounding small; layers with a fused ReLU use 1e-3
 * so that fewer perturbations carry an output across the kink. */
static double fd_step = 1e-2;

/* Compares analytic[i] with finite differences at up to `samples` pseudo-random indices (all of
 * them when n is small); the relative L2 error over those must stay below 1e-2. */
static void fd_check(const char *label, float *x, const float *analytic, size_t n, size_t samples,
                     objective_fn f, void *s) {
    double num = 0, den = 0;
    unsigned long long lcg = 12345;
    size_t tried = n < samples ? n : samples, skipped = 0;
    for (size_t k = 0; k < tried; k++) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t i = n <= samples ? k : (size_t)(lcg >> 33) % n;
        double fd;
        if (!finite_diff(x, i, fd_step, f, s, &fd)) {
            skipped++;
            continue;
        }
        num += (fd - analytic[i]) * (fd - analytic[i]);
        den += fd * fd;
    }
    double e = sqrt(num / (den > 0 ? den : 1));
    cr_expect(skipped * 4 <= tried, "%s: %zu of %zu samples crossed a ReLU kink", label, skipped,
              tried);
    cr_expect(den > 0, "%s: every sampled finite difference is zero: the check would be vacuous",
              label);
    cr_expect(e < 1e-2, "%s: relative L2 error %.3g against finite differences", label, e);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void must(int rc, const eng_err *err) { cr_assert(rc == 0, "%s", err->msg); }

/* ----------------------------------------------------------------------------------------------
 * Convolution. */

typedef struct conv_case {
    eng_ctx ctx;
    eng_conv conv;
    eng_tensor src, dst, dsrc, ddst;
    float *x, *w, *dw, *r; /* plain input, weights, weight gradient, output weights */
    size_t nx, nw, ny;
} conv_case;

static double conv_objective(void *p) {
    conv_case *c = p;
    eng_err err = {0};
    tu_from_plain(&c->ctx, &c->src, c->x);
    must(eng_conv_forward(&c->conv, &c->ctx, &c->src, &c->dst, &err), &err);
    float *y = tu_to_plain(&c->ctx, &c->dst);
    double v = dot(y, c->r, c->ny);
    free(y);
    return v;
}

static void conv_check(int n, int cin, int hw, int cout, int k, int stride, int pad, int blocked) {
    conv_case c;
    eng_err err = {0};
    memset(&c, 0, sizeof c);
    must(eng_ctx_init(&c.ctx, &err), &err);
    dnnl_dims_t sd = {n, cin, hw, hw};
    dnnl_memory_desc_t smd;
    dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, blocked ? dnnl_aBcd16b : dnnl_abcd);
    must(eng_conv_build(&c.conv, &c.ctx, &smd, NULL, cout, k, stride, pad, 1, 1, &err), &err);
    must(eng_tensor_alloc(&c.src, &c.ctx, &smd, &err), &err);
    must(eng_tensor_alloc(&c.dsrc, &c.ctx, &smd, &err), &err);
    must(eng_tensor_alloc(&c.dst, &c.ctx, &c.conv.dst_md, &err), &err);
    must(eng_tensor_alloc(&c.ddst, &c.ctx, &c.conv.dst_md, &err), &err);
    must(eng_ctx_finish_build(&c.ctx, &err), &err);
    c.nx = tu_numel(&c.src);
    c.ny = tu_numel(&c.dst);
    c.nw = (size_t)cout * cin * k * k;
    c.x = malloc(c.nx * 4);
    c.w = malloc(c.nw * 4);
    c.dw = malloc(c.nw * 4);
    c.r = malloc(c.ny * 4);
    tu_randn(c.x, c.nx, 1, 1.0);
    tu_randn(c.w, c.nw, 2, 0.3);
    tu_randn(c.r, c.ny, 3, 1.0);
    must(eng_conv_bind(&c.conv, c.w, c.dw, &err), &err);

    conv_objective(&c);
    tu_from_plain(&c.ctx, &c.ddst, c.r);
    must(eng_conv_backward(&c.conv, &c.ctx, &c.src, &c.ddst, &c.dsrc, &err), &err);
    dnnl_stream_wait(c.ctx.stream);
    float *dx = tu_to_plain(&c.ctx, &c.dsrc);
    fd_check("conv d/dx", c.x, dx, c.nx, 40, conv_objective, &c);
    fd_check("conv d/dw", c.w, c.dw, c.nw, 40, conv_objective, &c);
    free(dx);
    free(c.x);
    free(c.w);
    free(c.dw);
    free(c.r);
    eng_tensor_free(&c.src);
    eng_tensor_free(&c.dst);
    eng_tensor_free(&c.dsrc);
    eng_tensor_free(&c.ddst);
    eng_conv_free(&c.conv);
    eng_ctx_free(&c.ctx);
}

Test(layers, conv3x3_stride1_backward_matches_finite_differences) { conv_check(2, 3, 6, 5, 3, 1, 1, 0); }
Test(layers, conv3x3_stride2_blocked_input_backward_matches_finite_differences) {
    conv_check(2, 16, 7, 16, 3, 2, 1, 1);
}
Test(layers, conv1x1_stride2_backward_matches_finite_differences) { conv_check(3, 4, 6, 8, 1, 2, 0, 0); }

/* ----------------------------------------------------------------------------------------------
 * Batch normalisation (training), with and without affine/ReLU, one or two groups. */

typedef struct bn_case {
    eng_ctx ctx;
    eng_bnorm bn;
    eng_tensor src, dst, dsrc, ddst;
    float *x, *scale, *shift, *dscale, *dshift, *r, *rm, *rv;
    size_t nx;
    int c;
} bn_case;

static double bn_objective(void *p) {
    bn_case *b = p;
    eng_err err = {0};
    tu_from_plain(&b->ctx, &b->src, b->x);
    must(eng_bnorm_forward(&b->bn, &b->ctx, &b->src, &b->dst, &err), &err);
    float *y = tu_to_plain(&b->ctx, &b->dst);
    if (b->bn.relu) note_pattern(y, b->nx);
    double v = dot(y, b->r, b->nx);
    free(y);
    return v;
}

static void bn_check(int n, int c, int hw, int groups, int affine, int relu, dnnl_format_tag_t tag) {
    bn_case b;
    eng_err err = {0};
    memset(&b, 0, sizeof b);
    b.c = c;
    must(eng_ctx_init(&b.ctx, &err), &err);
    dnnl_dims_t d = {n, c, hw, hw};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, tag);
    must(eng_bnorm_build(&b.bn, &b.ctx, &md, groups, affine, relu, 1, &err), &err);
    eng_tensor *ts[] = {&b.src, &b.dst, &b.dsrc, &b.ddst};
    for (int i = 0; i < 4; i++) must(eng_tensor_alloc(ts[i], &b.ctx, &md, &err), &err);
    must(eng_ctx_finish_build(&b.ctx, &err), &err);
    b.nx = tu_numel(&b.src);
    b.x = malloc(b.nx * 4);
    b.r = malloc(b.nx * 4);
    float *cbuf = calloc(6 * (size_t)c, 4);
    b.scale = cbuf;
    b.shift = cbuf + c;
    b.dscale = cbuf + 2 * c;
    b.dshift = cbuf + 3 * c;
    b.rm = cbuf + 4 * c;
    b.rv = cbuf + 5 * c;
    tu_randn(b.x, b.nx, 11, 2.0);
    for (size_t i = 0; i < b.nx; i++) b.x[i] += (float)(i % 3); /* non-zero means */
    tu_randn(b.r, b.nx, 12, 1.0);
    tu_randn(b.scale, (size_t)c, 13, 0.5);
    tu_randn(b.shift, (size_t)c, 14, 0.5);
    for (int i = 0; i < c; i++) b.scale[i] += 1.0f;
    must(eng_bnorm_bind(&b.bn, affine ? b.scale : NULL, affine ? b.shift : NULL,
                        affine ? b.dscale : NULL, affine ? b.dshift : NULL, b.rm, b.rv, &err),
         &err);
    fd_step = relu ? 1e-3 : 1e-2;
    bn_objective(&b);
    tu_from_plain(&b.ctx, &b.ddst, b.r);
    must(eng_bnorm_backward(&b.bn, &b.ctx, &b.src, &b.ddst, &b.dsrc, &err), &err);
    dnnl_stream_wait(b.ctx.stream);
    float *dx = tu_to_plain(&b.ctx, &b.dsrc);
    fd_check("bnorm d/dx", b.x, dx, b.nx, 60, bn_objective, &b);
    if (affine) {
        fd_check("bnorm d/dscale", b.scale, b.dscale, (size_t)c, (size_t)c, bn_objective, &b);
        fd_check("bnorm d/dshift", b.shift, b.dshift, (size_t)c, (size_t)c, bn_objective, &b);
    }
    free(dx);
    free(b.x);
    free(b.r);
    free(cbuf);
    for (int i = 0; i < 4; i++) eng_tensor_free(ts[i]);
    eng_bnorm_free(&b.bn);
    eng_ctx_free(&b.ctx);
}

Test(layers, bnorm2d_affine_backward_matches_finite_differences) {
    bn_check(4, 5, 3, 1, 1, 0, dnnl_abcd);
}
Test(layers, bnorm2d_affine_relu_two_views_backward_matches_finite_differences) {
    bn_check(6, 16, 3, 2, 1, 1, dnnl_aBcd16b);
}
Test(layers, bnorm2d_affine_two_views_8_channel_blocks_backward_matches_finite_differences) {
    bn_check(4, 8, 3, 2, 1, 0, dnnl_aBcd8b);
}
Test(layers, bnorm2d_affine_relu_two_views_8_channel_blocks_backward_matches_finite_differences) {
    bn_check(4, 8, 5, 2, 1, 1, dnnl_aBcd8b);
}
Test(layers, bnorm1d_affine_relu_backward_matches_finite_differences) {
    bn_check(8, 6, 1, 2, 1, 1, dnnl_abcd);
}
Test(layers, bnorm1d_without_affine_backward_matches_finite_differences) {
    bn_check(10, 7, 1, 2, 0, 0, dnnl_abcd);
}

Test(layers, bnorm_two_views_normalise_each_view_with_its_own_statistics) {
    /* View B = view A shifted by +5: with per-view statistics both normalise to the same output. */
    eng_ctx ctx;
    eng_bnorm bn;
    eng_err err = {0};
    must(eng_ctx_init(&ctx, &err), &err);
    dnnl_dims_t d = {8, 3, 2, 2};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_abcd);
    must(eng_bnorm_build(&bn, &ctx, &md, 2, 0, 0, 1, &err), &err);
    eng_tensor x, y;
    must(eng_tensor_alloc(&x, &ctx, &md, &err), &err);
    must(eng_tensor_alloc(&y, &ctx, &md, &err), &err);
    must(eng_ctx_finish_build(&ctx, &err), &err);
    float rs[6] = {0, 0, 0, 1, 1, 1};
    must(eng_bnorm_bind(&bn, NULL, NULL, NULL, NULL, rs, rs + 3, &err), &err);
    size_t half = 4 * 3 * 4;
    tu_randn(x.data, half, 21, 1.0);
    for (size_t i = 0; i < half; i++) x.data[half + i] = x.data[i] + 5.0f;
    must(eng_bnorm_forward(&bn, &ctx, &x, &y, &err), &err);
    dnnl_stream_wait(ctx.stream);
    cr_expect(tu_rel_l2(y.data + half, y.data, half) < 1e-5, "view B normalised differently");
    /* running mean: two momentum updates, from view A's mean then view B's (= A's + 5) */
    for (int ch = 0; ch < 3; ch++) {
        double ma = 0;
        for (int i = 0; i < 4; i++)
            for (int s = 0; s < 4; s++) ma += x.data[(size_t)(i * 3 + ch) * 4 + s];
        ma /= 16;
        double want = 0.9 * (0.1 * ma) + 0.1 * (ma + 5);
        cr_expect(fabs(rs[ch] - want) < 1e-5, "running mean[%d] %.6f, want %.6f", ch, rs[ch], want);
    }
    eng_tensor_free(&x);
    eng_tensor_free(&y);
    eng_bnorm_free(&bn);
    eng_ctx_free(&ctx);
}

Test(layers, bnorm_inference_uses_running_statistics) {
    eng_ctx ctx;
    eng_bnorm bn;
    eng_err err = {0};
    must(eng_ctx_init(&ctx, &err), &err);
    const int n = 3, c = 4, hw = 2;
    dnnl_dims_t d = {n, c, hw, hw};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_abcd);
    must(eng_bnorm_build(&bn, &ctx, &md, 1, 1, 1, 0, &err), &err);
    eng_tensor x, y;
    must(eng_tensor_alloc(&x, &ctx, &md, &err), &err);
    must(eng_tensor_alloc(&y, &ctx, &md, &err), &err);
    must(eng_ctx_finish_build(&ctx, &err), &err);
    float scale[4] = {1.5f, 0.5f, 2.0f, 1.0f}, shift[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    float rm[4] = {0.5f, -1.0f, 0.0f, 2.0f}, rv[4] = {4.0f, 0.25f, 1.0f, 9.0f};
    must(eng_bnorm_bind(&bn, scale, shift, NULL, NULL, rm, rv, &err), &err);
    tu_randn(x.data, (size_t)n * c * hw * hw, 31, 2.0);
    must(eng_bnorm_forward(&bn, &ctx, &x, &y, &err), &err);
    dnnl_stream_wait(ctx.stream);
    for (int i = 0; i < n * c * hw * hw; i++) {
        int ch = (i / (hw * hw)) % c;
        double v = (x.data[i] - rm[ch]) / sqrt(rv[ch] + 1e-5) * scale[ch] + shift[ch];
        if (v < 0) v = 0;
        cr_expect(fabs(y.data[i] - v) < 1e-5 * (1 + fabs(v)), "y[%d] = %g, want %g", i, y.data[i], v);
    }
    cr_expect(rm[0] == 0.5f && rv[3] == 9.0f, "inference must not touch running statistics");
    eng_tensor_free(&x);
    eng_tensor_free(&y);
    eng_bnorm_free(&bn);
    eng_ctx_free(&ctx);
}

/* ----------------------------------------------------------------------------------------------
 * Residual add + ReLU. */

typedef struct add_case {
    eng_ctx ctx;
    eng_resadd add;
    eng_tensor a, b, y, dy, g;
    float *xa, *xb, *r;
    size_t n;
} add_case;

static double add_objective(void *p) {
    add_case *c = p;
    eng_err err = {0};
    tu_from_plain(&c->ctx, &c->a, c->xa);
    tu_from_plain(&c->ctx, &c->b, c->xb);
    must(eng_resadd_forward(&c->add, &c->ctx, &c->a, &c->b, &c->y, &err), &err);
    float *y = tu_to_plain(&c->ctx, &c->y);
    note_pattern(y, c->n);
    double v = dot(y, c->r, c->n);
    free(y);
    return v;
}

Test(layers, residual_add_relu_backward_matches_finite_differences) {
    add_case c;
    eng_err err = {0};
    memset(&c, 0, sizeof c);
    must(eng_ctx_init(&c.ctx, &err), &err);
    dnnl_dims_t d = {2, 16, 4, 4};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_aBcd16b);
    must(eng_resadd_build(&c.add, &c.ctx, &md, &md, 1, &err), &err);
    eng_tensor *ts[] = {&c.a, &c.b, &c.y, &c.dy, &c.g};
    for (int i = 0; i < 5; i++) must(eng_tensor_alloc(ts[i], &c.ctx, &md, &err), &err);
    must(eng_ctx_finish_build(&c.ctx, &err), &err);
    c.n = tu_numel(&c.a);
    c.xa = malloc(c.n * 4);
    c.xb = malloc(c.n * 4);
    c.r = malloc(c.n * 4);
    tu_randn(c.xa, c.n, 41, 1.0);
    tu_randn(c.xb, c.n, 42, 1.0);
    tu_randn(c.r, c.n, 43, 1.0);
    for (size_t i = 0; i < c.n; i++) /* keep a + b away from the ReLU kink */
        if (fabsf(c.xa[i] + c.xb[i]) < 0.05f) c.xa[i] += 0.1f;
    add_objective(&c);
    tu_from_plain(&c.ctx, &c.dy, c.r);
    must(eng_resadd_backward(&c.add, &c.ctx, &c.y, &c.dy, &c.g, &err), &err);
    dnnl_stream_wait(c.ctx.stream);
    float *g = tu_to_plain(&c.ctx, &c.g);
    fd_check("resadd d/da", c.xa, g, c.n, 60, add_objective, &c);
    fd_check("resadd d/db", c.xb, g, c.n, 60, add_objective, &c);
    free(g);
    free(c.xa);
    free(c.xb);
    free(c.r);
    for (int i = 0; i < 5; i++) eng_tensor_free(ts[i]);
    eng_resadd_free(&c.add);
    eng_ctx_free(&c.ctx);
}

/* oneDNN 2.6's binary kernel ("jit:uni") wrote up to 8 KB past its output for 8-channel blocked
 * tensors on this machine; the residual join must stay inside its buffers whatever the layout. */
Test(layers, residual_add_writes_nothing_outside_its_tensors_in_8_channel_blocks) {
    eng_ctx ctx;
    eng_resadd add;
    eng_accum acc;
    eng_err err = {0};
    must(eng_ctx_init(&ctx, &err), &err);
    dnnl_dims_t d = {32, 8, 16, 16};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_aBcd8b);
    must(eng_resadd_build(&add, &ctx, &md, &md, 1, &err), &err);
    must(eng_accum_build(&acc, &ctx, &md, &md, &err), &err);
    must(eng_ctx_finish_build(&ctx, &err), &err);
    const size_t bytes = dnnl_memory_desc_get_size(&md), guard = 65536, n = bytes / 4;
    eng_tensor t[4];
    unsigned char *buf[4];
    for (int i = 0; i < 4; i++) {
        buf[i] = malloc(bytes + guard);
        memset(buf[i] + bytes, 0x5a, guard);
        tu_randn((float *)buf[i], n, 70 + (unsigned)i, 1.0);
        must(eng_tensor_wrap(&t[i], &ctx, &md, (float *)buf[i], &err), &err);
    }
    float *a0 = malloc(bytes), *b0 = malloc(bytes);
    memcpy(a0, buf[0], bytes);
    memcpy(b0, buf[1], bytes);
    must(eng_resadd_forward(&add, &ctx, &t[0], &t[1], &t[0], &err), &err); /* y over a */
    must(eng_resadd_backward(&add, &ctx, &t[0], &t[2], &t[3], &err), &err);
    must(eng_accum_run(&acc, &ctx, &t[2], &t[1], &err), &err);
    dnnl_stream_wait(ctx.stream);
    for (int i = 0; i < 4; i++) {
        size_t bad = 0;
        for (size_t k = 0; k < guard; k++) bad += buf[i][bytes + k] != 0x5a;
        cr_expect(bad == 0, "tensor %d: %zu bytes past its end were overwritten", i, bad);
    }
    const float *y = (const float *)buf[0];
    for (size_t k = 0; k < n; k += 97) {
        float want = a0[k] + b0[k] > 0 ? a0[k] + b0[k] : 0;
        cr_expect(fabsf(y[k] - want) < 1e-6f, "y[%zu] = %g, want %g", k, y[k], want);
    }
    for (int i = 0; i < 4; i++) {
        eng_tensor_free(&t[i]);
        free(buf[i]);
    }
    free(a0);
    free(b0);
    eng_accum_free(&acc);
    eng_resadd_free(&add);
    eng_ctx_free(&ctx);
}

/* ----------------------------------------------------------------------------------------------
 * Global average pooling. */

typedef struct pool_case {
    eng_ctx ctx;
    eng_pool pool;
    eng_tensor x, dx;
    float *xp, *rows, *r;
    size_t n, nrows;
} pool_case;

static double pool_objective(void *p) {
    pool_case *c = p;
    eng_err err = {0};
    tu_from_plain(&c->ctx, &c->x, c->xp);
    must(eng_pool_forward(&c->pool, &c->ctx, &c->x, c->rows, &err), &err);
    dnnl_stream_wait(c->ctx.stream);
    return dot(c->rows, c->r, c->nrows);
}

Test(layers, global_average_pool_forward_and_backward) {
    pool_case c;
    eng_err err = {0};
    memset(&c, 0, sizeof c);
    must(eng_ctx_init(&c.ctx, &err), &err);
    dnnl_dims_t d = {3, 20, 3, 3};
    dnnl_memory_desc_t md;
    dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, dnnl_aBcd16b);
    must(eng_pool_build(&c.pool, &c.ctx, &md, 1, &err), &err);
    must(eng_tensor_alloc(&c.x, &c.ctx, &md, &err), &err);
    must(eng_tensor_alloc(&c.dx, &c.ctx, &md, &err), &err);
    must(eng_ctx_finish_build(&c.ctx, &err), &err);
    c.n = tu_numel(&c.x);
    c.nrows = 3 * 20;
    c.xp = malloc(c.n * 4);
    c.rows = malloc(c.nrows * 4);
    c.r = malloc(c.nrows * 4);
    tu_randn(c.xp, c.n, 51, 1.0);
    tu_randn(c.r, c.nrows, 52, 1.0);
    pool_objective(&c);
    for (int i = 0; i < 3 * 20; i++) { /* forward: the mean of each 3×3 plane */
        double s = 0;
        for (int k = 0; k < 9; k++) s += c.xp[i * 9 + k];
        cr_expect(fabs(c.rows[i] - s / 9) < 1e-6, "pooled[%d] = %g, want %g", i, c.rows[i], s / 9);
    }
    must(eng_pool_backward(&c.pool, &c.ctx, c.r, &c.dx, &err), &err);
    dnnl_stream_wait(c.ctx.stream);
    float *dx = tu_to_plain(&c.ctx, &c.dx);
    fd_check("pool d/dx", c.xp, dx, c.n, 60, pool_objective, &c);
    free(dx);
    free(c.xp);
    free(c.rows);
    free(c.r);
    eng_tensor_free(&c.x);
    eng_tensor_free(&c.dx);
    eng_pool_free(&c.pool);
    eng_ctx_free(&c.ctx);
}

/* ----------------------------------------------------------------------------------------------
 * Linear (inner product without bias). */

typedef struct lin_case {
    eng_ctx ctx;
    eng_linear lin;
    eng_tensor x, y, dx, dy;
    float *w, *dw, *r;
} lin_case;

static double lin_objective(void *p) {
    lin_case *c = p;
    eng_err err = {0};
    must(eng_linear_forward(&c->lin, &c->ctx, &c->x, &c->y, &err), &err);
    dnnl_stream_wait(c->ctx.stream);
    return dot(c->y.data, c->r, tu_numel(&c->y));
}

Test(layers, linear_backward_matches_finite_differences) {
    lin_case c;
    eng_err err = {0};
    memset(&c, 0, sizeof c);
    const int m = 5, k = 24, n = 17;
    must(eng_ctx_init(&c.ctx, &err), &err);
    must(eng_linear_build(&c.lin, &c.ctx, m, k, n, 1, &err), &err);
    dnnl_dims_t xd = {m, k}, yd = {m, n};
    dnnl_memory_desc_t xmd, ymd;
    must(eng_md_plain(&xmd, 2, xd, &err), &err);
    must(eng_md_plain(&ymd, 2, yd, &err), &err);
    must(eng_tensor_alloc(&c.x, &c.ctx, &xmd, &err), &err);
    must(eng_tensor_alloc(&c.dx, &c.ctx, &xmd, &err), &err);
    must(eng_tensor_alloc(&c.y, &c.ctx, &ymd, &err), &err);
    must(eng_tensor_alloc(&c.dy, &c.ctx, &ymd, &err), &err);
    must(eng_ctx_finish_build(&c.ctx, &err), &err);
    c.w = malloc((size_t)n * k * 4);
    c.dw = malloc((size_t)n * k * 4);
    c.r = malloc((size_t)m * n * 4);
    tu_randn(c.x.data, (size_t)m * k, 61, 1.0);
    tu_randn(c.w, (size_t)n * k, 62, 0.3);
    tu_randn(c.r, (size_t)m * n, 63, 1.0);
    must(eng_linear_bind(&c.lin, c.w, c.dw, &err), &err);
    lin_objective(&c);
    memcpy(c.dy.data, c.r, (size_t)m * n * 4);
    must(eng_linear_backward(&c.lin, &c.ctx, &c.x, &c.dy, &c.dx, &err), &err);
    dnnl_stream_wait(c.ctx.stream);
    fd_check("linear d/dx", c.x.data, c.dx.data, (size_t)m * k, 60, lin_objective, &c);
    fd_check("linear d/dw", c.w, c.dw, (size_t)n * k, 60, lin_objective, &c);
    free(c.w);
    free(c.dw);
    free(c.r);
    eng_tensor *ts[] = {&c.x, &c.y, &c.dx, &c.dy};
    for (int i = 0; i < 4; i++) eng_tensor_free(ts[i]);
    eng_linear_free(&c.lin);
    eng_ctx_free(&c.ctx);
}
