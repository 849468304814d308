/* index_exact.c — the exact back end: float dot-product kernels (AVX-512, AVX2+FMA, scalar) over
 * every row, and batches of queries scored block by block with one GEMM (oneDNN's sgemm). */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "index_internal.h"

#define ROW_BLOCK 4096 /* rows per score block in batch search */

/* ---------------------------------------------------------------------------------------------
 * Dot-product kernels. n is a multiple of 16 and both pointers are 64-byte aligned. */

static float dot_scalar(const float *a, const float *b, size_t n) {
    float s[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b,
                                                          size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_load_ps(a + i), _mm256_load_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_load_ps(a + i + 8), _mm256_load_ps(b + i + 8), s1);
    }
    __m256 s = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b,
                                                           size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_load_ps(a + i), _mm512_load_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_load_ps(a + i + 16), _mm512_load_ps(b + i + 16), s1);
    }
    if (i < n) s0 = _mm512_fmadd_ps(_mm512_load_ps(a + i), _mm512_load_ps(b + i), s0);
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* ---------------------------------------------------------------------------------------------
 * The back end. */

int eng_index_use_kernel(eng_index *ix, const char *name) {
    __builtin_cpu_init();
    if (!strcmp(name, "avx512") && __builtin_cpu_supports("avx512f")) {
        ix->dot = dot_avx512;
    } else if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma")) {
        ix->dot = dot_avx2;
    } else if (!strcmp(name, "scalar")) {
        ix->dot = dot_scalar;
    } else {
        return -1;
    }
    ix->kernel = !strcmp(name, "avx512") ? "avx512" : !strcmp(name, "avx2") ? "avx2" : "scalar";
    return 0;
}

static void exact_init(eng_index *ix) {
    if (eng_index_use_kernel(ix, "avx512") && eng_index_use_kernel(ix, "avx2"))
        eng_index_use_kernel(ix, "scalar");
}

/* Scans rows [from, to) for one unit query into t. */
static void scan(const eng_index *ix, const float *q, size_t from, size_t to, int64_t exclude,
                 topk *t) {
    const float *row = ix->rows + from * ix->stride;
    for (size_t r = from; r < to; r++, row += ix->stride) {
        float s = ix->dot(q, row, ix->stride);
        if (ix->ids[r] != exclude) index_topk_offer(t, s, ix->ids[r]);
    }
}

/* The same over the rows whose id is in allow only. A dense set (a quarter of the rows or more)
 * is scanned like no set at all, the set tested only before a row is offered: reading every row
 * in order is as fast as reading most of them out of order. A sparse one is walked 64 rows at a
 * time: the block's allowed rows become a bit mask (no branch per row), and only those rows are
 * read, so a filter matching 1% of the rows reads 1% of them. */
static void scan_allowed(const eng_index *ix, const float *q, size_t from, size_t to,
                         int64_t exclude, const eng_idset *allow, topk *t) {
    if (4 * eng_idset_count(allow) >= (int64_t)(to - from)) {
        const float *row = ix->rows + from * ix->stride;
        for (size_t r = from; r < to; r++, row += ix->stride) {
            float s = ix->dot(q, row, ix->stride);
            if (t->n == t->k && s < t->h[0].score) continue; /* below the k-th: the set can wait */
            int64_t id = ix->ids[r];
            if (id != exclude && eng_idset_has(allow, id)) index_topk_offer(t, s, id);
        }
        return;
    }
    for (size_t b = from; b < to; b += 64) {
        size_t nb = to - b < 64 ? to - b : 64;
        uint64_t mask = 0;
        for (size_t i = 0; i < nb; i++)
            mask |= (uint64_t)eng_idset_has(allow, ix->ids[b + i]) << i;
        while (mask) {
            size_t r = b + (size_t)__builtin_ctzll(mask);
            mask &= mask - 1;
            int64_t id = ix->ids[r];
            if (id != exclude)
                index_topk_offer(t, ix->dot(q, ix->rows + r * ix->stride, ix->stride), id);
        }
    }
}

static int exact_search(const eng_index *ix, const float *q, const eng_search_opts *o, topk *t,
                        eng_err *err) {
    if (o->allow)
        scan_allowed(ix, q, 0, ix->n, o->exclude, o->allow, t);
    else
        scan(ix, q, 0, ix->n, o->exclude, t);
    return 0;
}

const index_backend index_exact = {
    .pass = ENG_INDEX_EXACT, .name = "exact", .init = exact_init, .search = exact_search,
};

/* ---------------------------------------------------------------------------------------------
 * Batches (exact only). */

int eng_index_search_batch(const eng_index *ix, const float *queries, int nq, int k,
                           const eng_idset *allow, eng_hit *out, int *n_out, eng_err *err) {
    if (k < 1) return eng_fail_code(err, ERR_BAD_INPUT, "index: k must be at least 1 (got %d)", k);
    if (nq < 0) return eng_fail_code(err, ERR_BAD_INPUT, "index: negative query count");
    float *q = aligned_alloc(64, ((size_t)nq * ix->stride + 16) * sizeof(float));
    topk *t = calloc((size_t)nq + 1, sizeof *t);
    if (!q || !t) {
        free(q);
        free(t);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for %d queries", nq);
    }
    for (int i = 0; i < nq; i++) {
        if (index_normalise(ix, queries + (size_t)i * ix->dim, q + (size_t)i * ix->stride, err)) {
            free(q);
            free(t);
            return -1;
        }
        t[i] = (topk){out + (size_t)i * k, 0, k};
    }
    /* Scores of a chunk of queries against a block of rows are one GEMM (oneDNN's sgemm, both
     * cores), then each query's heap takes its row of scores (parallel over queries). */
    size_t block = ROW_BLOCK, qchunk = 256;
    float *scores = aligned_alloc(64, qchunk * block * sizeof(float));
    if (!scores) {
        free(q);
        free(t);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for the score block");
    }
    for (size_t q0 = 0; q0 < (size_t)nq; q0 += qchunk) {
        size_t nqc = (size_t)nq - q0 < qchunk ? (size_t)nq - q0 : qchunk;
        for (size_t from = 0; from < ix->n; from += block) {
            size_t nr = ix->n - from < block ? ix->n - from : block;
            dnnl_status_t st = dnnl_sgemm('N', 'T', (dnnl_dim_t)nqc, (dnnl_dim_t)nr,
                                          (dnnl_dim_t)ix->stride, 1.0f, q + q0 * ix->stride,
                                          (dnnl_dim_t)ix->stride, ix->rows + from * ix->stride,
                                          (dnnl_dim_t)ix->stride, 0.0f, scores, (dnnl_dim_t)nr);
            if (st != dnnl_success) {
                free(scores);
                free(q);
                free(t);
                return eng_fail(err, "index: oneDNN sgemm failed (status %d)", (int)st);
            }
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nqc; i++)
                for (size_t r = 0; r < nr; r++)
                    if (!allow || eng_idset_has(allow, ix->ids[from + r]))
                        index_topk_offer(&t[q0 + i], scores[i * nr + r], ix->ids[from + r]);
        }
    }
    free(scores);
    for (int i = 0; i < nq; i++) {
        index_topk_sort(&t[i]);
        n_out[i] = t[i].n;
    }
    free(q);
    free(t);
    return 0;
}

