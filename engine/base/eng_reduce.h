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

#include "eng_err.h"

typedef struct eng_reduce {
    void *ctx; /* borrowed: the job (an eng_comm) */
    int (*sum_f32)(void *ctx, float *buf, size_t n, eng_err *err);
    int (*sum_f64)(void *ctx, double *buf, size_t n, eng_err *err);
    /* *same = 1 when every rank passed the same v (a checksum of what must stay identical). */
    int (*agree_u64)(void *ctx, uint64_t v, int *same, eng_err *err);
} eng_reduce;

#endif
