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

/* A decode for a training copy keeps both sides at least this many times the copy's side, so
 * the reduction libjpeg or the PNG row filter makes before the box filter stays well above the
 * copy's own scale (docs/BENCHMARKS.md, "photos": the vectors it gives against a full decode). */
#define ENG_COPY_DECODE_MARGIN 2

/* Decodes an image file straight into its training copy (as eng_train_copy_make), reduced while
 * decoding (eng_decode_opts.min_side = ENG_COPY_DECODE_MARGIN · side): a 12-megapixel JPEG
 * decodes at 1/8 scale. max_pixels as in eng_decode_opts; *info (may be NULL) gets the file's
 * own size. Errors are eng_image_decode's (codes included) or eng_train_copy_make's. */
int eng_train_copy_decode(const void *bytes, size_t len, long long max_pixels, int channels,
                          int side, eng_image *out, eng_decode_info *info, eng_err *err);

/* A training copy as bytes for the store: "BTC1", width and height (u16 LE), channels (u8),
 * three zero bytes, then the HWC pixels. *bytes is malloc'd (caller frees). */
int eng_train_copy_pack(const eng_image *img, uint8_t **bytes, size_t *len, eng_err *err);

/* Parses packed bytes back into a new image *out (validated: magic, sides, channels, size). */
int eng_train_copy_unpack(const void *bytes, size_t len, eng_image *out, eng_err *err);

/* An image as an augmentation/inference source (borrows img's pixels). */
eng_aug_src eng_image_as_src(const eng_image *img);

#endif
