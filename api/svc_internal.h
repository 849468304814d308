/* svc_internal.h — helpers shared by the svc_*.c files only. */
#ifndef SVC_INTERNAL_H
#define SVC_INTERNAL_H

#include "svc.h"

/* Formats into err with a code and returns -1. */
int svc_fail(svc_err *err, eng_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Loads the training copies of ids into imgs/srcs (imgs owned by the caller: free each with
 * eng_image_free) and writes the ids that were found (still live) to kept. Returns how many. */
int svc_load_copies(svc *s, const int64_t *ids, int n, eng_image *imgs, eng_aug_src *srcs,
                    int64_t *kept, svc_err *err);

/* The code a lower layer's failure keeps in the service's answer (internal when it set none). */
eng_code svc_code_of(const eng_err *e);

/* A store failure as a service error: ERR_DISK_FULL (counted, and the service reports itself not
 * ready until a write succeeds again) when the disk was full, else ERR_INTERNAL. Returns -1. */
int svc_store_fail(svc *s, svc_err *err, const store_err *se, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A write went through: the disk is no longer full. */
void svc_write_ok(svc *s);

/* Rings the re-embedder's doorbell (svc_wait_for_publish returns). */
void svc_ring_reembed(svc *s);

/* Adds vectors to version v's index, each only if its image is still live (a version that is
 * no longer serving or pending takes them harmlessly: it is freed with its last reference). */
void svc_index_insert(svc *s, svc_version *v, const int64_t *ids, const float *vecs, int n);

/* Builds v's HNSW graph when its index has reached opts.ann_threshold rows and has none, or an
 * unfinished one (on OpenMP's threads, in batches of SVC_GRAPH_STEP rows: searches of v go on beside
 * it as exact scans until it is finished, inserts and deletes wait for one batch at most). Once
 * built, every insert and delete keeps it up to date. Returns when it is finished, failed (the
 * index stays exact) or the service is stopping. */
void svc_index_graph(svc *s, svc_version *v);
/* 1 when svc_index_graph(s, v) has work (v may be NULL: 0). */
int svc_index_graph_wanted(svc *s, svc_version *v);

/* The quality monitor's figures for candidate `cand` and the gate's decision on them (not yet
 * stored). */
int svc_quality_decide(svc *s, svc_version *cand, store_quality *out, svc_err *err);

/* Both versions at once (+1 reference each; *pending NULL when there is none), so a swap between
 * two reads cannot skip a version. */
void svc_versions_acquire(svc *s, svc_version **serving, svc_version **pending);
/* Makes v pending (the service takes its own reference); there must be none pending. */
void svc_version_set_pending(svc *s, svc_version *v);
/* Drops the pending version (after a failure or a stop). */
void svc_version_drop_pending(svc *s);
/* The swap: pending becomes serving, one pointer store under version_mu. */
void svc_version_promote(svc *s);

/* The snapshot directory of the service's store (and the removal of partial copies a dead
 * process left there), at open; its release at close. */
void svc_snapshot_setup(svc *s);
void svc_snapshot_teardown(svc *s);

#endif
