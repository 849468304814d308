/* eng_copy.c — making, packing and unpacking training copies. */
#include "eng_copy.h"

#include <stdlib.h>
#include <string.h>

int eng_train_copy_make(const eng_image *decoded, int channels, int side, eng_image *out,
                        eng_err *err) {
    eng_image conv = {0};
    if (eng_image_convert(decoded, channels, &conv, err)) return -1;
    int rc = eng_image_downscale(&conv, side, out, err);
    eng_image_free(&conv);
    return rc;
}

int eng_train_copy_decode(const void *bytes, size_t len, long long max_pixels, int channels,
                          int side, eng_image *out, eng_decode_info *info, eng_err *err) {
    memset(out, 0, sizeof *out);
    eng_decode_opts o = eng_decode_defaults();
    o.max_pixels = max_pixels;
    o.min_side = ENG_COPY_DECODE_MARGIN * side;
    eng_image img;
    if (eng_image_decode_info(bytes, len, &o, &img, info, err)) return -1;
    int rc = eng_train_copy_make(&img, channels, side, out, err);
    eng_image_free(&img);
    return rc;
}

#define TC_HEADER 12

int eng_train_copy_pack(const eng_image *img, uint8_t **bytes, size_t *len, eng_err *err) {
    *bytes = NULL;
    if (!img->pixels || img->width > 65535 || img->height > 65535 || img->channels < 1 ||
        img->channels > 4)
        return eng_fail(err, "train copy: cannot pack a %dx%dx%d image", img->width, img->height,
                        img->channels);
    size_t px = (size_t)img->width * img->height * img->channels;
    uint8_t *b = malloc(TC_HEADER + px);
    if (!b) return eng_fail(err, "train copy: out of memory");
    memcpy(b, "BTC1", 4);
    b[4] = (uint8_t)(img->width & 0xff);
    b[5] = (uint8_t)(img->width >> 8);
    b[6] = (uint8_t)(img->height & 0xff);
    b[7] = (uint8_t)(img->height >> 8);
    b[8] = (uint8_t)img->channels;
    b[9] = b[10] = b[11] = 0;
    memcpy(b + TC_HEADER, img->pixels, px);
    *bytes = b;
    *len = TC_HEADER + px;
    return 0;
}

int eng_train_copy_unpack(const void *bytes, size_t len, eng_image *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    const uint8_t *b = bytes;
    if (len < TC_HEADER || memcmp(b, "BTC1", 4))
        return eng_fail(err, "train copy: not a packed training copy");
    int w = b[4] | b[5] << 8, h = b[6] | b[7] << 8, c = b[8];
    if (w < 1 || h < 1 || (c != 1 && c != 3))
        return eng_fail(err, "train copy: bad header %dx%dx%d", w, h, c);
    if (len - TC_HEADER != (size_t)w * h * c)
        return eng_fail(err, "train copy: %zu pixel bytes for a %dx%dx%d image", len - TC_HEADER,
                        w, h, c);
    if (eng_image_alloc(out, w, h, c, err)) return -1;
    memcpy(out->pixels, b + TC_HEADER, len - TC_HEADER);
    return 0;
}

eng_aug_src eng_image_as_src(const eng_image *img) {
    eng_aug_src s = {img->width, img->height, img->channels, img->pixels};
    return s;
}
