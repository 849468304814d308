/* cmd_bench.c — `barlowd bench-step`: images/s of full training steps on random inputs.
 *
 * One image = two views through forward, loss, backward and the LARS update. Prints one result
 * line that bench/train_step parses: images/s from the median step, the fastest and slowest step
 * (the machine's noise), achieved GFLOP/s (3× the forward FLOPs per view, the usual
 * forward+backward estimate) and the process's peak resident memory.
 *
 * --synced yes builds the model as one shard of a data-parallel job whose sums over the ranks
 * are the identity (a job of one rank): the synchronised batch norms' own passes, without any
 * communication, for docs/SCALING.md's h. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "eng_model.h"
#include "eng_rng.h"
#include "cli_util.h"
#include "commands.h"

/* The sums of a job of one rank. */
static int sum_none_f32(void *ctx, float *buf, size_t n, eng_err *err) {
    (void)ctx, (void)buf, (void)n, (void)err;
    return 0;
}
static int sum_none_f64(void *ctx, double *buf, size_t n, eng_err *err) {
    (void)ctx, (void)buf, (void)n, (void)err;
    return 0;
}
static int agree_always(void *ctx, uint64_t v, int *same, eng_err *err) {
    (void)ctx, (void)v, (void)err;
    *same = 1;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench_step(int argc, char **argv) {
    static const char *const known[] = {"--model", "--batch", "--steps", "--warmup", "--threads",
                                        "--synced", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    const char *model = cli_flag(argc, argv, "--model");
    long batch = cli_flag_long(argc, argv, "--batch", 256, 2, 65536);
    long steps = cli_flag_long(argc, argv, "--steps", 10, 1, 1000000);
    long warmup = cli_flag_long(argc, argv, "--warmup", 3, 0, 1000000);
    long threads = cli_flag_long(argc, argv, "--threads", 0, 0, 1024);
    if (batch < 0 || steps < 0 || warmup < 0 || threads < 0) return CLI_BAD_INPUT;
    if (threads > 0) omp_set_num_threads((int)threads);
    const char *synced = cli_flag(argc, argv, "--synced");
    if (synced && strcmp(synced, "yes") && strcmp(synced, "no")) {
        fprintf(stderr, "error: --synced takes yes or no\n");
        return CLI_BAD_INPUT;
    }
    eng_reduce one_rank = {NULL, sum_none_f32, sum_none_f64, agree_always};
    int sync = synced && !strcmp(synced, "yes");

    eng_config cfg;
    eng_err err = {0};
    if (eng_config_resolve(&cfg, model ? model : "small", &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_BAD_INPUT;
    }
    eng_model m;
    double t0 = cli_now();
    if (eng_model_build_shard(&m, &cfg, (int)batch, (int)batch, sync ? &one_rank : NULL, 1, &err)) {
        fprintf(stderr, "error: %s\n", err.msg);
        return CLI_FAIL;
    }
    double build_s = cli_now() - t0;
    eng_model_init_params(&m, 1);
    eng_rng rng;
    eng_rng_seed(&rng, 7);
    float *in = eng_model_input(&m);
    size_t n_in = m.input.bytes / sizeof(float);
    for (size_t i = 0; i < n_in; i++) in[i] = (float)eng_rng_normal(&rng);
    eng_lars_cfg opt = eng_lars_defaults((int)batch);
    opt.warmup = 10;

    int rc = CLI_OK;
    double *ms = calloc((size_t)steps, sizeof(double));
    if (!ms) {
        fprintf(stderr, "error: out of memory\n");
        rc = CLI_FAIL;
        goto done;
    }
    for (long s = 0; s < warmup + steps; s++) {
        double t = cli_now();
        if (eng_model_train_step(&m, &opt, s, &err)) {
            fprintf(stderr, "error: step %ld: %s\n", s, err.msg);
            rc = CLI_FAIL;
            goto done;
        }
        t = (cli_now() - t) * 1e3;
        if (s >= warmup) ms[s - warmup] = t;
        fprintf(stderr, "step %ld loss %.4f %.1f ms\n", s, m.last_loss, t);
    }
    /* The median step is the figure; min and max show the machine's noise. */
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    double med = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
    double ips = (double)batch / (med / 1e3);
    double gflops = ips * 2.0 * 3.0 * eng_config_forward_flops(&cfg) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("barlowd images_per_s=%.1f step_ms=%.1f step_ms_min=%.1f step_ms_max=%.1f gflops=%.1f "
           "peak_rss_mb=%.0f model_mb=%.0f build_s=%.2f batch=%ld threads=%d synced=%d\n",
           ips, med, ms[0], ms[steps - 1], gflops, ru.ru_maxrss / 1024.0,
           eng_model_bytes(&m) / 1048576.0, build_s, batch, omp_get_max_threads(), sync);
done:
    free(ms);
    eng_model_free(&m);
    return rc;
}
