/* test_model.c — the whole network against PyTorch fixtures (tests/gen_fixtures.py), plus
 * initialisation, determinism and the inference path. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eng_model.h"
#include "test_util.h"

/* Runs one training forward+backward on a fixture and compares loss, every gradient tensor, the
 * representation and the running statistics with PyTorch's float64 results. */
static void check_fixture(const char *name) {
    eng_err err = {0};
    eng_config cfg;
    char *json = tu_fixture_text(name, "config.json");
    cr_assert(eng_config_parse(&cfg, json, &err) == 0, "%s", err.msg);
    free(json);
    size_t np, nv, no, nr, ns;
    float *params = tu_fixture_floats(name, "params.bin", &np);
    float *views = tu_fixture_floats(name, "views.bin", &nv);
    float *out = tu_fixture_floats(name, "out.bin", &no);
    float *rep = tu_fixture_floats(name, "rep.bin", &nr);
    float *running = tu_fixture_floats(name, "running.bin", &ns);
    size_t per_image = (size_t)cfg.in_channels * cfg.input_size * cfg.input_size;
    int n = (int)(nv / per_image / 2);

    eng_model m;
    cr_assert(eng_model_build(&m, &cfg, n, 1, &err) == 0, "%s", err.msg);
    cr_assert_eq(m.n_floats, np, "parameter count %zu, fixture has %zu", m.n_floats, np);
    cr_assert_eq(no, np + 1);
    cr_assert_eq(m.n_stats, ns, "running stats %zu floats, fixture has %zu", m.n_stats, ns);
    memcpy(m.params, params, np * sizeof(float));
    memcpy(eng_model_input(&m), views, nv * sizeof(float));
    cr_assert(eng_model_forward_backward(&m, &err) == 0, "%s", err.msg);
    char impls[1024];
    eng_ctx_impls(&m.ctx, impls, sizeof impls);
    tu_coverage("model %s under oneDNN ISA %s: %s", name, eng_cpu_isa(), impls);
    if (!strcmp(name, "wide64") && !strncmp(eng_cpu_isa(), "avx512", 6))
        cr_expect(strstr(impls, "wino") != NULL, "no Winograd convolution on %s: %s",
                  eng_cpu_isa(), impls); /* the point of this fixture where oneDNN has one */

    double loss_err = fabs(m.last_loss - out[0]) / fabs(out[0]);
    cr_expect(loss_err < 1e-4, "%s: loss %.8g, PyTorch %.8g (rel %.3g)", name, m.last_loss, out[0],
              loss_err);
    for (int t = 0; t < m.n_params; t++) {
        const eng_param *p = &m.tab[t];
        char label[96];
        snprintf(label, sizeof label, "%s grad %s", name, p->name);
        double e = tu_check_tensor(label, m.grads + p->offset, out + 1 + p->offset, p->count);
        cr_expect(e < 1e-4, "%s: relative L2 error %.3g", label, e);
    }
    double re = tu_check_tensor("representation", eng_model_rep(&m), rep, nr);
    cr_expect(re < 1e-4, "%s representation: relative L2 error %.3g", name, re);
    double se = tu_check_tensor("running stats", m.stats, running, ns);
    cr_expect(se < 1e-5, "%s running statistics: relative L2 error %.3g", name, se);
    eng_model_free(&m);
    free(params);
    free(views);
    free(out);
    free(rep);
    free(running);
}

Test(model, matches_pytorch_on_tiny) { check_fixture("tiny"); }
Test(model, matches_pytorch_with_three_channels_two_blocks_per_stage_and_3_layer_projector) {
    check_fixture("deep3ch");
}
Test(model, matches_pytorch_with_odd_sizes_and_widths_and_three_stages) { check_fixture("odd"); }
Test(model, matches_pytorch_with_wide_layers_where_convolutions_run_as_winograd) {
    check_fixture("wide64");
}

/* The ISA pass this binary runs in (scripts/dev test runs the engine's tests once as the CPU is and,
 * on an AVX-512 CPU, again under ONEDNN_MAX_CPU_ISA=AVX2): oneDNN's kernels must really be the
 * ones that pass is for, else the second pass would test the first one's code twice. */
Test(model, onednn_kernels_are_those_of_the_isa_this_pass_allows) {
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_resolve(&cfg, "tiny", &err) == 0, "%s", err.msg);
    eng_model m;
    cr_assert(eng_model_build(&m, &cfg, 4, 1, &err) == 0, "%s", err.msg);
    char impls[1024];
    eng_ctx_impls(&m.ctx, impls, sizeof impls);
    const char *isa = eng_cpu_isa(), *max = getenv("ONEDNN_MAX_CPU_ISA");
    int cpu512 = tu_cpu_has("avx512f") && tu_cpu_has("avx512bw") && tu_cpu_has("avx512vl") &&
                 tu_cpu_has("avx512dq");
    tu_coverage("oneDNN ISA %s (CPU %s AVX-512, ONEDNN_MAX_CPU_ISA=%s)", isa,
                cpu512 ? "has" : "lacks", max ? max : "unset");
    cr_expect(m.ctx.n_impls > 0, "no implementation recorded");
    if ((max && !strcasecmp(max, "AVX2")) || !cpu512) {
        cr_expect(!strncmp(isa, "avx2", 4), "oneDNN runs %s in an AVX2 pass", isa);
        cr_expect(strstr(impls, "avx512") == NULL, "AVX-512 kernels in an AVX2 pass: %s", impls);
        cr_expect(strstr(impls, "avx2") != NULL, "no AVX2 kernel in an AVX2 pass: %s", impls);
    } else {
        cr_expect(!strncmp(isa, "avx512", 6), "oneDNN runs %s on an AVX-512 CPU", isa);
        cr_expect(strstr(impls, "avx512") != NULL, "no AVX-512 kernel on an AVX-512 CPU: %s",
                  impls);
    }
    eng_model_free(&m);
}

/* Helper: a training model of a preset with a seeded init and random input. */
static void build_seeded(eng_model *m, const char *preset, int batch, int training, uint64_t seed) {
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, preset, &err) == 0, "%s", err.msg);
    cr_assert(eng_model_build(m, &cfg, batch, training, &err) == 0, "%s", err.msg);
    eng_model_init_params(m, seed);
    tu_randn(eng_model_input(m), m->input.bytes / sizeof(float), seed + 1, 1.0);
}

Test(model, initialisation_follows_torchvision) {
    eng_model m;
    build_seeded(&m, "small", 2, 1, 42);
    int saw_bn2 = 0, saw_conv = 0, saw_linear = 0;
    for (int t = 0; t < m.n_params; t++) {
        const eng_param *p = &m.tab[t];
        const float *w = m.params + p->offset;
        double s1 = 0, s2 = 0, mx = 0;
        for (size_t i = 0; i < p->count; i++) {
            s1 += w[i];
            s2 += (double)w[i] * w[i];
            if (fabs(w[i]) > mx) mx = fabs(w[i]);
        }
        double mean = s1 / p->count, sd = sqrt(s2 / p->count - mean * mean);
        if (p->ndims == 4 && p->count > 10000) {
            double want = sqrt(2.0 / (p->shape[0] * p->shape[2] * p->shape[3]));
            cr_expect(fabs(sd / want - 1) < 0.05, "%s: std %.4g, Kaiming fan-out wants %.4g",
                      p->name, sd, want);
            saw_conv++;
        } else if (p->ndims == 2) {
            double bound = 1.0 / sqrt(p->shape[1]);
            cr_expect(mx <= bound, "%s: |w| max %.4g exceeds 1/sqrt(fan_in) %.4g", p->name, mx, bound);
            cr_expect(fabs(sd / (bound / sqrt(3.0)) - 1) < 0.05, "%s: std %.4g", p->name, sd);
            saw_linear++;
        } else if (p->ndims == 1) {
            int is_w = strstr(p->name, ".weight") != NULL;
            int bn2 = is_w && strstr(p->name, ".bn2.") != NULL;
            double want = is_w && !bn2 ? 1.0 : 0.0;
            saw_bn2 += bn2;
            for (size_t i = 0; i < p->count; i++)
                cr_expect(w[i] == want, "%s[%zu] = %g, want %g", p->name, i, w[i], want);
        }
    }
    cr_expect(saw_bn2 == 4 && saw_conv > 3 && saw_linear == 3, "bn2 %d conv %d linear %d", saw_bn2,
              saw_conv, saw_linear);
    size_t ones = 0;
    for (size_t i = 0; i < m.n_stats; i++) ones += m.stats[i] == 1.0f;
    cr_expect_eq(ones * 2, m.n_stats, "half the running statistics (the variances) start at 1");
    eng_model_free(&m);
}

Test(model, same_seed_same_weights_other_seed_other_weights) {
    eng_model a, b, c;
    build_seeded(&a, "tiny", 2, 0, 5);
    build_seeded(&b, "tiny", 2, 0, 5);
    build_seeded(&c, "tiny", 2, 0, 6);
    cr_expect(memcmp(a.params, b.params, a.n_floats * sizeof(float)) == 0);
    cr_expect(memcmp(a.params, c.params, a.n_floats * sizeof(float)) != 0);
    eng_model_free(&a);
    eng_model_free(&b);
    eng_model_free(&c);
}

Test(model, training_step_is_deterministic_and_repeatable) {
    eng_err err = {0};
    eng_model m;
    build_seeded(&m, "tiny", 16, 1, 9);
    cr_assert(eng_model_forward_backward(&m, &err) == 0, "%s", err.msg);
    float *g1 = malloc(m.n_floats * sizeof(float));
    memcpy(g1, m.grads, m.n_floats * sizeof(float));
    double l1 = m.last_loss;
    cr_assert(eng_model_forward_backward(&m, &err) == 0, "%s", err.msg);
    cr_expect(l1 == m.last_loss, "loss %.9g then %.9g", l1, m.last_loss);
    cr_expect(memcmp(g1, m.grads, m.n_floats * sizeof(float)) == 0, "gradients differ between runs");
    free(g1);
    eng_model_free(&m);
}

Test(model, lars_training_lowers_the_loss_on_a_fixed_batch) {
    eng_err err = {0};
    eng_model m;
    build_seeded(&m, "tiny", 32, 1, 3);
    eng_lars_cfg opt = eng_lars_defaults(32);
    opt.warmup = 2;
    double first = 0;
    for (long s = 0; s < 30; s++) {
        cr_assert(eng_model_train_step(&m, &opt, s, &err) == 0, "%s", err.msg);
        if (s == 0) first = m.last_loss;
    }
    cr_expect(m.last_loss < 0.8 * first, "loss went from %.3f to %.3f", first, m.last_loss);
    eng_model_free(&m);
}

/* Inference: BN uses running statistics, so each image's representation must not depend on the
 * rest of the batch (whatever kernels, e.g. Winograd, oneDNN picks for either batch size). */
static void check_batch_independence(const char *preset) {
    eng_err err = {0};
    eng_model big, one;
    build_seeded(&big, preset, 5, 0, 11);
    build_seeded(&one, preset, 1, 0, 11);
    /* non-trivial running statistics */
    for (size_t i = 0; i < big.n_stats; i++) big.stats[i] = one.stats[i] = 0.5f + 0.01f * (i % 7);
    cr_assert(eng_model_forward(&big, &err) == 0, "%s", err.msg);
    size_t per = big.input.bytes / sizeof(float) / 5;
    int dim = eng_config_rep_dim(&big.cfg);
    for (int k = 0; k < 5; k++) {
        memcpy(eng_model_input(&one), eng_model_input(&big) + k * per, per * sizeof(float));
        cr_assert(eng_model_forward(&one, &err) == 0, "%s", err.msg);
        double e = tu_rel_l2(eng_model_rep(&one), eng_model_rep(&big) + (size_t)k * dim, (size_t)dim);
        cr_expect(e < 1e-5, "%s image %d: batch-of-1 vs batch-of-5 relative error %.3g", preset, k,
                  e);
    }
    eng_model_free(&big);
    eng_model_free(&one);
}

Test(model, inference_representation_does_not_depend_on_the_batch) {
    check_batch_independence("tiny");
    check_batch_independence("small");
}

Test(model, refuses_a_training_batch_of_one) {
    eng_err err = {0};
    eng_config cfg;
    eng_model m;
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0);
    cr_expect(eng_model_build(&m, &cfg, 1, 1, &err) != 0);
    cr_expect(strstr(err.msg, "batch") != NULL, "message: %s", err.msg);
}
