/* test_lars.c — LARS and its schedule against the PyTorch reference (tests/fixtures/lars). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eng_lars.h"
#include "eng_model.h"
#include "test_util.h"

Test(lars, ten_steps_equal_the_pytorch_reference) {
    char *text = tu_fixture_text("lars", "lars.json");
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    cr_assert(j != NULL, "lars.json: %s", jerr.text);
    eng_lars_cfg cfg = eng_lars_defaults((int)json_integer_value(json_object_get(j, "batch")));
    cfg.warmup = (long)json_integer_value(json_object_get(j, "warmup"));
    cfg.total = (long)json_integer_value(json_object_get(j, "total"));
    cfg.cosine = !strcmp(json_string_value(json_object_get(j, "schedule")), "cosine");
    cfg.momentum = json_number_value(json_object_get(j, "momentum"));
    cfg.eta = json_number_value(json_object_get(j, "eta"));
    cfg.weight_decay = json_number_value(json_object_get(j, "weight_decay"));
    cfg.lr_weights = json_number_value(json_object_get(j, "lr_weights"));
    cfg.lr_biases = json_number_value(json_object_get(j, "lr_biases"));
    json_decref(j);
    free(text);

    /* the tiny model's canonical table gives the tensor boundaries and which are 1-D */
    eng_config mc;
    eng_err err = {0};
    cr_assert(eng_config_preset(&mc, "tiny", &err) == 0);
    eng_param *tab;
    int n_tab;
    size_t n;
    cr_assert(eng_model_param_table(&mc, &tab, &n_tab, &n, &err) == 0, "%s", err.msg);
    size_t np, ng, na;
    float *params = tu_fixture_floats("lars", "params0.bin", &np);
    float *grads = tu_fixture_floats("lars", "grads.bin", &ng);
    float *after = tu_fixture_floats("lars", "params_after.bin", &na);
    cr_assert(np == n && ng == 10 * n && na == 10 * n, "fixture sizes %zu %zu %zu vs %zu", np, ng,
              na, n);
    float *mu = calloc(n, sizeof(float)), *p0 = malloc(n * sizeof(float));
    float *got_d = malloc(n * sizeof(float)), *want_d = malloc(n * sizeof(float));
    memcpy(p0, params, n * sizeof(float));
    for (long step = 0; step < 10; step++) {
        eng_lars_step(&cfg, tab, n_tab, params, grads + step * n, mu, step);
        for (int t = 0; t < n_tab; t++) {
            const float *want = after + step * n + tab[t].offset;
            const float *got = params + tab[t].offset;
            double e = tu_rel_l2(got, want, tab[t].count);
            cr_expect(e < 1e-6, "step %ld %s: relative L2 error %.3g", step, tab[t].name, e);
            /* the parameters barely move, so also compare what LARS computes: the change (to the
             * precision float32 parameters can hold; a wrong trust ratio is off by far more) */
            for (size_t i = 0; i < tab[t].count; i++) {
                got_d[i] = got[i] - p0[tab[t].offset + i];
                want_d[i] = want[i] - p0[tab[t].offset + i];
            }
            double de = tu_rel_l2(got_d, want_d, tab[t].count);
            cr_expect(de < 5e-3, "step %ld %s: change off by %.3g (relative L2)", step,
                      tab[t].name, de);
        }
    }
    free(mu);
    free(p0);
    free(got_d);
    free(want_d);
    free(params);
    free(grads);
    free(after);
    free(tab);
}

Test(lars, schedule_warms_up_linearly_then_follows_the_cosine) {
    eng_lars_cfg c = eng_lars_defaults(512);
    c.warmup = 10;
    c.total = 110;
    c.cosine = 1;
    cr_expect(eng_lars_lr_scale(&c, 0) == 0.0);
    cr_expect(fabs(eng_lars_lr_scale(&c, 5) - 1.0) < 1e-12, "half-way through warmup at batch 512");
    cr_expect(fabs(eng_lars_lr_scale(&c, 10) - 2.0) < 1e-12);
    cr_expect(fabs(eng_lars_lr_scale(&c, 60) - (1.0 + 0.001)) < 1e-9, "cosine midpoint");
    cr_expect(fabs(eng_lars_lr_scale(&c, 110) - 0.002) < 1e-12, "end at 0.001 of the base");
    cr_expect(fabs(eng_lars_lr_scale(&c, 1000) - 0.002) < 1e-12, "stays at the end value");
    c.cosine = 0;
    cr_expect(eng_lars_lr_scale(&c, 1000000) == 2.0, "constant after warmup");
}

Test(lars, one_dimensional_parameters_skip_decay_and_trust_ratio) {
    eng_param tab[2] = {{.name = "w", .ndims = 2, .shape = {1, 2}, .offset = 0, .count = 2},
                        {.name = "b", .ndims = 1, .shape = {2}, .offset = 2, .count = 2}};
    float p[4] = {3, 4, 1, 1}, g[4] = {1, 0, 0.5f, -0.5f}, mu[4] = {0};
    eng_lars_cfg c = eng_lars_defaults(256);
    c.warmup = 0;
    eng_lars_step(&c, tab, 2, p, g, mu, 0);
    /* bias: plain momentum SGD at lr 0.0048 */
    cr_expect(fabsf(p[2] - (1 - 0.0048f * 0.5f)) < 1e-7f, "bias %g", p[2]);
    cr_expect(fabsf(p[3] - (1 + 0.0048f * 0.5f)) < 1e-7f, "bias %g", p[3]);
    /* weight: dp = g + wd·p, scaled by η‖p‖/‖dp‖ = 0.001·5/‖dp‖ */
    double d0 = 1 + 1.5e-6 * 3, d1 = 1.5e-6 * 4, q = 0.001 * 5 / sqrt(d0 * d0 + d1 * d1);
    cr_expect(fabs(p[0] - (3 - 0.2 * q * d0)) < 1e-6, "weight %g", p[0]);
    cr_expect(fabs(p[1] - (4 - 0.2 * q * d1)) < 1e-6, "weight %g", p[1]);
}
