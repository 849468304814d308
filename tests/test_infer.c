/* test_infer.c — the serving inference path's resources: how many threads a model built for
 * request threads runs on, and the large-buffer allocator (huge-page advice). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_alloc.h"
#include "eng_checkpoint.h"
#include "eng_ctx.h"
#include "eng_infer.h"
#include "test_util.h"

static int count_threads(void) {
    DIR *d = opendir("/proc/self/task");
    cr_assert(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* A checkpoint of a freshly initialised `small` model. */
static uint8_t *small_blob(size_t *len) {
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "small", &err) == 0, "%s", err.msg);
    eng_model m;
    cr_assert(eng_model_build(&m, &cfg, 2, 0, &err) == 0, "%s", err.msg);
    eng_model_init_params(&m, 7);
    eng_ckpt_meta meta = {.step = 0, .loss = NAN};
    uint8_t *blob;
    cr_assert(eng_checkpoint_save(&m, &meta, &blob, len, &err) == 0, "%s", err.msg);
    eng_model_free(&m);
    return blob;
}

typedef struct job {
    eng_infer inf;     /* built by the test's thread */
    int new_threads;   /* threads that appeared while the request thread embedded */
    float vec[3][512]; /* the representations */
} job;

/* A request thread as the server runs one: a fresh thread (no OpenMP pool yet) with a team of
 * one, embedding three images with a model another thread built. */
static void *request_thread(void *arg) {
    job *j = arg;
    eng_set_threads(1);
    eng_err err = {0};
    int side = 40, ch = j->inf.cfg.in_channels;
    uint8_t *px = malloc((size_t)side * side * ch);
    int before = count_threads();
    for (int i = 0; i < 3; i++) {
        for (int p = 0; p < side * side * ch; p++) px[p] = (uint8_t)((p * 31 + i * 97) % 251);
        eng_aug_src src = {.width = side, .height = side, .channels = ch, .pixels = px};
        if (eng_infer_embed(&j->inf, &src, 1, j->vec[i], &err)) j->new_threads = -1;
    }
    if (j->new_threads == 0) j->new_threads = count_threads() - before;
    free(px);
    return NULL;
}

static void run(job *j, const uint8_t *blob, size_t len, int plan_threads) {
    eng_err err = {0};
    cr_assert(eng_infer_create(&j->inf, blob, len, 1, plan_threads, &err) == 0, "%s", err.msg);
    cr_assert(j->inf.dim > 0 && j->inf.dim <= 512);
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, request_thread, j) == 0);
    pthread_join(t, NULL);
    cr_assert(j->new_threads >= 0, "inference failed");
}

Test(infer, a_model_planned_for_one_thread_runs_on_the_request_thread_alone) {
    size_t len;
    uint8_t *blob = small_blob(&len);
    static job one, two;
    run(&one, blob, len, 1);
    run(&two, blob, len, 2);
    /* the request-thread plan: no OpenMP helper, the caller's own core only */
    cr_expect_eq(one.new_threads, 0, "a one-thread plan started %d threads", one.new_threads);
    /* the contrast that makes the check meaningful: oneDNN fixes a convolution's thread count
     * when the primitive is made, so a model planned for two starts a helper on a request
     * thread whose own team is one */
    cr_expect_gt(two.new_threads, 0, "a two-thread plan started no thread");
    for (int i = 0; i < 3; i++)
        cr_expect_lt(tu_rel_l2(one.vec[i], two.vec[i], (size_t)one.inf.dim), 1e-5,
                     "image %d: the plan changed the vector", i);
    eng_infer_free(&one.inf);
    eng_infer_free(&two.inf);
    free(blob);
}

/* The VmFlags line of the mapping that holds p in /proc/self/smaps. */
static void vm_flags_of(const void *p, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    cr_assert(f != NULL);
    char line[512];
    int inside = 0;
    out[0] = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = a >= lo && a < hi;
            continue;
        }
        if (inside && !strncmp(line, "VmFlags:", 8)) {
            snprintf(out, n, "%s", line);
            break;
        }
    }
    fclose(f);
}

Test(alloc, large_buffers_are_zeroed_2mib_aligned_and_advised_for_huge_pages) {
    size_t bytes = 5u << 20; /* 5 MiB */
    unsigned char *p = eng_alloc_zeroed(bytes);
    cr_assert(p != NULL);
    cr_expect_eq((uintptr_t)p % (2u << 20), 0, "not 2 MiB aligned: %p", (void *)p);
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; i++) nonzero += p[i] != 0;
    cr_expect_eq(nonzero, 0);
    char flags[512];
    vm_flags_of(p, flags, sizeof flags);
    cr_expect(strstr(flags, " hg") != NULL, "no MADV_HUGEPAGE on the buffer: %s", flags);
    p[bytes - 1] = 1; /* all of it is ours */
    free(p);

    unsigned char *s = eng_alloc_zeroed(1000);
    cr_assert(s != NULL);
    cr_expect_eq((uintptr_t)s % 64, 0);
    nonzero = 0;
    for (size_t i = 0; i < 1000; i++) nonzero += s[i] != 0;
    cr_expect_eq(nonzero, 0);
    free(s);
    cr_expect_eq(eng_alloc_zeroed((size_t)-1), NULL, "an impossible size must fail, not wrap");
}
