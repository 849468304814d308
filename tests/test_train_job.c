/* test_train_job.c — the server's training job driven directly: server/train_job.c starts
 * `mpirun --oversubscribe -np 2 barlowd train-rank` and speaks train_wire.h to it, as
 * `serve --train-ranks 2` does. START from a checkpoint, STEP, SAVE, RESUME and RESEED must
 * behave as the in-process trainer does: the job's losses equal the single-process trainer's on
 * the same training copies, a resume replays the same steps, a reseed draws other ones. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_checkpoint.h"
#include "eng_copy.h"
#include "eng_trainer.h"
#include "test_util.h"
#include "train_job.h"

#define BATCH 8

/* Batch b's training copies: 32×32 gray images of a pattern per image. */
static void make_batch(int b, eng_image *imgs) {
    for (int i = 0; i < BATCH; i++) {
        imgs[i].width = imgs[i].height = 32;
        imgs[i].channels = 1;
        imgs[i].pixels = malloc(32 * 32);
        cr_assert(imgs[i].pixels != NULL);
        for (int p = 0; p < 32 * 32; p++)
            imgs[i].pixels[p] = (uint8_t)((p * (7 + i) + b * 53 + (p / 32) * (b + i)) & 255);
    }
}

static void free_batch(eng_image *imgs) {
    for (int i = 0; i < BATCH; i++) eng_image_free(&imgs[i]);
}

/* The in-process trainer's source: batch 0, then 1, ... */
typedef struct local_src {
    eng_image imgs[2][BATCH];
    int next;
} local_src;

static int local_fill(void *ctx, eng_aug_src *srcs, int n, eng_err *err) {
    local_src *s = ctx;
    if (s->next >= 2 || n != BATCH) return eng_fail(err, "no more batches");
    for (int i = 0; i < n; i++) srcs[i] = eng_image_as_src(&s->imgs[s->next][i]);
    s->next++;
    return 0;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

Test(train_job, steps_saves_resumes_and_reseeds_as_the_trainer_does, .timeout = 300) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    eng_config cfg;
    eng_err err = {0};
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0, "%s", err.msg);
    cfg.in_channels = 1;
    local_src src;
    memset(&src, 0, sizeof src);
    make_batch(0, src.imgs[0]);
    make_batch(1, src.imgs[1]);

    /* the single process: a checkpoint at step 0, then two steps */
    eng_trainer t;
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, BATCH);
    cr_assert(eng_trainer_create(&t, &cfg, &tc, local_fill, NULL, &src, &err) == 0, "%s", err.msg);
    uint8_t *blob0;
    size_t len0;
    cr_assert(eng_trainer_save(&t, &blob0, &len0, &err) == 0, "%s", err.msg);
    double local_loss[2];
    for (int s = 0; s < 2; s++) {
        cr_assert(eng_trainer_step(&t, &err) == 0, "%s", err.msg);
        local_loss[s] = t.stats.loss;
    }
    eng_trainer_free(&t);

    /* the job of two ranks from the same checkpoint, fed the same copies */
    train_job_opts o = {2, NULL, BARLOWD_MPIEXEC,
                        "-x OMP_NUM_THREADS=1 -x ASAN_OPTIONS=detect_leaks=0", 1.0, 60.0,
                        BARLOWD_BIN};
    atomic_int stop;
    atomic_init(&stop, 0);
    train_job j;
    char msg[512];
    cr_assert(train_job_start(&j, &o, blob0, len0, &stop, msg, sizeof msg) == 0, "%s", msg);
    cr_expect_eq(j.stats.step, 0);
    /* as the server sends them: the first step carries its batch and the next (which the job
     * augments while it trains), the second carries none here (the server would send the third) */
    cr_expect_eq(train_job_batches_wanted(&j), 2);
    eng_image both[2 * BATCH];
    memcpy(both, src.imgs[0], sizeof src.imgs[0]);
    memcpy(both + BATCH, src.imgs[1], sizeof src.imgs[1]);
    double job_loss[2];
    for (int s = 0; s < 2; s++) {
        cr_assert(train_job_step(&j, both, s == 0 ? 2 * BATCH : 0, msg, sizeof msg) == 0, "%s", msg);
        cr_expect_eq(j.stats.step, s + 1);
        cr_expect_eq(train_job_batches_wanted(&j), s == 0 ? 1 : 2, "after step %d", s + 1);
        job_loss[s] = j.stats.loss;
        cr_expect(rel(job_loss[s], local_loss[s]) < 1e-5, "step %d: job loss %.9g, one process %.9g",
                  s + 1, job_loss[s], local_loss[s]);
        cr_expect(j.last->corr_side > 0 && j.last->corr_d == cfg.proj[cfg.n_proj - 1],
                  "c block %d of %d", j.last->corr_side, j.last->corr_d);
    }
    uint8_t *blob2;
    size_t len2;
    cr_assert(train_job_save(&j, &blob2, &len2, msg, sizeof msg) == 0, "%s", msg);
    eng_ckpt_meta meta;
    cr_assert(eng_checkpoint_peek(blob2, len2, NULL, &meta, &err) == 0, "%s", err.msg);
    cr_expect_eq(meta.step, 2, "the job saved step %llu", (unsigned long long)meta.step);

    /* back to step 0: the same two steps again, one batch a step (nothing held ahead) */
    cr_assert(train_job_resume(&j, blob0, len0, msg, sizeof msg) == 0, "%s", msg);
    cr_expect_eq(j.stats.step, 0);
    cr_expect_eq(train_job_batches_wanted(&j), 2, "a resume keeps batches ahead");
    for (int s = 0; s < 2; s++) {
        cr_assert(train_job_step(&j, src.imgs[s], BATCH, msg, sizeof msg) == 0, "%s", msg);
        cr_expect(rel(j.stats.loss, job_loss[s]) < 1e-6, "replayed step %d: %.9g, first %.9g",
                  s + 1, j.stats.loss, job_loss[s]);
    }
    /* from step 0 with another seed: other augmentations, another loss */
    cr_assert(train_job_resume(&j, blob0, len0, msg, sizeof msg) == 0, "%s", msg);
    cr_assert(train_job_reseed(&j, 987654321, msg, sizeof msg) == 0, "%s", msg);
    cr_expect_eq(j.stats.step, 0, "a reseed moved the step to %ld", j.stats.step);
    cr_assert(train_job_step(&j, src.imgs[0], BATCH, msg, sizeof msg) == 0, "%s", msg);
    cr_expect(rel(j.stats.loss, job_loss[0]) > 1e-4, "reseeded step 1 gave the same loss %.9g",
              j.stats.loss);
    /* a step after a resume with a batch queued before it: the queue was dropped, so a step
     * with no batch has nothing to train and is the job's error, which ends the job */
    cr_assert(train_job_resume(&j, blob0, len0, msg, sizeof msg) == 0, "%s", msg);
    cr_expect(train_job_step(&j, both, 0, msg, sizeof msg) != 0, "a step without a batch ran");
    cr_expect(strstr(msg, "without a batch") != NULL, "%s", msg);
    train_job_end(&j);
    cr_assert(train_job_start(&j, &o, blob0, len0, &stop, msg, sizeof msg) == 0, "%s", msg);
    /* a batch of the wrong size is the job's error, reported, and ends the job */
    cr_expect(train_job_step(&j, src.imgs[0], BATCH - 1, msg, sizeof msg) != 0);
    cr_expect(strstr(msg, "training job") != NULL, "%s", msg);
    train_job_end(&j);
    cr_expect_eq(j.pid, 0, "mpirun was not reaped");
    free(blob0);
    free(blob2);
    free_batch(src.imgs[0]);
    free_batch(src.imgs[1]);
}
