/* eng_comm.c — the ranks of a data-parallel job over MPI (see eng_comm.h). */
#include "eng_comm.h"

#include <assert.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

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

/* Reduce to rank 0, then broadcast: the same bits on every rank (see eng_comm.h). */
static int sum(const eng_comm *c, void *buf, size_t n, MPI_Datatype t, size_t elem, eng_err *err) {
    if (c->size == 1) return 0;
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
    return 0;
}

int eng_comm_sum_f32(const eng_comm *c, float *buf, size_t n, eng_err *err) {
    return sum(c, buf, n, MPI_FLOAT, sizeof *buf, err);
}

int eng_comm_sum_f64(const eng_comm *c, double *buf, size_t n, eng_err *err) {
    return sum(c, buf, n, MPI_DOUBLE, sizeof *buf, err);
}

int eng_comm_bcast(const eng_comm *c, void *buf, size_t bytes, int root, eng_err *err) {
    assert(root >= 0 && root < c->size);
    if (c->size == 1) return 0;
    char *p = buf;
    for (size_t done = 0; done < bytes;) {
        int k = bytes - done > PIECE ? PIECE : (int)(bytes - done);
        int rc = MPI_Bcast(p + done, k, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", rc);
        done += (size_t)k;
    }
    return 0;
}

void eng_comm_shard(const eng_comm *c, int global, int *lo, int *count) {
    assert(global >= c->size && c->size >= 1);
    int base = global / c->size, extra = global % c->size;
    *count = base + (c->rank < extra);
    *lo = c->rank * base + (c->rank < extra ? c->rank : extra);
}

void eng_comm_finish(eng_comm *c) {
    if (c->mpi) MPI_Finalize();
    c->mpi = 0;
}
