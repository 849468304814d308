/* svc_version.c — model versions in memory: loading one (its inference models and an empty
 * index), references, embedding with it, and the serving and pending pointers, whose every
 * change is one store under version_mu. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

static void version_free(svc_version *v) {
    for (int i = 0; i < SVC_ONE_POOL; i++) {
        eng_infer_free(&v->one[i]);
        pthread_mutex_destroy(&v->one_mu[i]);
    }
    eng_infer_free(&v->many);
    pthread_mutex_destroy(&v->many_mu);
    eng_index_free(&v->index);
    svc_rwlock_destroy(&v->index_lock);
    free(v);
}

svc_version *svc_version_load(const svc *s, int64_t id, const void *blob, size_t len,
                              svc_err *err) {
    svc_version *v = calloc(1, sizeof *v);
    if (!v) {
        svc_fail(err, ERR_NO_MEMORY, "out of memory loading model version %lld", (long long)id);
        return NULL;
    }
    for (int i = 0; i < SVC_ONE_POOL; i++) pthread_mutex_init(&v->one_mu[i], NULL);
    pthread_mutex_init(&v->many_mu, NULL);
    svc_rwlock_init(&v->index_lock);
    eng_err e = {0};
    int bad = 0;
    for (int i = 0; i < SVC_ONE_POOL && !bad; i++)
        bad = eng_infer_create(&v->one[i], blob, len, 1, 1, &e); /* request threads: 1 core each */
    if (!bad && v->one[0].dim != s->dim) {
        bad = 1;
        snprintf(e.msg, sizeof e.msg, "its vectors have %d floats, the service's %d",
                 v->one[0].dim, s->dim);
    }
    v->many_batch = s->opts.embed_batch; /* the batch model: built when first needed */
    v->st = s->st;
    /* no int8 copy: the service never asks for that pass (25 MB per 100k vectors of 256) */
    if (!bad)
        bad = eng_index_init_passes(&v->index, s->dim,
                                    1u << ENG_INDEX_EXACT | 1u << ENG_INDEX_HNSW, &e);
    if (bad) {
        svc_fail(err, svc_code_of(&e), "loading model version %lld: %s", (long long)id, e.msg);
        version_free(v);
        return NULL;
    }
    v->id = id;
    v->step = v->one[0].step;
    v->dim = v->one[0].dim;
    atomic_init(&v->refs, 1);
    return v;
}

static svc_version *ref(svc_version *v) {
    if (v) atomic_fetch_add(&v->refs, 1);
    return v;
}

svc_version *svc_version_acquire(svc *s) {
    svc_mutex_lock(&s->version_mu);
    svc_version *v = ref(s->serving);
    svc_mutex_unlock(&s->version_mu);
    return v;
}

void svc_versions_acquire(svc *s, svc_version **serving, svc_version **pending) {
    svc_mutex_lock(&s->version_mu);
    *serving = ref(s->serving);
    *pending = ref(s->pending);
    svc_mutex_unlock(&s->version_mu);
}

void svc_version_release(svc_version *v) {
    if (v && atomic_fetch_sub(&v->refs, 1) == 1) version_free(v);
}

int64_t svc_serving_version(svc *s) {
    svc_mutex_lock(&s->version_mu);
    int64_t id = s->serving->id;
    svc_mutex_unlock(&s->version_mu);
    return id;
}

/* ---- the two pointers: each change below is one store, under version_mu ---- */

void svc_version_set_pending(svc *s, svc_version *v) {
    svc_mutex_lock(&s->version_mu);
    assert(s->pending == NULL);
    s->pending = ref(v);
    svc_mutex_unlock(&s->version_mu);
}

/* Takes the pending pointer out (the caller releases the service's reference). */
static svc_version *take_pending_locked(svc *s) {
    assert(svc_mutex_held(&s->version_mu));
    svc_version *p = s->pending;
    s->pending = NULL;
    return p;
}

void svc_version_drop_pending(svc *s) {
    svc_mutex_lock(&s->version_mu);
    svc_version *p = take_pending_locked(s);
    svc_mutex_unlock(&s->version_mu);
    svc_version_release(p);
}

void svc_version_promote(svc *s) {
    svc_mutex_lock(&s->version_mu);
    assert(s->pending != NULL);
    svc_version *old = s->serving;
    s->serving = take_pending_locked(s); /* the service's reference moves with the pointer */
    svc_mutex_unlock(&s->version_mu);
    svc_version_release(old);
}

/* ---- embedding ---- */

/* Builds v's batch model from its checkpoint in the store unless it is there; many_mu held. */
static int many_ready(svc_version *v, eng_err *e) {
    if (v->many_built) return 0;
    store_checkpoint_info info;
    store_err se = {0};
    void *blob = NULL;
    size_t len = 0;
    int r = store_checkpoint_get(v->st, v->id, &info, &blob, &len, &se);
    if (r != 0) {
        free(blob);
        return eng_fail(e, "reading model version %lld for the batch model: %s",
                        (long long)v->id, r < 0 ? se.msg : "it is no longer stored");
    }
    int bad = eng_infer_create(&v->many, blob, len, v->many_batch, 0, e);
    free(blob);
    if (!bad) v->many_built = 1;
    return bad;
}

/* Frees v's batch model when it has gone unused for idle_s seconds (never waits for it). */
static void many_release_idle(svc_version *v, double idle_s) {
    if (!v || pthread_mutex_trylock(&v->many_mu)) return;
    if (v->many_built && svc_now() - v->many_used >= idle_s) {
        eng_infer_free(&v->many);
        v->many_built = 0;
    }
    pthread_mutex_unlock(&v->many_mu);
}

void svc_release_idle_models(svc *s, double idle_s) {
    svc_version *serving, *pending;
    svc_versions_acquire(s, &serving, &pending);
    many_release_idle(serving, idle_s);
    many_release_idle(pending, idle_s);
    svc_version_release(serving);
    svc_version_release(pending);
}

int svc_version_batch_built(svc_version *v) {
    pthread_mutex_lock(&v->many_mu);
    int built = v->many_built;
    pthread_mutex_unlock(&v->many_mu);
    return built;
}

int svc_version_embed(svc_version *v, const eng_aug_src *imgs, int n, float *out, svc_err *err) {
    eng_err e = {0};
    int bad = 0;
    if (n < 4) {
        /* single requests: any free batch-1 model, else wait for the first */
        for (int i = 0; i < n && !bad; i++) {
            int slot = -1;
            for (int j = 0; j < SVC_ONE_POOL && slot < 0; j++)
                if (pthread_mutex_trylock(&v->one_mu[j]) == 0) slot = j;
            if (slot < 0) pthread_mutex_lock(&v->one_mu[slot = 0]);
            bad = eng_infer_embed(&v->one[slot], &imgs[i], 1, out + (size_t)i * v->dim, &e);
            pthread_mutex_unlock(&v->one_mu[slot]);
        }
    } else {
        pthread_mutex_lock(&v->many_mu);
        bad = many_ready(v, &e) || eng_infer_embed(&v->many, imgs, n, out, &e);
        v->many_used = svc_now();
        pthread_mutex_unlock(&v->many_mu);
    }
    if (bad) return svc_fail(err, svc_code_of(&e), "inference failed: %s", e.msg);
    for (size_t i = 0; i < (size_t)n * v->dim; i++)
        if (!isfinite(out[i]))
            return svc_fail(err, ERR_INTERNAL, "the model produced a non-finite vector");
    return 0;
}
