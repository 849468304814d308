/* openapi_check.c — loads api/openapi.yaml into a jansson tree and validates real responses
 * against it (see openapi_check.h). The schema keywords it implements are the OpenAPI 3.0
 * subset the spec uses: type (integer apart from number), nullable, enum, properties,
 * required, additionalProperties (true, false or a schema), items, minItems, maxItems,
 * minProperties, minimum, maximum, oneOf, anyOf, allOf and $ref to "#/..."; format, pattern,
 * description, example and default are ignored. */
#include "openapi_check.h"

#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ---- loading ---- */

/* A plain scalar's JSON value: integer, real, boolean or null when it reads as one (YAML 1.2's
 * core schema, as far as the spec needs it), else a string. */
static json_t *plain_scalar(const char *s) {
    if (!strcmp(s, "true")) return json_true();
    if (!strcmp(s, "false")) return json_false();
    if (!strcmp(s, "null") || !strcmp(s, "~") || !*s) return json_null();
    char *end;
    long long i = strtoll(s, &end, 10);
    if (!*end && (isdigit((unsigned char)s[0]) || ((s[0] == '-' || s[0] == '+') && s[1])))
        return json_integer(i);
    double d = strtod(s, &end);
    if (!*end && (isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.'))
        return json_real(d);
    return json_string(s);
}

/* The node as a new JSON value, or NULL (out of memory, too deep: aliases could loop). */
static json_t *to_json(yaml_document_t *d, yaml_node_t *node, int depth) {
    if (!node || depth > 64) return NULL;
    if (node->type == YAML_SCALAR_NODE) {
        const char *v = (const char *)node->data.scalar.value;
        return node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain_scalar(v)
                                                                  : json_string(v);
    }
    if (node->type == YAML_SEQUENCE_NODE) {
        json_t *a = json_array();
        for (yaml_node_item_t *i = node->data.sequence.items.start;
             a && i < node->data.sequence.items.top; i++)
            if (json_array_append_new(a, to_json(d, yaml_document_get_node(d, *i), depth + 1))) {
                json_decref(a);
                a = NULL;
            }
        return a;
    }
    if (node->type == YAML_MAPPING_NODE) {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             o && p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(d, p->key);
            json_t *v = to_json(d, yaml_document_get_node(d, p->value), depth + 1);
            /* json_object_set_new takes v even when it fails */
            if (!k || k->type != YAML_SCALAR_NODE || !v) {
                json_decref(v);
                json_decref(o);
                o = NULL;
            } else if (json_object_set_new(o, (const char *)k->data.scalar.value, v)) {
                json_decref(o);
                o = NULL;
            }
        }
        return o;
    }
    return NULL;
}

static const char *const methods[] = {"get", "put", "post", "delete", "options", "head",
                                      "patch", "trace", NULL};

int oac_load(const char *path, oac_spec *out, char *err, size_t n) {
    assert(path && out && err);
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "cannot open %s", path);
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        snprintf(err, n, "libyaml: out of memory");
        return -1;
    }
    yaml_parser_set_input_file(&parser, f);
    int ok = yaml_parser_load(&parser, &doc) && parser.error == YAML_NO_ERROR;
    if (!ok)
        snprintf(err, n, "%s does not parse: %s at line %zu", path,
                 parser.problem ? parser.problem : "?", parser.problem_mark.line + 1);
    yaml_parser_delete(&parser);
    fclose(f);
    if (!ok) return -1;
    yaml_node_t *top = yaml_document_get_root_node(&doc);
    out->root = top ? to_json(&doc, top, 0) : NULL;
    yaml_document_delete(&doc);
    if (!json_is_object(out->root)) {
        snprintf(err, n, "%s is empty, not a mapping, or not convertible", path);
        oac_free(out);
        return -1;
    }
    json_t *paths = json_object_get(out->root, "paths");
    if (!json_is_object(paths)) {
        snprintf(err, n, "%s has no paths mapping", path);
        oac_free(out);
        return -1;
    }
    const char *p;
    json_t *item;
    json_object_foreach(paths, p, item) {
        for (int m = 0; methods[m]; m++) {
            const json_t *op = json_object_get(item, methods[m]);
            if (!op) continue;
            if (out->n_ops == OAC_MAX_OPS || !json_is_object(op)) {
                snprintf(err, n, "%s %s: %s", methods[m], p,
                         json_is_object(op) ? "more operations than OAC_MAX_OPS" : "not a mapping");
                oac_free(out);
                return -1;
            }
            oac_op *o = &out->ops[out->n_ops++];
            for (int c = 0; methods[m][c]; c++) o->method[c] = (char)toupper(methods[m][c]);
            o->path = p;
            o->def = op;
        }
    }
    return 0;
}

void oac_free(oac_spec *s) {
    json_decref(s->root);
    memset(s, 0, sizeof *s);
}

/* ---- matching ---- */

/* How the template fits the concrete path (query and fragment dropped): -1 when it does not,
 * else its number of literal segments (more literal segments win, as OpenAPI orders them). */
static int template_fit(const char *tpl, const char *path) {
    int literals = 0;
    const char *t = tpl, *p = path;
    for (;;) {
        if (*t != '/' || *p != '/') return -1;
        t++, p++;
        const char *te = t + strcspn(t, "/"), *pe = p + strcspn(p, "/?#");
        if (*t == '{' && te[-1] == '}') {
            if (pe == p) return -1; /* a parameter is never empty */
        } else if (te - t != pe - p || memcmp(t, p, (size_t)(te - t))) {
            return -1;
        } else {
            literals++;
        }
        t = te, p = pe;
        if (!*t) return *p == 0 || *p == '?' || *p == '#' ? literals : -1;
    }
}

int oac_find_op(const oac_spec *s, const char *method, const char *path) {
    assert(s && method && path);
    int best = -1, best_fit = -1;
    /* the best-fitting template first, then its operation: a literal template that fits shadows
     * a templated one even when only the latter has the method */
    for (int i = 0; i < s->n_ops; i++) {
        int fit = template_fit(s->ops[i].path, path);
        if (fit > best_fit) best_fit = fit;
    }
    if (best_fit < 0) return -1;
    for (int i = 0; i < s->n_ops && best < 0; i++)
        if (template_fit(s->ops[i].path, path) == best_fit &&
            !strcmp(s->ops[i].method, method)) /* methods are case-sensitive */
            best = i;
    return best;
}

/* ---- schemas ---- */

typedef struct vctx {
    const oac_spec *s;
    char ptr[256]; /* the instance's JSON pointer so far */
    size_t plen;
    char *err;
    size_t n;
    int depth; /* of $ref and combinators: a cycle ends here */
} vctx;

static int fail(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(vctx *v, const char *fmt, ...) {
    int at = snprintf(v->err, v->n, "%s: ", v->plen ? v->ptr : "(root)");
    if (at < 0 || (size_t)at >= v->n) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->err + at, v->n - (size_t)at, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* The target of a local $ref ("#/components/schemas/Error"), or NULL. */
static const json_t *resolve(const oac_spec *s, const char *ref) {
    if (!ref || ref[0] != '#') return NULL;
    const json_t *at = s->root;
    for (const char *p = ref + 1; at && *p == '/';) {
        p++;
        char key[128];
        size_t k = 0;
        for (; *p && *p != '/' && k + 1 < sizeof key; p++) {
            if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
                key[k++] = p[1] == '0' ? '~' : '/';
                p++;
            } else {
                key[k++] = *p;
            }
        }
        key[k] = 0;
        at = json_is_array(at) ? json_array_get(at, strtoul(key, NULL, 10))
                               : json_object_get(at, key);
    }
    return at;
}

/* Appends "/key" (escaped as a JSON pointer) to v->ptr; returns the old length to restore. */
static size_t push(vctx *v, const char *key) {
    size_t old = v->plen;
    if (v->plen + 1 < sizeof v->ptr) v->ptr[v->plen++] = '/';
    for (; *key && v->plen + 2 < sizeof v->ptr; key++) {
        if (*key == '~' || *key == '/') {
            v->ptr[v->plen++] = '~';
            v->ptr[v->plen++] = *key == '~' ? '0' : '1';
        } else {
            v->ptr[v->plen++] = *key;
        }
    }
    v->ptr[v->plen] = 0;
    return old;
}
static void pop(vctx *v, size_t old) {
    v->plen = old;
    v->ptr[old] = 0;
}

static int validate(vctx *v, const json_t *sc, const json_t *in);

/* The child under key (an object's member name, or an array index as text). */
static int child(vctx *v, const json_t *sc, const json_t *in, const char *key) {
    size_t old = push(v, key);
    int rc = validate(v, sc, in);
    pop(v, old);
    return rc;
}

/* How many of the schemas of a oneOf/anyOf/allOf the instance fits; the first failure's
 * message in first (when first_n > 0). */
static int count_fits(vctx *v, const json_t *list, const json_t *in, char *first, size_t first_n) {
    int fits = 0;
    if (first_n) first[0] = 0;
    size_t i;
    const json_t *sub;
    json_array_foreach(list, i, sub) {
        char e[512];
        vctx w = *v;
        w.err = e;
        w.n = sizeof e;
        if (validate(&w, sub, in) == 0)
            fits++;
        else if (first_n && !first[0])
            snprintf(first, first_n, "%s", e);
    }
    return fits;
}

static int type_fits(const char *type, const json_t *in) {
    if (!strcmp(type, "integer")) return json_is_integer(in);
    if (!strcmp(type, "number")) return json_is_number(in);
    if (!strcmp(type, "string")) return json_is_string(in);
    if (!strcmp(type, "boolean")) return json_is_boolean(in);
    if (!strcmp(type, "array")) return json_is_array(in);
    if (!strcmp(type, "object")) return json_is_object(in);
    return 0;
}

static int validate_object(vctx *v, const json_t *sc, const json_t *in) {
    const json_t *props = json_object_get(sc, "properties");
    const json_t *req = json_object_get(sc, "required");
    size_t i;
    const json_t *name;
    json_array_foreach(req, i, name) {
        if (json_is_string(name) && !json_object_get(in, json_string_value(name)))
            return fail(v, "required member \"%s\" is missing", json_string_value(name));
    }
    const json_t *minp = json_object_get(sc, "minProperties");
    if (json_is_integer(minp) && (json_int_t)json_object_size(in) < json_integer_value(minp))
        return fail(v, "%zu members, the schema wants at least %lld", json_object_size(in),
                    (long long)json_integer_value(minp));
    const json_t *extra = json_object_get(sc, "additionalProperties");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)in, key, val) {
        const json_t *p = json_object_get(props, key);
        if (p) {
            if (child(v, p, val, key)) return -1;
        } else if (json_is_false(extra)) {
            size_t old = push(v, key);
            fail(v, "a member the schema does not allow (additionalProperties: false)");
            pop(v, old);
            return -1;
        } else if (json_is_object(extra) && child(v, extra, val, key)) {
            return -1;
        }
    }
    return 0;
}

static int validate_array(vctx *v, const json_t *sc, const json_t *in) {
    const json_t *mn = json_object_get(sc, "minItems"), *mx = json_object_get(sc, "maxItems");
    long long size = (long long)json_array_size(in);
    if (json_is_integer(mn) && size < json_integer_value(mn))
        return fail(v, "%lld items, the schema wants at least %lld", size,
                    (long long)json_integer_value(mn));
    if (json_is_integer(mx) && size > json_integer_value(mx))
        return fail(v, "%lld items, the schema allows at most %lld", size,
                    (long long)json_integer_value(mx));
    const json_t *items = json_object_get(sc, "items");
    if (!items) return 0;
    size_t i;
    const json_t *el;
    json_array_foreach(in, i, el) {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        if (child(v, items, el, key)) return -1;
    }
    return 0;
}

static int validate(vctx *v, const json_t *sc, const json_t *in) {
    if (!json_is_object(sc)) return json_is_false(sc) ? fail(v, "the schema is false") : 0;
    if (++v->depth > 64) {
        v->depth--;
        return fail(v, "schemas nest deeper than 64 (a $ref cycle?)");
    }
    int rc = 0;
    const json_t *ref = json_object_get(sc, "$ref");
    if (ref) { /* OpenAPI 3.0: a $ref's siblings are ignored */
        const json_t *target = resolve(v->s, json_string_value(ref));
        rc = target ? validate(v, target, in)
                    : fail(v, "$ref %s does not resolve", json_string_value(ref));
        v->depth--;
        return rc;
    }
    const char *type = json_string_value(json_object_get(sc, "type"));
    if (json_is_null(in) && json_is_true(json_object_get(sc, "nullable"))) {
        v->depth--;
        return 0;
    }
    char first[512];
    const json_t *e, *list;
    if (type && !type_fits(type, in))
        rc = fail(v, "%s, the schema wants %s%s", kind(in), type,
                  json_is_null(in) ? " (not nullable)" : "");
    if (!rc && (e = json_object_get(sc, "enum"))) {
        size_t i;
        const json_t *opt;
        int found = 0;
        json_array_foreach(e, i, opt) found |= json_equal(opt, in);
        if (!found) {
            char *text = json_dumps(in, JSON_ENCODE_ANY | JSON_COMPACT);
            char *opts = json_dumps(e, JSON_COMPACT);
            rc = fail(v, "%.80s is not one of %.160s", text ? text : "?", opts ? opts : "?");
            free(text);
            free(opts);
        }
    }
    if (!rc && json_is_number(in)) {
        const json_t *mn = json_object_get(sc, "minimum"), *mx = json_object_get(sc, "maximum");
        double x = json_number_value(in);
        if (json_is_number(mn) && x < json_number_value(mn))
            rc = fail(v, "%g is below the minimum %g", x, json_number_value(mn));
        else if (json_is_number(mx) && x > json_number_value(mx))
            rc = fail(v, "%g is above the maximum %g", x, json_number_value(mx));
    }
    if (!rc && json_is_object(in)) rc = validate_object(v, sc, in);
    if (!rc && json_is_array(in)) rc = validate_array(v, sc, in);
    if (!rc && (list = json_object_get(sc, "allOf"))) {
        if (count_fits(v, list, in, first, sizeof first) != (int)json_array_size(list))
            rc = fail(v, "allOf: %s", first);
    }
    if (!rc && (list = json_object_get(sc, "anyOf"))) {
        if (count_fits(v, list, in, first, sizeof first) == 0)
            rc = fail(v, "fits none of anyOf's %zu schemas (the first: %s)",
                      json_array_size(list), first);
    }
    if (!rc && (list = json_object_get(sc, "oneOf"))) {
        int fits = count_fits(v, list, in, first, sizeof first);
        if (fits != 1)
            rc = fits ? fail(v, "fits %d of oneOf's schemas, not exactly one", fits)
                      : fail(v, "fits none of oneOf's %zu schemas (the first: %s)",
                             json_array_size(list), first);
    }
    v->depth--;
    return rc;
}

int oac_validate(const oac_spec *s, const json_t *schema, const json_t *instance, char *err,
                 size_t n) {
    assert(s && schema && instance && err && n);
    vctx v = {.s = s, .err = err, .n = n};
    err[0] = 0;
    return validate(&v, schema, instance);
}

/* ---- responses ---- */

/* The media type of a Content-Type value: parameters dropped, lower-cased, into out. */
static void media_type(const char *ct, char *out, size_t n) {
    size_t o = 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && o + 1 < n; ct++)
        out[o++] = (char)tolower((unsigned char)*ct);
    out[o] = 0;
}

static int is_json_type(const char *mt) {
    size_t l = strlen(mt);
    return !strcmp(mt, "application/json") || (l > 5 && !strcmp(mt + l - 5, "+json"));
}

/* The content entry for media type mt (or a range that covers it: type/any, any/any), or NULL. */
static const json_t *content_for(const json_t *content, const char *mt) {
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)content, key, val) {
        char k[96];
        media_type(key, k, sizeof k);
        size_t sl = strcspn(k, "/");
        if (!strcmp(k, mt) || !strcmp(k, "*/*") ||
            (!strcmp(k + sl, "/*") && !strncmp(k, mt, sl + 1)))
            return val;
    }
    return NULL;
}

/* Validates body as JSON against schema (NULL: anything). */
static int check_json(const oac_spec *s, const json_t *schema, const oac_response *r, char *err,
                      size_t n) {
    json_error_t je;
    json_t *j = json_loadb(r->body ? r->body : "", r->len,
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        snprintf(err, n, "(body): not JSON (%s at byte %d)", je.text, je.position);
        return -1;
    }
    int rc = schema ? oac_validate(s, schema, j, err, n) : 0;
    json_decref(j);
    return rc;
}

int oac_check(const oac_spec *s, const oac_response *r, int *op, char *err, size_t n) {
    assert(s && r && r->method && r->path && op && err && n);
    err[0] = 0;
    char mt[96] = "";
    if (r->content_type) media_type(r->content_type, mt, sizeof mt);
    *op = oac_find_op(s, r->method, r->path);
    if (*op < 0) { /* no route of the spec: a JSON answer is still an Error */
        if (!is_json_type(mt) || r->len == 0) return 0; /* HEAD has no body */
        const json_t *e = resolve(s, "#/components/schemas/Error");
        if (!e) {
            snprintf(err, n, "the spec has no #/components/schemas/Error");
            return -1;
        }
        return check_json(s, e, r, err, n);
    }
    const json_t *responses = json_object_get(s->ops[*op].def, "responses");
    char code[8];
    snprintf(code, sizeof code, "%d", r->status);
    const json_t *resp = json_object_get(responses, code);
    if (!resp) resp = json_object_get(responses, "default");
    if (!resp) {
        snprintf(err, n, "(status): %d is not a status the spec lists for %s %s", r->status,
                 s->ops[*op].method, s->ops[*op].path);
        return -1;
    }
    const json_t *ref = json_object_get(resp, "$ref");
    if (ref && !(resp = resolve(s, json_string_value(ref)))) {
        snprintf(err, n, "(spec): $ref %s does not resolve", json_string_value(ref));
        return -1;
    }
    const json_t *content = json_object_get(resp, "content");
    if (!json_object_size(content)) {
        if (r->len == 0) return 0;
        snprintf(err, n, "(body): the spec describes no content for %d, but %zu bytes of %s "
                 "came back", r->status, r->len, mt[0] ? mt : "(no Content-Type)");
        return -1;
    }
    if (!mt[0]) {
        snprintf(err, n, "(Content-Type): missing; the spec lists a media type for %d",
                 r->status);
        return -1;
    }
    const json_t *media = content_for(content, mt);
    if (!media) {
        const char *k;
        const json_t *val;
        char names[256] = "";
        json_object_foreach((json_t *)content, k, val) {
            size_t at = strlen(names);
            snprintf(names + at, sizeof names - at, "%s%s", at ? ", " : "", k);
        }
        snprintf(err, n, "(Content-Type): %s is not one the spec lists for %d (%s)", mt,
                 r->status, names);
        return -1;
    }
    if (!is_json_type(mt)) return 0; /* bytes or text: the media type is the contract */
    return check_json(s, json_object_get(media, "schema"), r, err, n);
}
