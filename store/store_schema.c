/* store_schema.c — the database schema and its forward migrations.
 *
 * PRAGMA user_version holds the schema version. migrations[v] takes a database from version v to
 * v + 1, inside one transaction; opening runs every step the file lacks. A file with a newer
 * version than this build knows is refused rather than guessed at. */
#include <stdio.h>

#include "store_internal.h"

static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* 0 → 1: the first schema */
    "CREATE TABLE images("
    "  id INTEGER PRIMARY KEY,"          /* dense rowids: the sampler's ids */
    "  sha256 TEXT NOT NULL UNIQUE,"     /* hex SHA-256 of bytes: identical uploads dedup */
    "  media_type TEXT NOT NULL,"
    "  width INTEGER NOT NULL, height INTEGER NOT NULL,"
    "  bytes BLOB NOT NULL,"             /* the original upload */
    "  train BLOB,"                      /* downscaled training copy */
    "  meta TEXT,"                       /* client JSON object (<= 4 KiB) */
    "  created REAL NOT NULL);"
    "CREATE TABLE checkpoints("
    "  version INTEGER PRIMARY KEY,"     /* a model version */
    "  step INTEGER NOT NULL, created REAL NOT NULL,"
    "  model_json TEXT NOT NULL, loss REAL,"
    "  blob BLOB NOT NULL);"
    "CREATE TABLE embeddings("
    "  image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
    "  version INTEGER NOT NULL,"
    "  vec BLOB NOT NULL,"               /* float32 little-endian */
    "  PRIMARY KEY(version, image_id)) WITHOUT ROWID;"
    "CREATE INDEX embeddings_by_image ON embeddings(image_id);"
    "CREATE TABLE train_log("
    "  step INTEGER PRIMARY KEY, time REAL NOT NULL, loss REAL, lr REAL,"
    "  images_per_s REAL, diag_mean REAL, offdiag_abs_mean REAL);",
    /* 1 → 2: small named integers that must survive restarts (e.g. the serving model version) */
    "CREATE TABLE state("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL) WITHOUT ROWID;",
    /* 2 → 3: the quality monitor's figures and the gate's decision for each version */
    "CREATE TABLE version_quality("
    "  version INTEGER PRIMARY KEY,"     /* a checkpoint's version (kept if it is pruned) */
    "  decided REAL NOT NULL,"           /* unix seconds */
    "  labelled INTEGER NOT NULL,"       /* labelled images in the sample */
    "  knn20 REAL,"                      /* leave-one-out k-NN-20 of the sample; NULL: none */
    "  pixels_knn20 REAL,"               /* the same for raw pixels of the evaluation view */
    "  serving_knn20 REAL,"              /* the serving version's figure at the decision */
    "  eff_rank REAL,"                   /* effective rank of its representations (no labels) */
    "  mean_std REAL,"                   /* their mean per-dimension standard deviation */
    "  accepted INTEGER NOT NULL,"       /* 1 swapped in, 0 refused */
    "  reason TEXT NOT NULL);",
};

static int user_version(sqlite3 *db, int *v, store_err *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return store_sql_fail(err, db, "reading the schema version");
    int rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return store_sql_fail(err, db, "reading the schema version");
    return 0;
}

int store_migrate(sqlite3 *db, int target, store_err *err) {
    int v;
    if (user_version(db, &v, err)) return -1;
    if (v > STORE_SCHEMA_VERSION)
        return store_fail(err, "database schema version %d is newer than this barlowd (%d)", v,
                          STORE_SCHEMA_VERSION);
    for (; v < target; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return store_sql_fail(err, db, "starting a migration");
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, bump, NULL, NULL, NULL) != SQLITE_OK) {
            store_sql_fail(err, db, "migrating the schema");
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            return store_sql_fail(err, db, "committing a migration");
    }
    return 0;
}
