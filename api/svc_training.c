/* svc_training.c — what the trainer and the re-embedder need of the service: random training
 * copies, the training log, and the doorbell from a publish to the re-embedder. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc_internal.h"

int svc_training_sample(svc *s, uint64_t *rng, eng_image *imgs, int n, svc_err *err) {
    int got = 0;
    for (int misses = 0; got < n && misses < 64;) {
        int64_t id;
        if (store_sample(s->st, &id, 1, rng, 0.0) != 1) break; /* none yet */
        eng_aug_src src;
        int64_t kept;
        int m = svc_load_copies(s, &id, 1, &imgs[got], &src, &kept, err);
        if (m < 0) return got ? got : -1; /* a store error: keep what was read */
        if (m == 0) { /* deleted since the draw, or a damaged row */
            misses++;
            continue;
        }
        if (imgs[got].channels != s->cfg.in_channels) {
            eng_image_free(&imgs[got]);
            misses++;
            continue;
        }
        got++;
    }
    return got;
}

int svc_log_training(svc *s, const eng_train_stats *st, svc_err *err) {
    store_log_row row = {st->step, (double)time(NULL), st->loss, st->lr, st->images_per_s,
                         st->diag_mean, st->offdiag_abs_mean};
    store_err se = {0};
    if (store_log_append(s->st, &row, &se))
        return svc_store_fail(s, err, &se, "training log: %s", se.msg);
    return 0;
}

void svc_ring_reembed(svc *s) {
    pthread_mutex_lock(&s->bell_mu);
    s->bell = 1;
    pthread_cond_broadcast(&s->bell_cv);
    pthread_mutex_unlock(&s->bell_mu);
}

void svc_wait_for_publish(svc *s, double seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double t = (double)until.tv_sec + until.tv_nsec * 1e-9 + seconds;
    until.tv_sec = (time_t)t;
    until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    pthread_mutex_lock(&s->bell_mu);
    while (!s->bell && !atomic_load(&s->stopping))
        if (pthread_cond_timedwait(&s->bell_cv, &s->bell_mu, &until) == ETIMEDOUT) break;
    s->bell = 0;
    pthread_mutex_unlock(&s->bell_mu);
}
