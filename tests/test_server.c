/* test_server.c — the real `barlowd serve` on a loopback port with a temporary database, driven
 * through real HTTP: every route, errors, authentication, limits, continual training that
 * publishes versions swapped in atomically, and a restart that resumes where training stopped. */
#define _DEFAULT_SOURCE /* usleep */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "server_util.h"

TestSuite(server, .init = make_dir, .fini = remove_dir, .timeout = 300);

Test(server, every_route_answers_and_bad_requests_get_json_errors) {
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    reply r = req(&s, "GET", "/healthz", NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    reply_free(&r);
    r = req(&s, "GET", "/readyz", NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    reply_free(&r);

    int existed;
    int64_t a = upload(&s, 1, &existed);
    cr_expect(!existed);
    int64_t again = upload(&s, 1, &existed);
    cr_expect(existed && again == a, "identical bytes return the existing id");
    int64_t b = upload(&s, 2, NULL), c = upload(&s, 200, NULL);

    /* metadata and the original bytes */
    unsigned char img[1024];
    size_t n = make_pgm(2, img);
    char path[128];
    snprintf(path, sizeof path, "/images/%lld/raw", (long long)b);
    r = req(&s, "GET", path, NULL, NULL, 0);
    cr_expect(r.status == 200 && r.raw.len == n && !memcmp(r.raw.body, img, n));
    reply_free(&r);
    snprintf(path, sizeof path, "/images/%lld", (long long)b);
    r = req(&s, "GET", path, NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "width")), 28);
    cr_expect_str_eq(json_string_value(json_object_get(r.json, "media_type")),
                     "image/x-portable-graymap");
    reply_free(&r);

    /* the stored vector and a fresh POST /embed of the same bytes agree (same version) */
    reply v = wait_vector(&s, b);
    json_t *vec = json_object_get(v.json, "vector");
    int dim = (int)json_integer_value(json_object_get(v.json, "dim"));
    cr_assert(dim > 0 && (int)json_array_size(vec) == dim);
    r = req(&s, "POST", "/embed", PGM, img, n);
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "model_version")),
                 json_integer_value(json_object_get(v.json, "model_version")));
    double num = 0, den = 0;
    for (int i = 0; i < dim; i++) {
        double x = json_number_value(json_array_get(vec, (size_t)i));
        double y = json_number_value(json_array_get(json_object_get(r.json, "vector"), (size_t)i));
        num += (x - y) * (x - y);
        den += x * x;
    }
    cr_expect(sqrt(num / den) < 1e-5, "batched and single inference differ: %g", sqrt(num / den));
    reply_free(&r);
    reply w = wait_vector(&s, a);
    reply_free(&w);
    w = wait_vector(&s, c);
    reply_free(&w);

    /* search by vector: the image itself comes first with score ~1 */
    json_t *q = json_pack("{s:O,s:i}", "vector", vec, "k", 2);
    char *body = json_dumps(q, 0);
    r = req(&s, "POST", "/search", "Content-Type: application/json\r\n", body, strlen(body));
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    json_t *res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 2);
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(res, 0), "id")), b);
    cr_expect(json_real_value(json_object_get(json_array_get(res, 0), "score")) > 0.9999);
    reply_free(&r);
    free(body);
    json_decref(q);
    /* a batch of queries: one list of results per query, in order */
    q = json_pack("{s:[O,O],s:i}", "vectors", vec, vec, "k", 1);
    body = json_dumps(q, 0);
    r = req(&s, "POST", "/search", "Content-Type: application/json\r\n", body, strlen(body));
    cr_assert_eq(r.status, 200, "%s", r.raw.body);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 2);
    for (size_t i = 0; i < 2; i++)
        cr_expect_eq(json_integer_value(json_object_get(
                         json_array_get(json_array_get(res, i), 0), "id")), b);
    reply_free(&r);
    free(body);
    json_decref(q);
    /* search by image, neighbours (itself excluded) */
    r = req(&s, "POST", "/search?k=1", PGM, img, n);
    cr_expect(r.status == 200 &&
              json_integer_value(json_object_get(
                  json_array_get(json_object_get(r.json, "results"), 0), "id")) == b);
    reply_free(&r);
    snprintf(path, sizeof path, "/neighbors/%lld?k=5", (long long)b);
    r = req(&s, "GET", path, NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    res = json_object_get(r.json, "results");
    cr_expect_eq(json_array_size(res), 2);
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_neq(json_integer_value(json_object_get(json_array_get(res, i), "id")), b);
    reply_free(&r);
    reply_free(&v);

    /* status, checkpoints, metrics */
    r = req(&s, "GET", "/status", NULL, NULL, 0);
    cr_expect(r.status == 200 && json_integer_value(json_object_get(r.json, "images")) == 3);
    json_t *quality = json_object_get(json_object_get(r.json, "models"), "quality");
    cr_expect(json_is_object(quality) &&
                  !strcmp(json_string_value(json_object_get(quality, "label_key")), "label") &&
                  json_is_null(json_object_get(quality, "last_decision")),
              "no decision before a second version: %s", r.raw.body);
    reply_free(&r);
    r = req(&s, "GET", "/checkpoints", NULL, NULL, 0);
    cr_expect(r.status == 200 && json_array_size(json_object_get(r.json, "checkpoints")) == 1);
    cr_expect(json_is_null(json_object_get(
                  json_array_get(json_object_get(r.json, "checkpoints"), 0), "quality")),
              "version 1 was never decided: %s", r.raw.body);
    reply_free(&r);
    r = req(&s, "GET", "/metrics", NULL, NULL, 0);
    cr_expect(r.status == 200 && strstr(r.raw.body, "barlowd_requests_total{route=\"POST /train\"") &&
              strstr(r.raw.body, "barlowd_request_seconds_bucket") &&
              strstr(r.raw.body, "barlowd_images 3"), "%s", r.raw.body);
    reply_free(&r);

    /* delete: gone from the store and from search at once */
    snprintf(path, sizeof path, "/images/%lld", (long long)c);
    r = req(&s, "DELETE", path, NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    reply_free(&r);
    r = req(&s, "GET", path, NULL, NULL, 0);
    expect_error(&r, 404, "not_found");
    reply_free(&r);
    snprintf(path, sizeof path, "/neighbors/%lld", (long long)a);
    r = req(&s, "GET", path, NULL, NULL, 0);
    res = json_object_get(r.json, "results");
    for (size_t i = 0; i < json_array_size(res); i++)
        cr_expect_neq(json_integer_value(json_object_get(json_array_get(res, i), "id")), c);
    reply_free(&r);

    /* bad requests: each a JSON error with the right status */
    static const struct {
        const char *method, *path, *headers, *body;
        int status;
        const char *code;
    } bad[] = {
        {"GET", "/nope", NULL, NULL, 404, "not_found"},
        {"PUT", "/train", NULL, NULL, 405, "method_not_allowed"},
        {"GET", "/images/abc", NULL, NULL, 400, "bad_id"},
        {"GET", "/images/-1", NULL, NULL, 400, "bad_id"},
        {"GET", "/images/99999999999999999999", NULL, NULL, 400, "bad_id"},
        {"GET", "/images/424242", NULL, NULL, 404, "not_found"},
        {"GET", "/images/../status", NULL, NULL, 404, "not_found"},
        {"GET", "/images/1%00/raw", NULL, NULL, 400, "bad_id"},
        {"GET", "/neighbors/1?k=0", NULL, NULL, 400, "bad_k"},
        {"GET", "/neighbors/1?k=abc", NULL, NULL, 400, "bad_k"},
        {"GET", "/neighbors/1?k=1000000000000", NULL, NULL, 400, "bad_k"},
        {"POST", "/train", "Content-Type: text/plain\r\n", "hello", 415, NULL},
        {"POST", "/train", "Content-Type: image/png\r\n", "not a png at all", 415, NULL},
        {"POST", "/train", "Content-Type: image/png\r\n", "", 400, "empty_body"},
        {"POST", "/train", "Content-Type: image/x-portable-graymap\r\n", "P5\n28 28\n255\nabc",
         422, "invalid_image"},
        {"POST", "/search", "Content-Type: application/json\r\n", "{\"vector\": [1, 2", 400,
         "bad_json"},
        {"POST", "/search", "Content-Type: application/json\r\n", "{\"vector\": [1, 2]}", 422,
         "bad_dimension"},
        {"POST", "/search", "Content-Type: application/json\r\n", "[1, 2, 3]", 400, NULL},
        {"POST", "/search", "Content-Type: application/json\r\n", "{\"vectors\": []}", 400,
         "bad_request"},
        {"POST", "/search", "Content-Type: application/json\r\n",
         "{\"vector\": [1], \"vectors\": [[1]]}", 400, "bad_request"},
        {"POST", "/train", "Content-Type: multipart/form-data\r\n", "abc", 400, "bad_multipart"},
        {"POST", "/train", "Content-Type: multipart/form-data; boundary=XyZ\r\n",
         "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a\"\r\n\r\nabc", 400,
         "bad_multipart"},
        {"POST", "/train?meta=%5B1%5D", "Content-Type: image/x-portable-graymap\r\n",
         "P5\n1 1\n255\nx", 400, "bad_meta"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = req(&s, bad[i].method, bad[i].path, bad[i].headers, bad[i].body,
                bad[i].body ? strlen(bad[i].body) : 0);
        cr_expect_eq(r.status, bad[i].status, "%s %s: %d %s", bad[i].method, bad[i].path,
                     r.status, r.raw.body);
        expect_error(&r, bad[i].status, bad[i].code);
        reply_free(&r);
    }
    /* a body-taking route without Content-Length or chunked encoding */
    const char *no_length[] = {"/train", "/embed", "/search"};
    for (int i = 0; i < 3; i++) {
        char raw[256];
        snprintf(raw, sizeof raw,
                 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 "Connection: close\r\n\r\n",
                 no_length[i]);
        r = raw_req(&s, raw);
        expect_error(&r, 411, "length_required");
        reply_free(&r);
    }
    /* nothing above changed the data */
    r = req(&s, "GET", "/status", NULL, NULL, 0);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "images")), 2);
    reply_free(&r);
    stop(&s);
}

/* Runs `barlowd export ARGS` (stderr to a log in dir); returns its exit status. */
static int run_export(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' export %s 2>>%s/export.log", BARLOWD_BIN, args, dir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "no file %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* GET /checkpoints/{id}/export over real HTTP, and `barlowd export` on the same database after
 * the server stopped: the same bytes in both formats; bad requests get JSON errors, and the
 * command's bad input exits 2. */
Test(server, a_model_version_exports_over_http_and_from_the_command_line_alike) {
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    static const char *const formats[] = {"onnx", "safetensors"};
    reply got[2];
    for (int i = 0; i < 2; i++) {
        char path[128], v[128], want[128];
        snprintf(path, sizeof path, "/checkpoints/1/export?format=%s", formats[i]);
        got[i] = req(&s, "GET", path, NULL, NULL, 0);
        cr_assert_eq(got[i].status, 200, "%s: %.200s", path, got[i].raw.body);
        cr_expect(http_reply_header(&got[i].raw, "Content-Type", v, sizeof v) == 0 &&
                      !strcmp(v, "application/octet-stream"), "Content-Type %s", v);
        snprintf(want, sizeof want, "attachment; filename=\"barlowd-v1.%s\"", formats[i]);
        cr_expect(http_reply_header(&got[i].raw, "Content-Disposition", v, sizeof v) == 0 &&
                      !strcmp(v, want), "Content-Disposition %s", v);
    }
    const unsigned char *onnx = (const unsigned char *)got[0].raw.body;
    cr_expect(got[0].raw.len > 1000 && onnx[0] == 0x08 && onnx[1] == 7,
              "an ONNX model starts with its ir_version, 7");
    const unsigned char *st = (const unsigned char *)got[1].raw.body;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)st[i] << (8 * i);
    cr_expect(hlen < got[1].raw.len && st[8] == '{', "safetensors: a JSON header of %llu bytes",
              (unsigned long long)hlen);
    static const struct {
        const char *method, *path;
        int status;
        const char *code;
    } bad[] = {
        {"GET", "/checkpoints/1/export", 400, "bad_format"},
        {"GET", "/checkpoints/1/export?format=tflite", 400, "bad_format"},
        {"GET", "/checkpoints/9/export?format=onnx", 404, "not_found"},
        {"GET", "/checkpoints/one/export?format=onnx", 400, "bad_id"},
        {"POST", "/checkpoints/1/export?format=onnx", 405, "method_not_allowed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        reply r = req(&s, bad[i].method, bad[i].path, NULL, NULL, 0);
        expect_error(&r, bad[i].status, bad[i].code);
        reply_free(&r);
    }
    stop(&s);

    /* the command on the same database writes the same bytes */
    char args[512], out[128];
    for (int i = 0; i < 2; i++) {
        snprintf(out, sizeof out, "%s/v1.%s", dir, formats[i]);
        snprintf(args, sizeof args, "--db %s/data/barlowd.db --version 1 --format %s --out %s",
                 dir, formats[i], out);
        cr_assert_eq(run_export(args), 0, "barlowd export %s (see %s/export.log)", args, dir);
        size_t len;
        char *file = slurp(out, &len);
        cr_expect(len == got[i].raw.len && !memcmp(file, got[i].raw.body, len),
                  "%s: the command's %zu bytes differ from the route's %zu", formats[i], len,
                  got[i].raw.len);
        free(file);
    }
    snprintf(out, sizeof out, "%s/serving.onnx", dir);
    snprintf(args, sizeof args, "--db %s/data/barlowd.db --format onnx --out %s", dir, out);
    cr_expect_eq(run_export(args), 0, "without --version: the serving version");
    size_t len;
    char *file = slurp(out, &len);
    cr_expect(len == got[0].raw.len && !memcmp(file, got[0].raw.body, len));
    free(file);
    static const char *const refused[] = {
        "--db %s/data/barlowd.db --format tflite --out %s/x",
        "--db %s/data/barlowd.db --version 9 --format onnx --out %s/x",
        "--db %s/data/none.db --format onnx --out %s/x",
        "--db %s/data/barlowd.db --version x --format onnx --out %s/x",
        "--db %s/data/barlowd.db --format onnx --out %s/x --model tiny",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        snprintf(args, sizeof args, refused[i], dir, dir);
        cr_expect_eq(run_export(args), 2, "barlowd export %s", args);
        snprintf(out, sizeof out, "%s/x", dir);
        cr_expect_neq(access(out, F_OK), 0, "%s: a refused export wrote a file", args);
    }
    snprintf(out, sizeof out, "%s/data/none.db", dir);
    cr_expect_neq(access(out, F_OK), 0, "a missing database is not created");
    reply_free(&got[0]);
    reply_free(&got[1]);
}

Test(server, the_api_key_guards_writes_and_optionally_reads) {
    const char *flags[] = {"--train", "no", "--api-key", "s3cret", NULL};
    server s = start(flags);
    unsigned char img[1024];
    size_t n = make_pgm(5, img);
    reply r = req(&s, "POST", "/train", PGM, img, n);
    expect_error(&r, 401, "unauthorized");
    reply_free(&r);
    r = req(&s, "POST", "/train", "Content-Type: image/x-portable-graymap\r\n"
                                  "Authorization: Bearer wrong\r\n", img, n);
    expect_error(&r, 401, "unauthorized");
    reply_free(&r);
    r = req(&s, "POST", "/train", "Content-Type: image/x-portable-graymap\r\n"
                                  "Authorization: Bearer s3cret\r\n", img, n);
    cr_expect_eq(r.status, 201);
    cr_expect(!strstr(r.raw.body, "s3cret"));
    reply_free(&r);
    r = req(&s, "DELETE", "/images/1", NULL, NULL, 0);
    expect_error(&r, 401, "unauthorized");
    reply_free(&r);
    r = req(&s, "GET", "/status", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "reads stay open without --api-key-reads");
    reply_free(&r);
    stop(&s);

    const char *flags2[] = {"--train", "no", "--api-key", "s3cret", "--api-key-reads", "yes",
                            NULL};
    s = start(flags2);
    r = req(&s, "GET", "/status", NULL, NULL, 0);
    expect_error(&r, 401, "unauthorized");
    reply_free(&r);
    r = req(&s, "GET", "/images/1", "Authorization: Bearer s3cret\r\n", NULL, 0);
    cr_expect_eq(r.status, 200);
    reply_free(&r);
    r = req(&s, "GET", "/healthz", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "health probes never need the key");
    reply_free(&r);
    stop(&s);
}

Test(server, limits_on_body_size_and_pixels_are_413) {
    const char *flags[] = {"--train", "no", "--max-body", "2048", "--max-pixels", "500", NULL};
    server s = start(flags);
    unsigned char big[4096] = "P5\n64 64\n255\n";
    reply r = req(&s, "POST", "/train", PGM, big, sizeof big);
    expect_error(&r, 413, NULL);
    reply_free(&r);
    unsigned char img[1024];
    size_t n = make_pgm(9, img); /* 784 pixels > 500 */
    r = req(&s, "POST", "/train", PGM, img, n);
    expect_error(&r, 413, "too_large");
    reply_free(&r);
    r = req(&s, "GET", "/status", NULL, NULL, 0);
    cr_expect_eq(json_integer_value(json_object_get(r.json, "images")), 0);
    reply_free(&r);
    stop(&s);
}

/* A multipart body of several PGM parts plus a meta part. */
static size_t multipart(unsigned first, int count, char *out, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < count; i++) {
        unsigned char img[1024];
        size_t len = make_pgm(first + (unsigned)i, img);
        n += (size_t)snprintf(out + n, cap - n,
                              "--XyZ\r\nContent-Disposition: form-data; name=\"img%d\"; "
                              "filename=\"%d.pgm\"\r\nContent-Type: image/x-portable-graymap\r\n\r\n",
                              i, i);
        memcpy(out + n, img, len);
        n += len;
        n += (size_t)snprintf(out + n, cap - n, "\r\n");
    }
    n += (size_t)snprintf(out + n, cap - n,
                          "--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n"
                          "{\"batch\": %u}\r\n--XyZ--\r\n", first);
    return n;
}

/* A batch is stored whole or not at all; the refusal names the image part to blame (0-based among
 * the image parts, the meta part not counted), so a client can send the rest again without it. */
Test(server, a_batch_refused_for_one_image_part_names_the_part_and_stores_none_of_it) {
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    static char body[16 * 1024];
    const char *mp = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
    size_t n = multipart(300, 3, body, sizeof body);
    /* garble the magic bytes of the second image (part 1) */
    int seen = 0;
    for (size_t i = 0; i + 3 < n; i++)
        if (!memcmp(body + i, "P5\n", 3) && seen++ == 1) {
            memcpy(body + i, "Z9", 2);
            break;
        }
    cr_assert_eq(seen, 2);
    reply r = req(&s, "POST", "/train", mp, body, n);
    cr_expect(r.status >= 400 && r.status < 500, "status %d: %s", r.status, r.raw.body);
    json_t *e = json_object_get(r.json, "error");
    cr_expect(json_is_string(json_object_get(e, "code")), "%s", r.raw.body);
    cr_expect(json_is_integer(json_object_get(e, "part")), "%s", r.raw.body);
    cr_expect_eq(json_integer_value(json_object_get(e, "part")), 1, "%s", r.raw.body);
    reply_free(&r);
    json_t *st = get_json(&s, "/status");
    cr_expect_eq(json_integer_value(json_object_get(st, "images")), 0, "nothing of the batch");
    json_decref(st);
    /* a raw-body refusal has no part to name */
    unsigned char junk[] = "Z9 not an image";
    r = req(&s, "POST", "/train", PGM, junk, sizeof junk);
    cr_expect(r.status >= 400 && r.status < 500, "status %d: %s", r.status, r.raw.body);
    cr_expect(!json_object_get(json_object_get(r.json, "error"), "part"), "%s", r.raw.body);
    reply_free(&r);
    stop(&s);
}

Test(server, training_publishes_versions_swapped_in_atomically_and_restarts_resume) {
    const char *flags[] = {"--batch", "8", "--min-images", "16", "--publish-every", "15",
                           "--embed-batch", "8", NULL};
    server s = start(flags);
    static char body[64 * 1024];
    const char *mp = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
    int64_t ids[24];
    for (int chunk = 0; chunk < 3; chunk++) {
        size_t n = multipart(100 + 8 * (unsigned)chunk, 8, body, sizeof body);
        reply r = req(&s, "POST", "/train", mp, body, n);
        cr_assert_eq(r.status, 201, "%s", r.raw.body);
        json_t *arr = json_object_get(r.json, "ids");
        cr_assert_eq(json_array_size(arr), 8);
        for (int i = 0; i < 8; i++) ids[chunk * 8 + i] = json_integer_value(json_array_get(arr, (size_t)i));
        reply_free(&r);
    }
    json_t *im = get_json(&s, "/images/1");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(im, "meta"), "batch")), 100);
    json_decref(im);

    /* versions only move forward, and every vector answer names the version it came from */
    int64_t last = 0;
    double until = now_s() + 180;
    for (;;) {
        reply r = req(&s, "GET", "/neighbors/1?k=3", NULL, NULL, 0);
        if (r.status == 200) {
            int64_t v = json_integer_value(json_object_get(r.json, "model_version"));
            cr_expect(v >= last, "version went back from %lld to %lld", (long long)last,
                      (long long)v);
            last = v;
        }
        reply_free(&r);
        if (last >= 3) break;
        cr_assert(now_s() < until, "no third version within 180 s (serving %lld)",
                  (long long)last);
        usleep(50000);
    }
    /* once a version serves, every live image has its vector of that version */
    json_t *st = get_json(&s, "/status");
    int64_t serving = json_integer_value(json_object_get(json_object_get(st, "models"),
                                                         "serving_version"));
    json_decref(st);
    cr_assert(serving >= 3);
    int64_t newer = 0;
    for (int i = 0; i < 24; i++) {
        reply r = wait_vector(&s, ids[i]);
        int64_t v = json_integer_value(json_object_get(r.json, "model_version"));
        cr_expect(v >= serving, "image %lld answered by version %lld < %lld", (long long)ids[i],
                  (long long)v, (long long)serving);
        newer = v > newer ? v : newer;
        reply_free(&r);
    }
    json_t *ck = get_json(&s, "/checkpoints");
    cr_expect(json_array_size(json_object_get(ck, "checkpoints")) >= 2);
    json_decref(ck);
    st = get_json(&s, "/status");
    json_t *tr = json_object_get(st, "training");
    long step = (long)json_integer_value(json_object_get(tr, "step"));
    cr_expect(step >= 30, "step %ld", step);
    cr_expect(json_real_value(json_object_get(tr, "loss")) > 0);
    json_decref(st);
    stop(&s);

    /* the restart resumes from the final checkpoint: the step count never goes back */
    const char *flags2[] = {"--train", "no", NULL};
    s = start(flags2);
    st = get_json(&s, "/checkpoints");
    json_t *newest = json_array_get(json_object_get(st, "checkpoints"), 0);
    long final_step = (long)json_integer_value(json_object_get(newest, "step"));
    cr_expect(final_step >= step, "the final checkpoint holds step %ld < %ld", final_step, step);
    json_decref(st);
    st = get_json(&s, "/status");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(st, "training"), "step")),
                 final_step, "the trainer resumed at the final checkpoint's step");
    json_decref(st);
    /* and the version saved at shutdown is brought into service by re-embedding */
    until = now_s() + 60;
    for (;;) {
        st = get_json(&s, "/status");
        int64_t v = json_integer_value(json_object_get(json_object_get(st, "models"),
                                                       "serving_version"));
        json_decref(st);
        if (v >= newer) break;
        cr_assert(now_s() < until, "serving version %lld did not reach %lld", (long long)v,
                  (long long)newer);
        usleep(50000);
    }
    stop(&s);
}

/* `barlowd health` with --addr-file F (BARLOWD_ADDR_FILE), BARLOWD_LISTEN pointing elsewhere. */
static int health_exit(const char *addr_file) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setenv("BARLOWD_LISTEN", "127.0.0.1:1", 1); /* wrong on purpose: the file must win */
        setenv("BARLOWD_ADDR_FILE", addr_file, 1);
        freopen("/dev/null", "w", stderr);
        execl(BARLOWD_BIN, BARLOWD_BIN, "health", "--timeout", "5", (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The container's health probe finds the port the server really listens on (the Dockerfile sets
 * BARLOWD_ADDR_FILE; a user may pass --listen after the image name), and SIGTERM while training
 * exits 0 with the last completed step checkpointed, which the next start resumes from. */
Test(server, sigterm_while_training_saves_the_last_step_and_health_reads_the_addr_file) {
    char addr_file[128];
    snprintf(addr_file, sizeof addr_file, "%s/addr", dir);
    const char *flags[] = {"--batch", "8", "--min-images", "16", "--publish-every", "1000",
                           "--addr-file", addr_file, NULL};
    server s = start(flags);
    FILE *f = fopen(addr_file, "r");
    cr_assert(f != NULL, "no --addr-file once listening");
    char line[128] = {0};
    cr_assert(fgets(line, sizeof line, f) != NULL);
    fclose(f);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d\n", s.port);
    cr_expect_str_eq(line, want);
    cr_expect_eq(health_exit(addr_file), 0, "health did not follow %s", addr_file);
    for (unsigned i = 0; i < 20; i++) upload(&s, 500 + i, NULL);
    long long step = 0;
    double until = now_s() + 120;
    while (step < 3) {
        json_t *st = get_json(&s, "/status");
        step = json_integer_value(json_object_get(json_object_get(st, "training"), "step"));
        json_decref(st);
        cr_assert(now_s() < until, "training did not reach step 3 in 120 s");
        usleep(20000);
    }
    stop(&s); /* SIGTERM mid-training: exit 0, "stopped cleanly" */
    cr_expect(access(addr_file, F_OK) != 0, "the address file outlived the server");
    cr_expect_neq(health_exit(addr_file), 0, "healthy with no server");
    /* publish-every 1000 published nothing while it ran: the newest version is the stop's */
    s = start(flags);
    json_t *ck = get_json(&s, "/checkpoints");
    long long newest = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(ck, "checkpoints"), i, c) {
        long long st = json_integer_value(json_object_get(c, "step"));
        if (st > newest) newest = st;
    }
    json_decref(ck);
    cr_expect_geq(newest, step, "the stop saved step %lld, training had reached %lld", newest,
                  step);
    json_t *st = get_json(&s, "/status");
    cr_expect_geq(json_integer_value(json_object_get(json_object_get(st, "training"), "step")),
                  newest, "did not resume from the stop's checkpoint");
    json_decref(st);
    stop(&s);
}

/* A 256x256 grey PGM of seeded noise (65 kB that no codec shrinks): fills a small disk fast. */
static size_t big_pgm(unsigned seed, unsigned char *out) {
    int h = sprintf((char *)out, "P5\n256 256\n255\n");
    unsigned x = seed * 2654435761u + 7;
    for (int i = 0; i < 256 * 256; i++) {
        x = x * 1103515245u + 12345u;
        out[h + i] = (unsigned char)(x >> 24);
    }
    return (size_t)h + 256 * 256;
}

/* The database on a 4 MB tmpfs: uploads past it get 507 disk_full (nothing acknowledged is lost),
 * /readyz says not ready and /metrics counts it while writes fail, the trainer survives
 * checkpoints it cannot write, and once the file system grows, uploads and readiness return. */
Test(server, a_full_disk_is_507_not_ready_and_recovers_when_space_returns) {
    char data[128], cmd[300];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert(mkdir(data, 0755) == 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=4m tmpfs %s 2>&1", data);
    cr_assert(system(cmd) == 0, "cannot mount a tmpfs (the suite runs as root): %s", cmd);
    const char *flags[] = {"--batch", "8", "--min-images", "8", "--publish-every", "2", NULL};
    server s = start(flags);
    static unsigned char img[70000];
    const char *pgm = "Content-Type: image/x-portable-graymap\r\n";
    int64_t ids[200];
    int n_ok = 0, full = 0;
    for (unsigned i = 0; i < 200 && !full; i++) {
        size_t n = big_pgm(i, img);
        reply r = req(&s, "POST", "/train", pgm, img, n);
        if (r.status == 201) {
            ids[n_ok++] = json_integer_value(json_array_get(json_object_get(r.json, "ids"), 0));
        } else {
            expect_error(&r, 507, "disk_full");
            full = 1;
        }
        reply_free(&r);
    }
    cr_assert(full, "200 uploads of 65 kB fitted on a 4 MB disk");
    cr_expect_gt(n_ok, 8, "only %d uploads before the disk filled", n_ok);
    reply r = req(&s, "GET", "/readyz", NULL, NULL, 0);
    expect_error(&r, 503, "disk_full");
    reply_free(&r);
    r = req(&s, "GET", "/metrics", NULL, NULL, 0);
    cr_expect(r.status == 200 && strstr(r.raw.body, "barlowd_writes_failing 1") &&
                  !strstr(r.raw.body, "barlowd_disk_full_errors_total 0\n"),
              "metrics: %s", r.raw.body);
    reply_free(&r);
    /* the trainer keeps going (its checkpoints fail for now) and nothing acknowledged is lost */
    usleep(1500000);
    json_t *st = get_json(&s, "/status");
    const char *state = json_string_value(json_object_get(json_object_get(st, "training"), "state"));
    cr_expect(state && strcmp(state, "failed"), "training state %s", state ? state : "?");
    json_decref(st);
    for (int i = 0; i < n_ok; i++) {
        char path[64];
        snprintf(path, sizeof path, "/images/%lld/raw", (long long)ids[i]);
        reply g = req(&s, "GET", path, NULL, NULL, 0);
        size_t n = big_pgm((unsigned)i, img);
        cr_expect(g.status == 200 && g.raw.len == n && !memcmp(g.raw.body, img, n),
                  "acknowledged image %lld: %d", (long long)ids[i], g.status);
        reply_free(&g);
    }
    /* space returns: uploads and readiness come back without a restart */
    snprintf(cmd, sizeof cmd, "mount -o remount,size=64m %s", data);
    cr_assert(system(cmd) == 0);
    size_t n = big_pgm(9999, img);
    r = req(&s, "POST", "/train", pgm, img, n);
    cr_expect_eq(r.status, 201, "after remount: %d %s", r.status, r.raw.body);
    reply_free(&r);
    r = req(&s, "GET", "/readyz", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "not ready after space returned: %s", r.raw.body);
    reply_free(&r);
    stop(&s);
    snprintf(cmd, sizeof cmd, "umount %s", data);
    cr_expect(system(cmd) == 0);
}

/* How many times text occurs in the server's log so far. */
static int log_count(const server *s, const char *text) {
    FILE *f = fopen(s->log, "r");
    cr_assert(f, "cannot read %s", s->log);
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

/* The training model exists only while training runs: built when the images are there, freed
 * after --release-after seconds of pause with its last step published, built again from that
 * checkpoint when a new upload resumes training (the step goes on, never back). */
Test(server, the_training_model_is_freed_when_idle_and_rebuilt_to_resume) {
    const char *flags[] = {"--batch", "8", "--min-images", "8", "--idle-steps", "4",
                           "--release-after", "1", "--publish-every", "1000", NULL};
    server s = start(flags);
    cr_expect_eq(log_count(&s, "built the training model"), 0, "built before any image");
    for (unsigned i = 0; i < 8; i++) upload(&s, 700 + i, NULL);
    double until = now_s() + 120;
    while (log_count(&s, "freed the training model") < 1) {
        cr_assert(now_s() < until, "the model was never freed (see %s)", s.log);
        usleep(100000);
    }
    cr_expect_eq(log_count(&s, "built the training model"), 1);
    json_t *st = get_json(&s, "/status");
    json_t *tr = json_object_get(st, "training");
    long step = (long)json_integer_value(json_object_get(tr, "step"));
    cr_expect_str_eq(json_string_value(json_object_get(tr, "state")), "paused");
    cr_expect(step >= 4, "step %ld", step);
    json_decref(st);
    json_t *cps = get_json(&s, "/checkpoints");
    cr_expect_eq(json_integer_value(json_object_get(
                     json_array_get(json_object_get(cps, "checkpoints"), 0), "step")),
                 step, "the freed model's last step was published first");
    json_decref(cps);
    /* a new upload resumes training on a rebuilt model */
    upload(&s, 800, NULL);
    until = now_s() + 120;
    for (;;) {
        st = get_json(&s, "/status");
        long now = (long)json_integer_value(json_object_get(json_object_get(st, "training"), "step"));
        json_decref(st);
        if (now > step && log_count(&s, "built the training model") == 2) break;
        cr_assert(now_s() < until, "training did not resume past step %ld (now %ld)", step, now);
        usleep(100000);
    }
    stop(&s);
}
