/* store_internal.h — the store's private state, shared by the store_*.c files only. */
#ifndef STORE_INTERNAL_H
#define STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

#define STORE_READERS 8 /* as many as the server's default HTTP threads */

typedef struct put_req put_req; /* a queued image upload (store_images.c) */

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

/* Sampler bookkeeping (store_sampler.c); callers hold no store lock. */
int store_sampler_add(store *s, int64_t id);
void store_sampler_remove(store *s, int64_t id);
int store_sampler_load(store *s, store_err *err);

/* Migrations (store_schema.c): brings db to `target` (<= STORE_SCHEMA_VERSION). */
int store_migrate(sqlite3 *db, int target, store_err *err);

#endif
