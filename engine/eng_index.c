/* eng_index.c — exact cosine top-k over a contiguous matrix of unit vectors, and an approximate
 * first pass over an int8 copy of it whose candidates are re-ranked exactly. */
#include "engine/eng_index.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_EMPTY INT64_MIN
#define SLOT_TOMB (INT64_MIN + 1)
#define ROW_BLOCK 4096 /* rows per score block in batch search */
#define FAST_BLOCK 1024 /* rows per int8 score block in the fast first pass */

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
 * Top-k heap: the root is the worst of the best k so far. */

/* 1 if (sa, ia) ranks above (sb, ib): higher score, then lower id. */
static int better(float sa, int64_t ia, float sb, int64_t ib) {
    return sa > sb || (sa == sb && ia < ib);
}

typedef struct topk {
    eng_hit *h; /* heap storage [k] (the caller's output buffer) */
    int n, k;
} topk;

static void topk_offer(topk *t, float score, int64_t id) {
    eng_hit *h = t->h;
    if (t->n < t->k) { /* sift up */
        int i = t->n++;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!better(h[p].score, h[p].id, score, id)) break;
            h[i] = h[p];
            i = p;
        }
        h[i].score = score;
        h[i].id = id;
        return;
    }
    if (!better(score, id, h[0].score, h[0].id)) return;
    int i = 0; /* replace the root, sift down */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        float ws = score;
        int64_t wi = id;
        if (l < t->n && better(ws, wi, h[l].score, h[l].id)) w = l, ws = h[l].score, wi = h[l].id;
        if (r < t->n && better(ws, wi, h[r].score, h[r].id)) w = r;
        if (w == i) break;
        h[i] = h[w];
        i = w;
    }
    h[i].score = score;
    h[i].id = id;
}

static int cmp_hits(const void *a, const void *b) {
    const eng_hit *x = a, *y = b;
    return better(x->score, x->id, y->score, y->id) ? -1 : better(y->score, y->id, x->score, x->id);
}

/* ---------------------------------------------------------------------------------------------
 * Id → row hash map (open addressing with linear probing). */

static size_t hash_id(int64_t id, size_t mask) {
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(x ^ (x >> 29)) & mask;
}

/* Slot holding id, or (size_t)-1. */
static size_t find_slot(const eng_index *ix, int64_t id) {
    size_t mask = ix->n_slots - 1;
    for (size_t i = hash_id(id, mask);; i = (i + 1) & mask) {
        if (ix->slot_id[i] == id) return i;
        if (ix->slot_id[i] == SLOT_EMPTY) return (size_t)-1;
    }
}

static void insert_slot(eng_index *ix, int64_t id, size_t row) {
    size_t mask = ix->n_slots - 1, i = hash_id(id, mask);
    while (ix->slot_id[i] != SLOT_EMPTY && ix->slot_id[i] != SLOT_TOMB) i = (i + 1) & mask;
    if (ix->slot_id[i] == SLOT_TOMB) ix->tombstones--;
    ix->slot_id[i] = id;
    ix->slot_row[i] = row;
}

/* Rebuilds the hash table with n_slots slots from the rows (drops tombstones). */
static int rehash(eng_index *ix, size_t n_slots, eng_err *err) {
    int64_t *sid = malloc(n_slots * sizeof *sid);
    size_t *srow = malloc(n_slots * sizeof *srow);
    if (!sid || !srow) {
        free(sid);
        free(srow);
        return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory for %zu hash slots", n_slots);
    }
    for (size_t i = 0; i < n_slots; i++) sid[i] = SLOT_EMPTY;
    free(ix->slot_id);
    free(ix->slot_row);
    ix->slot_id = sid;
    ix->slot_row = srow;
    ix->n_slots = n_slots;
    ix->tombstones = 0;
    for (size_t r = 0; r < ix->n; r++) insert_slot(ix, ix->ids[r], r);
    return 0;
}

static int grow(eng_index *ix, eng_err *err) {
    size_t cap = ix->cap ? ix->cap * 2 : 1024;
    float *rows = aligned_alloc(64, cap * ix->stride * sizeof(float));
    int64_t *ids = malloc(cap * sizeof *ids);
    int8_t *rows8 = aligned_alloc(64, cap * ix->stride8);
    float *scale8 = malloc(cap * sizeof *scale8);
    int32_t *rsum8 = malloc(cap * sizeof *rsum8);
    if (!rows || !ids || !rows8 || !scale8 || !rsum8) {
        free(rows);
        free(ids);
        free(rows8);
        free(scale8);
        free(rsum8);
        return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory for %zu vectors", cap);
    }
    if (ix->n) {
        memcpy(rows, ix->rows, ix->n * ix->stride * sizeof(float));
        memcpy(ids, ix->ids, ix->n * sizeof *ids);
        memcpy(rows8, ix->rows8, ix->n * ix->stride8);
        memcpy(scale8, ix->scale8, ix->n * sizeof *scale8);
        memcpy(rsum8, ix->rsum8, ix->n * sizeof *rsum8);
    }
    free(ix->rows);
    free(ix->ids);
    free(ix->rows8);
    free(ix->scale8);
    free(ix->rsum8);
    ix->rows = rows;
    ix->ids = ids;
    ix->rows8 = rows8;
    ix->scale8 = scale8;
    ix->rsum8 = rsum8;
    ix->cap = cap;
    return rehash(ix, cap * 2, err);
}

/* ---------------------------------------------------------------------------------------------
 * Public API. */

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

int eng_index_use_kernel8(eng_index *ix, const char *name) {
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (!strcmp(name, "vnni") && has512 && __builtin_cpu_supports("avx512vnni")) {
        ix->dot8 = dot8_vnni;
        ix->kernel8 = "vnni";
    } else if (!strcmp(name, "avx512bw") && has512) {
        ix->dot8 = dot8_avx512bw;
        ix->kernel8 = "avx512bw";
    } else if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2")) {
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

int eng_index_init(eng_index *ix, int dim, eng_err *err) {
    memset(ix, 0, sizeof *ix);
    if (dim < 1 || dim > 65536) return eng_fail_code(err, ENG_BAD_INPUT, "index: dimension %d out of range", dim);
    ix->dim = dim;
    ix->stride = ((size_t)dim + 15) / 16 * 16;
    if (eng_index_use_kernel(ix, "avx512") && eng_index_use_kernel(ix, "avx2"))
        eng_index_use_kernel(ix, "scalar");
    ix->stride8 = ((size_t)dim + 63) / 64 * 64;
    if (eng_index_use_kernel8(ix, "vnni") && eng_index_use_kernel8(ix, "avx512bw") &&
        eng_index_use_kernel8(ix, "avx2"))
        eng_index_use_kernel8(ix, "scalar");
    if (grow(ix, err)) {
        eng_index_free(ix);
        return -1;
    }
    return 0;
}

/* Writes the normalised vec into dst (stride floats, zero padded); -1 if it cannot be, in which
 * case dst is untouched. */
static int normalise_into(const eng_index *ix, const float *vec, float *dst, eng_err *err) {
    double ss = 0;
    for (int i = 0; i < ix->dim; i++) {
        if (!isfinite(vec[i])) return eng_fail_code(err, ENG_BAD_INPUT, "index: vector has a non-finite value");
        ss += (double)vec[i] * vec[i];
    }
    if (!(ss > 0)) return eng_fail_code(err, ENG_BAD_INPUT, "index: zero vector has no direction");
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < ix->dim; i++) dst[i] = vec[i] * inv;
    for (size_t i = (size_t)ix->dim; i < ix->stride; i++) dst[i] = 0.0f;
    return 0;
}

/* Refreshes the int8 copy of row r from its float row. */
static void requantise(eng_index *ix, size_t r) {
    ix->scale8[r] = quantise(ix->rows + r * ix->stride, ix->dim, ix->stride8,
                             ix->rows8 + r * ix->stride8, &ix->rsum8[r]);
}

int eng_index_put(eng_index *ix, int64_t id, const float *vec, eng_err *err) {
    if (id == SLOT_EMPTY || id == SLOT_TOMB) return eng_fail(err, "index: id %lld is reserved", (long long)id);
    size_t slot = find_slot(ix, id);
    if (slot != (size_t)-1) { /* replace in place (normalise_into checks before it writes) */
        size_t r = ix->slot_row[slot];
        if (normalise_into(ix, vec, ix->rows + r * ix->stride, err)) return -1;
        requantise(ix, r);
        return 0;
    }
    if (ix->n == ix->cap && grow(ix, err)) return -1;
    float *row = ix->rows + ix->n * ix->stride;
    if (normalise_into(ix, vec, row, err)) return -1;
    requantise(ix, ix->n);
    ix->ids[ix->n] = id;
    if ((ix->n + 1 + ix->tombstones) * 2 > ix->n_slots) { /* keep the table at most half full */
        size_t slots = ix->n_slots;
        while ((ix->n + 1) * 2 > slots) slots *= 2;
        if (rehash(ix, slots, err)) return -1;
    }
    insert_slot(ix, id, ix->n);
    ix->n++;
    return 0;
}

int eng_index_remove(eng_index *ix, int64_t id) {
    size_t slot = find_slot(ix, id);
    if (slot == (size_t)-1) return 0;
    size_t row = ix->slot_row[slot], last = ix->n - 1;
    ix->slot_id[slot] = SLOT_TOMB;
    ix->tombstones++;
    if (row != last) { /* move the last row into the hole */
        memcpy(ix->rows + row * ix->stride, ix->rows + last * ix->stride,
               ix->stride * sizeof(float));
        memcpy(ix->rows8 + row * ix->stride8, ix->rows8 + last * ix->stride8, ix->stride8);
        ix->scale8[row] = ix->scale8[last];
        ix->rsum8[row] = ix->rsum8[last];
        ix->ids[row] = ix->ids[last];
        ix->slot_row[find_slot(ix, ix->ids[row])] = row;
    }
    ix->n--;
    return 1;
}

const float *eng_index_get(const eng_index *ix, int64_t id) {
    size_t slot = find_slot(ix, id);
    return slot == (size_t)-1 ? NULL : ix->rows + ix->slot_row[slot] * ix->stride;
}

/* Scans rows [from, to) for one unit query into t. */
static void scan(const eng_index *ix, const float *q, size_t from, size_t to, int64_t exclude,
                 topk *t) {
    const float *row = ix->rows + from * ix->stride;
    for (size_t r = from; r < to; r++, row += ix->stride) {
        float s = ix->dot(q, row, ix->stride);
        if (ix->ids[r] != exclude) topk_offer(t, s, ix->ids[r]);
    }
}

int eng_index_search(const eng_index *ix, const float *query, int k, int64_t exclude,
                     eng_hit *out, int *n_out, eng_err *err) {
    *n_out = 0;
    if (k < 1) return eng_fail_code(err, ENG_BAD_INPUT, "index: k must be at least 1 (got %d)", k);
    float *q = aligned_alloc(64, ix->stride * sizeof(float));
    if (!q) return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory");
    if (normalise_into(ix, query, q, err)) {
        free(q);
        return -1;
    }
    topk t = {out, 0, k};
    scan(ix, q, 0, ix->n, exclude, &t);
    qsort(out, (size_t)t.n, sizeof *out, cmp_hits);
    *n_out = t.n;
    free(q);
    return 0;
}

int eng_index_neighbors(const eng_index *ix, int64_t id, int k, eng_hit *out, int *n_out,
                        eng_err *err) {
    *n_out = 0;
    const float *v = eng_index_get(ix, id);
    if (!v) return eng_fail(err, "index: no vector with id %lld", (long long)id);
    return eng_index_search(ix, v, k, id, out, n_out, err);
}

int eng_index_search_fast(const eng_index *ix, const float *query, int k, int64_t exclude,
                          int rerank, eng_hit *out, int *n_out, eng_err *err) {
    *n_out = 0;
    if (k < 1) return eng_fail_code(err, ENG_BAD_INPUT, "index: k must be at least 1 (got %d)", k);
    if (rerank < 0) return eng_fail_code(err, ENG_BAD_INPUT, "index: rerank factor must be >= 0 (got %d)", rerank);
    if (rerank == 0) rerank = ENG_INDEX_RERANK_FACTOR;
    size_t r_cand = (size_t)rerank * (size_t)k;
    if (r_cand < (size_t)k + ENG_INDEX_RERANK_MARGIN) r_cand = (size_t)k + ENG_INDEX_RERANK_MARGIN;
    if (r_cand > ix->n) r_cand = ix->n ? ix->n : 1;
    /* one allocation: float query | int8 query | int32 block scores | candidates */
    size_t qf = ix->stride * sizeof(float), q8 = ix->stride8, sc = FAST_BLOCK * sizeof(int32_t);
    size_t bytes = qf + q8 + sc + r_cand * sizeof(eng_hit);
    bytes = (bytes + 63) / 64 * 64;
    char *mem = aligned_alloc(64, bytes);
    if (!mem) return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory for %zu candidates", r_cand);
    float *q = (float *)(void *)mem;
    int8_t *qi = (int8_t *)(mem + qf);
    int32_t *dots = (int32_t *)(void *)(mem + qf + q8);
    eng_hit *cand = (eng_hit *)(void *)(mem + qf + q8 + sc);
    if (normalise_into(ix, query, q, err)) {
        free(mem);
        return -1;
    }
    int32_t qsum;
    quantise(q, ix->dim, ix->stride8, qi, &qsum);
    /* first pass: approximate score = dot8 · row scale (the query's scale is common to all rows,
     * so it is left out); computed the same way whatever the kernel */
    topk c = {cand, 0, (int)r_cand};
    for (size_t from = 0; from < ix->n; from += FAST_BLOCK) {
        size_t nr = ix->n - from < FAST_BLOCK ? ix->n - from : FAST_BLOCK;
        ix->dot8(qi, ix->rows8 + from * ix->stride8, ix->rsum8 + from, ix->stride8, nr, dots);
        for (size_t r = 0; r < nr; r++)
            if (ix->ids[from + r] != exclude)
                topk_offer(&c, (float)dots[r] * ix->scale8[from + r], ix->ids[from + r]);
    }
    /* second pass: the candidates' exact scores, by the same kernel as eng_index_search */
    topk t = {out, 0, k};
    for (int i = 0; i < c.n; i++) {
        size_t row = ix->slot_row[find_slot(ix, cand[i].id)];
        topk_offer(&t, ix->dot(q, ix->rows + row * ix->stride, ix->stride), cand[i].id);
    }
    qsort(out, (size_t)t.n, sizeof *out, cmp_hits);
    *n_out = t.n;
    free(mem);
    return 0;
}

int eng_index_search_batch(const eng_index *ix, const float *queries, int nq, int k,
                           eng_hit *out, int *n_out, eng_err *err) {
    if (k < 1) return eng_fail_code(err, ENG_BAD_INPUT, "index: k must be at least 1 (got %d)", k);
    if (nq < 0) return eng_fail_code(err, ENG_BAD_INPUT, "index: negative query count");
    float *q = aligned_alloc(64, ((size_t)nq * ix->stride + 16) * sizeof(float));
    topk *t = calloc((size_t)nq + 1, sizeof *t);
    if (!q || !t) {
        free(q);
        free(t);
        return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory for %d queries", nq);
    }
    for (int i = 0; i < nq; i++) {
        if (normalise_into(ix, queries + (size_t)i * ix->dim, q + (size_t)i * ix->stride, err)) {
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
        return eng_fail_code(err, ENG_NO_MEMORY, "index: out of memory for the score block");
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
                return eng_fail(err, "index: sgemm failed: %s", eng_dnnl_status_str(st));
            }
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nqc; i++)
                for (size_t r = 0; r < nr; r++)
                    topk_offer(&t[q0 + i], scores[i * nr + r], ix->ids[from + r]);
        }
    }
    free(scores);
    for (int i = 0; i < nq; i++) {
        qsort(t[i].h, (size_t)t[i].n, sizeof *t[i].h, cmp_hits);
        n_out[i] = t[i].n;
    }
    free(q);
    free(t);
    return 0;
}

double eng_index_recall(const eng_hit *hits, int nf, const eng_hit *exact, int ne) {
    if (ne == 0) return 1.0;
    int found = 0;
    for (int i = 0; i < nf; i++) {
        int in = hits[i].score >= exact[ne - 1].score - 1e-6f;
        for (int j = 0; j < ne && !in; j++) in = hits[i].id == exact[j].id;
        found += in;
    }
    return (double)found / ne;
}

void eng_index_free(eng_index *ix) {
    free(ix->rows);
    free(ix->ids);
    free(ix->slot_id);
    free(ix->slot_row);
    free(ix->rows8);
    free(ix->scale8);
    free(ix->rsum8);
    memset(ix, 0, sizeof *ix);
}
