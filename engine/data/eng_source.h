/* eng_source.h — a set of training images held in memory, and "give me N random images".
 *
 * A source keeps one training copy per image, already converted to the model's channel count
 * and downscaled (shorter side at most `train_side`), so augmentation never needs the original
 * again. It loads from an IDX file (Fashion-MNIST) or a directory of PNG/JPEG/PGM files; the
 * server's SQLite-backed source (api/svc_training.c, called by server/workers.c) is another
 * implementation of the same fill callback.
 *
 * Sampling is uniform with replacement and deterministic per batch: batch b draws from a
 * generator seeded by (seed, b), so a run resumed at batch b draws what the uninterrupted run
 * drew — whatever the prefetcher had already drawn ahead. */
#ifndef ENG_SOURCE_H
#define ENG_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "eng_augment.h"
#include "eng_image.h"

typedef struct eng_source {
    int channels;            /* channels of every training copy */
    size_t n;                /* images */
    eng_image *images;       /* owned [n] training copies */
    uint64_t seed;           /* sampling seed */
    uint64_t next_batch;     /* index of the batch the next fill draws */
} eng_source;

/* Loads every image of an IDX image file (magic 0x00000803), gzipped when its name ends in
 * ".gz" (as Debian's dataset-fashion-mnist ships it). On error returns -1, src empty. */
int eng_source_from_idx(eng_source *src, const char *path, int channels, int train_side,
                        eng_err *err);
/* Loads every decodable image file of a directory (not recursive; files that fail to decode are
 * refused with their name: a training set should not silently lose images). */
int eng_source_from_dir(eng_source *src, const char *path, int channels, int train_side,
                        eng_err *err);
/* A directory or, when path ends in ".idx" or names a regular file, an IDX file. */
int eng_source_open(eng_source *src, const char *path, int channels, int train_side,
                    eng_err *err);

/* Sets the sampling seed and the batch the next fill draws (for resuming). */
void eng_source_seek(eng_source *src, uint64_t seed, uint64_t batch);

/* An eng_aug_fill_fn: n random images of batch next_batch (then next_batch++). ctx is the
 * eng_source. Pixels point into the source and stay valid while it lives. */
int eng_source_fill(void *ctx, eng_aug_src *srcs, int n, eng_err *err);

/* Image i as an augmentation source (borrowed pixels). */
eng_aug_src eng_source_image(const eng_source *src, size_t i);

void eng_source_free(eng_source *src);

#endif
