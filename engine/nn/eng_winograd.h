/* eng_winograd.h — our own Winograd F(2x2, 3x3) convolution for AVX2 machines, where oneDNN 2.6
 * has only its direct kernels: 3x3, stride 1, pad 1, no bias, float tensors in nChw8c (aBcd8b)
 * with both channel counts multiples of 8. Forward, backward-data (the same algorithm on the
 * weights flipped 180° with in/out channels swapped) and backward-weights.
 *
 * The input/output transforms are AVX2/FMA across the 8 channels of a block; the 16 transformed
 * products are dnnl_sgemm calls made inside OpenMP threads (oneDNN then runs them sequentially),
 * each on a block of tiles sized to stay in L2. */
#ifndef ENG_WINOGRAD_H
#define ENG_WINOGRAD_H

#include <stddef.h>

#include "eng_err.h"

typedef struct eng_wino {
    int n, cin, cout, h, w;   /* batch, channels, spatial size (output size = input size) */
    int th, tw;               /* tiles per column/row: ceil(h/2), ceil(w/2) */
    long tiles;               /* n * th * tw */
    int tb;                   /* tiles per GEMM block */
    int nthr;                 /* OpenMP threads the buffers are sized for */
    float *u_fwd;             /* owned: [16][cin][cout] transformed weights for forward */
    float *u_bwd;             /* owned: [16][cout][cin] transformed flipped weights (bwd data) */
    float *du;                /* owned: [nthr][16][cin][cout] per-thread weight-gradient partials */
    float *scratch;           /* owned: [nthr][per_thr] tile blocks, V then M */
    size_t per_thr;           /* floats of scratch per thread */
} eng_wino;

/* 1 when this process may use the kernel: the project's ISA cap (eng_isa_cap) is exactly the
 * AVX2 level, or the cap is above it and the CPU lacks AVX-512 (so oneDNN has no Winograd);
 * and the CPU has avx2 and fma. Reads the environment each call. */
int eng_wino_available(void);

/* 1 when a layer of this shape is supported (k 3, stride 1, pad 1, channels multiples of 8). */
int eng_wino_shape_ok(int cin, int cout, int k, int stride, int pad);

/* Allocates the buffers. Precondition: eng_wino_shape_ok. On error *g is empty. */
int eng_wino_init(eng_wino *g, int n, int cin, int cout, int h, int w, eng_err *err);

/* Transforms canonical OIHW weights [cout][cin][3][3] into u_fwd (when fwd) and u_bwd (when bwd). */
void eng_wino_set_weights(eng_wino *g, const float *w_oihw, int fwd, int bwd);

/* dst[n][cout/8][h][w][8] = conv(src[n][cin/8][h][w][8], weights of the last set_weights). */
void eng_wino_forward(const eng_wino *g, const float *src, float *dst);
/* dsrc (cin channels) from ddst (cout channels). */
void eng_wino_backward_data(const eng_wino *g, const float *ddst, float *dsrc);
/* Overwrites dw_oihw [cout][cin][3][3] with the weight gradient. */
void eng_wino_backward_weights(eng_wino *g, const float *src, const float *ddst, float *dw_oihw);

void eng_wino_free(eng_wino *g);

#endif
