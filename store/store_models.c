/* store_models.c — model versions (checkpoint blobs), embeddings, and the training log. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define SQL_TEXT(x) #x
#define SQL_NUMBER(x) SQL_TEXT(x) /* a macro's value as SQL text */

/* Runs sql with (a, b) bound as int64 on the writer; caller holds wmu. */
static int exec2(sqlite3 *db, const char *sql, int64_t a, int64_t b) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_checkpoint_put(store *s, int64_t step, const char *model_json, double loss,
                         const void *blob, size_t len, int64_t serving, int64_t *version,
                         store_err *err) {
    pthread_mutex_lock(&s->wmu);
    sqlite3 *db = s->wdb;
    sqlite3_stmt *st = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO checkpoints(step, created, model_json, loss, blob)"
                           " VALUES (?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail_tx;
    sqlite3_bind_int64(st, 1, step);
    sqlite3_bind_double(st, 2, store_now());
    sqlite3_bind_text(st, 3, model_json, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, loss);
    sqlite3_bind_blob64(st, 5, blob, len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail_tx;
    sqlite3_finalize(st);
    st = NULL;
    int64_t v = sqlite3_last_insert_rowid(db);
    /* Keep the newest keep_versions and the serving one, with their embeddings, and the
     * checkpoints of the last STORE_DECISIONS_KEPT versions the quality gate decided on (a
     * refused one can still be served by hand). */
    int64_t oldest_kept = v - s->opts.keep_versions + 1;
    if (exec2(db,
              "DELETE FROM checkpoints WHERE version < ? AND version != ? AND version NOT IN "
              "(SELECT version FROM version_quality ORDER BY decided DESC, version DESC "
              "LIMIT " SQL_NUMBER(STORE_DECISIONS_KEPT) ")",
              oldest_kept, serving) ||
        exec2(db, "DELETE FROM embeddings WHERE version < ? AND version != ?", oldest_kept,
              serving))
        goto fail_tx;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto fail_tx;
    pthread_mutex_unlock(&s->wmu);
    *version = v;
    return 0;
fail_tx:
    store_sql_fail(err, db, "saving a checkpoint");
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->wmu);
    return -1;
fail:
    store_sql_fail(err, db, "saving a checkpoint");
    pthread_mutex_unlock(&s->wmu);
    return -1;
}

static void fill_info(sqlite3_stmt *st, store_checkpoint_info *info) {
    info->version = sqlite3_column_int64(st, 0);
    info->step = sqlite3_column_int64(st, 1);
    info->created = sqlite3_column_double(st, 2);
    info->loss = sqlite3_column_double(st, 3);
    info->bytes = sqlite3_column_int64(st, 4);
}

/* One checkpoint by query (version bound as ?1 when >= 0). 0 found, 1 none, -1 error. */
static int checkpoint_query(store *s, const char *sql, int64_t version,
                            store_checkpoint_info *info, void **blob, size_t *len,
                            store_err *err) {
    if (blob) *blob = NULL;
    if (len) *len = 0;
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(rc->db, sql, -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading a checkpoint");
        goto done;
    }
    if (version >= 0) sqlite3_bind_int64(st, 1, version);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        result = 1;
        goto done;
    }
    if (step != SQLITE_ROW) {
        store_sql_fail(err, rc->db, "reading a checkpoint");
        goto done;
    }
    if (info) fill_info(st, info);
    if (blob) {
        size_t n = (size_t)sqlite3_column_bytes(st, 5);
        void *b = malloc(n ? n : 1);
        if (!b) {
            store_fail(err, "store: out of memory for a %zu-byte checkpoint", n);
            goto done;
        }
        if (n) memcpy(b, sqlite3_column_blob(st, 5), n);
        *blob = b;
        *len = n;
    }
    result = 0;
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int store_checkpoint_latest(store *s, store_checkpoint_info *info, void **blob, size_t *len,
                            store_err *err) {
    return checkpoint_query(s,
                            "SELECT version, step, created, loss, length(blob), blob"
                            " FROM checkpoints ORDER BY version DESC LIMIT 1",
                            -1, info, blob, len, err);
}

int store_checkpoint_get(store *s, int64_t version, store_checkpoint_info *info, void **blob,
                         size_t *len, store_err *err) {
    return checkpoint_query(s,
                            "SELECT version, step, created, loss, length(blob), blob"
                            " FROM checkpoints WHERE version = ?1",
                            version, info, blob, len, err);
}

int store_checkpoint_list(store *s, store_checkpoint_info *out, int max, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_prepare_v2(rc->db,
                           "SELECT version, step, created, loss, length(blob) FROM checkpoints"
                           " ORDER BY version DESC LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "listing checkpoints");
        goto done;
    }
    sqlite3_bind_int(st, 1, max);
    n = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) fill_info(st, &out[n++]);
    if (step != SQLITE_DONE) n = store_sql_fail(err, rc->db, "listing checkpoints");
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return n;
}

int store_embedding_put(store *s, int64_t version, int n, const int64_t *ids, const float *vecs,
                        int dim, store_err *err) {
    pthread_mutex_lock(&s->wmu);
    sqlite3 *db = s->wdb;
    sqlite3_stmt *st = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_sql_fail(err, db, "saving embeddings");
        pthread_mutex_unlock(&s->wmu);
        return -1;
    }
    /* an image deleted meanwhile has no row to refer to: skip it (INSERT ... SELECT) */
    if (sqlite3_prepare_v2(db,
                           "INSERT OR REPLACE INTO embeddings(image_id, version, vec)"
                           " SELECT id, ?2, ?3 FROM images WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, ids[i]);
        sqlite3_bind_int64(st, 2, version);
        sqlite3_bind_blob(st, 3, vecs + (size_t)i * dim, dim * (int)sizeof(float), SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE) goto fail;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        st = NULL;
        goto fail;
    }
    pthread_mutex_unlock(&s->wmu);
    return 0;
fail:
    store_sql_fail(err, db, "saving embeddings");
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->wmu);
    return -1;
}

int store_embedding_get(store *s, int64_t id, int64_t version, float *vec, int dim,
                        store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(rc->db, "SELECT vec FROM embeddings WHERE image_id = ? AND version = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading an embedding");
        goto done;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, version);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        result = 1;
    } else if (step != SQLITE_ROW) {
        store_sql_fail(err, rc->db, "reading an embedding");
    } else if (sqlite3_column_bytes(st, 0) != dim * (int)sizeof(float)) {
        store_fail(err, "store: embedding of image %lld has %d bytes, expected %d",
                   (long long)id, sqlite3_column_bytes(st, 0), dim * (int)sizeof(float));
    } else {
        memcpy(vec, sqlite3_column_blob(st, 0), (size_t)dim * sizeof(float));
        result = 0;
    }
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int store_embedding_each(store *s, int64_t version, int dim,
                         int (*fn)(void *ctx, int64_t id, const float *vec), void *ctx,
                         store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    float *vec = malloc((size_t)dim * sizeof(float));
    if (!vec) {
        store_fail(err, "store: out of memory");
        goto done;
    }
    if (sqlite3_prepare_v2(rc->db, "SELECT image_id, vec FROM embeddings WHERE version = ?", -1,
                           &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading embeddings");
        goto done;
    }
    sqlite3_bind_int64(st, 1, version);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 1) != dim * (int)sizeof(float)) {
            store_fail(err, "store: an embedding of version %lld has the wrong size",
                       (long long)version);
            goto done;
        }
        memcpy(vec, sqlite3_column_blob(st, 1), (size_t)dim * sizeof(float));
        if (fn(ctx, sqlite3_column_int64(st, 0), vec)) {
            store_fail(err, "store: embedding consumer failed");
            goto done;
        }
    }
    if (step != SQLITE_DONE) {
        store_sql_fail(err, rc->db, "reading embeddings");
        goto done;
    }
    result = 0;
done:
    free(vec);
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int store_log_append(store *s, const store_log_row *row, store_err *err) {
    pthread_mutex_lock(&s->wmu);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(s->wdb,
                           "INSERT OR REPLACE INTO train_log(step, time, loss, lr, images_per_s,"
                           " diag_mean, offdiag_abs_mean) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, row->step);
        sqlite3_bind_double(st, 2, row->time);
        sqlite3_bind_double(st, 3, row->loss);
        sqlite3_bind_double(st, 4, row->lr);
        sqlite3_bind_double(st, 5, row->images_per_s);
        sqlite3_bind_double(st, 6, row->diag_mean);
        sqlite3_bind_double(st, 7, row->offdiag_abs_mean);
        if (sqlite3_step(st) == SQLITE_DONE) result = 0;
    }
    if (result) store_sql_fail(err, s->wdb, "appending to the training log");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->wmu);
    return result;
}

/* Runs a training-log query whose first column list is step..offdiag_abs_mean, binding the
 * n int64 arguments, into out[max]. */
static int log_rows(store *s, const char *sql, const int64_t *args, int n_args,
                    store_log_row *out, int max, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_prepare_v2(rc->db, sql, -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading the training log");
        goto done;
    }
    for (int i = 0; i < n_args; i++) sqlite3_bind_int64(st, i + 1, args[i]);
    n = 0;
    int step;
    while (n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
        store_log_row *r = &out[n++];
        r->step = sqlite3_column_int64(st, 0);
        r->time = sqlite3_column_double(st, 1);
        r->loss = sqlite3_column_double(st, 2);
        r->lr = sqlite3_column_double(st, 3);
        r->images_per_s = sqlite3_column_double(st, 4);
        r->diag_mean = sqlite3_column_double(st, 5);
        r->offdiag_abs_mean = sqlite3_column_double(st, 6);
    }
    if (n < max && step != SQLITE_DONE) n = store_sql_fail(err, rc->db, "reading the training log");
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return n;
}

int store_log_tail(store *s, store_log_row *out, int max, store_err *err) {
    int64_t args[1] = {max};
    return log_rows(s,
                    "SELECT * FROM (SELECT step, time, loss, lr, images_per_s, diag_mean,"
                    " offdiag_abs_mean FROM train_log ORDER BY step DESC LIMIT ?)"
                    " ORDER BY step",
                    args, 1, out, max, err);
}

int store_log_since(store *s, int64_t since, int64_t every, store_log_row *out, int max,
                    store_err *err) {
    assert(every >= 1 && max >= 1);
    int64_t args[3] = {since, every, max};
    return log_rows(s,
                    "SELECT step, time, loss, lr, images_per_s, diag_mean, offdiag_abs_mean"
                    " FROM train_log WHERE step > ? AND step % ? = 0 ORDER BY step LIMIT ?",
                    args, 3, out, max, err);
}
