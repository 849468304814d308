/* store_sampler.c — uniform random draws of live image ids without touching SQL.
 *
 * The live ids sit in one array (order irrelevant); pos[id] is each id's index there, so adding
 * and deleting are O(1) (delete moves the last id into the hole). Draws use splitmix64 on a
 * state the caller keeps, so a trainer's sample stream is reproducible and checkpointable. */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Grows pos[] to cover id and live[] by one; caller holds smu. */
static int reserve(store *s, int64_t id) {
    if ((size_t)id >= s->n_pos) {
        size_t n = s->n_pos ? s->n_pos : 1024;
        while (n <= (size_t)id) n *= 2;
        int64_t *p = realloc(s->pos, n * sizeof *p);
        if (!p) return -1;
        for (size_t i = s->n_pos; i < n; i++) p[i] = -1;
        s->pos = p;
        s->n_pos = n;
    }
    if (s->n_live == s->cap_live) {
        size_t c = s->cap_live ? s->cap_live * 2 : 1024;
        int64_t *l = realloc(s->live, c * sizeof *l);
        if (!l) return -1;
        s->live = l;
        s->cap_live = c;
    }
    return 0;
}

int store_sampler_add(store *s, int64_t id) {
    if (id < 0) return -1;
    pthread_mutex_lock(&s->smu);
    int rc = reserve(s, id);
    if (rc == 0 && s->pos[id] < 0) {
        s->pos[id] = (int64_t)s->n_live;
        s->live[s->n_live++] = id;
    }
    pthread_mutex_unlock(&s->smu);
    return rc;
}

void store_sampler_remove(store *s, int64_t id) {
    pthread_mutex_lock(&s->smu);
    if (id >= 0 && (size_t)id < s->n_pos && s->pos[id] >= 0) {
        size_t at = (size_t)s->pos[id];
        int64_t last = s->live[--s->n_live];
        s->live[at] = last;
        s->pos[last] = (int64_t)at;
        s->pos[id] = -1;
    }
    pthread_mutex_unlock(&s->smu);
}

int store_sampler_load(store *s, store_err *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->wdb, "SELECT id, meta FROM images ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK)
        return store_sql_fail(err, s->wdb, "loading image ids");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (store_sampler_add(s, id) ||
            store_meta_add(s, id, (const char *)sqlite3_column_text(st, 1))) {
            sqlite3_finalize(st);
            return store_fail(err, "store: out of memory for the sampler and metadata index");
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return store_sql_fail(err, s->wdb, "loading image ids");
    return 0;
}

int64_t store_image_count(store *s) {
    pthread_mutex_lock(&s->smu);
    int64_t n = (int64_t)s->n_live;
    pthread_mutex_unlock(&s->smu);
    return n;
}

int store_sample(store *s, int64_t *ids, int n, uint64_t *rng_state, double recent_weight) {
    pthread_mutex_lock(&s->smu);
    size_t live = s->n_live;
    if (live == 0) {
        pthread_mutex_unlock(&s->smu);
        return 0;
    }
    /* "recent" = the newest 10% by id; ids only grow, so they are the largest ids. Finding them
     * exactly would need an order; the array keeps insertion order until deletes reshuffle it,
     * so take the ids above the 90th-percentile id value instead. */
    int64_t max_id = 0;
    if (recent_weight > 0)
        for (size_t i = 0; i < live; i++)
            if (s->live[i] > max_id) max_id = s->live[i];
    int64_t recent_from = max_id - max_id / 10;
    for (int k = 0; k < n; k++) {
        uint64_t r = splitmix(rng_state);
        double u = (double)(splitmix(rng_state) >> 11) * 0x1.0p-53;
        int64_t id = s->live[r % live];
        if (recent_weight > 0 && u < recent_weight) /* rejection-sample a recent one */
            for (int tries = 0; tries < 64 && id < recent_from; tries++)
                id = s->live[splitmix(rng_state) % live];
        ids[k] = id;
    }
    pthread_mutex_unlock(&s->smu);
    return n;
}

int store_image_live(store *s, int64_t id) {
    pthread_mutex_lock(&s->smu);
    int live = id >= 0 && (size_t)id < s->n_pos && s->pos[id] >= 0;
    pthread_mutex_unlock(&s->smu);
    return live;
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t store_image_ids(store *s, int64_t **ids) {
    *ids = NULL;
    pthread_mutex_lock(&s->smu);
    size_t n = s->n_live;
    int64_t *out = n ? malloc(n * sizeof *out) : NULL;
    if (out) memcpy(out, s->live, n * sizeof *out);
    pthread_mutex_unlock(&s->smu);
    if (n && !out) return -1;
    if (n) qsort(out, n, sizeof *out, cmp_id);
    *ids = out;
    return (int64_t)n;
}
