/* eng_trainer.h — the training loop: augmented batches in, LARS steps, statistics, checkpoints.
 *
 * A trainer owns a training model and an augmentation prefetcher fed by a caller's "give me N
 * random images" callback (an eng_source, or the server's store). Each step takes the batch the
 * prefetch thread prepared while the previous step ran, copies view A and view B into the model's
 * input, and runs forward, loss, backward and LARS. Everything random is a function of (seed,
 * step): augmentation of batch k uses seed + k and a seekable source draws batch k from
 * (seed, k), so saving at step s and resuming reproduces the uninterrupted run bit for bit at the
 * same thread count. */
#ifndef ENG_TRAINER_H
#define ENG_TRAINER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "eng_prefetch.h"
#include "eng_checkpoint.h"
#include "eng_model.h"

typedef struct eng_trainer_cfg {
    int batch;            /* images per step (each gives two views) */
    uint64_t seed;        /* initialisation, sampling and augmentation */
    eng_lars_cfg opt;     /* optimiser and schedule */
    eng_aug_cfg aug;      /* augmentation (its size and channels must match the model) */
} eng_trainer_cfg;

/* Defaults for a model config and batch: LARS with the tuned rates (lr 0.3, weight decay 1e-3,
 * eta 0.02, biases 0.03: docs/QUALITY.md; eng_lars_defaults keeps the paper's), 200 warmup
 * steps and a constant rate after them (open-ended training), the paper's augmentations at the
 * model's input size, augmentation on one thread, seed 1. */
eng_trainer_cfg eng_trainer_defaults(const eng_config *model, int batch);

typedef struct eng_train_stats {
    long step;               /* steps completed */
    double loss;             /* loss of the last step */
    double lr;               /* learning rate of weights at the last step */
    double images_per_s;     /* of the last step (wall clock, including any wait for data) */
    double diag_mean;        /* mean of c_ii at the last step */
    double offdiag_abs_mean; /* mean |c_ij|, i != j, at the last step */
} eng_train_stats;

/* Seeks a source to batch `batch` before the prefetcher starts drawing (may be NULL when the
 * source is not seekable). */
typedef void (*eng_seek_fn)(void *ctx, uint64_t seed, uint64_t batch);

typedef struct eng_trainer {
    eng_trainer_cfg cfg;           /* cfg.batch: images per step over all ranks */
    eng_model model;               /* training model: this rank's shard of cfg.batch */
    int shard_first;               /* this rank's images of every batch start here (0 alone);
                                    * model.batch of them, model.red the job's sums */
    eng_aug_prefetch *prefetch;    /* owned; started at `step` */
    eng_aug_fill_fn fill;          /* the caller's source */
    eng_seek_fn seek;
    void *fill_ctx;                /* borrowed */
    eng_train_stats stats;
    /* Held while a step writes what a checkpoint reads (LARS's update of the weights and
     * momentum, stats, stats_done), so that another thread can save the last completed step
     * while the trainer's thread is in the middle of the next one. */
    pthread_mutex_t commit_mu;
    float *stats_done;             /* owned [model.n_stats]: running statistics as of `stats.step` */
} eng_trainer;

/* Builds the model (initialised from cfg->seed). The source is first called by the first step,
 * which seeks it to that step's batch and starts the prefetcher (so a resume right after create
 * draws nothing). On error returns -1 and t is empty. */
int eng_trainer_create(eng_trainer *t, const eng_config *model, const eng_trainer_cfg *cfg,
                       eng_aug_fill_fn fill, eng_seek_fn seek, void *fill_ctx, eng_err *err);

/* A trainer for one rank of a data-parallel job: cfg->batch is the step's batch over all ranks,
 * of which this rank trains images [first, first + count) (eng_comm_shard). Every rank must pass
 * the same config and a source that draws the same batches; after each step every rank holds the
 * same parameters, which the step checks (a checksum compared over the ranks). */
int eng_trainer_create_shard(eng_trainer *t, const eng_config *model, const eng_trainer_cfg *cfg,
                             int first, int count, const eng_reduce *red, eng_aug_fill_fn fill,
                             eng_seek_fn seek, void *fill_ctx, eng_err *err);

/* One training step. On error returns -1 and the step counts for nothing (weights, momentum and
 * running statistics stay as the last completed step left them); a non-finite loss is an error.
 * An interrupted step (eng_trainer_interrupt_on) consumed its batch: resume from a checkpoint (or
 * free the trainer) before stepping again. A shard's step compares the ranks' parameters after
 * committing: when they differ (or the comparison fails) it returns -1 with the step counted,
 * and the job must end. */
int eng_trainer_step(eng_trainer *t, eng_err *err);

/* From now on a step gives up between layers once *flag reads non-zero (NULL: never). The flag
 * is borrowed and must outlive the trainer's steps. */
void eng_trainer_interrupt_on(eng_trainer *t, const atomic_int *flag);

/* From the next step on, draws batches and augmentations from `seed` instead (a checkpoint
 * saved after it carries the new seed, so a resume continues the same stream). The server
 * reseeds after the quality gate sends training back to an older version, so that the retry is
 * a new attempt rather than a replay of the refused one's augmentations. */
void eng_trainer_reseed(eng_trainer *t, uint64_t seed);

/* The leading side x side block (side = min(max_side, D)) of the cross-correlation matrix
 * c = ẑ_Aᵀẑ_B / N of the last step, row-major and unscaled, into out[side * side]; returns side
 * (0 before the first step). From the trainer's thread, or while it waits. */
int eng_trainer_corr_block(const eng_trainer *t, int max_side, float *out);

/* A checkpoint of the last completed step (blob malloc'd; caller frees). Safe from any thread,
 * also while the trainer's own thread is in a step. */
int eng_trainer_save(eng_trainer *t, uint8_t **blob, size_t *len, eng_err *err);

/* eng_trainer_save, waiting at most wait_s seconds for a running step to finish its update (the
 * update is short, but a starved thread may hold it longer); -1 with "busy" on timeout. *saved
 * (may be NULL) gets the statistics of the step the checkpoint holds. */
int eng_trainer_save_within(eng_trainer *t, double wait_s, uint8_t **blob, size_t *len,
                            eng_train_stats *saved, eng_err *err);

/* Restores weights, statistics, optimiser state and step from a checkpoint of the same model;
 * the next step restarts the data stream at that step. The trainer's seed and schedule come from the
 * checkpoint. On error returns -1 and the trainer is unchanged. */
int eng_trainer_resume(eng_trainer *t, const void *blob, size_t len, eng_err *err);

void eng_trainer_free(eng_trainer *t);

#endif
