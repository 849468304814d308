/* eng_export.c — what both export formats share: format names, the preprocessing of a model,
 * and the table of a checkpoint's tensors under the reference module's state_dict() names. */
#include "eng_export.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_augment.h"

static const char *const format_names[ENG_EXPORT_N_FORMATS] = {"onnx", "safetensors"};

const char *eng_export_format_name(eng_export_format f) {
    return f >= 0 && f < ENG_EXPORT_N_FORMATS ? format_names[f] : NULL;
}

int eng_export_format_parse(const char *name, eng_export_format *f) {
    for (int i = 0; name && i < ENG_EXPORT_N_FORMATS; i++)
        if (!strcmp(name, format_names[i])) {
            *f = (eng_export_format)i;
            return 0;
        }
    return -1;
}

eng_export_prep eng_export_prep_of(const eng_config *cfg) {
    /* the evaluation view of eng_infer (eng_infer_create's eng_aug_defaults) and the training
     * copy every upload becomes (2 x S: svc_images.c and the offline commands) */
    eng_aug_cfg view = eng_aug_defaults(cfg->input_size, cfg->in_channels);
    eng_export_prep p = {.size = cfg->input_size, .channels = cfg->in_channels,
                         .copy_side = 2 * cfg->input_size};
    memcpy(p.mean, view.mean, sizeof p.mean);
    memcpy(p.std, view.std, sizeof p.std);
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * The state_dict() table, walked in BarlowTwinsNet's module order: stem_conv, stem_bn, blocks
 * (conv1, bn1, conv2, bn2, then sc_conv and sc_bn when the block has a projection shortcut),
 * projector (Linear, then BatchNorm1d and ReLU for each hidden layer; ReLU holds nothing), and
 * final_bn. A batch norm's entries are weight, bias (when affine), running_mean, running_var,
 * num_batches_tracked. Parameters are taken from the canonical array in this same order (it is
 * the order Module.parameters() yields); running statistics per batch norm, mean then var. */

typedef struct walker {
    const eng_ckpt_weights *w;
    eng_export_tensor *tab; /* NULL: only count */
    int n;
    size_t param, stat;     /* floats taken so far */
    int encoder;            /* the entries being added belong to the encoder */
} walker;

static size_t numel(int ndims, const int *shape) {
    size_t count = 1;
    for (int i = 0; i < ndims; i++) count *= (size_t)shape[i];
    return count;
}

/* The next entry (NULL when only counting). */
static eng_export_tensor *add(walker *k, const char *name, int ndims, const int *shape) {
    eng_export_tensor *t = k->tab ? &k->tab[k->n] : NULL;
    k->n++;
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    int wrote = snprintf(t->name, sizeof t->name, "%s", name);
    assert(wrote > 0 && (size_t)wrote < sizeof t->name); /* names are short: 8 stages x 64 blocks */
    (void)wrote;
    t->ndims = ndims;
    memcpy(t->shape, shape, sizeof(int) * (size_t)ndims);
    t->count = numel(ndims, shape);
    t->encoder = k->encoder;
    return t;
}

static void param(walker *k, const char *name, int ndims, int s0, int s1, int s2, int s3) {
    const int shape[4] = {s0, s1, s2, s3};
    eng_export_tensor *t = add(k, name, ndims, shape);
    if (t) t->data = k->w->params + k->param;
    k->param += numel(ndims, shape);
}

static void bnorm(walker *k, const char *prefix, int c, int affine) {
    char name[64];
    if (affine) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        param(k, name, 1, c, 0, 0, 0);
        snprintf(name, sizeof name, "%s.bias", prefix);
        param(k, name, 1, c, 0, 0, 0);
    }
    const int shape[1] = {c};
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    eng_export_tensor *t = add(k, name, 1, shape);
    if (t) t->data = k->w->stats + k->stat;
    snprintf(name, sizeof name, "%s.running_var", prefix);
    t = add(k, name, 1, shape);
    if (t) t->data = k->w->stats + k->stat + c;
    k->stat += 2 * (size_t)c;
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    t = add(k, name, 0, shape);
    if (t) {
        t->is_int64 = 1;
        t->value = (int64_t)(2 * k->w->meta.step);
    }
}

static void walk_encoder(walker *k) {
    const eng_config *cfg = &k->w->cfg;
    char pre[64];
    int c = cfg->stem_width, block = 0;
    k->encoder = 1;
    param(k, "stem_conv.weight", 4, c, cfg->in_channels, 3, 3);
    bnorm(k, "stem_bn", c, 1);
    for (int s = 0; s < cfg->n_stages; s++)
        for (int b = 0; b < cfg->stage_blocks[s]; b++, block++) {
            int width = cfg->stage_width[s], stride = (s > 0 && b == 0) ? 2 : 1;
#define NAME(suffix) (snprintf(pre, sizeof pre, "blocks.%d.%s", block, suffix), pre)
            param(k, NAME("conv1.weight"), 4, width, c, 3, 3);
            bnorm(k, NAME("bn1"), width, 1);
            param(k, NAME("conv2.weight"), 4, width, width, 3, 3);
            bnorm(k, NAME("bn2"), width, 1);
            if (stride != 1 || c != width) {
                param(k, NAME("sc_conv.weight"), 4, width, c, 1, 1);
                bnorm(k, NAME("sc_bn"), width, 1);
            }
#undef NAME
            c = width;
        }
}

static void walk_projector(walker *k) {
    const eng_config *cfg = &k->w->cfg;
    char pre[64];
    int c = eng_config_rep_dim(cfg);
    k->encoder = 0;
    for (int j = 0; j < cfg->n_proj; j++) {
        snprintf(pre, sizeof pre, "projector.%d.weight", 3 * j);
        param(k, pre, 2, cfg->proj[j], c, 0, 0);
        if (j + 1 < cfg->n_proj) {
            snprintf(pre, sizeof pre, "projector.%d", 3 * j + 1);
            bnorm(k, pre, cfg->proj[j], 1);
        }
        c = cfg->proj[j];
    }
    bnorm(k, "final_bn", c, 0);
}

int eng_export_tensors(const eng_ckpt_weights *w, int with_projector, eng_export_tensor **tab,
                       int *n, eng_err *err) {
    *tab = NULL;
    *n = 0;
    /* a first walk counts entries and floats, the second fills the table */
    walker count = {.w = w};
    walk_encoder(&count);
    size_t enc_stats = count.stat;
    walk_projector(&count);
    if (count.param != w->n_params) /* can't happen: the checkpoint's validation checked it */
        return eng_fail(err, "export: %zu parameters, the config needs %zu", w->n_params,
                        count.param);
    if (w->n_stats != enc_stats && w->n_stats != count.stat)
        return eng_fail_code(err, ERR_BAD_INPUT,
                             "export: %zu running statistics, the config needs %zu (encoder) or "
                             "%zu (every batch norm)",
                             w->n_stats, enc_stats, count.stat);
    if (with_projector && w->n_stats != count.stat)
        return eng_fail_code(err, ERR_UNSUPPORTED,
                             "export: the checkpoint has the encoder's running statistics only "
                             "(saved from an inference model), not the projector's");
    walker k = {.w = w, .tab = malloc(sizeof *k.tab * (size_t)count.n)};
    if (!k.tab) return eng_fail_code(err, ERR_NO_MEMORY, "export: out of memory");
    walk_encoder(&k);
    if (with_projector) walk_projector(&k);
    *tab = k.tab;
    *n = k.n;
    return 0;
}

const eng_export_tensor *eng_export_find(const eng_export_tensor *tab, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(tab[i].name, name)) return &tab[i];
    return NULL;
}

int eng_export(const eng_ckpt_weights *w, eng_export_format f, int64_t version, uint8_t **out,
               size_t *len, eng_err *err) {
    switch (f) {
    case ENG_EXPORT_ONNX: return eng_export_onnx(w, version, out, len, err);
    case ENG_EXPORT_SAFETENSORS: return eng_export_safetensors(w, version, out, len, err);
    default: break;
    }
    *out = NULL;
    *len = 0;
    return eng_fail_code(err, ERR_BAD_INPUT, "export: unknown format %d", (int)f);
}
