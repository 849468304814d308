/* eng_export.h — a checkpoint's model written for other runtimes: ONNX (the encoder in inference
 * mode) and safetensors (every parameter and running statistic under PyTorch's names).
 *
 * Both formats name tensors as the PyTorch module of tests/torch_ref.py (BarlowTwinsNet) names
 * them in its state_dict(): "stem_conv.weight", "stem_bn.running_mean",
 * "blocks.3.sc_bn.num_batches_tracked", "projector.0.weight", "final_bn.running_var", ...
 *
 *   ONNX (opset 13, IR version 7): input "input" [N, C, S, S] float32 with a dynamic batch N,
 *        output "representation" [N, E] — the globally average-pooled encoder output, which is
 *        what barlowd serves. Nodes: Conv (no bias), BatchNormalization (inference form: the
 *        running statistics, epsilon 1e-5), Relu, Add, GlobalAveragePool, Flatten; the weights
 *        are initializers (raw little-endian data). The preprocessing barlowd applies before
 *        the network (channel conversion, downscale, resize to S, normalisation) is written into
 *        the model's metadata_props (ENG_EXPORT_META_* below; docs/DESIGN.md, "Export").
 *   safetensors: an 8-byte little-endian header length, the JSON header (padded with spaces to a
 *        multiple of 8 bytes), then the raw little-endian data: the int64 scalars first, then the
 *        float32 tensors in state_dict order, back to back. Every entry of state_dict() is there,
 *        projector and final batch norm included, so load_state_dict(strict=True) accepts it;
 *        "__metadata__" holds the config, the step and the model version.
 *
 * num_batches_tracked is 2 × the checkpoint's step: the reference runs every batch norm once per
 * view, two views a step. (PyTorch reads it only when momentum is None; ours is 0.1.)
 *
 * Nothing here allocates beyond the output buffer and small tables; the writers only read the
 * weights, so several may run at once on the same weights. */
#ifndef ENG_EXPORT_H
#define ENG_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "eng_checkpoint.h"

typedef enum eng_export_format {
    ENG_EXPORT_ONNX = 0,
    ENG_EXPORT_SAFETENSORS,
    ENG_EXPORT_N_FORMATS
} eng_export_format;

/* "onnx", "safetensors"; NULL for any other value. This function can't fail. */
const char *eng_export_format_name(eng_export_format f);
/* The format of a name (exactly as eng_export_format_name spells it): 0 and *f, or -1. */
int eng_export_format_parse(const char *name, eng_export_format *f);

#define ENG_EXPORT_OPSET 13
#define ENG_EXPORT_IR_VERSION 7

/* Keys of the ONNX model's metadata_props (values are text; lists are JSON arrays). */
#define ENG_EXPORT_META_VERSION "barlowd.model_version" /* the barlowd model version */
#define ENG_EXPORT_META_STEP "barlowd.step"             /* training steps behind the weights */
#define ENG_EXPORT_META_CONFIG "barlowd.config"         /* the model config (JSON) */
#define ENG_EXPORT_META_PREFIX "preprocess."            /* the preprocessing keys' prefix */

/* What barlowd does to an image before the network (eng_copy.h, eng_infer_view). */
typedef struct eng_export_prep {
    int size;          /* S: the network's input is S x S */
    int channels;      /* 1 (gray) or 3 (RGB) */
    int copy_side;     /* 2S: a shorter side above this is first box-downscaled to it */
    float mean[3];     /* per channel, after scaling to [0, 1] */
    float std[3];
} eng_export_prep;

/* The preprocessing of a config's model. This function can't fail. */
eng_export_prep eng_export_prep_of(const eng_config *cfg);

/* One entry of the reference module's state_dict(). */
typedef struct eng_export_tensor {
    char name[64];      /* e.g. "blocks.1.sc_bn.running_var" */
    int is_int64;       /* 1: a num_batches_tracked (0-dim int64 holding `value`) */
    int ndims;          /* 0 (int64 scalar), 1, 2 or 4 */
    int shape[4];
    size_t count;       /* elements (1 for a scalar) */
    const float *data;  /* borrowed from the weights (NULL for int64) */
    int64_t value;      /* the int64 scalar */
    int encoder;        /* 1: part of the encoder (what the ONNX graph needs) */
} eng_export_tensor;

/* The state_dict() entries of w in the reference module's order into *tab (malloc'd, *n
 * entries; caller frees), data borrowed from w. with_projector 0 lists the encoder's only. Fails
 * (ERR_BAD_INPUT) when w's running statistics are not the encoder's or every batch norm's, or
 * (ERR_UNSUPPORTED) when with_projector is 1 and w has the encoder's only (a checkpoint saved
 * from an inference model). On error *tab is NULL. */
int eng_export_tensors(const eng_ckpt_weights *w, int with_projector, eng_export_tensor **tab,
                       int *n, eng_err *err);
/* The entry named `name` of a table, or NULL. */
const eng_export_tensor *eng_export_find(const eng_export_tensor *tab, int n, const char *name);

/* Writes w as an ONNX model into *out (malloc'd, *len bytes; caller frees). `version` is the
 * barlowd model version for the metadata (0: none). On error returns -1 and *out is NULL. */
int eng_export_onnx(const eng_ckpt_weights *w, int64_t version, uint8_t **out, size_t *len,
                    eng_err *err);
/* Writes w as a safetensors file into *out, likewise. */
int eng_export_safetensors(const eng_ckpt_weights *w, int64_t version, uint8_t **out,
                           size_t *len, eng_err *err);
/* Either, by format. */
int eng_export(const eng_ckpt_weights *w, eng_export_format f, int64_t version, uint8_t **out,
               size_t *len, eng_err *err);

#endif
