/* store_meta.c — every live image's metadata kept in memory as an inverted index, so a filter
 * (store_filter.c) is answered without SQL: for each top-level key, the ids that have it, and
 * for each scalar value under it (string, number, boolean), the ids that have that value; a
 * key's numeric values are also kept in order, so a range is a binary search and a walk.
 *
 * Postings are ascending id arrays (uploads arrive in id order, so adding is an append; a
 * delete is a binary search and a move). A filter evaluates to a dense id bitmap (eng_idset):
 * each operator sets the bits of its postings into a scratch set, which is ANDed (or, for $ne,
 * $nin and $exists false, subtracted) into the result, so the cost is the matching ids plus one
 * word per 64 ids per operator. Values whose postings empty out stay (no tombstones to manage);
 * a key with a value per image (a file name) costs one small entry per image.
 *
 * Locking: mlock, a reader-writer lock; uploads and deletes write, filters read. */
#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

typedef struct posting {
    int64_t *ids; /* owned [cap], ascending, n used */
    size_t n, cap;
} posting;

typedef struct mval {
    meta_value v; /* its string owned */
    uint64_t hash;
    posting p;    /* images with this value under the key */
} mval;

typedef struct mkey {
    char *name; /* owned, len bytes */
    size_t len;
    uint64_t hash;
    posting exists;          /* images with this key, whatever its value */
    mval *vals;              /* owned [cap_vals] */
    size_t n_vals, cap_vals;
    uint32_t *slots;         /* owned [n_slots]: 1 + index into vals, 0 empty */
    size_t n_slots;
    uint32_t *by_num;        /* owned [cap_vals]: indices of the numeric values, by value */
    size_t n_num;
} mkey;

struct store_meta {
    mkey *keys; /* owned [cap_keys] */
    size_t n_keys, cap_keys;
    uint32_t *slots; /* owned [n_slots]: 1 + index into keys, 0 empty */
    size_t n_slots;
    posting all;     /* every live image */
    eng_idset live;  /* the same as a bitmap, grown by doubling (a filter starts from a copy) */
    int live_lost;   /* 1 once the bitmap failed to grow: filters start from `all` instead */
    int64_t max_id;  /* the largest id ever added (-1: none): sets hold ids up to it */
};

/* ---- postings ---- */

static size_t lower_bound(const int64_t *a, size_t n, int64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int posting_add(posting *p, int64_t id) {
    size_t at = p->n && p->ids[p->n - 1] < id ? p->n : lower_bound(p->ids, p->n, id);
    if (at < p->n && p->ids[at] == id) return 0;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        int64_t *ids = realloc(p->ids, cap * sizeof *ids);
        if (!ids) return -1;
        p->ids = ids;
        p->cap = cap;
    }
    memmove(p->ids + at + 1, p->ids + at, (p->n - at) * sizeof *p->ids);
    p->ids[at] = id;
    p->n++;
    return 0;
}

static void posting_remove(posting *p, int64_t id) {
    size_t at = lower_bound(p->ids, p->n, id);
    if (at == p->n || p->ids[at] != id) return;
    memmove(p->ids + at, p->ids + at + 1, (p->n - at - 1) * sizeof *p->ids);
    p->n--;
}

static void posting_into(const posting *p, eng_idset *set) {
    for (size_t i = 0; i < p->n; i++) eng_idset_add(set, p->ids[i]);
}

/* ---- hashing ---- */

static uint64_t fnv(uint64_t h, const void *bytes, size_t n) {
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t hash_value(const meta_value *v) {
    unsigned char t = (unsigned char)v->type;
    uint64_t h = fnv(0xcbf29ce484222325ULL, &t, 1);
    switch (v->type) {
    case MV_STR: return fnv(h, v->str, v->len);
    case MV_NUM: return fnv(h, &v->num, sizeof v->num);
    case MV_BOOL: return fnv(h, &v->b, sizeof v->b);
    case MV_NONE: break;
    }
    return h;
}

static int value_eq(const meta_value *a, const meta_value *b) {
    if (a->type != b->type) return 0; /* strings never equal numbers, nor booleans */
    switch (a->type) {
    case MV_STR: return a->len == b->len && !memcmp(a->str, b->str, a->len);
    case MV_NUM: return a->num == b->num;
    case MV_BOOL: return a->b == b->b;
    case MV_NONE: break;
    }
    return 0;
}

/* Doubles a 1-based slot table of n entries whose hashes hash_of gives; -1 out of memory. */
static int rehash(uint32_t **slots, size_t *n_slots, size_t n, const void *items, size_t size,
                  size_t hash_offset) {
    size_t ns = *n_slots ? *n_slots * 2 : 16;
    uint32_t *t = calloc(ns, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t h;
        memcpy(&h, (const char *)items + i * size + hash_offset, sizeof h);
        size_t at = (size_t)h & (ns - 1);
        while (t[at]) at = (at + 1) & (ns - 1);
        t[at] = (uint32_t)(i + 1);
    }
    free(*slots);
    *slots = t;
    *n_slots = ns;
    return 0;
}

/* ---- keys and values ---- */

static mkey *key_find(const store_meta *m, const char *name, size_t len, uint64_t h) {
    if (!m->n_slots) return NULL;
    for (size_t at = (size_t)h & (m->n_slots - 1); m->slots[at]; at = (at + 1) & (m->n_slots - 1)) {
        mkey *k = &m->keys[m->slots[at] - 1];
        if (k->hash == h && k->len == len && !memcmp(k->name, name, len)) return k;
    }
    return NULL;
}

static mkey *key_get(store_meta *m, const char *name, size_t len) {
    uint64_t h = fnv(0xcbf29ce484222325ULL, name, len);
    mkey *k = key_find(m, name, len, h);
    if (k) return k;
    if (m->n_keys == UINT32_MAX - 1) return NULL;
    if (2 * (m->n_keys + 1) > m->n_slots &&
        rehash(&m->slots, &m->n_slots, m->n_keys, m->keys, sizeof *m->keys,
               offsetof(mkey, hash)))
        return NULL;
    if (m->n_keys == m->cap_keys) {
        size_t cap = m->cap_keys ? m->cap_keys * 2 : 8;
        mkey *keys = realloc(m->keys, cap * sizeof *keys);
        if (!keys) return NULL;
        m->keys = keys;
        m->cap_keys = cap;
    }
    k = &m->keys[m->n_keys];
    memset(k, 0, sizeof *k);
    k->name = malloc(len + 1);
    if (!k->name) return NULL;
    memcpy(k->name, name, len);
    k->name[len] = 0;
    k->len = len;
    k->hash = h;
    size_t at = (size_t)h & (m->n_slots - 1);
    while (m->slots[at]) at = (at + 1) & (m->n_slots - 1);
    m->slots[at] = (uint32_t)(++m->n_keys);
    return k;
}

static mval *val_find(const mkey *k, const meta_value *v, uint64_t h) {
    if (!k || !k->n_slots) return NULL;
    for (size_t at = (size_t)h & (k->n_slots - 1); k->slots[at]; at = (at + 1) & (k->n_slots - 1)) {
        mval *x = &k->vals[k->slots[at] - 1];
        if (x->hash == h && value_eq(&x->v, v)) return x;
    }
    return NULL;
}

/* The first index in by_num whose value is above x (strict) or at least x. */
static size_t num_bound(const mkey *k, double x, int strict) {
    size_t lo = 0, hi = k->n_num;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        double y = k->vals[k->by_num[mid]].v.num;
        if (strict ? y <= x : y < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static mval *val_get(mkey *k, const meta_value *v) {
    uint64_t h = hash_value(v);
    mval *x = val_find(k, v, h);
    if (x) return x;
    if (k->n_vals == UINT32_MAX - 1) return NULL;
    if (2 * (k->n_vals + 1) > k->n_slots &&
        rehash(&k->slots, &k->n_slots, k->n_vals, k->vals, sizeof *k->vals, offsetof(mval, hash)))
        return NULL;
    if (k->n_vals == k->cap_vals) {
        size_t cap = k->cap_vals ? k->cap_vals * 2 : 4;
        mval *vals = realloc(k->vals, cap * sizeof *vals);
        if (!vals) return NULL;
        k->vals = vals;
        uint32_t *order = realloc(k->by_num, cap * sizeof *order);
        if (!order) return NULL;
        k->by_num = order;
        k->cap_vals = cap;
    }
    x = &k->vals[k->n_vals];
    memset(x, 0, sizeof *x);
    x->v = *v;
    x->hash = h;
    if (v->type == MV_STR) {
        char *s = malloc(v->len + 1);
        if (!s) return NULL;
        memcpy(s, v->str, v->len);
        s[v->len] = 0;
        x->v.str = s;
    }
    if (v->type == MV_NUM) { /* keep the numeric values in order */
        size_t at = num_bound(k, v->num, 0);
        memmove(k->by_num + at + 1, k->by_num + at, (k->n_num - at) * sizeof *k->by_num);
        k->by_num[at] = (uint32_t)k->n_vals;
        k->n_num++;
    }
    size_t at = (size_t)h & (k->n_slots - 1);
    while (k->slots[at]) at = (at + 1) & (k->n_slots - 1);
    k->slots[at] = (uint32_t)(++k->n_vals);
    return x;
}

/* ---- the index ---- */

store_meta *store_meta_new(void) {
    store_meta *m = calloc(1, sizeof *m);
    if (m) m->max_id = -1;
    return m;
}

void store_meta_free(store_meta *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_keys; i++) {
        mkey *k = &m->keys[i];
        for (size_t j = 0; j < k->n_vals; j++) {
            if (k->vals[j].v.type == MV_STR) free((char *)k->vals[j].v.str);
            free(k->vals[j].p.ids);
        }
        free(k->vals);
        free(k->slots);
        free(k->by_num);
        free(k->exists.ids);
        free(k->name);
    }
    free(m->keys);
    free(m->slots);
    free(m->all.ids);
    eng_idset_free(&m->live);
    free(m);
}

static json_t *parse_meta(const char *meta_json) {
    if (!meta_json) return NULL;
    json_t *j = json_loads(meta_json, 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

int store_meta_add(store *s, int64_t id, const char *meta_json) {
    assert(id >= 0);
    json_t *j = parse_meta(meta_json);
    int rc = 0;
    pthread_rwlock_wrlock(&s->mlock);
    store_meta *m = s->meta;
    if (id >= m->live.n_bits && eng_idset_grow(&m->live, id < 1024 ? 2048 : 2 * (id + 1), NULL))
        m->live_lost = 1;
    if (posting_add(&m->all, id)) rc = -1;
    if (id < m->live.n_bits) eng_idset_add(&m->live, id);
    if (id > m->max_id) m->max_id = id;
    const char *name;
    json_t *value;
    json_object_foreach(j, name, value) {
        mkey *k = key_get(m, name, strlen(name));
        if (!k || posting_add(&k->exists, id)) {
            rc = -1;
            continue;
        }
        meta_value v;
        if (store_meta_value_of(value, &v)) continue; /* null, arrays, objects: $exists only */
        mval *x = val_get(k, &v);
        if (!x || posting_add(&x->p, id)) rc = -1;
    }
    pthread_rwlock_unlock(&s->mlock);
    json_decref(j);
    return rc;
}

void store_meta_remove(store *s, int64_t id, const char *meta_json) {
    json_t *j = parse_meta(meta_json);
    pthread_rwlock_wrlock(&s->mlock);
    store_meta *m = s->meta;
    posting_remove(&m->all, id);
    if (id >= 0 && id < m->live.n_bits) eng_idset_remove(&m->live, id);
    const char *name;
    json_t *value;
    json_object_foreach(j, name, value) {
        size_t len = strlen(name);
        mkey *k = key_find(m, name, len, fnv(0xcbf29ce484222325ULL, name, len));
        if (!k) continue;
        posting_remove(&k->exists, id);
        meta_value v;
        if (store_meta_value_of(value, &v)) continue;
        mval *x = val_find(k, &v, hash_value(&v));
        if (x) posting_remove(&x->p, id);
    }
    pthread_rwlock_unlock(&s->mlock);
    json_decref(j);
}

/* The ids an operator names (before $ne/$nin/$exists false turn it around) into set. */
static void op_into(const mkey *k, const filter_op *op, eng_idset *set) {
    if (!k) return;
    switch (op->kind) {
    case FOP_EQ:
    case FOP_NE: {
        const mval *x = val_find(k, &op->v, hash_value(&op->v));
        if (x) posting_into(&x->p, set);
        return;
    }
    case FOP_IN:
    case FOP_NIN:
        for (size_t i = 0; i < op->n_vs; i++) {
            const mval *x = val_find(k, &op->vs[i], hash_value(&op->vs[i]));
            if (x) posting_into(&x->p, set);
        }
        return;
    case FOP_GT:
    case FOP_GTE:
    case FOP_LT:
    case FOP_LTE: {
        size_t from = 0, to = k->n_num;
        if (op->kind == FOP_GT) from = num_bound(k, op->v.num, 1);
        if (op->kind == FOP_GTE) from = num_bound(k, op->v.num, 0);
        if (op->kind == FOP_LT) to = num_bound(k, op->v.num, 0);
        if (op->kind == FOP_LTE) to = num_bound(k, op->v.num, 1);
        for (size_t i = from; i < to; i++) posting_into(&k->vals[k->by_num[i]].p, set);
        return;
    }
    case FOP_EXISTS: posting_into(&k->exists, set); return;
    }
}

static int op_negates(const filter_op *op) {
    return op->kind == FOP_NE || op->kind == FOP_NIN || (op->kind == FOP_EXISTS && !op->exists);
}

int store_filter_eval(store *s, const store_filter *f, eng_idset *out, store_err *err) {
    pthread_rwlock_rdlock(&s->mlock);
    const store_meta *m = s->meta;
    eng_idset tmp = {0};
    if (eng_idset_init(out, m->max_id + 1, err)) goto fail;
    if (!m->live_lost)
        eng_idset_copy(out, &m->live);
    else /* the bitmap could not grow once: the posting has every live id */
        posting_into(&m->all, out);
    if (!store_filter_is_empty(f) && eng_idset_init(&tmp, m->max_id + 1, err)) goto fail;
    for (int c = 0; f && c < f->n; c++) {
        const filter_clause *cl = &f->clauses[c];
        const mkey *k = key_find(m, cl->key, cl->len, fnv(0xcbf29ce484222325ULL, cl->key, cl->len));
        for (int i = 0; i < cl->n_ops; i++) {
            eng_idset_clear(&tmp);
            op_into(k, &cl->ops[i], &tmp);
            if (op_negates(&cl->ops[i]))
                eng_idset_and_not(out, &tmp);
            else
                eng_idset_and(out, &tmp);
        }
    }
    pthread_rwlock_unlock(&s->mlock);
    eng_idset_free(&tmp);
    return 0;
fail:
    pthread_rwlock_unlock(&s->mlock);
    eng_idset_free(out);
    return -1;
}
