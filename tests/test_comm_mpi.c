/* test_comm_mpi.c — eng_comm under mpirun (tests/CMakeLists.txt runs it on 2 and 3 ranks with
 * --oversubscribe, and once without mpirun as a job of one rank). Not a Criterion test: Criterion
 * forks a worker per test, and an MPI rank must stay the process mpirun started.
 *
 * Checks, on every rank: the shards of a global batch cover each row exactly once, in rank order,
 * sizes within one; a float and a double sum equal a serial double sum over the ranks to
 * rounding and are the same bits on every rank; a broadcast gives every rank root's bytes;
 * agreement holds for equal values and fails when one rank's differs; a gather of unequal
 * pieces gives rank 0 every rank's bytes in rank order; the counters count what was sent.
 * Exits 1 (after printing what failed) on any failure, on any rank. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_comm.h"

static int failures;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            failures++;                                                                  \
            fprintf(stderr, "rank %d: check failed at line %d: ", comm.rank, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

/* An awkward value (no exact binary sum) of rank r and index i. */
static double value(int r, size_t i) { return 0.1 * (r + 1) * ((double)i + 1.0) / 3.0 - 0.37 * (double)(i % 7); }

int main(void) {
    eng_comm comm;
    eng_err err = {0};
    if (eng_comm_init(&comm, &err)) {
        fprintf(stderr, "init: %s\n", err.msg);
        return 1;
    }
    const char *want = getenv("BARLOWD_TEST_RANKS"); /* the rank count the test was started with */
    CHECK(!want || atoi(want) == comm.size, "%d ranks, expected %s", comm.size, want);
    CHECK(comm.rank >= 0 && comm.rank < comm.size, "rank %d of %d", comm.rank, comm.size);
    CHECK((comm.size > 1) == (eng_comm_launched() && comm.mpi), "launched %d, mpi %d, size %d",
          eng_comm_launched(), comm.mpi, comm.size);

    /* shards: each row once, in rank order, sizes within one */
    static const int globals[] = {3, 7, 256, 257, 1001};
    for (size_t g = 0; g < sizeof globals / sizeof *globals; g++) {
        int global = globals[g];
        if (global < comm.size) continue;
        double *seen = calloc((size_t)global, sizeof *seen);
        int lo, count;
        eng_comm_shard(&comm, global, &lo, &count);
        for (int i = lo; i < lo + count; i++) seen[i] += 1;
        CHECK(eng_comm_sum_f64(&comm, seen, (size_t)global, &err) == 0, "%s", err.msg);
        for (int i = 0; i < global; i++) CHECK(seen[i] == 1.0, "global %d: row %d taken %g times", global, i, seen[i]);
        /* rank order: rank r's lo is the sum of the counts of the ranks before it */
        double *counts = calloc((size_t)comm.size, sizeof *counts);
        counts[comm.rank] = count;
        CHECK(eng_comm_sum_f64(&comm, counts, (size_t)comm.size, &err) == 0, "%s", err.msg);
        double before = 0, most = 0, least = 1e18;
        for (int r = 0; r < comm.size; r++) {
            if (r < comm.rank) before += counts[r];
            most = fmax(most, counts[r]);
            least = fmin(least, counts[r]);
        }
        CHECK(before == lo, "global %d: lo %d, ranks before hold %g", global, lo, before);
        CHECK(most - least <= 1, "global %d: shard sizes %g..%g", global, least, most);
        free(counts);
        free(seen);
    }

    /* sums: a serial double sum to rounding, the same bits on every rank */
    enum { N = 100003 };
    float *f = malloc(N * sizeof *f), *f0 = malloc(N * sizeof *f0);
    double *d = malloc(N * sizeof *d), *d0 = malloc(N * sizeof *d0);
    for (size_t i = 0; i < N; i++) {
        f[i] = (float)value(comm.rank, i);
        d[i] = value(comm.rank, i);
    }
    CHECK(eng_comm_sum_f32(&comm, f, N, &err) == 0, "%s", err.msg);
    CHECK(eng_comm_sum_f64(&comm, d, N, &err) == 0, "%s", err.msg);
    double worst_f = 0, worst_d = 0;
    for (size_t i = 0; i < N; i++) {
        double ref = 0, reff = 0;
        for (int r = 0; r < comm.size; r++) {
            ref += value(r, i);
            reff += (float)value(r, i);
        }
        double scale = fmax(1.0, fabs(ref));
        worst_f = fmax(worst_f, fabs(f[i] - reff) / scale);
        worst_d = fmax(worst_d, fabs(d[i] - ref) / scale);
    }
    CHECK(worst_f < 1e-6, "float sum off by %g relative", worst_f);
    CHECK(worst_d < 1e-14, "double sum off by %g relative", worst_d);
    memcpy(f0, f, N * sizeof *f);
    memcpy(d0, d, N * sizeof *d);
    CHECK(eng_comm_bcast(&comm, f0, N * sizeof *f0, 0, &err) == 0, "%s", err.msg);
    CHECK(eng_comm_bcast(&comm, d0, N * sizeof *d0, 0, &err) == 0, "%s", err.msg);
    CHECK(memcmp(f0, f, N * sizeof *f) == 0, "float sum differs from rank 0's");
    CHECK(memcmp(d0, d, N * sizeof *d) == 0, "double sum differs from rank 0's");

    /* broadcast from the last rank: its bytes everywhere */
    unsigned char bytes[4099];
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)(i * 31 + comm.rank * 7);
    CHECK(eng_comm_bcast(&comm, bytes, sizeof bytes, comm.size - 1, &err) == 0, "%s", err.msg);
    int same = 1;
    for (size_t i = 0; i < sizeof bytes; i++)
        same &= bytes[i] == (unsigned char)(i * 31 + (comm.size - 1) * 7);
    CHECK(same, "broadcast from rank %d: other bytes", comm.size - 1);

    /* agreement: equal values agree; one rank's different value is seen by every rank */
    int agreed = 0;
    CHECK(eng_comm_agree_u64(&comm, 0x123456789abcdefULL, &agreed, &err) == 0, "%s", err.msg);
    CHECK(agreed == 1, "equal values did not agree");
    uint64_t mine = comm.rank == comm.size - 1 ? 7 : 8;
    CHECK(eng_comm_agree_u64(&comm, mine, &agreed, &err) == 0, "%s", err.msg);
    CHECK(agreed == (comm.size == 1), "rank %d saw agreement %d for values 8..8,7", comm.rank, agreed);

    /* gather: rank r gives r + 1 bytes of value r; rank 0 gets them in rank order */
    size_t total = (size_t)comm.size * (size_t)(comm.size + 1) / 2;
    unsigned char piece[64], *all = calloc(total, 1);
    memset(piece, comm.rank, sizeof piece);
    CHECK(eng_comm_gather(&comm, piece, (size_t)comm.rank + 1, all, &err) == 0, "%s", err.msg);
    if (comm.rank == 0) {
        size_t at = 0;
        for (int r = 0; r < comm.size; r++)
            for (int k = 0; k <= r; k++, at++)
                CHECK(all[at] == r, "gathered byte %zu is %d, want %d", at, all[at], r);
    }
    free(all);
    CHECK((comm.size == 1) == (comm.calls == 0), "%ld calls counted on %d ranks", comm.calls, comm.size);
    CHECK(comm.size == 1 || comm.bytes >= (double)(N * (sizeof *f + sizeof *d)),
          "%.0f bytes counted", comm.bytes);

    /* every rank's failures count: one rank's failure fails the run on all */
    double bad = failures;
    if (eng_comm_sum_f64(&comm, &bad, 1, &err)) bad = 1;
    printf("rank %d of %d: %s (float sum off by %.2g, double by %.2g)\n", comm.rank, comm.size,
           bad ? "FAILED" : "ok", worst_f, worst_d);
    free(f);
    free(f0);
    free(d);
    free(d0);
    eng_comm_finish(&comm);
    return bad ? 1 : 0;
}
