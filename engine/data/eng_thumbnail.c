/* eng_thumbnail.c — fitting an image into a square and writing it as PNG (libpng's simplified
 * write API, to memory). */
#include "eng_thumbnail.h"

#include <assert.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

int eng_image_encode_png(const eng_image *img, uint8_t **out, size_t *len, eng_err *err) {
    static const png_uint_32 formats[5] = {0, PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB,
                                           PNG_FORMAT_RGBA};
    *out = NULL;
    *len = 0;
    if (!img->pixels || img->channels < 1 || img->channels > 4)
        return eng_fail(err, "png: nothing to encode");
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)img->width;
    pi.height = (png_uint_32)img->height;
    pi.format = formats[img->channels];
    png_alloc_size_t need = 0;
    /* the first call measures, the second writes */
    if (!png_image_write_to_memory(&pi, NULL, &need, 0, img->pixels, 0, NULL))
        return eng_fail(err, "png: %s", pi.message);
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf) {
        png_image_free(&pi);
        return eng_fail(err, "png: out of memory");
    }
    if (!png_image_write_to_memory(&pi, buf, &need, 0, img->pixels, 0, NULL)) {
        free(buf);
        return eng_fail(err, "png: %s", pi.message);
    }
    *out = buf;
    *len = need;
    return 0;
}

int eng_image_fit(const eng_image *img, int side, eng_image *out, eng_err *err) {
    assert(side >= 1);
    int w = img->width, h = img->height;
    int longer = w > h ? w : h, shorter = w > h ? h : w;
    if (longer <= side) return eng_image_downscale(img, shorter, out, err); /* a copy */
    /* eng_image_downscale sets the shorter side; the longer one follows by the same factor */
    long target = ((long)shorter * side + longer / 2) / longer;
    return eng_image_downscale(img, target < 1 ? 1 : (int)target, out, err);
}
