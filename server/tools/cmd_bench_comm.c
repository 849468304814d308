/* cmd_bench_comm.c — `barlowd bench-comm`: what a sum over the ranks of an mpirun job costs.
 *
 * Under `mpirun -np R barlowd bench-comm`, times eng_comm_sum_f32 (the reduce-then-broadcast that
 * training uses for c and the gradients) at sizes from 8 bytes to --max-mb, and prints, on rank
 * 0, one line per size: the median time, the bytes this rank sent and received per second
 * (2 × size / time), and the job's shape. docs/SCALING.md fits its model's latency and bandwidth
 * to these lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_comm.h"
#include "cli_util.h"
#include "commands.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench_comm(int argc, char **argv) {
    static const char *const known[] = {"--max-mb", "--repeat", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    long max_mb = cli_flag_long(argc, argv, "--max-mb", 16, 1, 4096);
    long repeat = cli_flag_long(argc, argv, "--repeat", 20, 3, 100000);
    if (max_mb < 0 || repeat < 0) return CLI_BAD_INPUT;
    eng_comm comm;
    eng_err err = {0};
    if (eng_comm_init(&comm, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_FAIL;
    }
    size_t most = (size_t)max_mb << 20;
    float *buf = calloc(most / sizeof(float), sizeof(float));
    double *t = calloc((size_t)repeat, sizeof *t);
    int rc = CLI_OK;
    if (!buf || !t) {
        fprintf(stderr, "error: out of memory\n");
        rc = CLI_FAIL;
        goto done;
    }
    if (comm.rank == 0)
        printf("bench-comm: %d ranks; sum = reduce to rank 0 + broadcast (eng_comm_sum_f32)\n",
               comm.size);
    for (size_t bytes = 8; bytes <= most; bytes *= 4) {
        size_t n = bytes / sizeof(float);
        for (long r = 0; r < repeat; r++) {
            double t0 = cli_now();
            if (eng_comm_sum_f32(&comm, buf, n, &err)) {
                fprintf(stderr, "error: rank %d: %s\n", comm.rank, err.msg);
                rc = CLI_FAIL;
                goto done;
            }
            t[r] = cli_now() - t0;
            memset(buf, 0, bytes); /* no overflow to infinities over the repeats */
        }
        qsort(t, (size_t)repeat, sizeof *t, cmp_double);
        double med = t[repeat / 2];
        if (comm.rank == 0)
            printf("bytes=%zu median_us=%.1f min_us=%.1f max_us=%.1f gbit_s=%.3f\n", bytes,
                   med * 1e6, t[0] * 1e6, t[repeat - 1] * 1e6,
                   med > 0 ? 2.0 * (double)bytes * 8 / med / 1e9 : 0.0);
    }
done:
    free(buf);
    free(t);
    if (rc != CLI_OK) eng_comm_abort(&comm, rc);
    eng_comm_finish(&comm);
    return rc;
}
