/* svc_index.c — search over the serving version's vectors, vectors for fresh uploads,
 * publishing a version, and re-embedding everything with it before the atomic swap. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

/* The ids a search may return: *allow points at set (filled here) when there is a filter that
 * is not empty, else is NULL (every indexed image; the index holds live images only). */
static int allowed_ids(svc *s, const svc_filter *f, eng_idset *set, const eng_idset **allow,
                       svc_err *err) {
    *allow = NULL;
    memset(set, 0, sizeof *set);
    if (store_filter_is_empty(f)) return 0;
    store_err se = {0};
    if (store_filter_eval(s->st, f, set, &se)) return svc_fail(err, se.code, "%s", se.msg);
    *allow = set;
    return 0;
}

/* Whether v's index answers by its graph: big enough, graph built, not forced exact. */
static eng_index_pass pass_of(const svc *s, const svc_version *v, int force_exact) {
    int big = s->opts.ann_threshold > 0 && v->index.n >= (size_t)s->opts.ann_threshold;
    return !force_exact && big && v->index.hnsw ? ENG_INDEX_HNSW : ENG_INDEX_EXACT;
}

int svc_search_ann(svc *s, const float *vec, int k, const svc_filter *filter, int force_exact,
                   eng_hit *out, int *n_out, int64_t *version, int *exact, svc_err *err) {
    eng_err e = {0};
    eng_idset set;
    eng_search_opts o = eng_search_defaults();
    o.exact_out = exact;
    if (allowed_ids(s, filter, &set, &o.allow, err)) return -1;
    svc_version *v = svc_version_acquire(s);
    *version = v->id;
    svc_rwlock_rdlock(&v->index_lock);
    o.pass = pass_of(s, v, force_exact);
    int rc = eng_index_search(&v->index, vec, k, &o, out, n_out, &e);
    svc_rwlock_unlock(&v->index_lock);
    svc_version_release(v);
    eng_idset_free(&set);
    if (rc) return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    return 0;
}

int svc_search(svc *s, const float *vec, int k, const svc_filter *filter, eng_hit *out,
               int *n_out, int64_t *version, svc_err *err) {
    return svc_search_ann(s, vec, k, filter, 1, out, n_out, version, NULL, err);
}

int svc_search_batch(svc *s, const float *vecs, int nq, int k, const svc_filter *filter,
                     eng_hit *out, int *n_out, int64_t *version, svc_err *err) {
    eng_err e = {0};
    eng_idset set;
    const eng_idset *allow;
    if (allowed_ids(s, filter, &set, &allow, err)) return -1;
    svc_version *v = svc_version_acquire(s);
    *version = v->id;
    svc_rwlock_rdlock(&v->index_lock);
    int rc = eng_index_search_batch(&v->index, vecs, nq, k, allow, out, n_out, &e);
    svc_rwlock_unlock(&v->index_lock);
    svc_version_release(v);
    eng_idset_free(&set);
    if (rc) return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    return 0;
}

int svc_neighbors_ann(svc *s, int64_t id, int k, const svc_filter *filter, int force_exact,
                      eng_hit *out, int *n_out, int64_t *version, int *exact, svc_err *err) {
    eng_err e = {0};
    eng_idset set;
    eng_search_opts o = eng_search_defaults();
    o.exclude = id;
    o.exact_out = exact;
    if (allowed_ids(s, filter, &set, &o.allow, err)) return -1;
    svc_version *v = svc_version_acquire(s);
    *version = v->id;
    svc_rwlock_rdlock(&v->index_lock);
    const float *vec = eng_index_get(&v->index, id);
    int known = vec != NULL;
    o.pass = pass_of(s, v, force_exact);
    int rc = known ? eng_index_search(&v->index, vec, k, &o, out, n_out, &e) : -1;
    svc_rwlock_unlock(&v->index_lock);
    svc_version_release(v);
    eng_idset_free(&set);
    if (!known) {
        if (store_image_live(s->st, id))
            return svc_fail(err, ERR_UNAVAILABLE,
                            "image %lld has no vector of model version %lld yet; retry shortly",
                            (long long)id, (long long)*version);
        return svc_fail(err, ERR_NOT_FOUND, "no image %lld", (long long)id);
    }
    if (rc) return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    return 0;
}

int svc_neighbors(svc *s, int64_t id, int k, const svc_filter *filter, eng_hit *out, int *n_out,
                  int64_t *version, svc_err *err) {
    return svc_neighbors_ann(s, id, k, filter, 1, out, n_out, version, NULL, err);
}

int svc_vector(svc *s, int64_t id, float *out, int64_t *version) {
    for (int attempt = 0; attempt < 3; attempt++) {
        svc_version *v = svc_version_acquire(s);
        int64_t vid = v->id;
        svc_rwlock_rdlock(&v->index_lock);
        int known = eng_index_get(&v->index, id) != NULL;
        svc_rwlock_unlock(&v->index_lock);
        svc_version_release(v);
        if (!known) return 1;
        store_err se;
        /* the stored vector (the index holds it normalised); a swap and prune in between makes
         * it vanish, and the next attempt reads the new version's */
        if (store_embedding_get(s->st, id, vid, out, s->dim, &se) == 0) {
            *version = vid;
            return 0;
        }
    }
    return 1;
}

/* Puts the vectors whose images are live into v's index. */
static void index_put_live_locked(svc_version *v, const int64_t *ids, const float *vecs, int n,
                                  const char *live) {
    assert(svc_rwlock_write_held(&v->index_lock));
    for (int i = 0; i < n; i++) {
        eng_err e;
        if (live[i]) (void)eng_index_put(&v->index, ids[i], vecs + (size_t)i * v->dim, &e);
    }
}

/* 1 when v's index is past the threshold and its graph is missing or unfinished. */
static int graph_wanted(svc *s, svc_version *v) {
    svc_rwlock_rdlock(&v->index_lock);
    int want = v->index.n >= (size_t)s->opts.ann_threshold &&
               (!v->index.hnsw || eng_index_hnsw_building(&v->index));
    svc_rwlock_unlock(&v->index_lock);
    return want;
}

int svc_index_graph_wanted(svc *s, svc_version *v) {
    return s->opts.ann_threshold > 0 && v && graph_wanted(s, v);
}

void svc_index_graph(svc *s, svc_version *v) {
    if (!svc_index_graph_wanted(s, v)) return; /* the common case, under the read lock only */
    eng_err e = {0};
    svc_rwlock_wrlock(&v->index_lock);
    int ok = v->index.hnsw != NULL || eng_index_hnsw_begin(&v->index, NULL, &e) == 0;
    svc_rwlock_unlock(&v->index_lock);
    if (!ok) return; /* out of memory: the index stays exact, as below the threshold */
    /* A batch at a time: member_mu keeps inserts and deletes out while a batch links (they wait
     * for one batch, not the build), and searches go on under their read locks beside it, as
     * exact scans until the graph is finished. */
    int r = 1;
    while (r == 1 && !atomic_load(&s->stopping)) {
        svc_mutex_lock(&s->member_mu);
        svc_rwlock_rdlock(&v->index_lock);
        r = eng_index_hnsw_building(&v->index) ? eng_index_hnsw_extend(&v->index, SVC_GRAPH_STEP, &e)
                                                : 0;
        svc_rwlock_unlock(&v->index_lock);
        svc_mutex_unlock(&s->member_mu);
    }
    if (r == 1) return; /* stopping: the unfinished graph goes with the version */
    svc_rwlock_wrlock(&v->index_lock);
    if (r < 0) eng_index_hnsw_drop(&v->index); /* on failure: exact, as below the threshold */
    else if (eng_index_hnsw_building(&v->index)) eng_index_hnsw_finish(&v->index);
    svc_rwlock_unlock(&v->index_lock);
}

void svc_build_graphs(svc *s) {
    svc_version *v = svc_version_acquire(s);
    svc_index_graph(s, v);
    svc_version_release(v);
}

void svc_index_insert(svc *s, svc_version *v, const int64_t *ids, const float *vecs, int n) {
    /* member_mu keeps deletes out until the vectors are in; liveness is asked before the write
     * lock, so searches wait only for the copies, not for the store's sampler lock */
    char one, *live = n > 1 ? malloc((size_t)n) : &one;
    svc_mutex_lock(&s->member_mu);
    for (int i = 0; live && i < n; i++) live[i] = (char)store_image_live(s->st, ids[i]);
    svc_rwlock_wrlock(&v->index_lock);
    if (live) {
        index_put_live_locked(v, ids, vecs, n, live);
    } else { /* no room for the flags: one at a time, liveness asked under the lock */
        for (int i = 0; i < n; i++) {
            char l = (char)store_image_live(s->st, ids[i]);
            index_put_live_locked(v, &ids[i], vecs + (size_t)i * v->dim, 1, &l);
        }
    }
    svc_rwlock_unlock(&v->index_lock);
    svc_mutex_unlock(&s->member_mu);
    if (live != &one) free(live);
}

/* Embeds prepared images with v, stores the vectors, and indexes them. */
static int embed_store_index(svc *s, svc_version *v, const eng_aug_src *srcs, const int64_t *ids,
                             int n, float *vecs, svc_err *err) {
    if (svc_version_embed(v, srcs, n, vecs, err)) return -1;
    store_err se = {0};
    if (store_embedding_put(s->st, v->id, n, ids, vecs, s->dim, &se))
        return svc_store_fail(s, err, &se, "saving vectors: %s", se.msg);
    svc_index_insert(s, v, ids, vecs, n);
    return 0;
}

int svc_embed_fresh(svc *s, const int64_t *ids, int n, svc_err *err) {
    eng_image *imgs = calloc((size_t)n, sizeof *imgs);
    eng_aug_src *srcs = calloc((size_t)n, sizeof *srcs);
    int64_t *kept = calloc((size_t)n, sizeof *kept);
    float *vecs = malloc((size_t)n * s->dim * sizeof *vecs);
    int rc = -1, m = 0;
    if (!imgs || !srcs || !kept || !vecs) {
        svc_fail(err, ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    svc_version *serving, *pending;
    svc_versions_acquire(s, &serving, &pending);
    m = svc_load_copies(s, ids, n, imgs, srcs, kept, err);
    rc = m < 0 ? -1 : 0;
    if (m > 0) rc = embed_store_index(s, serving, srcs, kept, m, vecs, err);
    /* when uploads cross the threshold, the re-embedder's thread builds the graph */
    if (m > 0 && rc == 0 && svc_index_graph_wanted(s, serving)) svc_ring_reembed(s);
    if (m > 0 && rc == 0 && pending) rc = embed_store_index(s, pending, srcs, kept, m, vecs, err);
    svc_version_release(serving);
    svc_version_release(pending);
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
    if (!json) return svc_fail(err, ERR_NO_MEMORY, "out of memory");
    int64_t serving = svc_serving_version(s);
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

/* Drops the pending version and the progress shown for it. */
static void clear_pending(svc *s) {
    svc_version_drop_pending(s);
    set_progress(s, 0, 0);
}

typedef struct put_ctx {
    svc *s;
    svc_version *v;
} put_ctx;

static int put_existing(void *ctx, int64_t id, const float *vec) {
    put_ctx *c = ctx;
    svc_index_insert(c->s, c->v, &id, vec, 1);
    return 0;
}

int svc_reembed_newest(svc *s, svc_err *err) {
    store_checkpoint_info info;
    void *blob;
    size_t len;
    store_err se = {0};
    pthread_mutex_lock(&s->stat_mu);
    int64_t chosen = s->chosen; /* a version chosen by hand comes first, newer or older */
    s->chosen = 0;
    pthread_mutex_unlock(&s->stat_mu);
    int64_t current = svc_serving_version(s);
    int r = chosen ? store_checkpoint_get(s->st, chosen, &info, &blob, &len, &se)
                   : store_checkpoint_latest(s->st, &info, &blob, &len, &se);
    if (r < 0) return svc_fail(err, ERR_INTERNAL, "%s", se.msg);
    if (chosen && (r == 1 || chosen == current)) {
        if (r == 0) free(blob);
        return 0;
    }
    store_quality refused;
    if (!chosen && r == 0 && info.version > current &&
        store_quality_get(s->st, info.version, &refused, &se) == 0 && !refused.accepted) {
        free(blob); /* refused by the gate once: never re-embedded again */
        return 0;
    }
    if (!chosen && (r == 1 || info.version <= current)) {
        if (r == 0) free(blob);
        return 0;
    }
    svc_version *p = svc_version_load(s, info.version, blob, len, err);
    free(blob);
    if (!p) return -1;
    svc_version_set_pending(s, p);

    /* vectors already stored for this version (a re-embedding cut short by a restart) */
    put_ctx pc = {s, p};
    if (store_embedding_each(s->st, p->id, s->dim, put_existing, &pc, &se)) {
        clear_pending(s);
        svc_version_release(p);
        return svc_fail(err, ERR_INTERNAL, "%s", se.msg);
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
        rc = svc_fail(err, ERR_NO_MEMORY, "out of memory re-embedding");
    int64_t done = 0;
    for (int64_t i = 0; rc == 0 && i < n;) {
        if (atomic_load(&s->stopping)) {
            rc = svc_fail(err, ERR_UNAVAILABLE, "stopping");
            break;
        }
        int t = 0;
        svc_rwlock_rdlock(&p->index_lock);
        for (; i < n && t < b; i++)
            if (!eng_index_get(&p->index, ids[i])) todo[t++] = ids[i];
        svc_rwlock_unlock(&p->index_lock);
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
    /* the quality monitor and the gate, now that every vector of p is in (a version chosen by
     * hand is scored too, and served whatever its score) */
    store_quality q;
    if (rc == 0 && svc_quality_decide(s, p, &q, err)) rc = -1;
    if (rc == 0 && chosen) {
        q.accepted = 1;
        char why[200]; /* the gate's own words, cut to leave room for the prefix */
        snprintf(why, sizeof why, "%.199s", q.reason);
        snprintf(q.reason, sizeof q.reason, "chosen by hand (%s)", why);
    }
    if (rc == 0 && store_quality_put(s->st, &q, &se))
        rc = svc_store_fail(s, err, &se, "saving the gate's decision: %s", se.msg);
    if (rc == 0) {
        int64_t serving = svc_serving_version(s); /* before stat_mu: both are leaves */
        pthread_mutex_lock(&s->stat_mu);
        s->last_decision = q;
        s->refused_in_row = q.accepted ? 0 : s->refused_in_row + 1;
        if (s->refused_in_row >= SVC_REFUSALS_TO_RESTART) { /* training went astray */
            s->restart_from = serving;
            s->refused_in_row = 0;
        }
        pthread_mutex_unlock(&s->stat_mu);
    }
    if (rc == 0 && !q.accepted) {
        clear_pending(s);
        svc_version_release(p);
        if (err) { /* not a failure: the reason for the log */
            err->code = ERR_OK;
            snprintf(err->msg, sizeof err->msg, "%s", q.reason);
        }
        return 2;
    }
    if (rc == 0 && store_state_set(s->st, "serving_version", p->id, &se))
        rc = svc_store_fail(s, err, &se, "%s", se.msg);
    if (rc) {
        clear_pending(s);
        svc_version_release(p);
        return -1;
    }
    svc_index_graph(s, p); /* the whole graph before p serves (beside p's inserts) */
    svc_version_promote(s); /* the swap: model and index together, one pointer */
    svc_version_release(p);
    set_progress(s, 0, 0);
    return 1;
}
