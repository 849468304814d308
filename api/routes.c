/* routes.c — the route table and every handler of the HTTP API (see api/openapi.yaml). */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "ui_assets.h"

/* ---- parsing helpers ---- */

/* A decimal id: 1..19 digits, no sign, fits int64. 0 ok, -1 malformed. */
static int parse_id(const char *s, size_t n, int64_t *id) {
    if (n == 0 || n > 19) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *id = v;
    return 0;
}

/* Validates client metadata: a JSON object of at most max bytes. NULL ok. */
static int check_meta(const api *a, const char *meta, api_response *rs) {
    if (!meta) return 0;
    if (strlen(meta) > (size_t)a->s->opts.max_meta_bytes) {
        api_error(rs, 413, "meta_too_large", "meta must be at most %d bytes",
                  a->s->opts.max_meta_bytes);
        return -1;
    }
    json_error_t je;
    json_t *j = json_loads(meta, JSON_REJECT_DUPLICATES, &je);
    int ok = j && json_is_object(j);
    json_decref(j);
    if (!ok) {
        api_error(rs, 400, "bad_meta", "meta must be a JSON object%s%s", j ? "" : ": ",
                  j ? "" : je.text);
        return -1;
    }
    return 0;
}

static const char *const image_types[] = {"image/png", "image/jpeg", "image/x-portable-graymap",
                                          "application/octet-stream", NULL};

/* The media type of a Content-Type header value (parameters dropped, lower-cased) into out. */
static void media_type(const char *ct, char *out, size_t n) {
    size_t i = 0;
    for (; ct && ct[i] && ct[i] != ';' && i + 1 < n; i++)
        out[i] = (char)(ct[i] >= 'A' && ct[i] <= 'Z' ? ct[i] + 32 : ct[i]);
    while (i > 0 && (out[i - 1] == ' ' || out[i - 1] == '\t')) i--;
    out[i] = 0;
}

/* Checks a raw image body's Content-Type. 0 ok (*type = the declared type), -1 response set. */
static int image_body(const api_request *rq, char *type, size_t n, api_response *rs) {
    if (!rq->content_type) {
        api_error(rs, 415, "unsupported_media_type",
                  "send the image with Content-Type image/png, image/jpeg or "
                  "image/x-portable-graymap (or multipart/form-data for POST /train)");
        return -1;
    }
    media_type(rq->content_type, type, n);
    for (int i = 0; image_types[i]; i++)
        if (!strcmp(type, image_types[i])) {
            if (rq->body_len == 0) {
                api_error(rs, 400, "empty_body", "the request body is empty");
                return -1;
            }
            return 0;
        }
    api_error(rs, 415, "unsupported_media_type", "Content-Type %.64s is not an image type", type);
    return -1;
}

/* {"id", "score", "meta"} objects for hits. */
static json_t *results_json(api *a, const svc_hit *hits, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        svc_image info;
        svc_err e;
        json_t *meta = json_null();
        if (svc_image_get(a->s, hits[i].id, &info, &e) == 0) {
            if (info.meta_json) {
                json_t *m = json_loads(info.meta_json, 0, NULL);
                if (m) {
                    json_decref(meta);
                    meta = m;
                }
            }
            svc_image_free(&info);
        }
        json_array_append_new(arr, json_pack("{s:I,s:f,s:o}", "id", (json_int_t)hits[i].id,
                                             "score", (double)hits[i].score, "meta", meta));
    }
    return arr;
}

static json_t *vector_json(const float *v, int dim) {
    json_t *arr = json_array();
    for (int i = 0; i < dim; i++) json_array_append_new(arr, json_real(v[i]));
    return arr;
}

/* An image's record as GET /images/{id} returns it. */
static json_t *image_json(const svc_image *info) {
    json_t *meta = info->meta_json ? json_loads(info->meta_json, 0, NULL) : NULL;
    return json_pack("{s:I,s:s,s:s,s:i,s:i,s:I,s:I,s:o}", "id", (json_int_t)info->id, "sha256",
                     info->sha256, "media_type", info->media_type, "width", info->width, "height",
                     info->height, "bytes", (json_int_t)info->bytes, "created",
                     (json_int_t)info->created, "meta", meta ? meta : json_null());
}

/* Parses filter text into *f. 0 ok, -1 with a 400 bad_filter naming what is wrong. */
static int filter_from_text(const api *a, const char *text, size_t len, svc_filter **f,
                            api_response *rs) {
    svc_err e = {0};
    if (svc_filter_parse(a->s, text, len, f, &e) == 0) return 0;
    if (e.code == ERR_NO_MEMORY)
        api_out_of_memory(rs);
    else
        api_error(rs, 400, "bad_filter", "%s", e.msg);
    return -1;
}

/* The same for a "filter" member of a JSON body (any JSON value: a non-object is refused). */
static int filter_from_json(const api *a, const json_t *j, svc_filter **f, api_response *rs) {
    char *text = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!text) {
        api_out_of_memory(rs);
        return -1;
    }
    int rc = filter_from_text(a, text, strlen(text), f, rs);
    free(text);
    return rc;
}

/* ---- handlers ---- */

static void post_train(api *a, const api_request *rq, const char *query_meta, api_response *rs) {
    svc_blob *imgs = NULL;
    int n = 0;
    const char *meta = NULL;
    char *meta_copy = NULL;
    char type[128];
    if (rq->multipart) {
        imgs = calloc((size_t)rq->n_parts + 1, sizeof *imgs);
        if (!imgs) {
            api_out_of_memory(rs);
            return;
        }
        for (int i = 0; i < rq->n_parts; i++) {
            const api_part *p = &rq->parts[i];
            if (!strcmp(p->name, "meta") && !p->filename) {
                if (meta_copy) {
                    api_error(rs, 400, "bad_meta", "more than one meta part");
                    goto done;
                }
                meta_copy = strndup((const char *)p->data, p->len);
                if (!meta_copy || strlen(meta_copy) != p->len) {
                    api_error(rs, 400, "bad_meta", "meta must be a JSON object");
                    goto done;
                }
                meta = meta_copy;
                continue;
            }
            imgs[n].bytes = p->data;
            imgs[n].len = p->len;
            imgs[n].type = NULL; /* multipart parts' types are advisory: the bytes decide */
            n++;
        }
        if (n == 0) {
            api_error(rs, 400, "no_images", "the multipart body has no image parts");
            goto done;
        }
    } else {
        if (image_body(rq, type, sizeof type, rs)) return;
        imgs = calloc(1, sizeof *imgs);
        if (!imgs) {
            api_out_of_memory(rs);
            return;
        }
        imgs[0] = (svc_blob){rq->body, rq->body_len, type};
        n = 1;
        meta = query_meta; /* validated by the dispatcher (the route's parameter table) */
    }
    if (meta == meta_copy && check_meta(a, meta, rs)) goto done;
    int64_t *ids = calloc((size_t)n, sizeof *ids);
    int *existed = calloc((size_t)n, sizeof *existed);
    int failed;
    svc_err e = {0};
    if (!ids || !existed) {
        api_out_of_memory(rs);
    } else if (svc_upload(a->s, imgs, n, meta, ids, existed, &failed, &e)) {
        char where[48] = "";
        if (failed >= 0 && n > 1) snprintf(where, sizeof where, "image part %d: ", failed);
        if (failed >= 0 && rq->multipart)
            api_svc_error_part(rs, &e, where, failed);
        else
            api_svc_error(rs, &e, where);
    } else {
        json_t *arr = json_array(), *ex = json_array();
        for (int i = 0; i < n; i++) {
            json_array_append_new(arr, json_integer(ids[i]));
            json_array_append_new(ex, json_boolean(existed[i]));
        }
        api_json(rs, 201, json_pack("{s:o,s:o}", "ids", arr, "existed", ex));
    }
    free(ids);
    free(existed);
done:
    free(imgs);
    free(meta_copy);
}

static void get_embed(api *a, int64_t id, api_response *rs) {
    float *v = malloc((size_t)a->s->dim * sizeof *v);
    int64_t version;
    if (!v) {
        api_out_of_memory(rs);
        return;
    }
    if (svc_vector(a->s, id, v, &version) == 0) {
        api_json(rs, 200, json_pack("{s:I,s:I,s:i,s:o}", "id", (json_int_t)id, "model_version",
                                    (json_int_t)version, "dim", a->s->dim,
                                    "vector", vector_json(v, a->s->dim)));
    } else if (svc_image_live(a->s, id)) {
        api_error(rs, 503, "not_ready", "image %lld has no vector yet; retry shortly",
                  (long long)id);
        rs->retry_after = 1;
    } else {
        api_error(rs, 404, "not_found", "no image %lld", (long long)id);
    }
    free(v);
}

/* Embeds a raw image body with the serving version; *version is the version it came from. */
static int embed_body(api *a, const api_request *rq, float *v, int64_t *version,
                      api_response *rs) {
    char type[128];
    if (image_body(rq, type, sizeof type, rs)) return -1;
    svc_err e = {0};
    if (svc_embed_bytes(a->s, rq->body, rq->body_len, type, v, version, &e)) {
        api_svc_error(rs, &e, "");
        return -1;
    }
    return 0;
}

static void post_embed(api *a, const api_request *rq, api_response *rs) {
    float *v = malloc((size_t)a->s->dim * sizeof *v);
    int64_t version;
    if (!v) {
        api_out_of_memory(rs);
        return;
    }
    if (embed_body(a, rq, v, &version, rs) == 0)
        api_json(rs, 200, json_pack("{s:I,s:i,s:o}", "model_version", (json_int_t)version,
                                    "dim", a->s->dim, "vector", vector_json(v, a->s->dim)));
    free(v);
}

/* "exact": true when the answer is the exact top k (an index below --ann-threshold rows, a
 * request that forced it, a filter matching few images), false when the HNSW graph answered. */
static void search_reply(api *a, api_response *rs, const svc_hit *hits, int n, int64_t version,
                         int exact) {
    api_json(rs, 200, json_pack("{s:I,s:b,s:o}", "model_version", (json_int_t)version, "exact",
                                exact, "results", results_json(a, hits, n)));
}

static void get_neighbors(api *a, int64_t id, int k, const svc_filter *f, int force_exact,
                          api_response *rs) {
    svc_hit *hits = malloc((size_t)k * sizeof *hits);
    int n, exact = 1;
    int64_t version;
    svc_err e = {0};
    if (!hits)
        api_out_of_memory(rs);
    else if (svc_neighbors_ann(a->s, id, k, f, force_exact, hits, &n, &version, &exact, &e))
        api_svc_error(rs, &e, "");
    else
        search_reply(a, rs, hits, n, version, exact);
    free(hits);
}

/* One JSON array of dim finite numbers into v. 0 ok, -1 response set. */
static int parse_vector(api *a, json_t *vec, const char *what, float *v, api_response *rs) {
    if (!json_is_array(vec)) {
        api_error(rs, 400, "bad_request", "%s must be an array of numbers", what);
        return -1;
    }
    if ((int)json_array_size(vec) != a->s->dim) {
        api_error(rs, 422, "bad_dimension", "%s has %zu numbers; this model's vectors have %d",
                  what, json_array_size(vec), a->s->dim);
        return -1;
    }
    for (int i = 0; i < a->s->dim; i++) {
        json_t *x = json_array_get(vec, (size_t)i);
        double d = json_number_value(x);
        if (!json_is_number(x) || !isfinite(d) || fabs(d) > 3.4e38) {
            api_error(rs, 422, "bad_vector", "%s[%d] is not a finite float", what, i);
            return -1;
        }
        v[i] = (float)d;
    }
    return 0;
}

#define MAX_BATCH_QUERIES 1024

/* {"vector": [...], "k": 10} or {"vectors": [[...], ...], "k": 10}, with an optional "filter"
 * and "exact" → *v (malloc'd, nq rows), *nq (-1 for the single form), k, *f (NULL when none)
 * and *force_exact ("exact": true). 0 ok, -1 response set. */
static int parse_search_json(api *a, const api_request *rq, float **v, int *nq, int *k,
                             svc_filter **f, int *force_exact, api_response *rs) {
    *f = NULL;
    *force_exact = 0;
    json_error_t je;
    *v = NULL;
    json_t *root = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        api_error(rs, 400, "bad_json", "invalid JSON: %s (line %d)", je.text, je.line);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        api_error(rs, 400, "bad_request",
                  "the body must be {\"vector\": [numbers], \"k\": n} or {\"vectors\": [...]}");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "vector") && strcmp(key, "vectors") && strcmp(key, "k") &&
            strcmp(key, "filter") && strcmp(key, "exact")) {
            api_error(rs, 400, "bad_request",
                      "unknown field \"%.64s\" (vector, vectors, k, filter, exact)", key);
            goto done;
        }
    }
    json_t *jexact = json_object_get(root, "exact");
    if (jexact && !json_is_boolean(jexact)) {
        api_error(rs, 400, "bad_request", "\"exact\" must be true or false");
        goto done;
    }
    *force_exact = jexact && json_is_true(jexact);
    json_t *jf = json_object_get(root, "filter");
    if (jf && filter_from_json(a, jf, f, rs)) goto done;
    json_t *one = json_object_get(root, "vector"), *many = json_object_get(root, "vectors");
    if (!!one == !!many) {
        api_error(rs, 400, "bad_request", "give either \"vector\" or \"vectors\"");
        goto done;
    }
    size_t n = one ? 1 : json_array_size(many);
    if (many && (!json_is_array(many) || n < 1 || n > MAX_BATCH_QUERIES)) {
        api_error(rs, 400, "bad_request", "\"vectors\" must hold 1 to %d vectors",
                  MAX_BATCH_QUERIES);
        goto done;
    }
    *v = malloc(n * (size_t)a->s->dim * sizeof **v);
    if (!*v) {
        api_out_of_memory(rs);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, one ? "vector" : "vectors[%zu]", i);
        if (parse_vector(a, one ? one : json_array_get(many, i), what, *v + i * a->s->dim, rs))
            goto done;
    }
    *nq = one ? -1 : (int)n;
    *k = 10;
    json_t *jk = json_object_get(root, "k");
    if (jk) {
        if (!json_is_integer(jk) || json_integer_value(jk) < 1 ||
            json_integer_value(jk) > a->opts.max_k) {
            api_error(rs, 400, "bad_k", "k must be an integer from 1 to %d", a->opts.max_k);
            goto done;
        }
        *k = (int)json_integer_value(jk);
    }
    rc = 0;
done:
    if (rc) {
        free(*v);
        *v = NULL;
        svc_filter_free(*f);
        *f = NULL;
    }
    json_decref(root);
    return rc;
}

/* A failed vector search: the query's fault is 422 bad_vector, anything else (out of memory, a
 * failure of ours) keeps its own status. */
static void search_error(api_response *rs, const svc_err *e) {
    if (e->code == ERR_BAD_INPUT)
        api_error(rs, 422, "bad_vector", "%s", e->msg);
    else
        api_svc_error(rs, e, "");
}

static void search_json(api *a, const api_request *rq, const svc_filter *query_filter,
                        api_response *rs) {
    float *v;
    int nq, k, n;
    int64_t version;
    svc_err e = {0};
    svc_filter *f;
    int force_exact, exact = 1;
    if (parse_search_json(a, rq, &v, &nq, &k, &f, &force_exact, rs)) return;
    if (f && query_filter) {
        api_error(rs, 400, "bad_filter", "give the filter once: in the body or in ?filter=");
        svc_filter_free(f);
        free(v);
        return;
    }
    const svc_filter *use = f ? f : query_filter;
    int rows = nq < 0 ? 1 : nq;
    svc_hit *hits = malloc((size_t)rows * k * sizeof *hits);
    int *counts = malloc((size_t)rows * sizeof *counts);
    if (!hits || !counts) {
        api_out_of_memory(rs);
    } else if (nq < 0) {
        if (svc_search_ann(a->s, v, k, use, force_exact, hits, &n, &version, &exact, &e)) {
            search_error(rs, &e);
        } else {
            search_reply(a, rs, hits, n, version, exact);
        }
    } else if (svc_search_batch(a->s, v, nq, k, use, hits, counts, &version, &e)) {
        search_error(rs, &e);
    } else {
        json_t *all = json_array();
        for (int i = 0; i < nq; i++)
            json_array_append_new(all, results_json(a, hits + (size_t)i * k, counts[i]));
        api_json(rs, 200, json_pack("{s:I,s:b,s:o}", "model_version", (json_int_t)version,
                                    "exact", 1, "results", all));
    }
    free(hits);
    free(counts);
    free(v);
    svc_filter_free(f);
}

static void post_search(api *a, const api_request *rq, int query_k, const svc_filter *f,
                        api_response *rs) {
    char type[128];
    media_type(rq->content_type, type, sizeof type);
    float *v = malloc((size_t)a->s->dim * sizeof *v);
    svc_hit *hits = NULL;
    int k = query_k, n;
    int64_t version;
    svc_err e = {0};
    if (!v) {
        api_out_of_memory(rs);
        return;
    }
    if (!strcmp(type, "application/json")) {
        search_json(a, rq, f, rs);
        goto done;
    }
    if (!(hits = malloc((size_t)k * sizeof *hits))) goto oom;
    /* an image query: embed and search with the same version (retry if a swap came between) */
    for (int attempt = 0; attempt < 3; attempt++) {
        int64_t want;
        if (embed_body(a, rq, v, &want, rs)) goto done;
        int exact = 1;
        if (svc_search_ann(a->s, v, k, f, 0, hits, &n, &version, &exact, &e)) {
            api_svc_error(rs, &e, "");
            goto done;
        }
        if (version == want) {
            search_reply(a, rs, hits, n, version, exact);
            goto done;
        }
    }
    api_error(rs, 503, "busy", "the model version changed during the search; retry");
    rs->retry_after = 1;
    goto done;
oom:
    api_out_of_memory(rs);
done:
    free(v);
    free(hits);
}

static const char *static_media_type(const char *t) {
    static const char *const known[] = {"image/png", "image/jpeg", "image/x-portable-graymap"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(t, known[i])) return known[i];
    return "application/octet-stream";
}

static void get_image(api *a, int64_t id, int raw, api_response *rs) {
    svc_err e = {0};
    if (raw) {
        void *bytes;
        size_t len;
        char type[64];
        int r = svc_image_bytes(a->s, id, &bytes, &len, type, &e);
        if (r == 0) {
            rs->status = 200;
            rs->content_type = static_media_type(type);
            rs->body = bytes;
            rs->len = len;
        } else if (r == 1) {
            api_error(rs, 404, "not_found", "no image %lld", (long long)id);
        } else {
            api_svc_error(rs, &e, "");
        }
        return;
    }
    svc_image info;
    int r = svc_image_get(a->s, id, &info, &e);
    if (r == 1) {
        api_error(rs, 404, "not_found", "no image %lld", (long long)id);
        return;
    }
    if (r < 0) {
        api_svc_error(rs, &e, "");
        return;
    }
    api_json(rs, 200, image_json(&info));
    svc_image_free(&info);
}

/* GET /images: a page of the images matching the filter, or the one with a SHA-256. */
static void list_images(api *a, const svc_filter *f, int64_t after, int limit, const char *sha,
                        api_response *rs) {
    svc_err e = {0};
    json_t *arr = json_array();
    if (sha) {
        svc_image info;
        int r = svc_image_by_sha(a->s, sha, &info, &e);
        if (r < 0 && e.code == ERR_BAD_INPUT) {
            json_decref(arr);
            api_error(rs, 400, "bad_sha256", "sha256 must be 64 hex digits");
            return;
        }
        if (r < 0) {
            json_decref(arr);
            api_svc_error(rs, &e, "");
            return;
        }
        if (r == 0) {
            json_array_append_new(arr, image_json(&info));
            svc_image_free(&info);
        }
        api_json(rs, 200, json_pack("{s:o,s:n}", "images", arr, "next"));
        return;
    }
    svc_image *page = calloc((size_t)limit, sizeof *page);
    int n;
    int64_t next;
    if (!page) {
        json_decref(arr);
        api_out_of_memory(rs);
        return;
    }
    if (svc_image_page(a->s, f, after, limit, page, &n, &next, &e)) {
        json_decref(arr);
        api_svc_error(rs, &e, "");
    } else {
        for (int i = 0; i < n; i++) {
            json_array_append_new(arr, image_json(&page[i]));
            svc_image_free(&page[i]);
        }
        api_json(rs, 200, json_pack("{s:o,s:o}", "images", arr, "next",
                                    next >= 0 ? json_integer(next) : json_null()));
    }
    free(page);
}

#define MAX_DELETE_IDS 100000

/* POST /images/delete: {"ids": [...]} or {"filter": {...}} (an empty filter only with
 * "all": true) → {"deleted": N}. */
static void delete_images(api *a, const api_request *rq, api_response *rs) {
    json_error_t je;
    json_t *root = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &je);
    svc_filter *f = NULL;
    int64_t *ids = NULL;
    svc_err e = {0};
    if (!root) {
        api_error(rs, 400, "bad_json", "invalid JSON: %s (line %d)", je.text, je.line);
        return;
    }
    const char *key;
    json_t *val, *jids = json_object_get(root, "ids"), *jf = json_object_get(root, "filter"),
                 *jall = json_object_get(root, "all");
    if (!json_is_object(root)) {
        api_error(rs, 400, "bad_request", "the body must be {\"ids\": [...]} or {\"filter\": {...}}");
        goto done;
    }
    json_object_foreach(root, key, val) {
        if (strcmp(key, "ids") && strcmp(key, "filter") && strcmp(key, "all")) {
            api_error(rs, 400, "bad_request", "unknown field \"%.64s\" (ids, filter, all)", key);
            goto done;
        }
    }
    if (!!jids == !!jf) {
        api_error(rs, 400, "bad_request", "give either \"ids\" or \"filter\"");
        goto done;
    }
    if (jall && (!json_is_boolean(jall) || jids)) {
        api_error(rs, 400, "bad_request", "\"all\" is a boolean that goes with \"filter\"");
        goto done;
    }
    int64_t deleted;
    if (jids) {
        size_t n = json_array_size(jids);
        if (!json_is_array(jids) || n > MAX_DELETE_IDS) {
            api_error(rs, 400, "bad_request", "\"ids\" must be an array of at most %d ids",
                      MAX_DELETE_IDS);
            goto done;
        }
        ids = malloc((n ? n : 1) * sizeof *ids);
        if (!ids) {
            api_out_of_memory(rs);
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_array_get(jids, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0) {
                api_error(rs, 400, "bad_id", "ids[%zu] is not an id (a non-negative integer)", i);
                goto done;
            }
            ids[i] = json_integer_value(x);
        }
        deleted = svc_delete_ids(a->s, ids, n, &e);
    } else {
        if (filter_from_json(a, jf, &f, rs)) goto done;
        if (svc_filter_is_empty(f) && !json_is_true(jall)) {
            api_error(rs, 400, "bad_filter",
                      "an empty filter matches every image: send \"all\": true to delete them all");
            goto done;
        }
        deleted = svc_delete_matching(a->s, f, &e);
    }
    if (deleted < 0)
        api_svc_error(rs, &e, "");
    else
        api_json(rs, 200, json_pack("{s:I}", "deleted", (json_int_t)deleted));
done:
    svc_filter_free(f);
    free(ids);
    json_decref(root);
}

static void delete_image(api *a, int64_t id, api_response *rs) {
    svc_err e = {0};
    int r = svc_delete(a->s, id, &e);
    if (r < 0)
        api_svc_error(rs, &e, "");
    else if (r == 1)
        api_error(rs, 404, "not_found", "no image %lld", (long long)id);
    else
        api_json(rs, 200, json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1));
}


/* A number, or null when it was not measured. */
static json_t *real_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* The quality monitor's record of a version as JSON (null when it has none). */
static json_t *quality_json(const store_quality *q) {
    if (!q || q->version <= 0) return json_null();
    return json_pack("{s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:b,s:s,s:f}", "version",
                     (json_int_t)q->version, "labelled", (json_int_t)q->labelled, "knn20",
                     real_or_null(q->knn20), "pixels_knn20", real_or_null(q->pixels_knn20),
                     "serving_knn20", real_or_null(q->serving_knn20), "effective_rank",
                     real_or_null(q->eff_rank), "mean_std", real_or_null(q->mean_std),
                     "accepted", q->accepted, "reason", q->reason, "decided", q->decided);
}

/* A version's record from the store, as JSON. */
static json_t *version_quality_json(api *a, int64_t version) {
    store_quality q;
    svc_err e = {0};
    return svc_version_quality(a->s, version, &q, &e) == 0 ? quality_json(&q) : json_null();
}

static void get_status(api *a, api_response *rs) {
    svc_status st;
    svc_get_status(a->s, &st);
    svc_train_status t = st.train;
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:{s:s,s:I,s:f,s:f,s:f,s:{s:f,s:f},s:I},s:{s:I,s:I,s:o,s:{s:I,s:I}},s:f}",
        "images", (json_int_t)st.images, "vectors", (json_int_t)st.vectors,
        "embed_queue", (json_int_t)st.queue, "training", "state",
        svc_train_state_name(t.state), "step",
        (json_int_t)t.stats.step, "loss", isfinite(t.stats.loss) ? t.stats.loss : 0.0,
        "learning_rate", t.stats.lr, "images_per_s", t.stats.images_per_s, "c_matrix",
        "diag_mean", t.stats.diag_mean, "offdiag_abs_mean", t.stats.offdiag_abs_mean,
        "last_published_version", (json_int_t)t.last_published, "models", "serving_version",
        (json_int_t)st.serving_version, "training_version", (json_int_t)t.last_published,
        "pending_version", st.pending_version > 0 ? json_integer(st.pending_version) : json_null(),
        "reembedding", "done", (json_int_t)st.reembed_done, "total", (json_int_t)st.reembed_total, "uptime_s", svc_now() - a->started);
    if ((t.state == SVC_TRAIN_FAILED || t.state == SVC_TRAIN_RANKS_LOST) && t.error[0])
        json_object_set_new(json_object_get(j, "training"), "error", json_string(t.error));
    json_object_set_new(json_object_get(j, "training"), "ranks",
                        json_integer(t.ranks > 0 ? t.ranks : 1));
    json_object_set_new(json_object_get(j, "models"), "quality",
                        json_pack("{s:o,s:o,s:s}", "serving",
                                  version_quality_json(a, st.serving_version), "last_decision",
                                  quality_json(&st.last_decision), "label_key",
                                  a->s->opts.label_key));
    api_json(rs, 200, j);
}

static void get_checkpoints(api *a, api_response *rs) {
    svc_checkpoint list[64];
    svc_err e = {0};
    int n = svc_checkpoints(a->s, list, 64, &e);
    if (n < 0) {
        api_svc_error(rs, &e, "");
        return;
    }
    svc_status st;
    svc_get_status(a->s, &st);
    int64_t serving = st.serving_version;
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I,s:I,s:I,s:o,s:I,s:b,s:o}", "version", (json_int_t)list[i].version,
                           "step", (json_int_t)list[i].step, "created", (json_int_t)list[i].created,
                           "loss", list[i].step > 0 && isfinite(list[i].loss)
                                       ? json_real(list[i].loss) : json_null(),
                           "bytes", (json_int_t)list[i].bytes, "serving",
                           list[i].version == serving, "quality",
                           version_quality_json(a, list[i].version)));
    api_json(rs, 200, json_pack("{s:I,s:o}", "serving_version", (json_int_t)serving,
                                "checkpoints", arr));
}

static void get_metrics(api *a, api_response *rs) {
    buf b = {0};
    api_metrics_text(a, &b);
    svc_status st;
    svc_get_status(a->s, &st);
    svc_train_status t = st.train;
    buf_printf(&b,
               "# TYPE barlowd_images gauge\nbarlowd_images %lld\n"
               "# TYPE barlowd_index_vectors gauge\nbarlowd_index_vectors %zu\n"
               "# TYPE barlowd_embed_queue gauge\nbarlowd_embed_queue %zu\n"
               "# TYPE barlowd_serving_version gauge\nbarlowd_serving_version %lld\n"
               "# TYPE barlowd_reembed_done gauge\nbarlowd_reembed_done %lld\n"
               "# TYPE barlowd_reembed_total gauge\nbarlowd_reembed_total %lld\n"
               "# TYPE barlowd_train_step gauge\nbarlowd_train_step %ld\n"
               "# TYPE barlowd_train_loss gauge\nbarlowd_train_loss %g\n"
               "# TYPE barlowd_train_learning_rate gauge\nbarlowd_train_learning_rate %g\n"
               "# TYPE barlowd_train_images_per_second gauge\n"
               "barlowd_train_images_per_second %g\n"
               "# TYPE barlowd_train_c_diag_mean gauge\nbarlowd_train_c_diag_mean %g\n"
               "# TYPE barlowd_train_c_offdiag_abs_mean gauge\n"
               "barlowd_train_c_offdiag_abs_mean %g\n"
               "# TYPE barlowd_disk_full_errors_total counter\n"
               "barlowd_disk_full_errors_total %ld\n"
               "# TYPE barlowd_writes_failing gauge\nbarlowd_writes_failing %d\n"
               "# TYPE barlowd_uptime_seconds gauge\nbarlowd_uptime_seconds %.3f\n"
               "# TYPE barlowd_quality_last_refused gauge\n"
               "barlowd_quality_last_refused %d\n",
               (long long)st.images, st.vectors, st.queue, (long long)st.serving_version,
               (long long)st.reembed_done, (long long)st.reembed_total, t.stats.step,
               t.stats.loss, t.stats.lr, t.stats.images_per_s, t.stats.diag_mean,
               t.stats.offdiag_abs_mean, st.disk_full_errors, st.writes_failing,
               svc_now() - a->started,
               st.last_decision.version > 0 && !st.last_decision.accepted);
    store_quality sq;
    svc_err qe = {0};
    if (svc_version_quality(a->s, st.serving_version, &sq, &qe) == 0 && isfinite(sq.knn20))
        buf_printf(&b,
                   "# TYPE barlowd_quality_knn20 gauge\nbarlowd_quality_knn20 %g\n"
                   "# TYPE barlowd_quality_pixels_knn20 gauge\nbarlowd_quality_pixels_knn20 %g\n"
                   "# TYPE barlowd_quality_labelled gauge\nbarlowd_quality_labelled %lld\n",
                   sq.knn20, sq.pixels_knn20, (long long)sq.labelled);
    if (!b.p) {
        api_out_of_memory(rs);
        return;
    }
    rs->status = 200;
    rs->content_type = "text/plain; version=0.0.4";
    rs->body = b.p;
    rs->len = b.len;
}

/* ---- dispatch: one table ---- */

/* What the dispatcher parsed and validated for a handler, from the path and the route's
 * parameter table. */
typedef struct route_args {
    int64_t id;         /* the {id} segment (0 when the pattern has none) */
    const char *name;   /* the {name} segment, name_len bytes, not NUL-terminated (NULL: none) */
    size_t name_len;
    int k;              /* ?k= */
    const char *meta;   /* ?meta=: a JSON object within the metadata limit, or NULL */
    svc_filter *filter; /* ?filter=: a parsed metadata filter (owned; freed after the handler) */
    int64_t after;      /* ?after=: an id, or -1 */
    int limit;          /* ?limit= */
    const char *sha256; /* ?sha256=, or NULL */
    int format;         /* ?format=: the index of its value among the parameter's choices */
    int64_t since;      /* ?since=: a training step */
    int every;          /* ?every= */
    int size;           /* ?size=: a thumbnail's side */
    int exact;          /* ?exact=: 1 for true (an exact scan forced), 0 for false */
} route_args;

/* A route's handler. */
typedef void (*route_fn)(api *a, const api_request *rq, const route_args *args, api_response *rs);

enum {
    RF_WRITE = 1, /* changes data: always needs the API key when one is set */
    RF_OPEN = 2,  /* a health probe: never needs the key */
    RF_BODY = 4,  /* needs a body (411 without Content-Length or chunked) */
    RF_PRIVATE = 8 /* the whole database (snapshots): needs the key whenever one is set, reads
                    * too, whatever --api-key-reads says */
};

/* A query parameter a route takes: checked before its handler runs, which then reads the value
 * from route_args (or the default when it is absent). Unknown query parameters are ignored. */
typedef enum param_kind {
    PK_INT = 1,     /* a decimal integer in [lo, hi] (hi 0: the server's --max-k), into an int */
    PK_ID,          /* a decimal int64 id, into an int64_t (dflt when absent) */
    PK_JSON_OBJECT, /* a JSON object of at most the service's max_meta_bytes, into a string */
    PK_FILTER,      /* a metadata filter (JSON), parsed into an svc_filter * */
    PK_TEXT,        /* any text, into a string (the handler checks it) */
    PK_CHOICE       /* one of `choices`, into an int (its index); dflt -1: required */
} param_kind;

typedef struct param_def {
    const char *name;
    param_kind kind;
    size_t offset;      /* of its value in route_args */
    int64_t dflt, lo, hi;
    const char *code;   /* the error code of a bad value (PK_INT, PK_CHOICE) */
    const char *const *choices; /* PK_CHOICE: the values, NULL-terminated */
} param_def;

#define MAX_PARAMS 4
#define TRAINING_LOG_MAX 5000 /* rows per GET /training-log */
#define ARG(f) offsetof(route_args, f)
static const param_def P_K = {"k", PK_INT, ARG(k), 10, 1, 0, "bad_k", NULL};
static const param_def P_META = {"meta", PK_JSON_OBJECT, ARG(meta), 0, 0, 0, "bad_meta", NULL};
static const param_def P_FILTER = {"filter", PK_FILTER, ARG(filter), 0, 0, 0, "bad_filter", NULL};
static const param_def P_AFTER = {"after", PK_ID, ARG(after), -1, 0, 0, "bad_after", NULL};
static const param_def P_LIMIT = {"limit", PK_INT, ARG(limit), 100, 1, 1000, "bad_limit", NULL};
static const param_def P_SHA256 = {"sha256", PK_TEXT, ARG(sha256), 0, 0, 0, "bad_sha256", NULL};
static const char *const export_formats[] = {"onnx", "safetensors", NULL};
static const param_def P_FORMAT = {"format", PK_CHOICE, ARG(format), -1, 0, 0, "bad_format",
                                   export_formats};
static const char *const booleans[] = {"false", "true", NULL};
static const param_def P_EXACT = {"exact", PK_CHOICE, ARG(exact), 0, 0, 0, "bad_exact", booleans};
static const param_def P_SINCE = {"since", PK_ID, ARG(since), 0, 0, 0, "bad_since", NULL};
static const param_def P_LOG_LIMIT = {"limit", PK_INT, ARG(limit), 1000, 1, TRAINING_LOG_MAX,
                                      "bad_limit", NULL};
static const param_def P_EVERY = {"every", PK_INT, ARG(every), 1, 1, 1000000000, "bad_every",
                                  NULL};
static const param_def P_SIZE = {"size", PK_INT, ARG(size), 128, 16, SVC_THUMBNAIL_MAX,
                                 "bad_size", NULL};

/* One row per route: "METHOD /path/{param}" (also its label in logs and /metrics), the handler,
 * flags, query parameters. Literal segments win over parameters, whatever the order; {id} is a
 * decimal int64. */
typedef struct route_def {
    const char *label;
    route_fn fn;
    int flags;
    const param_def *params[MAX_PARAMS]; /* NULL-terminated when shorter */
} route_def;

static void h_train(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    post_train(a, rq, args->meta, rs);
}
static void h_embed_get(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    get_embed(a, args->id, rs);
}
static void h_embed_post(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)args;
    post_embed(a, rq, rs);
}
static void h_neighbors(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    get_neighbors(a, args->id, args->k, args->filter, args->exact, rs);
}
static void h_search(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    post_search(a, rq, args->k, args->filter, rs);
}
static void h_images(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    list_images(a, args->filter, args->after, args->limit, args->sha256, rs);
}
static void h_images_delete(api *a, const api_request *rq, const route_args *args,
                            api_response *rs) {
    (void)args;
    delete_images(a, rq, rs);
}
static void h_image(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    get_image(a, args->id, 0, rs);
}
static void h_image_raw(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    get_image(a, args->id, 1, rs);
}
static void h_image_delete(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    delete_image(a, args->id, rs);
}
static void h_status(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    get_status(a, rs);
}
static void h_checkpoints(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    get_checkpoints(a, rs);
}
static void h_checkpoint_serve(api *a, const api_request *rq, const route_args *args,
                               api_response *rs) {
    (void)rq;
    svc_err e = {0};
    int r = svc_version_choose(a->s, args->id, &e);
    if (r < 0)
        api_svc_error(rs, &e, "");
    else if (r == 1)
        api_error(rs, 404, "not_found", "no model version %lld", (long long)args->id);
    else
        api_json(rs, 202, json_pack("{s:I,s:s}", "version", (json_int_t)args->id, "status",
                                    "re-embedding"));
}
static void h_checkpoint_export(api *a, const api_request *rq, const route_args *args,
                                api_response *rs) {
    (void)rq;
    eng_export_format fmt;
    if (eng_export_format_parse(export_formats[args->format], &fmt)) { /* can't happen */
        api_error(rs, 500, "internal", "no exporter for %s", export_formats[args->format]);
        return;
    }
    uint8_t *bytes;
    size_t len;
    svc_err e = {0};
    int r = svc_export(a->s, args->id, fmt, &bytes, &len, &e);
    if (r < 0) {
        api_svc_error(rs, &e, "");
    } else if (r == 1) {
        api_error(rs, 404, "not_found", "no model version %lld (never published, or its "
                  "checkpoint was pruned)", (long long)args->id);
    } else if (r == 2) {
        api_error(rs, 409, "version_refused", "%s", e.msg);
    } else {
        rs->status = 200;
        rs->content_type = "application/octet-stream";
        rs->body = (char *)bytes;
        rs->len = len;
        snprintf(rs->filename, sizeof rs->filename, "barlowd-v%lld.%s", (long long)args->id,
                 export_formats[args->format]);
    }
}
static void h_healthz(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)a, (void)rq, (void)args;
    api_json(rs, 200, json_pack("{s:s}", "status", "ok"));
}
static void h_readyz(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    if (!a->ready)
        api_error(rs, 503, "not_ready", "starting or stopping");
    else if (atomic_load(&a->s->writes_failing))
        api_error(rs, 503, "disk_full", "the database's disk is full: uploads are refused "
                                        "until space is freed");
    else
        api_json(rs, 200, json_pack("{s:s}", "status", "ready"));
}
static void h_metrics(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    get_metrics(a, rs);
}

/* ---- the dashboard and what it draws ---- */

static void h_training_log(api *a, const api_request *rq, const route_args *args,
                           api_response *rs) {
    (void)rq;
    store_log_row *rows = malloc(sizeof *rows * (size_t)args->limit);
    if (!rows) {
        api_out_of_memory(rs);
        return;
    }
    svc_err e = {0};
    int n = svc_training_log(a->s, args->since, args->every, rows, args->limit, &e);
    if (n < 0) {
        free(rows);
        api_svc_error(rs, &e, "");
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I,s:f,s:o,s:f,s:f,s:f,s:f}", "step", (json_int_t)rows[i].step,
                           "time", rows[i].time, "loss", real_or_null(rows[i].loss),
                           "learning_rate", rows[i].lr, "images_per_s", rows[i].images_per_s,
                           "diag_mean", rows[i].diag_mean, "offdiag_abs_mean",
                           rows[i].offdiag_abs_mean));
    json_t *next = n == args->limit ? json_integer(rows[n - 1].step) : json_null();
    free(rows);
    api_json(rs, 200, json_pack("{s:o,s:o}", "rows", arr, "next", next));
}

/* The last step's c block; size 0 and no values before the first step since the server started
 * (a 200: the dashboard polls it from the start). */
static void h_c_matrix(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    float *c = malloc(sizeof(float) * SVC_CORR_SIDE * SVC_CORR_SIDE);
    if (!c) {
        api_out_of_memory(rs);
        return;
    }
    int d;
    long step;
    int side = svc_corr_get(a->s, c, &d, &step);
    json_t *rows = json_array();
    for (int i = 0; i < side; i++) {
        json_t *row = json_array();
        for (int j = 0; j < side; j++)
            json_array_append_new(row, json_real(round((double)c[i * side + j] * 1e5) / 1e5));
        json_array_append_new(rows, row);
    }
    free(c);
    api_json(rs, 200, json_pack("{s:I,s:i,s:i,s:o}", "step", (json_int_t)step, "dim", d, "size",
                                side, "values", rows));
}

static void h_thumbnail(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    uint8_t *png;
    size_t len;
    svc_err e = {0};
    int r = svc_image_thumbnail(a->s, args->id, args->size, &png, &len, &e);
    if (r == 1) {
        api_error(rs, 404, "not_found", "no image %lld", (long long)args->id);
    } else if (r < 0) {
        api_svc_error(rs, &e, "");
    } else {
        rs->status = 200;
        rs->content_type = "image/png";
        rs->body = (char *)png;
        rs->len = len;
        rs->cache_control = "private, max-age=86400"; /* an id's image never changes */
    }
}

/* One of the dashboard's files, or its configuration (config.json: whether reads need the key,
 * which the page must know before its first data request). Never needs the key: none of it is
 * data. */
static void ui_file(api *a, const char *name, size_t len, api_response *rs) {
    if (len == 11 && !memcmp(name, "config.json", 11)) {
        api_json(rs, 200, json_pack("{s:b,s:b}", "reads_need_key", a->opts.key_reads && a->opts.api_key,
                                    "writes_need_key", a->opts.api_key != NULL));
        rs->ui = 1;
        rs->cache_control = "no-store";
        return;
    }
    for (const ui_asset *f = ui_assets; f->name; f++)
        if (strlen(f->name) == len && !memcmp(f->name, name, len)) {
            rs->body = malloc(f->len ? f->len : 1);
            if (!rs->body) {
                api_out_of_memory(rs);
                return;
            }
            memcpy(rs->body, f->data, f->len);
            rs->len = f->len;
            rs->status = 200;
            rs->content_type = f->media_type;
            rs->ui = 1;
            rs->cache_control = "no-cache"; /* a new binary's page is seen at once */
            return;
        }
    api_error(rs, 404, "not_found", "no such dashboard file");
}

static void h_ui_page(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    ui_file(a, "index.html", 10, rs);
}
static void h_ui_file(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq;
    ui_file(a, args->name, args->name_len, rs);
}

/* ---- snapshots ---- */

/* {"name", "bytes", "created", "images", "serving_version"} (null where the file is unreadable). */
static json_t *snapshot_json(const svc_snapshot *sn) {
    return json_pack("{s:s,s:I,s:I,s:o,s:o}", "name", sn->name, "bytes", (json_int_t)sn->bytes,
                     "created", (json_int_t)sn->created, "images",
                     sn->images >= 0 ? json_integer(sn->images) : json_null(), "serving_version",
                     sn->serving_version >= 0 ? json_integer(sn->serving_version) : json_null());
}

/* The {name} of a snapshot route into name (NUL-terminated). 0 ok, -1 with a 400 set: only the
 * names the server makes are accepted, so nothing else reaches the file system. */
static int snapshot_name(const route_args *args, char name[SVC_SNAPSHOT_NAME_MAX],
                         api_response *rs) {
    if (!args->name || !svc_snapshot_name_ok(args->name, args->name_len)) {
        api_error(rs, 400, "bad_snapshot_name",
                  "not a snapshot name: the server names them snap-YYYYMMDDTHHMMSSZ-N.db "
                  "(GET /snapshots lists them)");
        return -1;
    }
    memcpy(name, args->name, args->name_len);
    name[args->name_len] = 0;
    return 0;
}

static void h_snapshot_create(api *a, const api_request *rq, const route_args *args,
                              api_response *rs) {
    (void)rq, (void)args;
    svc_snapshot sn;
    svc_err e = {0};
    int r = svc_snapshot_create(a->s, &sn, &e);
    if (r == 1)
        api_error(rs, 409, "snapshot_in_progress", "a snapshot is being written; retry when it "
                                                   "is done");
    else if (r == 2)
        api_error(rs, 409, "too_many_snapshots",
                  "%d snapshots are kept already: delete one (DELETE /snapshots/{name}) first",
                  a->s->opts.max_snapshots);
    else if (r < 0)
        api_svc_error(rs, &e, "");
    else
        api_json(rs, 201, snapshot_json(&sn));
}
static void h_snapshots(api *a, const api_request *rq, const route_args *args, api_response *rs) {
    (void)rq, (void)args;
    svc_snapshot *list;
    int n;
    svc_err e = {0};
    if (svc_snapshot_list(a->s, &list, &n, &e)) {
        api_svc_error(rs, &e, "");
        return;
    }
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, snapshot_json(&list[i]));
    free(list);
    api_json(rs, 200, json_pack("{s:o}", "snapshots", arr));
}
static void h_snapshot_get(api *a, const api_request *rq, const route_args *args,
                           api_response *rs) {
    (void)rq;
    char name[SVC_SNAPSHOT_NAME_MAX];
    if (snapshot_name(args, name, rs)) return;
    int fd;
    int64_t bytes;
    svc_err e = {0};
    int r = svc_snapshot_open(a->s, name, &fd, &bytes, &e);
    if (r < 0) {
        api_svc_error(rs, &e, "");
    } else if (r == 1) {
        api_error(rs, 404, "not_found", "no snapshot %s", name);
    } else { /* streamed from the file by the HTTP layer, which closes it */
        rs->status = 200;
        rs->content_type = "application/vnd.sqlite3";
        rs->has_file = 1;
        rs->file_fd = fd;
        rs->file_len = (uint64_t)bytes;
        snprintf(rs->file_name, sizeof rs->file_name, "%s", name);
    }
}
static void h_snapshot_delete(api *a, const api_request *rq, const route_args *args,
                              api_response *rs) {
    (void)rq;
    char name[SVC_SNAPSHOT_NAME_MAX];
    if (snapshot_name(args, name, rs)) return;
    svc_err e = {0};
    int r = svc_snapshot_delete(a->s, name, &e);
    if (r < 0)
        api_svc_error(rs, &e, "");
    else if (r == 1)
        api_error(rs, 404, "not_found", "no snapshot %s", name);
    else
        api_json(rs, 200, json_pack("{s:s,s:b}", "name", name, "deleted", 1));
}

static const route_def routes[] = {
    {"POST /train", h_train, RF_WRITE | RF_BODY, {&P_META}},
    {"GET /embed/{id}", h_embed_get, 0, {NULL}},
    {"POST /embed", h_embed_post, RF_BODY, {NULL}},
    {"GET /neighbors/{id}", h_neighbors, 0, {&P_K, &P_FILTER, &P_EXACT}},
    {"POST /search", h_search, RF_BODY, {&P_K, &P_FILTER}},
    {"GET /images", h_images, 0, {&P_FILTER, &P_AFTER, &P_LIMIT, &P_SHA256}},
    {"POST /images/delete", h_images_delete, RF_WRITE | RF_BODY, {NULL}},
    {"GET /images/{id}", h_image, 0, {NULL}},
    {"GET /images/{id}/raw", h_image_raw, 0, {NULL}},
    {"GET /images/{id}/thumbnail", h_thumbnail, 0, {&P_SIZE}},
    {"DELETE /images/{id}", h_image_delete, RF_WRITE, {NULL}},
    {"GET /status", h_status, 0, {NULL}},
    {"GET /checkpoints", h_checkpoints, 0, {NULL}},
    {"POST /checkpoints/{id}/serve", h_checkpoint_serve, RF_WRITE, {NULL}},
    {"GET /checkpoints/{id}/export", h_checkpoint_export, 0, {&P_FORMAT}},
    {"GET /healthz", h_healthz, RF_OPEN, {NULL}},
    {"GET /readyz", h_readyz, RF_OPEN, {NULL}},
    {"GET /metrics", h_metrics, 0, {NULL}},
    {"GET /training-log", h_training_log, 0, {&P_SINCE, &P_LOG_LIMIT, &P_EVERY}},
    {"GET /c-matrix", h_c_matrix, 0, {NULL}},
    {"GET /", h_ui_page, RF_OPEN, {NULL}},
    {"GET /ui/{name}", h_ui_file, RF_OPEN, {NULL}},
    {"POST /snapshots", h_snapshot_create, RF_WRITE | RF_PRIVATE, {NULL}},
    {"GET /snapshots", h_snapshots, RF_PRIVATE, {NULL}},
    {"GET /snapshots/{name}", h_snapshot_get, RF_PRIVATE, {NULL}},
    {"DELETE /snapshots/{name}", h_snapshot_delete, RF_WRITE | RF_PRIVATE, {NULL}},
};
#define N_ROUTES ((int)(sizeof routes / sizeof *routes))
/* the routes, then the three labels of requests that matched none */
static const char *const pseudo_labels[] = {"unmatched", "rejected", "other"};
_Static_assert(sizeof routes / sizeof *routes + 3 == API_ROUTES, "one metrics slot per route");

const char *api_route_label(int i) {
    assert(i >= 0 && i < API_ROUTES);
    return i < N_ROUTES ? routes[i].label : pseudo_labels[i - N_ROUTES];
}

#define MAX_SEGS 8

/* Splits "/a/b/c" into at most MAX_SEGS segments; -1 for empty segments (double slashes), "."
 * and ".." (no path tricks reach a handler), or more segments than any route has. */
static int split(const char *path, size_t len, const char *seg[MAX_SEGS], size_t seglen[MAX_SEGS]) {
    if (len == 0 || path[0] != '/') return -1;
    int n = 0;
    size_t i = 1;
    if (len == 1) return 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && path[j] != '/') j++;
        if (j == i || n == MAX_SEGS) return -1;
        if ((j - i == 1 && path[i] == '.') || (j - i == 2 && path[i] == '.' && path[i + 1] == '.'))
            return -1;
        seg[n] = path + i;
        seglen[n++] = j - i;
        i = j + 1;
        if (j == len) break;
    }
    return n;
}

/* How well a route's pattern fits the path: -1 no match, else a score in which a literal segment
 * outweighs every later one (so /images/delete beats /images/{id}). *param is the index of the
 * {id} segment (-1 when none). */
static long pattern_fit(const char *label, const char *const *seg, const size_t *sl, int n,
                        int *param) {
    const char *p = strchr(label, ' ') + 1; /* the pattern, after the method */
    long score = 0;
    int k = 0;
    *param = -1;
    if (!strcmp(p, "/")) return n == 0 ? 0 : -1;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (k == n) return -1;
        if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
            *param = k;
        } else {
            if (plen != sl[k] || memcmp(p, seg[k], plen)) return -1;
            score |= 1L << (MAX_SEGS - 1 - k);
        }
        k++;
        p += plen;
    }
    return k == n ? score : -1;
}

long api_pattern_fit(const char *label, const char *path) {
    const char *seg[MAX_SEGS];
    size_t sl[MAX_SEGS];
    int param, n = split(path, strlen(path), seg, sl);
    return n < 0 ? -1 : pattern_fit(label, seg, sl, n, &param);
}

/* 1 when a route's method is the request's (HEAD is served as GET). */
static int method_is(const char *label, const char *m) {
    size_t n = (size_t)(strchr(label, ' ') - label);
    if (strlen(m) == n && !memcmp(label, m, n)) return 1;
    return n == 3 && !memcmp(label, "GET", 3) && !strcmp(m, "HEAD");
}

/* Reads, checks and stores one query parameter (its default when absent). 0 ok, -1 with the
 * error response set: 400 with the parameter's code for a malformed value (for metadata,
 * check_meta's 400 bad_meta or 413 meta_too_large). */
static int parse_param(const api *a, const api_request *rq, const param_def *p, route_args *args,
                       api_response *rs) {
    const char *q = rq->query ? rq->query(rq->query_ctx, p->name) : NULL;
    char *field = (char *)args + p->offset;
    switch (p->kind) {
    case PK_INT: {
        int64_t v = p->dflt, hi = p->hi ? p->hi : a->opts.max_k;
        if (q && (parse_id(q, strlen(q), &v) || v < p->lo || v > hi)) {
            api_error(rs, 400, p->code,
                      "%s must be an integer from %lld to %lld", p->name, (long long)p->lo,
                      (long long)hi);
            return -1;
        }
        *(int *)(void *)field = (int)v;
        return 0;
    }
    case PK_ID: {
        int64_t v = p->dflt;
        if (q && parse_id(q, strlen(q), &v)) {
            api_error(rs, 400, p->code, "%s must be an id (a decimal integer from 0)", p->name);
            return -1;
        }
        *(int64_t *)(void *)field = v;
        return 0;
    }
    case PK_JSON_OBJECT:
        if (check_meta(a, q, rs)) return -1;
        *(const char **)(void *)field = q;
        return 0;
    case PK_FILTER:
        if (q && filter_from_text(a, q, strlen(q), (svc_filter **)(void *)field, rs))
            return -1;
        return 0;
    case PK_TEXT:
        *(const char **)(void *)field = q;
        return 0;
    case PK_CHOICE: {
        char list[128] = "";
        for (int i = 0; p->choices[i]; i++) {
            if (q && !strcmp(q, p->choices[i])) {
                *(int *)(void *)field = i;
                return 0;
            }
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", p->choices[i]);
        }
        if (!q && p->dflt >= 0) {
            *(int *)(void *)field = (int)p->dflt;
            return 0;
        }
        api_error(rs, 400, p->code, q ? "%s must be one of %s" : "%s is required (one of %s)",
                  p->name, list);
        return -1;
    }
    }
    return 0;
}

void api_handle(api *a, const api_request *rq, api_response *rs) {
    memset(rs, 0, sizeof *rs);
    rs->route = pseudo_labels[0];
    const char *seg[MAX_SEGS];
    size_t sl[MAX_SEGS];
    if (strlen(rq->path) != rq->path_len) {
        api_error(rs, 400, "bad_path", "the path contains a NUL byte");
        return;
    }
    int n = split(rq->path, rq->path_len, seg, sl);
    /* the best-fitting pattern, then the route of that pattern with the request's method */
    long best = -1, fit[N_ROUTES];
    int param[N_ROUTES];
    for (int i = 0; i < N_ROUTES; i++) {
        fit[i] = n < 0 ? -1 : pattern_fit(routes[i].label, seg, sl, n, &param[i]);
        if (fit[i] > best) best = fit[i];
    }
    if (best < 0) {
        api_error(rs, 404, "not_found", "no such route");
        return;
    }
    const route_def *r = NULL;
    int id_seg = -1;
    size_t allow_len = 0;
    for (int i = 0; i < N_ROUTES; i++) {
        if (fit[i] != best) continue;
        const char *label = routes[i].label;
        size_t mlen = (size_t)(strchr(label, ' ') - label);
        if (allow_len + mlen + 2 < sizeof rs->allow_buf) { /* "GET, DELETE" for a 405 */
            if (allow_len) {
                memcpy(rs->allow_buf + allow_len, ", ", 2);
                allow_len += 2;
            }
            memcpy(rs->allow_buf + allow_len, label, mlen);
            allow_len += mlen;
            rs->allow_buf[allow_len] = 0;
        }
        if (!r && method_is(label, rq->method)) {
            r = &routes[i];
            id_seg = param[i];
        }
    }
    if (!r) {
        api_error(rs, 405, "method_not_allowed", "%.16s is not allowed here (allowed: %s)",
                  rq->method, rs->allow_buf);
        rs->allow = rs->allow_buf;
        return;
    }
    rs->route = r->label;
    if (!(r->flags & RF_OPEN) && ((r->flags & (RF_WRITE | RF_PRIVATE)) || a->opts.key_reads) &&
        !api_authorized(a, rq)) {
        api_error(rs, 401, "unauthorized", "this route needs Authorization: Bearer <api key>");
        return;
    }
    route_args args = {0};
    if (id_seg >= 0 && strstr(r->label, "{name}")) { /* a string: the handler checks it */
        args.name = seg[id_seg];
        args.name_len = sl[id_seg];
    } else if (id_seg >= 0 && parse_id(seg[id_seg], sl[id_seg], &args.id)) {
        api_error(rs, 400, "bad_id", "ids are decimal integers from 0 to 9223372036854775807");
        return;
    }
    if ((r->flags & RF_BODY) && !rq->has_body) {
        api_error(rs, 411, "length_required", "send a body with Content-Length (or chunked)");
        return;
    }
    int ok = 1;
    for (int i = 0; ok && i < MAX_PARAMS && r->params[i]; i++)
        ok = parse_param(a, rq, r->params[i], &args, rs) == 0;
    if (ok) r->fn(a, rq, &args, rs);
    svc_filter_free(args.filter);
}
