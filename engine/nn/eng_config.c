/* eng_config.c — parsing, validation, presets and serialisation of the model config. */
#include "eng_config.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Limits that keep a hostile or mistaken config from asking for absurd memory. */
#define MAX_CHANNELS 4
#define MAX_INPUT 1024
#define MAX_WIDTH 8192
#define MAX_BLOCKS 64
#define MAX_PROJ_DIM 16384

static int get_int(json_t *obj, const char *key, int lo, int hi, int *out, eng_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v) return eng_fail(err, "config: missing key \"%s\"", key);
    if (!json_is_integer(v)) return eng_fail(err, "config: \"%s\" must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return eng_fail(err, "config: \"%s\" = %lld is outside [%d, %d]", key, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_int_at(json_t *arr, size_t i, const char *what, int lo, int hi, int *out,
                      eng_err *err) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_integer(v)) return eng_fail(err, "config: %s must be integers", what);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return eng_fail(err, "config: %s value %lld is outside [%d, %d]", what, (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int parse_obj(eng_config *cfg, json_t *root, eng_err *err) {
    static const char *known[] = {"in_channels", "input_size", "stem_width",
                                  "stages",      "projector",  "lambda"};
    if (!json_is_object(root)) return eng_fail(err, "config: must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(key, known[i]);
        if (!ok) return eng_fail(err, "config: unknown key \"%.64s\"", key);
    }
    memset(cfg, 0, sizeof *cfg);
    if (get_int(root, "in_channels", 1, MAX_CHANNELS, &cfg->in_channels, err)) return -1;
    if (get_int(root, "input_size", 4, MAX_INPUT, &cfg->input_size, err)) return -1;
    if (get_int(root, "stem_width", 1, MAX_WIDTH, &cfg->stem_width, err)) return -1;

    json_t *stages = json_object_get(root, "stages");
    if (!json_is_array(stages) || json_array_size(stages) < 1 ||
        json_array_size(stages) > ENG_MAX_STAGES)
        return eng_fail(err, "config: \"stages\" must be an array of 1 to %d [blocks, width] pairs",
                        ENG_MAX_STAGES);
    cfg->n_stages = (int)json_array_size(stages);
    for (int s = 0; s < cfg->n_stages; s++) {
        json_t *pair = json_array_get(stages, (size_t)s);
        if (!json_is_array(pair) || json_array_size(pair) != 2)
            return eng_fail(err, "config: each stage must be a [blocks, width] pair");
        if (get_int_at(pair, 0, "stage blocks", 1, MAX_BLOCKS, &cfg->stage_blocks[s], err) ||
            get_int_at(pair, 1, "stage widths", 1, MAX_WIDTH, &cfg->stage_width[s], err))
            return -1;
    }
    json_t *proj = json_object_get(root, "projector");
    if (!json_is_array(proj) || json_array_size(proj) < 1 || json_array_size(proj) > ENG_MAX_PROJ)
        return eng_fail(err, "config: \"projector\" must be an array of 1 to %d widths",
                        ENG_MAX_PROJ);
    cfg->n_proj = (int)json_array_size(proj);
    for (int i = 0; i < cfg->n_proj; i++)
        if (get_int_at(proj, (size_t)i, "projector widths", 1, MAX_PROJ_DIM, &cfg->proj[i], err))
            return -1;
    json_t *lam = json_object_get(root, "lambda");
    if (!lam) return eng_fail(err, "config: missing key \"lambda\"");
    if (!json_is_number(lam)) return eng_fail(err, "config: \"lambda\" must be a number");
    cfg->lambda = json_number_value(lam);
    if (!isfinite(cfg->lambda) || cfg->lambda < 0 || cfg->lambda > 1e3)
        return eng_fail(err, "config: \"lambda\" must be finite and in [0, 1000]");
    return 0;
}

int eng_config_parse(eng_config *cfg, const char *json_text, eng_err *err) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return eng_fail(err, "config: invalid JSON at line %d column %d: %s", jerr.line,
                        jerr.column, jerr.text);
    int rc = parse_obj(cfg, root, err);
    json_decref(root);
    return rc;
}

int eng_config_load(eng_config *cfg, const char *path, eng_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return eng_fail(err, "config %.128s: line %d column %d: %s", path, jerr.line, jerr.column,
                        jerr.text);
    int rc = parse_obj(cfg, root, err);
    json_decref(root);
    return rc;
}

int eng_config_preset(eng_config *cfg, const char *name, eng_err *err) {
    static const struct {
        const char *name, *json;
    } presets[] = {
        {"tiny", "{\"in_channels\": 1, \"input_size\": 16, \"stem_width\": 8,"
                 " \"stages\": [[1, 8], [1, 16]], \"projector\": [32, 32], \"lambda\": 0.0051}"},
        {"small", "{\"in_channels\": 3, \"input_size\": 32, \"stem_width\": 32,"
                  " \"stages\": [[1, 32], [1, 64], [1, 128], [1, 256]],"
                  " \"projector\": [512, 512, 512], \"lambda\": 0.0051}"},
        {"resnet18", "{\"in_channels\": 3, \"input_size\": 32, \"stem_width\": 64,"
                     " \"stages\": [[2, 64], [2, 128], [2, 256], [2, 512]],"
                     " \"projector\": [2048, 2048, 2048], \"lambda\": 0.0051}"},
    };
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(name, presets[i].name)) return eng_config_parse(cfg, presets[i].json, err);
    return eng_fail(err, "unknown model preset \"%.64s\" (tiny, small, resnet18)", name);
}

int eng_config_resolve(eng_config *cfg, const char *name_or_path, eng_err *err) {
    if (!strchr(name_or_path, '/') && !strstr(name_or_path, ".json"))
        return eng_config_preset(cfg, name_or_path, err);
    return eng_config_load(cfg, name_or_path, err);
}

char *eng_config_to_json(const eng_config *cfg) {
    json_t *root = json_object(), *stages = json_array(), *proj = json_array();
    char *text = NULL;
    if (!root || !stages || !proj) goto done;
    for (int s = 0; s < cfg->n_stages; s++)
        json_array_append_new(stages, json_pack("[ii]", cfg->stage_blocks[s], cfg->stage_width[s]));
    for (int i = 0; i < cfg->n_proj; i++) json_array_append_new(proj, json_integer(cfg->proj[i]));
    json_object_set_new(root, "in_channels", json_integer(cfg->in_channels));
    json_object_set_new(root, "input_size", json_integer(cfg->input_size));
    json_object_set_new(root, "stem_width", json_integer(cfg->stem_width));
    json_object_set(root, "stages", stages);
    json_object_set(root, "projector", proj);
    json_object_set_new(root, "lambda", json_real(cfg->lambda));
    text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(17));
done:
    json_decref(stages);
    json_decref(proj);
    json_decref(root);
    return text;
}

int eng_config_equal(const eng_config *a, const eng_config *b) {
    if (a->in_channels != b->in_channels || a->input_size != b->input_size ||
        a->stem_width != b->stem_width || a->n_stages != b->n_stages || a->n_proj != b->n_proj ||
        a->lambda != b->lambda)
        return 0;
    for (int s = 0; s < a->n_stages; s++)
        if (a->stage_blocks[s] != b->stage_blocks[s] || a->stage_width[s] != b->stage_width[s])
            return 0;
    for (int i = 0; i < a->n_proj; i++)
        if (a->proj[i] != b->proj[i]) return 0;
    return 1;
}

int eng_config_rep_dim(const eng_config *cfg) { return cfg->stage_width[cfg->n_stages - 1]; }
int eng_config_out_dim(const eng_config *cfg) { return cfg->proj[cfg->n_proj - 1]; }

static int conv_out(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

int eng_config_final_size(const eng_config *cfg) {
    int s = cfg->input_size;
    for (int st = 1; st < cfg->n_stages; st++) s = conv_out(s, 3, 2, 1);
    return s;
}

double eng_config_forward_flops(const eng_config *cfg) {
    double f = 0;
    int s = cfg->input_size, c = cfg->stem_width;
    f += 2.0 * s * s * c * cfg->in_channels * 9;
    for (int st = 0; st < cfg->n_stages; st++) {
        for (int b = 0; b < cfg->stage_blocks[st]; b++) {
            int stride = (st > 0 && b == 0) ? 2 : 1, w = cfg->stage_width[st];
            int o = conv_out(s, 3, stride, 1);
            f += 2.0 * o * o * w * c * 9 + 2.0 * o * o * w * w * 9;
            if (stride != 1 || c != w) f += 2.0 * o * o * w * c;
            s = o;
            c = w;
        }
    }
    for (int i = 0; i < cfg->n_proj; i++) {
        f += 2.0 * c * cfg->proj[i];
        c = cfg->proj[i];
    }
    return f;
}
