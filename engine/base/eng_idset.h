/* eng_idset.h — a set of non-negative ids as a dense bitmap: bit i of words says whether id i is
 * in the set. It is what a metadata filter evaluates to (store/) and what a filtered search
 * reads (engine/index): one word per 64 ids, so testing an id is one load and one shift, and
 * intersecting two sets is one AND per word. Ids at or above n_bits are never members. */
#ifndef ENG_IDSET_H
#define ENG_IDSET_H

#include <stdint.h>

#include "eng_err.h"

typedef struct eng_idset {
    uint64_t *words; /* owned [(n_bits + 63) / 64], zero past n_bits */
    int64_t n_bits;  /* ids 0 .. n_bits - 1 may be members */
} eng_idset;

/* An empty set able to hold ids below n_bits (>= 0). On error returns -1 (ERR_NO_MEMORY) and
 * the set is zeroed. */
int eng_idset_init(eng_idset *s, int64_t n_bits, eng_err *err);
void eng_idset_free(eng_idset *s);

static inline int eng_idset_has(const eng_idset *s, int64_t id) {
    return id >= 0 && id < s->n_bits && (s->words[id >> 6] >> (id & 63) & 1);
}
/* id must be below n_bits. */
static inline void eng_idset_add(eng_idset *s, int64_t id) {
    s->words[id >> 6] |= (uint64_t)1 << (id & 63);
}

/* id must be below n_bits. */
static inline void eng_idset_remove(eng_idset *s, int64_t id) {
    s->words[id >> 6] &= ~((uint64_t)1 << (id & 63));
}

/* Makes room for ids below n_bits (>= the current n_bits), members kept. On error returns -1
 * (ERR_NO_MEMORY) and the set is unchanged. */
int eng_idset_grow(eng_idset *s, int64_t n_bits, eng_err *err);
void eng_idset_clear(eng_idset *s);                       /* removes every id */
/* dst's ids from src (src->n_bits >= dst->n_bits; src's ids above dst's range are dropped). */
void eng_idset_copy(eng_idset *dst, const eng_idset *src);
void eng_idset_and(eng_idset *dst, const eng_idset *src);  /* dst ∩= src (same n_bits) */
void eng_idset_and_not(eng_idset *dst, const eng_idset *src); /* dst −= src (same n_bits) */
int64_t eng_idset_count(const eng_idset *s);
/* The smallest member >= from, or -1 when there is none. */
int64_t eng_idset_next(const eng_idset *s, int64_t from);

#endif
