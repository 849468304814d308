/* svc.c — opening and closing the service, model snapshots, and the fresh-upload queue. */
#include "svc.h"

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
                  .max_meta_bytes = 4096};
    return o;
}

int svc_fail(svc_err *err, int kind, const char *fmt, ...) {
    if (err) {
        err->kind = kind;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int svc_store_fail(svc *s, svc_err *err, const store_err *se, const char *fmt, ...) {
    int full = se->code == STORE_FULL;
    if (full) {
        atomic_fetch_add(&s->disk_full_errors, 1);
        atomic_store(&s->writes_failing, 1);
    }
    if (err) {
        err->kind = full ? SVC_DISK_FULL : SVC_INTERNAL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int svc_kind_of(const eng_err *e) {
    switch (e->code) {
    case ENG_BAD_INPUT: return SVC_BAD_INPUT;
    case ENG_TOO_LARGE: return SVC_TOO_LARGE;
    case ENG_NO_MEMORY: return SVC_NO_MEMORY;
    default: return SVC_INTERNAL;
    }
}

void svc_write_ok(svc *s) { atomic_store(&s->writes_failing, 0); }

double svc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- models ---- */

static void model_free(svc_model *m) {
    for (int i = 0; i < SVC_ONE_POOL; i++) {
        eng_infer_free(&m->one[i]);
        pthread_mutex_destroy(&m->one_mu[i]);
    }
    eng_infer_free(&m->many);
    pthread_mutex_destroy(&m->many_mu);
    free(m);
}

svc_model *svc_model_load(const svc *s, int64_t version, const void *blob, size_t len,
                          svc_err *err) {
    svc_model *m = calloc(1, sizeof *m);
    if (!m) {
        svc_fail(err, SVC_INTERNAL, "out of memory loading model version %lld", (long long)version);
        return NULL;
    }
    for (int i = 0; i < SVC_ONE_POOL; i++) pthread_mutex_init(&m->one_mu[i], NULL);
    pthread_mutex_init(&m->many_mu, NULL);
    eng_err e = {0};
    int bad = 0;
    for (int i = 0; i < SVC_ONE_POOL && !bad; i++)
        bad = eng_infer_create(&m->one[i], blob, len, 1, 1, &e); /* request threads: 1 core each */
    if (!bad) bad = eng_infer_create(&m->many, blob, len, s->opts.embed_batch, 0, &e);
    if (!bad && m->many.dim != s->dim) {
        bad = 1;
        snprintf(e.msg, sizeof e.msg, "its vectors have %d floats, the service's %d",
                 m->many.dim, s->dim);
    }
    if (bad) {
        svc_fail(err, SVC_INTERNAL, "loading model version %lld: %s", (long long)version, e.msg);
        model_free(m);
        return NULL;
    }
    m->version = version;
    m->step = m->many.step;
    m->dim = m->many.dim;
    atomic_init(&m->refs, 1);
    return m;
}

svc_model *svc_model_acquire(svc *s) {
    pthread_mutex_lock(&s->model_mu);
    svc_model *m = s->serving;
    atomic_fetch_add(&m->refs, 1);
    pthread_mutex_unlock(&s->model_mu);
    return m;
}

void svc_model_release(svc_model *m) {
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

int svc_model_embed(const svc *s, svc_model *m, const eng_aug_src *imgs, int n, float *out,
                    svc_err *err) {
    (void)s;
    eng_err e = {0};
    int bad = 0;
    if (n < 4) {
        /* single requests: any free batch-1 model, else wait for the first */
        for (int i = 0; i < n && !bad; i++) {
            int slot = -1;
            for (int j = 0; j < SVC_ONE_POOL && slot < 0; j++)
                if (pthread_mutex_trylock(&m->one_mu[j]) == 0) slot = j;
            if (slot < 0) pthread_mutex_lock(&m->one_mu[slot = 0]);
            bad = eng_infer_embed(&m->one[slot], &imgs[i], 1, out + (size_t)i * m->dim, &e);
            pthread_mutex_unlock(&m->one_mu[slot]);
        }
    } else {
        pthread_mutex_lock(&m->many_mu);
        bad = eng_infer_embed(&m->many, imgs, n, out, &e);
        pthread_mutex_unlock(&m->many_mu);
    }
    if (bad) return svc_fail(err, svc_kind_of(&e), "inference failed: %s", e.msg);
    for (size_t i = 0; i < (size_t)n * m->dim; i++)
        if (!isfinite(out[i]))
            return svc_fail(err, SVC_INTERNAL, "the model produced a non-finite vector");
    return 0;
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
    s->pending_version = -1;
    pthread_mutex_init(&s->model_mu, NULL);
    pthread_rwlock_init(&s->index_lock, NULL);
    pthread_mutex_init(&s->member_mu, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    pthread_mutex_init(&s->stat_mu, NULL);
    pthread_mutex_init(&s->bell_mu, NULL);
    pthread_cond_init(&s->bell_cv, NULL);
    atomic_init(&s->stopping, 0);
    atomic_init(&s->disk_full_errors, 0);
    atomic_init(&s->writes_failing, 0);

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
                svc_fail(err, SVC_INTERNAL, "initial model: %s", e.msg);
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
        svc_fail(err, SVC_INTERNAL, "model version %lld: %s", (long long)serving, e.msg);
        goto fail;
    }
    s->dim = eng_config_rep_dim(&s->cfg);
    s->serving = svc_model_load(s, serving, blob, len, err);
    free(blob);
    blob = NULL;
    if (!s->serving) goto fail;
    s->index = calloc(1, sizeof *s->index);
    if (!s->index || eng_index_init(s->index, s->dim, &e)) {
        svc_fail(err, SVC_INTERNAL, "index: %s", s->index ? e.msg : "out of memory");
        goto fail;
    }
    s->index_version = serving;
    if (store_embedding_each(st, serving, s->dim, put_vec, s->index, &se)) goto store_fail;
    /* every live image without a serving vector (e.g. acknowledged just before a crash) */
    int64_t *ids;
    int64_t n = store_image_ids(st, &ids);
    if (n < 0) {
        svc_fail(err, SVC_INTERNAL, "out of memory listing images");
        goto fail;
    }
    for (int64_t i = 0; i < n; i++)
        if (!eng_index_get(s->index, ids[i])) svc_queue_push(s, ids[i]);
    free(ids);
    return 0;
store_fail:
    svc_fail(err, SVC_INTERNAL, "%s", se.msg);
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
    svc_model_release(s->serving);
    svc_model_release(s->pending);
    if (s->index) eng_index_free(s->index);
    free(s->index);
    if (s->pending_index) eng_index_free(s->pending_index);
    free(s->pending_index);
    free(s->queue);
    pthread_mutex_destroy(&s->model_mu);
    pthread_rwlock_destroy(&s->index_lock);
    pthread_mutex_destroy(&s->member_mu);
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
        [SVC_TRAIN_PAUSED] = "paused"};
    return st >= 0 && st < SVC_TRAIN_N_STATES ? names[st] : "failed";
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

void svc_get_status(svc *s, svc_status *out) {
    pthread_mutex_lock(&s->stat_mu);
    out->train = s->train;
    out->reembed_done = s->reembed_done;
    out->reembed_total = s->reembed_total;
    pthread_mutex_unlock(&s->stat_mu);
    pthread_rwlock_rdlock(&s->index_lock);
    out->serving_version = s->index_version;
    out->pending_version = s->pending_version;
    out->vectors = s->index->n;
    pthread_rwlock_unlock(&s->index_lock);
    out->images = store_image_count(s->st);
    out->queue = svc_queue_length(s);
    out->disk_full_errors = atomic_load(&s->disk_full_errors);
    out->writes_failing = atomic_load(&s->writes_failing);
}
