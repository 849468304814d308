/* store_images.c — images: durable, deduplicated, group-committed uploads; reads; deletes.
 *
 * Group commit: each uploader queues its request. Whoever finds no commit under way becomes the
 * leader, takes every queued request, writes them all in one transaction (one fsync), marks them
 * done and wakes the rest; uploads that arrived meanwhile form the next batch. Each request has
 * its own savepoint, so one bad upload fails alone. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

struct put_req {
    const store_image_in *in;
    char sha[65];       /* hex SHA-256 of the bytes */
    int64_t id;         /* result */
    int existed;        /* result */
    int rc;             /* 0 ok, -1 failed */
    int done;
    store_err err;
    put_req *next;
};

static int sha256_hex(const void *bytes, size_t len, char out[65]) {
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(bytes, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return -1;
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = 0;
    return 0;
}

/* Writes one request inside the open transaction (caller holds wmu). */
static void write_one(store *s, put_req *r, double now) {
    sqlite3 *db = s->wdb;
    sqlite3_stmt *st = NULL;
    const store_image_in *in = r->in;
    r->rc = -1;
    if (sqlite3_exec(db, "SAVEPOINT put", NULL, NULL, NULL) != SQLITE_OK) {
        store_sql_fail(&r->err, db, "savepoint");
        return;
    }
    if (sqlite3_prepare_v2(db, "SELECT id FROM images WHERE sha256 = ?", -1, &st, NULL) !=
        SQLITE_OK)
        goto sql_fail;
    sqlite3_bind_text(st, 1, r->sha, 64, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->id = sqlite3_column_int64(st, 0);
        r->existed = 1;
        sqlite3_finalize(st);
        sqlite3_exec(db, "RELEASE put", NULL, NULL, NULL);
        r->rc = 0;
        return;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE) goto sql_fail;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO images(sha256, media_type, width, height, bytes, train,"
                           " meta, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        goto sql_fail;
    sqlite3_bind_text(st, 1, r->sha, 64, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, in->media_type, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, in->width);
    sqlite3_bind_int(st, 4, in->height);
    sqlite3_bind_blob64(st, 5, in->bytes, in->len, SQLITE_STATIC);
    if (in->train_copy)
        sqlite3_bind_blob64(st, 6, in->train_copy, in->train_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    if (in->meta_json)
        sqlite3_bind_text(st, 7, in->meta_json, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_double(st, 8, now);
    if (sqlite3_step(st) != SQLITE_DONE) goto sql_fail;
    sqlite3_finalize(st);
    r->id = sqlite3_last_insert_rowid(db);
    r->existed = 0;
    sqlite3_exec(db, "RELEASE put", NULL, NULL, NULL);
    r->rc = 0;
    return;
sql_fail:
    store_sql_fail(&r->err, db, "saving an image");
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK TO put; RELEASE put", NULL, NULL, NULL);
}

/* Commits a batch; on a failed COMMIT every request of the batch fails. */
static void commit_batch(store *s, put_req *batch) {
    double now = store_now();
    pthread_mutex_lock(&s->wmu);
    if (sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        for (put_req *r = batch; r; r = r->next) {
            r->rc = -1;
            store_sql_fail(&r->err, s->wdb, "starting an upload transaction");
        }
        pthread_mutex_unlock(&s->wmu);
        return;
    }
    for (put_req *r = batch; r; r = r->next) write_one(s, r, now);
    if (sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        store_err e;
        store_sql_fail(&e, s->wdb, "committing uploads");
        sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        for (put_req *r = batch; r; r = r->next) {
            r->rc = -1;
            r->err = e;
        }
    }
    pthread_mutex_unlock(&s->wmu);
    /* durable now: new ids join the training sample pool at once */
    for (put_req *r = batch; r; r = r->next)
        if (r->rc == 0 && !r->existed &&
            (store_sampler_add(s, r->id) || store_meta_add(s, r->id, r->in->meta_json))) {
            r->rc = -1;
            store_fail(&r->err, "store: out of memory for the sampler or metadata index "
                                "(image %lld is saved)", (long long)r->id);
        }
}

int store_image_put(store *s, const store_image_in *in, int64_t *id, int *existed,
                    store_err *err) {
    if (!in->bytes || in->len == 0) return store_fail(err, "store: empty image");
    if (!in->media_type) return store_fail(err, "store: image without a media type");
    if (in->meta_json && strlen(in->meta_json) > 4096)
        return store_fail(err, "store: metadata larger than 4 KiB");
    put_req req;
    memset(&req, 0, sizeof req);
    req.in = in;
    if (sha256_hex(in->bytes, in->len, req.sha)) return store_fail(err, "store: SHA-256 failed");

    pthread_mutex_lock(&s->gmu);
    req.next = s->queue;
    s->queue = &req;
    while (!req.done) {
        if (s->leader) {
            pthread_cond_wait(&s->gcv, &s->gmu);
            continue;
        }
        s->leader = 1; /* lead: commit everything queued, including our own request */
        put_req *batch = s->queue;
        s->queue = NULL;
        pthread_mutex_unlock(&s->gmu);
        commit_batch(s, batch);
        pthread_mutex_lock(&s->gmu);
        for (put_req *r = batch, *next; r; r = next) {
            next = r->next; /* read before done: a waiter may leave as soon as it sees done */
            r->done = 1;
        }
        s->leader = 0;
        pthread_cond_broadcast(&s->gcv);
    }
    pthread_mutex_unlock(&s->gmu);
    if (req.rc) {
        if (err) *err = req.err;
        return -1;
    }
    *id = req.id;
    if (existed) *existed = req.existed;
    return 0;
}

int store_image_get(store *s, int64_t id, store_image_info *info, store_err *err) {
    memset(info, 0, sizeof *info);
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(rc->db,
                           "SELECT sha256, media_type, width, height, length(bytes), meta, created"
                           " FROM images WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading an image");
        goto done;
    }
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        result = 1;
        goto done;
    }
    if (step != SQLITE_ROW) {
        store_sql_fail(err, rc->db, "reading an image");
        goto done;
    }
    info->id = id;
    snprintf(info->sha256, sizeof info->sha256, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(info->media_type, sizeof info->media_type, "%s",
             (const char *)sqlite3_column_text(st, 1));
    info->width = sqlite3_column_int(st, 2);
    info->height = sqlite3_column_int(st, 3);
    info->bytes = sqlite3_column_int64(st, 4);
    if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
        info->meta_json = strdup((const char *)sqlite3_column_text(st, 5));
        if (!info->meta_json) {
            store_fail(err, "store: out of memory");
            goto done;
        }
    }
    info->created = sqlite3_column_double(st, 6);
    result = 0;
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

void store_image_info_free(store_image_info *info) {
    free(info->meta_json);
    info->meta_json = NULL;
}

int store_image_data(store *s, int64_t id, int train, void **bytes, size_t *len, store_err *err) {
    *bytes = NULL;
    *len = 0;
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    const char *sql = train ? "SELECT train FROM images WHERE id = ?"
                            : "SELECT bytes FROM images WHERE id = ?";
    if (sqlite3_prepare_v2(rc->db, sql, -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(err, rc->db, "reading image bytes");
        goto done;
    }
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE || (step == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_NULL)) {
        result = 1;
        goto done;
    }
    if (step != SQLITE_ROW) {
        store_sql_fail(err, rc->db, "reading image bytes");
        goto done;
    }
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    void *buf = malloc(n ? n : 1);
    if (!buf) {
        store_fail(err, "store: out of memory for %zu bytes", n);
        goto done;
    }
    if (n) memcpy(buf, sqlite3_column_blob(st, 0), n);
    *bytes = buf;
    *len = n;
    result = 0;
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

int store_image_by_sha(store *s, const char *sha256_hex, int64_t *id, store_err *err) {
    reader_conn *rc = store_reader_get(s);
    sqlite3_stmt *st = NULL;
    int result = -1;
    if (sqlite3_prepare_v2(rc->db, "SELECT id FROM images WHERE sha256 = ?", -1, &st, NULL) !=
        SQLITE_OK) {
        store_sql_fail(err, rc->db, "looking up a SHA-256");
        goto done;
    }
    sqlite3_bind_text(st, 1, sha256_hex, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        result = 0;
    } else if (step == SQLITE_DONE) {
        result = 1;
    } else {
        store_sql_fail(err, rc->db, "looking up a SHA-256");
    }
done:
    sqlite3_finalize(st);
    store_reader_put(rc);
    return result;
}

/* A deleted image's id and metadata, to take it out of the in-memory indexes after COMMIT. */
typedef struct gone {
    int64_t id;
    char *meta; /* owned or NULL */
} gone;

/* Deletes ids[i] inside the open transaction, recording each that existed in g (caller holds
 * wmu). Returns how many were deleted, -1 on error. */
static int64_t delete_rows(store *s, const int64_t *ids, size_t n, gone *g, store_err *err) {
    sqlite3_stmt *sel = NULL, *del = NULL;
    int64_t count = -1, m = 0;
    /* embeddings go with each image (ON DELETE CASCADE) */
    if (sqlite3_prepare_v2(s->wdb, "SELECT meta FROM images WHERE id = ?", -1, &sel, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(s->wdb, "DELETE FROM images WHERE id = ?", -1, &del, NULL) !=
            SQLITE_OK) {
        store_sql_fail(err, s->wdb, "deleting images");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_reset(sel);
        sqlite3_bind_int64(sel, 1, ids[i]);
        int step = sqlite3_step(sel);
        if (step == SQLITE_DONE) continue; /* not there (or named twice) */
        if (step != SQLITE_ROW) {
            store_sql_fail(err, s->wdb, "deleting images");
            goto done;
        }
        const char *meta = (const char *)sqlite3_column_text(sel, 0);
        g[m].id = ids[i];
        g[m].meta = meta ? strdup(meta) : NULL;
        if (meta && !g[m].meta) {
            store_fail(err, "store: out of memory");
            goto done;
        }
        m++;
        sqlite3_reset(del);
        sqlite3_bind_int64(del, 1, ids[i]);
        if (sqlite3_step(del) != SQLITE_DONE) {
            store_sql_fail(err, s->wdb, "deleting images");
            goto done;
        }
    }
    count = m;
done:
    if (count < 0)
        for (int64_t i = 0; i < m; i++) free(g[i].meta);
    sqlite3_finalize(sel);
    sqlite3_finalize(del);
    return count;
}

int64_t store_images_delete(store *s, const int64_t *ids, size_t n, int64_t *deleted,
                            store_err *err) {
    gone *g = calloc(n ? n : 1, sizeof *g);
    if (!g) return store_fail(err, "store: out of memory for %zu ids", n);
    pthread_mutex_lock(&s->wmu);
    int64_t m = -1;
    if (sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_sql_fail(err, s->wdb, "starting a delete");
    } else {
        m = delete_rows(s, ids, n, g, err);
        if (m >= 0 && sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            store_sql_fail(err, s->wdb, "committing a delete");
            for (int64_t i = 0; i < m; i++) free(g[i].meta);
            m = -1;
        }
        if (m < 0) sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->wmu);
    for (int64_t i = 0; i < m; i++) {
        store_sampler_remove(s, g[i].id);
        store_meta_remove(s, g[i].id, g[i].meta);
        free(g[i].meta);
        if (deleted) deleted[i] = g[i].id;
    }
    free(g);
    return m;
}

int store_image_delete(store *s, int64_t id, store_err *err) {
    int64_t m = store_images_delete(s, &id, 1, NULL, err);
    return m < 0 ? -1 : m == 1 ? 0 : 1;
}
