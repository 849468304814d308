/* test_openapi.c — api/openapi.yaml is the API's contract: it must parse as YAML (libyaml), it
 * must describe exactly the routes of the route table (method and path, parameters' names
 * aside), every route it describes must answer on the real server (anything but the router's
 * own "no such route" 404 or a 405), and every route must give a real 2xx that matches its
 * schema (server_util validates every response of every spawned-server test). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_internal.h"
#include "server_util.h"
#include "test_util.h"

TestSuite(openapi, .init = make_dir, .fini = remove_dir, .timeout = 120);

#define MAX_ROUTES 64

/* "METHOD /path" with every {name} turned into {} (the table and the spec may name them
 * differently). */
static void normalise(const char *method, const char *path, char *out, size_t n) {
    size_t o = 0;
    for (const char *m = method; *m && o + 1 < n; m++)
        out[o++] = (char)(*m >= 'a' && *m <= 'z' ? *m - 32 : *m);
    if (o + 1 < n) out[o++] = ' ';
    for (const char *p = path; *p && o + 2 < n; p++) {
        out[o++] = *p;
        if (*p == '{') {
            while (*p && *p != '}') p++;
            out[o++] = '}';
            if (!*p) break;
        }
    }
    out[o] = 0;
}

/* The spec's operations (normalised labels) and, for requests, their methods and raw paths:
 * the one loader is openapi_check's (through server_util, which validates with it). */
static int load_spec(char labels[][96], char paths[][96], char verbs[][8]) {
    const oac_spec *sp = openapi_spec();
    const char *version = json_string_value(json_object_get(sp->root, "openapi"));
    cr_expect(version && !strncmp(version, "3.", 2), "an OpenAPI 3 document");
    cr_assert(sp->n_ops <= MAX_ROUTES);
    for (int i = 0; i < sp->n_ops; i++) {
        cr_expect(json_object_size(json_object_get(sp->ops[i].def, "responses")) > 0,
                  "%s %s has no responses", sp->ops[i].method, sp->ops[i].path);
        normalise(sp->ops[i].method, sp->ops[i].path, labels[i], 96);
        snprintf(paths[i], 96, "%s", sp->ops[i].path);
        snprintf(verbs[i], 8, "%s", sp->ops[i].method);
    }
    return sp->n_ops;
}

static int find(char labels[][96], int n, const char *label) {
    for (int i = 0; i < n; i++)
        if (!strcmp(labels[i], label)) return i;
    return -1;
}

Test(openapi, the_spec_parses_and_describes_every_route_and_every_described_route_answers) {
    static char spec[MAX_ROUTES][96], paths[MAX_ROUTES][96], verbs[MAX_ROUTES][8];
    int ns = load_spec(spec, paths, verbs);
    static char table[MAX_ROUTES][96];
    int nt = API_ROUTES - 3; /* the table's routes; the last three slots are pseudo-labels */
    cr_assert(nt <= MAX_ROUTES);
    for (int i = 0; i < nt; i++) {
        char method[16], path[80];
        cr_assert(sscanf(api_route_label(i), "%15s %79s", method, path) == 2);
        normalise(method, path, table[i], 96);
        cr_expect(find(spec, ns, table[i]) >= 0, "the server answers %s; api/openapi.yaml does "
                  "not describe it", api_route_label(i));
    }
    for (int i = 0; i < ns; i++)
        cr_expect(find(table, nt, spec[i]) >= 0, "api/openapi.yaml describes %s; the route "
                  "table has no such route", spec[i]);

    /* every described route answers on the real server */
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    for (int i = 0; i < ns; i++) {
        char path[128];
        size_t o = 0;
        for (const char *p = paths[i]; *p && o + 2 < sizeof path; p++) {
            if (*p == '{') {
                path[o++] = '1';
                while (*p && *p != '}') p++;
                if (!*p) break;
            } else {
                path[o++] = *p;
            }
        }
        path[o] = 0;
        const char *body = strcmp(verbs[i], "GET") && strcmp(verbs[i], "DELETE") ? "{}" : NULL;
        reply r = req(&s, verbs[i], path, body ? "Content-Type: application/json\r\n" : NULL,
                      body, body ? 2 : 0);
        cr_expect(r.status != 0 && r.status != 405, "%s %s: %d", verbs[i], path, r.status);
        cr_expect(!(r.status == 404 && r.raw.body && strstr(r.raw.body, "no such route")),
                  "%s %s: the router has no such route", verbs[i], path);
        reply_free(&r);
    }
    stop(&s);
}

/* The validator itself: the spec's schemas and responses against bodies made to fit or not. */
static int fits(const char *schema, const char *instance, char *err, size_t n) {
    json_t *sc = json_loads(schema, 0, NULL), *in = json_loads(instance, JSON_DECODE_ANY, NULL);
    cr_assert(sc && in, "test data: %s / %s", schema, instance);
    int rc = oac_validate(openapi_spec(), sc, in, err, n);
    json_decref(sc);
    json_decref(in);
    return rc;
}

static void expect_fit(const char *schema, const char *instance) {
    char err[512];
    cr_expect(fits(schema, instance, err, sizeof err) == 0, "%s against %s: %s", instance, schema,
              err);
}

/* instance must not fit, and the message must contain `says` (the pointer, the fault) */
static void expect_misfit(const char *schema, const char *instance, const char *says) {
    char err[512] = "";
    cr_expect(fits(schema, instance, err, sizeof err) != 0, "%s fits %s", instance, schema);
    cr_expect(strstr(err, says) != NULL, "%s against %s: \"%s\" does not say \"%s\"", instance,
              schema, err, says);
}

static int check(const char *method, const char *path, int status, const char *ct,
                 const char *body, int *op, char *err, size_t n) {
    oac_response r = {method, path, status, ct, body, body ? strlen(body) : 0};
    return oac_check(openapi_spec(), &r, op, err, n);
}

Test(openapi, the_validator_catches_what_does_not_fit_and_names_where) {
    expect_fit("{\"type\": \"integer\"}", "3");
    expect_misfit("{\"type\": \"integer\"}", "3.5", "(root): a non-integer number, the schema "
                  "wants integer");
    expect_fit("{\"type\": \"number\"}", "3");
    expect_misfit("{\"type\": \"string\"}", "null", "not nullable");
    expect_fit("{\"type\": \"string\", \"nullable\": true}", "null");
    expect_misfit("{\"type\": \"object\", \"required\": [\"a\"]}", "{}", "\"a\" is missing");
    expect_misfit("{\"properties\": {\"a\": {\"items\": {\"type\": \"boolean\"}}}}",
                  "{\"a\": [true, 1]}", "/a/1: an integer");
    expect_misfit("{\"additionalProperties\": false, \"properties\": {\"a\": {}}}",
                  "{\"a\": 1, \"b~/\": 2}", "/b~0~1: a member the schema does not allow");
    expect_misfit("{\"additionalProperties\": {\"type\": \"string\"}}", "{\"x\": 1}", "/x:");
    expect_misfit("{\"enum\": [\"ok\"]}", "\"no\"", "\"no\" is not one of [\"ok\"]");
    expect_misfit("{\"minimum\": 1, \"maximum\": 3}", "4", "above the maximum 3");
    expect_misfit("{\"minItems\": 1}", "[]", "at least 1");
    expect_misfit("{\"maxItems\": 1}", "[1, 2]", "at most 1");
    expect_misfit("{\"oneOf\": [{\"type\": \"number\"}, {\"type\": \"integer\"}]}", "1",
                  "fits 2 of oneOf's schemas");
    expect_misfit("{\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"boolean\"}]}", "1",
                  "fits none of anyOf");
    expect_misfit("{\"allOf\": [{\"type\": \"number\"}, {\"minimum\": 2}]}", "1", "allOf");
    expect_misfit("{\"$ref\": \"#/components/schemas/Error\"}", "{\"error\": {\"code\": \"x\"}}",
                  "/error: required member \"message\" is missing");
    expect_misfit("{\"$ref\": \"#/components/schemas/Nothing\"}", "1", "does not resolve");
    /* a Quality is nullable where it is referenced; the Filter's oneOf in additionalProperties */
    expect_fit("{\"$ref\": \"#/components/schemas/Quality\"}", "null");
    expect_fit("{\"$ref\": \"#/components/schemas/Filter\"}", "{\"a\": {\"$in\": [1, \"x\"]}}");
    expect_misfit("{\"$ref\": \"#/components/schemas/Filter\"}", "{\"a\": {\"$in\": [null]}}",
                  "/a: fits none of oneOf");

    /* responses: the template, the status, the media type, the body */
    char err[640];
    int op;
    cr_expect(check("GET", "/images/12/raw?x=1", 200, "image/png", "..", &op, err, sizeof err) ==
              0, "%s", err);
    cr_expect(op >= 0 && !strcmp(openapi_spec()->ops[op].path, "/images/{id}/raw"));
    cr_expect(check("GET", "/images/12/raw", 200, "text/html", "..", &op, err, sizeof err) &&
              strstr(err, "text/html is not one the spec lists"), "%s", err);
    cr_expect(check("GET", "/images/12", 418, "application/json", "{}", &op, err, sizeof err) &&
              strstr(err, "418 is not a status the spec lists for GET /images/{id}"), "%s", err);
    cr_expect(check("GET", "/images/12", 404, "application/json; charset=utf-8",
                    "{\"error\": {\"code\": \"not_found\", \"message\": \"no\"}}", &op, err,
                    sizeof err) == 0, "%s", err);
    cr_expect(check("DELETE", "/images/12", 200, "application/json",
                    "{\"id\": \"12\", \"deleted\": true}", &op, err, sizeof err) &&
              strstr(err, "/id: a string, the schema wants integer"), "%s", err);
    cr_expect(check("DELETE", "/images/12", 200, "application/json", "{\"id\": 12}", &op, err,
                    sizeof err) && strstr(err, "(root): required member \"deleted\""), "%s", err);
    cr_expect(check("GET", "/images/12", 200, "application/json", "{\"id\": 1,", &op, err,
                    sizeof err) && strstr(err, "not JSON"), "%s", err);
    /* a literal template wins over a templated one; no operation: a JSON body is an Error */
    cr_expect(check("POST", "/images/delete", 200, "application/json", "{\"deleted\": 1}", &op,
                    err, sizeof err) == 0 &&
              !strcmp(openapi_spec()->ops[op].path, "/images/delete"), "%s", err);
    cr_expect(check("GET", "/images/delete", 405, "application/json", "{\"deleted\": 1}", &op,
                    err, sizeof err) && op == -1 && strstr(err, "\"error\" is missing"), "%s",
              err);
    cr_expect(check("GET", "/nowhere", 404, "application/json",
                    "{\"error\": {\"code\": \"not_found\", \"message\": \"no such route\"}}", &op,
                    err, sizeof err) == 0 && op == -1, "%s", err);
    cr_expect(check("GET", "/healthz", 200, NULL, "{\"status\": \"ok\"}", &op, err, sizeof err) &&
              strstr(err, "(Content-Type): missing"), "%s", err);
}

/* One request that must answer `status`; the caller owns the reply. */
static reply want(const server *s, int status, const char *method, const char *path,
                  const char *headers, const void *body, size_t len) {
    reply r = req(s, method, path, headers, body, len);
    cr_assert_eq(r.status, status, "%s %s: %d, want %d: %.300s", method, path, r.status, status,
                 r.raw.body ? r.raw.body : "");
    return r;
}

static void want_free(const server *s, int status, const char *method, const char *path,
                      const char *headers, const char *body) {
    reply r = want(s, status, method, path, headers, body, body ? strlen(body) : 0);
    reply_free(&r);
}

Test(openapi, every_route_gives_a_2xx_that_matches_its_schema) {
    const char *flags[] = {"--train", "no", "--api-key", "k3y", NULL};
    server s = start(flags);
    const char *AUTH = "Authorization: Bearer k3y\r\n";
    const char *JSON_AUTH = "Content-Type: application/json\r\nAuthorization: Bearer k3y\r\n";
    char headers[256], path[256], body[512];
    want_free(&s, 200, "GET", "/healthz", NULL, NULL);
    want_free(&s, 200, "GET", "/readyz", NULL, NULL);

    /* uploads: one raw image with ?meta=, two in a multipart body with a meta part */
    unsigned char img[1024];
    size_t n = make_pgm(1, img);
    snprintf(headers, sizeof headers, "%s%s", PGM, AUTH);
    reply r = want(&s, 201, "POST", "/train?meta=%7B%22label%22%3A%22a%22%7D", headers, img, n);
    int64_t a = json_integer_value(json_array_get(json_object_get(r.json, "ids"), 0));
    reply_free(&r);
    static unsigned char mp[4096];
    size_t m = (size_t)sprintf((char *)mp, "--XyZ\r\nContent-Disposition: form-data; name=\"meta\""
                                           "\r\n\r\n{\"label\": \"b\", \"n\": 2}\r\n");
    for (unsigned seed = 2; seed <= 3; seed++) {
        m += (size_t)sprintf((char *)mp + m, "--XyZ\r\nContent-Disposition: form-data; name=\"i%u\"; "
                             "filename=\"%u.pgm\"\r\nContent-Type: image/x-portable-graymap"
                             "\r\n\r\n", seed, seed);
        m += make_pgm(seed, mp + m);
        m += (size_t)sprintf((char *)mp + m, "\r\n");
    }
    m += (size_t)sprintf((char *)mp + m, "--XyZ--\r\n");
    snprintf(headers, sizeof headers, "Content-Type: multipart/form-data; boundary=XyZ\r\n%s", AUTH);
    r = want(&s, 201, "POST", "/train", headers, mp, m);
    int64_t b = json_integer_value(json_array_get(json_object_get(r.json, "ids"), 0));
    int64_t c = json_integer_value(json_array_get(json_object_get(r.json, "ids"), 1));
    reply_free(&r);

    /* vectors, search by vector and by image, neighbours */
    reply v = wait_vector(&s, a);
    reply w = wait_vector(&s, b);
    reply_free(&w);
    w = wait_vector(&s, c);
    reply_free(&w);
    r = want(&s, 200, "POST", "/embed", PGM, img, n);
    reply_free(&r);
    json_t *q = json_pack("{s:O,s:i,s:{s:s}}", "vector", json_object_get(v.json, "vector"), "k",
                          2, "filter", "label", "b");
    char *qs = json_dumps(q, 0);
    r = want(&s, 200, "POST", "/search", "Content-Type: application/json\r\n", qs, strlen(qs));
    reply_free(&r);
    free(qs);
    json_decref(q);
    r = want(&s, 200, "POST", "/search?k=2", PGM, img, n);
    reply_free(&r);
    reply_free(&v);
    snprintf(path, sizeof path, "/neighbors/%lld?k=2", (long long)a);
    want_free(&s, 200, "GET", path, NULL, NULL);

    /* the images: metadata, bytes, a page, a SHA-256 lookup */
    snprintf(path, sizeof path, "/images/%lld", (long long)a);
    r = want(&s, 200, "GET", path, NULL, NULL, 0);
    const char *sha = json_string_value(json_object_get(r.json, "sha256"));
    cr_assert(sha && strlen(sha) == 64);
    snprintf(path, sizeof path, "/images?sha256=%s", sha);
    reply_free(&r);
    want_free(&s, 200, "GET", path, NULL, NULL);
    want_free(&s, 200, "GET", "/images?limit=2", NULL, NULL);
    snprintf(path, sizeof path, "/images/%lld/raw", (long long)a);
    want_free(&s, 200, "GET", path, NULL, NULL);
    snprintf(path, sizeof path, "/images/%lld/thumbnail?size=16", (long long)a);
    want_free(&s, 200, "GET", path, NULL, NULL);

    /* the dashboard: its page and files (each media type), the log and the c block */
    const char *ui[] = {"/", "/ui/app.js", "/ui/style.css", "/ui/favicon.svg", "/ui/config.json"};
    for (size_t i = 0; i < sizeof ui / sizeof *ui; i++) want_free(&s, 200, "GET", ui[i], NULL, NULL);
    want_free(&s, 200, "GET", "/training-log?since=0&every=10&limit=100", NULL, NULL);
    want_free(&s, 200, "GET", "/c-matrix", NULL, NULL);

    /* model versions: status, checkpoints, choose one by hand, both export formats */
    want_free(&s, 200, "GET", "/status", NULL, NULL);
    json_t *cps = get_json(&s, "/checkpoints");
    long long version = (long long)json_integer_value(json_object_get(cps, "serving_version"));
    json_decref(cps);
    snprintf(path, sizeof path, "/checkpoints/%lld/serve", version);
    want_free(&s, 202, "POST", path, AUTH, NULL);
    snprintf(path, sizeof path, "/checkpoints/%lld/export?format=onnx", version);
    want_free(&s, 200, "GET", path, NULL, NULL);
    snprintf(path, sizeof path, "/checkpoints/%lld/export?format=safetensors", version);
    want_free(&s, 200, "GET", path, NULL, NULL);
    want_free(&s, 200, "GET", "/metrics", NULL, NULL);

    /* snapshots: make one, list, download, delete */
    r = want(&s, 201, "POST", "/snapshots", AUTH, NULL, 0);
    char name[128];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(r.json, "name")));
    reply_free(&r);
    want_free(&s, 200, "GET", "/snapshots", AUTH, NULL);
    snprintf(path, sizeof path, "/snapshots/%s", name);
    want_free(&s, 200, "GET", path, AUTH, NULL);
    want_free(&s, 200, "DELETE", path, AUTH, NULL);

    /* deletes: one by id, then the rest by id list */
    snprintf(path, sizeof path, "/images/%lld", (long long)a);
    want_free(&s, 200, "DELETE", path, AUTH, NULL);
    snprintf(body, sizeof body, "{\"ids\": [%lld, %lld]}", (long long)b, (long long)c);
    want_free(&s, 200, "POST", "/images/delete", JSON_AUTH, body);
    /* the HTTP layer's limit holds for every body route before routing (validated too) */
    r = raw_req(&s, "POST /images/delete HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                    "\r\nContent-Length: 17825792\r\nConnection: close\r\n\r\n");
    expect_error(&r, 413, "body_too_large");
    reply_free(&r);
    stop(&s);

    /* every route got at least one 2xx that matched its schema */
    const oac_spec *sp = openapi_spec();
    int total = 0, routes = 0;
    for (int i = 0; i < sp->n_ops; i++) {
        int ok2xx, k = validated_responses(i, &ok2xx);
        total += k;
        routes += k > 0;
        cr_expect(ok2xx > 0, "%s %s: no 2xx response was validated", sp->ops[i].method,
                  sp->ops[i].path);
    }
    tu_coverage("responses validated against openapi.yaml: %d over %d of %d routes", total,
                routes, sp->n_ops);
}
