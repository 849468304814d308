/* eng_infer.c — inference from a checkpoint: the evaluation view, then the encoder. */
#include "eng_infer.h"

#include <stdlib.h>
#include <string.h>

#include "eng_checkpoint.h"

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
    if (eng_checkpoint_load(&inf->model, blob, len, NULL, err) ||
        eng_model_freeze(&inf->model, err)) {
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
