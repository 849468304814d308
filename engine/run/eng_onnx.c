/* eng_onnx.c — the encoder as an ONNX model (onnx.proto, IR version 7, opset 13), written with
 * eng_pb: a graph of Conv, BatchNormalization, Relu, Add, GlobalAveragePool and Flatten nodes
 * over the checkpoint's weights, and the preprocessing in metadata_props.
 *
 * Shapes: input [N, C, S, S] → stem [N, W0, S, S] → blocks … → [N, E, S', S'] → pooled
 * [N, E, 1, 1] → representation [N, E]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_bnorm.h"
#include "eng_export.h"
#include "eng_pb.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "eng_onnx writes float arrays as raw little-endian bytes; port it first"
#endif

/* Field numbers of onnx.proto's messages and the enum values used. */
enum { MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_PRODUCER_VERSION = 3,
       MODEL_VERSION = 5, MODEL_DOC = 6, MODEL_GRAPH = 7, MODEL_OPSET = 8, MODEL_METADATA = 14 };
enum { OPSET_DOMAIN = 1, OPSET_VERSION = 2 };
enum { ENTRY_KEY = 1, ENTRY_VALUE = 2 };              /* StringStringEntryProto */
enum { GRAPH_NODE = 1, GRAPH_NAME = 2, GRAPH_INITIALIZER = 5, GRAPH_DOC = 10, GRAPH_INPUT = 11,
       GRAPH_OUTPUT = 12 };
enum { NODE_INPUT = 1, NODE_OUTPUT = 2, NODE_NAME = 3, NODE_OP = 4, NODE_ATTRIBUTE = 5 };
enum { ATTR_NAME = 1, ATTR_F = 2, ATTR_I = 3, ATTR_INTS = 8, ATTR_TYPE = 20 };
enum { ATTR_TYPE_FLOAT = 1, ATTR_TYPE_INT = 2, ATTR_TYPE_INTS = 7 };
enum { TENSOR_DIMS = 1, TENSOR_DATA_TYPE = 2, TENSOR_NAME = 8, TENSOR_RAW_DATA = 9 };
enum { DTYPE_FLOAT = 1 };
enum { VALUE_NAME = 1, VALUE_TYPE = 2, VALUE_DOC = 3 }; /* ValueInfoProto */
enum { TYPE_TENSOR = 1 };                               /* TypeProto.tensor_type */
enum { TENSOR_TYPE_ELEM = 1, TENSOR_TYPE_SHAPE = 2 };   /* TypeProto.Tensor */
enum { SHAPE_DIM = 1 };                                 /* TensorShapeProto */
enum { DIM_VALUE = 1, DIM_PARAM = 2 };                  /* TensorShapeProto.Dimension */

/* The engine's batch norm (eng_bnorm.h); ONNX's momentum is the share the running value keeps:
 * running = momentum · running + (1 − momentum) · batch, so 1 − ENG_BN_MOMENTUM. */
#define BN_EPSILON ENG_BN_EPS
#define BN_MOMENTUM ((float)(1.0 - ENG_BN_MOMENTUM))

typedef struct writer {
    eng_pb pb;
    eng_export_tensor *tab; /* owned: the encoder's state_dict entries */
    int n;
    char missing[80];       /* a weight the graph names that the table lacks (a bug), or "" */
} writer;

/* ---- attributes and nodes ---- */

static void attr_ints(eng_pb *b, const char *name, int n, const int64_t *v) {
    size_t m = eng_pb_begin(b);
    eng_pb_string(b, ATTR_NAME, name);
    eng_pb_int(b, ATTR_TYPE, ATTR_TYPE_INTS);
    for (int i = 0; i < n; i++) eng_pb_int(b, ATTR_INTS, v[i]);
    eng_pb_end(b, NODE_ATTRIBUTE, m);
}

static void attr_int(eng_pb *b, const char *name, int64_t v) {
    size_t m = eng_pb_begin(b);
    eng_pb_string(b, ATTR_NAME, name);
    eng_pb_int(b, ATTR_TYPE, ATTR_TYPE_INT);
    eng_pb_int(b, ATTR_I, v);
    eng_pb_end(b, NODE_ATTRIBUTE, m);
}

static void attr_float(eng_pb *b, const char *name, float v) {
    size_t m = eng_pb_begin(b);
    eng_pb_string(b, ATTR_NAME, name);
    eng_pb_int(b, ATTR_TYPE, ATTR_TYPE_FLOAT);
    eng_pb_float(b, ATTR_F, v);
    eng_pb_end(b, NODE_ATTRIBUTE, m);
}

/* A weight input of a node: must be in the table. */
static const char *weight(writer *w, const char *name) {
    if (!eng_export_find(w->tab, w->n, name) && !w->missing[0])
        snprintf(w->missing, sizeof w->missing, "%.79s", name);
    return name;
}

/* Opens a node (its output is named after it); attributes follow, then node_end. */
static size_t node_begin(writer *w, const char *op, const char *name, int n_in,
                         const char *const *in) {
    size_t m = eng_pb_begin(&w->pb);
    for (int i = 0; i < n_in; i++) eng_pb_string(&w->pb, NODE_INPUT, in[i]);
    eng_pb_string(&w->pb, NODE_OUTPUT, name);
    eng_pb_string(&w->pb, NODE_NAME, name);
    eng_pb_string(&w->pb, NODE_OP, op);
    return m;
}

static void node_end(writer *w, size_t m) { eng_pb_end(&w->pb, GRAPH_NODE, m); }

/* Conv without bias: [N, Cin, H, W] → [N, Cout, H', W'], weights "<name>.weight". */
static void conv(writer *w, const char *name, const char *in, int k, int stride, int pad) {
    char wname[80];
    snprintf(wname, sizeof wname, "%s.weight", name);
    const char *inputs[2] = {in, weight(w, wname)};
    size_t m = node_begin(w, "Conv", name, 2, inputs);
    const int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pads[4] = {pad, pad, pad, pad};
    attr_ints(&w->pb, "kernel_shape", 2, ks);
    attr_ints(&w->pb, "strides", 2, st);
    attr_ints(&w->pb, "pads", 4, pads);
    node_end(w, m);
}

/* BatchNormalization on the running statistics of batch norm `name` (weight, bias,
 * running_mean, running_var). */
static void bnorm(writer *w, const char *name, const char *in) {
    char p[4][80];
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    const char *inputs[5] = {in};
    for (int i = 0; i < 4; i++) {
        snprintf(p[i], sizeof p[i], "%s.%s", name, suffix[i]);
        inputs[i + 1] = weight(w, p[i]);
    }
    size_t m = node_begin(w, "BatchNormalization", name, 5, inputs);
    attr_float(&w->pb, "epsilon", BN_EPSILON);
    attr_float(&w->pb, "momentum", BN_MOMENTUM);
    node_end(w, m);
}

static void unary(writer *w, const char *op, const char *name, const char *in) {
    node_end(w, node_begin(w, op, name, 1, &in));
}

static void add(writer *w, const char *name, const char *a, const char *b) {
    const char *inputs[2] = {a, b};
    node_end(w, node_begin(w, "Add", name, 2, inputs));
}

/* The encoder's nodes; the last one's output is "representation". */
static void graph_nodes(writer *w, const eng_config *cfg) {
    char x[80], n1[80], n2[80], n3[80], out[80];
    conv(w, "stem_conv", "input", 3, 1, 1);
    bnorm(w, "stem_bn", "stem_conv");
    unary(w, "Relu", "stem_relu", "stem_bn");
    snprintf(x, sizeof x, "stem_relu");
    int c = cfg->stem_width, block = 0;
    for (int s = 0; s < cfg->n_stages; s++)
        for (int b = 0; b < cfg->stage_blocks[s]; b++, block++) {
            int width = cfg->stage_width[s], stride = (s > 0 && b == 0) ? 2 : 1;
            /* y = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)) */
#define AT(buf, suffix) (snprintf(buf, sizeof buf, "blocks.%d.%s", block, suffix), buf)
            conv(w, AT(n1, "conv1"), x, 3, stride, 1);
            bnorm(w, AT(n2, "bn1"), n1);
            unary(w, "Relu", AT(n3, "relu1"), n2);
            conv(w, AT(n1, "conv2"), n3, 3, 1, 1);
            bnorm(w, AT(n2, "bn2"), n1);
            const char *shortcut = x;
            if (stride != 1 || c != width) {
                conv(w, AT(n1, "sc_conv"), x, 1, stride, 0);
                bnorm(w, AT(n3, "sc_bn"), n1);
                shortcut = n3;
            }
            add(w, AT(n1, "add"), n2, shortcut);
            unary(w, "Relu", AT(out, "relu"), n1);
#undef AT
            memcpy(x, out, sizeof x);
            c = width;
        }
    unary(w, "GlobalAveragePool", "pool", x);
    size_t m = node_begin(w, "Flatten", "representation", 1, (const char *const[]){"pool"});
    attr_int(&w->pb, "axis", 1);
    node_end(w, m);
}

/* ---- initializers, inputs and outputs ---- */

static void initializer(eng_pb *b, const eng_export_tensor *t) {
    size_t m = eng_pb_begin(b);
    for (int i = 0; i < t->ndims; i++) eng_pb_int(b, TENSOR_DIMS, t->shape[i]);
    eng_pb_int(b, TENSOR_DATA_TYPE, DTYPE_FLOAT);
    eng_pb_string(b, TENSOR_NAME, t->name);
    eng_pb_bytes(b, TENSOR_RAW_DATA, t->data, t->count * sizeof(float));
    eng_pb_end(b, GRAPH_INITIALIZER, m);
}

/* A float32 graph input or output: [N, dims...] with N dynamic. */
static void value_info(eng_pb *b, int field, const char *name, const char *doc, int n_dims,
                       const int *dims) {
    size_t m = eng_pb_begin(b);
    eng_pb_string(b, VALUE_NAME, name);
    size_t type = eng_pb_begin(b), tensor = eng_pb_begin(b);
    eng_pb_int(b, TENSOR_TYPE_ELEM, DTYPE_FLOAT);
    size_t shape = eng_pb_begin(b), dim = eng_pb_begin(b);
    eng_pb_string(b, DIM_PARAM, "N");
    eng_pb_end(b, SHAPE_DIM, dim);
    for (int i = 0; i < n_dims; i++) {
        dim = eng_pb_begin(b);
        eng_pb_int(b, DIM_VALUE, dims[i]);
        eng_pb_end(b, SHAPE_DIM, dim);
    }
    eng_pb_end(b, TENSOR_TYPE_SHAPE, shape);
    eng_pb_end(b, TYPE_TENSOR, tensor);
    eng_pb_end(b, VALUE_TYPE, type);
    eng_pb_string(b, VALUE_DOC, doc);
    eng_pb_end(b, field, m);
}

/* ---- metadata ---- */

static void meta(eng_pb *b, const char *key, const char *value) {
    size_t m = eng_pb_begin(b);
    eng_pb_string(b, ENTRY_KEY, key);
    eng_pb_string(b, ENTRY_VALUE, value);
    eng_pb_end(b, MODEL_METADATA, m);
}

/* The shortest decimal text that reads back as the same float. */
static void float_text(char *out, size_t n, float v) {
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(out, n, "%.*g", digits, (double)v);
        if (strtof(out, NULL) == v) return;
    }
}

/* "[a, b, c]" of the first k values. */
static void list_text(char *out, size_t n, const float *v, int k) {
    size_t at = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < k && at < n; i++) {
        char num[32];
        float_text(num, sizeof num, v[i]);
        at += (size_t)snprintf(out + at, n - at, "%s%s", i ? ", " : "", num);
    }
    if (at < n) snprintf(out + at, n - at, "]");
}

static void metadata(eng_pb *b, const eng_ckpt_weights *wt, int64_t version, const char *cfg_json) {
    eng_export_prep p = eng_export_prep_of(&wt->cfg);
    char v[1024];
    snprintf(v, sizeof v, "%lld", (long long)version);
    meta(b, ENG_EXPORT_META_VERSION, v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)wt->meta.step);
    meta(b, ENG_EXPORT_META_STEP, v);
    meta(b, ENG_EXPORT_META_CONFIG, cfg_json);
    meta(b, "barlowd.output",
         "representation [N, E]: the encoder's globally average-pooled output, the vector "
         "barlowd serves (GET /embed); the projector is not part of this model");
    int rgb = p.channels == 3;
    snprintf(v, sizeof v,
             "decode; convert to %s; if the shorter side exceeds %d px, box-filter downscale it to "
             "%d px; resize the whole image to %dx%d (bilinear, half-pixel centres, no "
             "antialiasing, aspect ratio not kept); divide by 255; subtract mean and divide by "
             "std per channel; NCHW float32",
             rgb ? "RGB" : "gray", p.copy_side, p.copy_side, p.size, p.size);
    meta(b, ENG_EXPORT_META_PREFIX "summary", v);
    snprintf(v, sizeof v, "%d", p.size);
    meta(b, ENG_EXPORT_META_PREFIX "input_size", v);
    snprintf(v, sizeof v, "%d", p.channels);
    meta(b, ENG_EXPORT_META_PREFIX "channels", v);
    meta(b, ENG_EXPORT_META_PREFIX "color", rgb ? "rgb" : "gray");
    meta(b, ENG_EXPORT_META_PREFIX "channel_conversion",
         rgb ? "gray: the value replicated to R, G and B; alpha dropped without compositing"
             : "RGB: L = (299 R + 587 G + 114 B) / 1000 rounded half up (8-bit); alpha dropped "
               "without compositing");
    snprintf(v, sizeof v, "%d", p.copy_side);
    meta(b, ENG_EXPORT_META_PREFIX "downscale_above", v);
    snprintf(v, sizeof v,
             "when the shorter side exceeds %d px: a box filter to a shorter side of %d px (the "
             "longer side scaled by the same factor, rounded), each output pixel the exact area "
             "average of the input pixels it covers, rounded half up to 8 bits",
             p.copy_side, p.copy_side);
    meta(b, ENG_EXPORT_META_PREFIX "downscale", v);
    snprintf(v, sizeof v,
             "bilinear from the whole image (no crop) to %dx%d: output pixel (x, y) samples the "
             "source at ((x + 0.5) * W / %d - 0.5, (y + 0.5) * H / %d - 0.5), clamped to the "
             "image (align_corners=False), no antialiasing",
             p.size, p.size, p.size, p.size);
    meta(b, ENG_EXPORT_META_PREFIX "resize", v);
    meta(b, ENG_EXPORT_META_PREFIX "scale", "0.00392156862745098");
    list_text(v, sizeof v, p.mean, p.channels);
    meta(b, ENG_EXPORT_META_PREFIX "mean", v);
    list_text(v, sizeof v, p.std, p.channels);
    meta(b, ENG_EXPORT_META_PREFIX "std", v);
    meta(b, ENG_EXPORT_META_PREFIX "formula",
         "input[n, c, y, x] = (resized[y, x, c] * scale - mean[c]) / std[c]");
    meta(b, ENG_EXPORT_META_PREFIX "layout",
         rgb ? "NCHW float32, channels R, G, B" : "NCHW float32, one gray channel");
}

/* ---- the model ---- */

int eng_export_onnx(const eng_ckpt_weights *wt, int64_t version, uint8_t **out, size_t *len,
                    eng_err *err) {
    *out = NULL;
    *len = 0;
    writer w;
    memset(&w, 0, sizeof w);
    if (eng_export_tensors(wt, 0, &w.tab, &w.n, err)) return -1;
    char *cfg_json = eng_config_to_json(&wt->cfg);
    if (!cfg_json) {
        free(w.tab);
        return eng_fail_code(err, ERR_NO_MEMORY, "export: out of memory");
    }
    const eng_config *cfg = &wt->cfg;
    eng_pb *b = &w.pb;
    char doc[256];
    snprintf(doc, sizeof doc,
             "barlowd model version %lld (step %llu): the Barlow Twins encoder in inference "
             "mode; metadata_props describe its preprocessing",
             (long long)version, (unsigned long long)wt->meta.step);
    eng_pb_int(b, MODEL_IR_VERSION, ENG_EXPORT_IR_VERSION);
    eng_pb_string(b, MODEL_PRODUCER_NAME, "barlowd");
    eng_pb_string(b, MODEL_PRODUCER_VERSION, "1");
    eng_pb_int(b, MODEL_VERSION, version);
    eng_pb_string(b, MODEL_DOC, doc);
    size_t opset = eng_pb_begin(b);
    eng_pb_string(b, OPSET_DOMAIN, "");
    eng_pb_int(b, OPSET_VERSION, ENG_EXPORT_OPSET);
    eng_pb_end(b, MODEL_OPSET, opset);

    size_t graph = eng_pb_begin(b);
    graph_nodes(&w, cfg);
    eng_pb_string(b, GRAPH_NAME, "barlowd_encoder");
    for (int i = 0; i < w.n; i++)
        if (!w.tab[i].is_int64) initializer(b, &w.tab[i]);
    eng_pb_string(b, GRAPH_DOC, doc);
    const int in_dims[3] = {cfg->in_channels, cfg->input_size, cfg->input_size};
    const int out_dims[1] = {eng_config_rep_dim(cfg)};
    value_info(b, GRAPH_INPUT, "input",
               "preprocessed images [N, C, S, S] (metadata_props preprocess.*)", 3, in_dims);
    value_info(b, GRAPH_OUTPUT, "representation", "the representation [N, E]", 1, out_dims);
    eng_pb_end(b, MODEL_GRAPH, graph);
    metadata(b, wt, version, cfg_json);
    free(cfg_json);
    free(w.tab);

    if (w.missing[0]) { /* can't happen: graph_nodes and eng_export_tensors disagree */
        eng_pb_free(b);
        return eng_fail(err, "export: the graph names %s, which the weights lack", w.missing);
    }
    if (b->failed) {
        eng_pb_free(b);
        return eng_fail_code(err, ERR_NO_MEMORY, "export: out of memory for the ONNX model");
    }
    *out = b->p;
    *len = b->len;
    return 0;
}
