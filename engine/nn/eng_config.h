/* eng_config.h — the model's shape, as a JSON object (stored with every checkpoint).
 *
 *   {"in_channels": 1, "input_size": 16, "stem_width": 8,
 *    "stages": [[1, 8], [1, 16]], "projector": [32, 32], "lambda": 0.0051}
 *
 * Presets: "tiny" (above), "small" (the CPU serving default) and "resnet18". */
#ifndef ENG_CONFIG_H
#define ENG_CONFIG_H

#include "eng_err.h"

#define ENG_MAX_STAGES 8
#define ENG_MAX_PROJ 8

typedef struct eng_config {
    int in_channels;                 /* image channels: 1 (gray) or 3 (RGB), up to 4 */
    int input_size;                  /* S: the network sees S×S crops */
    int stem_width;                  /* channels out of the stem convolution */
    int n_stages;                    /* 1..ENG_MAX_STAGES */
    int stage_blocks[ENG_MAX_STAGES]; /* residual blocks per stage */
    int stage_width[ENG_MAX_STAGES];  /* channels of each stage */
    int n_proj;                      /* projector layers, 1..ENG_MAX_PROJ */
    int proj[ENG_MAX_PROJ];          /* output width of each projector Linear */
    double lambda;                   /* off-diagonal weight of the Barlow Twins loss */
} eng_config;

/* Parses and validates a config from JSON text. Unknown keys, missing keys, wrong types and
 * out-of-range values are refused with a message naming the key. */
int eng_config_parse(eng_config *cfg, const char *json_text, eng_err *err);
/* Reads a JSON config file. */
int eng_config_load(eng_config *cfg, const char *path, eng_err *err);
/* Fills a named preset ("tiny", "small", "resnet18"). */
int eng_config_preset(eng_config *cfg, const char *name, eng_err *err);
/* A preset name, or else a path to a JSON file. */
int eng_config_resolve(eng_config *cfg, const char *name_or_path, eng_err *err);
/* Canonical compact JSON text of cfg; malloc'd, caller frees. NULL on out of memory. */
char *eng_config_to_json(const eng_config *cfg);

/* 1 if two configs describe the same model (lambda compared exactly). */
int eng_config_equal(const eng_config *a, const eng_config *b);

/* Dimension of the representation (last stage's width) and of the projector output. */
int eng_config_rep_dim(const eng_config *cfg);
int eng_config_out_dim(const eng_config *cfg);
/* Spatial size after the last stage (each stage after the first halves it, rounding up). */
int eng_config_final_size(const eng_config *cfg);
/* Multiply-adds ×2 of one view's forward pass through encoder and projector. */
double eng_config_forward_flops(const eng_config *cfg);

#endif
