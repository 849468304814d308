/* eng_comm.c — the ranks of a data-parallel job over MPI (see eng_comm.h). */
#include "eng_comm.h"

#include <assert.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI counts are ints: big buffers go in pieces of at most this many elements. */
#define PIECE (1 << 28)

int eng_comm_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int mpi_fail(eng_err *err, const char *what, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = 0;
    return eng_fail(err, "mpi: %s: %s", what, len ? msg : "error");
}

int eng_comm_init(eng_comm *c, eng_err *err) {
    memset(c, 0, sizeof *c);
    c->size = 1;
    if (!eng_comm_launched()) return 0;
    int provided = 0, rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "init", rc);
    c->mpi = 1;
    /* errors come back as codes (MPI's default would abort the whole job) */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (provided < MPI_THREAD_FUNNELED) {
        eng_comm_finish(c);
        return eng_fail(err, "mpi: no MPI_THREAD_FUNNELED support (got level %d)", provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A collective of `bytes` payload begins: counted, and its start time returned for end_call(). */
static double begin_call(eng_comm *c, size_t bytes) {
    c->calls++;
    c->bytes += (double)bytes;
    return now_s();
}

static int end_call(eng_comm *c, double t0) {
    c->seconds += now_s() - t0;
    return 0;
}

/* Reduce to rank 0, then broadcast: the same bits on every rank (see eng_comm.h). */
static int sum(eng_comm *c, void *buf, size_t n, MPI_Datatype t, size_t elem, eng_err *err) {
    if (c->size == 1) return 0;
    double t0 = begin_call(c, n * elem);
    char *p = buf;
    for (size_t done = 0; done < n;) {
        int k = n - done > PIECE ? PIECE : (int)(n - done);
        void *at = p + done * elem;
        int rc = MPI_Reduce(c->rank == 0 ? MPI_IN_PLACE : at, c->rank == 0 ? at : NULL, k, t,
                            MPI_SUM, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "reduce", rc);
        rc = MPI_Bcast(at, k, t, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", rc);
        done += (size_t)k;
    }
    return end_call(c, t0);
}

int eng_comm_sum_f32(eng_comm *c, float *buf, size_t n, eng_err *err) {
    return sum(c, buf, n, MPI_FLOAT, sizeof *buf, err);
}

int eng_comm_sum_f64(eng_comm *c, double *buf, size_t n, eng_err *err) {
    return sum(c, buf, n, MPI_DOUBLE, sizeof *buf, err);
}

int eng_comm_bcast(eng_comm *c, void *buf, size_t bytes, int root, eng_err *err) {
    assert(root >= 0 && root < c->size);
    if (c->size == 1) return 0;
    double t0 = begin_call(c, bytes);
    char *p = buf;
    for (size_t done = 0; done < bytes;) {
        int k = bytes - done > PIECE ? PIECE : (int)(bytes - done);
        int rc = MPI_Bcast(p + done, k, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", rc);
        done += (size_t)k;
    }
    return end_call(c, t0);
}

int eng_comm_gather(eng_comm *c, const void *mine, size_t bytes, void *out, eng_err *err) {
    if (c->size == 1) {
        if (bytes) memmove(out, mine, bytes);
        return 0;
    }
    if (bytes > (size_t)PIECE) return eng_fail(err, "mpi: gather of %zu bytes is too big", bytes);
    double t0 = begin_call(c, bytes);
    int k = (int)bytes, *counts = NULL, *displs = NULL;
    if (c->rank == 0) {
        counts = calloc((size_t)c->size, sizeof *counts);
        displs = calloc((size_t)c->size, sizeof *displs);
        if (!counts || !displs) {
            free(counts);
            free(displs);
            return eng_fail(err, "mpi: out of memory");
        }
    }
    int rc = MPI_Gather(&k, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS && c->rank == 0) {
        long at = 0;
        for (int r = 0; r < c->size; r++) {
            displs[r] = (int)at;
            at += counts[r];
        }
        if (at > PIECE) rc = MPI_ERR_COUNT;
    }
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(mine, k, MPI_BYTE, out, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "gather", rc);
    return end_call(c, t0);
}

int eng_comm_agree_u64(eng_comm *c, uint64_t v, int *same, eng_err *err) {
    *same = 1;
    if (c->size == 1) return 0;
    double t0 = begin_call(c, 2 * sizeof v);
    uint64_t mine[2] = {v, ~v}, least[2];
    int rc = MPI_Allreduce(mine, least, 2, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "allreduce", rc);
    *same = least[0] == v && ~least[1] == v; /* the least and the greatest value are both v */
    return end_call(c, t0);
}

static int agree(void *ctx, uint64_t v, int *same, eng_err *err) {
    return eng_comm_agree_u64(ctx, v, same, err);
}

static int reduce_f32(void *ctx, float *buf, size_t n, eng_err *err) {
    return eng_comm_sum_f32(ctx, buf, n, err);
}

static int reduce_f64(void *ctx, double *buf, size_t n, eng_err *err) {
    return eng_comm_sum_f64(ctx, buf, n, err);
}

eng_reduce eng_comm_reducer(eng_comm *c) {
    eng_reduce r = {c, reduce_f32, reduce_f64, agree};
    return r;
}

void eng_comm_shard(const eng_comm *c, int global, int *lo, int *count) {
    assert(global >= c->size && c->size >= 1);
    int base = global / c->size, extra = global % c->size;
    *count = base + (c->rank < extra);
    *lo = c->rank * base + (c->rank < extra ? c->rank : extra);
}

void eng_comm_abort(eng_comm *c, int code) {
    if (c->mpi && c->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

void eng_comm_finish(eng_comm *c) {
    if (c->mpi) MPI_Finalize();
    c->mpi = 0;
}
