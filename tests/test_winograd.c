/* test_winograd.c — our Winograd F(2x2, 3x3) kernel (eng_winograd) on its own against a
 * double-precision direct convolution, and through eng_conv against oneDNN's direct kernels
 * (BARLOWD_WINOGRAD=0), for forward, backward-data and backward-weights; plus the conditions
 * under which eng_conv uses it. Where the CPU or the ISA cap rules the kernel out, the tests say
 * so (coverage line) and check that eng_conv stays on oneDNN. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_conv.h"
#include "eng_winograd.h"
#include "test_util.h"

/* aligned_alloc wants a size that is a multiple of the alignment (C11 7.22.3.1). */
static size_t round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

static void must(int rc, const eng_err *err) { cr_assert(rc == 0, "%s", err->msg); }

/* Plain NCHW index ↔ nChw8c offset. */
static size_t off8(int c_n, int h, int w, int n, int c, int y, int x) {
    return ((((size_t)n * (c_n / 8) + c / 8) * h + y) * w + x) * 8 + c % 8;
}
static float *to8(const float *p, int n_n, int c_n, int h, int w) {
    float *b = aligned_alloc(64, round64((size_t)n_n * c_n * h * w * 4));
    for (int n = 0; n < n_n; n++)
        for (int c = 0; c < c_n; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    b[off8(c_n, h, w, n, c, y, x)] = p[(((size_t)n * c_n + c) * h + y) * w + x];
    return b;
}
static float *from8(const float *b, int n_n, int c_n, int h, int w) {
    float *p = malloc((size_t)n_n * c_n * h * w * 4);
    for (int n = 0; n < n_n; n++)
        for (int c = 0; c < c_n; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    p[(((size_t)n * c_n + c) * h + y) * w + x] = b[off8(c_n, h, w, n, c, y, x)];
    return p;
}

/* Double-precision 3x3 pad-1 stride-1 convolution, plain NCHW / OIHW: y, dx, dw. */
typedef struct ref3 { float *y, *dx, *dw; } ref3;
static ref3 reference(const float *x, const float *w, const float *dy, int nn, int ci, int co,
                      int h, int wd) {
    size_t nx = (size_t)nn * ci * h * wd, ny = (size_t)nn * co * h * wd, nw = (size_t)co * ci * 9;
    double *y = calloc(ny, 8), *dx = calloc(nx, 8), *dw = calloc(nw, 8);
    for (int n = 0; n < nn; n++)
        for (int o = 0; o < co; o++)
            for (int c = 0; c < ci; c++)
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        double k = w[((size_t)o * ci + c) * 9 + ky * 3 + kx];
                        for (int oy = 0; oy < h; oy++) {
                            int iy = oy + ky - 1;
                            if (iy < 0 || iy >= h) continue;
                            for (int ox = 0; ox < wd; ox++) {
                                int ix = ox + kx - 1;
                                if (ix < 0 || ix >= wd) continue;
                                size_t xi = (((size_t)n * ci + c) * h + iy) * wd + ix;
                                size_t yi = (((size_t)n * co + o) * h + oy) * wd + ox;
                                y[yi] += k * x[xi];
                                dx[xi] += k * dy[yi];
                                dw[((size_t)o * ci + c) * 9 + ky * 3 + kx] += (double)x[xi] * dy[yi];
                            }
                        }
                    }
    ref3 r = {malloc(ny * 4), malloc(nx * 4), malloc(nw * 4)};
    for (size_t i = 0; i < ny; i++) r.y[i] = (float)y[i];
    for (size_t i = 0; i < nx; i++) r.dx[i] = (float)dx[i];
    for (size_t i = 0; i < nw; i++) r.dw[i] = (float)dw[i];
    free(y), free(dx), free(dw);
    return r;
}
static void ref_free(ref3 *r) { free(r->y), free(r->dx), free(r->dw); }

#define TOL 1e-4

/* The kernel alone against the double reference. */
static void kernel_check(int nn, int ci, int co, int h, int w) {
    if (!eng_wino_available()) {
        tu_coverage("winograd kernel unavailable here (no avx2+fma, or ISA cap/AVX-512): %dx%d "
                    "%d->%d not run", h, w, ci, co);
        cr_assert(!tu_cpu_has("avx2") || !tu_cpu_has("fma") || tu_cpu_has("avx512f") ||
                      getenv("BARLOWD_MAX_ISA") || getenv("ONEDNN_MAX_CPU_ISA"),
                  "kernel unavailable on an AVX2 CPU without a cap");
        return;
    }
    size_t nx = (size_t)nn * ci * h * w, ny = (size_t)nn * co * h * w, nw = (size_t)co * ci * 9;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *dy = malloc(ny * 4), *dw = malloc(nw * 4);
    tu_randn(x, nx, 11, 1.0);
    tu_randn(wt, nw, 12, 0.3);
    tu_randn(dy, ny, 13, 1.0);
    ref3 r = reference(x, wt, dy, nn, ci, co, h, w);
    float *x8 = to8(x, nn, ci, h, w), *dy8 = to8(dy, nn, co, h, w);
    float *y8 = aligned_alloc(64, round64(ny * 4)), *dx8 = aligned_alloc(64, round64(nx * 4));
    eng_wino g;
    eng_err err = {0};
    must(eng_wino_init(&g, nn, ci, co, h, w, &err), &err);
    eng_wino_set_weights(&g, wt, 1, 1);
    eng_wino_forward(&g, x8, y8);
    eng_wino_backward_data(&g, dy8, dx8);
    eng_wino_backward_weights(&g, x8, dy8, dw);
    float *y = from8(y8, nn, co, h, w), *dx = from8(dx8, nn, ci, h, w);
    double ey = tu_check_tensor("wino y", y, r.y, ny), ex = tu_check_tensor("wino dx", dx, r.dx, nx);
    double ew = tu_check_tensor("wino dw", dw, r.dw, nw);
    cr_expect(ey < TOL, "forward %dx%d %d->%d n%d: rel err %g", h, w, ci, co, nn, ey);
    cr_expect(ex < TOL, "backward-data %dx%d %d->%d n%d: rel err %g", h, w, ci, co, nn, ex);
    cr_expect(ew < TOL, "backward-weights %dx%d %d->%d n%d: rel err %g", h, w, ci, co, nn, ew);
    eng_wino_free(&g);
    ref_free(&r);
    free(x), free(wt), free(dy), free(dw), free(x8), free(dy8), free(y8), free(dx8), free(y), free(dx);
}

Test(winograd, kernel_8ch_4x4_batch1) { kernel_check(1, 8, 8, 4, 4); }
Test(winograd, kernel_16_to_8_5x5_odd_batch2) { kernel_check(2, 16, 8, 5, 5); }
Test(winograd, kernel_8_to_32_5x7_odd_batch3) { kernel_check(3, 8, 32, 5, 7); }
Test(winograd, kernel_32ch_8x8_batch2) { kernel_check(2, 32, 32, 8, 8); }
Test(winograd, kernel_64ch_8x8_batch1) { kernel_check(1, 64, 64, 8, 8); }
Test(winograd, kernel_32ch_32x32_batch2) { kernel_check(2, 32, 32, 32, 32); }
Test(winograd, kernel_64_to_16_4x4_batch5) { kernel_check(5, 64, 16, 4, 4); }

/* One eng_conv on an nChw8c input: y, dx, dw (plain) and which passes ran on Winograd. */
typedef struct conv_out { float *y, *dx, *dw; int passes; } conv_out;
static conv_out run_conv(const float *x, const float *w, const float *dy, int nn, int ci, int co,
                         int h, int wd) {
    eng_ctx ctx;
    eng_conv c;
    eng_tensor src = {0}, dst = {0}, dsrc = {0}, ddst = {0};
    eng_err err = {0};
    must(eng_ctx_init(&ctx, &err), &err);
    dnnl_dims_t sd = {nn, ci, h, wd}, dd = {nn, co, h, wd};
    dnnl_memory_desc_t smd, dmd;
    dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_aBcd8b);
    dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_aBcd8b);
    must(eng_conv_build(&c, &ctx, &smd, &dmd, co, 3, 1, 1, 1, 1, &err), &err);
    must(eng_tensor_alloc(&src, &ctx, &smd, &err), &err);
    must(eng_tensor_alloc(&dsrc, &ctx, &smd, &err), &err);
    must(eng_tensor_alloc(&dst, &ctx, &c.dst_md, &err), &err);
    must(eng_tensor_alloc(&ddst, &ctx, &c.dst_md, &err), &err);
    must(eng_ctx_finish_build(&ctx, &err), &err);
    size_t nw = (size_t)co * ci * 9;
    float *wc = malloc(nw * 4);
    conv_out o = {0};
    o.dw = malloc(nw * 4);
    memcpy(wc, w, nw * 4);
    must(eng_conv_bind(&c, wc, o.dw, &err), &err);
    tu_from_plain(&ctx, &src, x);
    tu_from_plain(&ctx, &ddst, dy);
    must(eng_conv_forward(&c, &ctx, &src, &dst, &err), &err);
    must(eng_conv_backward(&c, &ctx, &src, &ddst, &dsrc, &err), &err);
    dnnl_stream_wait(ctx.stream);
    o.y = tu_to_plain(&ctx, &dst);
    o.dx = tu_to_plain(&ctx, &dsrc);
    o.passes = c.wino_passes;
    free(wc);
    eng_tensor_free(&src), eng_tensor_free(&dst), eng_tensor_free(&dsrc), eng_tensor_free(&ddst);
    eng_conv_free(&c);
    eng_ctx_free(&ctx);
    return o;
}
static void out_free(conv_out *o) { free(o->y), free(o->dx), free(o->dw); }

/* eng_conv with Winograd on against BARLOWD_WINOGRAD=0 (oneDNN direct) and the reference. */
static void conv_ab(int nn, int ci, int co, int h, int w) {
    size_t nx = (size_t)nn * ci * h * w, ny = (size_t)nn * co * h * w, nw = (size_t)co * ci * 9;
    float *x = malloc(nx * 4), *wt = malloc(nw * 4), *dy = malloc(ny * 4);
    tu_randn(x, nx, 21, 1.0);
    tu_randn(wt, nw, 22, 0.3);
    tu_randn(dy, ny, 23, 1.0);
    ref3 r = reference(x, wt, dy, nn, ci, co, h, w);
    setenv("BARLOWD_WINOGRAD", "fdw", 1); /* every pass, whatever the default for the size */
    conv_out on = run_conv(x, wt, dy, nn, ci, co, h, w);
    setenv("BARLOWD_WINOGRAD", "0", 1);
    conv_out off = run_conv(x, wt, dy, nn, ci, co, h, w);
    unsetenv("BARLOWD_WINOGRAD");
    cr_expect(off.passes == 0, "BARLOWD_WINOGRAD=0 still used Winograd (%d)", off.passes);
    if (eng_wino_available())
        cr_expect(on.passes == (ENG_WINO_FWD | ENG_WINO_BWD_DATA | ENG_WINO_BWD_WEI),
                  "Winograd not used for %dx%d %d->%d (passes %d)", h, w, ci, co, on.passes);
    else {
        tu_coverage("winograd unavailable here: eng_conv %dx%d %d->%d stays on oneDNN", h, w, ci, co);
        cr_expect(on.passes == 0, "Winograd used although unavailable");
    }
    const float *want[3] = {r.y, r.dx, r.dw}, *a[3] = {on.y, on.dx, on.dw}, *b[3] = {off.y, off.dx, off.dw};
    size_t len[3] = {ny, nx, nw};
    const char *name[3] = {"forward", "backward-data", "backward-weights"};
    for (int i = 0; i < 3; i++) {
        double e_ref = tu_rel_l2(a[i], want[i], len[i]), e_dnnl = tu_rel_l2(a[i], b[i], len[i]);
        double e_off = tu_rel_l2(b[i], want[i], len[i]);
        cr_expect(e_ref < TOL, "%s %dx%d %d->%d n%d vs reference: %g", name[i], h, w, ci, co, nn, e_ref);
        cr_expect(e_dnnl < TOL, "%s %dx%d %d->%d n%d vs oneDNN: %g", name[i], h, w, ci, co, nn, e_dnnl);
        cr_expect(e_off < TOL, "%s oneDNN vs reference: %g", name[i], e_off);
    }
    out_free(&on), out_free(&off);
    ref_free(&r);
    free(x), free(wt), free(dy);
}

Test(winograd, conv_8ch_4x4_batch1_matches_onednn) { conv_ab(1, 8, 8, 4, 4); }
Test(winograd, conv_16ch_5x5_batch2_matches_onednn) { conv_ab(2, 16, 16, 5, 5); }
Test(winograd, conv_32ch_32x32_batch2_matches_onednn) { conv_ab(2, 32, 32, 32, 32); }
Test(winograd, conv_64_to_32_8x8_batch3_matches_onednn) { conv_ab(3, 64, 32, 8, 8); }

/* The default (no variable): from 64 channels up, all passes; below, none (measured). */
Test(winograd, default_uses_it_from_64_channels) {
    unsetenv("BARLOWD_WINOGRAD");
    size_t nx = 2 * 64 * 25, nw = 64 * 64 * 9;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *dy = malloc(nx * 4);
    tu_randn(x, nx, 1, 1.0), tu_randn(w, nw, 2, 0.3), tu_randn(dy, nx, 3, 1.0);
    conv_out big = run_conv(x, w, dy, 2, 64, 64, 5, 5), small = run_conv(x, w, dy, 2, 32, 32, 5, 5);
    cr_expect(small.passes == 0, "default used Winograd at 32 channels (%d)", small.passes);
    if (eng_wino_available())
        cr_expect(big.passes == 7, "default did not use Winograd at 64 channels (%d)", big.passes);
    else
        cr_expect(big.passes == 0, "Winograd used although unavailable");
    out_free(&big), out_free(&small);
    free(x), free(w), free(dy);
}

/* Below AVX2 (the project's cap) eng_conv keeps oneDNN's path. */
Test(winograd, sse41_cap_gives_the_onednn_path) {
    setenv("BARLOWD_MAX_ISA", "SSE41", 1);
    setenv("BARLOWD_WINOGRAD", "fdw", 1);
    cr_expect(!eng_wino_available(), "kernel offered under BARLOWD_MAX_ISA=SSE41");
    float x[2 * 8 * 16], w[8 * 8 * 9], dy[2 * 8 * 16];
    tu_randn(x, 2 * 8 * 16, 1, 1.0), tu_randn(w, 8 * 8 * 9, 2, 0.3), tu_randn(dy, 2 * 8 * 16, 3, 1.0);
    conv_out o = run_conv(x, w, dy, 2, 8, 8, 4, 4);
    cr_expect(o.passes == 0, "Winograd used under BARLOWD_MAX_ISA=SSE41");
    out_free(&o);
    unsetenv("BARLOWD_MAX_ISA");
}
