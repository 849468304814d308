/* eng_recipe.h — a training recipe as JSON: the optimiser's and the augmentations' settings
 * applied over eng_trainer_defaults, so that recipes can be tried (bench/quality, docs/QUALITY.md)
 * and shipped without code changes.
 *
 * Every key is optional; a key sets one field and leaves the rest as they were:
 *   "lr", "lr_biases", "weight_decay", "eta", "momentum"    LARS (eng_lars_cfg)
 *   "warmup" (steps), "cosine_steps" (0: constant after warmup)
 *   "crop_scale": [min, max], "crop_ratio": [min, max], "flip"
 *   "jitter", "brightness", "contrast", "saturation", "hue", "gray"
 *   "blur": [view A, view B], "blur_sigma": [min, max]
 *   "solarize": [view A, view B], "solarize_threshold"
 * Unknown keys, wrong types and values that eng_aug_cfg_check or the optimiser would refuse are
 * refused with a message naming the key, and *cfg is then unchanged. */
#ifndef ENG_RECIPE_H
#define ENG_RECIPE_H

#include "eng_trainer.h"

int eng_recipe_apply(eng_trainer_cfg *cfg, const char *json_text, eng_err *err);
/* Reads a recipe file and applies it. */
int eng_recipe_load(eng_trainer_cfg *cfg, const char *path, eng_err *err);

#endif
