/* svc.h — the service behind the HTTP API: the store, the serving model, the search index and
 * the queue of images waiting for their vectors. Route handlers (routes.c) and the server's
 * worker threads (server/) both work through it and through nothing else: every store and
 * engine use on the request and worker paths is a function here. It knows nothing of HTTP.
 *
 * Model versions. Every checkpoint in the store is a model version. The *serving* version is
 * the newest one whose vectors exist for every live image; every answer comes from it, and
 * every answer says which version that was. A newer version (published by the trainer) becomes
 * *pending*: the re-embedder computes every live image's vector with it, and only then is it
 * swapped in.
 *
 * Version objects. A version in memory is one svc_version: its number, its inference models
 * and its index, reference counted. The service holds a reference in `serving` and one in
 * `pending`; a swap is one pointer store under version_mu (the model and its vectors cannot
 * come apart). Callers take a reference (svc_version_acquire), use it with no service lock held
 * (searching its index under the version's own index_lock), and drop it (svc_version_release);
 * a swap never frees a version that a request still uses. Training never touches these: it has
 * its own model.
 *
 * Fresh uploads. A stored image is queued; the embed worker takes queued images in batches,
 * computes their vectors with the serving version (and with the pending one, if any), stores
 * them and adds them to that version's index, so an upload is searchable within moments.
 *
 * Deletes. A delete removes the image from the store, the sampler (training) and the serving
 * and pending indexes at once. Inserting a vector into an index checks, under the same lock a
 * delete takes (member_mu), that the image is still live, so a deleted image never comes back.
 *
 * Locks, in the order they may nest: member_mu → a version's index_lock. version_mu is a leaf
 * (held only to read or swap the two pointers and take references); q_mu, stat_mu, bell_mu and
 * a version's inference-pool mutexes are leaves too. Functions that need a lock assert it. */
#ifndef SVC_H
#define SVC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "eng_export.h"
#include "eng_index.h"
#include "eng_infer.h"
#include "eng_trainer.h"
#include "store.h"
#include "svc_lock.h"

#define SVC_MANY_IDLE_S 60.0 /* a version's batch model is freed after this long unused */
/* Rows an HNSW build links per hold of member_mu (uploads' index inserts wait at most that long:
 * ~60 ms at 1M rows of 256 on two AVX2 cores, the graph taking ~0.24 ms per row there) */
#define SVC_GRAPH_STEP 256
#define SVC_ONE_POOL 2 /* batch-1 inference models per version (concurrent single embeds) */
#define SVC_REFUSALS_TO_RESTART 3 /* refused versions in a row before training restarts */

/* A search result: an image id and its cosine score. */
typedef eng_hit svc_hit;

/* The service's errors are the program's one error value (eng_err: a message for the client,
 * which never holds secrets, and a code that api_svc_error maps to the HTTP status). */
typedef eng_err svc_err;

typedef struct svc_opts {
    long long max_pixels;  /* decoded images above this are refused (default 40 MP) */
    int embed_batch;       /* images per forward of the background embedders (64) */
    int max_meta_bytes;    /* client metadata limit (4096) */
    int gate;              /* 1: a version is swapped in only if the quality gate passes it */
    double gate_tolerance; /* absolute k-NN-20 a candidate may lose against serving (0.005) */
    char label_key[65];    /* meta key holding an image's label ("label") */
    int quality_sample;    /* labelled images scored at most (20000) */
    int min_labelled;      /* fewer labelled images: versions are not scored (200) */
    int max_snapshots;     /* snapshots kept at most: one more is refused (20) */
    long ann_threshold;    /* indexed rows from which single searches walk an HNSW graph and
                            * answer approximately (100000; 0: always exact) */
} svc_opts;

svc_opts svc_defaults(void);

/* Unix seconds (wall clock), as the store and the API report times. */
double svc_now(void);

/* One model version in memory: its inference models and its vectors. The models are immutable
 * once loaded; the index changes under index_lock. */
typedef struct svc_version {
    int64_t id;    /* the version number (the store's checkpoint version) */
    uint64_t step; /* the training step it was saved at */
    int dim;       /* floats per vector */
    atomic_int refs;
    pthread_mutex_t one_mu[SVC_ONE_POOL];
    eng_infer one[SVC_ONE_POOL]; /* batch 1: single requests */
    pthread_mutex_t many_mu;     /* covers many, many_built, many_used */
    eng_infer many;              /* batch embed_batch: background embedding, built on first use
                                  * from the store's checkpoint and freed once unused for
                                  * SVC_MANY_IDLE_S (svc_release_idle_models): ~35 MB for small */
    int many_built;
    double many_used;            /* svc_now() of its last embedding */
    int many_batch;              /* its batch size */
    store *st;                   /* borrowed: where its checkpoint is read from */
    svc_rwlock index_lock;       /* searches read; inserts and deletes write */
    eng_index index;             /* this version's vector of every image embedded with it */
} svc_version;

/* The trainer's state, as /status reports it (svc_train_state_name). */
typedef enum svc_train_state {
    SVC_TRAIN_WAITING = 0, /* fewer live images than --min-images */
    SVC_TRAIN_TRAINING,
    SVC_TRAIN_STOPPED,     /* --train no, or the server is stopping */
    SVC_TRAIN_FAILED,      /* a step failed; error says why */
    SVC_TRAIN_PAUSED,      /* --idle-steps without a new upload */
    SVC_TRAIN_RANKS_LOST,  /* --train-ranks: the training job ended (a rank died, or its ranks
                            * did not start); error says why, and a new job is tried */
    SVC_TRAIN_N_STATES
} svc_train_state;

/* "waiting_for_images", "training", "stopped", "failed", "paused", "ranks_lost". */
const char *svc_train_state_name(svc_train_state st);

/* What the trainer last reported (for /status and /metrics). */
typedef struct svc_train_status {
    svc_train_state state;
    eng_train_stats stats;
    double updated;       /* unix seconds of the last report */
    int64_t last_published;
    int ranks;            /* processes that train: 1 in the server, R for an MPI job */
    char error[ENG_ERR_LEN];
} svc_train_status;

typedef struct svc {
    svc_opts opts;
    store *st;                /* borrowed: the caller opens and closes it */
    eng_config cfg;           /* the model every version shares */
    int dim;                  /* floats per representation */

    svc_mutex version_mu;     /* guards the two pointers below (not the versions) */
    svc_version *serving;     /* owned reference: every answer's version */
    svc_version *pending;     /* owned reference being re-embedded, or NULL */

    svc_mutex member_mu;      /* a delete and an index insert never interleave */

    pthread_mutex_t q_mu;      /* the fresh-upload queue */
    pthread_cond_t q_cv;
    int64_t *queue;            /* owned ring of ids waiting for vectors */
    size_t q_head, q_len, q_cap;

    pthread_mutex_t stat_mu;
    svc_train_status train;
    int64_t reembed_done, reembed_total; /* progress of the pending version */
    store_quality last_decision;         /* the gate's newest decision (version 0: none yet) */
    int refused_in_row;                  /* versions the gate refused since the last swap */
    int64_t chosen;                      /* a version chosen by hand to serve next (0: none) */
    float *corr;                         /* owned [SVC_CORR_SIDE²]: the last step's c block, or NULL */
    int corr_side, corr_d;               /* its side (0: none reported) and D */
    long corr_step;                      /* the step it is of */
    int64_t restart_from;                /* after SVC_REFUSALS_TO_RESTART refusals: the version
                                          * training should restart from (0: none) */
    uint64_t pixels_sample;              /* re-embedder only: the sample the figure below is of */
    double pixels_knn20;                 /* ... raw pixels' k-NN-20 on it (NAN: none yet) */

    pthread_mutex_t bell_mu;   /* the re-embedder's doorbell: rung by svc_publish */
    pthread_cond_t bell_cv;
    int bell;

    atomic_long disk_full_errors; /* writes refused because the disk was full */
    atomic_int writes_failing;    /* the last write failed for a full disk (not ready) */

    atomic_int stopping;       /* set once by svc_stop: waits end, workers return */

    char *snap_dir;            /* owned: <the database's directory>/snapshots (NULL: none) */
    atomic_int snap_busy;      /* 1 while a snapshot is being written */
    atomic_int snap_cancel;    /* set by svc_snapshot_cancel: the copy is abandoned */
} svc;

/* Sets up the service on an open store: makes sure version 1 exists (initial_blob, the
 * untrained model's checkpoint, is saved when the store has no checkpoint at all), loads the
 * serving version (the persisted one, else the newest) and its index from the stored vectors,
 * and queues every live image that has no vector of it. On error returns -1. */
int svc_open(svc *s, store *st, const svc_opts *opts, const uint8_t *initial_blob,
             size_t initial_len, svc_err *err);
/* Wakes every waiting worker and makes the queue calls return; call before joining them. */
void svc_stop(svc *s);
void svc_close(svc *s);

/* ---- versions ---- */

/* Loads a version's checkpoint into memory (with an empty index); one reference, the caller's. */
svc_version *svc_version_load(const svc *s, int64_t id, const void *blob, size_t len,
                              svc_err *err);
svc_version *svc_version_acquire(svc *s);  /* the serving version (+1 reference) */
/* Frees the serving and pending versions' batch models unused for idle_s seconds (the next
 * batch embedding builds one again); the re-embedder calls it between its rounds. */
void svc_release_idle_models(svc *s, double idle_s);
/* Builds the serving version's HNSW graph if its index is past opts.ann_threshold without a
 * finished one (see svc_index_graph: searches go on beside the build); the re-embedder's thread
 * calls it between its rounds, and its doorbell rings when uploads cross the threshold. Returns
 * when the graph is done, failed or the service stops; at once when there is nothing to build. */
void svc_build_graphs(svc *s);
/* 1 while v's batch model is built (for tests and /status). */
int svc_version_batch_built(svc_version *v);
void svc_version_release(svc_version *v);  /* -1 reference; frees at zero; v may be NULL */
/* The serving version's number (for log lines; an answer takes its version with its data). */
int64_t svc_serving_version(svc *s);
/* Vectors of n prepared images (train copies) with version v into out[n * dim]. */
int svc_version_embed(svc_version *v, const eng_aug_src *imgs, int n, float *out, svc_err *err);

/* ---- images ---- */

/* An uploaded image: its bytes and the media type the client declared (NULL: none). */
typedef struct svc_blob {
    const void *bytes;
    size_t len;
    const char *type;
} svc_blob;

/* Decodes and validates n uploads, then stores them (durably) and queues each new one for its
 * vector. All or nothing for client errors: when image i is refused (*failed = i) nothing is
 * stored. ids[i] and existed[i] (identical bytes were already stored) are filled on success.
 * meta_json (a validated JSON object, or NULL) goes with every image. */
int svc_upload(svc *s, const svc_blob *imgs, int n, const char *meta_json, int64_t *ids,
               int *existed, int *failed, svc_err *err);
/* Decodes an image into its training copy (for POST /embed and image searches). */
int svc_prepare(const svc *s, const void *bytes, size_t len, const char *declared_type,
                eng_image *out, svc_err *err);
/* Removes an image from the store, the sampler and both indexes. 0 deleted, 1 not found. */
int svc_delete(svc *s, int64_t id, svc_err *err);

/* What is stored of an image (the store's record; meta_json owned, freed by svc_image_free). */
typedef store_image_info svc_image;

/* An image's record. 0 found, 1 not found (or deleted), -1 error. */
int svc_image_get(svc *s, int64_t id, svc_image *out, svc_err *err);
void svc_image_free(svc_image *img);
/* An image's original bytes (*bytes malloc'd; caller frees) and its media type. 0 found, 1 not
 * found, -1 error. */
int svc_image_bytes(svc *s, int64_t id, void **bytes, size_t *len, char media_type[64],
                    svc_err *err);
/* A PNG preview of an image, fitted into side x side (eng_image_fit; *png malloc'd, caller
 * frees). 0 made, 1 not found, -1 error (an original that no longer decodes: ERR_INTERNAL). */
#define SVC_THUMBNAIL_MAX 256
int svc_image_thumbnail(svc *s, int64_t id, int side, uint8_t **png, size_t *len, svc_err *err);
/* Up to max rows of the training log with step > since and step a multiple of every, in step
 * order; returns how many, -1 on error. */
int svc_training_log(svc *s, int64_t since, int64_t every, store_log_row *out, int max,
                     svc_err *err);
/* 1 when id names a live image. */
int svc_image_live(svc *s, int64_t id);
/* Live images. */
int64_t svc_image_count(svc *s);

/* Vector of an uploaded image's bytes with the serving version, into v (dim floats); *version is
 * the version it came from. */
int svc_embed_bytes(svc *s, const void *bytes, size_t len, const char *declared_type, float *v,
                    int64_t *version, svc_err *err);

/* A stored model version (the store's record). */
typedef store_checkpoint_info svc_checkpoint;

/* The quality monitor's figures and the gate's decision for a version. 0 found, 1 none (not
 * decided: version 1, or still pending), -1 error. */
int svc_version_quality(svc *s, int64_t version, store_quality *out, svc_err *err);

/* A version's checkpoint (*blob malloc'd, caller frees). 0 found, 1 not found, -1 error. */
int svc_checkpoint_blob(svc *s, int64_t version, void **blob, size_t *len, svc_err *err);

/* Up to max versions, newest first; returns how many, -1 on error. */
int svc_checkpoints(svc *s, svc_checkpoint *out, int max, svc_err *err);

/* ---- metadata filters and the collection (svc_collection.c) ---- */

/* A metadata filter (store.h has the language; api/openapi.yaml documents it). */
typedef store_filter svc_filter;

/* Parses a filter's JSON text. A bad filter is -1 with ERR_BAD_INPUT and a message naming what
 * is wrong. Free with svc_filter_free (NULL is fine). */
int svc_filter_parse(const svc *s, const char *json, size_t len, svc_filter **out,
                     svc_err *err);
void svc_filter_free(svc_filter *f);
/* 1 for NULL or {} (every image matches). */
int svc_filter_is_empty(const svc_filter *f);

/* A page of live images matching f (NULL: all) in ascending id order, ids above `after` (-1:
 * from the start): up to limit records into out (each freed with svc_image_free), their number
 * in *n, and in *next the last one's id when more match, else -1. */
int svc_image_page(svc *s, const svc_filter *f, int64_t after, int limit, svc_image *out,
                   int *n, int64_t *next, svc_err *err);
/* The image whose bytes have this SHA-256 (64 hex digits, any case). 0 found, 1 none, -1. */
int svc_image_by_sha(svc *s, const char *sha256_hex, svc_image *out, svc_err *err);
/* Deletes every listed image that exists, in one transaction, from the store, the sampler
 * (training) and both indexes at once. Returns how many, -1 on error. */
int64_t svc_delete_ids(svc *s, const int64_t *ids, size_t n, svc_err *err);
/* The same for every live image matching f (which must not be empty: the caller decides
 * whether "everything" was meant; NULL deletes everything). */
int64_t svc_delete_matching(svc *s, const svc_filter *f, svc_err *err);

/* ---- search ---- */

/* Top k by cosine for a vector (dim floats) or for a stored id (excluding itself), among the
 * images matching filter (NULL: all): the exact top k of those, k of them whenever at least k
 * match. *version is the version the answer comes from. */
int svc_search(svc *s, const float *vec, int k, const svc_filter *filter, eng_hit *out,
               int *n_out, int64_t *version, svc_err *err);
/* The same, approximate once the serving index holds opts.ann_threshold rows or more and has its
 * graph, unless force_exact: then a query walks the HNSW graph (a filter matching few images is
 * still answered by the exact scan of those, and any filtered answer has k hits whenever k
 * match). *exact (if not NULL) says whether this answer is the exact top k. */
int svc_search_ann(svc *s, const float *vec, int k, const svc_filter *filter, int force_exact,
                   eng_hit *out, int *n_out, int64_t *version, int *exact, svc_err *err);
/* nq query vectors at once ([nq, dim]); out holds nq * k hits (query i's at out + i * k) and
 * n_out[i] their number. One GEMM per block of stored rows. */
int svc_search_batch(svc *s, const float *vecs, int nq, int k, const svc_filter *filter,
                     eng_hit *out, int *n_out, int64_t *version, svc_err *err);
int svc_neighbors(svc *s, int64_t id, int k, const svc_filter *filter, eng_hit *out, int *n_out,
                  int64_t *version, svc_err *err);
/* svc_neighbors, approximate like svc_search_ann. */
int svc_neighbors_ann(svc *s, int64_t id, int k, const svc_filter *filter, int force_exact,
                      eng_hit *out, int *n_out, int64_t *version, int *exact, svc_err *err);
/* The serving vector of an image (from the index), dim floats. 0 found, 1 not found/not yet. */
int svc_vector(svc *s, int64_t id, float *out, int64_t *version);

/* ---- background work (called by the server's workers) ---- */

/* Waits for queued ids (up to max) and takes them; 0 means stopping. */
int svc_queue_take(svc *s, int64_t *ids, int max);
void svc_queue_push(svc *s, int64_t id);
size_t svc_queue_length(svc *s);
/* Computes, stores and indexes the vectors of ids with the serving and pending versions. */
int svc_embed_fresh(svc *s, const int64_t *ids, int n, svc_err *err);

/* Saves a checkpoint as a new version (the trainer's publish) and rings the re-embedder's bell. */
int svc_publish(svc *s, const uint8_t *blob, size_t len, uint64_t step, double loss,
                int64_t *version, svc_err *err);
/* The re-embedder's wait: returns when svc_publish rang (the ring is consumed), the service is
 * stopping, or `seconds` have passed. */
void svc_wait_for_publish(svc *s, double seconds);

/* The trainer's source: up to n random live images' training copies into imgs (each to be freed
 * with eng_image_free), of the model's channel count; rng is the caller's sampler state. Returns
 * how many (0: no live image yet), -1 on a store error. */
int svc_training_sample(svc *s, uint64_t *rng, eng_image *imgs, int n, svc_err *err);
/* Appends the trainer's statistics at a step to the training log. */
int svc_log_training(svc *s, const eng_train_stats *stats, svc_err *err);
/* Re-embeds every live image with the newest version when it is newer than the serving one and
 * not refused before, scores it (the quality monitor) and lets the gate decide: swaps it in and
 * returns 1, or refuses it (recorded; it is never re-embedded again) and returns 2. 0 when there
 * was nothing to do, -1 on error (serving stays as it was). Checks svc->stopping between
 * batches. */
int svc_reembed_newest(svc *s, svc_err *err);

/* ---- the continual trainer (driven by the server's train worker) ---- */

/* Runs fn(arg) on a thread that may take the locks requests take: the trainer's threads run
 * under SCHED_IDLE and make every store and service call through it (the server's proxy). */
typedef void (*svc_run_fn)(void *runner, void (*fn)(void *arg), void *arg);

/* n training copies into imgs (each to be freed with eng_image_free), drawn by
 * svc_training_sample through run(runner, ...) (run NULL: directly), waiting 100 ms at a time
 * while there are not enough live images. Gives up (-1, "stopping") once *stop (may be NULL)
 * reads non-zero. Both the service's trainer and the server's MPI training job draw this way. */
int svc_training_draw(svc *s, uint64_t *rng, eng_image *imgs, int n, const atomic_int *stop,
                      svc_run_fn run, void *runner, svc_err *err);

/* The trainer of the service's model and its store-backed image source. The source draws live
 * images' training copies on the augmentation thread, through `run`, waiting while there are
 * none; it fails only once *stop is set. */
typedef struct svc_trainer {
    eng_trainer t;
    int created;              /* t is built */
    _Atomic(svc *) s;         /* the service to draw from (svc_trainer_attach), or NULL */
    svc_run_fn run;           /* NULL: calls are made directly */
    void *runner;
    void (*thread_init)(void); /* run once on the augmentation thread (its priority), or NULL */
    unsigned long ready_thread; /* the thread thread_init last ran on (augmentation threads
                                 * only; one at a time, each joined before the next starts) */
    const atomic_int *stop;    /* borrowed: set to interrupt a step and end the source's waits */
    uint64_t rng;              /* the sampler's state (augmentation thread only) */
    eng_image *imgs;           /* owned [batch]: the batch being augmented */
    int batch;
} svc_trainer;

/* Builds the trainer for cfg: resumes from `newest` (the store's newest checkpoint, borrowed)
 * when there is one; else a new model from seed, its step-0 checkpoint in *initial (malloc'd,
 * for svc_open). *stop interrupts a running step between layers. Called before svc_open; on
 * error returns -1 (free with svc_trainer_free either way). */
int svc_trainer_create(svc_trainer *tr, const eng_config *cfg, int batch, uint64_t seed,
                       const void *newest, size_t newest_len, const atomic_int *stop,
                       svc_run_fn run, void *runner, void (*thread_init)(void),
                       uint8_t **initial, size_t *initial_len, svc_err *err);
/* From now on the source draws from s. */
void svc_trainer_attach(svc_trainer *tr, svc *s);
/* One training step (waits for its batch); -1 when it failed or was interrupted. */
int svc_trainer_step(svc_trainer *tr, svc_err *err);
/* The statistics of the last completed step (from the trainer's thread, or while it waits). */
const eng_train_stats *svc_trainer_stats(const svc_trainer *tr);
/* A checkpoint of the last completed step (*blob malloc'd) and that step's statistics, waiting
 * at most wait_s for a running step's update; from any thread. */
int svc_trainer_save(svc_trainer *tr, double wait_s, uint8_t **blob, size_t *len,
                     eng_train_stats *at, svc_err *err);
/* Restarts training from a checkpoint (weights, statistics, optimiser state and step). */
int svc_trainer_restart(svc_trainer *tr, const void *blob, size_t len, svc_err *err);
/* Stops the augmentation thread and frees everything. */
void svc_trainer_free(svc_trainer *tr);

/* A consistent copy of what /status and /metrics report. */
typedef struct svc_status {
    svc_train_status train;
    int64_t reembed_done, reembed_total;
    int64_t serving_version, pending_version; /* pending -1 when none */
    size_t vectors;                           /* in the serving index */
    int64_t images;                           /* live images */
    size_t queue;                             /* uploads waiting for their vector */
    long disk_full_errors;                    /* writes refused for a full disk, in all */
    store_quality last_decision;              /* the gate's newest decision; version 0: none */
    int writes_failing;                       /* the last write failed for a full disk */
} svc_status;

void svc_get_status(svc *s, svc_status *out);

/* Chooses by hand the version to serve — a refused newer one (accept) or an older one (roll
 * back): the re-embedder computes its vectors and swaps it in, bypassing the gate (its figures
 * are still recorded). 0 chosen, 1 no such version, -1 error. */
int svc_version_choose(svc *s, int64_t version, svc_err *err);

/* The version training should restart from, once SVC_REFUSALS_TO_RESTART versions in a row were
 * refused by the gate (the request is consumed); 0 when none. */
int64_t svc_training_restart_take(svc *s);

/* ---- snapshots of the whole database (svc_snapshot.c) ---- */

#define SVC_SNAPSHOT_NAME_MAX 40 /* "snap-20261201T120000Z-123456789.db" and its NUL fit */

/* A snapshot file, as listed (what it holds is read from the file itself). */
typedef struct svc_snapshot {
    char name[SVC_SNAPSHOT_NAME_MAX]; /* snap-YYYYMMDDTHHMMSSZ-N.db */
    double created;                   /* unix seconds (UTC) of its name: when the copy began */
    long seq;                         /* N */
    int64_t bytes;
    int64_t images;                   /* live images in it; -1 when the file cannot be read */
    int64_t serving_version;          /* the version it serves; -1 when it cannot be read */
} svc_snapshot;

/* 1 when name[0..len) has the form the server gives snapshots (the only names it accepts). */
int svc_snapshot_name_ok(const char *name, size_t len);
/* Writes a consistent snapshot of the whole database (store_backup) while uploads and training
 * go on, under a new name. 0 made (*out filled), 1 another is being written, 2 there are
 * max_snapshots already, -1 error (ERR_DISK_FULL: nothing was left behind; ERR_UNAVAILABLE:
 * stopping). */
int svc_snapshot_create(svc *s, svc_snapshot *out, svc_err *err);
/* Every snapshot, newest first (*out malloc'd, caller frees; NULL when none). */
int svc_snapshot_list(svc *s, svc_snapshot **out, int *n, svc_err *err);
/* Opens a snapshot for reading: *fd (the caller's to close) and its size. 0, 1 no such snapshot
 * (or not a valid name), -1 error. A snapshot deleted while open stays readable to the end. */
int svc_snapshot_open(svc *s, const char *name, int *fd, int64_t *bytes, svc_err *err);
/* 0 deleted, 1 no such snapshot (or not a valid name), -1 error. */
int svc_snapshot_delete(svc *s, const char *name, svc_err *err);
/* Abandons a snapshot being written (its partial file is removed) and refuses new ones: the
 * first step of a shutdown, so that stopping never waits for a long copy. */
void svc_snapshot_cancel(svc *s);

/* The cross-correlation matrix's leading block that the dashboard draws (unscaled: averaging
 * blocks would blur the diagonal away). */
#define SVC_CORR_SIDE 128
/* The trainer reports the leading side x side block (side <= SVC_CORR_SIDE) of step's c, D wide. */
void svc_report_corr(svc *s, const float *block, int side, int d, long step);
/* Copies the last reported block into out[SVC_CORR_SIDE²]: its side (0: none yet), D and step. */
int svc_corr_get(svc *s, float *out, int *d, long *step);

/* Trainer reports. */
/* How many processes train (1: the server itself, R: an MPI job), for /status. */
void svc_report_ranks(svc *s, int ranks);
void svc_report_training(svc *s, svc_train_state state, const eng_train_stats *stats,
                         const char *error);

/* ---- export (svc_export.c) ---- */

/* A stored version written as `fmt` into *out (malloc'd, *len bytes; caller frees). 0 done;
 * 1 no such version (never published, or its checkpoint was pruned); 2 the quality gate refused
 * it (err says why; a version chosen by hand counts as accepted); -1 error. Needs only the store,
 * so the offline command calls it too. */
int svc_export_store(store *st, int64_t version, eng_export_format fmt, uint8_t **out,
                     size_t *len, svc_err *err);
/* The same on the service's store. */
int svc_export(svc *s, int64_t version, eng_export_format fmt, uint8_t **out, size_t *len,
               svc_err *err);
/* The version an export takes when none is named: the serving one recorded in the store, else
 * the newest. 0 found, 1 the store has none, -1 error. */
int svc_export_default_version(store *st, int64_t *version, svc_err *err);

#endif
