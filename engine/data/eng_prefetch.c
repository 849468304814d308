/* eng_prefetch.c — the prefetch thread: two batch slots, one being filled while the caller
 * trains on the other. */
#include "eng_prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_FREE, SLOT_READY, SLOT_HELD };

typedef struct aug_slot {
    float *a, *b; /* owned views [n, C, S, S] */
    int state;    /* SLOT_FREE (thread may fill), SLOT_READY (done), SLOT_HELD (caller's) */
} aug_slot;

struct eng_aug_prefetch {
    eng_aug_cfg cfg;         /* copied config */
    int n;                   /* images per batch (fill's) */
    int first, count;        /* the augmented shard: images first .. first+count-1 */
    uint64_t seed;           /* batch k uses seed + k */
    eng_aug_fill_fn fill;    /* source supplier */
    void *fill_ctx;          /* borrowed */
    eng_aug_src *srcs;       /* owned, n entries, written by fill on the thread */
    aug_slot slot[2];        /* batch k lives in slot k % 2 */
    uint64_t produced;       /* batches completed by the thread (guarded by mu) */
    uint64_t consumed;       /* batches handed to the caller (guarded by mu) */
    int held;                /* slot the caller holds, or -1 (guarded by mu) */
    int failed;              /* the thread failed producing batch `produced` (guarded by mu) */
    eng_err fail_err;        /* why (guarded by mu) */
    int stop;                /* free() asks the thread to exit (guarded by mu) */
    int thread_started;      /* 1 once pthread_create succeeded */
    pthread_t thread;        /* the producer */
    pthread_mutex_t mu;      /* guards the fields marked above and slot states */
    pthread_cond_t space;    /* signalled when a slot becomes free or stop is set */
    pthread_cond_t ready;    /* signalled when a batch is ready or the thread failed */
};

static void *prefetch_main(void *arg) {
    eng_aug_prefetch *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        uint64_t k = p->produced;
        aug_slot *s = &p->slot[k % 2];
        while (!p->stop && s->state != SLOT_FREE) pthread_cond_wait(&p->space, &p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;

        /* The slot is free and only this thread touches it until it is marked ready. */
        eng_err e = {0};
        int rc = p->fill(p->fill_ctx, p->srcs, p->n, &e);
        if (rc != 0) {
            if (e.msg[0] == '\0') eng_fail(&e, "augment: the image source failed");
        } else {
            rc = eng_aug_batch_from(&p->cfg, p->srcs + p->first, p->count, p->first,
                                    p->seed + k, s->a, s->b, &e);
        }

        pthread_mutex_lock(&p->mu);
        if (rc != 0) {
            p->failed = 1;
            p->fail_err = e;
            pthread_cond_broadcast(&p->ready);
            pthread_mutex_unlock(&p->mu);
            break;
        }
        s->state = SLOT_READY;
        p->produced = k + 1;
        pthread_cond_broadcast(&p->ready);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

int eng_aug_prefetch_create(eng_aug_prefetch **out, const eng_aug_cfg *cfg, int n, uint64_t seed,
                            eng_aug_fill_fn fill, void *fill_ctx, eng_err *err) {
    return eng_aug_prefetch_create_shard(out, cfg, n, 0, n, seed, fill, fill_ctx, err);
}

int eng_aug_prefetch_create_shard(eng_aug_prefetch **out, const eng_aug_cfg *cfg, int n,
                                  int first, int count, uint64_t seed, eng_aug_fill_fn fill,
                                  void *fill_ctx, eng_err *err) {
    if (!out) return eng_fail(err, "augment: prefetch needs an output pointer");
    *out = NULL;
    if (eng_aug_cfg_check(cfg, err) != 0) return -1;
    if (n < 1) return eng_fail(err, "augment: prefetch batch size must be >= 1 (got %d)", n);
    if (first < 0 || count < 1 || first + count > n)
        return eng_fail(err, "augment: shard %d+%d is not inside a batch of %d", first, count, n);
    if (!fill) return eng_fail(err, "augment: prefetch needs a fill callback");
    eng_aug_prefetch *p = calloc(1, sizeof *p);
    if (!p) return eng_fail(err, "augment: out of memory for the prefetcher");
    p->cfg = *cfg;
    p->n = n;
    p->first = first;
    p->count = count;
    p->seed = seed;
    p->fill = fill;
    p->fill_ctx = fill_ctx;
    p->held = -1;
    size_t floats = (size_t)count * cfg->channels * cfg->size * cfg->size;
    p->srcs = calloc((size_t)n, sizeof *p->srcs);
    int ok = p->srcs != NULL;
    for (int k = 0; k < 2 && ok; k++) {
        p->slot[k].a = malloc(sizeof(float) * floats);
        p->slot[k].b = malloc(sizeof(float) * floats);
        p->slot[k].state = SLOT_FREE;
        ok = p->slot[k].a && p->slot[k].b;
    }
    if (!ok) {
        eng_aug_prefetch_free(p); /* thread not started, sync objects not yet initialised */
        return eng_fail(err, "augment: out of memory for prefetch buffers (%zu floats)", floats);
    }
    int sync = 0;
    if (pthread_mutex_init(&p->mu, NULL) == 0) sync++;
    if (sync == 1 && pthread_cond_init(&p->space, NULL) == 0) sync++;
    if (sync == 2 && pthread_cond_init(&p->ready, NULL) == 0) sync++;
    if (sync == 3 && pthread_create(&p->thread, NULL, prefetch_main, p) == 0) {
        p->thread_started = 1;
        *out = p;
        return 0;
    }
    if (sync >= 3) pthread_cond_destroy(&p->ready);
    if (sync >= 2) pthread_cond_destroy(&p->space);
    if (sync >= 1) pthread_mutex_destroy(&p->mu);
    for (int k = 0; k < 2; k++) {
        free(p->slot[k].a);
        free(p->slot[k].b);
    }
    free(p->srcs);
    free(p);
    return eng_fail(err, "augment: could not start the prefetch thread");
}

int eng_aug_prefetch_next(eng_aug_prefetch *p, const float **a, const float **b, eng_err *err) {
    if (!p || !a || !b) return eng_fail(err, "augment: prefetch_next needs the object and outputs");
    pthread_mutex_lock(&p->mu);
    if (p->held >= 0) {
        p->slot[p->held].state = SLOT_FREE;
        p->held = -1;
        pthread_cond_broadcast(&p->space);
    }
    uint64_t k = p->consumed;
    aug_slot *s = &p->slot[k % 2];
    while (s->state != SLOT_READY && !(p->failed && p->produced == k))
        pthread_cond_wait(&p->ready, &p->mu);
    if (s->state != SLOT_READY) {
        eng_err e = p->fail_err;
        pthread_mutex_unlock(&p->mu);
        return eng_fail(err, "augment: prefetch batch %llu: %s", (unsigned long long)k, e.msg);
    }
    s->state = SLOT_HELD;
    p->held = (int)(k % 2);
    p->consumed = k + 1;
    *a = s->a;
    *b = s->b;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void eng_aug_prefetch_free(eng_aug_prefetch *p) {
    if (!p) return;
    if (p->thread_started) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->space);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
        pthread_cond_destroy(&p->ready);
        pthread_cond_destroy(&p->space);
        pthread_mutex_destroy(&p->mu);
    }
    for (int k = 0; k < 2; k++) {
        free(p->slot[k].a);
        free(p->slot[k].b);
    }
    free(p->srcs);
    free(p);
}
