/* workers.h — the server's background threads: the continual trainer, the embedder of fresh
 * uploads, and the re-embedder that brings each published version into service.
 *
 * Priorities: request threads run at normal priority; the trainer (and its augmentation and
 * OpenMP threads, which inherit it) runs under SCHED_IDLE, so an inference request gets a core
 * at once and training takes whatever the requests leave; the embedders run at nice 5 (fresh
 * uploads) and nice 10 (re-embedding). The SCHED_IDLE threads take no lock that a request
 * needs: their store and service calls go through a proxy thread (proxy_thread.h). */
#ifndef WORKERS_H
#define WORKERS_H

#include <pthread.h>
#include <stdatomic.h>

#include "svc.h"
#include "proxy_thread.h"
#include "train_job.h"

typedef struct train_worker {
    svc *s;                       /* borrowed (set by train_worker_start) */
    atomic_int stop;              /* also interrupts a running step */
    atomic_long published_step;   /* the step of the newest checkpoint this worker published */
    atomic_long attempted_step;   /* ... or tried to (a full disk): the next try is due from it */
    int idle_stuck;               /* threads left SCHED_IDLE by train_worker_signal_stop */
    svc_trainer tr;               /* the trainer and its store-backed image source */
    long min_images;
    long publish_steps;           /* 0: by time only */
    double publish_seconds;       /* 0: by steps only */
    long idle_steps;              /* 0: never pause */
    pthread_t thread;
    int running;
    /* The trainer (its model is most of the process's memory: 1.2 GB for small at batch 256)
     * exists only while training runs: train_main builds it from the newest checkpoint when
     * there are images to train on, and frees it after release_after seconds of waiting or
     * pause (its last step published first). Built and freed only by the trainer's thread. */
    eng_config cfg;
    int batch;
    uint64_t seed;
    double release_after;         /* seconds; 0: never free it */
    atomic_int tr_stop;           /* the trainer's interrupt and source flag: stop, or a release */
    pthread_mutex_t tr_mu;        /* held while the trainer is built or freed */
    eng_train_stats held;         /* what /status shows while no trainer exists */
    long restarts;                /* times the gate sent training back to the serving version */
    float *corr;                  /* owned [SVC_CORR_SIDE²]: a step's c block on its way to svc */
    proxy_thread proxy;           /* makes the store and service calls of the trainer's
                                   * SCHED_IDLE threads (proxy_thread.h) */
    /* --train-ranks R >= 2: the trainer is an MPI job (train_job.h) instead of tr. The job, its
     * batch buffer and its sampling state belong to the trainer's thread. */
    train_job_opts job_opts;      /* ranks < 2: no job */
    train_job job;
    int job_up;                   /* 1 while the job runs (built, not ended) */
    double job_retry_at;          /* a job that ended starts again from then on */
    eng_image *job_imgs;          /* owned [batch]: the step's training copies */
    uint64_t job_rng;             /* the store sampler's state for the job's batches */
} train_worker;

/* Prepares the trainer of the service's model without building it (train_main does, when there
 * are images): the step and loss of `newest` (the store's newest checkpoint, borrowed) are held
 * for /status; without one, a new model from seed is built just long enough to write its step-0
 * checkpoint into *initial (malloc'd, for svc_open). Called before svc_open. */
int train_worker_create(train_worker *w, const eng_config *cfg, int batch,
                        uint64_t seed, const void *newest, size_t newest_len,
                        uint8_t **initial, size_t *initial_len, char *msg, size_t n);
/* From now on train through an MPI job of opts->ranks ranks (call before train_worker_start;
 * the opts' strings are borrowed). */
void train_worker_use_job(train_worker *w, const train_job_opts *opts);
int train_worker_start(train_worker *w, svc *s);
/* Asks the trainer to stop: a running step gives up between layers, and the trainer's threads
 * leave SCHED_IDLE where the process may (CAP_SYS_NICE or RLIMIT_NICE), so that other work on the
 * cores cannot starve the stop. Returns at once. */
void train_worker_signal_stop(train_worker *w);
/* Stops training (waiting at most wait_s for the trainer's thread, which runs under SCHED_IDLE
 * and may be starved of CPU) and publishes the last completed step when it is newer than the
 * last checkpoint, from the caller's thread. Returns 0 when the trainer's thread has ended; 1
 * when it has not (it is abandoned: the caller must not free the worker, the service or the
 * store it uses, and ends the process with _exit). */
int train_worker_stop(train_worker *w, double wait_s);
void train_worker_free(train_worker *w);

typedef struct embed_workers {
    svc *s;
    pthread_t fresh, reembed;
    int running;
} embed_workers;

int embed_workers_start(embed_workers *e, svc *s);
/* Call after svc_stop. */
void embed_workers_join(embed_workers *e);

#endif
