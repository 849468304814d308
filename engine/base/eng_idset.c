/* eng_idset.c — dense id bitmaps (see eng_idset.h). */
#include "eng_idset.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static size_t n_words(int64_t n_bits) { return (size_t)((n_bits + 63) / 64); }

int eng_idset_init(eng_idset *s, int64_t n_bits, eng_err *err) {
    assert(n_bits >= 0);
    s->n_bits = 0;
    s->words = calloc(n_words(n_bits) ? n_words(n_bits) : 1, sizeof *s->words);
    if (!s->words)
        return eng_fail_code(err, ERR_NO_MEMORY, "out of memory for a set of %lld ids",
                             (long long)n_bits);
    s->n_bits = n_bits;
    return 0;
}

void eng_idset_free(eng_idset *s) {
    free(s->words);
    s->words = NULL;
    s->n_bits = 0;
}

int eng_idset_grow(eng_idset *s, int64_t n_bits, eng_err *err) {
    assert(n_bits >= s->n_bits);
    size_t old = n_words(s->n_bits), want = n_words(n_bits);
    if (want > old) {
        uint64_t *w = realloc(s->words, want * sizeof *w);
        if (!w)
            return eng_fail_code(err, ERR_NO_MEMORY, "out of memory for a set of %lld ids",
                                 (long long)n_bits);
        memset(w + old, 0, (want - old) * sizeof *w);
        s->words = w;
    }
    s->n_bits = n_bits;
    return 0;
}

void eng_idset_clear(eng_idset *s) { memset(s->words, 0, n_words(s->n_bits) * sizeof *s->words); }

void eng_idset_copy(eng_idset *dst, const eng_idset *src) {
    assert(src->n_bits >= dst->n_bits);
    size_t n = n_words(dst->n_bits);
    if (n == 0) return;
    memcpy(dst->words, src->words, n * sizeof *src->words);
    if (dst->n_bits & 63) dst->words[n - 1] &= ((uint64_t)1 << (dst->n_bits & 63)) - 1;
}

void eng_idset_and(eng_idset *dst, const eng_idset *src) {
    assert(dst->n_bits == src->n_bits);
    for (size_t i = 0, n = n_words(dst->n_bits); i < n; i++) dst->words[i] &= src->words[i];
}

void eng_idset_and_not(eng_idset *dst, const eng_idset *src) {
    assert(dst->n_bits == src->n_bits);
    for (size_t i = 0, n = n_words(dst->n_bits); i < n; i++) dst->words[i] &= ~src->words[i];
}

int64_t eng_idset_count(const eng_idset *s) {
    int64_t c = 0;
    for (size_t i = 0, n = n_words(s->n_bits); i < n; i++) c += __builtin_popcountll(s->words[i]);
    return c;
}

int64_t eng_idset_next(const eng_idset *s, int64_t from) {
    if (from < 0) from = 0;
    if (from >= s->n_bits) return -1;
    size_t w = (size_t)(from >> 6), n = n_words(s->n_bits);
    uint64_t bits = s->words[w] & (~(uint64_t)0 << (from & 63));
    for (;;) {
        if (bits) return (int64_t)(w * 64) + __builtin_ctzll(bits);
        if (++w == n) return -1;
        bits = s->words[w];
    }
}
