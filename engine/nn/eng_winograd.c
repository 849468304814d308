/* eng_winograd.c — Winograd F(2x2, 3x3) convolution on nChw8c floats for AVX2 machines (see
 * eng_winograd.h). Matrices (Lavin & Gray 2015): Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 * G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1], Aᵀ = [1 1 1 0; 0 1 -1 -1]. Tile t covers output rows
 * 2ty..2ty+1 and columns 2tx..2tx+1, reading input rows 2ty-1..2ty+2 (zeros outside). */
#include "eng_winograd.h"

#include <assert.h>
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "eng_isa.h"

int eng_wino_available(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
    eng_isa cap = eng_isa_cap();
    if (cap == ENG_ISA_AVX2) return 1;
    if (cap < ENG_ISA_AVX2) return 0;
    /* above AVX2: oneDNN's AVX-512 Winograd and direct kernels are there, keep them */
    return !__builtin_cpu_supports("avx512f");
}

int eng_wino_shape_ok(int cin, int cout, int k, int stride, int pad) {
    return k == 3 && stride == 1 && pad == 1 && cin > 0 && cout > 0 && cin % 8 == 0 &&
           cout % 8 == 0;
}

static float *alloc_floats(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float))) return NULL;
    return p;
}

int eng_wino_init(eng_wino *g, int n, int cin, int cout, int h, int w, eng_err *err) {
    assert(eng_wino_shape_ok(cin, cout, 3, 1, 1) && n > 0 && h > 0 && w > 0);
    memset(g, 0, sizeof *g);
    g->n = n, g->cin = cin, g->cout = cout, g->h = h, g->w = w;
    g->th = (h + 1) / 2, g->tw = (w + 1) / 2;
    g->tiles = (long)n * g->th * g->tw;
    int cmax = cin > cout ? cin : cout;
    /* V and M blocks of one thread, 16 * tb * cmax floats each, in about 384 KB of L2 */
    int tb = (384 * 1024) / (16 * 2 * 4 * cmax);
    g->tb = tb < 16 ? 16 : tb > 128 ? 128 : tb;
    g->nthr = omp_get_max_threads();
    g->per_thr = (size_t)16 * g->tb * cmax * 2;
    size_t usz = (size_t)16 * cin * cout;
    g->u_fwd = alloc_floats(usz);
    g->u_bwd = alloc_floats(usz);
    g->du = alloc_floats(usz * g->nthr);
    g->scratch = alloc_floats(g->per_thr * g->nthr);
    if (!g->u_fwd || !g->u_bwd || !g->du || !g->scratch) {
        eng_wino_free(g);
        return eng_fail_code(err, ERR_NO_MEMORY, "winograd: out of memory for %d->%d %dx%d", cin,
                             cout, h, w);
    }
    memset(g->u_fwd, 0, usz * sizeof(float));
    memset(g->u_bwd, 0, usz * sizeof(float));
    return 0;
}

void eng_wino_free(eng_wino *g) {
    free(g->u_fwd);
    free(g->u_bwd);
    free(g->du);
    free(g->scratch);
    memset(g, 0, sizeof *g);
}

/* u[4][4] = G k Gᵀ for one 3x3 kernel k (row-major). */
static void wtrans(const float *k, float u[16]) {
    float t[4][3];
    for (int j = 0; j < 3; j++) {
        float a = k[j], b = k[3 + j], c = k[6 + j];
        t[0][j] = a, t[1][j] = 0.5f * (a + b + c), t[2][j] = 0.5f * (a - b + c), t[3][j] = c;
    }
    for (int i = 0; i < 4; i++) {
        float a = t[i][0], b = t[i][1], c = t[i][2];
        u[i * 4 + 0] = a, u[i * 4 + 1] = 0.5f * (a + b + c), u[i * 4 + 2] = 0.5f * (a - b + c);
        u[i * 4 + 3] = c;
    }
}

void eng_wino_set_weights(eng_wino *g, const float *w, int fwd, int bwd) {
    int ci_n = g->cin, co_n = g->cout;
    for (int co = 0; co < co_n; co++)
        for (int ci = 0; ci < ci_n; ci++) {
            const float *k = w + ((size_t)co * ci_n + ci) * 9;
            float flip[9], u[16];
            for (int i = 0; i < 9; i++) flip[i] = k[8 - i];
            if (fwd) {
                wtrans(k, u);
                for (int x = 0; x < 16; x++) g->u_fwd[((size_t)x * ci_n + ci) * co_n + co] = u[x];
            }
            if (bwd) {
                wtrans(flip, u);
                for (int x = 0; x < 16; x++) g->u_bwd[((size_t)x * co_n + co) * ci_n + ci] = u[x];
            }
        }
}

/* Input transform of one tile and channel block: v[ξ * ld] = (Bᵀ d B)_ξ, 8 channels each.
 * base: the block's plane [h][w][8]; (y0, x0) the tile's top-left input pixel (may be -1). */
__attribute__((target("avx2,fma"))) static void in_tile(const float *base, int h, int w, int y0,
                                                         int x0, float *v, size_t ld) {
    __m256 d[4][4], t[4][4];
    for (int i = 0; i < 4; i++) {
        int y = y0 + i;
        for (int j = 0; j < 4; j++) {
            int x = x0 + j;
            d[i][j] = (y >= 0 && y < h && x >= 0 && x < w)
                          ? _mm256_load_ps(base + ((size_t)y * w + x) * 8)
                          : _mm256_setzero_ps();
        }
    }
    for (int j = 0; j < 4; j++) {
        t[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
        t[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
        t[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
        t[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_store_ps(v + (i * 4 + 0) * ld, _mm256_sub_ps(t[i][0], t[i][2]));
        _mm256_store_ps(v + (i * 4 + 1) * ld, _mm256_add_ps(t[i][1], t[i][2]));
        _mm256_store_ps(v + (i * 4 + 2) * ld, _mm256_sub_ps(t[i][2], t[i][1]));
        _mm256_store_ps(v + (i * 4 + 3) * ld, _mm256_sub_ps(t[i][1], t[i][3]));
    }
}

/* Output transform: the 2x2 pixels (Aᵀ m A) of one tile and channel block, clipped to h x w. */
__attribute__((target("avx2,fma"))) static void out_tile(const float *m, size_t ld, float *base,
                                                          int h, int w, int y0, int x0) {
    __m256 t[2][4];
    for (int j = 0; j < 4; j++) {
        __m256 m0 = _mm256_load_ps(m + (0 * 4 + j) * ld), m1 = _mm256_load_ps(m + (1 * 4 + j) * ld);
        __m256 m2 = _mm256_load_ps(m + (2 * 4 + j) * ld), m3 = _mm256_load_ps(m + (3 * 4 + j) * ld);
        t[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        t[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    for (int i = 0; i < 2; i++) {
        int y = y0 + i;
        if (y >= h) break;
        __m256 o0 = _mm256_add_ps(_mm256_add_ps(t[i][0], t[i][1]), t[i][2]);
        __m256 o1 = _mm256_sub_ps(_mm256_sub_ps(t[i][1], t[i][2]), t[i][3]);
        _mm256_store_ps(base + ((size_t)y * w + x0) * 8, o0);
        if (x0 + 1 < w) _mm256_store_ps(base + ((size_t)y * w + x0 + 1) * 8, o1);
    }
}

/* Gradient of the output transform: m[ξ * ld] = (A g Aᵀ)_ξ for the tile's 2x2 output gradient
 * g (zeros outside h x w). */
__attribute__((target("avx2,fma"))) static void dout_tile(const float *base, int h, int w,
                                                           int y0, int x0, float *m, size_t ld) {
    __m256 g[2][2], t[4][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            g[i][j] = (y0 + i < h && x0 + j < w)
                          ? _mm256_load_ps(base + ((size_t)(y0 + i) * w + x0 + j) * 8)
                          : _mm256_setzero_ps();
    for (int j = 0; j < 2; j++) {
        t[0][j] = g[0][j];
        t[1][j] = _mm256_add_ps(g[0][j], g[1][j]);
        t[2][j] = _mm256_sub_ps(g[0][j], g[1][j]);
        t[3][j] = _mm256_sub_ps(_mm256_setzero_ps(), g[1][j]);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_store_ps(m + (i * 4 + 0) * ld, t[i][0]);
        _mm256_store_ps(m + (i * 4 + 1) * ld, _mm256_add_ps(t[i][0], t[i][1]));
        _mm256_store_ps(m + (i * 4 + 2) * ld, _mm256_sub_ps(t[i][0], t[i][1]));
        _mm256_store_ps(m + (i * 4 + 3) * ld, _mm256_sub_ps(_mm256_setzero_ps(), t[i][1]));
    }
}

static void sgemm(char ta, long m, long n, long k, const float *a, long lda, const float *b,
                  long ldb, float beta, float *c, long ldc) {
    dnnl_status_t st = dnnl_sgemm(ta, 'N', m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    assert(st == dnnl_success);
    (void)st;
}

/* Decodes a tile index into image and tile coordinates. */
static void tile_at(const eng_wino *g, long t, int *n, int *ty, int *tx) {
    long per_img = (long)g->th * g->tw;
    *n = (int)(t / per_img);
    long r = t % per_img;
    *ty = (int)(r / g->tw);
    *tx = (int)(r % g->tw);
}

/* The input transforms of the block's tiles t0..t0+nt-1 (ci channels of src) into v
 * [16][tb][ci]. */
static void in_block(const eng_wino *g, const float *src, int ci, long t0, int nt, float *v) {
    const size_t plane = (size_t)g->h * g->w * 8;
    for (int i = 0; i < nt; i++) {
        int n, ty, tx;
        tile_at(g, t0 + i, &n, &ty, &tx);
        for (int cb = 0; cb < ci / 8; cb++)
            in_tile(src + ((size_t)n * (ci / 8) + cb) * plane, g->h, g->w, 2 * ty - 1, 2 * tx - 1,
                    v + (size_t)i * ci + cb * 8, (size_t)g->tb * ci);
    }
}

/* dst (co channels) = conv(src (ci channels)) with transformed weights u [16][ci][co]. */
static void wino_conv(const eng_wino *g, const float *src, int ci, float *dst, int co,
                      const float *u) {
    const int h = g->h, w = g->w, tb = g->tb, cbo = co / 8;
    const size_t plane = (size_t)h * w * 8;
    const long nblk = (g->tiles + tb - 1) / tb;
#pragma omp parallel num_threads(g->nthr)
    {
        float *v = g->scratch + g->per_thr * (size_t)omp_get_thread_num();
        float *m = v + (size_t)16 * tb * ci;
#pragma omp for schedule(static)
        for (long b = 0; b < nblk; b++) {
            long t0 = b * tb;
            int nt = (int)(g->tiles - t0 < tb ? g->tiles - t0 : tb);
            in_block(g, src, ci, t0, nt, v);
            for (int x = 0; x < 16; x++)
                sgemm('N', nt, co, ci, v + (size_t)x * tb * ci, ci, u + (size_t)x * ci * co, co,
                      0.0f, m + (size_t)x * tb * co, co);
            for (int i = 0; i < nt; i++) {
                int n, ty, tx;
                tile_at(g, t0 + i, &n, &ty, &tx);
                for (int cb = 0; cb < cbo; cb++)
                    out_tile(m + (size_t)i * co + cb * 8, (size_t)tb * co,
                             dst + ((size_t)n * cbo + cb) * plane, h, w, 2 * ty, 2 * tx);
            }
        }
    }
}

void eng_wino_forward(const eng_wino *g, const float *src, float *dst) {
    wino_conv(g, src, g->cin, dst, g->cout, g->u_fwd);
}

void eng_wino_backward_data(const eng_wino *g, const float *ddst, float *dsrc) {
    wino_conv(g, ddst, g->cout, dsrc, g->cin, g->u_bwd);
}

void eng_wino_backward_weights(eng_wino *g, const float *src, const float *ddst, float *dw) {
    const int h = g->h, w = g->w, tb = g->tb, ci = g->cin, co = g->cout;
    const int cbo = co / 8;
    const size_t plane = (size_t)h * w * 8, usz = (size_t)16 * ci * co;
    const long nblk = (g->tiles + tb - 1) / tb;
    int used = 1;
#pragma omp parallel num_threads(g->nthr)
    {
        int me = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        float *v = g->scratch + g->per_thr * (size_t)me;
        float *m = v + (size_t)16 * tb * ci;
        float *du = g->du + usz * me;
        memset(du, 0, usz * sizeof(float));
#pragma omp for schedule(static)
        for (long b = 0; b < nblk; b++) {
            long t0 = b * tb;
            int nt = (int)(g->tiles - t0 < tb ? g->tiles - t0 : tb);
            in_block(g, src, ci, t0, nt, v);
            for (int i = 0; i < nt; i++) {
                int n, ty, tx;
                tile_at(g, t0 + i, &n, &ty, &tx);
                for (int cb = 0; cb < cbo; cb++)
                    dout_tile(ddst + ((size_t)n * cbo + cb) * plane, h, w, 2 * ty, 2 * tx,
                              m + (size_t)i * co + cb * 8, (size_t)tb * co);
            }
            for (int x = 0; x < 16; x++)
                sgemm('T', ci, co, nt, v + (size_t)x * tb * ci, ci, m + (size_t)x * tb * co, co,
                      1.0f, du + (size_t)x * ci * co, co);
        }
    }
    /* reduce the partials into thread 0's, then dW = Gᵀ dU G per (co, ci) */
    for (int t = 1; t < used; t++)
        for (size_t i = 0; i < usz; i++) g->du[i] += g->du[usz * t + i];
#pragma omp parallel for num_threads(g->nthr) schedule(static)
    for (int o = 0; o < co; o++)
        for (int c = 0; c < ci; c++) {
            float a[16], r[3][4];
            for (int x = 0; x < 16; x++) a[x] = g->du[((size_t)x * ci + c) * co + o];
            for (int j = 0; j < 4; j++) {
                float a0 = a[j], a1 = a[4 + j], a2 = a[8 + j], a3 = a[12 + j];
                r[0][j] = a0 + 0.5f * (a1 + a2);
                r[1][j] = 0.5f * (a1 - a2);
                r[2][j] = 0.5f * (a1 + a2) + a3;
            }
            float *k = dw + ((size_t)o * ci + c) * 9;
            for (int i = 0; i < 3; i++) {
                float a0 = r[i][0], a1 = r[i][1], a2 = r[i][2], a3 = r[i][3];
                k[i * 3 + 0] = a0 + 0.5f * (a1 + a2);
                k[i * 3 + 1] = 0.5f * (a1 - a2);
                k[i * 3 + 2] = 0.5f * (a1 + a2) + a3;
            }
        }
}
