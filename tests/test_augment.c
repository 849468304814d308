/* test_augment.c — the augmentation pipeline: each transform on known content, the crop sampler's
 * bounds, whole views with randomness switched off, seeding and thread-independence of batches,
 * per-view transform rates, and the prefetcher's ordering, error reporting and shutdown. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eng_augment.h"
#include "eng_prefetch.h"
#include "test_util.h"

/* An owned 8-bit HWC image. */
typedef struct img8 {
    eng_aug_src src;
    uint8_t *buf;
} img8;

/* Deterministic non-trivial content: each channel a different mix of x, y and a hash. */
static img8 make_img(int w, int h, int c, unsigned salt) {
    img8 m;
    m.buf = malloc((size_t)w * h * c);
    cr_assert(m.buf);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                unsigned v = (unsigned)(x * 7 + y * 13 + k * 50) + salt * 31u;
                v ^= (unsigned)(x * y + k) * 2654435761u >> 27;
                m.buf[((size_t)y * w + x) * c + k] = (uint8_t)(v & 255u);
            }
    m.src = (eng_aug_src){.width = w, .height = h, .channels = c, .pixels = m.buf};
    return m;
}

static img8 make_const_img(int w, int h, int c, uint8_t value) {
    img8 m;
    m.buf = malloc((size_t)w * h * c);
    cr_assert(m.buf);
    memset(m.buf, value, (size_t)w * h * c);
    m.src = (eng_aug_src){.width = w, .height = h, .channels = c, .pixels = m.buf};
    return m;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

/* A config with every random choice switched off: whole-image crop, no colour or blur. */
static eng_aug_cfg quiet_cfg(int size, int channels) {
    eng_aug_cfg c = eng_aug_defaults(size, channels);
    c.scale_min = c.scale_max = 1.0;
    c.ratio_min = c.ratio_max = 1.0;
    c.flip_p = c.jitter_p = c.gray_p = 0.0;
    c.blur_p[0] = c.blur_p[1] = 0.0;
    c.solarize_p[0] = c.solarize_p[1] = 0.0;
    return c;
}

/* ---- single transforms ---- */

Test(augment, flip_moves_a_known_pixel_to_the_mirrored_column) {
    enum { C = 3, H = 4, W = 5 };
    float x[C * H * W] = {0};
    x[1 * H * W + 2 * W + 1] = 0.75f; /* channel 1, row 2, column 1 */
    eng_aug_hflip(x, C, H, W);
    for (int i = 0; i < C * H * W; i++) {
        float want = i == 1 * H * W + 2 * W + (W - 1 - 1) ? 0.75f : 0.0f;
        cr_assert_eq(x[i], want, "index %d: %g", i, x[i]);
    }
    eng_aug_hflip(x, C, H, W);
    cr_assert_eq(x[1 * H * W + 2 * W + 1], 0.75f, "flipping twice restores the image");
}

Test(augment, crop_params_stay_inside_the_image_and_within_scale_and_ratio_bounds) {
    eng_aug_cfg cfg = eng_aug_defaults(32, 3);
    eng_rng rng;
    eng_rng_seed(&rng, 42);
    const int W = 96, H = 72;
    double area = (double)W * H;
    int fallbacks = 0, touch_left = 0, touch_right = 0, touch_bottom = 0;
    double min_frac = 1.0, max_frac = 0.0;
    for (int t = 0; t < 10000; t++) {
        eng_aug_box b;
        eng_aug_crop_params(&cfg, W, H, &rng, &b);
        cr_assert(b.x >= 0 && b.y >= 0 && b.w >= 1 && b.h >= 1, "draw %d", t);
        cr_assert(b.x + b.w <= W && b.y + b.h <= H, "draw %d: box %d,%d %dx%d", t, b.x, b.y,
                  b.w, b.h);
        if (b.fallback) {
            fallbacks++;
            continue;
        }
        /* Rounding moves each side by at most half a pixel. */
        cr_assert((b.w + 0.5) * (b.h + 0.5) >= cfg.scale_min * area - 1e-9, "draw %d too small", t);
        cr_assert((b.w - 0.5) * (b.h - 0.5) <= cfg.scale_max * area + 1e-9, "draw %d too big", t);
        cr_assert((b.w + 0.5) / (b.h - 0.5) >= cfg.ratio_min, "draw %d too narrow", t);
        cr_assert((b.w - 0.5) / (b.h + 0.5) <= cfg.ratio_max, "draw %d too wide", t);
        touch_left += b.x == 0;
        touch_right += b.x + b.w == W;
        touch_bottom += b.y + b.h == H;
        double frac = b.w * b.h / area;
        min_frac = fmin(min_frac, frac);
        max_frac = fmax(max_frac, frac);
    }
    /* The draws cover the range and the fallback is rare for a 4:3 image. */
    cr_assert(min_frac < 0.23 && max_frac > 0.9, "fractions %g..%g", min_frac, max_frac);
    cr_assert(fallbacks < 100, "%d fallbacks", fallbacks);
    /* Offsets are uniform over every valid position, the last one included. */
    cr_assert(touch_left > 0 && touch_right > 0 && touch_bottom > 0);
}

Test(augment, crop_params_fall_back_to_the_ratio_clamped_centre_crop) {
    eng_aug_cfg cfg = eng_aug_defaults(32, 3);
    eng_rng rng;
    eng_rng_seed(&rng, 7);
    /* 100x10: every attempt needs h > 10, so all 10 fail. */
    eng_aug_box b;
    eng_aug_crop_params(&cfg, 100, 10, &rng, &b);
    cr_assert_eq(b.fallback, 1);
    cr_assert_eq(b.h, 10);
    cr_assert_eq(b.w, 13); /* round(10 · 4/3) */
    cr_assert_eq(b.x, (100 - 13) / 2);
    cr_assert_eq(b.y, 0);
    /* A ratio range containing the image's ratio keeps the whole image. */
    cfg.scale_min = cfg.scale_max = 1.0;
    cfg.ratio_min = cfg.ratio_max = 1.0;
    eng_aug_crop_params(&cfg, 20, 20, &rng, &b);
    cr_assert(b.x == 0 && b.y == 0 && b.w == 20 && b.h == 20);
}

Test(augment, resized_crop_of_the_whole_image_at_the_same_size_is_the_identity) {
    eng_err err = {0};
    img8 m = make_img(16, 16, 3, 1);
    float out[3 * 16 * 16];
    eng_aug_box box = {0, 0, 16, 16, 0};
    cr_assert(eng_aug_resized_crop(&m.src, &box, 16, out, &err) == 0, "%s", err.msg);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++)
            for (int k = 0; k < 3; k++) {
                float want = m.buf[(y * 16 + x) * 3 + k] / 255.0f;
                cr_assert(fabsf(out[k * 256 + y * 16 + x] - want) <= 1e-6f, "(%d,%d,%d)", x, y, k);
            }
    free(m.buf);
}

Test(augment, resized_crop_of_a_constant_image_is_constant) {
    eng_err err = {0};
    img8 m = make_const_img(37, 23, 3, 200);
    float out[3 * 20 * 20];
    eng_aug_box box = {3, 2, 31, 17, 0};
    cr_assert(eng_aug_resized_crop(&m.src, &box, 20, out, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 3 * 20 * 20; i++)
        cr_assert(fabsf(out[i] - 200.0f / 255.0f) <= 1e-6f, "index %d: %g", i, out[i]);
    free(m.buf);
}

Test(augment, resized_crop_rejects_a_box_outside_the_image) {
    eng_err err = {0};
    img8 m = make_const_img(10, 10, 1, 5);
    float out[16];
    eng_aug_box box = {5, 0, 6, 4, 0};
    cr_assert(eng_aug_resized_crop(&m.src, &box, 4, out, &err) == -1);
    cr_assert(strstr(err.msg, "outside") != NULL, "%s", err.msg);
    free(m.buf);
}

Test(augment, bilinear_resize_of_a_linear_ramp_stays_a_linear_ramp_in_the_interior) {
    eng_err err = {0};
    /* Horizontal ramp 4·x (downscaled 1.5×) and vertical ramp 3·y (upscaled 2×). */
    enum { W = 32, H = 12 };
    uint8_t buf[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            buf[(y * W + x) * 3 + 0] = (uint8_t)(4 * x);
            buf[(y * W + x) * 3 + 1] = (uint8_t)(3 * y);
            buf[(y * W + x) * 3 + 2] = 9;
        }
    eng_aug_src src = {W, H, 3, buf};
    /* Box 24 wide → 16 columns: source x = 4 + (o + 0.5)·1.5 − 0.5, never clamped. */
    eng_aug_box box = {4, 2, 24, 8, 0};
    enum { S = 16 };
    float out[3 * S * S];
    cr_assert(eng_aug_resized_crop(&src, &box, S, out, &err) == 0, "%s", err.msg);
    for (int oy = 0; oy < S; oy++)
        for (int ox = 0; ox < S; ox++) {
            double sx = 4 + (ox + 0.5) * 1.5 - 0.5;
            cr_assert(fabs(out[oy * S + ox] - 4 * sx / 255.0) < 1e-5, "x ramp at (%d,%d)", ox, oy);
        }
    /* Rows: source y = 2 + (o + 0.5)·0.5 − 0.5, clamped to [2, 9] only at the first and last
     * output row; in between the ramp is exact with slope 3·0.5 per output row. */
    for (int oy = 1; oy < S - 1; oy++)
        for (int ox = 0; ox < S; ox++) {
            double sy = 2 + (oy + 0.5) * 0.5 - 0.5;
            cr_assert(fabs(out[S * S + oy * S + ox] - 3 * sy / 255.0) < 1e-5, "y ramp at %d", oy);
        }
    cr_assert(fabs(out[S * S] - 6 / 255.0) < 1e-6, "first row clamps to the box edge");
    cr_assert(fabs(out[S * S + (S - 1) * S] - 27 / 255.0) < 1e-6, "last row clamps");
}

Test(augment, brightness_factor_scales_values_and_clamps_to_the_unit_range) {
    float x[4] = {0.0f, 0.2f, 0.5f, 0.9f};
    eng_aug_brightness(x, 1, 2, 2, 1.5f);
    cr_assert_float_eq(x[0], 0.0f, 1e-7);
    cr_assert_float_eq(x[1], 0.3f, 1e-6);
    cr_assert_float_eq(x[2], 0.75f, 1e-6);
    cr_assert_eq(x[3], 1.0f, "0.9 · 1.5 clamps to 1");
    float y[2] = {0.4f, 0.8f};
    eng_aug_brightness(y, 1, 1, 2, 0.5f);
    cr_assert_float_eq(y[0], 0.2f, 1e-6);
    cr_assert_float_eq(y[1], 0.4f, 1e-6);
}

Test(augment, contrast_zero_gives_the_gray_mean_everywhere) {
    /* Two RGB pixels: luma 0.299 and 0.114, mean 0.2065. */
    float x[6] = {1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f}; /* R plane, G plane, B plane */
    eng_aug_contrast(x, 3, 1, 2, 0.0f);
    for (int i = 0; i < 6; i++) cr_assert_float_eq(x[i], 0.2065f, 1e-6, "index %d", i);
    /* Gray: the mean of the image itself; factor 2 pushes away from it and clamps. */
    float g[4] = {0.1f, 0.3f, 0.5f, 0.7f};
    eng_aug_contrast(g, 1, 2, 2, 2.0f);
    float want[4] = {0.0f, 0.2f, 0.6f, 1.0f};
    for (int i = 0; i < 4; i++) cr_assert_float_eq(g[i], want[i], 1e-6, "gray index %d", i);
}

Test(augment, saturation_zero_equals_grayscale) {
    enum { P = 8 * 8 };
    float a[3 * P], b[3 * P];
    for (int i = 0; i < 3 * P; i++) a[i] = b[i] = (float)((i * 37) % 101) / 100.0f;
    eng_aug_saturation(a, 3, 8, 8, 0.0f);
    eng_aug_grayscale(b, 3, 8, 8);
    cr_assert(max_abs_diff(a, b, 3 * P) <= 1e-6f);
    /* Factor 1 changes nothing. */
    float c[3 * P], d[3 * P];
    for (int i = 0; i < 3 * P; i++) c[i] = d[i] = (float)((i * 53) % 97) / 96.0f;
    eng_aug_saturation(c, 3, 8, 8, 1.0f);
    cr_assert(max_abs_diff(c, d, 3 * P) <= 1e-6f);
}

Test(augment, hue_shift_zero_is_the_identity) {
    enum { P = 10 * 10 };
    float a[3 * P], b[3 * P];
    for (int i = 0; i < 3 * P; i++) a[i] = b[i] = (float)((i * 29) % 83) / 82.0f;
    eng_aug_hue(a, 3, 10, 10, 0.0f);
    cr_assert(max_abs_diff(a, b, 3 * P) <= 2e-6f, "diff %g", max_abs_diff(a, b, 3 * P));
}

Test(augment, hue_shift_of_pure_red_by_a_third_gives_green) {
    float x[3] = {1.0f, 0.0f, 0.0f};
    eng_aug_hue(x, 3, 1, 1, 1.0f / 3.0f);
    cr_assert(fabsf(x[0]) < 1e-5f && fabsf(x[1] - 1.0f) < 1e-5f && fabsf(x[2]) < 1e-5f,
              "got (%g, %g, %g)", x[0], x[1], x[2]);
    /* And a shift of −1/3 gives blue. */
    float y[3] = {1.0f, 0.0f, 0.0f};
    eng_aug_hue(y, 3, 1, 1, -1.0f / 3.0f);
    cr_assert(fabsf(y[0]) < 1e-5f && fabsf(y[1]) < 1e-5f && fabsf(y[2] - 1.0f) < 1e-5f,
              "got (%g, %g, %g)", y[0], y[1], y[2]);
}

Test(augment, grayscale_uses_the_stated_luma_weights) {
    float x[3 * 3] = {1, 0, 0, 0, 1, 0, 0, 0, 1}; /* pixels: red, green, blue (planes R, G, B) */
    eng_aug_grayscale(x, 3, 1, 3);
    float want[3] = {0.299f, 0.587f, 0.114f};
    for (int p = 0; p < 3; p++)
        for (int k = 0; k < 3; k++)
            cr_assert_float_eq(x[k * 3 + p], want[p], 1e-6, "pixel %d channel %d", p, k);
    float g[2] = {0.3f, 0.6f};
    eng_aug_grayscale(g, 1, 1, 2);
    cr_assert(g[0] == 0.3f && g[1] == 0.6f, "a gray image is left alone");
}

Test(augment, gaussian_blur_preserves_a_constant_image) {
    enum { C = 3, H = 9, W = 11 };
    float x[C * H * W];
    for (int i = 0; i < C * H * W; i++) x[i] = 0.25f + 0.25f * (float)(i / (H * W));
    double sigma = 1.7; /* radius 6, wider than half the image: reflection wraps */
    float *tmp = malloc(sizeof(float) * eng_aug_blur_scratch_floats(H, W, sigma));
    eng_aug_gaussian_blur(x, C, H, W, sigma, tmp);
    for (int i = 0; i < C * H * W; i++)
        cr_assert_float_eq(x[i], 0.25f + 0.25f * (float)(i / (H * W)), 1e-6, "index %d", i);
    free(tmp);
}

Test(augment, gaussian_blur_keeps_the_sum_of_an_impulse_and_spreads_it_symmetrically) {
    enum { N = 21 };
    float x[N * N] = {0};
    x[10 * N + 10] = 1.0f;
    double sigma = 1.2; /* radius 4: the impulse never reaches a border */
    float *tmp = malloc(sizeof(float) * eng_aug_blur_scratch_floats(N, N, sigma));
    eng_aug_gaussian_blur(x, 1, N, N, sigma, tmp);
    double sum = 0;
    for (int i = 0; i < N * N; i++) sum += x[i];
    cr_assert(fabs(sum - 1.0) < 1e-5, "sum %g", sum);
    cr_assert(x[10 * N + 10] < 0.2f && x[10 * N + 11] > 0.05f, "the impulse spread out");
    for (int dy = -10; dy <= 10; dy++)
        for (int dx = -10; dx <= 10; dx++) {
            float v = x[(10 + dy) * N + 10 + dx];
            cr_assert_float_eq(v, x[(10 - dy) * N + 10 - dx], 1e-7, "point symmetry");
            cr_assert_float_eq(v, x[(10 + dx) * N + 10 + dy], 1e-7, "transpose symmetry");
            if (abs(dx) > 4 || abs(dy) > 4) cr_assert_eq(v, 0.0f, "outside the radius");
        }
    /* The profile is the normalised Gaussian: neighbour / centre = exp(−1 / (2σ²)). */
    cr_assert(fabs(x[10 * N + 11] / x[10 * N + 10] - exp(-1.0 / (2 * sigma * sigma))) < 1e-5);
    free(tmp);
}

Test(augment, gaussian_blur_reflects_at_the_border_without_repeating_the_edge) {
    enum { W = 9 };
    float x[W] = {1.0f}; /* an impulse in column 0 of a one-row image */
    double sigma = 1.0;  /* radius 3 */
    float tmp[W + 7];
    cr_assert(eng_aug_blur_scratch_floats(1, W, sigma) <= W + 7);
    eng_aug_gaussian_blur(x, 1, 1, W, sigma, tmp);
    double k[4], ks = 0;
    for (int i = 0; i < 4; i++) k[i] = exp(-i * i / 2.0);
    ks = k[0] + 2 * (k[1] + k[2] + k[3]);
    /* Reflection maps column −j to column j, so column j only ever sees the impulse once, through
     * the tap at distance j (clamping would pile the left taps onto column 0). */
    for (int j = 0; j < 4; j++) cr_assert_float_eq(x[j], k[j] / ks, 1e-6, "column %d", j);
    for (int j = 4; j < W; j++) cr_assert_eq(x[j], 0.0f, "column %d", j);
}

/* Mirror index i into [0, n) without repeating the edge (one reflection suffices here). */
static int mirror(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

Test(augment, gaussian_blur_equals_a_direct_two_dimensional_sum_with_reflected_borders) {
    enum { H = 7, W = 10 };
    float x[2 * H * W], want[2 * H * W];
    tu_randn(x, 2 * H * W, 17, 1.0);
    double sigma = 1.5; /* radius 5 */
    double k[11], ks = 0;
    for (int i = -5; i <= 5; i++) ks += (k[i + 5] = exp(-i * i / (2 * sigma * sigma)));
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                double acc = 0;
                for (int dy = -5; dy <= 5; dy++)
                    for (int dx = -5; dx <= 5; dx++)
                        acc += k[dy + 5] * k[dx + 5] / (ks * ks) *
                               x[c * H * W + mirror(y + dy, H) * W + mirror(xx + dx, W)];
                want[c * H * W + y * W + xx] = (float)acc;
            }
    float *tmp = malloc(sizeof(float) * eng_aug_blur_scratch_floats(H, W, sigma));
    eng_aug_gaussian_blur(x, 2, H, W, sigma, tmp);
    cr_assert(max_abs_diff(x, want, 2 * H * W) < 1e-5f, "diff %g", max_abs_diff(x, want, 2 * H * W));
    free(tmp);
}

Test(augment, solarize_inverts_exactly_the_values_at_or_above_the_threshold) {
    float x[6] = {0.0f, 0.25f, 0.49999f, 0.5f, 0.75f, 1.0f};
    eng_aug_solarize(x, 1, 2, 3, 0.5f);
    float want[6] = {0.0f, 0.25f, 0.49999f, 0.5f, 0.25f, 0.0f};
    for (int i = 0; i < 6; i++) cr_assert_eq(x[i], want[i], "index %d: %g", i, x[i]);
    /* At another threshold the boundary value itself is visibly inverted. */
    float y[3] = {0.29f, 0.3f, 0.9f};
    eng_aug_solarize(y, 1, 1, 3, 0.3f);
    cr_assert(y[0] == 0.29f && y[1] == 1.0f - 0.3f && y[2] == 1.0f - 0.9f);
}

Test(augment, normalize_maps_the_mean_to_zero_and_one_std_above_it_to_one) {
    float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    float x[6] = {0.485f, 0.485f + 0.229f, 0.456f, 0.456f - 0.224f, 0.406f, 0.406f + 0.45f};
    eng_aug_normalize(x, 3, 1, 2, mean, std);
    float want[6] = {0.0f, 1.0f, 0.0f, -1.0f, 0.0f, 2.0f};
    for (int i = 0; i < 6; i++) cr_assert_float_eq(x[i], want[i], 1e-5, "index %d", i);
}

/* ---- configs and whole views ---- */

Test(augment, defaults_follow_the_paper_and_scale_the_blur_to_the_input_size) {
    eng_err err = {0};
    eng_aug_cfg c = eng_aug_defaults(32, 3);
    cr_assert(eng_aug_cfg_check(&c, &err) == 0, "%s", err.msg);
    cr_assert(c.blur_p[0] == 1.0 && c.blur_p[1] == 0.1);
    cr_assert(c.solarize_p[0] == 0.0 && c.solarize_p[1] == 0.2);
    cr_assert_float_eq(c.blur_sigma_max, 2.0 * 32 / 224, 1e-12);
    cr_assert_float_eq(c.blur_sigma_min, 0.1, 1e-12, "the lower bound is raised to 0.1 px");
    cr_assert_float_eq(c.mean[0], 0.485f, 1e-7, "ImageNet mean for RGB");
    eng_aug_cfg g = eng_aug_defaults(16, 1);
    cr_assert(eng_aug_cfg_check(&g, &err) == 0, "%s", err.msg);
    cr_assert(g.mean[0] == 0.5f && g.std[0] == 0.25f);
}

Test(augment, config_check_rejects_out_of_range_fields) {
    eng_err err = {0};
    eng_aug_cfg c = eng_aug_defaults(32, 3);
    c.jitter_p = 1.5;
    cr_assert(eng_aug_cfg_check(&c, &err) == -1);
    cr_assert(strstr(err.msg, "probability") != NULL, "%s", err.msg);
    c = eng_aug_defaults(32, 2);
    cr_assert(eng_aug_cfg_check(&c, &err) == -1);
    c = eng_aug_defaults(32, 3);
    c.std[2] = 0.0f;
    cr_assert(eng_aug_cfg_check(&c, &err) == -1);
    c = eng_aug_defaults(32, 3);
    c.scale_min = 0.0;
    cr_assert(eng_aug_cfg_check(&c, &err) == -1);
    c = eng_aug_defaults(32, 3);
    c.hue = 0.6;
    cr_assert(eng_aug_cfg_check(&c, &err) == -1);
}

Test(augment, view_rejects_a_source_with_the_wrong_channel_count) {
    eng_err err = {0};
    eng_aug_cfg cfg = eng_aug_defaults(16, 3);
    img8 m = make_img(20, 20, 1, 0);
    float *out = malloc(sizeof(float) * 3 * 16 * 16);
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 20, 20));
    eng_rng rng;
    eng_rng_seed(&rng, 1);
    cr_assert(eng_aug_view(&cfg, 0, &m.src, &rng, out, scr, &err) == -1);
    cr_assert(strstr(err.msg, "channels") != NULL, "%s", err.msg);
    cr_assert(eng_aug_view(&cfg, 2, &m.src, &rng, out, scr, &err) == -1, "view 2 is invalid");
    free(out);
    free(scr);
    free(m.buf);
}

Test(augment, a_view_with_every_probability_zero_equals_the_resized_normalised_input) {
    eng_err err = {0};
    enum { S = 24 };
    eng_aug_cfg cfg = quiet_cfg(S, 3);
    float *out = malloc(sizeof(float) * 3 * S * S);
    float *want = malloc(sizeof(float) * 3 * S * S);
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 60, 40));
    eng_rng rng;
    eng_rng_seed(&rng, 5);
    /* An S x S source: the view is exactly the normalised pixels, for both views. */
    img8 sq = make_img(S, S, 3, 3);
    for (int view = 0; view < 2; view++) {
        cr_assert(eng_aug_view(&cfg, view, &sq.src, &rng, out, scr, &err) == 0, "%s", err.msg);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int k = 0; k < 3; k++) {
                    float v = (sq.buf[(y * S + x) * 3 + k] / 255.0f - cfg.mean[k]) / cfg.std[k];
                    cr_assert(fabsf(out[(k * S + y) * S + x] - v) < 1e-5f, "view %d", view);
                }
    }
    /* A 60x40 source: scale 1 with ratio 1 never fits, so the centre 40x40 square is resized. */
    img8 wide = make_img(60, 40, 3, 4);
    eng_aug_applied ap;
    cr_assert(eng_aug_view_report(&cfg, 1, &wide.src, &rng, out, scr, &ap, &err) == 0, "%s",
              err.msg);
    cr_assert(ap.box.fallback == 1 && ap.box.x == 10 && ap.box.y == 0 && ap.box.w == 40);
    cr_assert(!ap.flipped && !ap.jittered && !ap.grayscaled && !ap.blurred && !ap.solarized);
    eng_aug_box box = {10, 0, 40, 40, 1};
    cr_assert(eng_aug_resized_crop(&wide.src, &box, S, want, &err) == 0, "%s", err.msg);
    eng_aug_normalize(want, 3, S, S, cfg.mean, cfg.std);
    cr_assert(max_abs_diff(out, want, 3 * S * S) < 1e-6f);
    free(out);
    free(want);
    free(scr);
    free(sq.buf);
    free(wide.buf);
}

Test(augment, a_view_with_every_transform_forced_matches_the_transforms_applied_by_hand) {
    eng_err err = {0};
    enum { S = 16 };
    eng_aug_cfg cfg = eng_aug_defaults(S, 3);
    cfg.flip_p = cfg.jitter_p = cfg.gray_p = 1.0;
    cfg.blur_p[1] = cfg.solarize_p[1] = 1.0;
    img8 m = make_img(40, 30, 3, 9);
    float *out = malloc(sizeof(float) * 3 * S * S);
    float *want = malloc(sizeof(float) * 3 * S * S);
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 40, 30));
    eng_rng rng;
    eng_rng_seed(&rng, 99);
    eng_aug_applied ap;
    cr_assert(eng_aug_view_report(&cfg, 1, &m.src, &rng, out, scr, &ap, &err) == 0, "%s",
              err.msg);
    cr_assert(ap.flipped && ap.jittered && ap.grayscaled && ap.blurred && ap.solarized);
    cr_assert(ap.brightness >= 0.6 && ap.brightness <= 1.4 && ap.hue >= -0.1 && ap.hue <= 0.1);
    cr_assert(ap.sigma >= cfg.blur_sigma_min && ap.sigma <= cfg.blur_sigma_max);
    int seen[4] = {0};
    for (int k = 0; k < 4; k++) seen[ap.order[k]]++;
    cr_assert(seen[0] == 1 && seen[1] == 1 && seen[2] == 1 && seen[3] == 1, "a permutation");
    /* Redo the reported steps by hand. */
    cr_assert(eng_aug_resized_crop(&m.src, &ap.box, S, want, &err) == 0, "%s", err.msg);
    eng_aug_hflip(want, 3, S, S);
    for (int k = 0; k < 4; k++) {
        if (ap.order[k] == 0) eng_aug_brightness(want, 3, S, S, (float)ap.brightness);
        if (ap.order[k] == 1) eng_aug_contrast(want, 3, S, S, (float)ap.contrast);
        if (ap.order[k] == 2) eng_aug_saturation(want, 3, S, S, (float)ap.saturation);
        if (ap.order[k] == 3) eng_aug_hue(want, 3, S, S, (float)ap.hue);
    }
    eng_aug_grayscale(want, 3, S, S);
    eng_aug_gaussian_blur(want, 3, S, S, ap.sigma, scr);
    eng_aug_solarize(want, 3, S, S, 0.5f);
    eng_aug_normalize(want, 3, S, S, cfg.mean, cfg.std);
    cr_assert(max_abs_diff(out, want, 3 * S * S) == 0.0f);
    /* Grayscale then forced: all three channels equal before normalisation. */
    for (int i = 0; i < S * S; i++) {
        float r = out[i] * cfg.std[0] + cfg.mean[0], b = out[2 * S * S + i] * cfg.std[2] + cfg.mean[2];
        cr_assert(fabsf(r - b) < 1e-5f);
    }
    free(out);
    free(want);
    free(scr);
    free(m.buf);
}

Test(augment, a_gray_model_skips_saturation_and_hue) {
    eng_err err = {0};
    enum { S = 16 };
    eng_aug_cfg cfg = eng_aug_defaults(S, 1);
    cfg.jitter_p = 1.0;
    img8 m = make_img(30, 30, 1, 2);
    float out[S * S];
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 30, 30));
    eng_rng rng;
    eng_rng_seed(&rng, 3);
    for (int t = 0; t < 50; t++) {
        eng_aug_applied ap;
        cr_assert(eng_aug_view_report(&cfg, t & 1, &m.src, &rng, out, scr, &ap, &err) == 0, "%s",
                  err.msg);
        cr_assert(ap.jittered && ap.saturation == 1.0 && ap.hue == 0.0);
        for (int i = 0; i < S * S; i++) cr_assert(isfinite(out[i]));
    }
    free(scr);
    free(m.buf);
}

Test(augment, view_a_is_always_blurred_and_never_solarised_while_view_b_solarises_a_fifth) {
    eng_err err = {0};
    enum { S = 16 };
    eng_aug_cfg cfg = eng_aug_defaults(S, 3);
    img8 m = make_img(40, 32, 3, 6);
    float out[3 * S * S];
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 40, 32));
    eng_rng rng;
    eng_rng_seed(&rng, 2024);
    const int T = 4000;
    int a_blur = 0, a_sol = 0, b_blur = 0, b_sol = 0, b_flip = 0, b_jit = 0, b_gray = 0;
    for (int t = 0; t < T; t++) {
        eng_aug_applied ap;
        cr_assert(eng_aug_view_report(&cfg, 0, &m.src, &rng, out, scr, &ap, &err) == 0);
        a_blur += ap.blurred;
        a_sol += ap.solarized;
        cr_assert(ap.sigma >= cfg.blur_sigma_min && ap.sigma <= cfg.blur_sigma_max);
        cr_assert(eng_aug_view_report(&cfg, 1, &m.src, &rng, out, scr, &ap, &err) == 0);
        b_blur += ap.blurred;
        b_sol += ap.solarized;
        b_flip += ap.flipped;
        b_jit += ap.jittered;
        b_gray += ap.grayscaled;
    }
    cr_assert_eq(a_blur, T, "view A is always blurred");
    cr_assert_eq(a_sol, 0, "view A is never solarised");
    cr_assert(fabs((double)b_sol / T - 0.2) < 0.03, "view B solarise rate %g", (double)b_sol / T);
    cr_assert(fabs((double)b_blur / T - 0.1) < 0.03, "view B blur rate %g", (double)b_blur / T);
    cr_assert(fabs((double)b_flip / T - 0.5) < 0.03, "flip rate %g", (double)b_flip / T);
    cr_assert(fabs((double)b_jit / T - 0.8) < 0.03, "jitter rate %g", (double)b_jit / T);
    cr_assert(fabs((double)b_gray / T - 0.2) < 0.03, "gray rate %g", (double)b_gray / T);
    free(scr);
    free(m.buf);
}

/* ---- batches ---- */

enum { BN = 6, BS = 16, BC = 3 };

static void make_pool(img8 *pool, int n) {
    for (int i = 0; i < n; i++) pool[i] = make_img(30 + 3 * i, 26 + 2 * i, BC, (unsigned)i);
}

static void free_pool(img8 *pool, int n) {
    for (int i = 0; i < n; i++) free(pool[i].buf);
}

Test(augment, the_same_seed_gives_bit_identical_batches_and_a_different_seed_different_ones) {
    eng_err err = {0};
    img8 pool[BN];
    eng_aug_src srcs[BN];
    make_pool(pool, BN);
    for (int i = 0; i < BN; i++) srcs[i] = pool[i].src;
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    size_t n = (size_t)BN * BC * BS * BS;
    float *a1 = malloc(sizeof(float) * n), *b1 = malloc(sizeof(float) * n);
    float *a2 = malloc(sizeof(float) * n), *b2 = malloc(sizeof(float) * n);
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 11, a1, b1, &err) == 0, "%s", err.msg);
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 11, a2, b2, &err) == 0, "%s", err.msg);
    cr_assert(memcmp(a1, a2, sizeof(float) * n) == 0 && memcmp(b1, b2, sizeof(float) * n) == 0);
    cr_assert(memcmp(a1, b1, sizeof(float) * n) != 0, "views A and B differ");
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 12, a2, b2, &err) == 0, "%s", err.msg);
    size_t per = (size_t)BC * BS * BS;
    for (int i = 0; i < BN; i++)
        cr_assert(memcmp(a1 + per * i, a2 + per * i, sizeof(float) * per) != 0,
                  "image %d unchanged by a new seed", i);
    /* Image i's views are eng_aug_view with the generator seeded by eng_aug_image_seed. */
    float *scr = malloc(sizeof(float) * eng_aug_scratch_floats(&cfg, 0, 0));
    float va[BC * BS * BS], vb[BC * BS * BS];
    eng_rng rng;
    eng_rng_seed(&rng, eng_aug_image_seed(11, 4));
    cr_assert(eng_aug_view(&cfg, 0, &srcs[4], &rng, va, scr, &err) == 0);
    cr_assert(eng_aug_view(&cfg, 1, &srcs[4], &rng, vb, scr, &err) == 0);
    cr_assert(memcmp(va, a1 + per * 4, sizeof va) == 0 && memcmp(vb, b1 + per * 4, sizeof vb) == 0);
    free(scr);
    free(a1);
    free(b1);
    free(a2);
    free(b2);
    free_pool(pool, BN);
}

Test(augment, batch_results_do_not_depend_on_the_thread_count) {
    eng_err err = {0};
    img8 pool[BN];
    eng_aug_src srcs[BN];
    make_pool(pool, BN);
    for (int i = 0; i < BN; i++) srcs[i] = pool[i].src;
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    size_t n = (size_t)BN * BC * BS * BS;
    float *a1 = malloc(sizeof(float) * n), *b1 = malloc(sizeof(float) * n);
    float *a2 = malloc(sizeof(float) * n), *b2 = malloc(sizeof(float) * n);
    omp_set_num_threads(1);
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 77, a1, b1, &err) == 0, "%s", err.msg);
    omp_set_num_threads(2);
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 77, a2, b2, &err) == 0, "%s", err.msg);
    cr_assert(memcmp(a1, a2, sizeof(float) * n) == 0 && memcmp(b1, b2, sizeof(float) * n) == 0);
    free(a1);
    free(b1);
    free(a2);
    free(b2);
    free_pool(pool, BN);
}

Test(augment, batch_reports_a_bad_source_and_fails) {
    eng_err err = {0};
    img8 pool[BN];
    eng_aug_src srcs[BN];
    make_pool(pool, BN);
    for (int i = 0; i < BN; i++) srcs[i] = pool[i].src;
    srcs[3].pixels = NULL;
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    size_t n = (size_t)BN * BC * BS * BS;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    omp_set_num_threads(2);
    cr_assert(eng_aug_batch(&cfg, srcs, BN, 1, a, b, &err) == -1);
    cr_assert(strstr(err.msg, "image 3") != NULL, "%s", err.msg);
    free(a);
    free(b);
    free_pool(pool, BN);
}

/* ---- prefetcher ---- */

typedef struct feeder {
    img8 *pool;       /* borrowed images */
    int npool;        /* how many */
    atomic_int calls; /* fill calls so far (written on the prefetch thread) */
    int fail_at;      /* the call index that fails, or -1 */
} feeder;

/* Batch k takes pool images (k·n + j) mod npool. */
static void batch_srcs(const feeder *f, int k, eng_aug_src *srcs, int n) {
    for (int j = 0; j < n; j++) srcs[j] = f->pool[(k * n + j) % f->npool].src;
}

static int feed(void *ctx, eng_aug_src *srcs, int n, eng_err *err) {
    feeder *f = ctx;
    int k = atomic_fetch_add(&f->calls, 1);
    if (k == f->fail_at) return eng_fail(err, "the image store is unreachable");
    batch_srcs(f, k, srcs, n);
    return 0;
}

static int feeder_calls(feeder *f) { return atomic_load(&f->calls); }

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 5 s, for a loaded machine) until the feeder has seen `target` calls, then a little
 * longer so that a thread running further ahead than allowed would be caught. */
static int settle_calls(feeder *f, int target) {
    for (int t = 0; t < 500 && feeder_calls(f) < target; t++) nap_ms(10);
    nap_ms(30);
    return feeder_calls(f);
}

Test(augment, prefetcher_delivers_batches_in_order_equal_to_eng_aug_batch) {
    eng_err err = {0};
    enum { NP = 7, N = 4, K = 5 };
    img8 pool[NP];
    make_pool(pool, NP);
    feeder f = {.pool = pool, .npool = NP, .fail_at = -1};
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    eng_aug_prefetch *p = NULL;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, N, 500, feed, &f, &err) == 0, "%s", err.msg);
    size_t n = (size_t)N * BC * BS * BS;
    float *wa = malloc(sizeof(float) * n), *wb = malloc(sizeof(float) * n);
    for (int k = 0; k < K; k++) {
        const float *a = NULL, *b = NULL;
        cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == 0, "batch %d: %s", k, err.msg);
        eng_aug_src srcs[N];
        batch_srcs(&f, k, srcs, N);
        cr_assert(eng_aug_batch(&cfg, srcs, N, 500 + (uint64_t)k, wa, wb, &err) == 0);
        cr_assert(memcmp(a, wa, sizeof(float) * n) == 0, "batch %d view A", k);
        cr_assert(memcmp(b, wb, sizeof(float) * n) == 0, "batch %d view B", k);
    }
    /* Double buffering: the thread works at most one batch ahead of the one the caller holds. */
    cr_assert_eq(settle_calls(&f, K + 1), K + 1);
    eng_aug_prefetch_free(p);
    free(wa);
    free(wb);
    free_pool(pool, NP);
}

Test(augment, prefetcher_reports_a_callback_error_at_the_failing_batch_and_after) {
    eng_err err = {0};
    enum { NP = 3, N = 2 };
    img8 pool[NP];
    make_pool(pool, NP);
    feeder f = {.pool = pool, .npool = NP, .fail_at = 2};
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    eng_aug_prefetch *p = NULL;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, N, 1, feed, &f, &err) == 0, "%s", err.msg);
    const float *a, *b;
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == 0, "%s", err.msg);
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == 0, "%s", err.msg);
    err.msg[0] = '\0';
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == -1);
    cr_assert(strstr(err.msg, "the image store is unreachable") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "batch 2") != NULL, "%s", err.msg);
    err.msg[0] = '\0';
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == -1, "the error sticks");
    cr_assert(strstr(err.msg, "unreachable") != NULL, "%s", err.msg);
    cr_assert_eq(feeder_calls(&f), 3, "no fill after the failure");
    eng_aug_prefetch_free(p);
    free_pool(pool, NP);
}

Test(augment, prefetcher_reports_an_error_even_when_it_failed_before_the_first_next) {
    eng_err err = {0};
    img8 pool[1];
    make_pool(pool, 1);
    feeder f = {.pool = pool, .npool = 1, .fail_at = 0};
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    eng_aug_prefetch *p = NULL;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 2, 1, feed, &f, &err) == 0, "%s", err.msg);
    nap_ms(20);
    const float *a, *b;
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == -1);
    cr_assert(strstr(err.msg, "unreachable") != NULL, "%s", err.msg);
    eng_aug_prefetch_free(p);
    free_pool(pool, 1);
}

Test(augment, prefetcher_shuts_down_cleanly_when_freed_mid_stream) {
    eng_err err = {0};
    enum { NP = 4 };
    img8 pool[NP];
    make_pool(pool, NP);
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    /* Freed right away, possibly while the first batch is being made. */
    feeder f0 = {.pool = pool, .npool = NP, .fail_at = -1};
    eng_aug_prefetch *p = NULL;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 3, 9, feed, &f0, &err) == 0, "%s", err.msg);
    eng_aug_prefetch_free(p);
    cr_assert(feeder_calls(&f0) <= 2);
    /* Freed after one batch, with the thread parked on a full buffer. */
    feeder f1 = {.pool = pool, .npool = NP, .fail_at = -1};
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 3, 9, feed, &f1, &err) == 0, "%s", err.msg);
    const float *a, *b;
    cr_assert(eng_aug_prefetch_next(p, &a, &b, &err) == 0, "%s", err.msg);
    cr_assert_eq(settle_calls(&f1, 2), 2, "one batch held, one ready, the thread waits");
    eng_aug_prefetch_free(p);
    int after = feeder_calls(&f1);
    nap_ms(20);
    cr_assert_eq(feeder_calls(&f1), after, "no fill after free returned");
    eng_aug_prefetch_free(NULL);
    free_pool(pool, NP);
}

Test(augment, prefetcher_rejects_bad_arguments) {
    eng_err err = {0};
    eng_aug_cfg cfg = eng_aug_defaults(BS, BC);
    eng_aug_prefetch *p = (eng_aug_prefetch *)&err;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 0, 1, feed, NULL, &err) == -1);
    cr_assert(p == NULL);
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 2, 1, NULL, NULL, &err) == -1);
    cfg.channels = 2;
    cr_assert(eng_aug_prefetch_create(&p, &cfg, 2, 1, feed, NULL, &err) == -1);
}
