/* eng_copy.h — the training copy of an uploaded image: what the store keeps for training and
 * re-embedding (small, already in the model's channels), and its byte format. */
#ifndef ENG_COPY_H
#define ENG_COPY_H

#include <stddef.h>
#include <stdint.h>

#include "eng_augment.h"
#include "eng_image.h"

/* The training copy of a decoded image: converted to `channels` (1 or 3) and, when its shorter
 * side exceeds `side`, box-downscaled so that it equals `side`. *out is a new image. */
int eng_train_copy_make(const eng_image *decoded, int channels, int side, eng_image *out,
                        eng_err *err);

/* A training copy as bytes for the store: "BTC1", width and height (u16 LE), channels (u8),
 * three zero bytes, then the HWC pixels. *bytes is malloc'd (caller frees). */
int eng_train_copy_pack(const eng_image *img, uint8_t **bytes, size_t *len, eng_err *err);

/* Parses packed bytes back into a new image *out (validated: magic, sides, channels, size). */
int eng_train_copy_unpack(const void *bytes, size_t len, eng_image *out, eng_err *err);

/* An image as an augmentation/inference source (borrows img's pixels). */
eng_aug_src eng_image_as_src(const eng_image *img);

#endif
