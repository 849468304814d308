/* cmd_bench_fma.c — `barlowd bench-fma`: the machine's fused multiply-add peak, measured.
 *
 * The peak a training step is compared against (bench/train_step prints the step's GFLOP/s as a
 * share of it). Each thread runs a loop of 12 independent vector FMA chains (enough to cover the
 * FMA latency times the ports on current x86 cores) on registers only, no memory traffic, for a
 * fixed time, and the flops are summed over the threads that ran at once. The widest kernel the
 * CPU has and the ISA cap (eng_isa.h) allows is used: AVX-512 (16 floats per FMA) or AVX2 + FMA
 * (8); a CPU with neither is reported, not failed. Prints one result line for bench/train_step. */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "eng_isa.h"
#include "cli_util.h"
#include "commands.h"

#include <immintrin.h>

enum { FMA_CHAINS = 12, FMA_INNER = 1000 };

/* The 12 chains as named registers (an array of them compiles to a loop through memory). */
#define FMA_12(fma)                                                                            \
    do {                                                                                       \
        c0 = fma(c0, a, b); c1 = fma(c1, a, b); c2 = fma(c2, a, b); c3 = fma(c3, a, b);        \
        c4 = fma(c4, a, b); c5 = fma(c5, a, b); c6 = fma(c6, a, b); c7 = fma(c7, a, b);        \
        c8 = fma(c8, a, b); c9 = fma(c9, a, b); c10 = fma(c10, a, b); c11 = fma(c11, a, b);    \
    } while (0)

/* Runs rounds × FMA_INNER × FMA_CHAINS FMAs of 8 floats; returns a value built from every chain so
 * that the compiler cannot drop the loop. */
__attribute__((target("avx2,fma"))) static float fma_avx2(long rounds) {
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2),
           c3 = _mm256_set1_ps(3), c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5),
           c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7), c8 = _mm256_set1_ps(8),
           c9 = _mm256_set1_ps(9), c10 = _mm256_set1_ps(10), c11 = _mm256_set1_ps(11);
    for (long r = 0; r < rounds; r++)
        for (int j = 0; j < FMA_INNER; j++) FMA_12(_mm256_fmadd_ps);
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

__attribute__((target("avx512f"))) static float fma_avx512(long rounds) {
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    __m512 c0 = _mm512_set1_ps(0), c1 = _mm512_set1_ps(1), c2 = _mm512_set1_ps(2),
           c3 = _mm512_set1_ps(3), c4 = _mm512_set1_ps(4), c5 = _mm512_set1_ps(5),
           c6 = _mm512_set1_ps(6), c7 = _mm512_set1_ps(7), c8 = _mm512_set1_ps(8),
           c9 = _mm512_set1_ps(9), c10 = _mm512_set1_ps(10), c11 = _mm512_set1_ps(11);
    for (long r = 0; r < rounds; r++)
        for (int j = 0; j < FMA_INNER; j++) FMA_12(_mm512_fmadd_ps);
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return _mm512_reduce_add_ps(s);
}

typedef struct fma_kernel {
    const char *name;
    int lanes;
    float (*run)(long rounds);
} fma_kernel;

/* The widest kernel allowed here, or NULL when the CPU has no FMA kernel of ours. */
static const fma_kernel *pick_kernel(void) {
    static const fma_kernel avx512 = {"avx512", 16, fma_avx512}, avx2 = {"avx2", 8, fma_avx2};
    __builtin_cpu_init();
    eng_isa cap = eng_isa_cap();
    if (cap >= ENG_ISA_AVX512_CORE && __builtin_cpu_supports("avx512f")) return &avx512;
    if (cap >= ENG_ISA_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &avx2;
    return NULL;
}

int cmd_bench_fma(int argc, char **argv) {
    static const char *const known[] = {"--threads", "--ms", NULL};
    if (cli_check_flags(argc, argv, known)) return CLI_BAD_INPUT;
    long threads = cli_flag_long(argc, argv, "--threads", 0, 0, 1024);
    long ms = cli_flag_long(argc, argv, "--ms", 1000, 10, 600000);
    if (threads < 0 || ms < 0) return CLI_BAD_INPUT;
    int nt = threads > 0 ? (int)threads : omp_get_max_threads();
    const fma_kernel *k = pick_kernel();
    if (!k) {
        printf("fma kernel=none gflops=0 threads=%d (no AVX2+FMA or AVX-512 here, or capped "
               "below them)\n", nt);
        return CLI_OK;
    }
    /* Calibrate on one thread: rounds for about a tenth of the time asked. */
    long rounds = 1;
    double t = 0;
    for (;;) {
        double t0 = cli_now();
        volatile float sink = k->run(rounds);
        (void)sink;
        t = cli_now() - t0;
        if (t > 0.01) break;
        rounds *= 4;
    }
    rounds = (long)((double)rounds * (ms / 1e3) / t) + 1;
    double per_thread = (double)rounds * FMA_INNER * FMA_CHAINS * k->lanes * 2.0;
    double slowest = 0;
    float sum = 0;
    double t0 = cli_now();
#pragma omp parallel num_threads(nt) reduction(+ : sum) reduction(max : slowest)
    {
        double s0 = cli_now();
        sum += k->run(rounds);
        slowest = cli_now() - s0;
    }
    double wall = cli_now() - t0;
    /* The flops of all threads over the wall time (the slowest thread ends the run). */
    double gflops = per_thread * nt / wall / 1e9;
    printf("fma kernel=%s gflops=%.1f slowest_thread_gflops=%.1f threads=%d seconds=%.2f slowest_s=%.2f "
           "check=%g\n",
           k->name, gflops, per_thread / slowest / 1e9, nt, wall, slowest, (double)sum);
    return CLI_OK;
}
