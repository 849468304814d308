/* workers.c — the continual trainer thread and the two embedder threads: loops around the
 * service (svc.h), with the process concerns (priorities, the proxy, stopping) of their own. */
#define _GNU_SOURCE /* SCHED_IDLE, syscall */
#include "workers.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "eng_checkpoint.h"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* SCHED_IDLE for the calling thread: it runs only when nothing else wants the core. */
static void background_priority(void) {
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
}

/* ---- calls that take shared locks, made on the proxy (see proxy_thread.h) ---- */

/* The service's trainer makes its store calls through the proxy. */
static void proxy_run(void *runner, void (*fn)(void *), void *arg) { proxy_call(runner, fn, arg); }

typedef struct report_job {
    train_worker *w;
    svc_train_state state;
    const char *error;
} report_job;

/* ---- the trainer: the service's own (tr), or an MPI job (job) with --train-ranks ---- */

static int use_job(const train_worker *w) { return w->job_opts.ranks >= 2; }
static int trainer_up(const train_worker *w) { return use_job(w) ? w->job_up : w->tr.created; }
static const eng_train_stats *trainer_stats(const train_worker *w) {
    return use_job(w) ? &w->job.stats : svc_trainer_stats(&w->tr);
}

/* The leading block of the last step's c into out; its side (0: none), *d the projector's D. */
static int trainer_corr(const train_worker *w, float *out, int *d) {
    if (!use_job(w)) {
        *d = w->tr.t.model.loss.d;
        return eng_trainer_corr_block(&w->tr.t, SVC_CORR_SIDE, out);
    }
    const wire_stats *s = w->job.last;
    if (!s || s->corr_side <= 0 || s->corr_side > SVC_CORR_SIDE) return 0;
    memcpy(out, s->corr, sizeof(float) * (size_t)s->corr_side * (size_t)s->corr_side);
    *d = s->corr_d;
    return s->corr_side;
}

static void report_on_proxy(void *arg) {
    report_job *j = arg;
    train_worker *w = j->w;
    const eng_train_stats *st = trainer_up(w) ? trainer_stats(w) : &w->held;
    svc_report_training(w->s, j->state, st, j->error);
    if (j->state == SVC_TRAIN_TRAINING && w->corr && trainer_up(w)) { /* c, for the dashboard */
        int d = 0, side = trainer_corr(w, w->corr, &d);
        if (side) svc_report_corr(w->s, w->corr, side, d, st->step);
    }
}

/* The training state and statistics for /status (the stats are read while the trainer waits). */
static void report(train_worker *w, svc_train_state state, const char *error) {
    report_job j = {w, state, error};
    proxy_call(&w->proxy, report_on_proxy, &j);
}

typedef struct count_job {
    svc *s;
    int64_t count;
} count_job;

static void count_on_proxy(void *arg) {
    count_job *j = arg;
    j->count = svc_image_count(j->s);
}

static int64_t live_images(train_worker *w) {
    count_job j = {w->s, 0};
    proxy_call(&w->proxy, count_on_proxy, &j);
    return j.count;
}

typedef struct restart_job {
    train_worker *w;
    int64_t version; /* out: the version to restart from, 0 none */
    void *blob;      /* out: its checkpoint (malloc'd) */
    size_t len;
} restart_job;

/* Takes a restart request of the gate (after refused versions in a row) and reads the serving
 * checkpoint it names. */
static void restart_on_proxy(void *arg) {
    restart_job *j = arg;
    j->version = svc_training_restart_take(j->w->s);
    svc_err e = {0};
    if (j->version && svc_checkpoint_blob(j->w->s, j->version, &j->blob, &j->len, &e) != 0) {
        fprintf(stderr, "trainer: cannot read model version %lld to restart from: %s\n",
                (long long)j->version, e.msg);
        j->blob = NULL;
    }
}

static void log_on_proxy(void *arg) {
    train_worker *w = arg;
    svc_err e = {0};
    if (svc_log_training(w->s, trainer_stats(w), &e))
        fprintf(stderr, "trainer: %s\n", e.msg);
}

int train_worker_create(train_worker *w, const eng_config *cfg, int batch,
                        uint64_t seed, const void *newest, size_t newest_len,
                        uint8_t **initial, size_t *initial_len, char *msg, size_t n) {
    memset(w, 0, sizeof *w);
    atomic_init(&w->stop, 0);
    atomic_init(&w->tr_stop, 0);
    atomic_init(&w->published_step, 0);
    atomic_init(&w->attempted_step, 0);
    pthread_mutex_init(&w->tr_mu, NULL);
    w->cfg = *cfg;
    w->batch = batch;
    w->seed = seed;
    w->held.loss = NAN;
    *initial = NULL;
    if (proxy_start(&w->proxy)) /* first: train_worker_free stops it whatever fails below */
        fprintf(stderr, "trainer: no proxy thread; store calls run on the trainer's threads\n");
    w->corr = malloc(sizeof(float) * SVC_CORR_SIDE * SVC_CORR_SIDE); /* NULL: no heatmap */
    eng_err pe = {0};
    eng_ckpt_meta meta;
    if (newest) { /* resumed: only its step and loss, until training starts */
        if (eng_checkpoint_peek(newest, newest_len, NULL, &meta, &pe)) {
            snprintf(msg, n, "the newest model version: %s", pe.msg);
            return -1;
        }
        w->held.step = (long)meta.step;
        w->held.loss = meta.loss;
    } else { /* a new database: its first version, from a model built for the moment */
        svc_err e = {0};
        int bad = svc_trainer_create(&w->tr, cfg, batch, seed, NULL, 0, &w->tr_stop, proxy_run,
                                     &w->proxy, background_priority, initial, initial_len, &e);
        svc_trainer_free(&w->tr);
        if (bad) {
            snprintf(msg, n, "%s", e.msg);
            return -1;
        }
    }
    atomic_store(&w->published_step, w->held.step);
    atomic_store(&w->attempted_step, w->held.step);
    return 0;
}

typedef struct newest_job {
    train_worker *w;
    void *blob; /* out: the newest checkpoint (malloc'd), NULL when none */
    size_t len;
    char msg[ENG_ERR_LEN + 64];
} newest_job;

static void newest_on_proxy(void *arg) {
    newest_job *j = arg;
    store_checkpoint_info info;
    store_err se = {0};
    if (store_checkpoint_latest(j->w->s->st, &info, &j->blob, &j->len, &se) != 0) {
        snprintf(j->msg, sizeof j->msg, "reading the newest model version: %s", se.msg);
        j->blob = NULL;
    }
}

typedef struct publish_job {
    train_worker *w;
    uint8_t *blob;
    size_t len;
    long step;    /* the checkpoint's */
    double loss;
} publish_job;

/* Stores the checkpoint as a new model version (svc_publish wakes the re-embedder). */
static void publish_on_proxy(void *arg) {
    publish_job *j = arg;
    train_worker *w = j->w;
    svc_err se = {0};
    int64_t version;
    if (j->step <= atomic_load(&w->published_step)) return; /* that step is published already */
    atomic_store(&w->attempted_step, j->step); /* a failure waits publish_steps for a retry */
    if (svc_publish(w->s, j->blob, j->len, (uint64_t)j->step, j->loss, &version, &se)) {
        fprintf(stderr, "trainer: publishing failed: %s\n", se.msg);
        return;
    }
    atomic_store(&w->published_step, j->step);
    fprintf(stderr, "trainer: published model version %lld at step %ld (loss %.3f)\n",
            (long long)version, j->step, j->loss);
}

typedef struct say_job {
    const char *text;
} say_job;

static void say_on_proxy(void *arg) { fputs(((say_job *)arg)->text, stderr); }

/* A message from a SCHED_IDLE thread: stderr's lock is taken by every request's log line. */
static void say(train_worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(train_worker *w, const char *fmt, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    say_job j = {text};
    proxy_call(&w->proxy, say_on_proxy, &j);
}

/* Saves the last completed step (waiting at most wait_s for a step's update) and publishes it.
 * From the trainer's thread, or from the stopping thread. */
static void publish(train_worker *w, double wait_s) {
    publish_job j = {w, NULL, 0, 0, 0};
    svc_err e = {0};
    eng_train_stats at;
    /* serialising takes no shared lock */
    if (use_job(w)) {
        at = w->job.stats;
        if (train_job_save(&w->job, &j.blob, &j.len, e.msg, sizeof e.msg)) {
            say(w, "trainer: saving a checkpoint failed: %s\n", e.msg);
            free(j.blob);
            return;
        }
    } else if (svc_trainer_save(&w->tr, wait_s, &j.blob, &j.len, &at, &e)) {
        say(w, "trainer: saving a checkpoint failed: %s\n", e.msg);
        free(j.blob);
        return;
    }
    j.step = at.step;
    j.loss = at.step ? at.loss : NAN;
    proxy_call(&w->proxy, publish_on_proxy, &j);
    free(j.blob);
}

/* Builds the trainer from the newest checkpoint (on the trainer's thread). 0 or -1 (msg). */
static int build_trainer(train_worker *w, char *msg, size_t n) {
    newest_job j = {w, NULL, 0, ""};
    proxy_call(&w->proxy, newest_on_proxy, &j);
    if (!j.blob) {
        snprintf(msg, n, "%s", j.msg[0] ? j.msg : "no model version to train from");
        return -1;
    }
    svc_err e = {0};
    uint8_t *unused = NULL;
    size_t unused_len = 0;
    atomic_store(&w->tr_stop, atomic_load(&w->stop));
    if (use_job(w)) { /* mpirun, from this SCHED_IDLE thread: the ranks inherit its policy */
        pthread_mutex_lock(&w->tr_mu);
        int bad = train_job_start(&w->job, &w->job_opts, j.blob, j.len, &w->stop, msg, n);
        w->job_up = !bad;
        pthread_mutex_unlock(&w->tr_mu);
        free(j.blob);
        return bad ? -1 : 0;
    }
    pthread_mutex_lock(&w->tr_mu);
    int bad = svc_trainer_create(&w->tr, &w->cfg, w->batch, w->seed + (uint64_t)w->held.step,
                                 j.blob, j.len, &w->tr_stop, proxy_run, &w->proxy,
                                 background_priority, &unused, &unused_len, &e);
    if (bad)
        svc_trainer_free(&w->tr);
    else
        svc_trainer_attach(&w->tr, w->s);
    pthread_mutex_unlock(&w->tr_mu);
    free(unused);
    free(j.blob);
    if (bad) snprintf(msg, n, "%s", e.msg);
    return bad ? -1 : 0;
}

static void publish(train_worker *w, double wait_s);

/* Frees the trainer after publishing its last step (on the trainer's thread): the memory goes
 * back while nothing trains; the next build resumes from that checkpoint. 0 freed, -1 kept
 * (the step could not be published). */
static int release_trainer(train_worker *w, double idle_s) {
    if ((long)trainer_stats(w)->step > atomic_load(&w->published_step)) publish(w, 3600.0);
    if ((long)trainer_stats(w)->step > atomic_load(&w->published_step))
        return -1; /* not published (e.g. a full disk): kept, to try again later */
    pthread_mutex_lock(&w->tr_mu);
    w->held = *trainer_stats(w);
    if (use_job(w)) {
        train_job_end(&w->job);
        w->job_up = 0;
    } else {
        atomic_store(&w->tr_stop, 1); /* the augmentation thread's waits end */
        svc_trainer_free(&w->tr);
        atomic_store(&w->tr_stop, atomic_load(&w->stop));
    }
    pthread_mutex_unlock(&w->tr_mu);
    say(w, "trainer: freed the training model after %.0f s without training (it is rebuilt "
           "from step %ld when training resumes)\n", idle_s, w->held.step);
    return 0;
}

/* One step of the MPI job: the next batch's training copies from the store (waiting while there
 * are none, as the service's trainer does; two batches when the job holds none ahead), then the
 * job's step, which trains the batch it holds while augmenting the one sent. */
static int job_step(train_worker *w, svc_err *err) {
    int n = w->batch * train_job_batches_wanted(&w->job);
    for (int i = 0; i < 2 * w->batch; i++) eng_image_free(&w->job_imgs[i]);
    if (svc_training_draw(w->s, &w->job_rng, w->job_imgs, n, &w->stop, proxy_run, &w->proxy, err))
        return -1;
    if (train_job_step(&w->job, w->job_imgs, n, err->msg, sizeof err->msg)) {
        err->code = ERR_INTERNAL;
        return -1;
    }
    return 0;
}

static int trainer_step(train_worker *w, svc_err *err) {
    return use_job(w) ? job_step(w, err) : svc_trainer_step(&w->tr, err);
}

/* Back to a stored checkpoint (the quality gate), then a new seed for the retry. */
static int trainer_restart(train_worker *w, const void *blob, size_t len, svc_err *err) {
    /* a new attempt, not a replay of the refused one's augmentations: the serving version's
     * seed moved by a step of the golden-ratio sequence per restart */
    uint64_t step_of_seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->restarts + 1);
    if (!use_job(w)) {
        if (svc_trainer_restart(&w->tr, blob, len, err)) return -1;
        w->restarts++;
        eng_trainer_reseed(&w->tr.t, w->tr.t.cfg.seed + step_of_seed);
        return 0;
    }
    eng_ckpt_meta meta;
    eng_err pe = {0};
    if (eng_checkpoint_peek(blob, len, NULL, &meta, &pe))
        return eng_fail(err, "restarting training: %s", pe.msg);
    if (train_job_resume(&w->job, blob, len, err->msg, sizeof err->msg) ||
        train_job_reseed(&w->job, meta.rng[0].s[0] + step_of_seed, err->msg, sizeof err->msg)) {
        err->code = ERR_INTERNAL;
        return -1;
    }
    w->restarts++;
    return 0;
}

/* The job ended under the trainer (a rank died): the server goes on serving, /status says so,
 * and a new job is tried from the newest stored checkpoint retry_s from now. */
static void job_lost(train_worker *w, const char *what) {
    pthread_mutex_lock(&w->tr_mu);
    int was_up = w->job_up;
    if (was_up) w->held = w->job.stats; /* a job that never started keeps the last one's */
    train_job_end(&w->job);
    w->job_up = 0;
    pthread_mutex_unlock(&w->tr_mu);
    char why[ENG_ERR_LEN], end[128];
    train_job_why(&w->job, end, sizeof end); /* now that mpirun is reaped: how it ended */
    if (was_up) snprintf(why, sizeof why, "%.120s; %.100s", what, end);
    else snprintf(why, sizeof why, "%.250s", what);
    w->job_retry_at = cli_now() + w->job_opts.retry_s;
    say(w, "trainer: the training job of %d ranks ended: %s; serving goes on, a new job starts "
           "in %.0f s from the newest stored version\n", w->job_opts.ranks, why,
        w->job_opts.retry_s);
    report(w, SVC_TRAIN_RANKS_LOST, why);
}

static void *train_main(void *arg) {
    train_worker *w = arg;
    background_priority();
    long idle = 0;
    double published_at = cli_now();
    double stopped_at = cli_now(); /* when training last stepped (or this thread started) */
    int64_t seen = live_images(w);
    report(w, SVC_TRAIN_WAITING, NULL);
    while (!atomic_load(&w->stop)) {
        int64_t count = live_images(w);
        if (count != seen) idle = 0;
        seen = count;
        int waiting = count < w->min_images, paused = w->idle_steps && idle >= w->idle_steps;
        if (waiting || paused) {
            report(w, waiting ? SVC_TRAIN_WAITING : SVC_TRAIN_PAUSED, NULL);
            double quiet = cli_now() - stopped_at;
            if (trainer_up(w) && w->release_after > 0 && quiet >= w->release_after &&
                release_trainer(w, quiet))
                stopped_at = cli_now(); /* try again release_after from now */
            sleep_ms(200);
            continue;
        }
        if (!trainer_up(w)) {
            if (use_job(w) && cli_now() < w->job_retry_at) {
                sleep_ms(200);
                continue;
            }
            char msg[ENG_ERR_LEN + 64];
            if (build_trainer(w, msg, sizeof msg)) {
                if (atomic_load(&w->stop)) break;
                if (use_job(w)) { /* the ranks may come back: try again later */
                    job_lost(w, msg);
                    continue;
                }
                say(w, "trainer: cannot build the training model, training stops: %s\n", msg);
                report(w, SVC_TRAIN_FAILED, msg);
                return NULL;
            }
            say(w, "trainer: built the training model (batch %d%s) at step %ld\n", w->batch,
                use_job(w) ? ", data-parallel over an MPI job" : "", (long)trainer_stats(w)->step);
            if (use_job(w)) {
                char ranks[64];
                snprintf(ranks, sizeof ranks, " of %d ranks", w->job_opts.ranks);
                say(w, "trainer: the training job%s is up\n", ranks);
            }
        }
        restart_job rj = {w, 0, NULL, 0};
        proxy_call(&w->proxy, restart_on_proxy, &rj);
        if (rj.blob) { /* the gate refused the last versions: go back to the serving one */
            svc_err re = {0};
            if (trainer_restart(w, rj.blob, rj.len, &re)) {
                say(w, "trainer: %s\n", re.msg);
            } else {
                long at = (long)trainer_stats(w)->step;
                atomic_store(&w->published_step, at);
                atomic_store(&w->attempted_step, at);
                say(w, "trainer: %d versions in a row were refused by the quality gate: training "
                       "restarts from model version %lld (step %ld)\n",
                    SVC_REFUSALS_TO_RESTART, (long long)rj.version, at);
            }
            free(rj.blob);
        }
        svc_err e = {0};
        if (trainer_step(w, &e)) {
            if (atomic_load(&w->stop)) break; /* interrupted: the step counts for nothing */
            if (use_job(w)) {
                job_lost(w, e.msg);
                continue;
            }
            say(w, "trainer: step %ld failed, training stops: %s\n",
                (long)trainer_stats(w)->step, e.msg);
            report(w, SVC_TRAIN_FAILED, e.msg);
            return NULL;
        }
        idle++;
        stopped_at = cli_now();
        report(w, SVC_TRAIN_TRAINING, NULL);
        long step = (long)trainer_stats(w)->step;
        if (step % 10 == 0) proxy_call(&w->proxy, log_on_proxy, w);
        if ((w->publish_steps && step - atomic_load(&w->attempted_step) >= w->publish_steps) ||
            (w->publish_seconds > 0 && cli_now() - published_at >= w->publish_seconds)) {
            publish(w, 3600.0); /* its own thread: nothing else holds the update lock */
            published_at = cli_now();
        }
    }
    /* The job's last steps: its socket is this thread's, so the final checkpoint is published
     * here, and the job ended (the service's own trainer is train_worker_stop's to publish). */
    if (use_job(w) && w->job_up) {
        if ((long)trainer_stats(w)->step > atomic_load(&w->published_step)) publish(w, 5.0);
        pthread_mutex_lock(&w->tr_mu);
        w->held = w->job.stats;
        train_job_end(&w->job);
        w->job_up = 0;
        pthread_mutex_unlock(&w->tr_mu);
    }
    report(w, SVC_TRAIN_STOPPED, NULL);
    return NULL;
}

void train_worker_use_job(train_worker *w, const train_job_opts *opts) {
    w->job_opts = *opts;
    w->job.fd = -1;
    w->job_rng = w->seed * 0x9e3779b97f4a7c15ULL + 7; /* as the service's trainer samples */
}

int train_worker_start(train_worker *w, svc *s) {
    w->s = s; /* the trainer, built when training starts, draws images from it */
    svc_report_ranks(s, use_job(w) ? w->job_opts.ranks : 1);
    if (use_job(w) && !w->job_imgs) {
        w->job_imgs = calloc(2 * (size_t)w->batch, sizeof *w->job_imgs); /* a step, and the next */
        if (!w->job_imgs) return -1;
    }
    if (pthread_create(&w->thread, NULL, train_main, w)) return -1;
    w->running = 1;
    return 0;
}

/* Moves every SCHED_IDLE thread of this process (the trainer, its OpenMP team, the augmentation
 * thread) back to SCHED_OTHER, so that a stop is not starved when other work fills the cores:
 * the step reaches its next stop point, and the threads get the CPU they need to exit at all.
 * Leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 20; without either (Docker's default)
 * it fails, which matters only when the cores are full of other work in the same CPU cgroup: the
 * stop then falls back to abandoning a starved trainer (cmd_serve). Returns how many threads
 * stayed SCHED_IDLE. */
static int lift_idle_threads(void) {
    int stuck = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        if (sched_getscheduler(tid) != SCHED_IDLE) continue;
        struct sched_param sp = {0};
        if (sched_setscheduler(tid, SCHED_OTHER, &sp) == 0)
            setpriority(PRIO_PROCESS, (id_t)tid, 0);
        else
            stuck++;
    }
    closedir(d);
    return stuck;
}

/* Raises both flags: the worker's loop and the trainer's (a running step, the source's waits). */
static void raise_stop(train_worker *w) {
    atomic_store(&w->stop, 1);
    atomic_store(&w->tr_stop, 1);
}

void train_worker_signal_stop(train_worker *w) {
    raise_stop(w);
    w->idle_stuck = lift_idle_threads();
}

int train_worker_stop(train_worker *w, double wait_s) {
    raise_stop(w);
    int abandoned = 0;
    if (w->running) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double s = (double)until.tv_sec + until.tv_nsec * 1e-9 + wait_s;
        until.tv_sec = (time_t)s;
        until.tv_nsec = (long)((s - (double)until.tv_sec) * 1e9);
        if (pthread_timedjoin_np(w->thread, NULL, &until) == 0) {
            w->running = 0;
        } else {
            abandoned = 1;
            if (w->idle_stuck)
                fprintf(stderr, "barlowd: %d training threads could not leave SCHED_IDLE for the "
                                "stop (no CAP_SYS_NICE or RLIMIT_NICE)\n", w->idle_stuck);
        }
    }
    /* The last completed step, unless it is published already. When the trainer's thread is
     * still in a step (starved of CPU), its update lock is free but for LARS's few milliseconds:
     * wait for it a little; an abandoned thread may also be building or freeing the trainer:
     * wait a second for that. */
    struct timespec lock_until;
    clock_gettime(CLOCK_REALTIME, &lock_until);
    lock_until.tv_sec += 1;
    if (pthread_mutex_timedlock(&w->tr_mu, &lock_until) != 0) return abandoned;
    /* (a job's last steps are its thread's to publish: an abandoned thread still owns its socket,
     * and the steps since the last version are lost) */
    if (w->tr.created && w->s && !use_job(w) &&
        (abandoned || (long)svc_trainer_stats(&w->tr)->step > atomic_load(&w->published_step))) {
        publish(w, 1.0);
        if (!abandoned) report(w, SVC_TRAIN_STOPPED, NULL);
    }
    pthread_mutex_unlock(&w->tr_mu);
    return abandoned;
}

void train_worker_free(train_worker *w) {
    raise_stop(w);
    svc_trainer_free(&w->tr); /* joins the augmentation thread (its source sees stop) */
    if (w->job_up) train_job_end(&w->job);
    for (int i = 0; w->job_imgs && i < 2 * w->batch; i++) eng_image_free(&w->job_imgs[i]);
    free(w->job_imgs);
    proxy_stop(&w->proxy);    /* after its last caller */
    free(w->corr);
    pthread_mutex_destroy(&w->tr_mu);
    memset(w, 0, sizeof *w);
}

/* ---- embedders ---- */

static void *fresh_main(void *arg) {
    embed_workers *e = arg;
    /* below request threads (an upload is acknowledged before its vector exists), above the
     * trainer: under a burst of uploads the acks come first and the vectors catch up after */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5);
    int b = e->s->opts.embed_batch;
    int64_t *ids = malloc((size_t)b * sizeof *ids);
    if (!ids) return NULL;
    for (;;) {
        int n = svc_queue_take(e->s, ids, b);
        if (n == 0) break; /* stopping */
        svc_err err = {0};
        if (svc_embed_fresh(e->s, ids, n, &err))
            fprintf(stderr, "embedder: %d images: %s\n", n, err.msg);
    }
    free(ids);
    return NULL;
}

static void *reembed_main(void *arg) {
    embed_workers *e = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    while (!atomic_load(&e->s->stopping)) {
        svc_err err = {0};
        svc_build_graphs(e->s); /* first: the serving graph, if the index crossed the threshold */
        double t0 = cli_now();
        int r = svc_reembed_newest(e->s, &err);
        if (r < 0 && !atomic_load(&e->s->stopping))
            fprintf(stderr, "re-embedder: %s\n", err.msg);
        if (r == 1)
            fprintf(stderr, "re-embedder: now serving model version %lld (%.1f s)\n",
                    (long long)svc_serving_version(e->s), cli_now() - t0);
        if (r == 2) fprintf(stderr, "re-embedder: the quality gate %s\n", err.msg);
        svc_release_idle_models(e->s, SVC_MANY_IDLE_S);
        svc_wait_for_publish(e->s, r < 0 ? 10.0 : 5.0);
    }
    return NULL;
}

int embed_workers_start(embed_workers *e, svc *s) {
    memset(e, 0, sizeof *e);
    e->s = s;
    if (pthread_create(&e->fresh, NULL, fresh_main, e)) return -1;
    if (pthread_create(&e->reembed, NULL, reembed_main, e)) {
        svc_stop(s);
        pthread_join(e->fresh, NULL);
        return -1;
    }
    e->running = 1;
    return 0;
}

void embed_workers_join(embed_workers *e) {
    if (!e->running) return;
    pthread_join(e->fresh, NULL);
    pthread_join(e->reembed, NULL);
    e->running = 0;
}
