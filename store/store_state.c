/* store_state.c — named integers that must outlive the process (schema 2's `state` table),
 * and counts the server reports. */
#include "store_internal.h"

int store_state_get(store *s, const char *key, int64_t *value, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(rc->db, "SELECT value FROM state WHERE key = ?", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading state");
    } else {
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            *value = sqlite3_column_int64(st, 0);
            result = 0;
        } else if (r == SQLITE_DONE) {
            result = 1;
        } else {
            store_sql_fail(err, rc->db, "reading state");
        }
    }
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int store_state_set(store *s, const char *key, int64_t value, store_err *err) {
    pthread_mutex_lock(&s->wmu);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(s->wdb, "INSERT OR REPLACE INTO state(key, value) VALUES(?, ?)", -1,
                           &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, value) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        store_sql_fail(err, s->wdb, "saving state");
    else
        result = 0;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->wmu);
    return result;
}

int64_t store_embedding_count(store *s, int64_t version, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(rc->db, "SELECT count(*) FROM embeddings WHERE version = ?", -1, &st,
                           NULL) != SQLITE_OK ||
        sqlite3_bind_int64(st, 1, version) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        store_sql_fail(err, rc->db, "counting embeddings");
    else
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    store_reader_put(rc);
    return n;
}
