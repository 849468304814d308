/* eng_augment.h — the Barlow Twins augmentation pipeline, sized for small model inputs.
 *
 * Each training image yields two views, A and B, built by the same chain of random transforms as
 * the paper's reference implementation (torchvision semantics):
 *   random resized crop → horizontal flip → colour jitter → grayscale → Gaussian blur →
 *   solarisation → per-channel normalisation.
 * Views A and B differ only in their blur and solarisation probabilities (A: 1.0 / 0.0,
 * B: 0.1 / 0.2 by default).
 *
 * Layouts. Sources are 8-bit HWC (channels 1 or 3, already the model's channel count). Every
 * float image inside the pipeline, and every output, is CHW float32 [channels, height, width];
 * before normalisation its values lie in [0, 1] (value / 255).
 *
 * Choices (all documented at the function that makes them):
 *  - Crop: torchvision's RandomResizedCrop.get_params (10 attempts, log-uniform ratio, Python's
 *    round-half-to-even, then the centre-crop fallback), resampled straight from the 8-bit source
 *    with bilinear interpolation, half-pixel centres, sample positions clamped to the crop box
 *    (PyTorch's align_corners=False), and no antialiasing.
 *  - Blur: sigma uniform in [blur_sigma_min, blur_sigma_max] output pixels; the defaults are the
 *    paper's [0.1, 2.0] at 224 px scaled by S/224, each bound raised to at least 0.1 px. Kernel
 *    radius ceil(3 sigma), separable, borders reflected without repeating the edge (torch's
 *    "reflect" padding, extended periodically when the kernel is wider than the image).
 *  - Normalisation defaults: ImageNet mean/std for 3 channels (what the reference implementation
 *    uses), mean 0.5 / std 0.25 for 1 channel.
 *  - Seeding: eng_aug_batch gives image i its own generator, seeded from (seed, i) by
 *    eng_aug_image_seed; view A is drawn before view B from that generator. Results therefore do
 *    not depend on the number of threads. The prefetcher's batch k uses seed + k.
 *
 * Nothing here keeps global state; every function is safe to call from several threads on
 * different data. */
#ifndef ENG_AUGMENT_H
#define ENG_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "eng_err.h"
#include "eng_rng.h"

/* The paper's input size, against which the default blur sigma is scaled. */
#define ENG_AUG_PAPER_SIZE 224

/* A borrowed source image: 8-bit, HWC, rows packed (stride = width * channels). */
typedef struct eng_aug_src {
    int width, height;     /* pixels, both >= 1 */
    int channels;          /* 1 (gray) or 3 (RGB); must equal the config's channel count */
    const uint8_t *pixels; /* borrowed, height * width * channels bytes */
} eng_aug_src;

/* Every probability and range of the pipeline. Fill with eng_aug_defaults, then adjust. */
typedef struct eng_aug_cfg {
    int size;                  /* S: output views are S x S */
    int channels;              /* 1 or 3: channels of sources and outputs */
    double scale_min;          /* crop area fraction, lower bound (0.2) */
    double scale_max;          /* crop area fraction, upper bound (1.0) */
    double ratio_min;          /* crop aspect ratio w/h, lower bound (3/4) */
    double ratio_max;          /* crop aspect ratio w/h, upper bound (4/3) */
    double flip_p;             /* probability of a horizontal flip (0.5) */
    double jitter_p;           /* probability of colour jitter (0.8) */
    double brightness;         /* factor uniform in [max(0, 1 - x), 1 + x] (0.4); 0 disables */
    double contrast;           /* idem (0.4) */
    double saturation;         /* idem (0.2); ignored for 1 channel */
    double hue;                /* shift uniform in [-x, x], x <= 0.5 (0.1); ignored for 1 channel */
    double gray_p;             /* probability of grayscale conversion (0.2) */
    double blur_p[2];          /* probability of Gaussian blur for view A, view B (1.0, 0.1) */
    double blur_sigma_min;     /* blur sigma lower bound, output pixels (see file comment) */
    double blur_sigma_max;     /* blur sigma upper bound, output pixels; <= 64 */
    double solarize_p[2];      /* probability of solarisation for view A, view B (0.0, 0.2) */
    double solarize_threshold; /* values >= threshold are inverted (0.5) */
    float mean[3];             /* normalisation mean per channel (first `channels` used) */
    float std[3];              /* normalisation std per channel, > 0 */
    int threads;               /* OpenMP threads for eng_aug_batch; 0 = OpenMP's default. A
                                * trainer sets 1 so the prefetch thread takes one core's share
                                * instead of a whole team competing with the training step. */
} eng_aug_cfg;

/* A crop box in source pixels. */
typedef struct eng_aug_box {
    int x, y;     /* top-left corner (column, row) */
    int w, h;     /* width and height, >= 1, inside the image */
    int fallback; /* 1 when the 10 attempts failed and the centre-crop fallback was used */
} eng_aug_box;

/* What one call of eng_aug_view_report drew and applied (for tests and statistics). */
typedef struct eng_aug_applied {
    eng_aug_box box;   /* the crop */
    int flipped;       /* horizontal flip applied */
    int jittered;      /* colour jitter applied */
    int order[4];      /* jitter order: 0 brightness, 1 contrast, 2 saturation, 3 hue */
    double brightness; /* drawn brightness factor (1 when not jittered) */
    double contrast;   /* drawn contrast factor (1 when not jittered) */
    double saturation; /* drawn saturation factor (1 when not jittered or gray) */
    double hue;        /* drawn hue shift (0 when not jittered or gray) */
    int grayscaled;    /* grayscale applied */
    int blurred;       /* Gaussian blur applied */
    double sigma;      /* its sigma (0 when not blurred) */
    int solarized;     /* solarisation applied */
} eng_aug_applied;

/* The paper's settings for S x S outputs with `channels` channels (1 or 3), as listed in the
 * field comments above. Does not validate; eng_aug_cfg_check does. This function can't fail. */
eng_aug_cfg eng_aug_defaults(int size, int channels);

/* Checks that every field is in range; returns 0, or -1 with the first offending field in err. */
int eng_aug_cfg_check(const eng_aug_cfg *cfg, eng_err *err);

/* ---- the transforms, one by one (x is a CHW float image of c channels, h rows, w columns) ---- */

/* Draws a crop box for a width x height image exactly as torchvision's
 * RandomResizedCrop.get_params: up to 10 attempts with area fraction uniform in
 * [scale_min, scale_max] and log-uniform aspect ratio, rounded half-to-even, accepted when the
 * box fits; otherwise the centre crop of the whole image clamped to the ratio range (box->fallback
 * = 1). Because of rounding, an accepted box's area and ratio may exceed the bounds by up to half
 * a pixel per side. Requires width, height >= 1 and a checked cfg. This function can't fail. */
void eng_aug_crop_params(const eng_aug_cfg *cfg, int width, int height, eng_rng *rng,
                         eng_aug_box *box);

/* Resamples the box of src to out [src->channels, size, size] in [0, 1] (bilinear, half-pixel
 * centres, positions clamped to the box, no antialiasing). The box must lie inside src. */
int eng_aug_resized_crop(const eng_aug_src *src, const eng_aug_box *box, int size, float *out,
                         eng_err *err);

/* Mirrors every row in place (column j ↔ column w − 1 − j). */
void eng_aug_hflip(float *x, int c, int h, int w);

/* x ← clamp(f · x, 0, 1). */
void eng_aug_brightness(float *x, int c, int h, int w, float f);

/* x ← clamp(f · x + (1 − f) · m, 0, 1), m = mean of the grayscale image (luma for 3 channels,
 * the image itself for 1). */
void eng_aug_contrast(float *x, int c, int h, int w, float f);

/* 3 channels only (a no-op otherwise): x ← clamp(f · x + (1 − f) · luma(x), 0, 1). */
void eng_aug_saturation(float *x, int c, int h, int w, float f);

/* 3 channels only (a no-op otherwise): converts to HSV, adds `shift` (in turns, |shift| <= 0.5)
 * to the hue modulo 1, converts back (torchvision's adjust_hue). */
void eng_aug_hue(float *x, int c, int h, int w, float shift);

/* 3 channels: every channel ← 0.299 R + 0.587 G + 0.114 B. A no-op for 1 channel. */
void eng_aug_grayscale(float *x, int c, int h, int w);

/* Floats of tmp that eng_aug_gaussian_blur needs for an h x w plane and this sigma. */
size_t eng_aug_blur_scratch_floats(int h, int w, double sigma);

/* Separable Gaussian blur of each channel in place: kernel radius ceil(3 sigma), weights
 * normalised to sum 1, reflected borders (see the file comment). sigma > 0; tmp holds
 * eng_aug_blur_scratch_floats(h, w, sigma) floats. */
void eng_aug_gaussian_blur(float *x, int c, int h, int w, double sigma, float *tmp);

/* Every value v >= threshold becomes 1 − v; others are unchanged. */
void eng_aug_solarize(float *x, int c, int h, int w, float threshold);

/* Channel k ← (x − mean[k]) / std[k]. */
void eng_aug_normalize(float *x, int c, int h, int w, const float *mean, const float *std);

/* ---- whole views and batches ---- */

/* Scratch floats that eng_aug_view needs. Views are resampled straight from the 8-bit source, so
 * the size does not depend on max_w / max_h (kept so callers need not know that). */
size_t eng_aug_scratch_floats(const eng_aug_cfg *cfg, int max_w, int max_h);

/* One augmented view (view 0 = A, 1 = B) of src into out [channels, S, S], normalised, drawing
 * its randomness from rng. scratch holds eng_aug_scratch_floats(cfg, ...) floats. Returns 0, or
 * -1 (err filled) on a bad config, view or source. Allocates nothing. */
int eng_aug_view(const eng_aug_cfg *cfg, int view, const eng_aug_src *src, eng_rng *rng,
                 float *out, float *scratch, eng_err *err);

/* eng_aug_view that also reports what it drew into *applied (which may be NULL). Identical draws
 * and output. */
int eng_aug_view_report(const eng_aug_cfg *cfg, int view, const eng_aug_src *src, eng_rng *rng,
                        float *out, float *scratch, eng_aug_applied *applied, eng_err *err);

/* The generator seed eng_aug_batch uses for image i of a batch seeded with `seed`. */
uint64_t eng_aug_image_seed(uint64_t seed, uint64_t i);

/* Views A of the n images into out_a [n, C, S, S] and views B into out_b (same shape). Image i
 * uses a generator seeded with eng_aug_image_seed(seed, i), drawing view A then view B, so the
 * result is bit-identical whatever the thread count. Images are spread over an OpenMP parallel
 * loop; per-thread scratch is allocated once per call and freed before returning. Returns 0, or
 * -1 (err filled with the first failure) when the config, any source or an allocation fails. */
int eng_aug_batch(const eng_aug_cfg *cfg, const eng_aug_src *srcs, int n, uint64_t seed,
                  float *out_a, float *out_b, eng_err *err);
/* eng_aug_batch for images first .. first+n-1 of a batch: srcs[i] is image first + i and uses
 * eng_aug_image_seed(seed, first + i), so a rank that augments only its shard of a batch makes
 * exactly the views the whole batch's eng_aug_batch makes for those images. */
int eng_aug_batch_from(const eng_aug_cfg *cfg, const eng_aug_src *srcs, int n, int first,
                       uint64_t seed, float *out_a, float *out_b, eng_err *err);

#endif
