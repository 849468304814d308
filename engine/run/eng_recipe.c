/* eng_recipe.c — parsing a training recipe (see eng_recipe.h). */
#include "eng_recipe.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

enum { R_NUM, R_PAIR, R_STEPS };

/* One key: where its value goes (offsets into eng_trainer_cfg) and its range. */
typedef struct recipe_key {
    const char *name;
    int type;
    size_t at;       /* the field (R_PAIR: the first of two consecutive doubles) */
    double lo, hi;   /* inclusive bounds of every number */
} recipe_key;

#define OPT(f) offsetof(eng_trainer_cfg, opt) + offsetof(eng_lars_cfg, f)
#define AUG(f) offsetof(eng_trainer_cfg, aug) + offsetof(eng_aug_cfg, f)
static const recipe_key keys[] = {
    {"lr", R_NUM, OPT(lr_weights), 0, 100},
    {"lr_biases", R_NUM, OPT(lr_biases), 0, 100},
    {"weight_decay", R_NUM, OPT(weight_decay), 0, 1},
    {"eta", R_NUM, OPT(eta), 0, 10},
    {"momentum", R_NUM, OPT(momentum), 0, 0.9999},
    {"warmup", R_STEPS, OPT(warmup), 0, 1e9},
    {"cosine_steps", R_STEPS, OPT(total), 0, 1e12},
    {"crop_scale", R_PAIR, AUG(scale_min), 0.001, 1},
    {"crop_ratio", R_PAIR, AUG(ratio_min), 0.01, 100},
    {"flip", R_NUM, AUG(flip_p), 0, 1},
    {"jitter", R_NUM, AUG(jitter_p), 0, 1},
    {"brightness", R_NUM, AUG(brightness), 0, 10},
    {"contrast", R_NUM, AUG(contrast), 0, 10},
    {"saturation", R_NUM, AUG(saturation), 0, 10},
    {"hue", R_NUM, AUG(hue), 0, 0.5},
    {"gray", R_NUM, AUG(gray_p), 0, 1},
    {"blur", R_PAIR, AUG(blur_p), 0, 1},
    {"blur_sigma", R_PAIR, AUG(blur_sigma_min), 0, 64},
    {"solarize", R_PAIR, AUG(solarize_p), 0, 1},
    {"solarize_threshold", R_NUM, AUG(solarize_threshold), 0, 1},
};
#define N_KEYS (sizeof keys / sizeof *keys)

static int number(const json_t *v, const recipe_key *k, double *out, eng_err *err) {
    if (!json_is_number(v))
        return eng_fail_code(err, ERR_BAD_INPUT, "recipe: %s must be a number", k->name);
    double x = json_number_value(v);
    if (!isfinite(x) || x < k->lo || x > k->hi)
        return eng_fail_code(err, ERR_BAD_INPUT, "recipe: %s must be in [%g, %g] (got %g)",
                             k->name, k->lo, k->hi, x);
    *out = x;
    return 0;
}

int eng_recipe_apply(eng_trainer_cfg *cfg, const char *json_text, eng_err *err) {
    json_error_t je;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return eng_fail_code(err, ERR_BAD_INPUT, "recipe: not a JSON object%s%s",
                             root ? "" : ": ", root ? "" : je.text);
    }
    eng_trainer_cfg c = *cfg;
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, name, v) {
        const recipe_key *k = NULL;
        for (size_t i = 0; i < N_KEYS && !k; i++)
            if (!strcmp(keys[i].name, name)) k = &keys[i];
        if (!k) {
            rc = eng_fail_code(err, ERR_BAD_INPUT, "recipe: unknown key \"%s\"", name);
            break;
        }
        char *field = (char *)&c + k->at;
        double x, y;
        if (k->type == R_PAIR) {
            if (!json_is_array(v) || json_array_size(v) != 2) {
                rc = eng_fail_code(err, ERR_BAD_INPUT, "recipe: %s must be [a, b]", name);
                break;
            }
            if ((rc = number(json_array_get(v, 0), k, &x, err)) ||
                (rc = number(json_array_get(v, 1), k, &y, err)))
                break;
            memcpy(field, &x, sizeof x);
            memcpy(field + sizeof x, &y, sizeof y);
        } else {
            if ((rc = number(v, k, &x, err))) break;
            if (k->type == R_STEPS) {
                long steps = (long)x;
                if ((double)steps != x) {
                    rc = eng_fail_code(err, ERR_BAD_INPUT, "recipe: %s must be whole steps",
                                       name);
                    break;
                }
                memcpy(field, &steps, sizeof steps);
                if (field == (char *)&c.opt.total) c.opt.cosine = steps > 0;
            } else {
                memcpy(field, &x, sizeof x);
            }
        }
    }
    json_decref(root);
    if (rc) return -1;
    if (eng_aug_cfg_check(&c.aug, err)) {
        err->code = ERR_BAD_INPUT;
        return -1;
    }
    *cfg = c;
    return 0;
}

int eng_recipe_load(eng_trainer_cfg *cfg, const char *path, eng_err *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return eng_fail_code(err, ERR_BAD_INPUT, "recipe %s: %s", path, je.text);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return eng_fail_code(err, ERR_NO_MEMORY, "recipe %s: out of memory", path);
    int rc = eng_recipe_apply(cfg, text, err);
    free(text);
    return rc;
}
