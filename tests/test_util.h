/* test_util.h — helpers shared by the Criterion suites: fixture files, tensor comparison, layouts. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "eng_tensor.h"

/* Reads tests/fixtures/<dir>/<name> as float32; aborts the test (cr_assert) when missing. */
/* A whole file, NUL-terminated after its len bytes (malloc'd; caller frees). */
char *tu_read_file(const char *path, size_t *len);
float *tu_fixture_floats(const char *dir, const char *name, size_t *count);
/* Reads a whole fixture text file (NUL-terminated, malloc'd). */
char *tu_fixture_text(const char *dir, const char *name);

/* Relative L2 error ‖got − want‖ / ‖want‖ (absolute when ‖want‖ = 0), in double. */
double tu_rel_l2(const float *got, const float *want, size_t n);
/* Prints label, the error and the first mismatches (llm.c's check_tensor); returns the error. */
double tu_check_tensor(const char *label, const float *got, const float *want, size_t n);

/* Copies a tensor of any layout into a plain row-major float array (malloc'd). */
float *tu_to_plain(eng_ctx *ctx, eng_tensor *t);
/* Copies a plain row-major float array into a tensor of any layout. */
void tu_from_plain(eng_ctx *ctx, eng_tensor *t, const float *plain);
/* Number of logical elements of t. */
size_t tu_numel(const eng_tensor *t);

/* Prints "coverage: <text>" on stderr: which kernel or ISA a test exercised, or that the CPU lacks
 * one. scripts/dev test collects these lines from every test's log into the suite's summary. (Not
 * cr_log_warn: Criterion 2.4 makes a binary whose tests all pass exit 1 after any warning.) */
void tu_coverage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 1 when /proc/cpuinfo's flags list `flag` (e.g. "avx512f"), independently of the compiler's
 * CPU detection that the engine uses; 0 otherwise. */
int tu_cpu_has(const char *flag);

/* Runs argv[0] (a path) with argv, stdout to /dev/null; returns its exit code (the test fails
 * when it did not exit normally) and stores its stderr, truncated, in msg. */
int tu_run(char *const argv[], char *msg, size_t msglen);

/* Writes an IDX file of n 12×12 gray images of a fixed pattern (varied: one with more texture). */
void tu_write_idx(const char *path, int n, int varied);

/* Fills with deterministic pseudo-random normals. */
void tu_randn(float *x, size_t n, unsigned long long seed, double scale);

/* Encodes 8-bit pixels (1 or 3 components, or 4 as CMYK) as a baseline JPEG; an optional APP1
 * payload is written right after the JFIF header. Caller frees the result (*len bytes). */
uint8_t *tu_encode_jpeg(const uint8_t *px, int w, int h, int comps, int quality,
                        const uint8_t *app1, size_t app1_len, size_t *len);

#endif
