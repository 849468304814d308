/* eng_infer.h — serving inference: an encoder loaded from a checkpoint blob that turns images
 * into representations (the training copy an upload is turned into is data/eng_copy.h).
 *
 * An eng_infer is an inference model (BN on running statistics) of a fixed batch size built from
 * a checkpoint. Embedding n images runs ceil(n / batch) forwards; rows are independent, so an
 * image's vector does not depend on the batch it came in (to float rounding of the kernels
 * chosen for that batch size). One eng_infer serves one caller at a time: callers that embed
 * concurrently each need their own (they are cheap: the weights of `small` are 7.5 MB). */
#ifndef ENG_INFER_H
#define ENG_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "eng_augment.h"
#include "eng_copy.h"
#include "eng_model.h"

typedef struct eng_infer {
    eng_config cfg;   /* the checkpoint's model */
    eng_aug_cfg view; /* evaluation view: size, channels, normalisation */
    eng_model model;  /* inference model of `batch` rows */
    int batch;        /* images per forward */
    int dim;          /* floats per representation */
    uint64_t step;    /* the checkpoint's training step */
} eng_infer;

/* Builds an inference model of `batch` rows from a checkpoint blob (validated completely first).
 * `threads` is how many threads its kernels are planned for (oneDNN fixes a convolution's
 * thread count when the primitive is made, whatever the caller's team at run time): 1 for a
 * model that request threads run side by side; < 1 for the calling thread's current team.
 * On error returns -1 and inf is empty. */
int eng_infer_create(eng_infer *inf, const void *blob, size_t len, int batch, int threads,
                     eng_err *err);

/* Representations of n prepared images (training copies: channels = cfg.in_channels) into
 * out[n * dim]. */
int eng_infer_embed(eng_infer *inf, const eng_aug_src *imgs, int n, float *out, eng_err *err);

void eng_infer_free(eng_infer *inf);

/* The evaluation view of a prepared image: the whole image resized bilinearly to S x S and
 * normalised as in training (no random transform). out holds channels * S * S floats. */
int eng_infer_view(const eng_aug_cfg *view, const eng_aug_src *src, float *out, eng_err *err);

#endif
