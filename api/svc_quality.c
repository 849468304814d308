/* svc_quality.c — the quality monitor and the gate.
 *
 * The monitor scores a version by the leave-one-out k-NN-20 accuracy (cosine) of the labelled
 * live images — at most quality_sample of them, smallest SHA-256 first, so that every version is
 * scored on the same sample at a decision — with that version's vectors, and the same figure for
 * raw pixels of the evaluation view. The gate lets a candidate replace the serving version only
 * if its figure is at least the serving version's minus the tolerance. Runs on the re-embedder's
 * thread (background priority). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

#define QUALITY_K 20
#define MAX_LABELS 100000 /* distinct label values kept apart */

/* The labelled sample: ids in SHA-256 order, their labels as small integers. */
typedef struct qsample {
    int64_t *ids;
    int *labels;
    int n, cap;
    char **names; /* distinct label texts, index = label */
    int n_names, cap_names;
    int failed;   /* out of memory while collecting */
} qsample;

static int intern(qsample *q, const char *label) {
    for (int i = 0; i < q->n_names; i++) /* labels are few: a scan is enough */
        if (!strcmp(q->names[i], label)) return i;
    if (q->n_names == MAX_LABELS) return MAX_LABELS - 1;
    if (q->n_names == q->cap_names) {
        int cap = q->cap_names ? 2 * q->cap_names : 16;
        char **names = realloc(q->names, (size_t)cap * sizeof *names);
        if (!names) return -1;
        q->names = names;
        q->cap_names = cap;
    }
    if (!(q->names[q->n_names] = strdup(label))) return -1;
    return q->n_names++;
}

static int collect(void *ctx, int64_t id, const char *label) {
    qsample *q = ctx;
    if (q->n == q->cap) {
        int cap = q->cap ? 2 * q->cap : 1024;
        int64_t *ids = realloc(q->ids, (size_t)cap * sizeof *ids);
        if (ids) q->ids = ids;
        int *labels = ids ? realloc(q->labels, (size_t)cap * sizeof *labels) : NULL;
        if (labels) q->labels = labels;
        if (!ids || !labels) return q->failed = 1;
        q->cap = cap;
    }
    int l = intern(q, label);
    if (l < 0) return q->failed = 1;
    q->ids[q->n] = id;
    q->labels[q->n++] = l;
    return 0;
}

static void sample_free(qsample *q) {
    for (int i = 0; i < q->n_names; i++) free(q->names[i]);
    free(q->names);
    free(q->ids);
    free(q->labels);
    memset(q, 0, sizeof *q);
}

static int sample_load(svc *s, qsample *q, svc_err *err) {
    memset(q, 0, sizeof *q);
    store_err se = {0};
    if (store_labelled_each(s->st, s->opts.label_key, s->opts.quality_sample, collect, q, &se) <
        0)
        return svc_fail(err, svc_code_of(&se), "quality sample: %s", se.msg);
    if (q->failed) {
        sample_free(q);
        return svc_fail(err, ERR_NO_MEMORY, "quality sample: out of memory");
    }
    return 0;
}

/* A row's label: rows are put into the scoring index under their position in the sample. */
static int label_at(void *ctx, int64_t pos) { return ((const qsample *)ctx)->labels[pos]; }

static int score(eng_index *ix, qsample *q, double *acc, svc_err *err) {
    eng_err e = {0};
    if (eng_index_knn_loo(ix, QUALITY_K, label_at, q, acc, &e))
        return svc_fail(err, svc_code_of(&e), "quality: %s", e.msg);
    return 0;
}

/* Leave-one-out k-NN-20 of the sample with v's vectors (images without one are left out). */
static int knn_of_version(svc *s, svc_version *v, qsample *q, double *acc, svc_err *err) {
    eng_index ix;
    eng_err e = {0};
    if (eng_index_init_passes(&ix, s->dim, 1u << ENG_INDEX_EXACT, &e))
        return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    int rc = 0;
    svc_rwlock_rdlock(&v->index_lock);
    for (int i = 0; i < q->n && rc == 0; i++) {
        const float *vec = eng_index_get(&v->index, q->ids[i]);
        if (vec && eng_index_put(&ix, i, vec, &e)) rc = svc_fail(err, svc_code_of(&e), "%s", e.msg);
    }
    svc_rwlock_unlock(&v->index_lock);
    if (rc == 0) rc = score(&ix, q, acc, err);
    eng_index_free(&ix);
    return rc;
}

/* The same with raw pixels: each image's evaluation view (the whole training copy resized to the
 * model's input and normalised) as its vector. */
static int knn_of_pixels(svc *s, svc_version *v, qsample *q, double *acc, svc_err *err) {
    const eng_aug_cfg *view = &v->one[0].view; /* every model of v has the same */
    int dim = view->channels * view->size * view->size;
    float *px = malloc((size_t)dim * sizeof *px);
    eng_index ix;
    eng_err e = {0};
    if (!px) return svc_fail(err, ERR_NO_MEMORY, "quality: out of memory");
    if (eng_index_init_passes(&ix, dim, 1u << ENG_INDEX_EXACT, &e)) {
        free(px);
        return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    }
    int rc = 0;
    for (int i = 0; i < q->n && rc == 0; i++) {
        eng_image img;
        eng_aug_src src;
        int64_t kept;
        int m = svc_load_copies(s, &q->ids[i], 1, &img, &src, &kept, err);
        if (m < 0) rc = -1;
        if (m != 1) continue; /* deleted meanwhile */
        e = (eng_err){0};
        int bad = eng_infer_view(view, &src, px, &e) || eng_index_put(&ix, i, px, &e);
        if (bad && e.code != ERR_BAD_INPUT) /* an all-zero view is left out, like a zero vector */
            rc = svc_fail(err, svc_code_of(&e), "%s", e.msg);
        eng_image_free(&img);
    }
    if (rc == 0) rc = score(&ix, q, acc, err);
    eng_index_free(&ix);
    free(px);
    return rc;
}

/* Without labels: the effective rank and spread of v's vectors of `ids` (the first images). */
static int health_of_version(svc *s, svc_version *v, const int64_t *ids, int n, double *eff,
                             double *spread, size_t *rows, svc_err *err) {
    eng_index ix;
    eng_err e = {0};
    if (eng_index_init_passes(&ix, s->dim, 1u << ENG_INDEX_EXACT, &e))
        return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    int rc = 0;
    svc_rwlock_rdlock(&v->index_lock);
    for (int i = 0; i < n && rc == 0; i++) {
        const float *vec = eng_index_get(&v->index, ids[i]);
        if (vec && eng_index_put(&ix, ids[i], vec, &e)) rc = svc_fail(err, svc_code_of(&e), "%s", e.msg);
    }
    svc_rwlock_unlock(&v->index_lock);
    *rows = ix.n;
    if (rc == 0 && ix.n < 2) { /* no vectors at all (e.g. every one was zero): collapsed */
        *eff = *spread = 0;
    } else if (rc == 0 && eng_index_health(&ix, eff, spread, &e)) {
        rc = svc_fail(err, svc_code_of(&e), "quality: %s", e.msg);
    }
    eng_index_free(&ix);
    return rc;
}

/* The unlabelled gate: refuse a candidate that collapsed (effective rank below a tenth of what
 * its sample allows — the dimension, or one less than the number of vectors when that is
 * smaller — or a spread below 1% of the serving version's). */
static int decide_unlabelled(svc *s, svc_version *cand, store_quality *out, svc_err *err) {
    int64_t *ids;
    int64_t n = store_image_ids(s->st, &ids);
    if (n < 0) return svc_fail(err, ERR_NO_MEMORY, "quality: out of memory");
    if (n > s->opts.quality_sample) n = s->opts.quality_sample;
    double serving_spread = NAN, serving_eff;
    size_t rows = 0, serving_rows = 0;
    svc_version *serving = svc_version_acquire(s);
    int rc = health_of_version(s, cand, ids, (int)n, &out->eff_rank, &out->mean_std, &rows, err);
    if (rc == 0)
        rc = health_of_version(s, serving, ids, (int)n, &serving_eff, &serving_spread,
                               &serving_rows, err);
    svc_version_release(serving);
    free(ids);
    if (rc) return -1;
    size_t most = rows > 1 && rows - 1 < (size_t)s->dim ? rows - 1 : (size_t)s->dim;
    int low_rank = out->eff_rank < 0.1 * (double)most;
    int narrow = out->mean_std < 0.01 * serving_spread;
    out->accepted = !s->opts.gate || !(low_rank || narrow);
    snprintf(out->reason, sizeof out->reason,
             "%s without labels (%lld labelled, under %d): effective rank %.1f of %zu, spread "
             "%.3g against serving's %.3g%s",
             out->accepted ? "accepted" : "refused as collapsed", (long long)out->labelled,
             s->opts.min_labelled, out->eff_rank, most, out->mean_std, serving_spread,
             s->opts.gate ? "" : "; the gate is off");
    return 0;
}

int svc_quality_decide(svc *s, svc_version *cand, store_quality *out, svc_err *err) {
    memset(out, 0, sizeof *out);
    out->version = cand->id;
    out->decided = svc_now();
    out->knn20 = out->pixels_knn20 = out->serving_knn20 = out->eff_rank = out->mean_std = NAN;
    qsample q;
    if (sample_load(s, &q, err)) return -1;
    out->labelled = q.n;
    int rc = 0;
    if (q.n < s->opts.min_labelled || q.n < QUALITY_K + 1) {
        rc = decide_unlabelled(s, cand, out, err);
    } else {
        svc_version *serving = svc_version_acquire(s);
        rc = knn_of_version(s, cand, &q, &out->knn20, err);
        if (rc == 0) rc = knn_of_version(s, serving, &q, &out->serving_knn20, err);
        /* raw pixels depend on the sample only: computed again when it changed */
        uint64_t key = 1469598103934665603ULL ^ (uint64_t)q.n;
        for (int i = 0; i < q.n; i++) key = (key ^ (uint64_t)q.ids[i]) * 1099511628211ULL;
        if (rc == 0 && key == s->pixels_sample && isfinite(s->pixels_knn20)) {
            out->pixels_knn20 = s->pixels_knn20;
        } else if (rc == 0 && (rc = knn_of_pixels(s, cand, &q, &out->pixels_knn20, err)) == 0) {
            s->pixels_sample = key;
            s->pixels_knn20 = out->pixels_knn20;
        }
        svc_version_release(serving);
        if (rc == 0) {
            double floor = out->serving_knn20 - s->opts.gate_tolerance;
            out->accepted = !s->opts.gate || out->knn20 >= floor;
            snprintf(out->reason, sizeof out->reason,
                     "%s: k-NN-20 %.4f against the serving version's %.4f (tolerance %.3f)%s",
                     out->accepted ? "accepted" : "refused", out->knn20, out->serving_knn20,
                     s->opts.gate_tolerance, s->opts.gate ? "" : "; the gate is off");
        }
    }
    sample_free(&q);
    return rc;
}

int svc_version_quality(svc *s, int64_t version, store_quality *out, svc_err *err) {
    store_err se = {0};
    int r = store_quality_get(s->st, version, out, &se);
    if (r < 0) return svc_fail(err, svc_code_of(&se), "%s", se.msg);
    return r;
}
