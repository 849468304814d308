/* store_quality.c — the quality monitor's records: each version's figures and the gate's
 * decision, and the labelled images it scores (in SHA-256 order, so that every version is
 * scored on the same sample). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

static void bind_real_or_null(sqlite3_stmt *st, int i, double v) {
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

static double real_or_nan(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

int store_quality_put(store *s, const store_quality *q, store_err *err) {
    pthread_mutex_lock(&s->wmu);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(s->wdb,
                           "INSERT OR REPLACE INTO version_quality(version, decided, labelled, "
                           "knn20, pixels_knn20, serving_knn20, accepted, reason, eff_rank, "
                           "mean_std) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, s->wdb, "saving a quality record");
    } else {
        sqlite3_bind_int64(st, 1, q->version);
        sqlite3_bind_double(st, 2, q->decided);
        sqlite3_bind_int64(st, 3, q->labelled);
        bind_real_or_null(st, 4, q->knn20);
        bind_real_or_null(st, 5, q->pixels_knn20);
        bind_real_or_null(st, 6, q->serving_knn20);
        sqlite3_bind_int(st, 7, q->accepted ? 1 : 0);
        sqlite3_bind_text(st, 8, q->reason, -1, SQLITE_STATIC);
        bind_real_or_null(st, 9, q->eff_rank);
        bind_real_or_null(st, 10, q->mean_std);
        if (sqlite3_step(st) != SQLITE_DONE)
            store_sql_fail(err, s->wdb, "saving a quality record");
        else
            result = 0;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->wmu);
    return result;
}

int store_quality_get(store *s, int64_t version, store_quality *q, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    memset(q, 0, sizeof *q);
    if (sqlite3_prepare_v2(rc->db,
                           "SELECT decided, labelled, knn20, pixels_knn20, serving_knn20, "
                           "accepted, reason, eff_rank, mean_std FROM version_quality "
                           "WHERE version = ?",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(st, 1, version) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading a quality record");
    } else {
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW) {
            q->version = version;
            q->decided = sqlite3_column_double(st, 0);
            q->labelled = sqlite3_column_int64(st, 1);
            q->knn20 = real_or_nan(st, 2);
            q->pixels_knn20 = real_or_nan(st, 3);
            q->serving_knn20 = real_or_nan(st, 4);
            q->accepted = sqlite3_column_int(st, 5);
            const unsigned char *why = sqlite3_column_text(st, 6);
            snprintf(q->reason, sizeof q->reason, "%s", why ? (const char *)why : "");
            q->eff_rank = real_or_nan(st, 7);
            q->mean_std = real_or_nan(st, 8);
            result = 0;
        } else if (r == SQLITE_DONE) {
            result = 1;
        } else {
            store_sql_fail(err, rc->db, "reading a quality record");
        }
    }
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int64_t store_labelled_each(store *s, const char *key, int64_t max,
                            int (*fn)(void *ctx, int64_t id, const char *label), void *ctx,
                            store_err *err) {
    size_t kl = strlen(key);
    if (kl == 0 || kl > 64) return store_fail(err, "store: label key must be 1 to 64 characters");
    for (size_t i = 0; i < kl; i++)
        if (!(key[i] == '_' || (key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'z') ||
              (key[i] >= 'A' && key[i] <= 'Z')))
            return store_fail(err, "store: label key may hold letters, digits and '_' only");
    char path[80];
    snprintf(path, sizeof path, "$.%s", key);
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(rc->db,
                           "SELECT id, json_extract(meta, ?1) FROM images WHERE meta IS NOT NULL "
                           "AND json_valid(meta) AND json_type(meta, ?1) IN ('text', 'integer', "
                           "'real') ORDER BY sha256 LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, max) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "listing labelled images");
    } else {
        n = 0;
        int r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            const unsigned char *label = sqlite3_column_text(st, 1);
            if (!label) continue;
            n++;
            if (fn(ctx, sqlite3_column_int64(st, 0), (const char *)label)) break;
        }
        if (r != SQLITE_ROW && r != SQLITE_DONE) n = store_sql_fail(err, rc->db, "listing labelled images");
    }
    sqlite3_finalize(st);
    store_reader_put(rc);
    return n;
}
