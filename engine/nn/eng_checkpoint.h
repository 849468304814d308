/* eng_checkpoint.h — a model version as one self-describing binary blob.
 *
 * The blob holds everything needed to resume training bit for bit and to serve the model:
 *
 *   magic "BARLOWCK", format version, fixed header (step, loss, optimiser and schedule config,
 *   section sizes), the model config as JSON, every parameter (canonical order and layout), the
 *   BN running statistics, the LARS momentum (training models), random-generator states, and a
 *   CRC-32 of all that precedes it.
 *
 * All numbers are little-endian. The store keeps the blob as a SQLite BLOB; the engine neither
 * knows nor cares where it lives. Loading checks the whole blob (size, magic, version, checksum,
 * config, section sizes) before touching the model: a corrupt or truncated blob is refused and
 * the model is left exactly as it was. */
#ifndef ENG_CHECKPOINT_H
#define ENG_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "eng_model.h"
#include "eng_rng.h"

#define ENG_CKPT_VERSION 1
#define ENG_CKPT_MAX_RNG 8

/* What travels with the weights. */
typedef struct eng_ckpt_meta {
    uint64_t step;                  /* optimiser steps taken */
    double loss;                    /* loss at save (NaN when unknown) */
    eng_lars_cfg opt;               /* optimiser and schedule configuration */
    int n_rng;                      /* generator states in rng[] */
    eng_rng rng[ENG_CKPT_MAX_RNG];  /* e.g. the sampler's and the augmenter's */
} eng_ckpt_meta;

/* Serialises m and meta into a new blob (*blob malloc'd, caller frees). Momentum is included
 * when m is a training model. On error returns -1 and *blob is NULL. */
int eng_checkpoint_save(const eng_model *m, const eng_ckpt_meta *meta, uint8_t **blob,
                        size_t *len, eng_err *err);
/* The same with the running statistics taken from `stats` ([m->n_stats]) instead of m->stats:
 * for saving the last completed step while the next one is updating m->stats. */
int eng_checkpoint_save_stats(const eng_model *m, const float *stats, const eng_ckpt_meta *meta,
                              uint8_t **blob, size_t *len, eng_err *err);

/* Validates a blob completely and returns its config and meta without loading weights (e.g. to
 * build a model of the right shape first). cfg or meta may be NULL. */
int eng_checkpoint_peek(const void *blob, size_t len, eng_config *cfg, eng_ckpt_meta *meta,
                        eng_err *err);

/* Validates, then copies parameters, running statistics and (training models) momentum into m,
 * which must have been built from the same config. An inference model takes the statistics it
 * has (a prefix: the projector's come last). On error returns -1 and m is unchanged. */
int eng_checkpoint_load(eng_model *m, const void *blob, size_t len, eng_ckpt_meta *meta,
                        eng_err *err);

/* A blob's weights without building a model (for writing them in other formats). */
typedef struct eng_ckpt_weights {
    eng_config cfg;     /* the model's config */
    eng_ckpt_meta meta; /* step, loss, optimiser and generator states */
    size_t n_params;    /* floats of params: the config's parameter table */
    float *params;      /* owned [n_params], canonical order and layout */
    size_t n_stats;     /* floats of stats: every BN's (a training model's blob) or the encoder's
                         * only (an inference model's: its BNs come first) */
    float *stats;       /* owned [n_stats]: per BN in canonical order, mean[C] then var[C] */
} eng_ckpt_weights;

/* Validates a blob completely (as eng_checkpoint_load does) and copies its config, meta,
 * parameters and running statistics into *w. On error returns -1 and *w is empty (zeroed). */
int eng_checkpoint_weights(const void *blob, size_t len, eng_ckpt_weights *w, eng_err *err);
/* Frees the arrays and zeroes *w. Safe on a zeroed struct. */
void eng_ckpt_weights_free(eng_ckpt_weights *w);

#endif
