/* store.c — opening and closing the store: connections, pragmas, migrations, errors. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

store_opts store_defaults(void) {
    store_opts o = {.synchronous_full = 1, .busy_timeout_ms = 5000, .keep_versions = 3};
    return o;
}

int store_fail(store_err *err, const char *fmt, ...) {
    if (err) {
        err->code = ERR_INTERNAL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int store_sql_fail(store_err *err, sqlite3 *db, const char *what) {
    store_fail(err, "store: %s: %s", what, db ? sqlite3_errmsg(db) : "no database");
    if (err && db && ((sqlite3_errcode(db) & 0xff) == SQLITE_FULL ||
                      sqlite3_system_errno(db) == ENOSPC))
        err->code = ERR_DISK_FULL;
    return -1;
}

double store_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

reader_conn *store_reader_get(store *s) {
    pthread_mutex_lock(&s->rmu);
    for (;;) {
        for (int i = 0; i < STORE_READERS; i++)
            if (!s->readers[i].busy) {
                s->readers[i].busy = 1;
                pthread_mutex_unlock(&s->rmu);
                return &s->readers[i];
            }
        pthread_cond_wait(&s->rcv, &s->rmu);
    }
}

void store_reader_put(reader_conn *r) {
    store *s = r->owner;
    pthread_mutex_lock(&s->rmu);
    r->busy = 0;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

static int open_conn(const char *path, int flags, const store_opts *o, sqlite3 **db,
                     store_err *err) {
    if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        store_sql_fail(err, *db, "opening the database");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, o->busy_timeout_ms);
    sqlite3_extended_result_codes(*db, 1);
    if (sqlite3_exec(*db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK)
        return store_sql_fail(err, *db, "enabling foreign keys");
    return 0;
}

int store_open(const char *path, const store_opts *opts, store **out, store_err *err) {
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s) return store_fail(err, "store: out of memory");
    s->opts = opts ? *opts : store_defaults();
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->gmu, NULL);
    pthread_cond_init(&s->gcv, NULL);
    pthread_mutex_init(&s->smu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    pthread_rwlock_init(&s->mlock, NULL);
    for (int i = 0; i < STORE_READERS; i++) s->readers[i].owner = s;
    s->meta = store_meta_new();
    if (!s->meta) {
        store_fail(err, "store: out of memory");
        goto fail;
    }

    if (open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->opts, &s->wdb, err))
        goto fail;
    char pragmas[160];
    snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s;",
             s->opts.synchronous_full ? "FULL" : "NORMAL");
    if (sqlite3_exec(s->wdb, pragmas, NULL, NULL, NULL) != SQLITE_OK) {
        store_sql_fail(err, s->wdb, "setting WAL mode");
        goto fail;
    }
    if (store_migrate(s->wdb, STORE_SCHEMA_VERSION, err)) goto fail;
    for (int i = 0; i < STORE_READERS; i++)
        if (open_conn(path, SQLITE_OPEN_READONLY, &s->opts, &s->readers[i].db, err)) goto fail;
    if (store_sampler_load(s, err)) goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return -1;
}

const char *store_path(const store *s) { return sqlite3_db_filename(s->wdb, "main"); }

void store_close(store *s) {
    if (!s) return;
    for (int i = 0; i < STORE_READERS; i++) sqlite3_close(s->readers[i].db);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    sqlite3_close(s->wdb);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->gmu);
    pthread_cond_destroy(&s->gcv);
    pthread_mutex_destroy(&s->smu);
    pthread_rwlock_destroy(&s->mlock);
    store_meta_free(s->meta);
    free(s->live);
    free(s->pos);
    free(s);
}
