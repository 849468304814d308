/* eng_idx.h — IDX files (the MNIST / Fashion-MNIST format) parsed in place, and their images
 * copied out as eng_images. */
#ifndef ENG_IDX_H
#define ENG_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "eng_image.h"

/* IDX files (the MNIST / Fashion-MNIST format): big-endian header, then unsigned bytes. */
enum { ENG_IDX_LABELS = 1, ENG_IDX_IMAGES = 3 }; /* the number of dimensions in the magic */

typedef struct eng_idx {
    int kind;            /* ENG_IDX_IMAGES (magic 0x00000803) or ENG_IDX_LABELS (0x00000801) */
    size_t count;        /* number of images or labels */
    int rows, cols;      /* image size (ENG_IDX_IMAGES); 0 for labels */
    const uint8_t *data; /* borrowed: points into the caller's buffer, just past the header;
                          * count * rows * cols bytes (images) or count bytes (labels) */
} eng_idx;

/* Parses an IDX file of unsigned bytes without copying: out->data points INTO bytes, which must
 * outlive *out (nothing to free). The payload size must equal what the header declares (checked
 * with overflow-safe arithmetic); image sides must be 1..65535. On error (short header, bad
 * magic, unsupported type or rank, truncated or oversized payload) returns -1 and *out is left
 * zeroed. */
int eng_idx_parse(const void *bytes, size_t len, eng_idx *out, eng_err *err);

/* Copies image i of an ENG_IDX_IMAGES file into *out as a 1-channel eng_image (owned by the
 * caller). On error (labels file, i >= count, out of memory) returns -1, *out is left empty. */
int eng_idx_image(const eng_idx *idx, size_t i, eng_image *out, eng_err *err);

#endif
