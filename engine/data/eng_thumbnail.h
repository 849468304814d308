/* eng_thumbnail.h — small previews of stored images for the dashboard: an image fitted into a
 * square of a given side (box filter, aspect kept, never enlarged) and encoded as PNG. */
#ifndef ENG_THUMBNAIL_H
#define ENG_THUMBNAIL_H

#include <stddef.h>
#include <stdint.h>

#include "eng_image.h"

/* Encodes img (1–4 channels, 8-bit) as a PNG into *out (malloc'd, *len bytes; caller frees).
 * On error returns -1 and *out is NULL. */
int eng_image_encode_png(const eng_image *img, uint8_t **out, size_t *len, eng_err *err);

/* Into *out: img shrunk so that its longer side is side (±1 for rounding; the shorter side is
 * scaled by the same factor, rounded, and at least 1, so an image more elongated than side:1
 * keeps a longer side above it), every pixel the area average of those it covers; an image
 * that fits already is copied. On error returns -1 and *out is empty. */
int eng_image_fit(const eng_image *img, int side, eng_image *out, eng_err *err);

#endif
