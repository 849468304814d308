/* store_internal.h — the store's private state, shared by the store_*.c files only. */
#ifndef STORE_INTERNAL_H
#define STORE_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

#define STORE_READERS 8 /* as many as the server's default HTTP threads */

typedef struct put_req put_req; /* a queued image upload (store_images.c) */
typedef struct store_meta store_meta; /* the in-memory metadata index (store_meta.c) */

/* A scalar metadata value: what filters compare and the metadata index keys on. */
typedef enum meta_type { MV_NONE = 0, MV_STR, MV_NUM, MV_BOOL } meta_type;
typedef struct meta_value {
    meta_type type;
    const char *str; /* MV_STR: len bytes (may hold NUL); owned by whoever made the value */
    size_t len;
    double num;      /* MV_NUM: by value (3 equals 3.0; -0 is 0) */
    int b;           /* MV_BOOL */
} meta_value;

/* A parsed filter (store_filter.c): clauses ANDed, each a key and its operators ANDed. */
typedef enum filter_op_kind {
    FOP_EQ, FOP_NE, FOP_IN, FOP_NIN, FOP_GT, FOP_GTE, FOP_LT, FOP_LTE, FOP_EXISTS
} filter_op_kind;
typedef struct filter_op {
    filter_op_kind kind;
    meta_value v;    /* $eq $ne and the comparisons (strings owned) */
    meta_value *vs;  /* owned [n_vs]: $in $nin (strings owned) */
    size_t n_vs;
    int exists;      /* $exists */
} filter_op;
typedef struct filter_clause {
    char *key;       /* owned */
    size_t len;
    filter_op *ops;  /* owned [n_ops] */
    int n_ops;
} filter_clause;
struct store_filter {
    filter_clause *clauses; /* owned [n] */
    int n;
};

typedef struct reader_conn {
    int busy;            /* 1 while a call uses db (guarded by the store's rmu) */
    sqlite3 *db;         /* read-only connection */
    struct store *owner;
} reader_conn;

struct store {
    store_opts opts;
    sqlite3 *wdb;              /* the one writer connection */
    pthread_mutex_t wmu;       /* serialises every use of wdb */
    reader_conn readers[STORE_READERS];
    pthread_mutex_t rmu;       /* guards the readers' busy flags (held for a moment only) */
    pthread_cond_t rcv;        /* a reader became free */

    /* group commit of uploads */
    pthread_mutex_t gmu;
    pthread_cond_t gcv;
    put_req *queue;            /* waiting uploads (LIFO list; order within a batch is free) */
    int leader;                /* 1 while some caller is committing a batch */

    /* sampler: live image ids, and each id's position in that array (-1 when not live) */
    pthread_mutex_t smu;
    int64_t *live;             /* owned [n_live] */
    size_t n_live, cap_live;
    int64_t *pos;              /* owned [n_pos], indexed by id */
    size_t n_pos;

    /* every live image's metadata, indexed for filters (store_meta.c) */
    pthread_rwlock_t mlock;
    store_meta *meta;          /* owned */
};

/* Formats into err and returns -1. */
int store_fail(store_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats a SQLite failure of db (with what was being done) and returns -1. */
int store_sql_fail(store_err *err, sqlite3 *db, const char *what);
/* Takes a free reader connection, waiting for whichever is released first when all are in
 * use (never for one particular holder, who may be a slow background thread); release with
 * store_reader_put. */
reader_conn *store_reader_get(store *s);
void store_reader_put(reader_conn *r);
double store_now(void);

/* Sampler bookkeeping (store_sampler.c); callers hold no store lock. Loading fills the
 * metadata index too. */
int store_sampler_add(store *s, int64_t id);
void store_sampler_remove(store *s, int64_t id);
int store_sampler_load(store *s, store_err *err);

/* A scalar JSON value as a meta_value (str borrowed from j); -1 for null, arrays, objects. */
int store_meta_value_of(const json_t *j, meta_value *v);
/* Parses a filter object (store_filter.c). */
int store_filter_from_json(const json_t *j, store_filter **out, store_err *err);

/* The metadata index (store_meta.c). add/remove take mlock themselves; meta_json may be NULL
 * or anything (only a JSON object's top-level keys are indexed). */
store_meta *store_meta_new(void);
void store_meta_free(store_meta *m);
int store_meta_add(store *s, int64_t id, const char *meta_json);
void store_meta_remove(store *s, int64_t id, const char *meta_json);

/* Migrations (store_schema.c): brings db to `target` (<= STORE_SCHEMA_VERSION). */
int store_migrate(sqlite3 *db, int target, store_err *err);

#endif
