/* store_snapshot.c — consistent copies of a database file, what a copy holds, and putting one
 * back in place (restore).
 *
 * A copy is SQLite's VACUUM INTO, run on a read-only connection of its own: one read
 * transaction, so the copy holds every transaction committed before it began and nothing of one
 * committed later, while the server's writer goes on (WAL: readers and the writer never wait for
 * each other). The copy is compact (no free pages), in rollback-journal mode (a single file that
 * opens read-only without creating anything beside it), and keeps the schema version. It is
 * written under a hidden temporary name beside its destination, fsynced, and renamed into place,
 * then the directory is fsynced: the destination appears complete or not at all, and a failure
 * (a full disk, a cancel) leaves nothing behind. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

#define PATH_MAX_LEN 4200

/* A failed system call on a file: ERR_DISK_FULL for ENOSPC/EDQUOT, else ERR_INTERNAL. */
static int io_fail(store_err *err, int e, const char *what, const char *path) {
    store_fail(err, "store: %s %s: %s", what, path, strerror(e));
    if (err && (e == ENOSPC || e == EDQUOT)) err->code = ERR_DISK_FULL;
    return -1;
}

static int bad_input(store_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_input(store_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = ERR_BAD_INPUT;
    }
    return -1;
}

/* The directory part of path ("." when it has none) into dir. */
static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, n, ".");
    else if (slash == path)
        snprintf(dir, n, "/");
    else
        snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* Where a copy to out_path is written first: ".NAME.partial" in the same directory (hidden,
 * and on the same file system, so the rename is atomic). */
static int partial_of(const char *out_path, char *tmp, size_t n) {
    const char *slash = strrchr(out_path, '/');
    int len = slash ? snprintf(tmp, n, "%.*s/.%s.partial", (int)(slash - out_path), out_path,
                               slash + 1)
                    : snprintf(tmp, n, ".%s.partial", out_path);
    return len > 0 && (size_t)len < n ? 0 : -1;
}

/* fsync of a file or a directory by path. */
static int fsync_path(const char *path, store_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_fail(err, errno, "cannot open", path);
    int bad = fsync(fd) ? errno : 0;
    close(fd);
    return bad ? io_fail(err, bad, "cannot fsync", path) : 0;
}

static int exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* The first column of a one-row query as an integer; 1 when it returns no row. */
static int query_int(sqlite3 *db, const char *sql, int64_t *v) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

/* Opens a file at rest (a snapshot, not a live database) read-only without creating anything
 * beside it: as immutable (no locks, no -shm, no -wal) unless a -wal lies beside it, whose
 * content must then be read. A read-only connection on a WAL-mode file would otherwise leave a
 * -wal and -shm next to a user's file. */
static int open_at_rest(const char *path, sqlite3 **db) {
    char wal[PATH_MAX_LEN], uri[3 * PATH_MAX_LEN + 32];
    if (snprintf(wal, sizeof wal, "%s-wal", path) >= (int)sizeof wal) return SQLITE_CANTOPEN;
    if (exists(wal)) return sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                                            NULL);
    size_t n = (size_t)snprintf(uri, sizeof uri, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        int plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                    (*c >= '0' && *c <= '9') || strchr("/._~-", *c);
        n += (size_t)snprintf(uri + n, sizeof uri - n, plain ? "%c" : "%%%02X", *c);
    }
    snprintf(uri + n, sizeof uri - n, "?immutable=1");
    return sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                           NULL);
}

int store_snapshot_inspect(const char *path, int check, store_snapshot_info *info,
                           store_err *err) {
    assert(path && info);
    memset(info, 0, sizeof *info);
    struct stat sb;
    if (stat(path, &sb)) return io_fail(err, errno, "cannot read", path);
    if (!S_ISREG(sb.st_mode)) return bad_input(err, "%s is not a regular file", path);
    info->bytes = (int64_t)sb.st_size;
    sqlite3 *db = NULL;
    int rc = -1;
    if (strlen(path) >= PATH_MAX_LEN || open_at_rest(path, &db) != SQLITE_OK) {
        store_sql_fail(err, db, "opening the snapshot");
        goto done;
    }
    sqlite3_busy_timeout(db, 5000);
    int64_t v = 0, tables = 0;
    /* any read fails here for a file that is not a SQLite database */
    if (query_int(db, "PRAGMA user_version", &v)) {
        bad_input(err, "%s is not a SQLite database: %s", path, sqlite3_errmsg(db));
        goto done;
    }
    info->schema = (int)v;
    if (check) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check(1)", -1, &st, NULL) != SQLITE_OK) {
            bad_input(err, "%s: %s", path, sqlite3_errmsg(db));
            goto done;
        }
        int r = sqlite3_step(st);
        const char *res = r == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (!res || strcmp(res, "ok")) {
            bad_input(err, "%s fails its integrity check: %s", path,
                      res ? res : sqlite3_errmsg(db));
            sqlite3_finalize(st);
            goto done;
        }
        sqlite3_finalize(st);
    }
    if (query_int(db,
                  "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                  "('images', 'checkpoints', 'embeddings')",
                  &tables) ||
        tables != 3 || info->schema < 1) {
        bad_input(err, "%s is not a barlowd database (no images, checkpoints and embeddings "
                       "tables, or schema version %d)", path, info->schema);
        goto done;
    }
    if (info->schema > STORE_SCHEMA_VERSION) {
        bad_input(err, "%s has schema version %d, newer than this barlowd's (%d)", path,
                  info->schema, STORE_SCHEMA_VERSION);
        goto done;
    }
    if (query_int(db, "SELECT count(*) FROM images", &info->images)) {
        store_sql_fail(err, db, "counting the snapshot's images");
        goto done;
    }
    /* schema 1 has no state table: no serving version recorded (0) */
    if (info->schema >= 2 &&
        query_int(db, "SELECT value FROM state WHERE key = 'serving_version'",
                  &info->serving_version) < 0) {
        store_sql_fail(err, db, "reading the snapshot's serving version");
        goto done;
    }
    rc = 0;
done:
    sqlite3_close(db);
    return rc;
}

typedef struct cancel_hook {
    int (*fn)(void *ctx);
    void *ctx;
} cancel_hook;

/* SQLite's progress handler: non-zero interrupts the statement (SQLITE_INTERRUPT). */
static int on_progress(void *arg) {
    const cancel_hook *h = arg;
    return h->fn(h->ctx) != 0;
}

/* store_backup, of a live database (at_rest 0) or of a file at rest (a snapshot being restored,
 * opened by open_at_rest). */
static int copy_db(const char *db_path, int at_rest, const char *out_path,
                   int (*cancel)(void *ctx), void *ctx, store_snapshot_info *info,
                   store_err *err) {
    assert(db_path && out_path);
    char tmp[PATH_MAX_LEN], dir[PATH_MAX_LEN];
    if (partial_of(out_path, tmp, sizeof tmp) || strlen(out_path) >= sizeof dir)
        return bad_input(err, "the path %s is too long", out_path);
    dir_of(out_path, dir, sizeof dir);
    if (exists(out_path)) return bad_input(err, "%s exists already", out_path);
    if (!exists(db_path)) return bad_input(err, "there is no database %s", db_path);
    /* a leftover of an interrupted copy to the same destination: VACUUM INTO needs it gone */
    unlink(tmp);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (strlen(db_path) >= PATH_MAX_LEN ||
        (at_rest ? open_at_rest(db_path, &db)
                 : sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                                   NULL)) != SQLITE_OK) {
        store_sql_fail(err, db, "opening the database to copy");
        goto done;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_extended_result_codes(db, 1);
    cancel_hook hook = {cancel, ctx};
    if (cancel) sqlite3_progress_handler(db, 1000, on_progress, &hook);
    if (sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, tmp, -1, SQLITE_STATIC) != SQLITE_OK) {
        store_sql_fail(err, db, "preparing the copy");
        goto done;
    }
    int r = sqlite3_step(st);
    if (r != SQLITE_DONE) {
        if ((r & 0xff) == SQLITE_INTERRUPT) {
            store_fail(err, "store: the copy was cancelled");
            if (err) err->code = ERR_UNAVAILABLE;
        } else {
            store_sql_fail(err, db, "copying the database");
        }
        goto done;
    }
    sqlite3_finalize(st);
    st = NULL;
    sqlite3_close(db);
    db = NULL;
    if (fsync_path(tmp, err)) goto done;
    store_snapshot_info got;
    if (store_snapshot_inspect(tmp, 0, &got, err)) goto done;
    if (rename(tmp, out_path)) {
        io_fail(err, errno, "cannot rename the copy to", out_path);
        goto done;
    }
    if (info) *info = got;
    rc = 0;
    /* The copy is complete and durable under its name; a directory that cannot be fsynced
     * (which no local file system refuses) only leaves the name's durability to the kernel. */
    (void)fsync_path(dir, NULL);
done:
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc) unlink(tmp);
    return rc;
}

int store_backup(const char *db_path, const char *out_path, int (*cancel)(void *ctx), void *ctx,
                 store_snapshot_info *info, store_err *err) {
    return copy_db(db_path, 0, out_path, cancel, ctx, info, err);
}

/* Folds the WAL of the database at path into the file and leaves it in rollback mode, so the
 * file alone holds everything (SQLite deletes the -wal when the mode changes). 0 when that
 * worked; the caller moves a -wal that is still there along with the file. */
static int fold_wal(const char *path) {
    sqlite3 *db = NULL;
    int ok = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) ==
             SQLITE_OK;
    if (ok) {
        sqlite3_busy_timeout(db, 5000);
        ok = sqlite3_exec(db, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) == SQLITE_OK;
    }
    sqlite3_close(db);
    return ok ? 0 : -1;
}

static const char *const journals[] = {"-wal", "-journal"}; /* belong to the file beside them */

int store_restore(const char *snap_path, const char *db_path, store_snapshot_info *info,
                  store_err *err) {
    assert(snap_path && db_path);
    store_snapshot_info got;
    if (store_snapshot_inspect(snap_path, 1, &got, err)) return -1;
    char before[PATH_MAX_LEN], staged[PATH_MAX_LEN], from[PATH_MAX_LEN], to[PATH_MAX_LEN],
        dir[PATH_MAX_LEN];
    if (snprintf(before, sizeof before, "%s.before-restore", db_path) >= (int)sizeof before ||
        snprintf(staged, sizeof staged, "%s.restoring", db_path) >= (int)sizeof staged)
        return bad_input(err, "the path %s is too long", db_path);
    dir_of(db_path, dir, sizeof dir);
    int fd, c = store_claim(db_path, &fd, err);
    if (c) return c;
    int rc = -1;
    /* an earlier restore's old database is never overwritten */
    for (int i = -1; i < 2; i++) {
        snprintf(to, sizeof to, "%s%s", before, i < 0 ? "" : journals[i]);
        if (exists(to)) {
            bad_input(err, "%s exists (kept by an earlier restore): move it away first", to);
            goto done;
        }
    }
    /* the snapshot's copy, complete and durable beside the database before anything moves */
    unlink(staged);
    if (copy_db(snap_path, 1, staged, NULL, NULL, NULL, err)) goto done;
    if (exists(db_path)) {
        (void)fold_wal(db_path); /* a damaged old file keeps its -wal beside it, moved below */
        if (rename(db_path, before)) {
            io_fail(err, errno, "cannot keep the old database as", before);
            unlink(staged);
            goto done;
        }
    }
    /* what is left of the old file's journals goes with it: applied to the new file, a stale
     * WAL would corrupt it; its index (-shm) is derived data */
    for (int i = 0; i < 2; i++) {
        snprintf(from, sizeof from, "%s%s", db_path, journals[i]);
        snprintf(to, sizeof to, "%s%s", before, journals[i]);
        if (exists(from) && rename(from, to)) {
            io_fail(err, errno, "cannot move the old database's journal", from);
            goto half_done;
        }
    }
    snprintf(from, sizeof from, "%s-shm", db_path);
    if (unlink(from) && errno != ENOENT) {
        io_fail(err, errno, "cannot remove", from);
        goto half_done;
    }
    if (rename(staged, db_path)) {
        io_fail(err, errno, "cannot put the snapshot in place as", db_path);
        goto half_done;
    }
    if (fsync_path(dir, err)) goto done;
    if (info) *info = got;
    rc = 0;
    goto done;
half_done: /* the old database has moved: say where everything is */
    if (err) {
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n,
                 " (the old database is %s, the snapshot's checked copy %s)", before, staged);
    }
done:
    store_unclaim(fd);
    return rc;
}
