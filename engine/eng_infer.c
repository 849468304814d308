/* eng_infer.c — inference from a checkpoint, and the training copy of an uploaded image. */
#include "engine/eng_infer.h"

#include <stdlib.h>
#include <string.h>

#include "engine/eng_checkpoint.h"

int eng_infer_create(eng_infer *inf, const void *blob, size_t len, int batch, int threads,
                     eng_err *err) {
    memset(inf, 0, sizeof *inf);
    if (batch < 1) return eng_fail(err, "infer: batch must be at least 1 (got %d)", batch);
    eng_ckpt_meta meta;
    if (eng_checkpoint_peek(blob, len, &inf->cfg, &meta, err)) return -1;
    int team = eng_get_threads();
    if (threads >= 1) eng_set_threads(threads);
    int built = eng_model_build(&inf->model, &inf->cfg, batch, 0, err);
    eng_set_threads(team);
    if (built) return -1;
    if (eng_checkpoint_load(&inf->model, blob, len, NULL, err)) {
        eng_model_free(&inf->model);
        memset(inf, 0, sizeof *inf);
        return -1;
    }
    inf->view = eng_aug_defaults(inf->cfg.input_size, inf->cfg.in_channels);
    inf->batch = batch;
    inf->dim = eng_config_rep_dim(&inf->cfg);
    inf->step = meta.step;
    return 0;
}

int eng_infer_view(const eng_aug_cfg *view, const eng_aug_src *src, float *out, eng_err *err) {
    eng_aug_box box = {0, 0, src->width, src->height, 0};
    if (eng_aug_resized_crop(src, &box, view->size, out, err)) return -1;
    eng_aug_normalize(out, view->channels, view->size, view->size, view->mean, view->std);
    return 0;
}

int eng_infer_embed(eng_infer *inf, const eng_aug_src *imgs, int n, float *out, eng_err *err) {
    size_t per = (size_t)inf->cfg.in_channels * inf->cfg.input_size * inf->cfg.input_size;
    for (int first = 0; first < n; first += inf->batch) {
        int m = n - first < inf->batch ? n - first : inf->batch;
        float *in = eng_model_input(&inf->model);
        for (int i = 0; i < m; i++) {
            if (imgs[first + i].channels != inf->cfg.in_channels)
                return eng_fail(err, "infer: image has %d channels, the model takes %d",
                                imgs[first + i].channels, inf->cfg.in_channels);
            if (eng_infer_view(&inf->view, &imgs[first + i], in + (size_t)i * per, err)) return -1;
        }
        /* a short last batch: rows past m keep older inputs; their outputs are not read (rows
         * do not mix in inference) */
        if (eng_model_forward(&inf->model, err)) return -1;
        memcpy(out + (size_t)first * inf->dim, eng_model_rep(&inf->model),
               (size_t)m * inf->dim * sizeof(float));
    }
    return 0;
}

void eng_infer_free(eng_infer *inf) {
    if (inf->batch) eng_model_free(&inf->model);
    memset(inf, 0, sizeof *inf);
}

int eng_train_copy_make(const eng_image *decoded, int channels, int side, eng_image *out,
                        eng_err *err) {
    eng_image conv = {0};
    if (eng_image_convert(decoded, channels, &conv, err)) return -1;
    int rc = eng_image_downscale(&conv, side, out, err);
    eng_image_free(&conv);
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
