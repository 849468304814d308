/* store_filter.c — the metadata filter language: a JSON object over the top-level keys of an
 * image's meta, parsed into clauses (store_meta.c evaluates them against its index).
 *
 *   {"label": "shoe"}                       equality ($eq) on a string, number or boolean
 *   {"label": {"$in": ["shoe", "bag"]}}     $eq $ne $in $nin on those; $gt $gte $lt $lte on
 *   {"batch": {"$gte": 3, "$lt": 7}}        numbers; $exists on a boolean; several operators of
 *   {"label": {"$exists": true}}            one key, and several keys, all must hold (AND)
 *
 * null, arrays and objects as values, unknown operators and operands of the wrong type are
 * refused (ERR_BAD_INPUT) with a message naming the key and what is wrong. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define MAX_CLAUSES 64   /* keys in one filter */
#define MAX_OPS 16       /* operators of one key */
#define MAX_IN 1024      /* values of one $in / $nin */
#define MAX_KEY_BYTES 256

static const struct {
    const char *name;
    filter_op_kind kind;
} op_names[] = {
    {"$eq", FOP_EQ},   {"$ne", FOP_NE},   {"$in", FOP_IN},   {"$nin", FOP_NIN},
    {"$gt", FOP_GT},   {"$gte", FOP_GTE}, {"$lt", FOP_LT},   {"$lte", FOP_LTE},
    {"$exists", FOP_EXISTS},
};

/* A refused filter: formats the reason into err and returns -1. */
#define BAD(...) eng_fail_code(err, ERR_BAD_INPUT, __VA_ARGS__)
#define OOM() eng_fail_code(err, ERR_NO_MEMORY, "filter: out of memory")

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* A scalar JSON value (string, number, boolean) as a meta value; -1 for anything else. */
int store_meta_value_of(const json_t *j, meta_value *v) {
    memset(v, 0, sizeof *v);
    if (json_is_string(j)) {
        v->type = MV_STR;
        v->str = json_string_value(j);
        v->len = json_string_length(j);
    } else if (json_is_number(j)) {
        v->type = MV_NUM;
        v->num = json_number_value(j);
        if (v->num == 0) v->num = 0; /* -0 and 0 are one value */
        if (!isfinite(v->num)) return -1;
    } else if (json_is_boolean(j)) {
        v->type = MV_BOOL;
        v->b = json_is_true(j);
    } else {
        return -1;
    }
    return 0;
}

/* Copies a parsed value's string so the filter owns it. */
static int own_value(meta_value *v) {
    if (v->type != MV_STR) return 0;
    char *s = malloc(v->len + 1);
    if (!s) {
        v->str = NULL; /* not ours: never freed */
        return -1;
    }
    memcpy(s, v->str, v->len);
    s[v->len] = 0;
    v->str = s;
    return 0;
}

static int parse_op(const char *key, const char *name, const json_t *operand, filter_op *op,
                    store_err *err) {
    memset(op, 0, sizeof *op);
    size_t i = 0, n_names = sizeof op_names / sizeof *op_names;
    while (i < n_names && strcmp(op_names[i].name, name)) i++;
    if (i == n_names)
        return BAD("filter: \"%.64s\": unknown operator \"%.32s\" (use $eq, $ne, $in, $nin, "
                        "$gt, $gte, $lt, $lte or $exists)", key, name);
    op->kind = op_names[i].kind;
    switch (op->kind) {
    case FOP_EQ:
    case FOP_NE:
        if (store_meta_value_of(operand, &op->v))
            return BAD("filter: \"%.64s\": %s needs a string, number or boolean", key, name);
        if (own_value(&op->v)) goto oom;
        return 0;
    case FOP_IN:
    case FOP_NIN: {
        if (!json_is_array(operand))
            return BAD("filter: \"%.64s\": %s needs an array of strings, numbers or booleans",
                       key, name);
        size_t n = json_array_size(operand);
        if (n > MAX_IN)
            return BAD("filter: \"%.64s\": %s takes at most %d values", key, name, MAX_IN);
        op->vs = calloc(n ? n : 1, sizeof *op->vs);
        if (!op->vs) goto oom;
        for (size_t k = 0; k < n; k++) {
            if (store_meta_value_of(json_array_get(operand, k), &op->vs[k]))
                return BAD("filter: \"%.64s\": every value of %s must be a string, number or "
                                "boolean", key, name);
            op->n_vs++;
            if (own_value(&op->vs[op->n_vs - 1])) goto oom;
        }
        return 0;
    }
    case FOP_GT:
    case FOP_GTE:
    case FOP_LT:
    case FOP_LTE:
        if (!json_is_number(operand))
            return BAD("filter: \"%.64s\": %s needs a number", key, name);
        if (store_meta_value_of(operand, &op->v))
            return BAD("filter: \"%.64s\": %s needs a finite number", key, name);
        return 0;
    case FOP_EXISTS:
        if (!json_is_boolean(operand))
            return BAD("filter: \"%.64s\": %s needs true or false", key, name);
        op->exists = json_is_true(operand);
        return 0;
    }
    return 0;
oom:
    return OOM();
}

static int parse_clause(const char *key, const json_t *value, filter_clause *c, store_err *err) {
    size_t klen = strlen(key);
    if (klen == 0 || klen > MAX_KEY_BYTES)
        return BAD("filter: keys must be 1 to %d bytes", MAX_KEY_BYTES);
    if (key[0] == '$')
        return BAD("filter: \"%.64s\" at the top level: keys are metadata keys (operators go "
                        "inside a key's object, e.g. {\"label\": {\"$in\": [...]}})", key);
    c->key = strdup(key);
    if (!c->key) return OOM();
    c->len = klen;
    if (json_is_null(value) || json_is_array(value))
        return BAD("filter: \"%.64s\": %s is not a value to match (strings, numbers and "
                        "booleans are; use {\"$exists\": ...} for presence)", key,
                   json_kind(value));
    if (!json_is_object(value)) {
        c->ops = calloc(1, sizeof *c->ops);
        if (!c->ops) return OOM();
        c->n_ops = 1;
        c->ops[0].kind = FOP_EQ;
        store_meta_value_of(value, &c->ops[0].v);
        if (own_value(&c->ops[0].v)) return OOM();
        return 0;
    }
    size_t n = json_object_size(value);
    if (n == 0)
        return BAD("filter: \"%.64s\": an empty object is not a condition (give an "
                        "operator such as $eq)", key);
    if (n > MAX_OPS) return BAD("filter: \"%.64s\": at most %d operators per key", key, MAX_OPS);
    c->ops = calloc(n, sizeof *c->ops);
    if (!c->ops) return OOM();
    const char *name;
    json_t *operand;
    json_object_foreach((json_t *)value, name, operand) {
        if (name[0] != '$')
            return BAD("filter: \"%.64s\": objects are not values to match (operators start "
                            "with $; \"%.32s\" does not)", key, name);
        if (parse_op(key, name, operand, &c->ops[c->n_ops], err)) {
            c->n_ops++; /* freed with the rest */
            return -1;
        }
        c->n_ops++;
    }
    return 0;
}

int store_filter_from_json(const json_t *j, store_filter **out, store_err *err) {
    *out = NULL;
    if (!json_is_object(j)) {
        eng_fail_code(err, ERR_BAD_INPUT, "filter: must be a JSON object, not %s", json_kind(j));
        return -1;
    }
    size_t n = json_object_size(j);
    if (n > MAX_CLAUSES) {
        eng_fail_code(err, ERR_BAD_INPUT, "filter: at most %d keys", MAX_CLAUSES);
        return -1;
    }
    store_filter *f = calloc(1, sizeof *f);
    if (f) f->clauses = calloc(n ? n : 1, sizeof *f->clauses);
    if (!f || !f->clauses) {
        free(f);
        eng_fail_code(err, ERR_NO_MEMORY, "filter: out of memory");
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)j, key, value) {
        int rc = parse_clause(key, value, &f->clauses[f->n], err);
        f->n++;
        if (rc) {
            store_filter_free(f);
            return -1;
        }
    }
    *out = f;
    return 0;
}

int store_filter_parse(const char *text, size_t len, store_filter **out, store_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!j) {
        eng_fail_code(err, ERR_BAD_INPUT, "filter: not JSON: %.128s", je.text);
        return -1;
    }
    int rc = store_filter_from_json(j, out, err);
    json_decref(j);
    return rc;
}

int store_filter_is_empty(const store_filter *f) { return !f || f->n == 0; }

static void free_value(meta_value *v) {
    if (v->type == MV_STR) free((char *)v->str);
}

void store_filter_free(store_filter *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        filter_clause *c = &f->clauses[i];
        for (int k = 0; k < c->n_ops; k++) {
            free_value(&c->ops[k].v);
            for (size_t m = 0; m < c->ops[k].n_vs; m++) free_value(&c->ops[k].vs[m]);
            free(c->ops[k].vs);
        }
        free(c->ops);
        free(c->key);
    }
    free(f->clauses);
    free(f);
}
