/* test_trainer.c — the training loop: bit-for-bit resume, statistics, learning on a small
 * synthetic set, and the IDX and directory sources. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_source.h"
#include "eng_trainer.h"
#include "test_util.h"

/* n synthetic gray images of side x side: smooth blobs at varying places, so views of one image
 * resemble each other more than views of another. */
static void synthetic_source(eng_source *src, int n, int side) {
    eng_err err = {0};
    memset(src, 0, sizeof *src);
    src->channels = 1;
    src->images = calloc((size_t)n, sizeof *src->images);
    for (int i = 0; i < n; i++) {
        cr_assert(eng_image_alloc(&src->images[i], side, side, 1, &err) == 0, "%s", err.msg);
        double cx = side * (0.2 + 0.6 * ((i * 7) % 11) / 10.0),
               cy = side * (0.2 + 0.6 * ((i * 3) % 7) / 6.0);
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++) {
                double d = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (side * side * 0.02);
                src->images[i].pixels[y * side + x] = (uint8_t)(30 + 200 * exp(-d) + (i % 5) * 5);
            }
        src->n = (size_t)i + 1;
    }
}

static void seek_source(void *ctx, uint64_t seed, uint64_t batch) {
    eng_source_seek(ctx, seed, batch);
}

static void make_trainer(eng_trainer *t, eng_source *src, uint64_t seed) {
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0);
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, 8);
    tc.seed = seed;
    tc.opt.warmup = 2;
    cr_assert(eng_trainer_create(t, &cfg, &tc, eng_source_fill, seek_source, src, &err) == 0,
              "%s", err.msg);
}

Test(trainer, resuming_from_a_checkpoint_reproduces_the_run_bit_for_bit) {
    eng_err err = {0};
    eng_source src;
    synthetic_source(&src, 40, 24);
    eng_trainer straight, first, second;
    make_trainer(&straight, &src, 3);
    for (int s = 0; s < 6; s++) cr_assert(eng_trainer_step(&straight, &err) == 0, "%s", err.msg);

    make_trainer(&first, &src, 3);
    for (int s = 0; s < 3; s++) cr_assert(eng_trainer_step(&first, &err) == 0, "%s", err.msg);
    uint8_t *blob;
    size_t len;
    cr_assert(eng_trainer_save(&first, &blob, &len, &err) == 0, "%s", err.msg);
    eng_trainer_free(&first);
    make_trainer(&second, &src, 99); /* another seed: the checkpoint's must win */
    cr_assert(eng_trainer_resume(&second, blob, len, &err) == 0, "%s", err.msg);
    cr_expect_eq(second.stats.step, 3);
    for (int s = 0; s < 3; s++) cr_assert(eng_trainer_step(&second, &err) == 0, "%s", err.msg);
    cr_expect(memcmp(straight.model.params, second.model.params,
                     straight.model.n_floats * sizeof(float)) == 0,
              "6 straight steps and 3 + save + resume + 3 differ (rel %.3g)",
              tu_rel_l2(second.model.params, straight.model.params, straight.model.n_floats));
    cr_expect(straight.stats.loss == second.stats.loss, "loss %.9g vs %.9g", straight.stats.loss,
              second.stats.loss);
    /* a reseeded resume is another stream from the same weights; the old seed again is the
     * same stream */
    eng_trainer again;
    make_trainer(&again, &src, 3);
    cr_assert(eng_trainer_resume(&again, blob, len, &err) == 0, "%s", err.msg);
    eng_trainer_reseed(&again, 4);
    for (int s = 0; s < 3; s++) cr_assert(eng_trainer_step(&again, &err) == 0, "%s", err.msg);
    cr_expect(memcmp(straight.model.params, again.model.params,
                     straight.model.n_floats * sizeof(float)) != 0, "a new seed replayed the run");
    cr_assert(eng_trainer_resume(&again, blob, len, &err) == 0, "%s", err.msg);
    eng_trainer_reseed(&again, again.cfg.seed);
    for (int s = 0; s < 3; s++) cr_assert(eng_trainer_step(&again, &err) == 0, "%s", err.msg);
    cr_expect(memcmp(straight.model.params, again.model.params,
                     straight.model.n_floats * sizeof(float)) == 0, "the same seed differs");
    eng_trainer_free(&again);
    free(blob);
    eng_trainer_free(&straight);
    eng_trainer_free(&second);
    eng_source_free(&src);
}

/* A stop request (SIGTERM in the server) gives up inside the step: the step counts for nothing,
 * and the checkpoint is the last completed step's exactly, although the interrupted forward pass
 * had already moved the stem's running statistics. */
Test(trainer, an_interrupted_step_leaves_the_last_completed_step_to_save) {
    eng_err err = {0};
    eng_source src;
    synthetic_source(&src, 40, 24);
    eng_trainer t;
    make_trainer(&t, &src, 5);
    for (int s = 0; s < 2; s++) cr_assert(eng_trainer_step(&t, &err) == 0, "%s", err.msg);
    uint8_t *before, *after, *within;
    size_t n_before, n_after, n_within;
    cr_assert(eng_trainer_save(&t, &before, &n_before, &err) == 0, "%s", err.msg);
    float *stats = malloc(t.model.n_stats * sizeof(float));
    memcpy(stats, t.model.stats, t.model.n_stats * sizeof(float));
    atomic_int stop = 1;
    eng_trainer_interrupt_on(&t, &stop);
    cr_expect(eng_trainer_step(&t, &err) != 0, "a step ran to the end although told to stop");
    cr_expect(eng_model_stopped(&t.model));
    cr_expect(strstr(err.msg, "interrupted") != NULL, "%s", err.msg);
    cr_expect_eq(t.stats.step, 2, "the interrupted step counted (%ld)", t.stats.step);
    cr_expect(memcmp(stats, t.model.stats, t.model.n_stats * sizeof(float)) == 0,
              "the interrupted step left its running statistics behind");
    cr_assert(eng_trainer_save(&t, &after, &n_after, &err) == 0, "%s", err.msg);
    cr_assert(eng_trainer_save_within(&t, 0.5, &within, &n_within, NULL, &err) == 0, "%s", err.msg);
    cr_expect(n_before == n_after && !memcmp(before, after, n_before),
              "the checkpoint after an interrupted step differs from the one before it");
    cr_expect(n_before == n_within && !memcmp(before, within, n_before));
    /* a step's update in progress (the lock held) makes save_within give up, not hang */
    pthread_mutex_lock(&t.commit_mu);
    uint8_t *busy;
    size_t n_busy;
    cr_expect(eng_trainer_save_within(&t, 0.05, &busy, &n_busy, NULL, &err) != 0);
    cr_expect(busy == NULL && strstr(err.msg, "busy") != NULL, "%s", err.msg);
    pthread_mutex_unlock(&t.commit_mu);
    /* resumed from that checkpoint, it trains on */
    eng_trainer_interrupt_on(&t, NULL);
    cr_assert(eng_trainer_resume(&t, after, n_after, &err) == 0, "%s", err.msg);
    cr_expect(eng_trainer_step(&t, &err) == 0, "%s", err.msg);
    cr_expect_eq(t.stats.step, 3);
    free(before);
    free(after);
    free(within);
    free(stats);
    eng_trainer_free(&t);
    eng_source_free(&src);
}

Test(trainer, reports_statistics_and_learns_on_a_small_set) {
    eng_err err = {0};
    eng_source src;
    synthetic_source(&src, 64, 24);
    eng_trainer t;
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0);
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, 32);
    tc.seed = 5;
    tc.opt.warmup = 5;
    cr_assert(eng_trainer_create(&t, &cfg, &tc, eng_source_fill, seek_source, &src, &err) == 0,
              "%s", err.msg);
    double first = 0, last = 0, diag0 = 0, diag1 = 0, off0 = 0, off1 = 0;
    int d = t.model.loss.d;
    float *full = malloc(sizeof(float) * (size_t)d * d), corner[9];
    cr_assert(full);
    cr_expect_eq(eng_trainer_corr_block(&t, d, full), 0, "a block before the first step");
    for (int s = 0; s < 150; s++) {
        cr_assert(eng_trainer_step(&t, &err) == 0, "%s", err.msg);
        if (s < 5) {
            first += t.stats.loss / 5;
            diag0 += t.stats.diag_mean / 5;
            off0 += t.stats.offdiag_abs_mean / 5;
        }
        if (s >= 145) {
            last += t.stats.loss / 5;
            diag1 += t.stats.diag_mean / 5;
            off1 += t.stats.offdiag_abs_mean / 5;
        }
        cr_assert(isfinite(t.stats.loss) && t.stats.images_per_s > 0);
        cr_assert(t.stats.diag_mean > -1.01 && t.stats.diag_mean < 1.01);
    }
    cr_expect_eq(t.stats.step, 150);
    double want_lr = eng_lars_lr_scale(&t.cfg.opt, 149) * t.cfg.opt.lr_weights;
    cr_expect(fabs(t.stats.lr - want_lr) < 1e-12, "lr %.6g, schedule says %.6g", t.stats.lr, want_lr);
    cr_expect(last < 0.8 * first, "loss went from %.3f to %.3f over 150 steps", first, last);
    /* the cross-correlation matrix moves toward the identity in the loss's own measure (the
     * loss above is Σ(1−c_ii)² + λΣc_ij²): its diagonal rises toward 1. On this small synthetic
     * set mean |c_ij| does not fall within 150 steps (it goes ~0.19 → ~0.26 while c_ii goes
     * ~0.1 → ~0.45; λ weighs it 200× less), so only its bound is checked. */
    cr_expect(diag1 > diag0 + 0.1 && diag1 <= 1.0, "mean c_ii went from %.3f to %.3f", diag0,
              diag1);
    cr_expect(off1 < 1.0 && off0 < 1.0, "mean |c_ij| %.4f, %.4f", off0, off1);
    /* the dashboard's block is the last step's c: the whole matrix's diagonal and off-diagonal
     * means are the step's statistics, and a smaller block is its leading corner */
    cr_assert_eq(eng_trainer_corr_block(&t, d, full), d);
    double diag = 0, off = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) (i == j ? diag += full[i * d + j] : (off += fabs(full[i * d + j])));
    cr_expect(fabs(diag / d - t.stats.diag_mean) < 1e-5, "block diagonal %.6f, step %.6f",
              diag / d, t.stats.diag_mean);
    cr_expect(fabs(off / ((double)d * (d - 1)) - t.stats.offdiag_abs_mean) < 1e-5);
    cr_assert_eq(eng_trainer_corr_block(&t, 3, corner), 3);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) cr_expect_eq(corner[i * 3 + j], full[i * d + j]);
    free(full);
    eng_trainer_free(&t);
    eng_source_free(&src);
}

Test(trainer, refuses_augmentation_that_does_not_fit_the_model) {
    eng_err err = {0};
    eng_source src;
    synthetic_source(&src, 4, 24);
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0);
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, 4);
    tc.aug.size = 20;
    eng_trainer t;
    cr_expect(eng_trainer_create(&t, &cfg, &tc, eng_source_fill, seek_source, &src, &err) != 0);
    cr_expect(strstr(err.msg, "augmentation") != NULL, "message: %s", err.msg);
    eng_source_free(&src);
}

Test(trainer, sources_load_idx_files_and_image_directories) {
    eng_err err = {0};
    char dir[] = "/tmp/barlowd-src-XXXXXX";
    cr_assert(mkdtemp(dir) != NULL);
    char p[128];
    /* an IDX file of 3 images of 5x4 */
    snprintf(p, sizeof p, "%s/set.idx", dir);
    FILE *f = fopen(p, "wb");
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    fwrite(hdr, 1, 16, f);
    for (int i = 0; i < 60; i++) fputc(i * 4, f);
    fclose(f);
    eng_source src;
    cr_assert(eng_source_open(&src, p, 3, 64, &err) == 0, "%s", err.msg);
    cr_expect(src.n == 3 && src.images[1].width == 5 && src.images[1].height == 4);
    cr_expect(src.images[1].channels == 3 && src.images[1].pixels[0] == 80, "gray replicated");
    eng_source_free(&src);
    unlink(p);
    /* a directory of two PGMs, one large enough to be downscaled */
    snprintf(p, sizeof p, "%s/a.pgm", dir);
    f = fopen(p, "wb");
    fprintf(f, "P5\n4 2\n255\n");
    for (int i = 0; i < 8; i++) fputc(100, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/b.pgm", dir);
    f = fopen(p, "wb");
    fprintf(f, "P5\n200 100\n255\n");
    for (int i = 0; i < 20000; i++) fputc(i % 256, f);
    fclose(f);
    cr_assert(eng_source_open(&src, dir, 1, 50, &err) == 0, "%s", err.msg);
    cr_assert_eq(src.n, 2);
    cr_expect(src.images[0].width == 4 && src.images[0].pixels[3] == 100);
    cr_expect(src.images[1].height == 50 && src.images[1].width == 100, "b downscaled to %dx%d",
              src.images[1].width, src.images[1].height);
    eng_aug_src batch[5];
    eng_source_seek(&src, 7, 0);
    cr_assert(eng_source_fill(&src, batch, 5, &err) == 0);
    eng_aug_src again[5];
    eng_source_seek(&src, 7, 0);
    cr_assert(eng_source_fill(&src, again, 5, &err) == 0);
    for (int i = 0; i < 5; i++) cr_expect(batch[i].pixels == again[i].pixels, "batch 0 redrawn");
    eng_source_free(&src);
    /* a file that is not an image is refused by name */
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    f = fopen(p, "wb");
    fprintf(f, "hello");
    fclose(f);
    cr_expect(eng_source_open(&src, dir, 1, 50, &err) != 0);
    cr_expect(strstr(err.msg, "notes.txt") != NULL, "message: %s", err.msg);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(system(cmd) == 0);
}
