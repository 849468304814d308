/* test_checkpoint.c — checkpoint blobs: round trip, bit-for-bit resume, refusal of corrupt,
 * truncated and mismatched blobs with the model left untouched. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_checkpoint.h"
#include "test_util.h"

static void build(eng_model *m, const char *preset, int batch, int training) {
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, preset, &err) == 0, "%s", err.msg);
    cr_assert(eng_model_build(m, &cfg, batch, training, &err) == 0, "%s", err.msg);
    eng_model_init_params(m, 17);
}

/* Training steps on inputs that change every step but depend only on the step number. */
static void train(eng_model *m, const eng_lars_cfg *opt, long from, long to) {
    eng_err err = {0};
    size_t n = m->input.bytes / sizeof(float);
    for (long s = from; s < to; s++) {
        tu_randn(eng_model_input(m), n, 1000 + (unsigned long long)s, 1.0);
        cr_assert(eng_model_train_step(m, opt, s, &err) == 0, "%s", err.msg);
    }
}

static eng_ckpt_meta meta_for(const eng_lars_cfg *opt, uint64_t step) {
    eng_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = step;
    meta.loss = 1.25;
    meta.opt = *opt;
    meta.n_rng = 2;
    eng_rng_seed(&meta.rng[0], 5);
    eng_rng_seed(&meta.rng[1], 6);
    eng_rng_next(&meta.rng[1]);
    return meta;
}

Test(checkpoint, round_trip_restores_weights_statistics_momentum_and_meta) {
    eng_err err = {0};
    eng_model a, b;
    build(&a, "tiny", 8, 1);
    eng_lars_cfg opt = eng_lars_defaults(8);
    opt.warmup = 1;
    train(&a, &opt, 0, 2);
    eng_ckpt_meta meta = meta_for(&opt, 2), back;
    uint8_t *blob;
    size_t len;
    cr_assert(eng_checkpoint_save(&a, &meta, &blob, &len, &err) == 0, "%s", err.msg);
    build(&b, "tiny", 8, 1);
    cr_assert(eng_checkpoint_load(&b, blob, len, &back, &err) == 0, "%s", err.msg);
    cr_expect(memcmp(a.params, b.params, a.n_floats * 4) == 0, "parameters differ");
    cr_expect(memcmp(a.stats, b.stats, a.n_stats * 4) == 0, "running statistics differ");
    cr_expect(memcmp(a.momentum, b.momentum, a.n_floats * 4) == 0, "momentum differs");
    cr_expect(back.step == 2 && back.loss == 1.25 && back.n_rng == 2);
    cr_expect(back.opt.batch == 8 && back.opt.warmup == 1 && back.opt.lr_biases == opt.lr_biases);
    cr_expect(memcmp(back.rng, meta.rng, sizeof meta.rng[0] * 2) == 0, "generator states differ");
    eng_config cfg;
    cr_assert(eng_checkpoint_peek(blob, len, &cfg, NULL, &err) == 0, "%s", err.msg);
    cr_expect(eng_config_equal(&cfg, &a.cfg));
    free(blob);
    eng_model_free(&a);
    eng_model_free(&b);
}

Test(checkpoint, resuming_from_a_checkpoint_is_bit_for_bit_the_same_run) {
    eng_err err = {0};
    eng_lars_cfg opt = eng_lars_defaults(8);
    opt.warmup = 2;
    eng_model straight, first, second;
    build(&straight, "tiny", 8, 1);
    train(&straight, &opt, 0, 6);

    build(&first, "tiny", 8, 1);
    train(&first, &opt, 0, 3);
    eng_ckpt_meta meta = meta_for(&opt, 3), back;
    uint8_t *blob;
    size_t len;
    cr_assert(eng_checkpoint_save(&first, &meta, &blob, &len, &err) == 0, "%s", err.msg);
    eng_model_free(&first);
    build(&second, "tiny", 8, 1);
    cr_assert(eng_checkpoint_load(&second, blob, len, &back, &err) == 0, "%s", err.msg);
    train(&second, &back.opt, (long)back.step, 6);
    cr_expect(memcmp(straight.params, second.params, straight.n_floats * 4) == 0,
              "6 straight steps and 3 + save/load + 3 differ (rel %.3g)",
              tu_rel_l2(second.params, straight.params, straight.n_floats));
    cr_expect(memcmp(straight.stats, second.stats, straight.n_stats * 4) == 0);
    cr_expect(straight.last_loss == second.last_loss);
    free(blob);
    eng_model_free(&straight);
    eng_model_free(&second);
}

/* The model must be exactly as before after any refused load. */
static void expect_refused(eng_model *m, const uint8_t *blob, size_t len, const char *what) {
    eng_err err = {0};
    float *before = malloc(m->n_floats * 4);
    memcpy(before, m->params, m->n_floats * 4);
    cr_expect(eng_checkpoint_load(m, blob, len, NULL, &err) != 0, "%s: accepted", what);
    cr_expect(err.msg[0] != 0, "%s: refused without a message", what);
    cr_expect(memcmp(before, m->params, m->n_floats * 4) == 0, "%s: model changed", what);
    free(before);
}

Test(checkpoint, corrupt_truncated_or_foreign_blobs_are_refused_and_nothing_is_loaded) {
    eng_err err = {0};
    eng_model a, target;
    build(&a, "tiny", 4, 1);
    build(&target, "tiny", 4, 1);
    eng_model_init_params(&target, 99);
    eng_lars_cfg opt = eng_lars_defaults(4);
    eng_ckpt_meta meta = meta_for(&opt, 0);
    uint8_t *blob;
    size_t len;
    cr_assert(eng_checkpoint_save(&a, &meta, &blob, &len, &err) == 0, "%s", err.msg);
    uint8_t *copy = malloc(len);
    /* one flipped byte anywhere: header, config JSON, parameters, statistics, checksum */
    for (size_t k = 0; k < 300; k++) {
        size_t at = (k * 7919u) % len;
        memcpy(copy, blob, len);
        copy[at] ^= 0x20;
        char what[64];
        snprintf(what, sizeof what, "byte %zu flipped", at);
        expect_refused(&target, copy, len, what);
    }
    /* every kind of truncation */
    for (size_t cut = 0; cut < len; cut += 1 + cut / 3) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cut);
        expect_refused(&target, blob, cut, what);
    }
    /* a different model's checkpoint */
    eng_model other;
    eng_config cfg;
    cr_assert(eng_config_parse(&cfg, "{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8,"
                                     " \"stages\": [[1, 8], [1, 16]], \"projector\": [32, 32],"
                                     " \"lambda\": 0.02}", &err) == 0);
    cr_assert(eng_model_build(&other, &cfg, 4, 1, &err) == 0, "%s", err.msg);
    uint8_t *oblob;
    size_t olen;
    cr_assert(eng_checkpoint_save(&other, &meta, &oblob, &olen, &err) == 0, "%s", err.msg);
    expect_refused(&target, oblob, olen, "another config (lambda)");
    free(oblob);
    eng_model_free(&other);
    free(copy);
    free(blob);
    eng_model_free(&a);
    eng_model_free(&target);
}

Test(checkpoint, an_inference_model_serves_a_training_checkpoint) {
    eng_err err = {0};
    eng_model trainer, server;
    build(&trainer, "tiny", 4, 1);
    eng_lars_cfg opt = eng_lars_defaults(4);
    opt.warmup = 1;
    train(&trainer, &opt, 0, 2);
    eng_ckpt_meta meta = meta_for(&opt, 2);
    uint8_t *blob;
    size_t len;
    cr_assert(eng_checkpoint_save(&trainer, &meta, &blob, &len, &err) == 0, "%s", err.msg);
    build(&server, "tiny", 3, 0);
    cr_assert(eng_checkpoint_load(&server, blob, len, NULL, &err) == 0, "%s", err.msg);
    cr_expect(memcmp(server.params, trainer.params, trainer.n_floats * 4) == 0);
    cr_expect(server.n_stats < trainer.n_stats, "inference keeps only the encoder's statistics");
    cr_expect(memcmp(server.stats, trainer.stats, server.n_stats * 4) == 0);
    cr_assert(eng_model_forward(&server, &err) == 0, "%s", err.msg);
    free(blob);
    eng_model_free(&trainer);
    eng_model_free(&server);
}
