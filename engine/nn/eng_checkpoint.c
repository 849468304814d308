/* eng_checkpoint.c — checkpoint blob writer and validating reader. */
#include "eng_checkpoint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char MAGIC[8] = {'B', 'A', 'R', 'L', 'O', 'W', 'C', 'K'};

/* Fixed header after magic and version: step, loss, 5 optimiser doubles, batch, warmup, total,
 * cosine, then section sizes (json bytes, params, stats, momentum floats, rng count). */
#define HEADER_BYTES (8 + 4 + 8 + 8 + 5 * 8 + 8 + 8 + 8 + 4 + 4 + 8 + 8 + 8 + 4)

/* ---------------------------------------------------------------------------------------------
 * Little-endian writer and bounds-checked reader over a byte buffer. */

typedef struct writer {
    uint8_t *p;
    size_t at;
} writer;

static void put_u32(writer *w, uint32_t v) {
    for (int i = 0; i < 4; i++) w->p[w->at++] = (uint8_t)(v >> (8 * i));
}
static void put_u64(writer *w, uint64_t v) {
    for (int i = 0; i < 8; i++) w->p[w->at++] = (uint8_t)(v >> (8 * i));
}
static void put_f64(writer *w, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(w, v);
}
static void put_bytes(writer *w, const void *src, size_t n) {
    if (n) memcpy(w->p + w->at, src, n);
    w->at += n;
}
static void put_floats(writer *w, const float *src, size_t n) {
    /* float32 little-endian: the host is little-endian (checked at compile time below) */
    put_bytes(w, src, n * sizeof(float));
}

typedef struct reader {
    const uint8_t *p;
    size_t len, at;
    int bad; /* set when a read would pass the end */
} reader;

static int need(reader *r, size_t n) {
    if (r->bad || n > r->len - r->at) {
        r->bad = 1;
        return 0;
    }
    return 1;
}
static uint32_t get_u32(reader *r) {
    uint32_t v = 0;
    if (!need(r, 4)) return 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)r->p[r->at++] << (8 * i);
    return v;
}
static uint64_t get_u64(reader *r) {
    uint64_t v = 0;
    if (!need(r, 8)) return 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)r->p[r->at++] << (8 * i);
    return v;
}
static double get_f64(reader *r) {
    uint64_t v = get_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}
/* Returns a pointer to n bytes inside the blob and skips them (NULL past the end). */
static const uint8_t *get_span(reader *r, size_t n) {
    if (!need(r, n)) return NULL;
    const uint8_t *s = r->p + r->at;
    r->at += n;
    return s;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "eng_checkpoint copies float32 arrays as little-endian bytes; port put/get_floats first"
#endif

/* CRC-32 (zlib's) of n bytes, fed in pieces so sizes past 4 GiB are fine. */
static uint32_t crc_of(const void *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    while (n) {
        uInt piece = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, piece);
        b += piece;
        n -= piece;
    }
    return (uint32_t)c;
}

/* ---------------------------------------------------------------------------------------------
 * Saving. */

int eng_checkpoint_save(const eng_model *m, const eng_ckpt_meta *meta, uint8_t **blob,
                        size_t *len, eng_err *err) {
    return eng_checkpoint_save_stats(m, m->stats, meta, blob, len, err);
}

int eng_checkpoint_save_stats(const eng_model *m, const float *stats, const eng_ckpt_meta *meta,
                              uint8_t **blob, size_t *len, eng_err *err) {
    *blob = NULL;
    *len = 0;
    if (meta->n_rng < 0 || meta->n_rng > ENG_CKPT_MAX_RNG)
        return eng_fail(err, "checkpoint: %d generator states (at most %d)", meta->n_rng,
                        ENG_CKPT_MAX_RNG);
    char *json = eng_config_to_json(&m->cfg);
    if (!json) return eng_fail(err, "checkpoint: out of memory");
    size_t json_len = strlen(json);
    size_t n_mom = m->momentum ? m->n_floats : 0;
    size_t total = HEADER_BYTES + json_len + (m->n_floats + m->n_stats + n_mom) * sizeof(float) +
                   (size_t)meta->n_rng * 32 + 4;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(json);
        return eng_fail(err, "checkpoint: out of memory for %zu bytes", total);
    }
    writer w = {buf, 0};
    put_bytes(&w, MAGIC, 8);
    put_u32(&w, ENG_CKPT_VERSION);
    put_u64(&w, meta->step);
    put_f64(&w, meta->loss);
    put_f64(&w, meta->opt.momentum);
    put_f64(&w, meta->opt.eta);
    put_f64(&w, meta->opt.weight_decay);
    put_f64(&w, meta->opt.lr_weights);
    put_f64(&w, meta->opt.lr_biases);
    put_u64(&w, (uint64_t)(int64_t)meta->opt.batch);
    put_u64(&w, (uint64_t)(int64_t)meta->opt.warmup);
    put_u64(&w, (uint64_t)(int64_t)meta->opt.total);
    put_u32(&w, (uint32_t)meta->opt.cosine);
    put_u32(&w, (uint32_t)json_len);
    put_u64(&w, m->n_floats);
    put_u64(&w, m->n_stats);
    put_u64(&w, n_mom);
    put_u32(&w, (uint32_t)meta->n_rng);
    put_bytes(&w, json, json_len);
    put_floats(&w, m->params, m->n_floats);
    put_floats(&w, stats, m->n_stats);
    if (n_mom) put_floats(&w, m->momentum, n_mom);
    for (int i = 0; i < meta->n_rng; i++)
        for (int k = 0; k < 4; k++) put_u64(&w, meta->rng[i].s[k]);
    put_u32(&w, crc_of(buf, w.at));
    free(json);
    if (w.at != total) { /* can't happen: the layout above and `total` disagree */
        free(buf);
        return eng_fail(err, "checkpoint: internal size mismatch (%zu vs %zu)", w.at, total);
    }
    *blob = buf;
    *len = total;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Reading. parse() validates everything and fills a view of the blob's sections. */

typedef struct parsed {
    eng_config cfg;
    eng_ckpt_meta meta;
    uint64_t n_params, n_stats, n_mom;
    const uint8_t *params, *stats, *mom; /* spans inside the blob */
} parsed;

static int parse(const void *blob, size_t len, parsed *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    reader r = {blob, len, 0, 0};
    if (len < 8 + 4 + 4) return eng_fail(err, "checkpoint: %zu bytes is too short", len);
    const uint8_t *magic = get_span(&r, 8);
    if (memcmp(magic, MAGIC, 8) != 0) return eng_fail(err, "checkpoint: not a barlowd checkpoint");
    uint32_t version = get_u32(&r);
    if (version != ENG_CKPT_VERSION)
        return eng_fail(err, "checkpoint: format version %u (this build reads %d)", version,
                        ENG_CKPT_VERSION);
    /* Checksum before trusting any size field. */
    uint32_t stored = 0;
    for (int i = 0; i < 4; i++) stored |= (uint32_t)((const uint8_t *)blob)[len - 4 + i] << (8 * i);
    if (crc_of(blob, len - 4) != stored)
        return eng_fail(err, "checkpoint: checksum mismatch (corrupt or truncated)");
    r.len = len - 4;

    eng_ckpt_meta *m = &out->meta;
    m->step = get_u64(&r);
    m->loss = get_f64(&r);
    m->opt.momentum = get_f64(&r);
    m->opt.eta = get_f64(&r);
    m->opt.weight_decay = get_f64(&r);
    m->opt.lr_weights = get_f64(&r);
    m->opt.lr_biases = get_f64(&r);
    m->opt.batch = (int)(int64_t)get_u64(&r);
    m->opt.warmup = (long)(int64_t)get_u64(&r);
    m->opt.total = (long)(int64_t)get_u64(&r);
    m->opt.cosine = (int)get_u32(&r);
    uint32_t json_len = get_u32(&r);
    out->n_params = get_u64(&r);
    out->n_stats = get_u64(&r);
    out->n_mom = get_u64(&r);
    uint32_t n_rng = get_u32(&r);
    if (r.bad) return eng_fail(err, "checkpoint: truncated header");
    if (n_rng > ENG_CKPT_MAX_RNG) return eng_fail(err, "checkpoint: %u generator states", n_rng);
    if (out->n_mom != 0 && out->n_mom != out->n_params)
        return eng_fail(err, "checkpoint: momentum section does not mirror the parameters");
    const uint64_t cap = (uint64_t)len / sizeof(float); /* bounds the float counts */
    if (out->n_params > cap || out->n_stats > cap || out->n_mom > cap)
        return eng_fail(err, "checkpoint: section sizes exceed the blob");

    const uint8_t *json = get_span(&r, json_len);
    out->params = get_span(&r, (size_t)out->n_params * sizeof(float));
    out->stats = get_span(&r, (size_t)out->n_stats * sizeof(float));
    out->mom = get_span(&r, (size_t)out->n_mom * sizeof(float));
    m->n_rng = (int)n_rng;
    for (uint32_t i = 0; i < n_rng; i++)
        for (int k = 0; k < 4; k++) m->rng[i].s[k] = get_u64(&r);
    if (r.bad) return eng_fail(err, "checkpoint: truncated sections");
    if (r.at != r.len) return eng_fail(err, "checkpoint: %zu unexpected trailing bytes", r.len - r.at);

    char *text = malloc((size_t)json_len + 1);
    if (!text) return eng_fail(err, "checkpoint: out of memory");
    memcpy(text, json, json_len);
    text[json_len] = 0;
    int rc = eng_config_parse(&out->cfg, text, err);
    free(text);
    if (rc) return -1;

    eng_param *tab;
    int n_tab;
    size_t n_floats;
    if (eng_model_param_table(&out->cfg, &tab, &n_tab, &n_floats, err)) return -1;
    free(tab);
    if (out->n_params != n_floats)
        return eng_fail(err, "checkpoint: %llu parameters, its config needs %zu",
                        (unsigned long long)out->n_params, n_floats);
    /* Every stored value must be finite: a NaN in a checkpoint would poison everything after. */
    const uint8_t *spans[3] = {out->params, out->stats, out->mom};
    uint64_t counts[3] = {out->n_params, out->n_stats, out->n_mom};
    for (int s = 0; s < 3; s++)
        for (uint64_t i = 0; i < counts[s]; i++) {
            float v;
            memcpy(&v, spans[s] + i * sizeof(float), sizeof v);
            if (!isfinite(v)) return eng_fail(err, "checkpoint: non-finite value in section %d", s);
        }
    return 0;
}

int eng_checkpoint_peek(const void *blob, size_t len, eng_config *cfg, eng_ckpt_meta *meta,
                        eng_err *err) {
    parsed p;
    if (parse(blob, len, &p, err)) return -1;
    if (cfg) *cfg = p.cfg;
    if (meta) *meta = p.meta;
    return 0;
}

int eng_checkpoint_load(eng_model *m, const void *blob, size_t len, eng_ckpt_meta *meta,
                        eng_err *err) {
    parsed p;
    if (parse(blob, len, &p, err)) return -1;
    if (!eng_config_equal(&p.cfg, &m->cfg))
        return eng_fail(err, "checkpoint: its model config differs from this model's");
    if (p.n_stats < m->n_stats || (m->training && p.n_stats != m->n_stats))
        return eng_fail(err, "checkpoint: %llu running statistics, this model has %zu",
                        (unsigned long long)p.n_stats, m->n_stats);
    if (m->training && p.n_mom == 0)
        return eng_fail(err, "checkpoint: no optimiser state (saved from an inference model)");
    /* Everything checked: now, and only now, write into the model. */
    memcpy(m->params, p.params, m->n_floats * sizeof(float));
    memcpy(m->stats, p.stats, m->n_stats * sizeof(float));
    if (m->training) memcpy(m->momentum, p.mom, m->n_floats * sizeof(float));
    if (meta) *meta = p.meta;
    return 0;
}

int eng_checkpoint_weights(const void *blob, size_t len, eng_ckpt_weights *w, eng_err *err) {
    memset(w, 0, sizeof *w);
    parsed p;
    if (parse(blob, len, &p, err)) return -1;
    /* the sections lie at any byte offset of the blob: copied out, never cast in place */
    float *params = malloc(p.n_params * sizeof(float) + 1);
    float *stats = malloc(p.n_stats * sizeof(float) + 1);
    if (!params || !stats) {
        free(params);
        free(stats);
        return eng_fail_code(err, ERR_NO_MEMORY, "checkpoint: out of memory for its weights");
    }
    if (p.n_params) memcpy(params, p.params, p.n_params * sizeof(float));
    if (p.n_stats) memcpy(stats, p.stats, p.n_stats * sizeof(float));
    w->cfg = p.cfg;
    w->meta = p.meta;
    w->n_params = p.n_params;
    w->params = params;
    w->n_stats = p.n_stats;
    w->stats = stats;
    return 0;
}

void eng_ckpt_weights_free(eng_ckpt_weights *w) {
    free(w->params);
    free(w->stats);
    memset(w, 0, sizeof *w);
}
