/* index_int8.c — the int8 back end: a per-row int8 copy of every vector (kept in step through the
 * core's hooks), integer dot-product kernels (AVX-512 VNNI, AVX-512BW, AVX2, scalar), and a first
 * pass over them whose best candidates are re-scored with the float kernel. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_isa.h"
#include "index_internal.h"

#define FAST_BLOCK 1024 /* rows per int8 score block in the first pass */

/* ---------------------------------------------------------------------------------------------
 * int8 dot-product kernels (see eng_dot8_fn). stride is a multiple of 64 and the pointers are
 * 64-byte aligned. All four return the same exact integers: |Σ| ≤ 127·127·65536 < 2^31, and the
 * VNNI kernel's offset sum Σ(q+128)·r ≤ 255·127·65536 < 2^31 too. */

static void dot8_scalar(const int8_t *q, const int8_t *rows, const int32_t *rsum, size_t stride,
                        size_t nrows, int32_t *out) {
    (void)rsum;
    for (size_t r = 0; r < nrows; r++, rows += stride) {
        int32_t s = 0;
        for (size_t i = 0; i < stride; i++) s += (int32_t)q[i] * rows[i];
        out[r] = s;
    }
}

/* Sign-extends 16 bytes to 16-bit lanes and multiply-adds pairs into 32-bit lanes. */
__attribute__((target("avx2"))) static void dot8_avx2(const int8_t *q, const int8_t *rows,
                                                      const int32_t *rsum, size_t stride,
                                                      size_t nrows, int32_t *out) {
    (void)rsum;
    for (size_t r = 0; r < nrows; r++, rows += stride) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (size_t i = 0; i < stride; i += 32) {
            __m256i q0 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(const void *)(q + i)));
            __m256i q1 =
                _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(const void *)(q + i + 16)));
            __m256i r0 =
                _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(const void *)(rows + i)));
            __m256i r1 = _mm256_cvtepi8_epi16(
                _mm_load_si128((const __m128i *)(const void *)(rows + i + 16)));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(q0, r0));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(q1, r1));
        }
        __m256i s = _mm256_add_epi32(s0, s1);
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        out[r] = _mm_cvtsi128_si32(h);
    }
}

/* The same with 32 bytes per step in 512-bit registers. */
__attribute__((target("avx512f,avx512bw"))) static void dot8_avx512bw(const int8_t *q,
                                                                      const int8_t *rows,
                                                                      const int32_t *rsum,
                                                                      size_t stride, size_t nrows,
                                                                      int32_t *out) {
    (void)rsum;
    for (size_t r = 0; r < nrows; r++, rows += stride) {
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (size_t i = 0; i < stride; i += 64) {
            __m512i q0 =
                _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(const void *)(q + i)));
            __m512i q1 = _mm512_cvtepi8_epi16(
                _mm256_load_si256((const __m256i *)(const void *)(q + i + 32)));
            __m512i r0 =
                _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(const void *)(rows + i)));
            __m512i r1 = _mm512_cvtepi8_epi16(
                _mm256_load_si256((const __m256i *)(const void *)(rows + i + 32)));
            s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(q0, r0));
            s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(q1, r1));
        }
        out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
    }
}

/* vpdpbusd multiplies unsigned by signed bytes, 64 per instruction: the query is offset to
 * unsigned (q + 128, an XOR of the sign bit), and 128·Σr is taken off afterwards. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void dot8_vnni(
    const int8_t *q, const int8_t *rows, const int32_t *rsum, size_t stride, size_t nrows,
    int32_t *out) {
    const __m512i off = _mm512_set1_epi8((char)0x80);
    size_t r = 0;
    for (; r + 2 <= nrows; r += 2, rows += 2 * stride) { /* two rows share each query load */
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (size_t i = 0; i < stride; i += 64) {
            __m512i qu = _mm512_xor_si512(_mm512_load_si512((const void *)(q + i)), off);
            s0 = _mm512_dpbusd_epi32(s0, qu, _mm512_load_si512((const void *)(rows + i)));
            s1 = _mm512_dpbusd_epi32(s1, qu, _mm512_load_si512((const void *)(rows + stride + i)));
        }
        out[r] = (int32_t)((uint32_t)_mm512_reduce_add_epi32(s0) - 128u * (uint32_t)rsum[r]);
        out[r + 1] =
            (int32_t)((uint32_t)_mm512_reduce_add_epi32(s1) - 128u * (uint32_t)rsum[r + 1]);
    }
    if (r < nrows) {
        __m512i s0 = _mm512_setzero_si512();
        for (size_t i = 0; i < stride; i += 64) {
            __m512i qu = _mm512_xor_si512(_mm512_load_si512((const void *)(q + i)), off);
            s0 = _mm512_dpbusd_epi32(s0, qu, _mm512_load_si512((const void *)(rows + i)));
        }
        out[r] = (int32_t)((uint32_t)_mm512_reduce_add_epi32(s0) - 128u * (uint32_t)rsum[r]);
    }
}

/* Quantises dim floats symmetrically to int8 (max |x| ↦ 127) into dst (stride8 bytes, zero
 * padded); stores Σ dst in *sum and returns the dequantisation scale max|x| / 127 (0 for an
 * all-zero x). */
static float quantise(const float *x, int dim, size_t stride8, int8_t *dst, int32_t *sum) {
    float m = 0.0f;
    for (int i = 0; i < dim; i++) m = fmaxf(m, fabsf(x[i]));
    int32_t total = 0;
    memset(dst, 0, stride8);
    if (m > 0.0f) {
        float s = 127.0f / m;
        for (int i = 0; i < dim; i++) {
            long v = lrintf(x[i] * s);
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            dst[i] = (int8_t)v;
            total += (int32_t)v;
        }
    }
    *sum = total;
    return m / 127.0f;
}

/* ---------------------------------------------------------------------------------------------
 * The back end. */

/* As for the float kernels: offered when the CPU has the instructions and the ISA cap
 * (eng_isa.h) allows them. */
int eng_index_use_kernel8(eng_index *ix, const char *name) {
    __builtin_cpu_init();
    eng_isa cap = eng_isa_cap();
    int has512 = cap >= ENG_ISA_AVX512_CORE && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512bw");
    if (!strcmp(name, "vnni") && has512 && cap >= ENG_ISA_AVX512_CORE_VNNI &&
        __builtin_cpu_supports("avx512vnni")) {
        ix->dot8 = dot8_vnni;
        ix->kernel8 = "vnni";
    } else if (!strcmp(name, "avx512bw") && has512) {
        ix->dot8 = dot8_avx512bw;
        ix->kernel8 = "avx512bw";
    } else if (!strcmp(name, "avx2") && cap >= ENG_ISA_AVX2 && __builtin_cpu_supports("avx2")) {
        ix->dot8 = dot8_avx2;
        ix->kernel8 = "avx2";
    } else if (!strcmp(name, "scalar")) {
        ix->dot8 = dot8_scalar;
        ix->kernel8 = "scalar";
    } else {
        return -1;
    }
    return 0;
}

static void int8_init(eng_index *ix) {
    ix->stride8 = ((size_t)ix->dim + 63) / 64 * 64;
    if (eng_index_use_kernel8(ix, "vnni") && eng_index_use_kernel8(ix, "avx512bw") &&
        eng_index_use_kernel8(ix, "avx2"))
        eng_index_use_kernel8(ix, "scalar");
}

static int int8_grow(eng_index *ix, size_t cap, eng_err *err) {
    int8_t *rows8 = aligned_alloc(64, cap * ix->stride8);
    float *scale8 = malloc(cap * sizeof *scale8);
    int32_t *rsum8 = malloc(cap * sizeof *rsum8);
    if (!rows8 || !scale8 || !rsum8) {
        free(rows8);
        free(scale8);
        free(rsum8);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for %zu int8 rows", cap);
    }
    if (ix->n) {
        memcpy(rows8, ix->rows8, ix->n * ix->stride8);
        memcpy(scale8, ix->scale8, ix->n * sizeof *scale8);
        memcpy(rsum8, ix->rsum8, ix->n * sizeof *rsum8);
    }
    free(ix->rows8);
    free(ix->scale8);
    free(ix->rsum8);
    ix->rows8 = rows8;
    ix->scale8 = scale8;
    ix->rsum8 = rsum8;
    return 0;
}

/* Refreshes the int8 copy of row r from its float row. */
static void int8_row_set(eng_index *ix, size_t r) {
    ix->scale8[r] = quantise(ix->rows + r * ix->stride, ix->dim, ix->stride8,
                             ix->rows8 + r * ix->stride8, &ix->rsum8[r]);
}

static void int8_row_move(eng_index *ix, size_t dst, size_t src) {
    memcpy(ix->rows8 + dst * ix->stride8, ix->rows8 + src * ix->stride8, ix->stride8);
    ix->scale8[dst] = ix->scale8[src];
    ix->rsum8[dst] = ix->rsum8[src];
}

static void int8_release(eng_index *ix) {
    free(ix->rows8);
    free(ix->scale8);
    free(ix->rsum8);
    ix->rows8 = NULL;
    ix->scale8 = NULL;
    ix->rsum8 = NULL;
}

static int int8_search(const eng_index *ix, const float *q, const eng_search_opts *o, topk *t,
                       eng_err *err) {
    int k = t->k, rerank = o->rerank; /* >= 0: checked by the core */
    if (rerank == 0) rerank = ENG_INDEX_RERANK_FACTOR;
    size_t r_cand = (size_t)rerank * (size_t)k;
    if (r_cand < (size_t)k + ENG_INDEX_RERANK_MARGIN) r_cand = (size_t)k + ENG_INDEX_RERANK_MARGIN;
    if (r_cand > ix->n) r_cand = ix->n ? ix->n : 1;
    /* one allocation: int8 query | int32 block scores | candidates */
    size_t q8 = ix->stride8, sc = FAST_BLOCK * sizeof(int32_t);
    size_t bytes = q8 + sc + r_cand * sizeof(eng_hit);
    bytes = (bytes + 63) / 64 * 64;
    char *mem = aligned_alloc(64, bytes);
    if (!mem)
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for %zu candidates",
                             r_cand);
    int8_t *qi = (int8_t *)mem;
    int32_t *dots = (int32_t *)(void *)(mem + q8);
    eng_hit *cand = (eng_hit *)(void *)(mem + q8 + sc);
    int32_t qsum;
    quantise(q, ix->dim, ix->stride8, qi, &qsum);
    /* first pass: approximate score = dot8 · row scale (the query's scale is common to all rows,
     * so it is left out); computed the same way whatever the kernel */
    topk c = {cand, 0, (int)r_cand};
    for (size_t from = 0; from < ix->n; from += FAST_BLOCK) {
        size_t nr = ix->n - from < FAST_BLOCK ? ix->n - from : FAST_BLOCK;
        ix->dot8(qi, ix->rows8 + from * ix->stride8, ix->rsum8 + from, ix->stride8, nr, dots);
        for (size_t r = 0; r < nr; r++) {
            int64_t id = ix->ids[from + r];
            if (id != o->exclude && (!o->allow || eng_idset_has(o->allow, id)))
                index_topk_offer(&c, (float)dots[r] * ix->scale8[from + r], id);
        }
    }
    /* second pass: the candidates' exact scores, by the exact back end's kernel */
    for (int i = 0; i < c.n; i++) {
        size_t row = index_row_of(ix, cand[i].id);
        index_topk_offer(t, ix->dot(q, ix->rows + row * ix->stride, ix->stride), cand[i].id);
    }
    free(mem);
    return 0;
}

const index_backend index_int8 = {
    .pass = ENG_INDEX_INT8,
    .name = "int8",
    .init = int8_init,
    .grow = int8_grow,
    .row_set = int8_row_set,
    .row_move = int8_row_move,
    .release = int8_release,
    .search = int8_search,
};
