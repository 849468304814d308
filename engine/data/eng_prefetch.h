/* eng_prefetch.h — augmentation on its own thread, one batch ahead of the trainer. */
#ifndef ENG_PREFETCH_H
#define ENG_PREFETCH_H

#include <stdint.h>

#include "eng_augment.h"

/* Supplies the n source images of the next batch into srcs[0..n-1]; returns 0, or -1 with err
 * filled. Called on the prefetch thread, one call at a time, in batch order. The pixels must stay
 * valid until the next call of fill (or until eng_aug_prefetch_free returns). */
typedef int (*eng_aug_fill_fn)(void *ctx, eng_aug_src *srcs, int n, eng_err *err);

typedef struct eng_aug_prefetch eng_aug_prefetch; /* opaque */

/* Starts a prefetcher that produces batches of n images: batch k (k = 0, 1, ...) is
 * fill(ctx, ...) followed by eng_aug_batch(cfg, srcs, n, seed + k, ...). Two batch buffers are
 * kept: while the caller uses one, the thread prepares the next in the other. The config is
 * copied; fill_ctx is borrowed and must outlive the prefetcher. On success *out owns the object
 * (release with eng_aug_prefetch_free) and the thread is already working on batch 0. */
int eng_aug_prefetch_create(eng_aug_prefetch **out, const eng_aug_cfg *cfg, int n, uint64_t seed,
                            eng_aug_fill_fn fill, void *fill_ctx, eng_err *err);

/* A prefetcher for one rank's shard of every batch: fill supplies all n images of a batch, and
 * only images first .. first+count-1 are augmented (eng_aug_batch_from), so *a and *b hold
 * [count, C, S, S]: those rows of what eng_aug_prefetch_create's batch would hold. */
int eng_aug_prefetch_create_shard(eng_aug_prefetch **out, const eng_aug_cfg *cfg, int n,
                                  int first, int count, uint64_t seed, eng_aug_fill_fn fill,
                                  void *fill_ctx, eng_err *err);

/* Waits for the next batch and points *a and *b at its views [n, C, S, S]. The buffers stay valid
 * and unchanged until the next call of _next or _free; calling _next hands the previous batch's
 * buffers back to the thread. If producing this batch failed (fill or augmentation), returns -1
 * with that error, and so does every later call; batches finished before the failure are still
 * delivered first. Call from one thread at a time. */
int eng_aug_prefetch_next(eng_aug_prefetch *p, const float **a, const float **b, eng_err *err);

/* Stops the thread (waiting for any fill/augmentation in progress to finish), joins it and frees
 * everything. p may be NULL. Must not run concurrently with _next. */
void eng_aug_prefetch_free(eng_aug_prefetch *p);

#endif
