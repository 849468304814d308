/* test_recipe.c — training recipes as JSON: every key lands in its field, and bad recipes are
 * refused with the configuration unchanged. */
#include <criterion/criterion.h>
#include <string.h>

#include "eng_config.h"
#include "eng_recipe.h"

static eng_trainer_cfg defaults(void) {
    eng_config cfg;
    eng_err e = {0};
    cr_assert(eng_config_preset(&cfg, "small", &e) == 0, "%s", e.msg);
    return eng_trainer_defaults(&cfg, 256);
}

/* 1 when every field a recipe can set is equal (compared one by one: padding is not data). */
static int same(const eng_trainer_cfg *a, const eng_trainer_cfg *b) {
    const eng_lars_cfg *x = &a->opt, *y = &b->opt;
    const eng_aug_cfg *p = &a->aug, *q = &b->aug;
    return a->batch == b->batch && a->seed == b->seed && x->momentum == y->momentum &&
           x->eta == y->eta && x->weight_decay == y->weight_decay &&
           x->lr_weights == y->lr_weights && x->lr_biases == y->lr_biases &&
           x->warmup == y->warmup && x->total == y->total && x->cosine == y->cosine &&
           p->scale_min == q->scale_min && p->scale_max == q->scale_max &&
           p->ratio_min == q->ratio_min && p->ratio_max == q->ratio_max &&
           p->flip_p == q->flip_p && p->jitter_p == q->jitter_p &&
           p->brightness == q->brightness && p->contrast == q->contrast &&
           p->saturation == q->saturation && p->hue == q->hue && p->gray_p == q->gray_p &&
           p->blur_p[0] == q->blur_p[0] && p->blur_p[1] == q->blur_p[1] &&
           p->blur_sigma_min == q->blur_sigma_min && p->blur_sigma_max == q->blur_sigma_max &&
           p->solarize_p[0] == q->solarize_p[0] && p->solarize_p[1] == q->solarize_p[1] &&
           p->solarize_threshold == q->solarize_threshold;
}

Test(recipe, every_key_sets_its_field_and_only_it) {
    eng_trainer_cfg c = defaults(), before = c;
    eng_err e = {0};
    cr_assert(eng_recipe_apply(&c,
                               "{\"lr\": 0.3, \"weight_decay\": 1e-4, \"eta\": 0.02,"
                               " \"crop_scale\": [0.08, 1], \"blur\": [0, 0],"
                               " \"solarize\": [0, 0.2], \"warmup\": 50, \"cosine_steps\": 900,"
                               " \"crop_ratio\": [0.5, 2], \"gray\": 0.1}",
                               &e) == 0,
              "%s", e.msg);
    cr_expect(c.opt.lr_weights == 0.3 && c.opt.weight_decay == 1e-4 && c.opt.eta == 0.02);
    cr_expect(c.aug.scale_min == 0.08 && c.aug.scale_max == 1.0);
    cr_expect(c.aug.ratio_min == 0.5 && c.aug.ratio_max == 2.0);
    cr_expect(c.aug.blur_p[0] == 0 && c.aug.blur_p[1] == 0);
    cr_expect(c.aug.solarize_p[0] == 0 && c.aug.solarize_p[1] == 0.2);
    cr_expect(c.aug.gray_p == 0.1);
    cr_expect(c.opt.warmup == 50 && c.opt.total == 900 && c.opt.cosine == 1);
    /* untouched fields keep their defaults */
    cr_expect(c.opt.momentum == before.opt.momentum && c.opt.lr_biases == before.opt.lr_biases);
    cr_expect(c.aug.flip_p == before.aug.flip_p && c.aug.hue == before.aug.hue);
    cr_expect(c.batch == before.batch && c.aug.size == before.aug.size);
    /* an empty recipe changes nothing */
    eng_trainer_cfg d = defaults();
    cr_assert(eng_recipe_apply(&d, "{}", &e) == 0, "%s", e.msg);
    cr_expect(same(&d, &before));
}

Test(recipe, bad_recipes_are_refused_naming_the_key_and_change_nothing) {
    static const struct {
        const char *json, *says;
    } bad[] = {
        {"{\"lr\": \"fast\"}", "lr must be a number"},
        {"{\"learning_rate\": 0.1}", "unknown key \"learning_rate\""},
        {"{\"eta\": -1}", "eta must be in"},
        {"{\"crop_scale\": [0.5]}", "crop_scale must be [a, b]"},
        {"{\"blur\": [0, 2]}", "blur must be in"},
        {"{\"warmup\": 1.5}", "warmup must be whole steps"},
        {"{\"crop_scale\": [0.9, 0.1]}", "scale"}, /* min above max: the augmenter's check */
        {"[1]", "not a JSON object"},
        {"{\"lr\": 0.1, \"lr\": 0.2}", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        eng_trainer_cfg c = defaults(), before = c;
        eng_err e = {0};
        cr_expect_neq(eng_recipe_apply(&c, bad[i].json, &e), 0, "%s was accepted", bad[i].json);
        cr_expect(strstr(e.msg, bad[i].says), "%s: %s", bad[i].json, e.msg);
        cr_expect_eq(e.code, ERR_BAD_INPUT, "%s", bad[i].json);
        cr_expect(same(&c, &before), "%s changed the config", bad[i].json);
    }
}
