/* eng_augment.c — the Barlow Twins augmentation pipeline: transforms, views, batches.
 * Conventions and choices are in eng_augment.h. */
#include "eng_augment.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define AUG_PI 3.14159265358979323846
#define AUG_MAX_SIGMA 64.0
#define LUMA_R 0.299f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

static float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* Uniform integer in [0, n), n >= 1. */
static int rand_below(eng_rng *rng, int n) {
    int k = (int)(eng_rng_uniform(rng) * n);
    return k < n ? k : n - 1;
}

static double rand_range(eng_rng *rng, double lo, double hi) {
    return lo + (hi - lo) * eng_rng_uniform(rng);
}

/* Python's round(): nearest, ties to even (nearbyint in the default rounding mode). */
static int round_half_even(double v) { return (int)nearbyint(v); }

eng_aug_cfg eng_aug_defaults(int size, int channels) {
    eng_aug_cfg c;
    memset(&c, 0, sizeof c);
    c.size = size;
    c.channels = channels;
    c.scale_min = 0.2;
    c.scale_max = 1.0;
    c.ratio_min = 3.0 / 4.0;
    c.ratio_max = 4.0 / 3.0;
    c.flip_p = 0.5;
    c.jitter_p = 0.8;
    c.brightness = 0.4;
    c.contrast = 0.4;
    c.saturation = 0.2;
    c.hue = 0.1;
    c.gray_p = 0.2;
    c.blur_p[0] = 1.0;
    c.blur_p[1] = 0.1;
    double s = (double)size / ENG_AUG_PAPER_SIZE;
    c.blur_sigma_min = fmax(0.1, 0.1 * s);
    c.blur_sigma_max = fmax(0.1, 2.0 * s);
    c.solarize_p[0] = 0.0;
    c.solarize_p[1] = 0.2;
    c.solarize_threshold = 0.5;
    if (channels == 3) {
        const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
        memcpy(c.mean, mean, sizeof mean);
        memcpy(c.std, std, sizeof std);
    } else {
        for (int k = 0; k < 3; k++) {
            c.mean[k] = 0.5f;
            c.std[k] = 0.25f;
        }
    }
    return c;
}

static int prob_ok(double p) { return p >= 0.0 && p <= 1.0; }

int eng_aug_cfg_check(const eng_aug_cfg *c, eng_err *err) {
    if (!c) return eng_fail(err, "augment: no config");
    if (c->size < 1 || c->size > 4096)
        return eng_fail(err, "augment: size must be in [1, 4096] (got %d)", c->size);
    if (c->channels != 1 && c->channels != 3)
        return eng_fail(err, "augment: channels must be 1 or 3 (got %d)", c->channels);
    if (!(c->scale_min > 0.0 && c->scale_min <= c->scale_max && c->scale_max <= 1.0))
        return eng_fail(err, "augment: crop scale must satisfy 0 < min <= max <= 1 (got %g, %g)",
                        c->scale_min, c->scale_max);
    if (!(c->ratio_min > 0.0 && c->ratio_min <= c->ratio_max && isfinite(c->ratio_max)))
        return eng_fail(err, "augment: crop ratio must satisfy 0 < min <= max (got %g, %g)",
                        c->ratio_min, c->ratio_max);
    if (!prob_ok(c->flip_p) || !prob_ok(c->jitter_p) || !prob_ok(c->gray_p) ||
        !prob_ok(c->blur_p[0]) || !prob_ok(c->blur_p[1]) || !prob_ok(c->solarize_p[0]) ||
        !prob_ok(c->solarize_p[1]))
        return eng_fail(err, "augment: every probability must be in [0, 1]");
    if (!(c->brightness >= 0.0 && c->contrast >= 0.0 && c->saturation >= 0.0) ||
        !isfinite(c->brightness) || !isfinite(c->contrast) || !isfinite(c->saturation))
        return eng_fail(err, "augment: brightness, contrast and saturation must be finite and >= 0");
    if (!(c->hue >= 0.0 && c->hue <= 0.5))
        return eng_fail(err, "augment: hue must be in [0, 0.5] (got %g)", c->hue);
    if (!(c->blur_sigma_min > 0.0 && c->blur_sigma_min <= c->blur_sigma_max &&
          c->blur_sigma_max <= AUG_MAX_SIGMA))
        return eng_fail(err, "augment: blur sigma must satisfy 0 < min <= max <= %g (got %g, %g)",
                        AUG_MAX_SIGMA, c->blur_sigma_min, c->blur_sigma_max);
    if (!isfinite(c->solarize_threshold))
        return eng_fail(err, "augment: solarize threshold must be finite");
    for (int k = 0; k < c->channels; k++) {
        if (!(c->std[k] > 0.0f) || !isfinite(c->std[k]) || !isfinite(c->mean[k]))
            return eng_fail(err, "augment: channel %d needs a finite mean and a std > 0", k);
    }
    return 0;
}

/* ---- crop ---- */

void eng_aug_crop_params(const eng_aug_cfg *cfg, int width, int height, eng_rng *rng,
                         eng_aug_box *box) {
    double area = (double)width * height;
    double lr0 = log(cfg->ratio_min), lr1 = log(cfg->ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * rand_range(rng, cfg->scale_min, cfg->scale_max);
        double ar = exp(rand_range(rng, lr0, lr1));
        int w = round_half_even(sqrt(target * ar));
        int h = round_half_even(sqrt(target / ar));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            box->y = rand_below(rng, height - h + 1);
            box->x = rand_below(rng, width - w + 1);
            box->w = w;
            box->h = h;
            box->fallback = 0;
            return;
        }
    }
    double in_ratio = (double)width / height;
    int w = width, h = height;
    if (in_ratio < cfg->ratio_min) {
        h = round_half_even(w / cfg->ratio_min);
    } else if (in_ratio > cfg->ratio_max) {
        w = round_half_even(h * cfg->ratio_max);
    }
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    if (w > width) w = width;
    if (h > height) h = height;
    box->x = (width - w) / 2;
    box->y = (height - h) / 2;
    box->w = w;
    box->h = h;
    box->fallback = 1;
}

/* Source index pair and weight for output position o of n along an axis of length len starting
 * at start (half-pixel centres, clamped to [start, start + len − 1]). */
static void bilinear_tap(int o, int n, int start, int len, int *i0, int *i1, float *t) {
    double pos = ((double)o + 0.5) * len / n - 0.5;
    if (pos < 0.0) pos = 0.0;
    if (pos > len - 1) pos = len - 1;
    int a = (int)floor(pos);
    int b = a + 1 < len ? a + 1 : a;
    *t = (float)(pos - a);
    *i0 = start + a;
    *i1 = start + b;
}

int eng_aug_resized_crop(const eng_aug_src *src, const eng_aug_box *box, int size, float *out,
                         eng_err *err) {
    if (!src || !src->pixels || src->width < 1 || src->height < 1 ||
        (src->channels != 1 && src->channels != 3))
        return eng_fail(err, "augment: bad source image");
    if (!box || box->w < 1 || box->h < 1 || box->x < 0 || box->y < 0 ||
        box->x + box->w > src->width || box->y + box->h > src->height)
        return eng_fail(err, "augment: crop box outside the %dx%d image", src->width,
                        src->height);
    if (size < 1) return eng_fail(err, "augment: output size must be >= 1 (got %d)", size);
    int c = src->channels, sw = src->width;
    size_t plane = (size_t)size * size;
    const float inv = 1.0f / 255.0f;
    for (int oy = 0; oy < size; oy++) {
        int y0, y1;
        float ty;
        bilinear_tap(oy, size, box->y, box->h, &y0, &y1, &ty);
        const uint8_t *r0 = src->pixels + (size_t)y0 * sw * c;
        const uint8_t *r1 = src->pixels + (size_t)y1 * sw * c;
        for (int ox = 0; ox < size; ox++) {
            int x0, x1;
            float tx;
            bilinear_tap(ox, size, box->x, box->w, &x0, &x1, &tx);
            for (int k = 0; k < c; k++) {
                float p00 = r0[(size_t)x0 * c + k], p01 = r0[(size_t)x1 * c + k];
                float p10 = r1[(size_t)x0 * c + k], p11 = r1[(size_t)x1 * c + k];
                float top = p00 + (p01 - p00) * tx;
                float bot = p10 + (p11 - p10) * tx;
                out[(size_t)k * plane + (size_t)oy * size + ox] = (top + (bot - top) * ty) * inv;
            }
        }
    }
    return 0;
}

/* ---- geometric and colour transforms ---- */

void eng_aug_hflip(float *x, int c, int h, int w) {
    for (size_t r = 0; r < (size_t)c * h; r++) {
        float *row = x + r * w;
        for (int j = 0; j < w / 2; j++) {
            float t = row[j];
            row[j] = row[w - 1 - j];
            row[w - 1 - j] = t;
        }
    }
}

void eng_aug_brightness(float *x, int c, int h, int w, float f) {
    size_t n = (size_t)c * h * w;
    for (size_t i = 0; i < n; i++) x[i] = clamp01(f * x[i]);
}

void eng_aug_contrast(float *x, int c, int h, int w, float f) {
    size_t plane = (size_t)h * w, n = (size_t)c * plane;
    double sum = 0.0;
    if (c == 3) {
        for (size_t i = 0; i < plane; i++)
            sum += LUMA_R * x[i] + LUMA_G * x[plane + i] + LUMA_B * x[2 * plane + i];
    } else {
        for (size_t i = 0; i < n; i++) sum += x[i];
    }
    float m = (float)(sum / (double)(c == 3 ? plane : n));
    for (size_t i = 0; i < n; i++) x[i] = clamp01(f * x[i] + (1.0f - f) * m);
}

void eng_aug_saturation(float *x, int c, int h, int w, float f) {
    if (c != 3) return;
    size_t plane = (size_t)h * w;
    float *r = x, *g = x + plane, *b = x + 2 * plane;
    for (size_t i = 0; i < plane; i++) {
        float l = LUMA_R * r[i] + LUMA_G * g[i] + LUMA_B * b[i];
        r[i] = clamp01(f * r[i] + (1.0f - f) * l);
        g[i] = clamp01(f * g[i] + (1.0f - f) * l);
        b[i] = clamp01(f * b[i] + (1.0f - f) * l);
    }
}

void eng_aug_hue(float *x, int c, int h, int w, float shift) {
    if (c != 3) return;
    size_t plane = (size_t)h * w;
    float *rp = x, *gp = x + plane, *bp = x + 2 * plane;
    for (size_t i = 0; i < plane; i++) {
        float r = rp[i], g = gp[i], b = bp[i];
        /* RGB → HSV as torchvision's _rgb2hsv. */
        float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
        float cr = maxc - minc;
        int eq = maxc == minc;
        float s = cr / (eq ? 1.0f : maxc);
        float div = eq ? 1.0f : cr;
        float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
        float hh;
        if (maxc == r)
            hh = bc - gc;
        else if (maxc == g)
            hh = 2.0f + rc - bc;
        else
            hh = 4.0f + gc - rc;
        hh = fmodf(hh / 6.0f + 1.0f, 1.0f);
        /* Shift, wrap into [0, 1). */
        hh = fmodf(hh + shift + 1.0f, 1.0f);
        if (hh < 0.0f) hh += 1.0f;
        /* HSV → RGB as torchvision's _hsv2rgb. */
        float v = maxc;
        float h6 = hh * 6.0f;
        float fi = floorf(h6);
        float fr = h6 - fi;
        int sector = ((int)fi) % 6;
        if (sector < 0) sector += 6;
        float p = clamp01(v * (1.0f - s));
        float q = clamp01(v * (1.0f - s * fr));
        float t = clamp01(v * (1.0f - s * (1.0f - fr)));
        switch (sector) {
        case 0: r = v; g = t; b = p; break;
        case 1: r = q; g = v; b = p; break;
        case 2: r = p; g = v; b = t; break;
        case 3: r = p; g = q; b = v; break;
        case 4: r = t; g = p; b = v; break;
        default: r = v; g = p; b = q; break;
        }
        rp[i] = r;
        gp[i] = g;
        bp[i] = b;
    }
}

void eng_aug_grayscale(float *x, int c, int h, int w) {
    if (c != 3) return;
    size_t plane = (size_t)h * w;
    for (size_t i = 0; i < plane; i++) {
        float l = LUMA_R * x[i] + LUMA_G * x[plane + i] + LUMA_B * x[2 * plane + i];
        x[i] = x[plane + i] = x[2 * plane + i] = l;
    }
}

static int blur_radius(double sigma) {
    int r = (int)ceil(3.0 * sigma);
    return r < 1 ? 1 : r;
}

size_t eng_aug_blur_scratch_floats(int h, int w, double sigma) {
    return (size_t)h * w + (size_t)(2 * blur_radius(sigma) + 1);
}

/* Reflects index i into [0, n) without repeating the edge, periodically for any i. */
static int reflect_index(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

void eng_aug_gaussian_blur(float *x, int c, int h, int w, double sigma, float *tmp) {
    int rad = blur_radius(sigma);
    size_t plane = (size_t)h * w;
    float *kern = tmp + plane;
    double ksum = 0.0;
    for (int k = -rad; k <= rad; k++) {
        double v = exp(-(double)k * k / (2.0 * sigma * sigma));
        kern[k + rad] = (float)v;
        ksum += v;
    }
    for (int k = 0; k <= 2 * rad; k++) kern[k] = (float)(kern[k] / ksum);
    for (int ch = 0; ch < c; ch++) {
        float *p = x + (size_t)ch * plane;
        /* Horizontal pass p → tmp. */
        for (int y = 0; y < h; y++) {
            const float *row = p + (size_t)y * w;
            float *dst = tmp + (size_t)y * w;
            for (int xx = 0; xx < w; xx++) {
                float acc = 0.0f;
                if (xx - rad >= 0 && xx + rad < w) {
                    for (int k = -rad; k <= rad; k++) acc += kern[k + rad] * row[xx + k];
                } else {
                    for (int k = -rad; k <= rad; k++)
                        acc += kern[k + rad] * row[reflect_index(xx + k, w)];
                }
                dst[xx] = acc;
            }
        }
        /* Vertical pass tmp → p. */
        for (int y = 0; y < h; y++) {
            float *dst = p + (size_t)y * w;
            for (int xx = 0; xx < w; xx++) dst[xx] = 0.0f;
            for (int k = -rad; k <= rad; k++) {
                const float *src = tmp + (size_t)reflect_index(y + k, h) * w;
                float kv = kern[k + rad];
                for (int xx = 0; xx < w; xx++) dst[xx] += kv * src[xx];
            }
        }
    }
}

void eng_aug_solarize(float *x, int c, int h, int w, float threshold) {
    size_t n = (size_t)c * h * w;
    for (size_t i = 0; i < n; i++)
        if (x[i] >= threshold) x[i] = 1.0f - x[i];
}

void eng_aug_normalize(float *x, int c, int h, int w, const float *mean, const float *std) {
    size_t plane = (size_t)h * w;
    for (int k = 0; k < c; k++) {
        float m = mean[k], inv = 1.0f / std[k];
        float *p = x + (size_t)k * plane;
        for (size_t i = 0; i < plane; i++) p[i] = (p[i] - m) * inv;
    }
}

/* ---- views ---- */

size_t eng_aug_scratch_floats(const eng_aug_cfg *cfg, int max_w, int max_h) {
    return eng_aug_blur_scratch_floats(cfg->size, cfg->size, cfg->blur_sigma_max);
}

/* Draws a jitter factor uniform in [max(0, 1 − x), 1 + x]. */
static double jitter_factor(eng_rng *rng, double x) {
    return rand_range(rng, fmax(0.0, 1.0 - x), 1.0 + x);
}

int eng_aug_view_report(const eng_aug_cfg *cfg, int view, const eng_aug_src *src, eng_rng *rng,
                        float *out, float *scratch, eng_aug_applied *applied, eng_err *err) {
    if (eng_aug_cfg_check(cfg, err) != 0) return -1;
    if (view != 0 && view != 1) return eng_fail(err, "augment: view must be 0 or 1 (got %d)", view);
    if (!src || !src->pixels || src->width < 1 || src->height < 1)
        return eng_fail(err, "augment: bad source image");
    if (src->channels != cfg->channels)
        return eng_fail(err, "augment: source has %d channels, the model %d", src->channels,
                        cfg->channels);
    if (!rng || !out || !scratch) return eng_fail(err, "augment: missing rng, output or scratch");
    eng_aug_applied a;
    memset(&a, 0, sizeof a);
    a.brightness = a.contrast = a.saturation = 1.0;
    for (int k = 0; k < 4; k++) a.order[k] = k;
    int c = cfg->channels, s = cfg->size;

    eng_aug_crop_params(cfg, src->width, src->height, rng, &a.box);
    if (eng_aug_resized_crop(src, &a.box, s, out, err) != 0) return -1;

    if (eng_rng_uniform(rng) < cfg->flip_p) {
        a.flipped = 1;
        eng_aug_hflip(out, c, s, s);
    }

    if (eng_rng_uniform(rng) < cfg->jitter_p) {
        a.jittered = 1;
        /* torchvision's ColorJitter.get_params: a random permutation, then the four factors. */
        for (int k = 3; k > 0; k--) {
            int j = rand_below(rng, k + 1);
            int t = a.order[k];
            a.order[k] = a.order[j];
            a.order[j] = t;
        }
        a.brightness = jitter_factor(rng, cfg->brightness);
        a.contrast = jitter_factor(rng, cfg->contrast);
        double sat = jitter_factor(rng, cfg->saturation);
        double hue = rand_range(rng, -cfg->hue, cfg->hue);
        if (c == 3) {
            a.saturation = sat;
            a.hue = hue;
        }
        for (int k = 0; k < 4; k++) {
            switch (a.order[k]) {
            case 0:
                if (cfg->brightness > 0.0) eng_aug_brightness(out, c, s, s, (float)a.brightness);
                break;
            case 1:
                if (cfg->contrast > 0.0) eng_aug_contrast(out, c, s, s, (float)a.contrast);
                break;
            case 2:
                if (c == 3 && cfg->saturation > 0.0)
                    eng_aug_saturation(out, c, s, s, (float)a.saturation);
                break;
            default:
                if (c == 3 && cfg->hue > 0.0) eng_aug_hue(out, c, s, s, (float)a.hue);
                break;
            }
        }
    }

    if (eng_rng_uniform(rng) < cfg->gray_p) {
        a.grayscaled = 1;
        eng_aug_grayscale(out, c, s, s);
    }

    if (eng_rng_uniform(rng) < cfg->blur_p[view]) {
        a.blurred = 1;
        a.sigma = rand_range(rng, cfg->blur_sigma_min, cfg->blur_sigma_max);
        eng_aug_gaussian_blur(out, c, s, s, a.sigma, scratch);
    }

    if (eng_rng_uniform(rng) < cfg->solarize_p[view]) {
        a.solarized = 1;
        eng_aug_solarize(out, c, s, s, (float)cfg->solarize_threshold);
    }

    eng_aug_normalize(out, c, s, s, cfg->mean, cfg->std);
    if (applied) *applied = a;
    return 0;
}

int eng_aug_view(const eng_aug_cfg *cfg, int view, const eng_aug_src *src, eng_rng *rng,
                 float *out, float *scratch, eng_err *err) {
    return eng_aug_view_report(cfg, view, src, rng, out, scratch, NULL, err);
}

/* ---- batches ---- */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t eng_aug_image_seed(uint64_t seed, uint64_t i) {
    return mix64(mix64(seed) ^ (i * 0xd1b54a32d192ed03ULL));
}

int eng_aug_batch(const eng_aug_cfg *cfg, const eng_aug_src *srcs, int n, uint64_t seed,
                  float *out_a, float *out_b, eng_err *err) {
    return eng_aug_batch_from(cfg, srcs, n, 0, seed, out_a, out_b, err);
}

int eng_aug_batch_from(const eng_aug_cfg *cfg, const eng_aug_src *srcs, int n, int first,
                       uint64_t seed, float *out_a, float *out_b, eng_err *err) {
    if (eng_aug_cfg_check(cfg, err) != 0) return -1;
    if (first < 0) return eng_fail(err, "augment: batch starts at image %d", first);
    if (n < 0 || (n > 0 && (!srcs || !out_a || !out_b)))
        return eng_fail(err, "augment: batch needs n >= 0, sources and two outputs");
    if (n == 0) return 0;
    size_t per = eng_aug_scratch_floats(cfg, 0, 0);
    size_t view_floats = (size_t)cfg->channels * cfg->size * cfg->size;
    int nt = cfg->threads > 0 ? cfg->threads : omp_get_max_threads();
    if (nt > n) nt = n;
    if (nt < 1) nt = 1;
    float *scratch = malloc(sizeof(float) * per * (size_t)nt);
    if (!scratch) return eng_fail(err, "augment: out of memory for %d scratch buffers", nt);
    int failed = 0;
    eng_err first_err = {0};
#pragma omp parallel num_threads(nt)
    {
        float *mine = scratch + per * (size_t)omp_get_thread_num();
        eng_err local = {0};
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < n; i++) {
            eng_rng rng;
            eng_rng_seed(&rng, eng_aug_image_seed(seed, (uint64_t)first + (uint64_t)i));
            int rc = eng_aug_view(cfg, 0, &srcs[i], &rng, out_a + view_floats * i, mine, &local);
            if (rc == 0)
                rc = eng_aug_view(cfg, 1, &srcs[i], &rng, out_b + view_floats * i, mine, &local);
            if (rc != 0) {
#pragma omp critical(eng_aug_batch_err)
                {
                    if (!failed) {
                        failed = 1;
                        eng_fail(&first_err, "augment: image %d: %s", first + i, local.msg);
                    }
                }
            }
        }
    }
    free(scratch);
    if (failed) return eng_fail(err, "%s", first_err.msg);
    return 0;
}
