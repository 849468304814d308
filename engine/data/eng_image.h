/* eng_image.h — decoding uploaded images (PNG, JPEG, binary PGM) into 8-bit
 * pixels, plus the two conversions the training path needs: channel count and a box-filter
 * downscale. (IDX datasets: eng_idx.h; the training-copy format: eng_copy.h.)
 *
 * Pixels are 8-bit, row-major, channels interleaved (HWC): channels 1 = gray, 2 = gray+alpha,
 * 3 = RGB, 4 = RGBA. Every decoder reads the header first and refuses oversized or malformed
 * dimensions before it allocates pixel memory; truncated or corrupt input is refused with a
 * message (never a partially decoded image). */
#ifndef ENG_IMAGE_H
#define ENG_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "eng_err.h"

#define ENG_IMAGE_MAX_SIDE 65535                /* no side may exceed this */
#define ENG_DECODE_DEFAULT_MAX_PIXELS 40000000LL /* eng_decode_defaults().max_pixels */

typedef struct eng_image {
    int width, height; /* in pixels, both >= 1 when pixels != NULL */
    int channels;      /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    uint8_t *pixels;   /* owned (malloc): height * width * channels bytes, HWC; NULL when empty */
} eng_image;

typedef struct eng_decode_opts {
    long long max_pixels; /* refuse images with width * height above this (must be >= 1) */
    int min_side;         /* 0: full size. Else the image may come out reduced by 2, 4 or 8
                           * (sides rounded up) while both sides stay >= min_side: a JPEG by
                           * libjpeg's DCT scaling, a non-interlaced PNG into block means row by
                           * row as it decodes (its whole raster is never held); PGM and
                           * interlaced PNG always decode at full size. For previews and for
                           * the model's small copies, which need no more */
} eng_decode_opts;

/* What a decode saw of the file: its own size (after the EXIF orientation) and the factor it
 * came out reduced by (1 = full size). */
typedef struct eng_decode_info {
    int width, height;
    int reduction;
} eng_decode_info;

/* Formats recognised by eng_image_sniff. */
enum { ENG_IMG_UNKNOWN = 0, ENG_IMG_JPEG = 1, ENG_IMG_PNG = 2, ENG_IMG_PGM = 3 };

/* Default decode options (max_pixels = ENG_DECODE_DEFAULT_MAX_PIXELS, full size). This function can't
 * fail. */
eng_decode_opts eng_decode_defaults(void);

/* Allocates an uninitialised width x height x channels image into *img. Sides must be
 * 1..ENG_IMAGE_MAX_SIDE and channels 1..4. On error returns -1, *img is left empty (zeroed). */
int eng_image_alloc(eng_image *img, int width, int height, int channels, eng_err *err);

/* Frees img's pixels and zeroes it. Safe on a zeroed struct and on NULL. */
void eng_image_free(eng_image *img);

/* Guesses the format from the magic bytes: ENG_IMG_JPEG (FF D8 FF), ENG_IMG_PNG (the 8-byte PNG
 * signature), ENG_IMG_PGM ("P5" then whitespace), else ENG_IMG_UNKNOWN. Reads at most the first
 * 8 bytes; bytes may be NULL when len is 0. This function can't fail. */
int eng_image_sniff(const void *bytes, size_t len);

/* MIME type of a format from eng_image_sniff ("image/jpeg", "image/png",
 * "image/x-portable-graymap"); NULL for ENG_IMG_UNKNOWN or any other value. */
const char *eng_image_media_type(int kind);

/* Decodes a whole PNG, JPEG or binary PGM (P5) file held in memory. opts may be NULL (defaults).
 *   PNG: every color type and bit depth; palette expands to RGB (RGBA when it has tRNS), gray or
 *        RGB with tRNS gain an alpha channel, 1/2/4-bit gray scales to 0..255, 16-bit samples
 *        are rounded to 8 bits (round(v / 257)), interlacing is undone. The file must be
 *        complete up to IEND.
 *   JPEG: gray decodes to 1 channel, YCbCr/RGB to 3; CMYK/YCCK are refused. The EXIF
 *        orientation (APP1 "Exif", tag 0x0112, values 2..8) is applied to the pixels, so width
 *        and height swap for 5..8. Truncated data (libjpeg's "premature end" warnings) is
 *        refused; other libjpeg warnings are tolerated.
 *   PGM: maxval 1..255 (one byte per sample) or 256..65535 (two bytes, big-endian); samples are
 *        rescaled to 0..255 as round(v * 255 / maxval); a sample above maxval is refused; bytes
 *        after the raster are ignored.
 * Width or height outside 1..65535, or width * height above opts->max_pixels, is refused before
 * any pixel memory is allocated. On error returns -1 with a message starting "png: ", "jpeg: ",
 * "pgm: " or "image: ", and *out is left empty (zeroed). */
int eng_image_decode(const void *bytes, size_t len, const eng_decode_opts *opts, eng_image *out,
                     eng_err *err);

/* As eng_image_decode, and writes what it saw to *info (may be NULL; zeroed on error). */
int eng_image_decode_info(const void *bytes, size_t len, const eng_decode_opts *opts,
                          eng_image *out, eng_decode_info *info, eng_err *err);

/* Converts to 1 (gray) or 3 (RGB) channels into *out (a new image; in is untouched). Gray to
 * RGB replicates; RGB to gray is the luma L = (299 R + 587 G + 114 B) / 1000 rounded half up;
 * alpha is dropped without compositing. Converting to the same channel count copies.
 * On error (bad channels, empty input, out of memory) returns -1, *out is left empty. */
int eng_image_convert(const eng_image *in, int channels, eng_image *out, eng_err *err);

/* When the shorter side of in exceeds max_side, writes into *out a copy shrunk so that the
 * shorter side equals max_side and the longer side is scaled by the same factor (rounded,
 * >= 1), every output pixel being the exact area average (box filter) of the input pixels it
 * covers, rounded half up. Otherwise *out is an exact copy. Channels are kept.
 * On error (max_side < 1, empty input, out of memory) returns -1, *out is left empty. */
int eng_image_downscale(const eng_image *in, int max_side, eng_image *out, eng_err *err);

#endif
