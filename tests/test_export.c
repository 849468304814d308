/* test_export.c — model export (engine/run/eng_export.h), unit tests: the protobuf encoder against the wire format's documented examples; the
 * safetensors file's layout (header length, JSON, dtypes, shapes, contiguous offsets covering the
 * data, int64 num_batches_tracked) and its names (the reference module's state_dict()); the
 * ONNX file read back by a protobuf reader of this test's own (version, opset, metadata, node
 * types, initializers equal to the checkpoint's weights); what cannot be exported. The file run
 * in a real ONNX runtime: test_onnxruntime. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_export.h"
#include "eng_pb.h"
#include "export_case.h"
#include "test_util.h"

/* ---- the protobuf encoder ---- */

static void expect_bytes(const eng_pb *b, const uint8_t *want, size_t n, const char *what) {
    cr_expect(!b->failed, "%s: failed", what);
    cr_expect_eq(b->len, n, "%s: %zu bytes, want %zu", what, b->len, n);
    cr_expect(b->len == n && !memcmp(b->p, want, n), "%s: other bytes", what);
}

Test(export, protobuf_fields_are_the_wire_formats_documented_encodings) {
    /* the encoding guide's examples: field 1 = 150; field 2 = "testing"; field 3 = a message
     * holding field 1 = 150 */
    eng_pb b = {0};
    eng_pb_int(&b, 1, 150);
    expect_bytes(&b, (const uint8_t[]){0x08, 0x96, 0x01}, 3, "int 150");
    eng_pb_free(&b);
    eng_pb_string(&b, 2, "testing");
    expect_bytes(&b, (const uint8_t[]){0x12, 0x07, 't', 'e', 's', 't', 'i', 'n', 'g'}, 9,
                 "string");
    eng_pb_free(&b);
    size_t m = eng_pb_begin(&b);
    eng_pb_int(&b, 1, 150);
    eng_pb_end(&b, 3, m);
    expect_bytes(&b, (const uint8_t[]){0x1a, 0x03, 0x08, 0x96, 0x01}, 5, "nested");
    eng_pb_free(&b);
    /* varint edges: 0, 127/128, 300, -1 as ten bytes (two's complement), a 16-bit field key */
    eng_pb_int(&b, 1, 0);
    eng_pb_varint(&b, 127);
    eng_pb_varint(&b, 128);
    eng_pb_varint(&b, 300);
    expect_bytes(&b, (const uint8_t[]){0x08, 0x00, 0x7f, 0x80, 0x01, 0xac, 0x02}, 7, "varints");
    eng_pb_free(&b);
    eng_pb_int(&b, 20, -1);
    expect_bytes(&b, (const uint8_t[]){0xa0, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0x01}, 12, "-1 in field 20");
    eng_pb_free(&b);
    /* a float is wire type 5, four little-endian bytes */
    eng_pb_float(&b, 2, 1.0f);
    expect_bytes(&b, (const uint8_t[]){0x15, 0x00, 0x00, 0x80, 0x3f}, 5, "float");
    eng_pb_free(&b);
    /* a nested message longer than 127 bytes takes a two-byte length, and moves intact */
    uint8_t blob[200];
    for (int i = 0; i < 200; i++) blob[i] = (uint8_t)i;
    eng_pb_int(&b, 1, 7);
    m = eng_pb_begin(&b);
    eng_pb_bytes(&b, 9, blob, sizeof blob);
    eng_pb_end(&b, 5, m);
    cr_assert_eq(b.len, 2 + 3 + 3 + 200);
    cr_expect(b.p[2] == 0x2a && b.p[3] == ((203 & 0x7f) | 0x80) && b.p[4] == 203 >> 7);
    cr_expect(b.p[5] == 0x4a && b.p[6] == ((200 & 0x7f) | 0x80) && b.p[7] == 200 >> 7);
    cr_expect(!memcmp(b.p + 8, blob, 200));
    eng_pb_free(&b);
}

/* ---- a protobuf reader of this test's own ---- */

typedef struct pbf {
    int field, wire;
    uint64_t v;        /* wire type 0 */
    const uint8_t *p;  /* wire types 2 and 5 */
    size_t n;
} pbf;

static uint64_t rd_varint(const uint8_t *p, size_t len, size_t *at) {
    uint64_t v = 0;
    for (int shift = 0; *at < len && shift < 64; shift += 7) {
        uint8_t byte = p[(*at)++];
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return v;
    }
    cr_assert_fail("a truncated varint");
    return 0;
}

/* The fields of a message, into out (at most max); returns how many. */
static int pb_fields(const uint8_t *p, size_t len, pbf *out, int max) {
    int n = 0;
    for (size_t at = 0; at < len;) {
        cr_assert(n < max, "more than %d fields", max);
        uint64_t key = rd_varint(p, len, &at);
        pbf f = {(int)(key >> 3), (int)(key & 7), 0, NULL, 0};
        if (f.wire == 0) {
            f.v = rd_varint(p, len, &at);
        } else if (f.wire == 2 || f.wire == 5) {
            f.n = f.wire == 5 ? 4 : rd_varint(p, len, &at);
            cr_assert(f.n <= len - at, "a field past the end");
            f.p = p + at;
            at += f.n;
        } else {
            cr_assert_fail("wire type %d", f.wire);
        }
        out[n++] = f;
    }
    return n;
}

static const pbf *first(const pbf *f, int n, int field) {
    for (int i = 0; i < n; i++)
        if (f[i].field == field) return &f[i];
    return NULL;
}

/* "%.*s" of a bytes field */
#define STR(f) (int)(f)->n, (const char *)(f)->p

/* ---- checkpoints of the fixtures ---- */

static void weights_of(const char *fixture, uint64_t step, eng_ckpt_weights *w) {
    uint8_t *blob;
    size_t len;
    char msg[512];
    cr_assert(export_fixture_blob(BARLOWD_FIXTURES, fixture, step, &blob, &len, msg,
                                  sizeof msg) == 0, "%s", msg);
    eng_err err = {0};
    cr_assert(eng_checkpoint_weights(blob, len, w, &err) == 0, "%s", err.msg);
    free(blob);
}

/* The state_dict() names of BarlowTwinsNet for the `tiny` config (stages [[1, 8], [1, 16]],
 * projector [32, 32]), written out from tests/torch_ref.py's module tree: block 0 (8 → 8,
 * stride 1) has no shortcut, block 1 (8 → 16, stride 2) has one. */
static const char *const tiny_names[] = {
    "stem_conv.weight", "stem_bn.weight", "stem_bn.bias", "stem_bn.running_mean",
    "stem_bn.running_var", "stem_bn.num_batches_tracked",
    "blocks.0.conv1.weight", "blocks.0.bn1.weight", "blocks.0.bn1.bias",
    "blocks.0.bn1.running_mean", "blocks.0.bn1.running_var", "blocks.0.bn1.num_batches_tracked",
    "blocks.0.conv2.weight", "blocks.0.bn2.weight", "blocks.0.bn2.bias",
    "blocks.0.bn2.running_mean", "blocks.0.bn2.running_var", "blocks.0.bn2.num_batches_tracked",
    "blocks.1.conv1.weight", "blocks.1.bn1.weight", "blocks.1.bn1.bias",
    "blocks.1.bn1.running_mean", "blocks.1.bn1.running_var", "blocks.1.bn1.num_batches_tracked",
    "blocks.1.conv2.weight", "blocks.1.bn2.weight", "blocks.1.bn2.bias",
    "blocks.1.bn2.running_mean", "blocks.1.bn2.running_var", "blocks.1.bn2.num_batches_tracked",
    "blocks.1.sc_conv.weight", "blocks.1.sc_bn.weight", "blocks.1.sc_bn.bias",
    "blocks.1.sc_bn.running_mean", "blocks.1.sc_bn.running_var",
    "blocks.1.sc_bn.num_batches_tracked",
    "projector.0.weight", "projector.1.weight", "projector.1.bias", "projector.1.running_mean",
    "projector.1.running_var", "projector.1.num_batches_tracked", "projector.3.weight",
    "final_bn.running_mean", "final_bn.running_var", "final_bn.num_batches_tracked"};
#define N_TINY ((int)(sizeof tiny_names / sizeof *tiny_names))

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && !strcmp(s + a - b, tail);
}

Test(export, a_safetensors_file_has_the_published_layout_and_the_modules_names) {
    eng_ckpt_weights w;
    weights_of("tiny", 37, &w);
    uint8_t *file;
    size_t len;
    eng_err err = {0};
    cr_assert(eng_export_safetensors(&w, 5, &file, &len, &err) == 0, "%s", err.msg);
    /* 8-byte little-endian header length; the data starts 8-byte aligned */
    cr_assert_gt(len, 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)file[i] << (8 * i);
    cr_assert_leq(hlen, len - 8);
    cr_expect_eq((8 + hlen) % 8, 0, "the data starts at byte %llu", (unsigned long long)(8 + hlen));
    json_error_t je;
    json_t *h = json_loadb((const char *)file + 8, hlen, JSON_REJECT_DUPLICATES, &je);
    cr_assert(h && json_is_object(h), "the header is not a JSON object: %s", je.text);
    size_t data_len = len - 8 - hlen;
    const uint8_t *data = file + 8 + hlen;

    /* __metadata__: strings only, the config and step of the checkpoint */
    json_t *meta = json_object_get(h, "__metadata__");
    cr_assert(json_is_object(meta));
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) cr_expect(json_is_string(v), "__metadata__.%s", k);
    eng_config back;
    cr_expect(eng_config_parse(&back, json_string_value(json_object_get(meta, "barlowd.config")),
                               &err) == 0 && eng_config_equal(&back, &w.cfg), "%s", err.msg);
    cr_expect_str_eq(json_string_value(json_object_get(meta, "barlowd.step")), "37");
    cr_expect_str_eq(json_string_value(json_object_get(meta, "barlowd.model_version")), "5");

    /* the names, in order, are the module's state_dict() */
    cr_expect_eq(json_object_size(h), (size_t)N_TINY + 1);
    int i = 0;
    json_object_foreach(h, k, v) {
        if (!strcmp(k, "__metadata__")) continue;
        cr_expect(i < N_TINY && !strcmp(k, tiny_names[i]), "entry %d is %s, want %s", i, k,
                  i < N_TINY ? tiny_names[i] : "(none)");
        i++;
    }

    /* every entry: a known dtype, a shape whose size fits its bytes, and, sorted by offset, the
     * entries tile [0, data_len) exactly; the values are the checkpoint's */
    typedef struct { size_t b, e; } span;
    span spans[N_TINY];
    int n = 0;
    size_t params_at = 0, stats_at = 0;
    json_object_foreach(h, k, v) {
        if (!strcmp(k, "__metadata__")) continue;
        const char *dtype = json_string_value(json_object_get(v, "dtype"));
        json_t *shape = json_object_get(v, "shape"), *off = json_object_get(v, "data_offsets");
        cr_assert(dtype && json_is_array(shape) && json_array_size(off) == 2, "%s", k);
        size_t count = 1, b = (size_t)json_integer_value(json_array_get(off, 0)),
               e = (size_t)json_integer_value(json_array_get(off, 1));
        for (size_t d = 0; d < json_array_size(shape); d++)
            count *= (size_t)json_integer_value(json_array_get(shape, d));
        int is64 = !strcmp(dtype, "I64");
        cr_expect(is64 || !strcmp(dtype, "F32"), "%s: dtype %s", k, dtype);
        cr_expect_eq(is64, ends_with(k, ".num_batches_tracked"), "%s: dtype %s", k, dtype);
        cr_assert(b <= e && e <= data_len, "%s: offsets [%zu, %zu) of %zu", k, b, e, data_len);
        cr_expect_eq(e - b, count * (is64 ? 8 : 4), "%s: %zu bytes for %zu elements", k, e - b,
                     count);
        cr_expect_eq(b % (is64 ? 8 : 4), 0, "%s: misaligned at %zu", k, b);
        spans[n++] = (span){b, e};
        if (is64) {
            cr_expect_eq(json_array_size(shape), 0, "%s is a 0-dim tensor", k);
            int64_t x = 0;
            for (int q = 0; q < 8; q++) x |= (int64_t)((uint64_t)data[b + q] << (8 * q));
            cr_expect_eq(x, 2 * 37, "%s = %lld: two batch norm passes a step", k, (long long)x);
        } else if (ends_with(k, ".running_mean") || ends_with(k, ".running_var")) {
            cr_expect(stats_at + count <= w.n_stats &&
                          !memcmp(data + b, w.stats + stats_at, count * sizeof(float)),
                      "%s: not the running statistics at %zu", k, stats_at);
            stats_at += count;
        } else {
            cr_expect(params_at + count <= w.n_params &&
                          !memcmp(data + b, w.params + params_at, count * sizeof(float)),
                      "%s: not the parameters at %zu", k, params_at);
            params_at += count;
        }
    }
    cr_expect_eq(params_at, w.n_params, "every parameter, once");
    cr_expect_eq(stats_at, w.n_stats, "every running statistic, once");
    for (int a = 0; a < n; a++) /* sort by start */
        for (int c = a + 1; c < n; c++)
            if (spans[c].b < spans[a].b) {
                span t = spans[a];
                spans[a] = spans[c];
                spans[c] = t;
            }
    size_t at = 0;
    for (int a = 0; a < n; a++) {
        cr_expect_eq(spans[a].b, at, "a gap or an overlap at byte %zu", at);
        at = spans[a].e;
    }
    cr_expect_eq(at, data_len, "the entries cover %zu of %zu data bytes", at, data_len);
    json_decref(h);
    free(file);
    eng_ckpt_weights_free(&w);
}

/* A node of the graph: its op type, inputs and output. */
typedef struct onode {
    char op[32], out[80];
    char in[5][80];
    int n_in;
} onode;

Test(export, an_onnx_file_holds_the_encoder_its_weights_and_its_preprocessing) {
    eng_ckpt_weights w;
    weights_of("odd", 12, &w);
    uint8_t *file;
    size_t len;
    eng_err err = {0};
    cr_assert(eng_export_onnx(&w, 9, &file, &len, &err) == 0, "%s", err.msg);
    static pbf top[64], graph[4096], f[64];
    int nt = pb_fields(file, len, top, 64);
    cr_expect_eq(first(top, nt, 1)->v, 7, "ir_version");
    cr_expect_eq(first(top, nt, 5)->v, 9, "model_version");
    const pbf *op = first(top, nt, 8);
    int nf = pb_fields(op->p, op->n, f, 64);
    cr_expect(first(f, nf, 1)->n == 0 && first(f, nf, 2)->v == 13, "the default domain, opset 13");

    /* metadata_props: the preprocessing of a 3-channel 12x12 model */
    eng_export_prep prep = eng_export_prep_of(&w.cfg);
    int found = 0;
    for (int i = 0; i < nt; i++) {
        if (top[i].field != 14) continue;
        nf = pb_fields(top[i].p, top[i].n, f, 64);
        const pbf *key = first(f, nf, 1), *val = first(f, nf, 2);
        char value[2048];
        snprintf(value, sizeof value, "%.*s", STR(val));
        if (key->n == 21 && !memcmp(key->p, "preprocess.input_size", 21)) {
            cr_expect_eq(atoi(value), 12);
            found++;
        }
        if (key->n == 19 && !memcmp(key->p, "preprocess.channels", 19)) {
            cr_expect_eq(atoi(value), 3);
            found++;
        }
        if (key->n == 15 && !memcmp(key->p, "preprocess.mean", 15)) {
            float m[3];
            cr_expect_eq(sscanf(value, "[%f, %f, %f]", &m[0], &m[1], &m[2]), 3, "%s", value);
            for (int c = 0; c < 3; c++) cr_expect(m[c] == prep.mean[c], "mean %s", value);
            found++;
        }
        if (key->n == 14 && !memcmp(key->p, "preprocess.std", 14)) {
            float s[3];
            cr_expect_eq(sscanf(value, "[%f, %f, %f]", &s[0], &s[1], &s[2]), 3, "%s", value);
            for (int c = 0; c < 3; c++) cr_expect(s[c] == prep.std[c], "std %s", value);
            found++;
        }
        if (key->n == 14 && !memcmp(key->p, "barlowd.config", 14)) {
            eng_config back;
            cr_expect(eng_config_parse(&back, value, &err) == 0 && eng_config_equal(&back, &w.cfg));
            found++;
        }
    }
    cr_expect_eq(found, 5, "metadata keys found: %d of 5", found);

    /* the graph: its nodes in order, its initializers, its input and output */
    const pbf *g = first(top, nt, 7);
    cr_assert(g != NULL, "no graph");
    int ng = pb_fields(g->p, g->n, graph, 4096);
    static onode nodes[256];
    int n_nodes = 0, convs = 0, bns = 0, relus = 0, adds = 0, inits = 0;
    eng_export_tensor *tab;
    int n_tab;
    cr_assert(eng_export_tensors(&w, 0, &tab, &n_tab, &err) == 0, "%s", err.msg);
    for (int i = 0; i < ng; i++) {
        if (graph[i].field == 1 || graph[i].field == 5) nf = pb_fields(graph[i].p, graph[i].n, f, 64);
        if (graph[i].field == 1) { /* NodeProto */
            onode *o = &nodes[n_nodes++];
            memset(o, 0, sizeof *o);
            for (int j = 0; j < nf; j++) {
                if (f[j].field == 1) snprintf(o->in[o->n_in++], 80, "%.*s", STR(&f[j]));
                if (f[j].field == 2) snprintf(o->out, 80, "%.*s", STR(&f[j]));
                if (f[j].field == 4) snprintf(o->op, 32, "%.*s", STR(&f[j]));
            }
            convs += !strcmp(o->op, "Conv");
            bns += !strcmp(o->op, "BatchNormalization");
            relus += !strcmp(o->op, "Relu");
            adds += !strcmp(o->op, "Add");
        } else if (graph[i].field == 5) { /* TensorProto */
            const pbf *name = first(f, nf, 8), *raw = first(f, nf, 9);
            char nm[80];
            snprintf(nm, sizeof nm, "%.*s", STR(name));
            const eng_export_tensor *t = eng_export_find(tab, n_tab, nm);
            cr_assert(t && !t->is_int64, "initializer %s is no float tensor of the encoder", nm);
            cr_expect_eq(first(f, nf, 2)->v, 1, "%s: FLOAT", nm);
            int dims = 0;
            for (int j = 0; j < nf; j++)
                if (f[j].field == 1) cr_expect_eq((int)f[j].v, t->shape[dims++], "%s dims", nm);
            cr_expect_eq(dims, t->ndims, "%s: %d dims", nm, dims);
            cr_expect(raw->n == t->count * 4 && !memcmp(raw->p, t->data, raw->n),
                      "%s: its raw data are not the weights", nm);
            inits++;
        }
    }
    /* odd: stages [[1, 12], [2, 20], [1, 24]] from a 12-wide stem: 4 blocks, shortcuts in the
     * second (12 → 20, stride 2) and the fourth (20 → 24, stride 2) */
    cr_expect_eq(convs, 1 + 4 * 2 + 2);
    cr_expect_eq(bns, convs, "a batch norm after every convolution");
    cr_expect_eq(relus, 1 + 4 * 2);
    cr_expect_eq(adds, 4);
    int floats = 0;
    for (int i = 0; i < n_tab; i++) floats += !tab[i].is_int64;
    cr_expect_eq(inits, floats, "%d initializers for %d encoder tensors", inits, floats);
    cr_assert_geq(n_nodes, 2);
    cr_expect_str_eq(nodes[0].in[0], "input");
    cr_expect_str_eq(nodes[n_nodes - 2].op, "GlobalAveragePool");
    cr_expect_str_eq(nodes[n_nodes - 1].op, "Flatten");
    cr_expect_str_eq(nodes[n_nodes - 1].out, "representation");
    /* every node input is the graph's input, an initializer or an earlier node's output */
    for (int i = 0; i < n_nodes; i++)
        for (int j = 0; j < nodes[i].n_in; j++) {
            int ok = !strcmp(nodes[i].in[j], "input") ||
                     eng_export_find(tab, n_tab, nodes[i].in[j]) != NULL;
            for (int p = 0; p < i && !ok; p++) ok = !strcmp(nodes[p].out, nodes[i].in[j]);
            cr_expect(ok, "node %d (%s) reads %s before it exists", i, nodes[i].op,
                      nodes[i].in[j]);
        }
    /* input [N, 3, 12, 12] with N a parameter; output [N, 24] */
    const pbf *in = first(graph, ng, 11);
    cr_assert(in != NULL);
    nf = pb_fields(in->p, in->n, f, 64);
    cr_expect(first(f, nf, 1)->n == 5 && !memcmp(first(f, nf, 1)->p, "input", 5));
    const pbf *type = first(f, nf, 2);
    static pbf t1[16], t2[16], t3[16], t4[16];
    pb_fields(type->p, type->n, t1, 16);                   /* TypeProto */
    int n2 = pb_fields(t1[0].p, t1[0].n, t2, 16);          /* .tensor_type */
    cr_expect_eq(first(t2, n2, 1)->v, 1, "float32");
    const pbf *shape = first(t2, n2, 2);
    int n3 = pb_fields(shape->p, shape->n, t3, 16), want[4] = {0, 3, 12, 12};
    cr_expect_eq(n3, 4);
    for (int d = 0; d < n3 && d < 4; d++) {
        int n4 = pb_fields(t3[d].p, t3[d].n, t4, 16);
        if (d == 0)
            cr_expect(first(t4, n4, 2) && first(t4, n4, 2)->n == 1 && first(t4, n4, 2)->p[0] == 'N',
                      "a dynamic batch");
        else
            cr_expect_eq((int)first(t4, n4, 1)->v, want[d], "dim %d", d);
    }
    free(tab);
    free(file);
    eng_ckpt_weights_free(&w);
}

Test(export, what_cannot_be_exported_is_refused_with_its_reason) {
    cr_expect_str_eq(eng_export_format_name(ENG_EXPORT_ONNX), "onnx");
    cr_expect_str_eq(eng_export_format_name(ENG_EXPORT_SAFETENSORS), "safetensors");
    cr_expect_null(eng_export_format_name(ENG_EXPORT_N_FORMATS));
    eng_export_format f;
    for (int i = 0; i < ENG_EXPORT_N_FORMATS; i++)
        cr_expect(eng_export_format_parse(eng_export_format_name((eng_export_format)i), &f) == 0 &&
                  f == (eng_export_format)i);
    cr_expect_neq(eng_export_format_parse("ONNX", &f), 0, "names are exact");
    cr_expect_neq(eng_export_format_parse("pt", &f), 0);
    cr_expect_neq(eng_export_format_parse(NULL, &f), 0);

    /* a checkpoint saved from an inference model has the encoder's statistics only: ONNX needs
     * no more, safetensors (the whole state_dict) cannot be written */
    eng_err err = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &err) == 0);
    eng_model m;
    cr_assert(eng_model_build(&m, &cfg, 1, 0, &err) == 0, "%s", err.msg);
    eng_model_init_params(&m, 3);
    eng_ckpt_meta meta = {.step = 0, .loss = NAN};
    uint8_t *blob, *out;
    size_t len, out_len;
    cr_assert(eng_checkpoint_save(&m, &meta, &blob, &len, &err) == 0, "%s", err.msg);
    eng_model_free(&m);
    eng_ckpt_weights w;
    cr_assert(eng_checkpoint_weights(blob, len, &w, &err) == 0, "%s", err.msg);
    cr_expect(eng_export(&w, ENG_EXPORT_ONNX, 1, &out, &out_len, &err) == 0, "%s", err.msg);
    free(out);
    err = (eng_err){0};
    cr_expect_neq(eng_export(&w, ENG_EXPORT_SAFETENSORS, 1, &out, &out_len, &err), 0);
    cr_expect_null(out);
    cr_expect_eq(err.code, ERR_UNSUPPORTED, "%d: %s", err.code, err.msg);
    /* statistics of neither size are refused by both */
    w.n_stats -= 2;
    for (int i = 0; i < ENG_EXPORT_N_FORMATS; i++) {
        err = (eng_err){0};
        cr_expect_neq(eng_export(&w, (eng_export_format)i, 1, &out, &out_len, &err), 0);
        cr_expect_eq(err.code, ERR_BAD_INPUT, "%s: %d %s", eng_export_format_name(i), err.code,
                     err.msg);
    }
    err = (eng_err){0};
    cr_expect_neq(eng_export(&w, ENG_EXPORT_N_FORMATS, 1, &out, &out_len, &err), 0);
    eng_ckpt_weights_free(&w);
    /* a corrupt blob: the weights are not read */
    blob[len / 2] ^= 1;
    cr_expect_neq(eng_checkpoint_weights(blob, len, &w, &err), 0);
    cr_expect_null(w.params);
    free(blob);
}
