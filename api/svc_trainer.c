/* svc_trainer.c — the continual trainer as the service runs it: the engine's trainer over a
 * store-backed image source (random live images' training copies, drawn through the caller's
 * runner because the trainer's threads run under SCHED_IDLE). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc_internal.h"

typedef struct sample_job {
    svc *s;
    uint64_t *rng;
    eng_image *imgs;
    int n;       /* fill imgs[0, n) */
    int filled;  /* out: how many */
} sample_job;

static void sample_on_runner(void *arg) {
    sample_job *j = arg;
    svc_err e = {0};
    int got = svc_training_sample(j->s, j->rng, j->imgs, j->n, &e);
    j->filled = got > 0 ? got : 0;
}

int svc_training_draw(svc *s, uint64_t *rng, eng_image *imgs, int n, const atomic_int *stop,
                      svc_run_fn run, void *runner, svc_err *err) {
    for (int from = 0; from < n;) {
        if (stop && atomic_load(stop)) return eng_fail(err, "stopping");
        sample_job j = {s, rng, imgs + from, n - from, 0};
        if (run)
            run(runner, sample_on_runner, &j);
        else
            sample_on_runner(&j);
        from += j.filled;
        if (from < n) {
            struct timespec pause = {0, 100 * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    return 0;
}

/* The trainer's source of images (on the augmentation thread): n random live images. Waits
 * while there are none; fails only when stopping or before a service is attached. */
static int store_fill(void *ctx, eng_aug_src *srcs, int n, eng_err *err) {
    svc_trainer *tr = ctx;
    /* once per augmentation thread: a resume restarts the stream on a new one */
    unsigned long self = (unsigned long)pthread_self();
    if (tr->thread_init && tr->ready_thread != self) {
        tr->thread_init();
        tr->ready_thread = self;
    }
    for (int i = 0; i < n; i++) eng_image_free(&tr->imgs[i]);
    svc *s = atomic_load(&tr->s);
    if (!s) return eng_fail(err, "trainer: no service to draw images from");
    if (svc_training_draw(s, &tr->rng, tr->imgs, n, tr->stop, tr->run, tr->runner, err)) return -1;
    for (int i = 0; i < n; i++) srcs[i] = eng_image_as_src(&tr->imgs[i]);
    return 0;
}

int svc_trainer_create(svc_trainer *tr, const eng_config *cfg, int batch, uint64_t seed,
                       const void *newest, size_t newest_len, const atomic_int *stop,
                       svc_run_fn run, void *runner, void (*thread_init)(void),
                       uint8_t **initial, size_t *initial_len, svc_err *err) {
    memset(tr, 0, sizeof *tr);
    atomic_init(&tr->s, NULL);
    tr->run = run;
    tr->runner = runner;
    tr->thread_init = thread_init;
    tr->stop = stop;
    tr->batch = batch;
    tr->rng = seed * 0x9e3779b97f4a7c15ULL + 7;
    *initial = NULL;
    tr->imgs = calloc((size_t)batch, sizeof *tr->imgs);
    if (!tr->imgs) return svc_fail(err, ERR_NO_MEMORY, "out of memory");
    eng_trainer_cfg tc = eng_trainer_defaults(cfg, batch);
    tc.seed = seed;
    eng_err e = {0};
    if (eng_trainer_create(&tr->t, cfg, &tc, store_fill, NULL, tr, &e))
        return svc_fail(err, svc_code_of(&e), "building the trainer: %s", e.msg);
    tr->created = 1;
    if (stop) eng_trainer_interrupt_on(&tr->t, stop);
    if (newest) {
        if (eng_trainer_resume(&tr->t, newest, newest_len, &e))
            return svc_fail(err, svc_code_of(&e), "resuming from the newest model version: %s",
                            e.msg);
        return 0;
    }
    if (eng_trainer_save(&tr->t, initial, initial_len, &e))
        return svc_fail(err, svc_code_of(&e), "saving the initial model: %s", e.msg);
    return 0;
}

void svc_trainer_attach(svc_trainer *tr, svc *s) { atomic_store(&tr->s, s); }

int svc_trainer_step(svc_trainer *tr, svc_err *err) {
    eng_err e = {0};
    if (eng_trainer_step(&tr->t, &e)) return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    return 0;
}

const eng_train_stats *svc_trainer_stats(const svc_trainer *tr) { return &tr->t.stats; }

int svc_trainer_save(svc_trainer *tr, double wait_s, uint8_t **blob, size_t *len,
                     eng_train_stats *at, svc_err *err) {
    eng_err e = {0};
    if (eng_trainer_save_within(&tr->t, wait_s, blob, len, at, &e))
        return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    return 0;
}

int svc_trainer_restart(svc_trainer *tr, const void *blob, size_t len, svc_err *err) {
    eng_err e = {0};
    if (eng_trainer_resume(&tr->t, blob, len, &e))
        return svc_fail(err, svc_code_of(&e), "restarting training: %s", e.msg);
    return 0;
}

void svc_trainer_free(svc_trainer *tr) {
    if (tr->created) eng_trainer_free(&tr->t); /* joins the augmentation thread (fill sees stop) */
    for (int i = 0; tr->imgs && i < tr->batch; i++) eng_image_free(&tr->imgs[i]);
    free(tr->imgs);
    memset(tr, 0, sizeof *tr);
}
