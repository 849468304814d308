/* svc_index.c — search over the serving version's vectors, vectors for fresh uploads,
 * publishing a version, and re-embedding everything with it before the atomic swap. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

int svc_search(svc *s, const float *vec, int k, eng_hit *out, int *n_out, int64_t *version,
               svc_err *err) {
    eng_err e = {0};
    pthread_rwlock_rdlock(&s->index_lock);
    *version = s->index_version;
    int rc = eng_index_search(s->index, vec, k, NULL, out, n_out, &e);
    pthread_rwlock_unlock(&s->index_lock);
    if (rc) return svc_fail(err, svc_kind_of(&e), "%s", e.msg);
    return 0;
}

int svc_search_batch(svc *s, const float *vecs, int nq, int k, eng_hit *out, int *n_out,
                     int64_t *version, svc_err *err) {
    eng_err e = {0};
    pthread_rwlock_rdlock(&s->index_lock);
    *version = s->index_version;
    int rc = eng_index_search_batch(s->index, vecs, nq, k, out, n_out, &e);
    pthread_rwlock_unlock(&s->index_lock);
    if (rc) return svc_fail(err, svc_kind_of(&e), "%s", e.msg);
    return 0;
}

int svc_neighbors(svc *s, int64_t id, int k, eng_hit *out, int *n_out, int64_t *version,
                  svc_err *err) {
    eng_err e = {0};
    pthread_rwlock_rdlock(&s->index_lock);
    *version = s->index_version;
    int known = eng_index_get(s->index, id) != NULL;
    int rc = known ? eng_index_neighbors(s->index, id, k, out, n_out, &e) : -1;
    pthread_rwlock_unlock(&s->index_lock);
    if (!known) {
        if (store_image_live(s->st, id))
            return svc_fail(err, SVC_UNAVAILABLE,
                            "image %lld has no vector of model version %lld yet; retry shortly",
                            (long long)id, (long long)*version);
        return svc_fail(err, SVC_NOT_FOUND, "no image %lld", (long long)id);
    }
    if (rc) return svc_fail(err, svc_kind_of(&e), "%s", e.msg);
    return 0;
}

int svc_vector(svc *s, int64_t id, float *out, int64_t *version) {
    for (int attempt = 0; attempt < 3; attempt++) {
        pthread_rwlock_rdlock(&s->index_lock);
        int64_t v = s->index_version;
        int known = eng_index_get(s->index, id) != NULL;
        pthread_rwlock_unlock(&s->index_lock);
        if (!known) return 1;
        store_err se;
        /* the stored vector (the index holds it normalised); a swap and prune in between makes
         * it vanish, and the next attempt reads the new version's */
        if (store_embedding_get(s->st, id, v, out, s->dim, &se) == 0) {
            *version = v;
            return 0;
        }
    }
    return 1;
}

void svc_index_insert(svc *s, int64_t version, const int64_t *ids, const float *vecs, int n) {
    /* member_mu keeps deletes out until the vectors are in; liveness is asked before the write
     * lock, so searches wait only for the copies, not for the store's sampler lock (except when
     * the small array below cannot be allocated: then it is asked under the lock, as before) */
    pthread_mutex_lock(&s->member_mu);
    char *live = malloc(n > 0 ? (size_t)n : 1);
    for (int i = 0; live && i < n; i++) live[i] = (char)store_image_live(s->st, ids[i]);
    pthread_rwlock_wrlock(&s->index_lock);
    eng_index *ix = s->index_version == version                              ? s->index
                    : s->pending_index && s->pending_version == version ? s->pending_index
                                                                              : NULL;
    for (int i = 0; ix && i < n; i++) {
        eng_err e;
        if (live ? live[i] : store_image_live(s->st, ids[i]))
            (void)eng_index_put(ix, ids[i], vecs + (size_t)i * s->dim, &e);
    }
    pthread_rwlock_unlock(&s->index_lock);
    pthread_mutex_unlock(&s->member_mu);
    free(live);
}

/* Embeds prepared images with m, stores the vectors, and indexes them. */
static int embed_store_index(svc *s, svc_model *m, const eng_aug_src *srcs, const int64_t *ids,
                             int n, float *vecs, svc_err *err) {
    if (svc_model_embed(s, m, srcs, n, vecs, err)) return -1;
    store_err se = {0};
    if (store_embedding_put(s->st, m->version, n, ids, vecs, s->dim, &se))
        return svc_store_fail(s, err, &se, "saving vectors: %s", se.msg);
    svc_index_insert(s, m->version, ids, vecs, n);
    return 0;
}

int svc_embed_fresh(svc *s, const int64_t *ids, int n, svc_err *err) {
    eng_image *imgs = calloc((size_t)n, sizeof *imgs);
    eng_aug_src *srcs = calloc((size_t)n, sizeof *srcs);
    int64_t *kept = calloc((size_t)n, sizeof *kept);
    float *vecs = malloc((size_t)n * s->dim * sizeof *vecs);
    int rc = -1, m = 0;
    if (!imgs || !srcs || !kept || !vecs) {
        svc_fail(err, SVC_INTERNAL, "out of memory");
        goto done;
    }
    /* both references at once, so a swap between them cannot skip a version */
    pthread_mutex_lock(&s->model_mu);
    svc_model *serving = s->serving, *pending = s->pending;
    atomic_fetch_add(&serving->refs, 1);
    if (pending) atomic_fetch_add(&pending->refs, 1);
    pthread_mutex_unlock(&s->model_mu);
    m = svc_load_copies(s, ids, n, imgs, srcs, kept, err);
    rc = m < 0 ? -1 : 0;
    if (m > 0) rc = embed_store_index(s, serving, srcs, kept, m, vecs, err);
    if (m > 0 && rc == 0 && pending) rc = embed_store_index(s, pending, srcs, kept, m, vecs, err);
    svc_model_release(serving);
    svc_model_release(pending);
done:
    for (int i = 0; i < m; i++) eng_image_free(&imgs[i]);
    free(imgs);
    free(srcs);
    free(kept);
    free(vecs);
    return rc;
}

int svc_publish(svc *s, const uint8_t *blob, size_t len, uint64_t step, double loss,
                int64_t *version, svc_err *err) {
    char *json = eng_config_to_json(&s->cfg);
    if (!json) return svc_fail(err, SVC_INTERNAL, "out of memory");
    pthread_mutex_lock(&s->model_mu);
    int64_t serving = s->serving->version;
    pthread_mutex_unlock(&s->model_mu);
    store_err se = {0};
    int rc = store_checkpoint_put(s->st, (int64_t)step, json, loss, blob, len, serving, version,
                                  &se);
    free(json);
    if (rc) return svc_store_fail(s, err, &se, "saving a checkpoint: %s", se.msg);
    svc_write_ok(s);
    pthread_mutex_lock(&s->stat_mu);
    s->train.last_published = *version;
    pthread_mutex_unlock(&s->stat_mu);
    svc_ring_reembed(s);
    return 0;
}

static void set_progress(svc *s, int64_t done, int64_t total) {
    pthread_mutex_lock(&s->stat_mu);
    s->reembed_done = done;
    s->reembed_total = total;
    pthread_mutex_unlock(&s->stat_mu);
}

/* Drops the pending version (after a failure or a stop). */
static void clear_pending(svc *s) {
    pthread_rwlock_wrlock(&s->index_lock);
    pthread_mutex_lock(&s->model_mu);
    svc_model *p = s->pending;
    eng_index *ix = s->pending_index;
    s->pending = NULL;
    s->pending_index = NULL;
    s->pending_version = -1;
    pthread_mutex_unlock(&s->model_mu);
    pthread_rwlock_unlock(&s->index_lock);
    svc_model_release(p);
    if (ix) eng_index_free(ix);
    free(ix);
    set_progress(s, 0, 0);
}

static int put_existing(void *ctx, int64_t id, const float *vec) {
    svc *s = ctx;
    svc_index_insert(s, s->pending_version, &id, vec, 1);
    return 0;
}

int svc_reembed_newest(svc *s, svc_err *err) {
    store_checkpoint_info info;
    void *blob;
    size_t len;
    store_err se = {0};
    int r = store_checkpoint_latest(s->st, &info, &blob, &len, &se);
    if (r < 0) return svc_fail(err, SVC_INTERNAL, "%s", se.msg);
    pthread_rwlock_rdlock(&s->index_lock);
    int64_t current = s->index_version;
    pthread_rwlock_unlock(&s->index_lock);
    if (r == 1 || info.version <= current) {
        if (r == 0) free(blob);
        return 0;
    }
    svc_model *p = svc_model_load(s, info.version, blob, len, err);
    free(blob);
    if (!p) return -1;
    eng_index *ix = calloc(1, sizeof *ix);
    eng_err e = {0};
    if (!ix || eng_index_init(ix, s->dim, &e)) {
        free(ix);
        svc_model_release(p);
        return svc_fail(err, SVC_INTERNAL, "index: %s", e.msg);
    }
    pthread_rwlock_wrlock(&s->index_lock);
    pthread_mutex_lock(&s->model_mu);
    s->pending = p;
    s->pending_index = ix;
    s->pending_version = p->version;
    pthread_mutex_unlock(&s->model_mu);
    pthread_rwlock_unlock(&s->index_lock);

    /* vectors already stored for this version (a re-embedding cut short by a restart) */
    if (store_embedding_each(s->st, p->version, s->dim, put_existing, s, &se)) {
        clear_pending(s);
        return svc_fail(err, SVC_INTERNAL, "%s", se.msg);
    }
    int64_t *ids;
    int64_t n = store_image_ids(s->st, &ids);
    int b = s->opts.embed_batch;
    eng_image *imgs = calloc((size_t)b, sizeof *imgs);
    eng_aug_src *srcs = calloc((size_t)b, sizeof *srcs);
    int64_t *todo = calloc((size_t)b, sizeof *todo), *kept = calloc((size_t)b, sizeof *kept);
    float *vecs = malloc((size_t)b * s->dim * sizeof *vecs);
    int rc = 0;
    if (n < 0 || !imgs || !srcs || !todo || !kept || !vecs)
        rc = svc_fail(err, SVC_INTERNAL, "out of memory re-embedding");
    int64_t done = 0;
    for (int64_t i = 0; rc == 0 && i < n;) {
        if (atomic_load(&s->stopping)) {
            rc = svc_fail(err, SVC_UNAVAILABLE, "stopping");
            break;
        }
        int t = 0;
        pthread_rwlock_rdlock(&s->index_lock);
        for (; i < n && t < b; i++)
            if (!eng_index_get(s->pending_index, ids[i])) todo[t++] = ids[i];
        pthread_rwlock_unlock(&s->index_lock);
        int m = svc_load_copies(s, todo, t, imgs, srcs, kept, err);
        if (m < 0) rc = -1;
        if (m > 0) rc = embed_store_index(s, p, srcs, kept, m, vecs, err);
        for (int j = 0; j < m; j++) eng_image_free(&imgs[j]);
        done = i;
        set_progress(s, done, n);
    }
    free(ids);
    free(imgs);
    free(srcs);
    free(todo);
    free(kept);
    free(vecs);
    if (rc == 0 && store_state_set(s->st, "serving_version", p->version, &se))
        rc = svc_store_fail(s, err, &se, "%s", se.msg);
    if (rc) {
        clear_pending(s);
        return -1;
    }
    /* the swap: model and index together */
    pthread_rwlock_wrlock(&s->index_lock);
    pthread_mutex_lock(&s->model_mu);
    svc_model *old = s->serving;
    eng_index *old_ix = s->index;
    s->serving = s->pending;
    s->index = s->pending_index;
    s->index_version = s->pending_version;
    s->pending = NULL;
    s->pending_index = NULL;
    s->pending_version = -1;
    pthread_mutex_unlock(&s->model_mu);
    pthread_rwlock_unlock(&s->index_lock);
    svc_model_release(old);
    eng_index_free(old_ix);
    free(old_ix);
    set_progress(s, 0, 0);
    return 1;
}
