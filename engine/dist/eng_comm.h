/* eng_comm.h — the ranks of a data-parallel training job, over MPI (Open MPI 4.1).
 *
 * A process started by mpirun is one rank of MPI_COMM_WORLD; any other process is a job of one
 * rank, for which every collective below is the identity (so single-process code paths need no
 * special case). The collectives are blocking and are made by every rank in the same order.
 *
 * Sums are reduced to rank 0 and broadcast from it, not all-reduced: MPI does not promise that
 * MPI_Allreduce gives every rank the same bits for floats, and the ranks' parameters must stay
 * identical bit for bit after every step (each rank applies LARS to the same summed gradient).
 * The sum itself is MPI_SUM's order over the ranks, not the single-process order of the rows, so
 * it agrees with a single-process run to rounding (the 1e-5 relative per tensor).
 *
 * Only the thread that called eng_comm_init makes calls (MPI_THREAD_FUNNELED). */
#ifndef ENG_COMM_H
#define ENG_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "eng_err.h"
#include "eng_reduce.h"

typedef struct eng_comm {
    int rank, size;  /* this process's rank and the job's ranks (0 and 1 without mpirun) */
    int mpi;         /* 1 when MPI was initialised here (eng_comm_finish finalises it) */
    /* What this rank's collectives cost so far (for benchmarks and /status). */
    double seconds;  /* wall time inside MPI calls */
    double bytes;    /* payload bytes of the sums, broadcasts and gathers this rank took part in */
    long calls;      /* collectives */
} eng_comm;

/* 1 when this process was started by an MPI launcher (Open MPI's or a PMI one). */
int eng_comm_launched(void);

/* Joins the job: MPI_Init_thread when launched by mpirun, else a job of one rank. */
int eng_comm_init(eng_comm *c, eng_err *err);

/* In place: every rank's buf[0..n) becomes the sum over the ranks (the same bits everywhere). */
int eng_comm_sum_f32(eng_comm *c, float *buf, size_t n, eng_err *err);
int eng_comm_sum_f64(eng_comm *c, double *buf, size_t n, eng_err *err);

/* Every rank's buf[0..bytes) becomes rank root's. */
int eng_comm_bcast(eng_comm *c, void *buf, size_t bytes, int root, eng_err *err);

/* Rank 0's out receives every rank's mine[0..bytes) in rank order (ranks may give different
 * sizes; out must hold their total; out is ignored on the other ranks). */
int eng_comm_gather(eng_comm *c, const void *mine, size_t bytes, void *out, eng_err *err);

/* *same = 1 when every rank passed the same v. */
int eng_comm_agree_u64(eng_comm *c, uint64_t v, int *same, eng_err *err);

/* The sums of this job as a model's eng_reduce (borrows c). */
eng_reduce eng_comm_reducer(eng_comm *c);

/* Rank r's rows of a global batch of `global` rows: [*lo, *lo + *count), the ranks' shards in
 * rank order covering every row once, sizes differing by at most one (the first global % size
 * ranks take one more). Preconditions: global >= size. This function can't fail. */
void eng_comm_shard(const eng_comm *c, int global, int *lo, int *count);

/* A rank that fails ends the whole job (MPI_Abort: the other ranks may be waiting in a
 * collective this rank will never make). Returns only without MPI, i.e. in a job of one rank. */
void eng_comm_abort(eng_comm *c, int code);

/* Ends the job for this rank (MPI_Finalize when MPI was initialised here). */
void eng_comm_finish(eng_comm *c);

#endif
