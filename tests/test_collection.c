/* test_collection.c — the collection routes of the real `barlowd serve` over HTTP: metadata
 * filters in POST /search (vector and image bodies) and GET /neighbors/{id}, listing with
 * pagination and by SHA-256, delete by ids and by filter, and their errors. Labels in the
 * uploads' meta make the expected answers computable here. */
#define _DEFAULT_SOURCE /* usleep */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "server_util.h"

TestSuite(collection, .init = make_dir, .fini = remove_dir, .timeout = 300);

/* Percent-encodes a query value. */
static void urlenc(const char *in, char *out, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < n; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
}

static const char *const LABELS[] = {"shoe", "bag", "coat"};
#define N_IMG 24

/* Uploads image seed with meta {"label": LABELS[i % 3], "batch": i}. */
static int64_t upload_meta(const server *s, int i) {
    char meta[96], enc[256], path[320];
    snprintf(meta, sizeof meta, "{\"label\": \"%s\", \"batch\": %d}", LABELS[i % 3], i);
    urlenc(meta, enc, sizeof enc);
    snprintf(path, sizeof path, "/train?meta=%s", enc);
    unsigned char img[1024];
    size_t n = make_pgm(1000u + (unsigned)i, img);
    char headers[128];
    snprintf(headers, sizeof headers, "%sAuthorization: Bearer k3y\r\n", PGM);
    reply r = req(s, "POST", path, headers, img, n);
    cr_assert_eq(r.status, 201, "upload: %d %s", r.status, r.raw.body);
    int64_t id = json_integer_value(json_array_get(json_object_get(r.json, "ids"), 0));
    reply_free(&r);
    return id;
}

/* The label and batch of a search result or listed image. */
static const char *label_of(const json_t *item) {
    return json_string_value(json_object_get(json_object_get(item, "meta"), "label"));
}
static int batch_of(const json_t *item) {
    return (int)json_integer_value(json_object_get(json_object_get(item, "meta"), "batch"));
}

static reply post_json(const server *s, const char *path, const char *body, const char *auth) {
    char headers[160];
    snprintf(headers, sizeof headers, "Content-Type: application/json\r\n%s", auth ? auth : "");
    return req(s, "POST", path, headers, body, strlen(body));
}

/* A JSON search body for a vector with k and a filter (or none). */
static char *search_body(const json_t *vector, int k, const char *filter) {
    char *v = json_dumps(vector, JSON_COMPACT);
    size_t n = strlen(v) + 256;
    char *body = malloc(n);
    snprintf(body, n, "{\"vector\": %s, \"k\": %d%s%s}", v, k, filter ? ", \"filter\": " : "",
             filter ? filter : "");
    free(v);
    return body;
}

Test(collection, filters_listing_and_delete_by_filter_over_http) {
    const char *flags[] = {"--train", "no", "--api-key", "k3y", NULL};
    const char *AUTH = "Authorization: Bearer k3y\r\n";
    server s = start(flags);
    int64_t ids[N_IMG];
    for (int i = 0; i < N_IMG; i++) ids[i] = upload_meta(&s, i);
    for (int i = 0; i < N_IMG; i++) {
        reply r = wait_vector(&s, ids[i]);
        reply_free(&r);
    }
    reply r = wait_vector(&s, ids[0]);
    json_t *vec = json_incref(json_object_get(r.json, "vector"));
    reply_free(&r);

    /* POST /search with a filter: only matching images, k of them when k match, exact */
    char *body = search_body(vec, 5, "{\"label\": \"bag\"}");
    r = post_json(&s, "/search", body, NULL);
    free(body);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    cr_expect(json_is_true(json_object_get(r.json, "exact")));
    json_t *res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 5);
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_str_eq(label_of(json_array_get(res, i)), "bag");
    reply_free(&r);
    /* k results whenever at least k match: 8 bags, k = 8 gives all of them */
    body = search_body(vec, 20, "{\"label\": \"bag\", \"batch\": {\"$gte\": 4, \"$lt\": 16}}");
    r = post_json(&s, "/search", body, NULL);
    free(body);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 4, "bags with batch 4..15: 4, 7, 10, 13");
    for (size_t i = 0; i < json_array_size(res); i++) {
        int b = batch_of(json_array_get(res, i));
        cr_expect(b >= 4 && b < 16 && b % 3 == 1, "batch %d", b);
    }
    reply_free(&r);
    /* a batch of vectors honours it too */
    char *v = json_dumps(vec, JSON_COMPACT);
    char big[16384];
    snprintf(big, sizeof big, "{\"vectors\": [%s, %s], \"k\": 3, \"filter\": {\"label\": "
                              "{\"$in\": [\"coat\"]}}}", v, v);
    free(v);
    r = post_json(&s, "/search", big, NULL);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 2);
    for (size_t q = 0; q < json_array_size(res); q++) {
        json_t *one = json_array_get(res, q);
        cr_expect_eq(json_array_size(one), 3);
        for (size_t i = 0; i < json_array_size(one); i++)
            cr_expect_str_eq(label_of(json_array_get(one, i)), "coat");
    }
    reply_free(&r);

    /* GET /neighbors/{id}?filter=: itself excluded, the filter honoured */
    char enc[256], path[512];
    urlenc("{\"label\": {\"$ne\": \"shoe\"}}", enc, sizeof enc);
    snprintf(path, sizeof path, "/neighbors/%lld?k=50&filter=%s", (long long)ids[1], enc);
    r = req(&s, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 15, "16 non-shoes, less itself");
    for (size_t i = 0; i < json_array_size(res); i++) {
        cr_expect_str_neq(label_of(json_array_get(res, i)), "shoe");
        cr_expect_neq(json_integer_value(json_object_get(json_array_get(res, i), "id")), ids[1]);
    }
    reply_free(&r);

    /* an image body searched with ?filter= */
    unsigned char img[1024];
    size_t n = make_pgm(1000u + 5, img);
    urlenc("{\"batch\": {\"$lt\": 3}}", enc, sizeof enc);
    snprintf(path, sizeof path, "/search?k=10&filter=%s", enc);
    r = req(&s, "POST", path, PGM, img, n);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 3);
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_lt(batch_of(json_array_get(res, i)), 3);
    reply_free(&r);

    /* bad filters: 400 bad_filter naming the fault, in the body and in the query */
    body = search_body(vec, 5, "{\"label\": null}");
    r = post_json(&s, "/search", body, NULL);
    free(body);
    expect_error(&r, 400, "bad_filter");
    cr_expect(strstr(r.raw.body, "label") != NULL, "%s", r.raw.body);
    reply_free(&r);
    body = search_body(vec, 5, "{\"batch\": {\"$gt\": \"3\"}}");
    r = post_json(&s, "/search", body, NULL);
    free(body);
    expect_error(&r, 400, "bad_filter");
    reply_free(&r);
    urlenc("{\"label\": {\"$regex\": \"s\"}}", enc, sizeof enc);
    snprintf(path, sizeof path, "/neighbors/%lld?filter=%s", (long long)ids[1], enc);
    r = req(&s, "GET", path, NULL, NULL, 0);
    expect_error(&r, 400, "bad_filter");
    reply_free(&r);
    r = req(&s, "GET", "/images?filter=nope", NULL, NULL, 0);
    expect_error(&r, 400, "bad_filter");
    reply_free(&r);

    /* listing: ascending ids, pages of `limit`, next = the last id while more match */
    int64_t seen[N_IMG + 1];
    int n_seen = 0;
    int64_t after = -1;
    for (int page = 0; page < 20; page++) {
        if (after < 0)
            snprintf(path, sizeof path, "/images?limit=5");
        else
            snprintf(path, sizeof path, "/images?limit=5&after=%lld", (long long)after);
        r = req(&s, "GET", path, NULL, NULL, 0);
        cr_assert_eq(r.status, 200, "%s", r.raw.body);
        json_t *items = json_object_get(r.json, "images"), *next = json_object_get(r.json, "next");
        cr_assert(json_array_size(items) <= 5);
        for (size_t i = 0; i < json_array_size(items); i++) {
            json_t *it = json_array_get(items, i);
            cr_assert(n_seen < N_IMG);
            seen[n_seen++] = json_integer_value(json_object_get(it, "id"));
            cr_expect(json_object_get(it, "sha256") && json_object_get(it, "created"),
                      "each item is GET /images/{id}'s object");
        }
        if (json_is_null(next)) {
            reply_free(&r);
            break;
        }
        after = json_integer_value(next);
        cr_expect_eq(after, seen[n_seen - 1]);
        reply_free(&r);
    }
    cr_expect_eq(n_seen, N_IMG);
    for (int i = 0; i < n_seen; i++) cr_expect_eq(seen[i], ids[i], "ascending ids");
    /* with a filter; an item equals GET /images/{id} exactly */
    urlenc("{\"label\": \"coat\"}", enc, sizeof enc);
    snprintf(path, sizeof path, "/images?limit=1000&filter=%s", enc);
    r = req(&s, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    json_t *items = json_object_get(r.json, "images");
    cr_expect_eq(json_array_size(items), N_IMG / 3);
    cr_expect(json_is_null(json_object_get(r.json, "next")));
    json_t *first = json_array_get(items, 0);
    snprintf(path, sizeof path, "/images/%lld",
             (long long)json_integer_value(json_object_get(first, "id")));
    json_t *one = get_json(&s, path);
    cr_expect(json_equal(one, first), "the listed item is GET /images/{id}'s object");
    /* by SHA-256 (any case), and a SHA-256 nobody uploaded */
    char sha[80], q[128];
    snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(one, "sha256")));
    for (char *c = sha; *c; c++)
        if (*c >= 'a' && *c <= 'f') *c = (char)(*c - 32);
    snprintf(q, sizeof q, "/images?sha256=%s", sha);
    json_t *by = get_json(&s, q);
    cr_expect_eq(json_array_size(json_object_get(by, "images")), 1);
    cr_expect(json_equal(json_array_get(json_object_get(by, "images"), 0), one));
    json_decref(by);
    json_decref(one);
    reply_free(&r);
    by = get_json(&s, "/images?sha256=000000000000000000000000000000000000000000000000000000000000"
                      "0000");
    cr_expect_eq(json_array_size(json_object_get(by, "images")), 0);
    cr_expect(json_is_null(json_object_get(by, "next")));
    json_decref(by);
    r = req(&s, "GET", "/images?sha256=xyz", NULL, NULL, 0);
    expect_error(&r, 400, "bad_sha256");
    reply_free(&r);
    const char *bad_pages[] = {"/images?limit=0", "/images?limit=1001", "/images?limit=x",
                               "/images?after=-1", "/images?after=1e3"};
    for (size_t i = 0; i < sizeof bad_pages / sizeof *bad_pages; i++) {
        r = req(&s, "GET", bad_pages[i], NULL, NULL, 0);
        expect_error(&r, 400, NULL);
        reply_free(&r);
    }

    /* delete: the API key, one method, no empty filter by accident */
    r = post_json(&s, "/images/delete", "{\"filter\": {\"label\": \"shoe\"}}", NULL);
    expect_error(&r, 401, "unauthorized");
    reply_free(&r);
    r = req(&s, "GET", "/images/delete", NULL, NULL, 0);
    expect_error(&r, 405, "method_not_allowed");
    cr_expect(strstr(r.raw.headers, "Allow: POST") != NULL, "%s", r.raw.headers);
    reply_free(&r);
    r = post_json(&s, "/images/delete", "{\"filter\": {}}", AUTH);
    expect_error(&r, 400, "bad_filter");
    reply_free(&r);
    const char *bad_deletes[] = {"{}", "{\"ids\": [1], \"filter\": {}}", "{\"ids\": [-1]}",
                                 "{\"ids\": \"1\"}", "{\"ids\": [1], \"all\": true}",
                                 "{\"filter\": {\"a\": null}}", "{\"what\": 1}", "[1]", "{"};
    for (size_t i = 0; i < sizeof bad_deletes / sizeof *bad_deletes; i++) {
        r = post_json(&s, "/images/delete", bad_deletes[i], AUTH);
        expect_error(&r, 400, NULL);
        reply_free(&r);
    }
    r = post_json(&s, "/images/delete", "{\"filter\": {\"label\": \"shoe\"}}", AUTH);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "deleted")), N_IMG / 3);
    reply_free(&r);
    /* gone from search at once, and from listing */
    body = search_body(vec, 50, NULL);
    r = post_json(&s, "/search", body, NULL);
    free(body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), N_IMG - N_IMG / 3);
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_str_neq(label_of(json_array_get(res, i)), "shoe");
    reply_free(&r);
    urlenc("{\"label\": \"shoe\"}", enc, sizeof enc);
    snprintf(path, sizeof path, "/images?filter=%s", enc);
    by = get_json(&s, path);
    cr_expect_eq(json_array_size(json_object_get(by, "images")), 0);
    json_decref(by);
    /* by ids: ones that exist count, the others (and repeats) do not */
    char del[128];
    snprintf(del, sizeof del, "{\"ids\": [%lld, %lld, %lld, 999999]}", (long long)ids[1],
             (long long)ids[1], (long long)ids[0]);
    r = post_json(&s, "/images/delete", del, AUTH);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "deleted")), 1,
                 "ids[0] is a shoe, already gone; 999999 never existed");
    reply_free(&r);
    snprintf(path, sizeof path, "/images/%lld", (long long)ids[1]);
    r = req(&s, "GET", path, NULL, NULL, 0);
    expect_error(&r, 404, "not_found");
    reply_free(&r);
    /* everything, said so explicitly */
    r = post_json(&s, "/images/delete", "{\"filter\": {}, \"all\": true}", AUTH);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "deleted")), N_IMG - N_IMG / 3 - 1);
    reply_free(&r);
    json_t *st = get_json(&s, "/status");
    cr_expect_eq(json_integer_value(json_object_get(st, "images")), 0);
    json_decref(st);
    json_decref(vec);
    stop(&s);
}
