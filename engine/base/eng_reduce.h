/* eng_reduce.h — how a training model sums over the ranks of a data-parallel job.
 *
 * The model does not know MPI (engine/nn links oneDNN, not MPI): a job hands it this table of sums,
 * and engine/dist fills it from an eng_comm. Every rank calls the same sums in the same order;
 * each call makes every rank's buffer the sum over the ranks, with the same bits on every rank.
 * A model without a table (NULL) is a job of one rank. */
#ifndef ENG_REDUCE_H
#define ENG_REDUCE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "eng_err.h"

typedef struct eng_reduce {
    void *ctx; /* borrowed: the job (an eng_comm) */
    int (*sum_f32)(void *ctx, float *buf, size_t n, eng_err *err);
    int (*sum_f64)(void *ctx, double *buf, size_t n, eng_err *err);
    /* *same = 1 when every rank passed the same v (a checksum of what must stay identical). */
    int (*agree_u64)(void *ctx, uint64_t v, int *same, eng_err *err);
} eng_reduce;

/* A checksum of float bits that the ranks compare with agree_u64: start from ENG_CHECKSUM_SEED
 * and fold in each buffer (FNV-1a's step over 32-bit words, with a shift for the high bits). */
#define ENG_CHECKSUM_SEED 0xcbf29ce484222325ULL
static inline uint64_t eng_checksum_f32(uint64_t h, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, x + i, sizeof w);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

#endif
