/* eng_image.c — image decoding (PNG via libpng, JPEG via libjpeg, binary PGM by hand),
 * channel conversion and box-filter downscaling.
 *
 * libpng and libjpeg report fatal errors by longjmp. Each decoder keeps everything it allocates
 * in a state struct owned by the caller of the function that calls setjmp, so after a longjmp
 * the caller still sees every pointer and frees it: no local of the setjmp function needs to
 * survive the jump. Neither library is ever allowed to print or exit. */
#include "eng_image.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

/* ---------------------------------------------------------------------------------------------
 * Basics */

eng_decode_opts eng_decode_defaults(void) {
    eng_decode_opts o = {.max_pixels = ENG_DECODE_DEFAULT_MAX_PIXELS};
    return o;
}

int eng_image_alloc(eng_image *img, int width, int height, int channels, eng_err *err) {
    memset(img, 0, sizeof *img);
    if (width < 1 || height < 1 || width > ENG_IMAGE_MAX_SIDE || height > ENG_IMAGE_MAX_SIDE)
        return eng_fail(err, "image: invalid size %dx%d (each side must be 1..%d)", width, height,
                        ENG_IMAGE_MAX_SIDE);
    if (channels < 1 || channels > 4)
        return eng_fail(err, "image: invalid channel count %d (must be 1..4)", channels);
    size_t n = (size_t)width * (size_t)height * (size_t)channels;
    img->pixels = malloc(n);
    if (!img->pixels)
        return eng_fail_code(err, ERR_NO_MEMORY, "image: out of memory for %dx%dx%d pixels", width, height, channels);
    img->width = width;
    img->height = height;
    img->channels = channels;
    return 0;
}

void eng_image_free(eng_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

static size_t image_bytes(const eng_image *img) {
    return (size_t)img->width * (size_t)img->height * (size_t)img->channels;
}

static bool image_valid(const eng_image *img) {
    return img && img->pixels && img->width >= 1 && img->height >= 1 &&
           img->width <= ENG_IMAGE_MAX_SIDE && img->height <= ENG_IMAGE_MAX_SIDE &&
           img->channels >= 1 && img->channels <= 4;
}

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static bool is_pnm_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int eng_image_sniff(const void *bytes, size_t len) {
    const uint8_t *b = bytes;
    if (!b) return ENG_IMG_UNKNOWN;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return ENG_IMG_JPEG;
    if (len >= 8 && memcmp(b, PNG_MAGIC, 8) == 0) return ENG_IMG_PNG;
    if (len >= 3 && b[0] == 'P' && b[1] == '5' && is_pnm_space(b[2])) return ENG_IMG_PGM;
    return ENG_IMG_UNKNOWN;
}

const char *eng_image_media_type(int kind) {
    switch (kind) {
    case ENG_IMG_JPEG: return "image/jpeg";
    case ENG_IMG_PNG: return "image/png";
    case ENG_IMG_PGM: return "image/x-portable-graymap";
    default: return NULL;
    }
}

/* The common size rule, applied to header values before any pixel allocation. */
static int check_dims(const char *fmt, long long w, long long h, long long max_pixels,
                      eng_err *err) {
    /* w, h < 2^32, so the product can't overflow */
    if (w >= 1 && h >= 1 && w * h > max_pixels)
        return eng_fail_code(err, ERR_TOO_LARGE, "%s: %lldx%lld exceeds the %lld-pixel limit", fmt, w, h, max_pixels);
    if (w < 1 || h < 1 || w > ENG_IMAGE_MAX_SIDE || h > ENG_IMAGE_MAX_SIDE)
        return eng_fail(err, "%s: invalid dimensions %lldx%lld (each side must be 1..%d)", fmt, w,
                        h, ENG_IMAGE_MAX_SIDE);
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The largest of 8, 4, 2 that keeps both sides, rounded up, at least min_side; 1 when none does
 * or min_side is 0. PNG's row-by-row reduction and JPEG's DCT scaling share it. */
static unsigned reduction_for(unsigned w, unsigned h, int min_side) {
    for (unsigned d = 8; min_side > 0 && d > 1; d /= 2)
        if ((w + d - 1) / d >= (unsigned)min_side && (h + d - 1) / d >= (unsigned)min_side)
            return d;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * PNG */

typedef struct png_state {
    const uint8_t *bytes; /* borrowed: the whole file */
    size_t len, pos;      /* file length and read position */
    long long max_pixels; /* from the options */
    png_structp png;      /* owned: destroyed by the caller of png_run */
    png_infop info;       /* owned: idem */
    int min_side;         /* from the options: 0, or reduce while sides stay >= */
    png_bytep *rows;      /* owned: row pointers into pixels (a full decode) */
    uint8_t *row;         /* owned: one decoded row (a reduced decode) */
    uint32_t *sums;       /* owned: one output row's sums (a reduced decode) */
    uint8_t *pixels;      /* owned until handed to the output image */
    int width, height, channels;
    int full_width, full_height; /* the file's own size */
    int reduction;               /* 1, or the d of a d x d block-mean decode */
    char msg[ENG_ERR_LEN]; /* libpng's error message, or ours; "" if none */
} png_state;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_state *st = png_get_error_ptr(png);
    snprintf(st->msg, sizeof st->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings are benign by definition; the engine never prints */
}

static void png_read_mem(png_structp png, png_bytep data, size_t n) {
    png_state *st = png_get_io_ptr(png);
    if (st->len - st->pos < n) png_error(png, "truncated");
    memcpy(data, st->bytes + st->pos, n);
    st->pos += n;
}

/* Decodes row by row into d x d block means (the last blocks of a row or column may be
 * partial: their mean is over the pixels they hold), so a large PNG never needs its whole
 * raster in memory: one row and one row of sums. Called from png_run (inside its setjmp). */
static int png_read_reduced(png_state *st, unsigned d, size_t rowbytes) {
    int w = st->full_width, h = st->full_height, ch = st->channels;
    int ow = (int)(((unsigned)w + d - 1) / d), oh = (int)(((unsigned)h + d - 1) / d);
    size_t ostride = (size_t)ow * (size_t)ch;
    st->row = malloc(rowbytes);
    st->sums = calloc(ostride, sizeof *st->sums);
    st->pixels = malloc(ostride * (size_t)oh);
    if (!st->row || !st->sums || !st->pixels) {
        snprintf(st->msg, sizeof st->msg, "out of memory for %dx%d pixels", ow, oh);
        return -1;
    }
    for (int y = 0; y < h; y++) {
        png_read_row(st->png, st->row, NULL);
        const uint8_t *px = st->row;
        for (int ox = 0, x = 0; ox < ow; ox++) {
            uint32_t *sum = st->sums + (size_t)ox * ch;
            for (int xe = x + (int)d < w ? x + (int)d : w; x < xe; x++, px += ch)
                for (int c = 0; c < ch; c++) sum[c] += px[c];
        }
        if ((y + 1) % (int)d && y + 1 < h) continue;
        int oy = y / (int)d, rows = y - oy * (int)d + 1;
        uint8_t *out = st->pixels + (size_t)oy * ostride;
        for (int ox = 0; ox < ow; ox++) {
            uint32_t cols = (uint32_t)(ox + 1 < ow ? (int)d : w - ox * (int)d);
            uint32_t n = cols * (uint32_t)rows;
            for (int c = 0; c < ch; c++) {
                size_t i = (size_t)ox * ch + c;
                out[i] = (uint8_t)((st->sums[i] + n / 2) / n);
                st->sums[i] = 0;
            }
        }
    }
    png_read_end(st->png, NULL); /* insists on the rest of the file up to IEND */
    st->width = ow;
    st->height = oh;
    return 0;
}

/* Runs libpng on st; everything it allocates lands in st. Returns 0 or -1 (st->msg says why). */
static int png_run(png_state *st) {
    if (setjmp(png_jmpbuf(st->png))) return -1;
    png_set_read_fn(st->png, st, png_read_mem);
    png_set_user_limits(st->png, ENG_IMAGE_MAX_SIDE, ENG_IMAGE_MAX_SIDE);
    png_read_info(st->png, st->info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(st->png, st->info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    eng_err e;
    if (check_dims("png", w, h, st->max_pixels, &e) != 0) {
        snprintf(st->msg, sizeof st->msg, "%s", e.msg + 5); /* without the "png: " prefix */
        return -1;
    }
    if (depth == 16) png_set_scale_16(st->png);
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(st->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(st->png);
    if (png_get_valid(st->png, st->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(st->png);
    png_set_interlace_handling(st->png);
    png_read_update_info(st->png, st->info);
    int ch = png_get_channels(st->png, st->info);
    size_t rowbytes = png_get_rowbytes(st->png, st->info);
    if (ch < 1 || ch > 4 || png_get_bit_depth(st->png, st->info) != 8 ||
        rowbytes != (size_t)w * (size_t)ch) {
        snprintf(st->msg, sizeof st->msg, "unexpected layout after transforms (%d channels)", ch);
        return -1;
    }
    st->full_width = (int)w;
    st->full_height = (int)h;
    st->channels = ch;
    unsigned d = png_get_interlace_type(st->png, st->info) == PNG_INTERLACE_NONE
                     ? reduction_for(w, h, st->min_side)
                     : 1; /* an interlaced image's passes need the whole raster */
    st->reduction = (int)d;
    if (d > 1) return png_read_reduced(st, d, rowbytes);
    st->pixels = malloc(rowbytes * h);
    st->rows = malloc(sizeof *st->rows * h);
    if (!st->pixels || !st->rows) {
        snprintf(st->msg, sizeof st->msg, "out of memory for %ux%u pixels", (unsigned)w,
                 (unsigned)h);
        return -1;
    }
    for (png_uint_32 y = 0; y < h; y++) st->rows[y] = st->pixels + (size_t)y * rowbytes;
    png_read_image(st->png, st->rows);
    png_read_end(st->png, NULL); /* insists on the rest of the file up to IEND */
    st->width = (int)w;
    st->height = (int)h;
    return 0;
}

static int decode_png(const uint8_t *b, size_t len, long long max_pixels, int min_side,
                      eng_image *out, eng_decode_info *info, eng_err *err) {
    /* Size check straight from the IHDR bytes: libpng would first read on to the next chunk. */
    if (len >= 24 && memcmp(b + 12, "IHDR", 4) == 0)
        if (check_dims("png", be32(b + 16), be32(b + 20), max_pixels, err) != 0) return -1;
    png_state st = {.bytes = b, .len = len, .max_pixels = max_pixels, .min_side = min_side};
    st.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    if (st.png) st.info = png_create_info_struct(st.png);
    int rc = -1;
    if (!st.png || !st.info)
        snprintf(st.msg, sizeof st.msg, "out of memory for the decoder");
    else
        rc = png_run(&st);
    png_destroy_read_struct(st.png ? &st.png : NULL, st.info ? &st.info : NULL, NULL);
    free(st.rows);
    free(st.row);
    free(st.sums);
    if (rc != 0) {
        free(st.pixels);
        return eng_fail(err, "png: %s", st.msg);
    }
    out->width = st.width;
    out->height = st.height;
    out->channels = st.channels;
    out->pixels = st.pixels;
    info->width = st.full_width;
    info->height = st.full_height;
    info->reduction = st.reduction;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * JPEG */

typedef struct jpeg_state {
    struct jpeg_decompress_struct cinfo; /* destroyed by the caller of jpeg_run */
    struct jpeg_error_mgr jerr;          /* error manager with our hooks */
    jmp_buf jmp;                         /* where error_exit lands */
    long long max_pixels;                /* from the options */
    int min_side;                        /* from the options: 0, or reduce while sides stay >= */
    uint8_t *pixels;                     /* owned until handed over */
    int width, height, channels;
    int full_width, full_height, reduction; /* the file's own size; the DCT scaling's 1/n */
    int orientation;       /* EXIF orientation 1..8 (1 when absent) */
    char msg[ENG_ERR_LEN]; /* why it failed; "" if it did not */
} jpeg_state;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_state *st = cinfo->client_data;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    snprintf(st->msg, sizeof st->msg, "%s", buf);
    longjmp(st->jmp, 1);
}

static void jpeg_on_output(j_common_ptr cinfo) {
    (void)cinfo; /* never print */
}

/* Warnings (level -1) that mean the data ended early abort the decode: libjpeg would otherwise
 * pad the image with gray and call it a success. Other warnings are counted and tolerated. */
static void jpeg_on_emit(j_common_ptr cinfo, int level) {
    if (level >= 0) return; /* trace messages */
    cinfo->err->num_warnings++;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) {
        jpeg_state *st = cinfo->client_data;
        snprintf(st->msg, sizeof st->msg, "truncated (premature end of data)");
        longjmp(st->jmp, 1);
    }
}

static unsigned tiff16(const uint8_t *p, bool le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | (unsigned)p[1];
}

static uint32_t tiff32(const uint8_t *p, bool le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : be32(p);
}

/* EXIF orientation from an APP1 payload, or 1 when absent or malformed. The payload is
 * "Exif\0\0" then a TIFF file: byte order, 42, offset of IFD0, whose 0x0112 SHORT entry holds it. */
static int exif_orientation(const uint8_t *d, size_t n) {
    if (n < 6 || memcmp(d, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *t = d + 6;
    size_t tn = n - 6;
    if (tn < 8) return 1;
    bool le;
    if (t[0] == 'I' && t[1] == 'I')
        le = true;
    else if (t[0] == 'M' && t[1] == 'M')
        le = false;
    else
        return 1;
    if (tiff16(t + 2, le) != 42) return 1;
    uint32_t ifd = tiff32(t + 4, le);
    if (ifd > tn || tn - ifd < 2) return 1;
    unsigned count = tiff16(t + ifd, le);
    size_t entries = ifd + 2;
    for (unsigned i = 0; i < count; i++) {
        size_t at = entries + (size_t)i * 12;
        if (at > tn || tn - at < 12) return 1;
        const uint8_t *e = t + at;
        if (tiff16(e, le) != 0x0112) continue;
        if (tiff16(e + 2, le) != 3 || tiff32(e + 4, le) < 1) return 1; /* SHORT, count >= 1 */
        unsigned v = tiff16(e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Runs libjpeg; everything allocated lands in st. Returns 0 or -1 (st->msg says why). */
static int jpeg_run(jpeg_state *st, const uint8_t *b, size_t len) {
    struct jpeg_decompress_struct *ci = &st->cinfo;
    if (setjmp(st->jmp)) return -1;
    jpeg_create_decompress(ci); /* keeps err and client_data */
    jpeg_mem_src(ci, b, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(ci, TRUE);
    eng_err e;
    if (check_dims("jpeg", ci->image_width, ci->image_height, st->max_pixels, &e) != 0) {
        snprintf(st->msg, sizeof st->msg, "%s", e.msg + 6); /* without "jpeg: " */
        return -1;
    }
    if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK) {
        snprintf(st->msg, sizeof st->msg, "CMYK images are not supported");
        return -1;
    }
    ci->out_color_space = ci->jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1) {
            int o = exif_orientation(m->data, m->data_length);
            if (o != 1 || st->orientation == 0) st->orientation = o;
        }
    if (st->orientation == 0) st->orientation = 1;
    /* a reduced decode (libjpeg scales in the DCT, far cheaper than decoding every pixel):
     * the largest of 1/8, 1/4, 1/2 that keeps both sides at least min_side */
    unsigned denom = reduction_for(ci->image_width, ci->image_height, st->min_side);
    ci->scale_num = 1;
    ci->scale_denom = denom;
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height, ch = ci->output_components;
    if (w != (int)((ci->image_width + denom - 1) / denom) ||
        h != (int)((ci->image_height + denom - 1) / denom) || (ch != 1 && ch != 3)) {
        snprintf(st->msg, sizeof st->msg, "unexpected output layout (%d components)", ch);
        return -1;
    }
    size_t stride = (size_t)w * (size_t)ch;
    st->pixels = malloc(stride * (size_t)h);
    if (!st->pixels) {
        snprintf(st->msg, sizeof st->msg, "out of memory for %dx%d pixels", w, h);
        return -1;
    }
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = st->pixels + (size_t)ci->output_scanline * stride;
        jpeg_read_scanlines(ci, &row, 1);
    }
    jpeg_finish_decompress(ci); /* reads on to EOI, so a missing tail is noticed */
    st->full_width = (int)ci->image_width;
    st->full_height = (int)ci->image_height;
    st->reduction = (int)denom;
    st->width = w;
    st->height = h;
    st->channels = ch;
    return 0;
}

/* Applies EXIF orientation o (2..8) to img, replacing its pixels. Returns 0 or -1 (no memory). */
static int apply_orientation(eng_image *img, int o, eng_err *err) {
    int w = img->width, h = img->height, c = img->channels;
    bool swap = o >= 5;
    eng_image r;
    if (eng_image_alloc(&r, swap ? h : w, swap ? w : h, c, err) != 0) return -1;
    for (int y = 0; y < r.height; y++)
        for (int x = 0; x < r.width; x++) {
            int sx, sy; /* source pixel of output (x, y) */
            switch (o) {
            case 2: sx = w - 1 - x; sy = y; break;             /* mirror horizontally */
            case 3: sx = w - 1 - x; sy = h - 1 - y; break;     /* rotate 180 */
            case 4: sx = x; sy = h - 1 - y; break;             /* mirror vertically */
            case 5: sx = y; sy = x; break;                     /* transpose */
            case 6: sx = y; sy = h - 1 - x; break;             /* rotate 90 clockwise */
            case 7: sx = w - 1 - y; sy = h - 1 - x; break;     /* transverse */
            case 8: sx = w - 1 - y; sy = x; break;             /* rotate 90 counter-clockwise */
            default: sx = x; sy = y; break;
            }
            memcpy(r.pixels + ((size_t)y * r.width + x) * c,
                   img->pixels + ((size_t)sy * w + sx) * c, (size_t)c);
        }
    eng_image_free(img);
    *img = r;
    return 0;
}

/* Finds the first SOFn segment by walking the markers and checks its dimensions, so absurd
 * sizes are refused even when libjpeg would first complain about something else. Returns -1 only
 * for a refused size; an unreadable marker sequence is left for libjpeg to describe. */
static int jpeg_precheck(const uint8_t *b, size_t len, long long max_pixels, eng_err *err) {
    size_t p = 2; /* after SOI */
    while (p + 4 <= len) {
        if (b[p] != 0xff) return 0;
        uint8_t m = b[p + 1];
        if (m == 0xff) { /* fill byte */
            p++;
            continue;
        }
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) { /* TEM, RSTn: no length */
            p += 2;
            continue;
        }
        if (m == 0xd9 || m == 0xda) return 0; /* EOI or SOS before any SOF */
        size_t seg = (size_t)b[p + 2] << 8 | b[p + 3];
        if (seg < 2) return 0;
        bool sof = m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
        if (sof) {
            if (p + 9 > len || seg < 7) return 0;
            long long h = (long long)b[p + 5] << 8 | b[p + 6];
            long long w = (long long)b[p + 7] << 8 | b[p + 8];
            return check_dims("jpeg", w, h, max_pixels, err);
        }
        p += 2 + seg;
    }
    return 0;
}

static int decode_jpeg(const uint8_t *b, size_t len, long long max_pixels, int min_side,
                       eng_image *out, eng_decode_info *info, eng_err *err) {
    if (jpeg_precheck(b, len, max_pixels, err) != 0) return -1;
    jpeg_state *st = calloc(1, sizeof *st);
    if (!st) return eng_fail_code(err, ERR_NO_MEMORY, "jpeg: out of memory for the decoder");
    st->max_pixels = max_pixels;
    st->min_side = min_side;
    st->cinfo.err = jpeg_std_error(&st->jerr);
    st->jerr.error_exit = jpeg_on_error;
    st->jerr.output_message = jpeg_on_output;
    st->jerr.emit_message = jpeg_on_emit;
    st->cinfo.client_data = st;
    int rc = jpeg_run(st, b, len);
    jpeg_destroy_decompress(&st->cinfo); /* safe on the zeroed struct if creation failed */
    if (rc != 0) {
        eng_fail(err, "jpeg: %s", st->msg);
        free(st->pixels);
        free(st);
        return -1;
    }
    out->width = st->width;
    out->height = st->height;
    out->channels = st->channels;
    out->pixels = st->pixels;
    int orientation = st->orientation;
    bool swap = orientation >= 5; /* a quarter turn: the sides trade places */
    info->width = swap ? st->full_height : st->full_width;
    info->height = swap ? st->full_width : st->full_height;
    info->reduction = st->reduction;
    free(st);
    if (orientation > 1 && apply_orientation(out, orientation, err) != 0) {
        eng_image_free(out);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * PGM (binary P5) */

/* Skips whitespace and '#' comments (to end of line). */
static void pgm_skip(const uint8_t *b, size_t len, size_t *p) {
    while (*p < len) {
        if (is_pnm_space(b[*p])) {
            (*p)++;
        } else if (b[*p] == '#') {
            while (*p < len && b[*p] != '\n' && b[*p] != '\r') (*p)++;
        } else {
            break;
        }
    }
}

/* Reads one decimal header field; refuses missing digits and values above 1e9. */
static int pgm_field(const uint8_t *b, size_t len, size_t *p, const char *what, long long *v,
                     eng_err *err) {
    pgm_skip(b, len, p);
    if (*p >= len) return eng_fail(err, "pgm: truncated header (missing %s)", what);
    if (b[*p] < '0' || b[*p] > '9') return eng_fail(err, "pgm: bad %s in header", what);
    long long x = 0;
    while (*p < len && b[*p] >= '0' && b[*p] <= '9') {
        x = x * 10 + (b[*p] - '0');
        if (x > 1000000000LL) return eng_fail(err, "pgm: %s too large", what);
        (*p)++;
    }
    if (*p >= len) return eng_fail(err, "pgm: truncated header (after %s)", what);
    if (!is_pnm_space(b[*p]) && b[*p] != '#')
        return eng_fail(err, "pgm: bad %s in header", what);
    *v = x;
    return 0;
}

static int decode_pgm(const uint8_t *b, size_t len, long long max_pixels, eng_image *out,
                      eng_decode_info *info, eng_err *err) {
    size_t p = 2;
    long long w, h, maxval;
    if (pgm_field(b, len, &p, "width", &w, err) != 0 ||
        pgm_field(b, len, &p, "height", &h, err) != 0 ||
        pgm_field(b, len, &p, "maxval", &maxval, err) != 0)
        return -1;
    if (!is_pnm_space(b[p])) return eng_fail(err, "pgm: maxval must be followed by whitespace");
    p++; /* exactly one whitespace byte separates the header from the raster */
    if (check_dims("pgm", w, h, max_pixels, err) != 0) return -1;
    if (maxval < 1 || maxval > 65535)
        return eng_fail(err, "pgm: maxval %lld out of range (1..65535)", maxval);
    size_t bps = maxval > 255 ? 2 : 1;
    size_t n = (size_t)w * (size_t)h;
    if ((len - p) / bps < n)
        return eng_fail(err, "pgm: truncated (%zu bytes of pixel data, %zu needed)", len - p,
                        n * bps);
    if (eng_image_alloc(out, (int)w, (int)h, 1, err) != 0) return -1;
    const uint8_t *r = b + p;
    for (size_t i = 0; i < n; i++) {
        unsigned v = bps == 2 ? (unsigned)r[2 * i] << 8 | r[2 * i + 1] : r[i];
        if (v > maxval) {
            eng_image_free(out);
            return eng_fail(err, "pgm: sample %u exceeds maxval %lld", v, maxval);
        }
        out->pixels[i] = (uint8_t)(((unsigned long long)v * 255 + (unsigned long long)maxval / 2) /
                                   (unsigned long long)maxval);
    }
    *info = (eng_decode_info){(int)w, (int)h, 1};
    return 0;
}

static int decode_any(const void *bytes, size_t len, const eng_decode_opts *opts, eng_image *out,
                      eng_decode_info *info, eng_err *err);

/* A decoder's refusal is the data's fault (ERR_BAD_INPUT) unless it said otherwise (memory,
 * the pixel limit). */
int eng_image_decode_info(const void *bytes, size_t len, const eng_decode_opts *opts,
                          eng_image *out, eng_decode_info *info, eng_err *err) {
    eng_decode_info scratch;
    if (!info) info = &scratch;
    memset(info, 0, sizeof *info);
    int rc = decode_any(bytes, len, opts, out, info, err);
    if (rc && err && err->code == ERR_INTERNAL) err->code = ERR_BAD_INPUT;
    if (rc) memset(info, 0, sizeof *info);
    return rc;
}

int eng_image_decode(const void *bytes, size_t len, const eng_decode_opts *opts, eng_image *out,
                     eng_err *err) {
    return eng_image_decode_info(bytes, len, opts, out, NULL, err);
}

static int decode_any(const void *bytes, size_t len, const eng_decode_opts *opts, eng_image *out,
                      eng_decode_info *info, eng_err *err) {
    memset(out, 0, sizeof *out);
    eng_decode_opts o = opts ? *opts : eng_decode_defaults();
    if (o.max_pixels < 1)
        return eng_fail(err, "image: max_pixels must be >= 1 (got %lld)", o.max_pixels);
    if (!bytes || len == 0) return eng_fail(err, "image: empty input");
    const uint8_t *b = bytes;
    switch (eng_image_sniff(b, len)) {
    case ENG_IMG_PNG: return decode_png(b, len, o.max_pixels, o.min_side, out, info, err);
    case ENG_IMG_JPEG: return decode_jpeg(b, len, o.max_pixels, o.min_side, out, info, err);
    case ENG_IMG_PGM: return decode_pgm(b, len, o.max_pixels, out, info, err);
    default:
        if (len < 8)
            return eng_fail(err, "image: unrecognised format (only %zu bytes)", len);
        return eng_fail(err, "image: unrecognised format (expected PNG, JPEG or binary PGM; "
                             "starts %02x %02x %02x %02x)",
                        b[0], b[1], b[2], b[3]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Conversions */

int eng_image_convert(const eng_image *in, int channels, eng_image *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    if (!image_valid(in)) return eng_fail(err, "image convert: empty or invalid input");
    if (channels != 1 && channels != 3)
        return eng_fail(err, "image convert: can only convert to 1 or 3 channels, not %d",
                        channels);
    if (eng_image_alloc(out, in->width, in->height, channels, err) != 0) return -1;
    size_t n = (size_t)in->width * (size_t)in->height;
    int c = in->channels;
    const uint8_t *s = in->pixels;
    uint8_t *d = out->pixels;
    for (size_t i = 0; i < n; i++, s += c) {
        if (channels == 1) {
            if (c <= 2)
                *d++ = s[0];
            else
                *d++ = (uint8_t)((299u * s[0] + 587u * s[1] + 114u * s[2] + 500u) / 1000u);
        } else if (c <= 2) {
            d[0] = d[1] = d[2] = s[0];
            d += 3;
        } else {
            memcpy(d, s, 3);
            d += 3;
        }
    }
    return 0;
}

/* One axis of an exact box filter from `src` samples to `dst` (< src) samples. In units where
 * a source sample is dst long and an output sample src long, output i covers [i*src, (i+1)*src)
 * and source j covers [j*dst, (j+1)*dst); the weight of j in i is their (integer) overlap, and
 * the weights of one output sum to src. Output i uses sources first[i] .. first[i]+count[i]-1,
 * with weights stored consecutively from offset[i] in weights. */
typedef struct box_axis {
    int *first, *count; /* per output sample */
    size_t *offset;     /* per output sample, into weights */
    uint32_t *weights;  /* overlaps, all outputs back to back */
} box_axis;

static void box_axis_free(box_axis *a) {
    free(a->first);
    free(a->count);
    free(a->offset);
    free(a->weights);
    memset(a, 0, sizeof *a);
}

static int box_axis_make(box_axis *a, int src, int dst) {
    memset(a, 0, sizeof *a);
    a->first = malloc(sizeof *a->first * (size_t)dst);
    a->count = malloc(sizeof *a->count * (size_t)dst);
    a->offset = malloc(sizeof *a->offset * (size_t)dst);
    /* each output touches at most src/dst + 2 sources */
    a->weights = malloc(sizeof *a->weights * ((size_t)src + 2 * (size_t)dst));
    if (!a->first || !a->count || !a->offset || !a->weights) {
        box_axis_free(a);
        return -1;
    }
    size_t k = 0;
    for (int i = 0; i < dst; i++) {
        unsigned long long lo = (unsigned long long)i * src, hi = lo + src;
        int j0 = (int)(lo / dst), j1 = (int)((hi + dst - 1) / dst); /* [j0, j1) */
        a->first[i] = j0;
        a->count[i] = j1 - j0;
        a->offset[i] = k;
        for (int j = j0; j < j1; j++) {
            unsigned long long s0 = (unsigned long long)j * dst, s1 = s0 + dst;
            unsigned long long o0 = s0 > lo ? s0 : lo, o1 = s1 < hi ? s1 : hi;
            a->weights[k++] = (uint32_t)(o1 - o0);
        }
    }
    return 0;
}

static int image_copy(const eng_image *in, eng_image *out, eng_err *err) {
    if (eng_image_alloc(out, in->width, in->height, in->channels, err) != 0) return -1;
    memcpy(out->pixels, in->pixels, image_bytes(in));
    return 0;
}

int eng_image_downscale(const eng_image *in, int max_side, eng_image *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    if (!image_valid(in)) return eng_fail(err, "image downscale: empty or invalid input");
    if (max_side < 1) return eng_fail(err, "image downscale: max_side must be >= 1 (got %d)",
                                      max_side);
    int w = in->width, h = in->height, c = in->channels;
    int shorter = w < h ? w : h;
    if (shorter <= max_side) return image_copy(in, out, err);
    long long longer = w < h ? h : w;
    int scaled = (int)((longer * max_side + shorter / 2) / shorter);
    if (scaled < 1) scaled = 1;
    int ow = w < h ? max_side : scaled, oh = w < h ? scaled : max_side;
    box_axis ax, ay;
    uint32_t *tmp = NULL; /* horizontal pass: [h][ow][c], sums scaled by w */
    if (box_axis_make(&ax, w, ow) != 0) return eng_fail_code(err, ERR_NO_MEMORY, "image downscale: out of memory");
    if (box_axis_make(&ay, h, oh) != 0) {
        box_axis_free(&ax);
        return eng_fail_code(err, ERR_NO_MEMORY, "image downscale: out of memory");
    }
    tmp = malloc(sizeof *tmp * (size_t)h * (size_t)ow * (size_t)c);
    if (!tmp || eng_image_alloc(out, ow, oh, c, err) != 0) {
        box_axis_free(&ax);
        box_axis_free(&ay);
        free(tmp);
        return eng_fail_code(err, ERR_NO_MEMORY, "image downscale: out of memory");
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *row = in->pixels + (size_t)y * w * c;
        uint32_t *t = tmp + (size_t)y * ow * c;
        for (int x = 0; x < ow; x++)
            for (int k = 0; k < c; k++) {
                uint32_t acc = 0; /* <= 255 * w < 2^24 */
                const uint32_t *wt = ax.weights + ax.offset[x];
                for (int j = 0; j < ax.count[x]; j++)
                    acc += wt[j] * row[(size_t)(ax.first[x] + j) * c + k];
                t[(size_t)x * c + k] = acc;
            }
    }
    unsigned long long denom = (unsigned long long)w * (unsigned long long)h;
    for (int y = 0; y < oh; y++) {
        const uint32_t *wt = ay.weights + ay.offset[y];
        uint8_t *o = out->pixels + (size_t)y * ow * c;
        for (int x = 0; x < ow * c; x++) {
            unsigned long long acc = 0; /* <= 255 * w * h < 2^40 */
            for (int j = 0; j < ay.count[y]; j++)
                acc += (unsigned long long)wt[j] * tmp[(size_t)(ay.first[y] + j) * ow * c + x];
            o[x] = (uint8_t)((acc + denom / 2) / denom);
        }
    }
    free(tmp);
    box_axis_free(&ax);
    box_axis_free(&ay);
    return 0;
}
