/* test_image.c — image decoding, conversion, downscaling and IDX parsing.
 *
 * Every input is made here, in memory, with libpng's and libjpeg's own encoders (or byte by byte
 * for headers, EXIF segments, PGM and IDX), so no binary fixture is committed. */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eng_copy.h"
#include "eng_idx.h"
#include "eng_image.h"
#include "test_util.h"

/* ---------------------------------------------------------------------------------------------
 * Helpers: in-memory encoders */

typedef struct membuf {
    uint8_t *data; /* owned (realloc) */
    size_t len, cap;
} membuf;

static void mb_put(membuf *m, const void *p, size_t n) {
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2 + 64;
        m->data = realloc(m->data, m->cap);
        cr_assert(m->data != NULL, "out of memory in the test");
    }
    memcpy(m->data + m->len, p, n);
    m->len += n;
}

static void mb_be32(membuf *m, uint32_t v) {
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mb_put(m, b, 4);
}

static void png_write_mem(png_structp png, png_bytep data, size_t n) {
    mb_put(png_get_io_ptr(png), data, n);
}

static void png_flush_mem(png_structp png) { (void)png; }

typedef struct png_spec {
    int width, height, color_type, depth, interlace;
    const uint8_t *raw;       /* packed rows as libpng expects them (16-bit big-endian) */
    const png_color *palette; /* PLTE entries, or NULL */
    int npalette;
    const uint8_t *trans; /* tRNS alphas for palette entries, or NULL */
    int ntrans;
} png_spec;

/* Encodes a PNG into a membuf (caller frees .data). */
static membuf encode_png(const png_spec *s) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    cr_assert(png && info, "png_create_write_struct failed");
    if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng failed to encode the test image");
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)s->width, (png_uint_32)s->height, s->depth,
                 s->color_type, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (s->palette) png_set_PLTE(png, info, s->palette, s->npalette);
    if (s->trans) png_set_tRNS(png, info, s->trans, s->ntrans, NULL);
    png_write_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    png_bytep *rows = malloc(sizeof *rows * (size_t)s->height);
    for (int y = 0; y < s->height; y++) rows[y] = (png_bytep)s->raw + (size_t)y * rowbytes;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);
    return m;
}

/* A pattern that differs in every pixel and channel. */
static uint8_t pattern(int x, int y, int k) { return (uint8_t)((x * 37 + y * 91 + k * 53) & 255); }

static uint8_t *pattern_image(int w, int h, int c) {
    uint8_t *p = malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) p[((size_t)y * w + x) * c + k] = pattern(x, y, k);
    return p;
}

static void decode_ok(const void *bytes, size_t len, eng_image *img) {
    eng_err err = {0};
    int rc = eng_image_decode(bytes, len, NULL, img, &err);
    cr_assert_eq(rc, 0, "decode failed: %s", err.msg);
    cr_assert_not_null(img->pixels, "decode succeeded without pixels");
}

static void expect_pixels(const eng_image *img, int w, int h, int c, const uint8_t *want) {
    cr_assert_eq(img->width, w, "width %d, want %d", img->width, w);
    cr_assert_eq(img->height, h, "height %d, want %d", img->height, h);
    cr_assert_eq(img->channels, c, "channels %d, want %d", img->channels, c);
    for (size_t i = 0; i < (size_t)w * h * c; i++)
        cr_assert_eq(img->pixels[i], want[i], "byte %zu (x=%zu y=%zu ch=%zu) is %u, want %u", i,
                     i / c % w, i / c / w, i % c, img->pixels[i], want[i]);
}

/* Encodes an 8-bit pattern of the given PNG color type and checks it decodes back exactly. */
static void png_roundtrip(int color_type, int c, int interlace) {
    int w = 13, h = 11;
    uint8_t *px = pattern_image(w, h, c);
    png_spec s = {w, h, color_type, 8, interlace, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    eng_image img = {0};
    decode_ok(m.data, m.len, &img);
    expect_pixels(&img, w, h, c, px);
    eng_image_free(&img);
    free(m.data);
    free(px);
}

/* Decoding any cut-off prefix must fail cleanly (and with a message). */
static void expect_prefixes_refused(const uint8_t *b, size_t len, const char *what) {
    size_t cuts[96];
    int n = 0;
    for (size_t i = 0; i < 64 && i < len; i++) cuts[n++] = i; /* every header byte */
    for (int k = 1; k <= 20; k++) cuts[n++] = len * k / 21;   /* and through the data */
    cuts[n++] = len - 1;
    for (int i = 0; i < n; i++) {
        eng_err err = {0};
        eng_image img = {0};
        int rc = eng_image_decode(b, cuts[i], NULL, &img, &err);
        cr_assert_eq(rc, -1, "%s cut to %zu of %zu bytes was accepted", what, cuts[i], len);
        cr_assert_null(img.pixels, "%s prefix %zu: failed but left pixels", what, cuts[i]);
        cr_assert_neq(err.msg[0], '\0', "%s prefix %zu: failed without a message", what,
                      cuts[i]);
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------------------------
 * Sniffing */

Test(image, sniff_recognises_each_format_by_its_magic_bytes) {
    const uint8_t jpg[] = {0xff, 0xd8, 0xff, 0xe0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t pgm[] = "P5\n2 2\n255\n";
    cr_expect_eq(eng_image_sniff(jpg, sizeof jpg), ENG_IMG_JPEG, "JPEG SOI not recognised");
    cr_expect_eq(eng_image_sniff(png, sizeof png), ENG_IMG_PNG, "PNG signature not recognised");
    cr_expect_eq(eng_image_sniff(pgm, 11), ENG_IMG_PGM, "P5 not recognised");
    cr_expect_eq(eng_image_sniff(png, 7), ENG_IMG_UNKNOWN, "a cut PNG signature matched");
    cr_expect_eq(eng_image_sniff("P6\n", 3), ENG_IMG_UNKNOWN, "P6 taken for PGM");
    cr_expect_eq(eng_image_sniff(NULL, 0), ENG_IMG_UNKNOWN, "empty input matched");
    cr_expect_str_eq(eng_image_media_type(ENG_IMG_JPEG), "image/jpeg", "JPEG media type");
    cr_expect_str_eq(eng_image_media_type(ENG_IMG_PNG), "image/png", "PNG media type");
    cr_expect_str_eq(eng_image_media_type(ENG_IMG_PGM), "image/x-portable-graymap", "PGM type");
    cr_expect_null(eng_image_media_type(ENG_IMG_UNKNOWN), "unknown has a media type");
}

/* ---------------------------------------------------------------------------------------------
 * PNG */

Test(png, gray_decodes_exactly_to_one_channel) { png_roundtrip(PNG_COLOR_TYPE_GRAY, 1, 0); }

Test(png, gray_alpha_decodes_exactly_to_two_channels) {
    png_roundtrip(PNG_COLOR_TYPE_GRAY_ALPHA, 2, 0);
}

Test(png, rgb_decodes_exactly_to_three_channels) { png_roundtrip(PNG_COLOR_TYPE_RGB, 3, 0); }

Test(png, rgba_decodes_exactly_to_four_channels) { png_roundtrip(PNG_COLOR_TYPE_RGBA, 4, 0); }

Test(png, interlaced_rgb_and_gray_decode_exactly) {
    png_roundtrip(PNG_COLOR_TYPE_RGB, 3, PNG_INTERLACE_ADAM7);
    png_roundtrip(PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_ADAM7);
}

static const png_color PALETTE[4] = {{10, 20, 30}, {200, 100, 0}, {0, 255, 128}, {77, 88, 99}};

static uint8_t palette_index(int x, int y) { return (uint8_t)((x + 2 * y) % 4); }

Test(png, palette_expands_to_rgb) {
    int w = 9, h = 7;
    uint8_t idx[63], want[63 * 3];
    for (int i = 0; i < w * h; i++) {
        idx[i] = palette_index(i % w, i / w);
        want[3 * i] = PALETTE[idx[i]].red;
        want[3 * i + 1] = PALETTE[idx[i]].green;
        want[3 * i + 2] = PALETTE[idx[i]].blue;
    }
    png_spec s = {w, h, PNG_COLOR_TYPE_PALETTE, 8, 0, idx, PALETTE, 4, NULL, 0};
    membuf m = encode_png(&s);
    eng_image img = {0};
    decode_ok(m.data, m.len, &img);
    expect_pixels(&img, w, h, 3, want);
    eng_image_free(&img);
    free(m.data);
}

Test(png, palette_with_trns_expands_to_rgba_with_opaque_default) {
    int w = 9, h = 7;
    const uint8_t trans[2] = {0, 128}; /* entries 2 and 3 are implicitly opaque */
    uint8_t idx[63], want[63 * 4];
    for (int i = 0; i < w * h; i++) {
        idx[i] = palette_index(i % w, i / w);
        want[4 * i] = PALETTE[idx[i]].red;
        want[4 * i + 1] = PALETTE[idx[i]].green;
        want[4 * i + 2] = PALETTE[idx[i]].blue;
        want[4 * i + 3] = idx[i] < 2 ? trans[idx[i]] : 255;
    }
    png_spec s = {w, h, PNG_COLOR_TYPE_PALETTE, 8, 0, idx, PALETTE, 4, trans, 2};
    membuf m = encode_png(&s);
    eng_image img = {0};
    decode_ok(m.data, m.len, &img);
    expect_pixels(&img, w, h, 4, want);
    eng_image_free(&img);
    free(m.data);
}

static uint16_t sample16(int i) { return (uint16_t)(i * 4099u + 7u); }

Test(png, sixteen_bit_gray_and_rgb_round_to_eight_bits) {
    int w = 8, h = 5;
    for (int c = 1; c <= 3; c += 2) {
        int n = w * h * c;
        uint8_t raw[8 * 5 * 3 * 2], want[8 * 5 * 3];
        for (int i = 0; i < n; i++) {
            uint16_t v = sample16(i);
            raw[2 * i] = (uint8_t)(v >> 8);
            raw[2 * i + 1] = (uint8_t)v;
            want[i] = (uint8_t)((v + 128u) / 257u); /* round(v / 257) */
        }
        png_spec s = {w, h, c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, 16, 0, raw,
                      NULL, 0, NULL, 0};
        membuf m = encode_png(&s);
        eng_image img = {0};
        decode_ok(m.data, m.len, &img);
        expect_pixels(&img, w, h, c, want);
        eng_image_free(&img);
        free(m.data);
    }
}

Test(png, one_bit_gray_expands_to_black_and_white) {
    int w = 11, h = 3; /* 11 bits: rows are 2 bytes with padding */
    uint8_t raw[6] = {0}, want[33];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int bit = (x * 3 + y) % 2;
            if (bit) raw[y * 2 + x / 8] |= (uint8_t)(0x80 >> (x % 8));
            want[y * w + x] = bit ? 255 : 0;
        }
    png_spec s = {w, h, PNG_COLOR_TYPE_GRAY, 1, 0, raw, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    eng_image img = {0};
    decode_ok(m.data, m.len, &img);
    expect_pixels(&img, w, h, 1, want);
    eng_image_free(&img);
    free(m.data);
}

Test(png, every_truncated_prefix_is_refused) {
    uint8_t *px = pattern_image(40, 30, 3);
    png_spec s = {40, 30, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    expect_prefixes_refused(m.data, m.len, "png");
    eng_err err = {0};
    eng_image img = {0};
    eng_image_decode(m.data, m.len - 1, NULL, &img, &err);
    cr_expect(strstr(err.msg, "png: truncated") != NULL, "message was \"%s\"", err.msg);
    free(m.data);
    free(px);
}

Test(png, corrupt_pixel_data_is_refused) {
    uint8_t *px = pattern_image(40, 30, 3);
    png_spec s = {40, 30, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    m.data[m.len / 2] ^= 0x5a; /* inside IDAT: its CRC no longer matches */
    eng_err err = {0};
    eng_image img = {0};
    cr_assert_eq(eng_image_decode(m.data, m.len, NULL, &img, &err), -1, "corrupt PNG accepted");
    cr_expect(strncmp(err.msg, "png: ", 5) == 0, "message was \"%s\"", err.msg);
    cr_expect_null(img.pixels, "pixels left behind");
    free(m.data);
    free(px);
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

/* PNG signature and a valid IHDR chunk (8-bit RGB), nothing else. */
static membuf png_header_only(uint32_t w, uint32_t h) {
    membuf m = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    mb_put(&m, sig, 8);
    mb_be32(&m, 13);
    size_t type_at = m.len;
    mb_put(&m, "IHDR", 4);
    mb_be32(&m, w);
    mb_be32(&m, h);
    const uint8_t rest[5] = {8, 2, 0, 0, 0};
    mb_put(&m, rest, 5);
    mb_be32(&m, crc32_of(m.data + type_at, 17));
    return m;
}

Test(png, header_declaring_100000_squared_is_refused_quickly_naming_the_limit) {
    membuf m = png_header_only(100000, 100000);
    eng_err err = {0};
    eng_image img = {0};
    double t0 = now_s();
    int rc = eng_image_decode(m.data, m.len, NULL, &img, &err);
    double dt = now_s() - t0;
    cr_assert_eq(rc, -1, "huge PNG accepted");
    cr_expect(strstr(err.msg, "100000x100000") && strstr(err.msg, "40000000-pixel limit"),
              "message was \"%s\"", err.msg);
    cr_expect_lt(dt, 0.05, "took %.3f s", dt);
    free(m.data);
}

Test(png, header_of_5000_squared_passes_40e6_but_not_1e6) {
    membuf m = png_header_only(5000, 5000);
    eng_err err = {0};
    eng_image img = {0};
    eng_decode_opts o = eng_decode_defaults();
    cr_assert_eq(o.max_pixels, 40000000LL, "default max_pixels is %lld", o.max_pixels);
    cr_assert_eq(eng_image_decode(m.data, m.len, &o, &img, &err), -1, "header-only accepted");
    cr_expect(strstr(err.msg, "limit") == NULL && strstr(err.msg, "truncated") != NULL,
              "with 40e6 the size check should pass and the missing data fail: \"%s\"", err.msg);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "truncated data is the input's fault (code %d)", err.code);
    o.max_pixels = 1000000;
    cr_assert_eq(eng_image_decode(m.data, m.len, &o, &img, &err), -1, "header-only accepted");
    cr_expect(strstr(err.msg, "1000000-pixel limit") != NULL, "message was \"%s\"", err.msg);
    cr_expect_eq(err.code, ERR_TOO_LARGE, "over the pixel limit is too large (code %d)", err.code);
    free(m.data);
}

Test(png, zero_width_is_refused) {
    membuf m = png_header_only(0, 10);
    eng_err err = {0};
    eng_image img = {0};
    cr_assert_eq(eng_image_decode(m.data, m.len, NULL, &img, &err), -1, "0-wide PNG accepted");
    cr_expect(strstr(err.msg, "invalid dimensions") != NULL, "message was \"%s\"", err.msg);
    free(m.data);
}

/* ---------------------------------------------------------------------------------------------
 * JPEG */

/* A smooth image (JPEG's friend) so quality 95 should reproduce it closely. */
static uint8_t *smooth_image(int w, int h, int c) {
    uint8_t *p = malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] = (uint8_t)(20 + x + y + k * 40); /* <= 250 */
    return p;
}

static double mean_abs_error(const uint8_t *a, const uint8_t *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs((int)a[i] - (int)b[i]);
    return s / (double)n;
}

Test(jpeg, rgb_and_gray_decode_within_tolerance_at_quality_95) {
    int w = 64, h = 48;
    for (int c = 1; c <= 3; c += 2) {
        uint8_t *px = smooth_image(w, h, c);
        size_t len;
        uint8_t *jpg = tu_encode_jpeg(px, w, h, c, 95, NULL, 0, &len);
        eng_image img = {0};
        decode_ok(jpg, len, &img);
        cr_assert(img.width == w && img.height == h && img.channels == c,
                  "got %dx%dx%d, want %dx%dx%d", img.width, img.height, img.channels, w, h, c);
        double e = mean_abs_error(img.pixels, px, (size_t)w * h * c);
        cr_expect_lt(e, 3.0, "%d-channel mean abs error %.3f", c, e);
        eng_image_free(&img);
        free(jpg);
        free(px);
    }
}

Test(jpeg, cmyk_is_refused_with_a_clear_message) {
    int w = 16, h = 16;
    uint8_t *px = smooth_image(w, h, 4);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, w, h, 4, 90, NULL, 0, &len);
    eng_err err = {0};
    eng_image img = {0};
    cr_assert_eq(eng_image_decode(jpg, len, NULL, &img, &err), -1, "CMYK accepted");
    cr_expect(strstr(err.msg, "CMYK") != NULL, "message was \"%s\"", err.msg);
    free(jpg);
    free(px);
}

/* APP1 payload "Exif\0\0" + a TIFF header and an IFD0 holding only the orientation tag. */
static size_t exif_payload(uint8_t *d, int orientation, int little_endian) {
    const uint8_t be[] = {'E', 'x', 'i', 'f', 0, 0, 'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                          0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, (uint8_t)orientation, 0, 0,
                          0, 0, 0, 0};
    const uint8_t le[] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0,
                          0x12, 0x01, 3, 0, 1, 0, 0, 0, (uint8_t)orientation, 0, 0, 0,
                          0, 0, 0, 0};
    memcpy(d, little_endian ? le : be, sizeof be);
    return sizeof be;
}

static int is_red(const eng_image *img, int x, int y) {
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    return p[0] > 200 && p[1] < 60 && p[2] < 60;
}

/* 32x16 gray image with a red 8x8 block in the top-left corner, tagged with orientation o. */
static void check_orientation(int o, int little_endian, int want_w, int want_h, int red_x,
                              int red_y) {
    int w = 32, h = 16;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            int red = x < 8 && y < 8;
            p[0] = red ? 255 : 128;
            p[1] = p[2] = red ? 0 : 128;
        }
    uint8_t app1[64];
    size_t n = exif_payload(app1, o, little_endian);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, w, h, 3, 95, app1, n, &len);
    eng_image img = {0};
    decode_ok(jpg, len, &img);
    cr_assert(img.width == want_w && img.height == want_h, "orientation %d: got %dx%d, want %dx%d",
              o, img.width, img.height, want_w, want_h);
    cr_expect(is_red(&img, red_x, red_y), "orientation %d: the corner should be red at (%d,%d)", o,
              red_x, red_y);
    cr_expect(!is_red(&img, want_w - 1 - red_x, want_h - 1 - red_y),
              "orientation %d: the opposite corner should not be red", o);
    eng_image_free(&img);
    free(jpg);
    free(px);
}

Test(jpeg, exif_orientation_1_leaves_the_corner_top_left) { check_orientation(1, 0, 32, 16, 3, 3); }

Test(jpeg, exif_orientation_3_rotates_180_degrees) { check_orientation(3, 0, 32, 16, 28, 12); }

Test(jpeg, exif_orientation_6_rotates_clockwise_and_swaps_sides) {
    check_orientation(6, 0, 16, 32, 12, 3);
    check_orientation(6, 1, 16, 32, 12, 3); /* little-endian TIFF header */
}

Test(jpeg, exif_orientation_8_rotates_counter_clockwise_and_swaps_sides) {
    check_orientation(8, 0, 16, 32, 3, 28);
}

Test(jpeg, every_truncated_prefix_is_refused) {
    uint8_t *px = smooth_image(48, 40, 3);
    uint8_t app1[64];
    size_t n = exif_payload(app1, 6, 0);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, 48, 40, 3, 90, app1, n, &len);
    expect_prefixes_refused(jpg, len, "jpeg");
    eng_err err = {0};
    eng_image img = {0};
    eng_image_decode(jpg, len * 3 / 4, NULL, &img, &err);
    cr_expect(strstr(err.msg, "jpeg: truncated") != NULL, "message was \"%s\"", err.msg);
    free(jpg);
    free(px);
}

Test(jpeg, sof_declaring_65535_squared_is_refused_quickly_naming_the_limit) {
    /* SOF0 stores sides in 16 bits, so 65535 x 65535 is the largest a JPEG can declare. */
    const uint8_t hdr[] = {0xff, 0xd8, 0xff, 0xc0, 0, 17, 8, 0xff, 0xff, 0xff, 0xff, 3,
                           1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1};
    eng_err err = {0};
    eng_image img = {0};
    double t0 = now_s();
    int rc = eng_image_decode(hdr, sizeof hdr, NULL, &img, &err);
    double dt = now_s() - t0;
    cr_assert_eq(rc, -1, "huge JPEG accepted");
    cr_expect(strstr(err.msg, "jpeg: 65535x65535 exceeds the 40000000-pixel limit") != NULL,
              "message was \"%s\"", err.msg);
    cr_expect_lt(dt, 0.05, "took %.3f s", dt);
}

/* ---------------------------------------------------------------------------------------------
 * PGM */

Test(pgm, eight_bit_with_comments_decodes_exactly) {
    const char hdr[] = "P5\n# made by hand\n3 2 # width height\n255\n";
    uint8_t file[64];
    size_t n = strlen(hdr);
    memcpy(file, hdr, n);
    const uint8_t px[6] = {0, 1, 127, 128, 254, 255};
    memcpy(file + n, px, 6);
    eng_image img = {0};
    decode_ok(file, n + 6, &img);
    expect_pixels(&img, 3, 2, 1, px);
    eng_image_free(&img);
}

Test(pgm, small_maxval_is_rescaled_to_full_range) {
    const uint8_t file[] = {'P', '5', ' ', '2', ' ', '2', ' ', '1', '5', '\n', 0, 5, 10, 15};
    const uint8_t want[4] = {0, 85, 170, 255};
    eng_image img = {0};
    decode_ok(file, sizeof file, &img);
    expect_pixels(&img, 2, 2, 1, want);
    eng_image_free(&img);
}

Test(pgm, sixteen_bit_big_endian_rounds_to_eight_bits) {
    const char hdr[] = "P5\n2 2\n65535\n";
    uint8_t file[32];
    size_t n = strlen(hdr);
    memcpy(file, hdr, n);
    const uint16_t v[4] = {0, 257 * 100 + 128, 257 * 100 + 129, 65535};
    const uint8_t want[4] = {0, 100, 101, 255};
    for (int i = 0; i < 4; i++) {
        file[n + 2 * i] = (uint8_t)(v[i] >> 8);
        file[n + 2 * i + 1] = (uint8_t)v[i];
    }
    eng_image img = {0};
    decode_ok(file, n + 8, &img);
    expect_pixels(&img, 2, 2, 1, want);
    eng_image_free(&img);
}

Test(pgm, every_truncated_prefix_and_bad_header_is_refused) {
    const char hdr[] = "P5\n# c\n20 10\n255\n";
    uint8_t file[256];
    size_t n = strlen(hdr);
    memcpy(file, hdr, n);
    for (int i = 0; i < 200; i++) file[n + i] = (uint8_t)i;
    expect_prefixes_refused(file, n + 200, "pgm");
    const char *bad[] = {"P5\n0 10\n255\n", "P5\n10 10\n0\n", "P5\nx 10\n255\n",
                         "P5\n70000 1\n255\n", "P5\n2 1\n255#\n.."};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        eng_err err = {0};
        eng_image img = {0};
        cr_expect_eq(eng_image_decode(bad[i], strlen(bad[i]), NULL, &img, &err), -1,
                     "bad header %zu accepted", i);
        cr_expect(strncmp(err.msg, "pgm: ", 5) == 0, "message was \"%s\"", err.msg);
    }
}

Test(pgm, sample_above_maxval_is_refused) {
    const uint8_t file[] = {'P', '5', ' ', '2', ' ', '1', ' ', '9', '\n', 3, 10};
    eng_err err = {0};
    eng_image img = {0};
    cr_assert_eq(eng_image_decode(file, sizeof file, NULL, &img, &err), -1, "accepted");
    cr_expect(strstr(err.msg, "exceeds maxval") != NULL, "message was \"%s\"", err.msg);
    cr_expect_null(img.pixels, "pixels left behind");
}

/* ---------------------------------------------------------------------------------------------
 * Bad input in general */

Test(image, empty_input_and_wrong_magic_are_refused_with_a_message) {
    eng_err err = {0};
    eng_image img = {0};
    cr_expect_eq(eng_image_decode(NULL, 0, NULL, &img, &err), -1, "NULL accepted");
    cr_expect(strstr(err.msg, "empty") != NULL, "message was \"%s\"", err.msg);
    cr_expect_eq(eng_image_decode("", 0, NULL, &img, &err), -1, "empty accepted");
    const char gif[] = "GIF89a\x01\x00\x01\x00";
    cr_expect_eq(eng_image_decode(gif, sizeof gif - 1, NULL, &img, &err), -1, "GIF accepted");
    cr_expect(strstr(err.msg, "unrecognised format") != NULL, "message was \"%s\"", err.msg);
    cr_expect_null(img.pixels, "pixels left behind");
    eng_decode_opts o = {.max_pixels = 0};
    const uint8_t pgm[] = "P5 1 1 255\n\x07";
    cr_expect_eq(eng_image_decode(pgm, sizeof pgm - 1, &o, &img, &err), -1,
                 "max_pixels 0 accepted");
}

Test(image, free_is_safe_on_a_zeroed_struct_and_twice) {
    eng_image img = {0};
    eng_image_free(&img);
    eng_image_free(NULL);
    eng_err err = {0};
    cr_assert_eq(eng_image_alloc(&img, 3, 2, 3, &err), 0, "%s", err.msg);
    eng_image_free(&img);
    eng_image_free(&img);
    cr_expect_null(img.pixels, "free did not zero the struct");
}

/* ---------------------------------------------------------------------------------------------
 * Convert */

static eng_image make_image(int w, int h, int c, const uint8_t *px) {
    eng_image img;
    eng_err err = {0};
    cr_assert_eq(eng_image_alloc(&img, w, h, c, &err), 0, "%s", err.msg);
    memcpy(img.pixels, px, (size_t)w * h * c);
    return img;
}

Test(convert, rgb_to_gray_uses_rounded_601_luma) {
    const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255,
                           10, 20, 30, 0, 0, 0, 100, 100, 100, 1, 1, 3};
    /* 76.245, 149.685, 29.07, 255, 18.15, 0, 100, 1.228 */
    const uint8_t want[] = {76, 150, 29, 255, 18, 0, 100, 1};
    eng_image in = make_image(8, 1, 3, rgb), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_convert(&in, 1, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 8, 1, 1, want);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(convert, rgba_to_gray_drops_alpha_without_compositing) {
    const uint8_t rgba[] = {255, 0, 0, 0, 0, 255, 0, 17};
    const uint8_t want[] = {76, 150};
    eng_image in = make_image(2, 1, 4, rgba), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_convert(&in, 1, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 2, 1, 1, want);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(convert, gray_and_gray_alpha_to_rgb_replicate) {
    const uint8_t ga[] = {0, 9, 77, 200, 255, 0};
    const uint8_t want[] = {0, 0, 0, 77, 77, 77, 255, 255, 255};
    eng_image in = make_image(3, 1, 2, ga), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_convert(&in, 3, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 3, 1, 3, want);
    eng_image_free(&out);
    eng_image_free(&in);
    const uint8_t g[] = {5, 6};
    const uint8_t want_g[] = {5, 5, 5, 6, 6, 6};
    in = make_image(1, 2, 1, g);
    cr_assert_eq(eng_image_convert(&in, 3, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 1, 2, 3, want_g);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(convert, rgba_to_rgb_drops_alpha_and_bad_targets_are_refused) {
    const uint8_t rgba[] = {1, 2, 3, 4, 5, 6, 7, 8};
    const uint8_t want[] = {1, 2, 3, 5, 6, 7};
    eng_image in = make_image(2, 1, 4, rgba), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_convert(&in, 3, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 2, 1, 3, want);
    eng_image_free(&out);
    cr_expect_eq(eng_image_convert(&in, 4, &out, &err), -1, "4 channels accepted as a target");
    cr_expect_null(out.pixels, "pixels left behind");
    eng_image empty = {0};
    cr_expect_eq(eng_image_convert(&empty, 1, &out, &err), -1, "empty input accepted");
    eng_image_free(&in);
}

/* ---------------------------------------------------------------------------------------------
 * Downscale */

Test(downscale, shorter_side_becomes_max_side_keeping_aspect) {
    eng_err err = {0};
    eng_image in, out;
    cr_assert_eq(eng_image_alloc(&in, 300, 200, 3, &err), 0, "%s", err.msg);
    memset(in.pixels, 0, 300 * 200 * 3);
    cr_assert_eq(eng_image_downscale(&in, 100, &out, &err), 0, "%s", err.msg);
    cr_expect(out.width == 150 && out.height == 100 && out.channels == 3, "got %dx%dx%d",
              out.width, out.height, out.channels);
    eng_image_free(&out);
    eng_image_free(&in);
    cr_assert_eq(eng_image_alloc(&in, 97, 331, 1, &err), 0, "%s", err.msg);
    memset(in.pixels, 0, 97 * 331);
    cr_assert_eq(eng_image_downscale(&in, 64, &out, &err), 0, "%s", err.msg);
    cr_expect(out.width == 64 && out.height == 218, "got %dx%d, want 64x218 (331*64/97=218.4)",
              out.width, out.height);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(downscale, constant_image_stays_constant) {
    eng_err err = {0};
    eng_image in, out;
    cr_assert_eq(eng_image_alloc(&in, 173, 129, 4, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 173 * 129; i++) memcpy(in.pixels + 4 * i, "\x07\x80\xfe\xff", 4);
    cr_assert_eq(eng_image_downscale(&in, 50, &out, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < (size_t)out.width * out.height; i++)
        cr_assert(memcmp(out.pixels + 4 * i, "\x07\x80\xfe\xff", 4) == 0,
                  "pixel %zu changed to %u %u %u %u", i, out.pixels[4 * i], out.pixels[4 * i + 1],
                  out.pixels[4 * i + 2], out.pixels[4 * i + 3]);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(downscale, checker_box_averages_to_its_mean) {
    const uint8_t checker[] = {0, 255, 255, 0};
    eng_image in = make_image(2, 2, 1, checker), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_downscale(&in, 1, &out, &err), 0, "%s", err.msg);
    const uint8_t want[] = {128}; /* 127.5 rounds half up */
    expect_pixels(&out, 1, 1, 1, want);
    eng_image_free(&out);
    eng_image_free(&in);
    /* 3x3 -> 2x2: each output covers 1.5x1.5 source pixels; a lone bright center pixel
     * contributes 0.25 of its area to each output: 200 * 0.25 / 2.25 = 22.2. */
    const uint8_t dot[] = {0, 0, 0, 0, 200, 0, 0, 0, 0};
    const uint8_t want_dot[] = {22, 22, 22, 22};
    in = make_image(3, 3, 1, dot);
    cr_assert_eq(eng_image_downscale(&in, 2, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 2, 2, 1, want_dot);
    eng_image_free(&out);
    eng_image_free(&in);
}

Test(downscale, small_images_are_copied_and_bad_max_side_is_refused) {
    uint8_t *px = pattern_image(20, 30, 3);
    eng_image in = make_image(20, 30, 3, px), out;
    eng_err err = {0};
    cr_assert_eq(eng_image_downscale(&in, 20, &out, &err), 0, "%s", err.msg);
    expect_pixels(&out, 20, 30, 3, px);
    cr_expect_neq(out.pixels, in.pixels, "the copy shares the input's pixels");
    eng_image_free(&out);
    cr_expect_eq(eng_image_downscale(&in, 0, &out, &err), -1, "max_side 0 accepted");
    cr_expect_null(out.pixels, "pixels left behind");
    eng_image_free(&in);
    free(px);
}

/* ---------------------------------------------------------------------------------------------
 * IDX */

static membuf idx_images(uint32_t n, uint32_t rows, uint32_t cols, size_t payload) {
    membuf m = {0};
    mb_be32(&m, 0x00000803);
    mb_be32(&m, n);
    mb_be32(&m, rows);
    mb_be32(&m, cols);
    for (size_t i = 0; i < payload; i++) {
        uint8_t b = (uint8_t)(i * 7);
        mb_put(&m, &b, 1);
    }
    return m;
}

Test(idx, images_parse_without_copying_and_extract_as_gray) {
    membuf m = idx_images(3, 4, 5, 60);
    eng_idx idx;
    eng_err err = {0};
    cr_assert_eq(eng_idx_parse(m.data, m.len, &idx, &err), 0, "%s", err.msg);
    cr_expect(idx.kind == ENG_IDX_IMAGES && idx.count == 3 && idx.rows == 4 && idx.cols == 5,
              "got kind %d count %zu %dx%d", idx.kind, idx.count, idx.rows, idx.cols);
    cr_expect_eq(idx.data, m.data + 16, "data should point into the caller's buffer");
    eng_image img;
    cr_assert_eq(eng_idx_image(&idx, 2, &img, &err), 0, "%s", err.msg);
    expect_pixels(&img, 5, 4, 1, m.data + 16 + 40);
    eng_image_free(&img);
    cr_expect_eq(eng_idx_image(&idx, 3, &img, &err), -1, "image 3 of 3 accepted");
    cr_expect_null(img.pixels, "pixels left behind");
    free(m.data);
}

Test(idx, labels_parse) {
    const uint8_t file[] = {0, 0, 8, 1, 0, 0, 0, 4, 9, 0, 3, 7};
    eng_idx idx;
    eng_err err = {0};
    cr_assert_eq(eng_idx_parse(file, sizeof file, &idx, &err), 0, "%s", err.msg);
    cr_expect(idx.kind == ENG_IDX_LABELS && idx.count == 4 && idx.data == file + 8,
              "got kind %d count %zu", idx.kind, idx.count);
    cr_expect_eq(idx.data[3], 7, "last label");
    eng_image img;
    cr_expect_eq(eng_idx_image(&idx, 0, &img, &err), -1, "image taken from a labels file");
}

Test(idx, truncated_bad_magic_and_overflowing_dims_are_refused) {
    eng_idx idx;
    eng_err err = {0};
    membuf m = idx_images(3, 4, 5, 59);
    cr_expect_eq(eng_idx_parse(m.data, m.len, &idx, &err), -1, "short payload accepted");
    cr_expect(strstr(err.msg, "truncated") != NULL, "message was \"%s\"", err.msg);
    cr_expect_null(idx.data, "out not zeroed");
    for (size_t cut = 0; cut < 16; cut++)
        cr_expect_eq(eng_idx_parse(m.data, cut, &idx, &err), -1, "header cut at %zu accepted",
                     cut);
    free(m.data);
    m = idx_images(3, 4, 5, 61);
    cr_expect_eq(eng_idx_parse(m.data, m.len, &idx, &err), -1, "trailing byte accepted");
    free(m.data);
    m = idx_images(0xffffffffu, 65535, 65535, 10);
    cr_expect_eq(eng_idx_parse(m.data, m.len, &idx, &err), -1, "overflowing dims accepted");
    free(m.data);
    m = idx_images(1, 70000, 1, 70000);
    cr_expect_eq(eng_idx_parse(m.data, m.len, &idx, &err), -1, "70000 rows accepted");
    free(m.data);
    m = idx_images(1, 0, 5, 0);
    cr_expect_eq(eng_idx_parse(m.data, m.len, &idx, &err), -1, "0 rows accepted");
    free(m.data);
    const uint8_t bad[][8] = {{1, 0, 8, 1, 0, 0, 0, 0}, {0, 0, 0x0d, 1, 0, 0, 0, 0},
                              {0, 0, 8, 2, 0, 0, 0, 0}};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(eng_idx_parse(bad[i], 8, &idx, &err), -1, "bad magic %d accepted", i);
        cr_expect(strncmp(err.msg, "idx: ", 5) == 0, "message was \"%s\"", err.msg);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Robustness */

/* Flips one byte at a time across the file: every decode must either succeed or fail with a
 * message, and never crash or leak (the ASan build checks the latter). */
static void flip_bytes_everywhere(const uint8_t *b, size_t len, const char *what) {
    uint8_t *copy = malloc(len);
    for (size_t i = 0; i < len; i += 1 + len / 150) {
        memcpy(copy, b, len);
        copy[i] ^= (uint8_t)(0x55 + i);
        eng_err err = {0};
        eng_image img = {0};
        int rc = eng_image_decode(copy, len, NULL, &img, &err);
        if (rc == 0)
            cr_assert(img.pixels && img.width > 0 && img.height > 0, "%s flip at %zu: empty", what,
                      i);
        else
            cr_assert(err.msg[0] != '\0' && !img.pixels, "%s flip at %zu: bad failure", what, i);
        eng_image_free(&img);
    }
    free(copy);
}

Test(image, corrupted_bytes_never_crash_any_decoder) {
    uint8_t *px = pattern_image(24, 20, 3);
    png_spec s = {24, 20, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    flip_bytes_everywhere(m.data, m.len, "png");
    free(m.data);
    uint8_t app1[64];
    size_t n = exif_payload(app1, 8, 1);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, 24, 20, 3, 90, app1, n, &len);
    flip_bytes_everywhere(jpg, len, "jpeg");
    free(jpg);
    const char hdr[] = "P5\n24 20\n255\n";
    membuf p = {0};
    mb_put(&p, hdr, strlen(hdr));
    mb_put(&p, px, 24 * 20);
    flip_bytes_everywhere(p.data, p.len, "pgm");
    free(p.data);
    free(px);
}

Test(image, bytes_after_the_end_marker_are_ignored) {
    uint8_t *px = pattern_image(16, 8, 3);
    png_spec s = {16, 8, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    mb_put(&m, "trailing", 8);
    eng_image img = {0};
    decode_ok(m.data, m.len, &img);
    expect_pixels(&img, 16, 8, 3, px);
    eng_image_free(&img);
    free(m.data);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, 16, 8, 3, 90, NULL, 0, &len);
    membuf j = {0};
    mb_put(&j, jpg, len);
    mb_put(&j, "trailing", 8);
    decode_ok(j.data, j.len, &img);
    cr_expect(img.width == 16 && img.height == 8, "got %dx%d", img.width, img.height);
    eng_image_free(&img);
    free(j.data);
    free(jpg);
    free(px);
}

/* ---------------------------------------------------------------------------------------------
 * Reduced decodes (eng_decode_opts.min_side): what the training copy and thumbnails decode */

static int decode_reduced(const void *b, size_t len, int min_side, eng_image *img,
                          eng_decode_info *info, eng_err *err) {
    eng_decode_opts o = eng_decode_defaults();
    o.min_side = min_side;
    return eng_image_decode_info(b, len, &o, img, info, err);
}

/* The d x d block means of a pattern, partial blocks over the pixels they hold, rounded half up:
 * computed here from the pattern itself, not through any decoder. */
static uint8_t block_mean(int w, int h, int c, int d, int ox, int oy, int k) {
    unsigned sum = 0, n = 0;
    for (int y = oy * d; y < (oy + 1) * d && y < h; y++)
        for (int x = ox * d; x < (ox + 1) * d && x < w; x++, n++) sum += pattern(x, y, k);
    return (uint8_t)((sum + n / 2) / n);
}

Test(reduced, png_decodes_row_by_row_into_block_means_with_partial_edges) {
    int w = 103, h = 77, c = 3; /* neither side a multiple of 8 or 4 */
    uint8_t *px = pattern_image(w, h, c);
    png_spec s = {w, h, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    const int min_sides[] = {10, 20, 39}, want_d[] = {8, 4, 2};
    for (int t = 0; t < 3; t++) {
        eng_image img = {0};
        eng_decode_info info;
        eng_err err = {0};
        cr_assert_eq(decode_reduced(m.data, m.len, min_sides[t], &img, &info, &err), 0, "%s",
                     err.msg);
        int d = want_d[t], ow = (w + d - 1) / d, oh = (h + d - 1) / d;
        cr_assert(info.width == w && info.height == h && info.reduction == d,
                  "min_side %d: info %dx%d /%d, want %dx%d /%d", min_sides[t], info.width,
                  info.height, info.reduction, w, h, d);
        cr_assert(img.width == ow && img.height == oh && img.channels == c,
                  "min_side %d: %dx%dx%d, want %dx%dx%d", min_sides[t], img.width, img.height,
                  img.channels, ow, oh, c);
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int k = 0; k < c; k++) {
                    uint8_t got = img.pixels[((size_t)y * ow + x) * c + k];
                    uint8_t want = block_mean(w, h, c, d, x, y, k);
                    cr_assert_eq(got, want, "d=%d (%d,%d) ch %d: %u, want %u", d, x, y, k, got,
                                 want);
                }
        eng_image_free(&img);
    }
    free(m.data);
    free(px);
}

Test(reduced, png_block_means_equal_the_box_downscale_of_the_full_decode) {
    int w = 96, h = 64; /* multiples of 8: both are exact area averages */
    uint8_t *px = pattern_image(w, h, 1);
    png_spec s = {w, h, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    eng_image full = {0}, small = {0}, reduced = {0};
    eng_err err = {0};
    decode_ok(m.data, m.len, &full);
    cr_assert_eq(eng_image_downscale(&full, 8, &small, &err), 0, "%s", err.msg);
    cr_assert_eq(decode_reduced(m.data, m.len, 8, &reduced, NULL, &err), 0, "%s", err.msg);
    expect_pixels(&reduced, small.width, small.height, 1, small.pixels);
    eng_image_free(&full);
    eng_image_free(&small);
    eng_image_free(&reduced);
    free(m.data);
    free(px);
}

Test(reduced, interlaced_png_and_small_images_decode_at_full_size) {
    int w = 40, h = 40;
    uint8_t *px = pattern_image(w, h, 3);
    for (int interlace = 0; interlace < 2; interlace++) {
        png_spec s = {w, h, PNG_COLOR_TYPE_RGB, 8, interlace, px, NULL, 0, NULL, 0};
        membuf m = encode_png(&s);
        /* interlaced: passes need the whole raster; not interlaced: 40/2 < 21 */
        eng_image img = {0};
        eng_decode_info info;
        eng_err err = {0};
        cr_assert_eq(decode_reduced(m.data, m.len, interlace ? 5 : 21, &img, &info, &err), 0,
                     "%s", err.msg);
        cr_expect_eq(info.reduction, 1, "interlace %d: reduction %d", interlace, info.reduction);
        expect_pixels(&img, w, h, 3, px);
        eng_image_free(&img);
        free(m.data);
    }
    free(px);
}

Test(reduced, truncated_png_is_refused_by_the_row_by_row_decoder) {
    int w = 64, h = 64;
    uint8_t *px = pattern_image(w, h, 3);
    png_spec s = {w, h, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    for (size_t cut = 8; cut < m.len; cut += m.len / 37 + 1) {
        eng_image img = {0};
        eng_decode_info info = {1, 1, 1};
        eng_err err = {0};
        cr_assert_neq(decode_reduced(m.data, cut, 8, &img, &info, &err), 0,
                      "a %zu-byte prefix of %zu decoded", cut, m.len);
        cr_expect(img.pixels == NULL && info.width == 0, "a refusal left pixels or info");
        cr_expect(strncmp(err.msg, "png: ", 5) == 0, "message \"%s\"", err.msg);
    }
    free(m.data);
    free(px);
}

Test(reduced, jpeg_dct_scaling_stays_close_to_the_box_downscale_of_the_full_decode) {
    int w = 800, h = 600;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++) /* smooth, with structure at every scale above 8 pixels */
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++)
                px[((size_t)y * w + x) * 3 + k] =
                    (uint8_t)(128 + 60 * sin(x / (17.0 + 9 * k)) * cos(y / 23.0) + (x * y) % 11);
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, w, h, 3, 92, NULL, 0, &len);
    eng_image full = {0}, box = {0}, reduced = {0};
    eng_decode_info info;
    eng_err err = {0};
    decode_ok(jpg, len, &full);
    cr_assert_eq(decode_reduced(jpg, len, 64, &reduced, &info, &err), 0, "%s", err.msg);
    cr_assert(info.width == w && info.height == h && info.reduction == 8,
              "info %dx%d /%d, want %dx%d /8", info.width, info.height, info.reduction, w, h);
    cr_assert(reduced.width == 100 && reduced.height == 75, "reduced to %dx%d, want 100x75",
              reduced.width, reduced.height);
    cr_assert_eq(eng_image_downscale(&full, 75, &box, &err), 0, "%s", err.msg);
    cr_assert(box.width == 100 && box.height == 75, "box %dx%d", box.width, box.height);
    double e = mean_abs_error(reduced.pixels, box.pixels, (size_t)100 * 75 * 3);
    cr_expect_lt(e, 1.5, "mean abs difference %.3f levels between 1/8 DCT and box filter", e);
    cr_expect_gt(e, 0.0, "the two paths should not be the same code");
    eng_image_free(&full);
    eng_image_free(&box);
    eng_image_free(&reduced);
    free(jpg);
    free(px);
}

Test(reduced, jpeg_info_gives_the_oriented_full_size) {
    int w = 64, h = 32;
    uint8_t *px = smooth_image(w, h, 3);
    uint8_t app1[64];
    size_t n = exif_payload(app1, 6, 0); /* a quarter turn */
    size_t len;
    uint8_t *jpg = tu_encode_jpeg(px, w, h, 3, 90, app1, n, &len);
    eng_image img = {0};
    eng_decode_info info;
    eng_err err = {0};
    cr_assert_eq(decode_reduced(jpg, len, 8, &img, &info, &err), 0, "%s", err.msg);
    cr_expect(info.width == 32 && info.height == 64 && info.reduction == 4,
              "info %dx%d /%d, want 32x64 /4", info.width, info.height, info.reduction);
    cr_expect(img.width == 8 && img.height == 16, "pixels %dx%d, want 8x16", img.width,
              img.height);
    eng_image_free(&img);
    free(jpg);
    free(px);
}

Test(reduced, train_copy_decode_matches_decode_then_copy_when_nothing_is_reduced) {
    int w = 90, h = 70; /* 70 < 2 x 64: no reduction, so the copies must be identical */
    uint8_t *px = pattern_image(w, h, 3);
    png_spec s = {w, h, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, px, NULL, 0, NULL, 0};
    membuf m = encode_png(&s);
    eng_image full = {0}, want = {0}, got = {0};
    eng_decode_info info;
    eng_err err = {0};
    decode_ok(m.data, m.len, &full);
    cr_assert_eq(eng_train_copy_make(&full, 1, 64, &want, &err), 0, "%s", err.msg);
    cr_assert_eq(eng_train_copy_decode(m.data, m.len, 1000000, 1, 64, &got, &info, &err), 0,
                 "%s", err.msg);
    cr_expect(info.width == w && info.height == h && info.reduction == 1, "info %dx%d /%d",
              info.width, info.height, info.reduction);
    expect_pixels(&got, want.width, want.height, 1, want.pixels);
    eng_image_free(&got);
    cr_assert_neq(eng_train_copy_decode(m.data, m.len, 100, 1, 64, &got, NULL, &err), 0,
                  "the pixel limit was not applied");
    eng_image_free(&full);
    eng_image_free(&want);
    free(m.data);
    free(px);
}
