/* eng_trainer.c — the training loop over an augmentation prefetcher. */
#include "eng_trainer.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

eng_trainer_cfg eng_trainer_defaults(const eng_config *model, int batch) {
    eng_trainer_cfg c;
    memset(&c, 0, sizeof c);
    c.batch = batch;
    c.seed = 1;
    c.opt = eng_lars_defaults(batch);
    /* the recipe tuned on Fashion-MNIST (docs/QUALITY.md, trial u2): solo-learn's CIFAR LARS
     * settings with its loss scale of 0.1 folded in (weight decay 1e-4 / 0.1, and the
     * non-adapted biases' rate 0.3 * 0.1) — k-NN-20 0.860 after 2 epochs against the paper's
     * 0.813 */
    c.opt.lr_weights = 0.3;
    c.opt.weight_decay = 1e-3;
    c.opt.eta = 0.02;
    c.opt.lr_biases = 0.03;
    c.opt.warmup = 200;
    c.opt.cosine = 0;
    c.aug = eng_aug_defaults(model->input_size, model->in_channels);
    c.aug.threads = 1;
    return c;
}

/* (Re)starts the data stream so that the next batch is batch `step`. */
static int start_stream(eng_trainer *t, long step, eng_err *err) {
    eng_aug_prefetch_free(t->prefetch);
    t->prefetch = NULL;
    if (t->seek) t->seek(t->fill_ctx, t->cfg.seed, (uint64_t)step);
    return eng_aug_prefetch_create_shard(&t->prefetch, &t->cfg.aug, t->cfg.batch, t->shard_first,
                                         t->model.batch, t->cfg.seed + (uint64_t)step, t->fill,
                                         t->fill_ctx, err);
}

int eng_trainer_create(eng_trainer *t, const eng_config *model, const eng_trainer_cfg *cfg,
                       eng_aug_fill_fn fill, eng_seek_fn seek, void *fill_ctx, eng_err *err) {
    return eng_trainer_create_shard(t, model, cfg, 0, cfg->batch, NULL, fill, seek, fill_ctx, err);
}

int eng_trainer_create_shard(eng_trainer *t, const eng_config *model, const eng_trainer_cfg *cfg,
                             int first, int count, const eng_reduce *red, eng_aug_fill_fn fill,
                             eng_seek_fn seek, void *fill_ctx, eng_err *err) {
    memset(t, 0, sizeof *t);
    if (first < 0 || count < 1 || first + count > cfg->batch || (!red && count != cfg->batch))
        return eng_fail(err, "trainer: images %d+%d are not a shard of a batch of %d", first,
                        count, cfg->batch);
    if (cfg->aug.size != model->input_size || cfg->aug.channels != model->in_channels)
        return eng_fail(err, "trainer: augmentation makes %dx%d views with %d channels, the "
                             "model wants %dx%d with %d",
                        cfg->aug.size, cfg->aug.size, cfg->aug.channels, model->input_size,
                        model->input_size, model->in_channels);
    t->cfg = *cfg;
    t->cfg.opt.batch = cfg->batch;
    t->fill = fill;
    t->seek = seek;
    t->fill_ctx = fill_ctx;
    t->shard_first = first;
    if (eng_model_build_shard(&t->model, model, count, cfg->batch, red, 1, err)) return -1;
    eng_model_init_params(&t->model, cfg->seed);
    pthread_mutex_init(&t->commit_mu, NULL);
    t->stats_done = malloc(t->model.n_stats * sizeof(float) + 1);
    if (!t->stats_done) {
        eng_fail(err, "trainer: out of memory");
        eng_trainer_free(t);
        return -1;
    }
    memcpy(t->stats_done, t->model.stats, t->model.n_stats * sizeof(float));
    return 0; /* the data stream starts with the first step */
}

/* A checksum of the parameters, the optimiser state and the running statistics. */
static uint64_t state_checksum(const eng_model *m) {
    uint64_t h = eng_checksum_f32(ENG_CHECKSUM_SEED, m->params, m->n_floats);
    h = eng_checksum_f32(h, m->momentum, m->n_floats);
    return eng_checksum_f32(h, m->stats, m->n_stats);
}

int eng_trainer_step(eng_trainer *t, eng_err *err) {
    double t0 = now_s();
    if (!t->prefetch && start_stream(t, t->stats.step, err)) return -1;
    const float *a, *b;
    if (eng_aug_prefetch_next(t->prefetch, &a, &b, err)) return -1;
    size_t half = t->model.input.bytes / 2;
    float *in = eng_model_input(&t->model);
    memcpy(in, a, half);
    memcpy((char *)in + half, b, half);
    long step = t->stats.step;
    eng_model *m = &t->model;
    if (eng_model_forward_backward(m, err)) { /* the running statistics are half-way */
        memcpy(m->stats, t->stats_done, m->n_stats * sizeof(float));
        return -1;
    }
    pthread_mutex_lock(&t->commit_mu);
    eng_lars_step(&t->cfg.opt, m->tab, m->n_params, m->params, m->grads, m->momentum, step);
    memcpy(t->stats_done, m->stats, m->n_stats * sizeof(float));
    double dt = now_s() - t0;
    t->stats.step = step + 1;
    t->stats.loss = t->model.last_loss;
    t->stats.lr = eng_lars_lr_scale(&t->cfg.opt, step) * t->cfg.opt.lr_weights;
    t->stats.images_per_s = dt > 0 ? t->cfg.batch / dt : 0;
    t->stats.diag_mean = t->model.loss.diag_mean;
    t->stats.offdiag_abs_mean = t->model.loss.offdiag_abs_mean;
    pthread_mutex_unlock(&t->commit_mu);
    /* outside the lock (a collective may wait for a slow rank; only this thread writes what the
     * checksum reads): the step is committed either way, and a job whose ranks differ ends */
    if (m->red) {
        int same = 0;
        if (m->red->agree_u64(m->red->ctx, state_checksum(m), &same, err)) return -1;
        if (!same) return eng_fail(err, "trainer: the ranks' parameters differ after step %ld", step);
    }
    return 0;
}

int eng_trainer_corr_block(const eng_trainer *t, int max_side, float *out) {
    assert(max_side >= 1 && out);
    const eng_bt_loss *l = &t->model.loss;
    if (t->stats.step == 0 || !l->c.data) return 0;
    int side = l->d < max_side ? l->d : max_side;
    for (int i = 0; i < side; i++)
        memcpy(out + (size_t)i * side, l->c.data + (size_t)i * l->d, (size_t)side * sizeof(float));
    return side;
}

void eng_trainer_interrupt_on(eng_trainer *t, const atomic_int *flag) { t->model.stop = flag; }

/* The checkpoint of the last completed step; commit_mu held by the caller. */
static int save_locked(const eng_trainer *t, uint8_t **blob, size_t *len, eng_err *err) {
    eng_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = (uint64_t)t->stats.step;
    meta.loss = t->stats.step ? t->stats.loss : NAN;
    meta.opt = t->cfg.opt;
    /* the seed travels as a generator state: everything random derives from it and the step */
    meta.n_rng = 1;
    meta.rng[0].s[0] = t->cfg.seed;
    return eng_checkpoint_save_stats(&t->model, t->stats_done, &meta, blob, len, err);
}

int eng_trainer_save(eng_trainer *t, uint8_t **blob, size_t *len, eng_err *err) {
    pthread_mutex_lock(&t->commit_mu);
    int r = save_locked(t, blob, len, err);
    pthread_mutex_unlock(&t->commit_mu);
    return r;
}

int eng_trainer_save_within(eng_trainer *t, double wait_s, uint8_t **blob, size_t *len,
                            eng_train_stats *saved, eng_err *err) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double s = (double)until.tv_sec + until.tv_nsec * 1e-9 + (wait_s > 0 ? wait_s : 0);
    until.tv_sec = (time_t)s;
    until.tv_nsec = (long)((s - (double)until.tv_sec) * 1e9);
    *blob = NULL;
    *len = 0;
    int r = pthread_mutex_timedlock(&t->commit_mu, &until);
    if (r == ETIMEDOUT) return eng_fail(err, "trainer: busy (a step's update held it %.1f s)", wait_s);
    if (r) return eng_fail(err, "trainer: cannot lock its state (%s)", strerror(r));
    r = save_locked(t, blob, len, err);
    if (saved) *saved = t->stats;
    pthread_mutex_unlock(&t->commit_mu);
    return r;
}

int eng_trainer_resume(eng_trainer *t, const void *blob, size_t len, eng_err *err) {
    eng_ckpt_meta meta;
    if (eng_checkpoint_peek(blob, len, NULL, &meta, err)) return -1;
    if (meta.n_rng < 1) return eng_fail(err, "trainer: checkpoint has no seed");
    if (meta.opt.batch != t->cfg.batch)
        return eng_fail(err, "trainer: checkpoint trained at batch %d, this trainer runs %d",
                        meta.opt.batch, t->cfg.batch);
    pthread_mutex_lock(&t->commit_mu);
    if (eng_checkpoint_load(&t->model, blob, len, NULL, err)) {
        pthread_mutex_unlock(&t->commit_mu);
        return -1;
    }
    memcpy(t->stats_done, t->model.stats, t->model.n_stats * sizeof(float));
    pthread_mutex_unlock(&t->commit_mu);
    t->cfg.opt = meta.opt;
    t->cfg.seed = meta.rng[0].s[0];
    memset(&t->stats, 0, sizeof t->stats);
    t->stats.step = (long)meta.step;
    t->stats.loss = meta.loss;
    eng_aug_prefetch_free(t->prefetch); /* the next step restarts the stream at this step */
    t->prefetch = NULL;
    return 0;
}

void eng_trainer_reseed(eng_trainer *t, uint64_t seed) {
    t->cfg.seed = seed;
    eng_aug_prefetch_free(t->prefetch); /* the next step restarts the stream with the new seed */
    t->prefetch = NULL;
}

void eng_trainer_free(eng_trainer *t) {
    eng_aug_prefetch_free(t->prefetch);
    eng_model_free(&t->model);
    if (t->stats_done) pthread_mutex_destroy(&t->commit_mu);
    free(t->stats_done);
    memset(t, 0, sizeof *t);
}
