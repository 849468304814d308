/* eng_safetensors.c — every parameter and running statistic as a safetensors file, under the
 * reference module's state_dict() names.
 *
 * Layout (the published format): u64 little-endian N, then N bytes of JSON —
 *   {"__metadata__": {...strings...},
 *    "stem_conv.weight": {"dtype": "F32", "shape": [8, 1, 3, 3], "data_offsets": [b, e]}, ...}
 * padded with spaces so that the data starts 8-byte aligned — then the data, where each entry
 * occupies [b, e) bytes counted from the data's start, the entries back to back with no gap and
 * nothing after the last. The int64 scalars come first (8-byte aligned), then the float32
 * tensors in state_dict order. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eng_export.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "eng_safetensors writes arrays as raw little-endian bytes; port it first"
#endif

static size_t bytes_of(const eng_export_tensor *t) { return t->count * (t->is_int64 ? 8 : 4); }

/* The header as JSON text (malloc'd), with data offsets in the order described above. */
static char *header_json(const eng_ckpt_weights *w, int64_t version, const eng_export_tensor *tab,
                         int n, size_t *data_bytes) {
    json_t *root = json_object(), *meta = json_object();
    char *text = NULL, *cfg = eng_config_to_json(&w->cfg), num[32];
    /* int64 entries first, then the floats: each entry's offset in the data */
    size_t *offset = malloc(sizeof *offset * (size_t)n + 1), at = 0;
    int ok = root && meta && cfg && offset;
    for (int pass = 0; ok && pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (tab[i].is_int64 == !pass) {
                offset[i] = at;
                at += bytes_of(&tab[i]);
            }
    if (ok) {
        ok &= !json_object_set_new(meta, "format", json_string("pt"));
        ok &= !json_object_set_new(meta, "producer", json_string("barlowd"));
        snprintf(num, sizeof num, "%lld", (long long)version);
        ok &= !json_object_set_new(meta, ENG_EXPORT_META_VERSION, json_string(num));
        snprintf(num, sizeof num, "%llu", (unsigned long long)w->meta.step);
        ok &= !json_object_set_new(meta, ENG_EXPORT_META_STEP, json_string(num));
        ok &= !json_object_set_new(meta, ENG_EXPORT_META_CONFIG, json_string(cfg));
        ok &= !json_object_set_new(meta, "barlowd.module",
                                   json_string("tests/torch_ref.py BarlowTwinsNet(config)"));
        ok &= !json_object_set(root, "__metadata__", meta);
    }
    for (int i = 0; ok && i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; shape && d < tab[i].ndims; d++)
            ok &= !json_array_append_new(shape, json_integer(tab[i].shape[d]));
        json_t *entry = json_pack("{s:s,s:o,s:[I,I]}", "dtype", tab[i].is_int64 ? "I64" : "F32",
                                  "shape", shape, "data_offsets", (json_int_t)offset[i],
                                  (json_int_t)(offset[i] + bytes_of(&tab[i])));
        ok &= entry && !json_object_set_new(root, tab[i].name, entry);
    }
    if (ok) text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(meta);
    json_decref(root);
    free(cfg);
    free(offset);
    *data_bytes = at;
    return text;
}

int eng_export_safetensors(const eng_ckpt_weights *w, int64_t version, uint8_t **out,
                           size_t *len, eng_err *err) {
    *out = NULL;
    *len = 0;
    eng_export_tensor *tab;
    int n;
    if (eng_export_tensors(w, 1, &tab, &n, err)) return -1;
    size_t data_bytes;
    char *header = header_json(w, version, tab, n, &data_bytes);
    size_t hlen = header ? strlen(header) : 0, padded = (hlen + 7) / 8 * 8;
    uint8_t *file = header ? malloc(8 + padded + data_bytes) : NULL;
    if (!file) {
        free(header);
        free(tab);
        return eng_fail_code(err, ERR_NO_MEMORY, "export: out of memory for the safetensors file");
    }
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(file + 8, header, hlen);
    memset(file + 8 + hlen, ' ', padded - hlen);
    uint8_t *data = file + 8 + padded;
    for (int pass = 0; pass < 2; pass++) /* the same order as the offsets */
        for (int i = 0; i < n; i++) {
            const eng_export_tensor *t = &tab[i];
            if (t->is_int64 != !pass) continue;
            if (t->is_int64) {
                for (int k = 0; k < 8; k++) data[k] = (uint8_t)((uint64_t)t->value >> (8 * k));
            } else {
                memcpy(data, t->data, t->count * sizeof(float));
            }
            data += bytes_of(t);
        }
    free(header);
    free(tab);
    *out = file;
    *len = 8 + padded + data_bytes;
    return 0;
}
