/* store.h — SQLite as the single source of truth: images, model versions (checkpoints),
 * embeddings, and the training log. No oneDNN here: checkpoint blobs and vectors are opaque
 * bytes and floats to the store.
 *
 * One store = one database file in WAL mode. All writes go through one connection, serialised
 * by the store; concurrent image uploads are group-committed (one transaction and one fsync for
 * every upload waiting at that moment). Reads use a separate connection per calling thread's
 * handle (store_reader), so a query never waits on a writer. When store_image_put returns 0 the
 * image is durable: it survives kill -9 at any instant (and power loss with synchronous=FULL). */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "eng_err.h"
#include "eng_idset.h"

#define STORE_SCHEMA_VERSION 3
/* The store's errors are the program's one error value (engine/base/eng_err.h): ERR_INTERNAL, or
 * ERR_DISK_FULL when SQLite reports SQLITE_FULL or ENOSPC. */
typedef eng_err store_err;

typedef struct store store; /* opaque: owns the connections and the live-image sampler */

typedef struct store_opts {
    int synchronous_full;  /* 1: PRAGMA synchronous=FULL (default), 0: NORMAL */
    int busy_timeout_ms;   /* default 5000 */
    int keep_versions;     /* checkpoints kept besides the serving one (default 3) */
} store_opts;

store_opts store_defaults(void);

/* Opens (creating if needed) the database at path and runs forward migrations. A file whose
 * schema is newer than this build is refused. On error returns -1 and *out is NULL. */
int store_open(const char *path, const store_opts *opts, store **out, store_err *err);
void store_close(store *s);

/* ----- images ----- */

typedef struct store_image_in {
    const void *bytes;      /* the original upload */
    size_t len;
    const char *media_type; /* e.g. "image/png" */
    int width, height;
    const void *train_copy; /* downscaled copy for training (may be NULL) */
    size_t train_len;
    const char *meta_json;  /* client metadata, a JSON object of at most 4 KiB, or NULL */
} store_image_in;

/* Saves an image (durably, see above) and returns its id; identical bytes (same SHA-256)
 * return the existing id with *existed = 1. Safe to call from many threads at once. */
int store_image_put(store *s, const store_image_in *in, int64_t *id, int *existed,
                    store_err *err);

typedef struct store_image_info {
    int64_t id;
    char sha256[65];        /* hex */
    char media_type[64];
    int width, height;
    int64_t bytes;          /* size of the original */
    double created;         /* unix seconds */
    char *meta_json;        /* malloc'd or NULL; free with store_image_info_free */
} store_image_info;

/* 0 found, 1 not found (or deleted), -1 error. */
int store_image_get(store *s, int64_t id, store_image_info *info, store_err *err);
void store_image_info_free(store_image_info *info);
/* The original bytes (malloc'd into *bytes) or the training copy when train != 0.
 * 0 found, 1 not found, -1 error. */
int store_image_data(store *s, int64_t id, int train, void **bytes, size_t *len, store_err *err);
/* Deletes an image and its embeddings. 0 deleted, 1 not found, -1 error. */
int store_image_delete(store *s, int64_t id, store_err *err);
/* Deletes every listed image that exists, with its embeddings, in one transaction (all or
 * none); they leave the sampler and the metadata index right after the commit. The ids deleted
 * go to deleted (room for n; may be NULL). Returns how many, -1 on error. */
int64_t store_images_delete(store *s, const int64_t *ids, size_t n, int64_t *deleted,
                            store_err *err);
/* The id of the image whose bytes have this SHA-256 (64 lower-case hex digits). 0 found,
 * 1 none, -1 error. */
int store_image_by_sha(store *s, const char *sha256_hex, int64_t *id, store_err *err);
int64_t store_image_count(store *s);
/* 1 when id is a live (stored, not deleted) image, else 0. Never touches SQL. */
int store_image_live(store *s, int64_t id);
/* A snapshot of every live id in increasing order (*ids malloc'd, caller frees; NULL when
 * none). Returns the count, -1 when out of memory. Never touches SQL. */
int64_t store_image_ids(store *s, int64_t **ids);

/* ----- metadata filters (store_filter.c, store_meta.c) ----- */

/* A filter over the top-level keys of images' metadata (the language: store_filter.c and
 * api/openapi.yaml): {"label": "shoe"}, {"label": {"$in": ["shoe", "bag"]}},
 * {"batch": {"$gte": 3, "$lt": 7}}, {"label": {"$exists": true}}; keys ANDed. */
typedef struct store_filter store_filter;

/* Parses len bytes of JSON. A bad filter is -1 with ERR_BAD_INPUT and a message naming what is
 * wrong (ERR_NO_MEMORY when out of memory). */
int store_filter_parse(const char *json, size_t len, store_filter **out, store_err *err);
void store_filter_free(store_filter *f); /* f may be NULL */
/* 1 for {} or NULL (every image matches). */
int store_filter_is_empty(const store_filter *f);
/* The live images matching f (NULL: all of them) as a set (initialised here; the caller frees
 * it with eng_idset_free). From memory, never SQL; -1 only when out of memory. */
int store_filter_eval(store *s, const store_filter *f, eng_idset *out, store_err *err);

/* ----- sampler ----- */

/* Up to n ids of live images drawn uniformly (with replacement) using *rng_state (a
 * splitmix64 state the caller keeps). recent_weight > 0 draws that fraction from the newest
 * 10% of images. Returns how many were written (0 when the store is empty). Never touches SQL. */
int store_sample(store *s, int64_t *ids, int n, uint64_t *rng_state, double recent_weight);

/* ----- model versions ----- */

typedef struct store_checkpoint_info {
    int64_t version;
    int64_t step;
    double created;
    double loss;
    int64_t bytes;
} store_checkpoint_info;

/* Saves a checkpoint blob as a new version (returned in *version) and prunes old versions:
 * the newest keep_versions and `serving` (pass 0 for none) stay, with their embeddings. */
int store_checkpoint_put(store *s, int64_t step, const char *model_json, double loss,
                         const void *blob, size_t len, int64_t serving, int64_t *version,
                         store_err *err);
/* The newest version's blob (malloc'd) and info. 0 found, 1 none, -1 error. */
int store_checkpoint_latest(store *s, store_checkpoint_info *info, void **blob, size_t *len,
                            store_err *err);
int store_checkpoint_get(store *s, int64_t version, store_checkpoint_info *info, void **blob,
                         size_t *len, store_err *err);
/* Up to max versions, newest first; returns how many, -1 on error. */
int store_checkpoint_list(store *s, store_checkpoint_info *out, int max, store_err *err);

/* ----- embeddings ----- */

/* Stores n vectors of dim floats for (ids[i], version) in one transaction (replacing). */
int store_embedding_put(store *s, int64_t version, int n, const int64_t *ids, const float *vecs,
                        int dim, store_err *err);
/* 0 found (vec filled, dim floats), 1 none, -1 error (e.g. dimension mismatch). */
int store_embedding_get(store *s, int64_t id, int64_t version, float *vec, int dim,
                        store_err *err);
/* Calls fn for every live image's vector of a version (to fill a search index). */
int store_embedding_each(store *s, int64_t version, int dim,
                         int (*fn)(void *ctx, int64_t id, const float *vec), void *ctx,
                         store_err *err);

/* Live images with a vector of this version. -1 on error. */
int64_t store_embedding_count(store *s, int64_t version, store_err *err);

/* ----- named state (schema 2) ----- */

/* Small integers that outlive the process, e.g. "serving_version". get: 0 found, 1 absent,
 * -1 error. set: replaces, durably. */
int store_state_get(store *s, const char *key, int64_t *value, store_err *err);
int store_state_set(store *s, const char *key, int64_t value, store_err *err);

/* ----- training log ----- */

typedef struct store_log_row {
    int64_t step;
    double time, loss, lr, images_per_s, diag_mean, offdiag_abs_mean;
} store_log_row;

int store_log_append(store *s, const store_log_row *row, store_err *err);

/* ----- the quality monitor (store_quality.c) ----- */

/* Checkpoints of the newest decisions are kept whatever keep_versions says. */
#define STORE_DECISIONS_KEPT 20

/* A version's figures and the gate's decision. */
typedef struct store_quality {
    int64_t version;
    double decided;        /* unix seconds */
    int64_t labelled;      /* labelled images in the sample */
    double knn20;          /* NAN when not measured */
    double pixels_knn20;   /* NAN when not measured */
    double serving_knn20;  /* the serving version's figure then, NAN when none */
    double eff_rank;       /* unlabelled health: effective rank of the representations, or NAN */
    double mean_std;       /* ... their mean per-dimension standard deviation, or NAN */
    int accepted;          /* 1 swapped in, 0 refused */
    char reason[256];
} store_quality;

/* Records (or replaces) a version's decision. */
int store_quality_put(store *s, const store_quality *q, store_err *err);
/* A version's decision: 0 found, 1 none, -1 error. */
int store_quality_get(store *s, int64_t version, store_quality *q, store_err *err);
/* Calls fn for up to max live images whose meta has a string or number under `key` (letters,
 * digits and '_' only), in increasing SHA-256 order, with the label as text. fn returns
 * non-zero to stop. Returns how many were passed, -1 on error. */
int64_t store_labelled_each(store *s, const char *key, int64_t max,
                            int (*fn)(void *ctx, int64_t id, const char *label), void *ctx,
                            store_err *err);
/* The last max rows, oldest first; returns how many, -1 on error. */
int store_log_tail(store *s, store_log_row *out, int max, store_err *err);
/* Up to max rows with step > since and step a multiple of every, in step order; returns how
 * many, -1 on error. */
int store_log_since(store *s, int64_t since, int64_t every, store_log_row *out, int max,
                    store_err *err);

/* ----- the database file: its path, its claim, snapshots and restore (store_lock.c,
 * store_snapshot.c) ----- */

/* The absolute path of the open store's database file (owned by the store). */
const char *store_path(const store *s);

/* Claims db_path for this process: an exclusive flock on db_path.lock (created when missing and
 * never removed). The server holds it while it runs and restore while it replaces the file; the
 * kernel drops it when the holder exits, even by kill -9. Two claims conflict even within one
 * process. 0 claimed (*fd to pass to store_unclaim), 1 another holder has it, -1 error. */
int store_claim(const char *db_path, int *fd, store_err *err);
void store_unclaim(int fd);

/* What a snapshot file holds, read from the file itself. */
typedef struct store_snapshot_info {
    int64_t bytes;           /* the file's size */
    int64_t images;          /* live images */
    int64_t serving_version; /* the serving model version it records (0: none) */
    int schema;              /* its schema version (PRAGMA user_version) */
} store_snapshot_info;

/* Writes a consistent copy of the database at db_path to out_path, which must not exist: VACUUM
 * INTO on a read-only connection of its own, one read transaction, so the copy holds every
 * transaction committed before the call, while other connections and processes (a running
 * server) go on writing. It is written as .NAME.partial in out_path's directory, fsynced and
 * renamed: out_path appears complete or not at all, and a failure leaves no file. cancel (may be
 * NULL) is polled while copying; non-zero abandons the copy (ERR_UNAVAILABLE). ERR_DISK_FULL
 * when the disk filled, ERR_BAD_INPUT when out_path exists or db_path does not. info (may be
 * NULL) gets what the copy holds. */
int store_backup(const char *db_path, const char *out_path, int (*cancel)(void *ctx), void *ctx,
                 store_snapshot_info *info, store_err *err);
/* Reads what the file at path holds (read-only; creates nothing beside a snapshot). With check,
 * runs PRAGMA integrity_check too. -1 with ERR_BAD_INPUT for a file that is not a SQLite
 * database, is damaged, is not a barlowd database, or has a schema newer than this build's
 * (older ones are migrated by the next store_open). */
int store_snapshot_inspect(const char *path, int check, store_snapshot_info *info,
                           store_err *err);
/* Puts the snapshot at snap_path in place as db_path for the next start: checks it
 * (store_snapshot_inspect with the integrity check), claims db_path, copies the snapshot beside
 * it (db_path.restoring, by store_backup), folds the old database's WAL into it and keeps it as
 * db_path.before-restore (a journal it could not fold moves with it as .before-restore-wal), removes
 * the stale -shm, and renames the copy into place. Refused, with nothing changed, while
 * another process claims db_path (returns 1) or when a .before-restore of an earlier restore
 * exists (-1). Returns 0 restored, -1 on error (the message says where the files are if the
 * old database had already moved). */
int store_restore(const char *snap_path, const char *db_path, store_snapshot_info *info,
                  store_err *err);

#endif
