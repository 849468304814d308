/* svc.c — opening and closing the service, errors, status, and the fresh-upload queue. */
#include "svc.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "svc_internal.h"
#include "eng_checkpoint.h"

svc_opts svc_defaults(void) {
    svc_opts o = {.max_pixels = ENG_DECODE_DEFAULT_MAX_PIXELS, .embed_batch = 64,
                  .max_meta_bytes = 4096, .gate = 1, .gate_tolerance = 0.005,
                  .label_key = "label", .quality_sample = 20000, .min_labelled = 200,
                  .max_snapshots = 20, .ann_threshold = 100000};
    return o;
}

int svc_fail(svc_err *err, eng_code code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int svc_store_fail(svc *s, svc_err *err, const store_err *se, const char *fmt, ...) {
    int full = se->code == ERR_DISK_FULL;
    if (full) {
        atomic_fetch_add(&s->disk_full_errors, 1);
        atomic_store(&s->writes_failing, 1);
    }
    if (err) {
        err->code = full ? ERR_DISK_FULL : ERR_INTERNAL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

eng_code svc_code_of(const eng_err *e) { return e->code != ERR_OK ? e->code : ERR_INTERNAL; }

void svc_write_ok(svc *s) { atomic_store(&s->writes_failing, 0); }

double svc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- queue ---- */

void svc_queue_push(svc *s, int64_t id) {
    pthread_mutex_lock(&s->q_mu);
    if (s->q_len == s->q_cap) {
        size_t cap = s->q_cap ? 2 * s->q_cap : 1024;
        int64_t *q = malloc(cap * sizeof *q);
        if (!q) { /* the id stays without a vector until the next start re-queues it */
            pthread_mutex_unlock(&s->q_mu);
            return;
        }
        for (size_t i = 0; i < s->q_len; i++) q[i] = s->queue[(s->q_head + i) % s->q_cap];
        free(s->queue);
        s->queue = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->queue[(s->q_head + s->q_len++) % s->q_cap] = id;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
}

int svc_queue_take(svc *s, int64_t *ids, int max) {
    pthread_mutex_lock(&s->q_mu);
    while (s->q_len == 0 && !atomic_load(&s->stopping)) pthread_cond_wait(&s->q_cv, &s->q_mu);
    int n = 0;
    while (n < max && s->q_len > 0) {
        ids[n++] = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
    }
    pthread_mutex_unlock(&s->q_mu);
    return n;
}

size_t svc_queue_length(svc *s) {
    pthread_mutex_lock(&s->q_mu);
    size_t n = s->q_len;
    pthread_mutex_unlock(&s->q_mu);
    return n;
}

/* ---- open / close ---- */

static int put_vec(void *ctx, int64_t id, const float *vec) {
    eng_err e;
    /* a vector the index refuses (zero or non-finite) is re-queued by the caller's sweep */
    (void)eng_index_put(ctx, id, vec, &e);
    return 0;
}

int svc_open(svc *s, store *st, const svc_opts *opts, const uint8_t *initial_blob,
             size_t initial_len, svc_err *err) {
    memset(s, 0, sizeof *s);
    s->opts = opts ? *opts : svc_defaults();
    s->st = st;
    svc_mutex_init(&s->version_mu);
    svc_mutex_init(&s->member_mu);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    pthread_mutex_init(&s->stat_mu, NULL);
    pthread_mutex_init(&s->bell_mu, NULL);
    pthread_cond_init(&s->bell_cv, NULL);
    atomic_init(&s->stopping, 0);
    atomic_init(&s->disk_full_errors, 0);
    atomic_init(&s->writes_failing, 0);
    s->pixels_knn20 = NAN;
    svc_snapshot_setup(s);

    store_err se = {0};
    eng_err e = {0};
    store_checkpoint_info info;
    void *blob = NULL;
    size_t len = 0;
    int64_t serving = 0;
    int have = store_state_get(st, "serving_version", &serving, &se);
    if (have < 0) goto store_fail;
    if (have == 0) {
        int r = store_checkpoint_get(st, serving, &info, &blob, &len, &se);
        if (r < 0) goto store_fail;
        if (r == 1) have = 1; /* the recorded version is gone: fall back to the newest */
    }
    if (have == 1) {
        int r = store_checkpoint_latest(st, &info, &blob, &len, &se);
        if (r < 0) goto store_fail;
        if (r == 1) { /* a new database: version 1 is the untrained model */
            eng_config cfg;
            if (eng_checkpoint_peek(initial_blob, initial_len, &cfg, NULL, &e)) {
                svc_fail(err, ERR_INTERNAL, "initial model: %s", e.msg);
                goto fail;
            }
            char *json = eng_config_to_json(&cfg);
            int64_t v;
            int bad = !json || store_checkpoint_put(st, 0, json, NAN, initial_blob, initial_len,
                                                    0, &v, &se);
            free(json);
            if (bad) goto store_fail;
            if (store_checkpoint_get(st, v, &info, &blob, &len, &se)) goto store_fail;
        }
        serving = info.version;
        if (store_state_set(st, "serving_version", serving, &se)) goto store_fail;
    }
    if (eng_checkpoint_peek(blob, len, &s->cfg, NULL, &e)) {
        svc_fail(err, ERR_INTERNAL, "model version %lld: %s", (long long)serving, e.msg);
        goto fail;
    }
    s->dim = eng_config_rep_dim(&s->cfg);
    s->serving = svc_version_load(s, serving, blob, len, err);
    free(blob);
    blob = NULL;
    if (!s->serving) goto fail;
    if (store_embedding_each(st, serving, s->dim, put_vec, &s->serving->index, &se))
        goto store_fail;
    /* the graph, when the index is past the threshold, is built by the re-embedder's thread
     * (svc_build_graphs) while searches are answered by exact scans */
    /* every live image without a serving vector (e.g. acknowledged just before a crash) */
    int64_t *ids;
    int64_t n = store_image_ids(st, &ids);
    if (n < 0) {
        svc_fail(err, ERR_NO_MEMORY, "out of memory listing images");
        goto fail;
    }
    for (int64_t i = 0; i < n; i++)
        if (!eng_index_get(&s->serving->index, ids[i])) svc_queue_push(s, ids[i]);
    free(ids);
    return 0;
store_fail:
    svc_fail(err, svc_code_of(&se), "%s", se.msg);
fail:
    free(blob);
    svc_close(s);
    return -1;
}

void svc_stop(svc *s) {
    atomic_store(&s->stopping, 1);
    pthread_mutex_lock(&s->q_mu);
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    pthread_mutex_lock(&s->bell_mu);
    pthread_cond_broadcast(&s->bell_cv);
    pthread_mutex_unlock(&s->bell_mu);
}

void svc_close(svc *s) {
    svc_version_release(s->serving);
    svc_version_release(s->pending);
    free(s->queue);
    free(s->corr);
    svc_snapshot_teardown(s);
    svc_mutex_destroy(&s->version_mu);
    svc_mutex_destroy(&s->member_mu);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    pthread_mutex_destroy(&s->stat_mu);
    pthread_mutex_destroy(&s->bell_mu);
    pthread_cond_destroy(&s->bell_cv);
    memset(s, 0, sizeof *s);
}

const char *svc_train_state_name(svc_train_state st) {
    static const char *const names[SVC_TRAIN_N_STATES] = {
        [SVC_TRAIN_WAITING] = "waiting_for_images", [SVC_TRAIN_TRAINING] = "training",
        [SVC_TRAIN_STOPPED] = "stopped", [SVC_TRAIN_FAILED] = "failed",
        [SVC_TRAIN_PAUSED] = "paused", [SVC_TRAIN_RANKS_LOST] = "ranks_lost"};
    return st >= 0 && st < SVC_TRAIN_N_STATES ? names[st] : "failed";
}

int svc_version_choose(svc *s, int64_t version, svc_err *err) {
    store_err se = {0};
    store_checkpoint_info info;
    void *blob;
    size_t len;
    int r = store_checkpoint_get(s->st, version, &info, &blob, &len, &se);
    if (r < 0) return svc_fail(err, svc_code_of(&se), "%s", se.msg);
    if (r == 1) return 1;
    free(blob);
    pthread_mutex_lock(&s->stat_mu);
    s->chosen = version;
    pthread_mutex_unlock(&s->stat_mu);
    svc_ring_reembed(s);
    return 0;
}

int64_t svc_training_restart_take(svc *s) {
    pthread_mutex_lock(&s->stat_mu);
    int64_t v = s->restart_from;
    s->restart_from = 0;
    pthread_mutex_unlock(&s->stat_mu);
    return v;
}

void svc_report_training(svc *s, svc_train_state state, const eng_train_stats *stats,
                         const char *error) {
    pthread_mutex_lock(&s->stat_mu);
    s->train.state = state;
    if (stats) s->train.stats = *stats;
    s->train.updated = svc_now();
    if (error) snprintf(s->train.error, sizeof s->train.error, "%s", error);
    pthread_mutex_unlock(&s->stat_mu);
}

void svc_report_ranks(svc *s, int ranks) {
    pthread_mutex_lock(&s->stat_mu);
    s->train.ranks = ranks;
    pthread_mutex_unlock(&s->stat_mu);
}

void svc_report_corr(svc *s, const float *block, int side, int d, long step) {
    assert(side >= 1 && side <= SVC_CORR_SIDE && side <= d);
    pthread_mutex_lock(&s->stat_mu);
    if (!s->corr) s->corr = malloc(sizeof(float) * SVC_CORR_SIDE * SVC_CORR_SIDE);
    if (s->corr) { /* out of memory: the dashboard keeps the last block it had */
        memcpy(s->corr, block, sizeof(float) * (size_t)side * side);
        s->corr_side = side;
        s->corr_d = d;
        s->corr_step = step;
    }
    pthread_mutex_unlock(&s->stat_mu);
}

int svc_corr_get(svc *s, float *out, int *d, long *step) {
    pthread_mutex_lock(&s->stat_mu);
    int side = s->corr_side; /* 0 until a block was stored */
    if (side) memcpy(out, s->corr, sizeof(float) * (size_t)side * side);
    *d = s->corr_d;
    *step = s->corr_step;
    pthread_mutex_unlock(&s->stat_mu);
    return side;
}

void svc_get_status(svc *s, svc_status *out) {
    pthread_mutex_lock(&s->stat_mu);
    out->train = s->train;
    out->reembed_done = s->reembed_done;
    out->reembed_total = s->reembed_total;
    out->last_decision = s->last_decision;
    pthread_mutex_unlock(&s->stat_mu);
    svc_version *serving, *pending;
    svc_versions_acquire(s, &serving, &pending);
    out->serving_version = serving->id;
    out->pending_version = pending ? pending->id : -1;
    svc_rwlock_rdlock(&serving->index_lock);
    out->vectors = serving->index.n;
    svc_rwlock_unlock(&serving->index_lock);
    svc_version_release(serving);
    svc_version_release(pending);
    out->images = store_image_count(s->st);
    out->queue = svc_queue_length(s);
    out->disk_full_errors = atomic_load(&s->disk_full_errors);
    out->writes_failing = atomic_load(&s->writes_failing);
}
