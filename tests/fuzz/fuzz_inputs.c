/* fuzz_inputs.c — see fuzz_inputs.h. */
#include "fuzz_inputs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "eng_checkpoint.h"
#include "eng_export.h"
#include "eng_idx.h"
#include "eng_image.h"
#include "eng_infer.h"

/* Everything a decoded upload goes through in the server (svc_images.c) and the trainer. */
static void prepare(const eng_image *img) {
    eng_err err = {0};
    for (int ch = 1; ch <= 3; ch += 2) {
        eng_image copy, back;
        if (eng_train_copy_make(img, ch, 64, &copy, &err)) continue;
        uint8_t *bytes;
        size_t len;
        if (!eng_train_copy_pack(&copy, &bytes, &len, &err)) {
            if (!eng_train_copy_unpack(bytes, len, &back, &err)) {
                if (back.width != copy.width || back.height != copy.height ||
                    back.channels != copy.channels ||
                    memcmp(back.pixels, copy.pixels,
                           (size_t)copy.width * copy.height * copy.channels))
                    abort(); /* a round trip that changes the image is a bug */
                eng_image_free(&back);
            }
            free(bytes);
        }
        eng_aug_cfg view = eng_aug_defaults(16, ch);
        float *out = malloc(sizeof(float) * (size_t)ch * 16 * 16);
        eng_aug_src src = eng_image_as_src(&copy);
        if (out && !eng_infer_view(&view, &src, out, &err))
            for (int i = 0; i < ch * 16 * 16; i++)
                if (!isfinite(out[i])) abort();
        free(out);
        eng_image_free(&copy);
    }
}

int fuzz_image_input(const uint8_t *data, size_t size) {
    eng_err err = {0};
    eng_decode_opts opts = {.max_pixels = 4000000};
    eng_image img;
    (void)eng_image_sniff(data, size);
    if (!eng_image_decode(data, size, &opts, &img, &err)) {
        if (img.width < 1 || img.height < 1 || (long long)img.width * img.height > 4000000)
            abort(); /* the limit must hold for whatever the header claimed */
        prepare(&img);
        eng_image_free(&img);
    }
    if (!eng_train_copy_unpack(data, size, &img, &err)) {
        prepare(&img);
        eng_image_free(&img);
    }
    eng_idx idx;
    if (!eng_idx_parse(data, size, &idx, &err)) {
        size_t n = idx.count < 4 ? idx.count : 4;
        for (size_t i = 0; i < n; i++)
            if (!eng_idx_image(&idx, i, &img, &err)) eng_image_free(&img);
    }
    return 0;
}

/* Small enough to build and run in a fuzzing loop. */
static int small_model(const eng_config *c) {
    if (c->input_size > 32 || c->stem_width > 64) return 0;
    for (int i = 0; i < c->n_stages; i++)
        if (c->stage_width[i] > 64 || c->stage_blocks[i] > 2) return 0;
    for (int i = 0; i < c->n_proj; i++)
        if (c->proj[i] > 256) return 0;
    return 1;
}

int fuzz_checkpoint_input(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int fix_crc = data[0] & 1;
    size_t len = size - 1;
    uint8_t *blob = malloc(len ? len : 1); /* a copy of exactly len bytes: ASan sees overreads */
    if (!blob) return 0;
    memcpy(blob, data + 1, len);
    if (fix_crc && len >= 4) {
        uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), blob, (uInt)(len - 4));
        for (int i = 0; i < 4; i++) blob[len - 4 + i] = (uint8_t)(c >> (8 * i));
    }
    eng_err err = {0};
    eng_config cfg;
    eng_ckpt_meta meta;
    if (!eng_checkpoint_peek(blob, len, &cfg, &meta, &err) && small_model(&cfg)) {
        eng_infer inf;
        if (!eng_infer_create(&inf, blob, len, 1, 1, &err)) {
            uint8_t px[8 * 8 * 3];
            for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37);
            eng_aug_src src = {.width = 8, .height = 8, .channels = cfg.in_channels,
                               .pixels = px};
            float *out = malloc(sizeof(float) * (size_t)inf.dim);
            if (out) (void)eng_infer_embed(&inf, &src, 1, out, &err);
            free(out);
            eng_infer_free(&inf);
        }
        /* what GET /checkpoints/{id}/export does with a stored blob */
        eng_ckpt_weights w;
        if (!eng_checkpoint_weights(blob, len, &w, &err)) {
            for (int f = 0; f < ENG_EXPORT_N_FORMATS; f++) {
                uint8_t *file;
                size_t n;
                if (!eng_export(&w, (eng_export_format)f, 1, &file, &n, &err)) free(file);
            }
            eng_ckpt_weights_free(&w);
        }
    }
    free(blob);
    return 0;
}
