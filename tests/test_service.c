/* test_service.c — the service in process: a real store in a temporary directory and the `tiny`
 * model, called the way the route handlers and the workers call it (no HTTP, no threads of
 * its own). The service is the only way in to the store and the engine on those paths. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api_internal.h"
#include "svc.h"
#include "svc_internal.h"
#include "eng_trainer.h"
#include "server_util.h"

TestSuite(service, .init = make_dir, .fini = remove_dir, .timeout = 120);

typedef struct fixture {
    store *st;
    svc s;
} fixture;

/* api_handle, and its response checked against api/openapi.yaml as server_util checks the real
 * server's (a HEAD is answered as its GET; the HTTP layer drops the body). */
static void handle(api *a, const api_request *rq, api_response *rs) {
    api_handle(a, rq, rs);
    check_response(strcmp(rq->method, "HEAD") ? rq->method : "GET", rq->path, rs->status,
                   rs->content_type, rs->has_file ? NULL : rs->body, rs->has_file ? 0 : rs->len);
}

/* A fresh store and a service on it (opts NULL: the defaults), version 1 being a seeded
 * untrained `tiny`. */
static void open_service_opts(fixture *f, const svc_opts *opts) {
    char path[128];
    snprintf(path, sizeof path, "%s/svc.db", dir);
    store_err se = {0};
    cr_assert(store_open(path, NULL, &f->st, &se) == 0, "%s", se.msg);
    eng_err e = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &e) == 0, "%s", e.msg);
    eng_trainer t;
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, 4);
    cr_assert(eng_trainer_create(&t, &cfg, &tc, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    uint8_t *blob;
    size_t len;
    cr_assert(eng_trainer_save(&t, &blob, &len, &e) == 0, "%s", e.msg);
    eng_trainer_free(&t);
    svc_err err = {0};
    cr_assert(svc_open(&f->s, f->st, opts, blob, len, &err) == 0, "%s", err.msg);
    free(blob);
}

static void open_service(fixture *f) { open_service_opts(f, NULL); }

static void close_service(fixture *f) {
    svc_stop(&f->s);
    svc_close(&f->s);
    store_close(f->st);
}

/* Seconds svc_wait_for_publish(s, seconds) took. */
static double timed_wait(svc *s, double seconds) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    svc_wait_for_publish(s, seconds);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
}

static int64_t put_image(fixture *f, unsigned seed, const char *meta) {
    unsigned char img[1024];
    size_t n = make_pgm(seed, img);
    svc_blob b = {img, n, "image/x-portable-graymap"};
    int64_t id;
    int existed, failed = -1;
    svc_err err = {0};
    cr_assert(svc_upload(&f->s, &b, 1, meta, &id, &existed, &failed, &err) == 0, "%s", err.msg);
    return id;
}

/* Embeds every queued upload with the serving version (what the embed worker does). */
static void embed_queued(fixture *f) {
    int64_t queued[128];
    int nq = svc_queue_take(&f->s, queued, 128);
    svc_err err = {0};
    cr_assert(svc_embed_fresh(&f->s, queued, nq, &err) == 0, "%s", err.msg);
}

/* Publishes the newest checkpoint's weights again as a new version (the same model). */
static int64_t republish(fixture *f, uint64_t step, double loss) {
    void *bytes;
    size_t len;
    store_err se = {0};
    store_checkpoint_info info;
    cr_assert(store_checkpoint_latest(f->st, &info, &bytes, &len, &se) == 0, "%s", se.msg);
    int64_t version;
    svc_err err = {0};
    cr_assert(svc_publish(&f->s, bytes, len, step, loss, &version, &err) == 0, "%s", err.msg);
    free(bytes);
    return version;
}

Test(service, image_records_bytes_and_liveness_come_from_the_service) {
    fixture f;
    open_service(&f);
    int64_t a = put_image(&f, 1, "{\"label\":\"shirt\"}"), b = put_image(&f, 2, NULL);
    cr_expect_eq(svc_image_count(&f.s), 2);
    svc_image img;
    svc_err err = {0};
    cr_assert(svc_image_get(&f.s, a, &img, &err) == 0, "%s", err.msg);
    cr_expect_eq(img.id, a);
    cr_expect_eq(img.width, 28);
    cr_expect_str_eq(img.media_type, "image/x-portable-graymap");
    cr_expect(img.meta_json && strstr(img.meta_json, "shirt"), "meta %s", img.meta_json);
    svc_image_free(&img);
    cr_expect_null(img.meta_json);
    unsigned char want[1024];
    size_t want_len = make_pgm(2, want);
    void *bytes;
    size_t len;
    char type[64];
    cr_assert(svc_image_bytes(&f.s, b, &bytes, &len, type, &err) == 0, "%s", err.msg);
    cr_expect(len == want_len && !memcmp(bytes, want, len), "the bytes changed");
    cr_expect_str_eq(type, "image/x-portable-graymap");
    free(bytes);
    cr_expect_eq(svc_image_live(&f.s, a), 1);
    cr_expect_eq(svc_delete(&f.s, a, &err), 0);
    cr_expect_eq(svc_image_live(&f.s, a), 0);
    cr_expect_eq(svc_image_get(&f.s, a, &img, &err), 1, "a deleted image is not found");
    cr_expect_eq(svc_image_bytes(&f.s, a, &bytes, &len, type, &err), 1);
    cr_expect_null(bytes);
    cr_expect_eq(svc_image_count(&f.s), 1);
    close_service(&f);
}

Test(service, embedding_bytes_uses_the_serving_version_and_refuses_bad_images) {
    fixture f;
    open_service(&f);
    unsigned char img[1024];
    size_t n = make_pgm(7, img);
    float *v = malloc(sizeof(float) * (size_t)f.s.dim), *w = malloc(sizeof(float) * (size_t)f.s.dim);
    int64_t version = 0, again = 0;
    svc_err err = {0};
    cr_assert(svc_embed_bytes(&f.s, img, n, "image/x-portable-graymap", v, &version, &err) == 0,
              "%s", err.msg);
    cr_expect_eq(version, 1);
    double norm = 0;
    for (int i = 0; i < f.s.dim; i++) norm += (double)v[i] * v[i];
    cr_expect(norm > 0 && isfinite(norm), "vector norm %g", norm);
    cr_assert(svc_embed_bytes(&f.s, img, n, NULL, w, &again, &err) == 0, "%s", err.msg);
    cr_expect(!memcmp(v, w, sizeof(float) * (size_t)f.s.dim), "the same bytes, another vector");
    cr_expect_neq(svc_embed_bytes(&f.s, "P5 nonsense", 11, NULL, v, &version, &err), 0);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "kind %d: %s", err.code, err.msg);
    free(v);
    free(w);
    close_service(&f);
}

Test(service, training_samples_live_copies_and_a_publish_rings_the_reembedder) {
    fixture f;
    open_service(&f);
    uint64_t rng = 42;
    eng_image imgs[8];
    svc_err err = {0};
    cr_expect_eq(svc_training_sample(&f.s, &rng, imgs, 8, &err), 0, "images from an empty store");
    for (unsigned i = 0; i < 5; i++) put_image(&f, 100 + i, NULL);
    int got = svc_training_sample(&f.s, &rng, imgs, 8, &err);
    cr_expect_eq(got, 8, "%d of 8 (%s)", got, err.msg);
    for (int i = 0; i < got; i++) {
        cr_expect_eq(imgs[i].channels, 1);
        cr_expect(imgs[i].width > 0 && imgs[i].height > 0);
        eng_image_free(&imgs[i]);
    }
    /* no publish: the wait ends by its timeout */
    double waited = timed_wait(&f.s, 0.2);
    cr_expect(waited >= 0.19, "returned after %.3f s without a publish", waited);
    /* a publish rings: the next wait returns at once, and consumes the ring */
    svc_checkpoint list[8];
    cr_assert_eq(svc_checkpoints(&f.s, list, 8, &err), 1, "%s", err.msg);
    store_err se = {0};
    int64_t version = republish(&f, 5, 1.5);
    waited = timed_wait(&f.s, 30.0);
    cr_expect(waited < 5.0, "a rung bell still waited %.3f s", waited);
    int n = svc_checkpoints(&f.s, list, 8, &err);
    cr_assert_eq(n, 2, "%s", err.msg);
    cr_expect_eq(list[0].version, version, "newest first");
    cr_expect_eq(list[0].step, 5);
    cr_expect(fabs(list[0].loss - 1.5) < 1e-12);
    /* the training log takes the trainer's statistics */
    eng_train_stats st = {7, 2.5, 0.1, 100.0, 0.9, 0.01};
    cr_expect_eq(svc_log_training(&f.s, &st, &err), 0, "%s", err.msg);
    store_log_row row;
    cr_assert_eq(store_log_tail(f.st, &row, 1, &se), 1, "%s", se.msg);
    cr_expect_eq(row.step, 7);
    cr_expect(row.loss == 2.5);
    /* once stopping, a wait returns at once */
    svc_stop(&f.s);
    waited = timed_wait(&f.s, 30.0);
    cr_expect(waited < 5.0, "a stopping service still waited %.3f s", waited);
    svc_close(&f.s);
    store_close(f.st);
}

/* Searches the serving version until told to stop; every answer must hold every live image
 * (a version is served only once it has all their vectors) and name version 1 or 2. */
typedef struct searcher {
    fixture *f;
    int images;
    atomic_int stop;
    int answers, wrong;
    int64_t last_version;
} searcher;

static void *search_loop(void *arg) {
    searcher *q = arg;
    float *vec = calloc((size_t)q->f->s.dim, sizeof *vec);
    vec[0] = 1.0f;
    eng_hit hits[16];
    while (!atomic_load(&q->stop)) {
        int n = 0;
        int64_t version = 0;
        svc_err err = {0};
        if (svc_search(&q->f->s, vec, 16, NULL, hits, &n, &version, &err) || n != q->images ||
            (version != 1 && version != 2))
            q->wrong++;
        q->last_version = version;
        q->answers++;
    }
    free(vec);
    return NULL;
}

static void *held_elsewhere(void *arg) { return (void *)(intptr_t)svc_mutex_held(arg); }

Test(service, a_version_is_one_object_swapped_by_one_pointer_and_kept_while_referenced) {
    fixture f;
    open_service(&f);
    int64_t ids[6];
    for (unsigned i = 0; i < 6; i++) ids[i] = put_image(&f, 200 + i, NULL);
    int64_t queued[16];
    int nq = svc_queue_take(&f.s, queued, 16);
    cr_assert_eq(nq, 6);
    svc_err err = {0};
    cr_assert(svc_embed_fresh(&f.s, queued, nq, &err) == 0, "%s", err.msg);
    svc_version *v1 = svc_version_acquire(&f.s);
    cr_assert_eq(v1->id, 1);
    cr_expect_eq(v1->index.n, 6u);

    /* publish version 2, then re-embed and swap while another thread searches */
    int64_t version = republish(&f, 9, 1.0);
    cr_assert_eq(version, 2);
    searcher q = {.f = &f, .images = 6};
    atomic_init(&q.stop, 0);
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, search_loop, &q) == 0);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    svc_status st;
    svc_get_status(&f.s, &st);
    cr_expect_eq(st.serving_version, 2);
    cr_expect_eq(st.pending_version, -1);
    cr_expect_eq(st.vectors, 6u);
    struct timespec pause = {0, 50 * 1000000L};
    nanosleep(&pause, NULL);
    atomic_store(&q.stop, 1);
    pthread_join(th, NULL);
    cr_expect(q.answers > 0 && q.wrong == 0, "%d of %d answers wrong", q.wrong, q.answers);
    cr_expect_eq(q.last_version, 2, "the searches end on the new version");
    cr_expect_eq(svc_serving_version(&f.s), 2);

    /* the old version outlives the swap while referenced: its model and index still answer */
    cr_expect_eq(v1->index.n, 6u);
    float *vec = malloc(sizeof(float) * (size_t)f.s.dim);
    eng_image img;
    unsigned char pgm[1024];
    size_t n = make_pgm(200, pgm);
    cr_assert(svc_prepare(&f.s, pgm, n, NULL, &img, &err) == 0, "%s", err.msg);
    eng_aug_src src = eng_image_as_src(&img);
    cr_expect_eq(svc_version_embed(v1, &src, 1, vec, &err), 0, "%s", err.msg);
    eng_image_free(&img);
    svc_version_release(v1);

    /* a delete reaches the serving version's index */
    cr_expect_eq(svc_delete(&f.s, ids[0], &err), 0);
    eng_hit hits[16];
    int got = 0;
    cr_assert(svc_search(&f.s, vec, 16, NULL, hits, &got, &version, &err) == 0, "%s", err.msg);
    cr_expect_eq(got, 5);
    for (int i = 0; i < got; i++) cr_expect_neq(hits[i].id, ids[0]);
    free(vec);

    /* the locks know their holder */
    cr_expect_not(svc_mutex_held(&f.s.version_mu));
    svc_mutex_lock(&f.s.version_mu);
    cr_expect(svc_mutex_held(&f.s.version_mu));
    pthread_t other;
    void *held = NULL;
    cr_assert(pthread_create(&other, NULL, held_elsewhere, &f.s.version_mu) == 0);
    pthread_join(other, &held);
    cr_expect_eq((intptr_t)held, 0, "another thread does not hold it");
    svc_mutex_unlock(&f.s.version_mu);
    cr_expect_not(svc_mutex_held(&f.s.version_mu));
    svc_version *v2 = svc_version_acquire(&f.s);
    cr_expect_not(svc_rwlock_held(&v2->index_lock));
    svc_rwlock_rdlock(&v2->index_lock);
    cr_expect(svc_rwlock_held(&v2->index_lock));
    cr_expect_not(svc_rwlock_write_held(&v2->index_lock));
    svc_rwlock_unlock(&v2->index_lock);
    svc_rwlock_wrlock(&v2->index_lock);
    cr_expect(svc_rwlock_write_held(&v2->index_lock));
    svc_rwlock_unlock(&v2->index_lock);
    cr_expect_not(svc_rwlock_held(&v2->index_lock));
    svc_version_release(v2);
    close_service(&f);
}

/* One error value from the engine and the store up to the service, and one place that maps its
 * code to an HTTP status and error code. */
Test(service, failures_keep_their_code_and_map_to_statuses_in_one_place) {
    static const eng_code codes[] = {ERR_BAD_INPUT, ERR_TOO_LARGE, ERR_NO_MEMORY, ERR_INTERNAL};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        eng_err e = {0};
        eng_fail_code(&e, codes[i], "x");
        cr_expect_eq(svc_code_of(&e), codes[i], "engine code %d", codes[i]);
    }
    eng_err plain = {0};
    eng_fail(&plain, "anything");
    cr_expect_eq(plain.code, ERR_INTERNAL, "eng_fail is internal unless told otherwise");
    eng_err unset = {0};
    cr_expect_eq(svc_code_of(&unset), ERR_INTERNAL, "a failure without a code is internal");
    /* the store's and the service's errors are the same type as the engine's */
    store_err se = {0};
    svc_err *as_svc = &se;
    eng_err *as_eng = as_svc;
    cr_expect_eq(as_eng->code, ERR_OK);
    static const struct {
        eng_code kind;
        int status;
        const char *code;
        int retry;
    } http[] = {{ERR_BAD_INPUT, 422, "invalid_image", 0}, {ERR_NOT_FOUND, 404, "not_found", 0},
                {ERR_TOO_LARGE, 413, "too_large", 0},
                {ERR_UNSUPPORTED, 415, "unsupported_media_type", 0},
                {ERR_UNAVAILABLE, 503, "unavailable", 1}, {ERR_INTERNAL, 500, "internal", 0},
                {ERR_NO_MEMORY, 503, "out_of_memory", 1}, {ERR_DISK_FULL, 507, "disk_full", 0}};
    /* every code has a row: a status of 400 or more and an error code */
    for (int c = ERR_OK; c < ERR_N_CODES; c++) {
        svc_err e = {.msg = "why", .code = (eng_code)c};
        api_response rs = {0};
        api_svc_error(&rs, &e, "");
        cr_expect(rs.status >= 400 && rs.body && strstr(rs.body, "\"code\":\""),
                  "code %d: status %d", c, rs.status);
        free(rs.body);
    }
    /* a handler's own allocation failure goes through the same table */
    api_response oom = {0};
    api_out_of_memory(&oom);
    cr_expect(oom.status == 503 && oom.retry_after > 0 && strstr(oom.body, "out_of_memory"));
    free(oom.body);
    for (size_t i = 0; i < sizeof http / sizeof *http; i++) {
        svc_err e = {.msg = "why", .code = http[i].kind};
        api_response rs = {0};
        api_svc_error(&rs, &e, "");
        cr_expect_eq(rs.status, http[i].status, "kind %d", http[i].kind);
        char want[64];
        snprintf(want, sizeof want, "\"code\":\"%s\"", http[i].code);
        cr_expect(rs.body && strstr(rs.body, want), "kind %d: %s", http[i].kind, rs.body);
        cr_expect_eq(rs.retry_after > 0, http[i].retry, "kind %d Retry-After", http[i].kind);
        free(rs.body);
    }
}

Test(service, a_bad_query_vector_is_bad_input_and_an_undecodable_image_too) {
    fixture f;
    open_service(&f);
    float *zero = calloc((size_t)f.s.dim, sizeof(float));
    svc_hit hits[4];
    int n;
    int64_t version;
    svc_err err = {0};
    cr_expect_neq(svc_search(&f.s, zero, 4, NULL, hits, &n, &version, &err), 0);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "a zero vector: kind %d (%s)", err.code, err.msg);
    zero[0] = 1;
    cr_expect_neq(svc_search(&f.s, zero, 0, NULL, hits, &n, &version, &err), 0);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "k = 0: kind %d (%s)", err.code, err.msg);
    /* a PNG signature with nothing after it: the decoder refuses, and says it is the data */
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
    eng_image img;
    cr_expect_neq(svc_prepare(&f.s, png, sizeof png, "image/png", &img, &err), 0);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "kind %d (%s)", err.code, err.msg);
    free(zero);
    close_service(&f);
}

Test(service, training_states_have_their_names) {
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_WAITING), "waiting_for_images");
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_TRAINING), "training");
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_STOPPED), "stopped");
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_FAILED), "failed");
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_PAUSED), "paused");
    cr_expect_str_eq(svc_train_state_name(SVC_TRAIN_N_STATES), "failed", "out of range");
}

/* The route table's matching: literal segments beat parameters at any position, paths of any
 * depth up to eight segments, no match for a longer or shorter path. */
Test(service, route_patterns_prefer_literals_and_take_any_depth) {
    cr_expect_gt(api_pattern_fit("POST /images/delete", "/images/delete"),
                 api_pattern_fit("GET /images/{id}", "/images/delete"));
    cr_expect_geq(api_pattern_fit("GET /images/{id}", "/images/delete"), 0, "a parameter fits");
    cr_expect_geq(api_pattern_fit("GET /checkpoints/{v}/export", "/checkpoints/7/export"), 0);
    cr_expect_lt(api_pattern_fit("GET /checkpoints/{v}/export", "/checkpoints/7"), 0);
    cr_expect_lt(api_pattern_fit("GET /checkpoints/{v}/export", "/checkpoints/7/export/x"), 0);
    cr_expect_gt(api_pattern_fit("GET /a/b/{c}", "/a/b/c"), api_pattern_fit("GET /a/{b}/c", "/a/b/c"),
                 "an earlier literal counts more");
    cr_expect_lt(api_pattern_fit("GET /status", "/status/"), 0, "an empty segment never fits");
    cr_expect_lt(api_pattern_fit("GET /images/{id}", "/images/.."), 0, "no path tricks");
    cr_expect_geq(api_pattern_fit("GET /a/b/c/d/e/f/g/{h}", "/a/b/c/d/e/f/g/h"), 0);
}

/* Every route of the table is dispatched with its method, 405 lists the allowed ones, HEAD runs
 * the GET route, and the label names the route for the metrics. */
Test(service, the_route_table_dispatches_with_allow_auth_and_labels) {
    fixture f;
    open_service(&f);
    api a;
    api_opts ao = {"k3y", 0, 1000};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    api_request rq = {0};
    api_response rs;
    rq.method = "POST";
    rq.path = "/images/1";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 405);
    cr_expect(rs.allow && !strcmp(rs.allow, "GET, DELETE"), "Allow: %s", rs.allow);
    free(rs.body);
    rq.method = "HEAD";
    rq.path = "/status";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 200);
    cr_expect_str_eq(rs.route, "GET /status");
    free(rs.body);
    rq.method = "DELETE";
    rq.path = "/images/1";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 401, "a write without the key: %d", rs.status);
    cr_expect_str_eq(rs.route, "DELETE /images/{id}");
    free(rs.body);
    rq.method = "GET";
    rq.path = "/readyz";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 200, "a probe never needs the key");
    free(rs.body);
    rq.path = "/images/x/raw";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 400, "a bad id: %d", rs.status);
    free(rs.body);
    rq.path = "/nowhere";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 404);
    cr_expect_str_eq(rs.route, "unmatched");
    free(rs.body);
    for (int i = 0; i < API_ROUTES; i++) cr_expect(api_route_label(i)[0] != 0);
    api_free(&a);
    close_service(&f);
}

/* Query arguments for in-process requests: "key=value" strings, NULL-terminated. */
static const char *query_of(void *ctx, const char *key) {
    for (const char *const *kv = ctx; *kv; kv++) {
        size_t n = strlen(key);
        if (!strncmp(*kv, key, n) && (*kv)[n] == '=') return *kv + n + 1;
    }
    return NULL;
}

/* One request through the table; returns the status, and the error code into code. */
static int call(api *a, const char *method, const char *path, const char *const *query,
                const char *type, const char *body, char code[64]) {
    api_request rq = {0};
    rq.method = method;
    rq.path = path;
    rq.path_len = strlen(path);
    rq.query = query ? query_of : NULL;
    rq.query_ctx = (void *)query;
    rq.content_type = type;
    rq.body = (const uint8_t *)body;
    rq.body_len = body ? strlen(body) : 0;
    rq.has_body = body != NULL;
    api_response rs;
    handle(a, &rq, &rs);
    code[0] = 0;
    json_t *j = rs.body ? json_loadb(rs.body, rs.len, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    if (c) snprintf(code, 64, "%s", c);
    json_decref(j);
    free(rs.body);
    return rs.status;
}

Test(service, query_parameters_are_checked_from_the_route_table_before_the_handler) {
    fixture f;
    open_service(&f);
    api a;
    api_opts ao = {NULL, 0, 50};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    char code[64];
    const char *const k0[] = {"k=0", NULL}, *const kbig[] = {"k=51", NULL},
                      *const kword[] = {"k=ten", NULL}, *const k3[] = {"k=3", NULL},
                      *const other[] = {"x=1", NULL};
    /* the parameter is refused before the id is looked up */
    cr_expect_eq(call(&a, "GET", "/neighbors/999", k0, NULL, NULL, code), 400);
    cr_expect_str_eq(code, "bad_k");
    cr_expect_eq(call(&a, "GET", "/neighbors/999", kbig, NULL, NULL, code), 400, "above --max-k");
    cr_expect_eq(call(&a, "GET", "/neighbors/999", k3, NULL, NULL, code), 404);
    cr_expect_eq(call(&a, "GET", "/neighbors/999", other, NULL, NULL, code), 404,
                 "unknown parameters are ignored");
    /* a JSON search checks ?k= too (its k is the body's) */
    cr_expect_eq(call(&a, "POST", "/search", kword, "application/json", "{\"vector\": [1]}", code),
                 400);
    cr_expect_str_eq(code, "bad_k");
    /* metadata: a JSON object within the limit */
    const char *const meta_arr[] = {"meta=[1]", NULL}, *const meta_bad[] = {"meta={", NULL};
    cr_expect_eq(call(&a, "POST", "/train", meta_arr, "image/png", "x", code), 400);
    cr_expect_str_eq(code, "bad_meta");
    cr_expect_eq(call(&a, "POST", "/train", meta_bad, "image/png", "x", code), 400);
    char big[5000 + 8];
    memcpy(big, "meta={\"a\":\"", 11);
    memset(big + 11, 'x', 4200);
    memcpy(big + 4211, "\"}", 3);
    const char *const meta_big[] = {big, NULL};
    cr_expect_eq(call(&a, "POST", "/train", meta_big, "image/png", "x", code), 413);
    cr_expect_str_eq(code, "meta_too_large");
    /* a good one reaches the handler, which refuses the body for its own reason */
    const char *const meta_ok[] = {"meta={\"label\":\"bag\"}", NULL};
    int st = call(&a, "POST", "/train", meta_ok, "image/png", "x", code);
    cr_expect(st >= 400 && st < 500 && strcmp(code, "bad_meta") && strcmp(code, "meta_too_large"),
              "%d %s", st, code);
    api_free(&a);
    close_service(&f);
}

/* A runner that counts the calls it makes (the server's is the proxy thread). */
static void counting_run(void *runner, void (*fn)(void *), void *arg) {
    atomic_fetch_add((atomic_int *)runner, 1);
    fn(arg);
}

Test(service, the_trainer_draws_live_images_through_the_runner_and_saves_its_last_step) {
    fixture f;
    open_service(&f);
    for (unsigned i = 0; i < 6; i++) put_image(&f, 300 + i, NULL);
    eng_err e = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &e) == 0, "%s", e.msg);
    atomic_int stop, calls;
    atomic_init(&stop, 0);
    atomic_init(&calls, 0);
    svc_trainer tr;
    uint8_t *initial = NULL;
    size_t initial_len = 0;
    svc_err err = {0};
    cr_assert(svc_trainer_create(&tr, &cfg, 4, 3, NULL, 0, &stop, counting_run, &calls, NULL,
                                 &initial, &initial_len, &err) == 0, "%s", err.msg);
    cr_expect(initial && initial_len > 0, "a new model's step-0 checkpoint");
    free(initial);
    svc_trainer_attach(&tr, &f.s);
    cr_assert(svc_trainer_step(&tr, &err) == 0, "%s", err.msg);
    cr_assert(svc_trainer_step(&tr, &err) == 0, "%s", err.msg);
    cr_expect_eq(svc_trainer_stats(&tr)->step, 2);
    cr_expect(isfinite(svc_trainer_stats(&tr)->loss));
    cr_expect(atomic_load(&calls) > 0, "the store was read through the runner");
    uint8_t *blob;
    size_t len;
    eng_train_stats at;
    cr_assert(svc_trainer_save(&tr, 5.0, &blob, &len, &at, &err) == 0, "%s", err.msg);
    cr_expect_eq(at.step, 2);
    int64_t version;
    cr_assert(svc_publish(&f.s, blob, len, at.step, at.loss, &version, &err) == 0, "%s", err.msg);
    cr_expect_eq(version, 2);
    free(blob);
    /* the next version resumes where this one stopped */
    svc_trainer again;
    void *newest;
    size_t newest_len;
    store_err se = {0};
    store_checkpoint_info info;
    cr_assert(store_checkpoint_latest(f.st, &info, &newest, &newest_len, &se) == 0, "%s", se.msg);
    cr_assert(svc_trainer_create(&again, &cfg, 4, 3, newest, newest_len, &stop, NULL, NULL, NULL,
                                 &initial, &initial_len, &err) == 0, "%s", err.msg);
    cr_expect_eq(svc_trainer_stats(&again)->step, 2);
    cr_expect_null(initial, "a resumed trainer makes no initial checkpoint");
    free(newest);
    atomic_store(&stop, 1);
    svc_trainer_free(&again);
    svc_trainer_free(&tr);
    close_service(&f);
}

/* The monitor's figure by brute force: leave-one-out k-NN-20 over the stored vectors (cosine in
 * double; score desc then id asc; majority, ties to the label met first). */
static double brute_knn20(fixture *f, const int64_t *ids, const int *labels, int n) {
    int dim = f->s.dim, right = 0;
    float *v = malloc(sizeof(float) * (size_t)n * dim);
    for (int i = 0; i < n; i++) {
        int64_t version;
        cr_assert_eq(svc_vector(&f->s, ids[i], v + (size_t)i * dim, &version), 0);
    }
    for (int i = 0; i < n; i++) {
        double *s = malloc(sizeof(double) * (size_t)n);
        int *order = malloc(sizeof(int) * (size_t)n), m = 0;
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            double dot = 0, a = 0, b = 0;
            for (int d = 0; d < dim; d++) {
                dot += (double)v[(size_t)i * dim + d] * v[(size_t)j * dim + d];
                a += (double)v[(size_t)i * dim + d] * v[(size_t)i * dim + d];
                b += (double)v[(size_t)j * dim + d] * v[(size_t)j * dim + d];
            }
            s[j] = dot / sqrt(a * b);
            order[m++] = j;
        }
        for (int x = 0; x < 20; x++)
            for (int y = x + 1; y < m; y++)
                if (s[order[y]] > s[order[x]] ||
                    (s[order[y]] == s[order[x]] && ids[order[y]] < ids[order[x]])) {
                    int t = order[x];
                    order[x] = order[y];
                    order[y] = t;
                }
        int count[2] = {0, 0}, first[2] = {20, 20};
        for (int x = 0; x < 20; x++)
            if (!count[labels[order[x]]]++) first[labels[order[x]]] = x;
        int best = count[1] > count[0] || (count[1] == count[0] && first[1] < first[0]);
        right += best == labels[i];
        free(s);
        free(order);
    }
    free(v);
    return (double)right / n;
}

Test(service, the_gate_scores_each_version_refuses_a_worse_one_and_remembers_it) {
    fixture f;
    open_service(&f);
    f.s.opts.min_labelled = 40; /* a small sample keeps the test quick; the default is 200 */
    enum { N = 60 };
    int64_t ids[N];
    int labels[N];
    for (int i = 0; i < N; i++) { /* the blob's column decides the label: left or right half */
        unsigned seed = (unsigned)(i * 4 + (i % 3)) % 256;
        labels[i] = 6 + (int)(seed % 16) >= 14;
        ids[i] = put_image(&f, seed, labels[i] ? "{\"label\":\"right\"}" : "{\"label\":\"left\"}");
    }
    put_image(&f, 999, NULL);            /* unlabelled: not in the sample */
    put_image(&f, 998, "{\"label\":[1]}"); /* not a string or number: not in the sample */
    embed_queued(&f);
    svc_err err = {0};

    /* the same weights as version 1: scored exactly as the serving version, accepted */
    int64_t v2 = republish(&f, 5, 1.0);
    cr_assert_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    store_quality q;
    cr_assert_eq(svc_version_quality(&f.s, v2, &q, &err), 0, "%s", err.msg);
    cr_expect(q.accepted && q.labelled == N, "accepted %d labelled %lld: %s", q.accepted,
              (long long)q.labelled, q.reason);
    cr_expect_eq(q.knn20, q.serving_knn20, "same model, same figure");
    cr_expect(isfinite(q.pixels_knn20) && q.pixels_knn20 > 0.5, "pixels %.4f", q.pixels_knn20);
    double want = brute_knn20(&f, ids, labels, N);
    cr_expect_eq(q.knn20, want, "monitor %.6f, brute force %.6f", q.knn20, want);
    printf("quality: %lld labelled, k-NN-20 %.4f (brute force %.4f), raw pixels %.4f\n",
           (long long)q.labelled, q.knn20, want, q.pixels_knn20);
    cr_expect_eq(svc_serving_version(&f.s), v2);

    /* a gate that demands half a point more refuses the next (equal) version */
    f.s.opts.gate_tolerance = -0.5;
    int64_t v3 = republish(&f, 9, 1.0);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 2, "refused: %s", err.msg);
    cr_expect(strstr(err.msg, "refused"), "%s", err.msg);
    cr_expect_eq(svc_serving_version(&f.s), v2, "the serving version stays");
    cr_assert_eq(svc_version_quality(&f.s, v3, &q, &err), 0);
    cr_expect_not(q.accepted);
    svc_status st;
    svc_get_status(&f.s, &st);
    cr_expect(st.last_decision.version == v3 && !st.last_decision.accepted);
    cr_expect_eq(st.pending_version, -1);
    /* never re-embedded again, even once the gate would pass it */
    f.s.opts.gate_tolerance = 0.005;
    store_err se = {0};
    int64_t before = store_embedding_count(f.st, v3, &se);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 0);
    cr_expect_eq(store_embedding_count(f.st, v3, &se), before);
    cr_expect_eq(svc_serving_version(&f.s), v2);
    cr_expect_eq(svc_training_restart_take(&f.s), 0, "one refusal is not yet a restart");

    /* three refusals in a row: training is asked to restart from the serving version */
    f.s.opts.gate_tolerance = -0.5;
    republish(&f, 11, 1.0);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 2, "%s", err.msg);
    int64_t newest = republish(&f, 12, 1.0);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 2, "%s", err.msg);
    cr_expect_eq(svc_training_restart_take(&f.s), v2, "the third refusal in a row");
    cr_expect_eq(svc_training_restart_take(&f.s), 0, "the request is taken once");
    void *blob;
    size_t len;
    cr_assert_eq(svc_checkpoint_blob(&f.s, v2, &blob, &len, &err), 0, "%s", err.msg);
    eng_err pe = {0};
    eng_config pcfg;
    eng_ckpt_meta meta;
    cr_assert(eng_checkpoint_peek(blob, len, &pcfg, &meta, &pe) == 0, "%s", pe.msg);
    atomic_int stop;
    atomic_init(&stop, 0);
    svc_trainer tr;
    uint8_t *initial = NULL;
    size_t initial_len;
    cr_assert(svc_trainer_create(&tr, &pcfg, 4, 3, NULL, 0, &stop, NULL, NULL, NULL, &initial,
                                 &initial_len, &err) == 0, "%s", err.msg);
    free(initial);
    svc_trainer_attach(&tr, &f.s);
    cr_assert(svc_trainer_step(&tr, &err) == 0, "%s", err.msg);
    cr_assert(svc_trainer_restart(&tr, blob, len, &err) == 0, "%s", err.msg);
    cr_expect_eq((uint64_t)svc_trainer_stats(&tr)->step, meta.step, "back at the serving step");
    cr_assert(svc_trainer_step(&tr, &err) == 0, "%s", err.msg); /* and it trains on from there */
    atomic_store(&stop, 1);
    svc_trainer_free(&tr);
    free(blob);
    f.s.opts.gate_tolerance = 0.005;

    /* by hand: accept the refused v3 (the gate is bypassed), then roll back to v2 */
    api a;
    api_opts ao = {"k3y", 0, 1000};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    char code[64], path3[64], path2[64];
    snprintf(path3, sizeof path3, "/checkpoints/%lld/serve", (long long)v3);
    snprintf(path2, sizeof path2, "/checkpoints/%lld/serve", (long long)v2);
    cr_expect_eq(call(&a, "POST", path3, NULL, NULL, NULL, code), 401,
                 "a write: the key is needed");
    api_request rq = {0};
    rq.method = "POST";
    rq.path = path3;
    rq.path_len = strlen(rq.path);
    rq.authorization = "Bearer k3y";
    api_response rs;
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 202, "%s", rs.body);
    free(rs.body);
    f.s.opts.gate_tolerance = -0.5; /* a gate that would refuse it */
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    cr_expect_eq(svc_serving_version(&f.s), v3, "accepted by hand");
    cr_assert_eq(svc_version_quality(&f.s, v3, &q, &err), 0);
    cr_expect(q.accepted && strstr(q.reason, "chosen by hand"), "%s", q.reason);
    rq.path = path2;
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 202);
    free(rs.body);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    cr_expect_eq(svc_serving_version(&f.s), v2, "rolled back");
    rq.path = "/checkpoints/99/serve";
    rq.path_len = strlen(rq.path);
    handle(&a, &rq, &rs);
    cr_expect_eq(rs.status, 404);
    free(rs.body);
    api_free(&a);
    f.s.opts.gate_tolerance = 0.005;

    /* the decisions survive a restart */
    svc_stop(&f.s);
    svc_close(&f.s);
    eng_err e = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &e) == 0);
    cr_assert(svc_open(&f.s, f.st, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    cr_assert_eq(svc_version_quality(&f.s, v3, &q, &err), 0);
    cr_expect(q.accepted && strstr(q.reason, "chosen by hand"), "%s", q.reason);
    cr_assert_eq(svc_version_quality(&f.s, v2, &q, &err), 0);
    cr_expect(q.accepted && q.knn20 == want, "%s", q.reason);
    cr_assert_eq(svc_version_quality(&f.s, newest, &q, &err), 0);
    cr_expect_not(q.accepted, "%s", q.reason);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 0, "a refused version stays refused");
    cr_expect_eq(svc_serving_version(&f.s), v2, "the rolled-back version serves after a restart");
    close_service(&f);
}

/* Publishes a collapsed model: every weight zero, every bias 0.5 — every image gets the same
 * vector, so the gate refuses it. Returns its version. */
static int64_t publish_collapsed(fixture *f, uint64_t step) {
    eng_err e = {0};
    eng_config cfg;
    cr_assert(eng_config_preset(&cfg, "tiny", &e) == 0);
    eng_trainer t;
    eng_trainer_cfg tc = eng_trainer_defaults(&cfg, 4);
    cr_assert(eng_trainer_create(&t, &cfg, &tc, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    for (int i = 0; i < t.model.n_params; i++) {
        const eng_param *p = &t.model.tab[i];
        int bias = strstr(p->name, ".bias") != NULL;
        for (size_t j = 0; j < p->count; j++)
            t.model.params[p->offset + j] = p->ndims > 1 ? 0.0f : bias ? 0.5f : 1.0f;
    }
    uint8_t *blob;
    size_t len;
    cr_assert(eng_trainer_save(&t, &blob, &len, &e) == 0, "%s", e.msg);
    eng_trainer_free(&t);
    int64_t v;
    svc_err err = {0};
    cr_assert(svc_publish(&f->s, blob, len, step, 1.0, &v, &err) == 0, "%s", err.msg);
    free(blob);
    return v;
}

Test(service, without_labels_the_gate_refuses_a_collapsed_version_and_keeps_a_healthy_one) {
    fixture f;
    open_service(&f);
    for (unsigned i = 0; i < 60; i++) put_image(&f, 400 + i * 3, NULL);
    embed_queued(&f);
    svc_err err = {0};
    /* the same model again: as healthy as the serving one, accepted */
    int64_t v2 = republish(&f, 4, 1.0);
    cr_assert_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    store_quality q;
    cr_assert_eq(svc_version_quality(&f.s, v2, &q, &err), 0);
    printf("quality without labels: effective rank %.2f of %d, spread %.4g\n", q.eff_rank,
           f.s.dim, q.mean_std);
    cr_expect(q.accepted && q.labelled == 0 && isnan(q.knn20) && q.eff_rank >= 0.1 * f.s.dim,
              "%s", q.reason);
    /* a collapsed model */
    int64_t v3 = publish_collapsed(&f, 8);
    cr_expect_eq(svc_reembed_newest(&f.s, &err), 2, "refused: %s", err.msg);
    cr_expect(strstr(err.msg, "collapsed"), "%s", err.msg);
    cr_expect_eq(svc_serving_version(&f.s), v2, "the healthy version keeps serving");
    cr_assert_eq(svc_version_quality(&f.s, v3, &q, &err), 0);
    cr_expect(!q.accepted && q.eff_rank < 0.1 * f.s.dim, "%s", q.reason);
    close_service(&f);
}

static svc_filter *filter(fixture *f, const char *text) {
    svc_filter *flt;
    svc_err err = {0};
    cr_assert(svc_filter_parse(&f->s, text, strlen(text), &flt, &err) == 0, "%s", err.msg);
    return flt;
}

Test(service, filters_listing_and_deletes_work_in_process) {
    fixture f;
    open_service(&f);
    enum { N = 30 };
    int64_t ids[N];
    for (int i = 0; i < N; i++) {
        char meta[64];
        snprintf(meta, sizeof meta, "{\"label\": \"%s\", \"n\": %d}", i % 2 ? "odd" : "even", i);
        ids[i] = put_image(&f, 500u + (unsigned)i, meta);
    }
    embed_queued(&f);
    float vec[256];
    int64_t version;
    cr_assert(svc_vector(&f.s, ids[3], vec, &version) == 0);
    /* a filtered search: only matching ids, k of them when k match */
    svc_filter *odd = filter(&f, "{\"label\": \"odd\"}");
    svc_hit hits[N];
    int n;
    svc_err err = {0};
    cr_assert(svc_search(&f.s, vec, 10, odd, hits, &n, &version, &err) == 0, "%s", err.msg);
    cr_expect_eq(n, 10);
    for (int i = 0; i < n; i++)
        cr_expect_eq((hits[i].id - ids[0]) % 2, 1, "id %lld", (long long)hits[i].id);
    cr_assert(svc_search(&f.s, vec, N, odd, hits, &n, &version, &err) == 0);
    cr_expect_eq(n, N / 2, "all 15 odd ones when k exceeds them");
    svc_filter *few = filter(&f, "{\"n\": {\"$gte\": 27}}");
    cr_assert(svc_neighbors(&f.s, ids[28], 10, few, hits, &n, &version, &err) == 0, "%s",
              err.msg);
    cr_expect_eq(n, 2, "27 and 29: 28 itself is excluded");
    for (int i = 0; i < n; i++) cr_expect(hits[i].id == ids[27] || hits[i].id == ids[29]);
    int counts[2];
    float two[512];
    memcpy(two, vec, (size_t)f.s.dim * sizeof *vec);
    memcpy(two + f.s.dim, vec, (size_t)f.s.dim * sizeof *vec);
    svc_hit bh[2 * 5];
    cr_assert(svc_search_batch(&f.s, two, 2, 5, few, bh, counts, &version, &err) == 0);
    cr_expect(counts[0] == 3 && counts[1] == 3);
    /* pages in id order, next while more match */
    svc_image page[7];
    int64_t next, after = -1, seen = 0;
    do {
        cr_assert(svc_image_page(&f.s, odd, after, 7, page, &n, &next, &err) == 0, "%s", err.msg);
        for (int i = 0; i < n; i++) {
            cr_expect_eq(page[i].id, ids[2 * seen + 1]);
            seen++;
            svc_image_free(&page[i]);
        }
        after = next;
    } while (next >= 0);
    cr_expect_eq(seen, N / 2);
    /* by SHA-256 */
    svc_image one, by;
    cr_assert(svc_image_get(&f.s, ids[4], &one, &err) == 0);
    cr_expect_eq(svc_image_by_sha(&f.s, one.sha256, &by, &err), 0);
    cr_expect_eq(by.id, ids[4]);
    svc_image_free(&by);
    svc_image_free(&one);
    char zeros[65];
    memset(zeros, '0', 64);
    zeros[64] = 0;
    cr_expect_eq(svc_image_by_sha(&f.s, zeros, &by, &err), 1);
    cr_expect_eq(svc_image_by_sha(&f.s, "12", &by, &err), -1);
    cr_expect_eq(err.code, ERR_BAD_INPUT);
    /* delete by filter: gone from the store, training's sampler and the index at once */
    cr_expect_eq(svc_delete_matching(&f.s, odd, &err), N / 2);
    cr_expect_eq(svc_image_count(&f.s), N / 2);
    cr_assert(svc_search(&f.s, vec, N, NULL, hits, &n, &version, &err) == 0);
    cr_expect_eq(n, N / 2);
    for (int i = 0; i < n; i++) cr_expect_eq((hits[i].id - ids[0]) % 2, 0);
    cr_assert(svc_search(&f.s, vec, N, odd, hits, &n, &version, &err) == 0);
    cr_expect_eq(n, 0, "nothing matches any more");
    int64_t some[3] = {ids[0], ids[1], ids[2]};
    cr_expect_eq(svc_delete_ids(&f.s, some, 3, &err), 2, "ids[1] was already gone");
    cr_expect_eq(svc_image_live(&f.s, ids[0]), 0);
    svc_filter_free(odd);
    svc_filter_free(few);
    close_service(&f);
}

/* One request through the table, keeping the response (the caller frees rs->body). */
static void call_rs(api *a, const char *method, const char *path, const char *const *query,
                    api_response *rs) {
    api_request rq = {0};
    rq.method = method;
    rq.path = path;
    rq.path_len = strlen(path);
    rq.query = query ? query_of : NULL;
    rq.query_ctx = (void *)query;
    handle(a, &rq, rs);
}

/* What the engine writes from version v's stored checkpoint. */
static uint8_t *engine_export(fixture *f, int64_t v, eng_export_format fmt, size_t *len) {
    void *blob;
    size_t blob_len;
    svc_err err = {0};
    cr_assert_eq(svc_checkpoint_blob(&f->s, v, &blob, &blob_len, &err), 0, "%s", err.msg);
    eng_ckpt_weights w;
    cr_assert(eng_checkpoint_weights(blob, blob_len, &w, &err) == 0, "%s", err.msg);
    uint8_t *out;
    cr_assert(eng_export(&w, fmt, v, &out, len, &err) == 0, "%s", err.msg);
    eng_ckpt_weights_free(&w);
    free(blob);
    return out;
}

/* Export through the service and the route table: a stored version in both formats (the bytes
 * the engine writes from its checkpoint); 404 for an unknown version; 409 for a version the gate
 * refused, until it is chosen by hand; 400 for a missing or unknown format and a bad id. */
Test(service, a_stored_version_exports_in_both_formats_and_bad_requests_are_refused) {
    fixture f;
    open_service(&f);
    svc_err err = {0};
    uint8_t *bytes;
    size_t len, want_len;
    for (int i = 0; i < ENG_EXPORT_N_FORMATS; i++) {
        eng_export_format fmt = (eng_export_format)i;
        cr_assert_eq(svc_export(&f.s, 1, fmt, &bytes, &len, &err), 0, "%s", err.msg);
        uint8_t *want = engine_export(&f, 1, fmt, &want_len);
        cr_expect(len == want_len && !memcmp(bytes, want, len), "%s: other bytes",
                  eng_export_format_name(fmt));
        free(want);
        free(bytes);
    }
    cr_expect_eq(svc_export(&f.s, 42, ENG_EXPORT_ONNX, &bytes, &len, &err), 1, "no version 42");
    cr_expect_null(bytes);
    int64_t v;
    cr_expect(svc_export_default_version(f.st, &v, &err) == 0 && v == 1, "the serving version");

    /* the route: 200 with the bytes and a file name; every bad request a 4xx before any work */
    api a;
    api_opts ao = {NULL, 0, 1000};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    api_response rs;
    const char *const onnx[] = {"format=onnx", NULL}, *const st[] = {"format=safetensors", NULL},
                      *const zip[] = {"format=zip", NULL}, *const upper[] = {"format=ONNX", NULL},
                      *const empty[] = {"format=", NULL};
    call_rs(&a, "GET", "/checkpoints/1/export", st, &rs);
    uint8_t *want = engine_export(&f, 1, ENG_EXPORT_SAFETENSORS, &want_len);
    cr_expect_eq(rs.status, 200);
    cr_expect_str_eq(rs.content_type, "application/octet-stream");
    cr_expect_str_eq(rs.filename, "barlowd-v1.safetensors");
    cr_expect_str_eq(rs.route, "GET /checkpoints/{id}/export");
    cr_expect(rs.len == want_len && !memcmp(rs.body, want, want_len), "the route's bytes differ");
    free(want);
    free(rs.body);
    char code[64];
    cr_expect_eq(call(&a, "GET", "/checkpoints/1/export", NULL, NULL, NULL, code), 400);
    cr_expect_str_eq(code, "bad_format", "a format is required");
    const char *const *bad_formats[] = {zip, upper, empty};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(call(&a, "GET", "/checkpoints/1/export", bad_formats[i], NULL, NULL, code),
                     400, "%s", bad_formats[i][0]);
        cr_expect_str_eq(code, "bad_format");
    }
    cr_expect_eq(call(&a, "GET", "/checkpoints/42/export", onnx, NULL, NULL, code), 404);
    cr_expect_str_eq(code, "not_found");
    cr_expect_eq(call(&a, "GET", "/checkpoints/x1/export", onnx, NULL, NULL, code), 400);
    cr_expect_str_eq(code, "bad_id");
    cr_expect_eq(call(&a, "GET", "/checkpoints/42/export", zip, NULL, NULL, code), 400,
                 "the format is checked before the version is looked up");
    cr_expect_eq(call(&a, "POST", "/checkpoints/1/export", onnx, NULL, NULL, code), 405);

    /* a version the gate refused: 409 with the gate's reason, until it is chosen by hand */
    for (unsigned i = 0; i < 30; i++) put_image(&f, 500 + i * 5, NULL);
    embed_queued(&f);
    int64_t bad = publish_collapsed(&f, 3);
    cr_assert_eq(svc_reembed_newest(&f.s, &err), 2, "refused: %s", err.msg);
    cr_expect_eq(svc_export(&f.s, bad, ENG_EXPORT_ONNX, &bytes, &len, &err), 2);
    cr_expect(strstr(err.msg, "refused") && strstr(err.msg, "collapsed"), "%s", err.msg);
    char path[64];
    snprintf(path, sizeof path, "/checkpoints/%lld/export", (long long)bad);
    cr_expect_eq(call(&a, "GET", path, onnx, NULL, NULL, code), 409);
    cr_expect_str_eq(code, "version_refused");
    cr_expect(svc_export_default_version(f.st, &v, &err) == 0 && v == 1,
              "the default stays the serving version, not the newest");
    cr_assert_eq(svc_version_choose(&f.s, bad, &err), 0, "%s", err.msg);
    cr_assert_eq(svc_reembed_newest(&f.s, &err), 1, "%s", err.msg);
    call_rs(&a, "GET", path, onnx, &rs);
    cr_expect_eq(rs.status, 200, "chosen by hand, it exports: %.200s", rs.body);
    want = engine_export(&f, bad, ENG_EXPORT_ONNX, &want_len);
    cr_expect(rs.len == want_len && !memcmp(rs.body, want, want_len));
    free(want);
    free(rs.body);

    /* with --api-key-reads, a read like any other */
    api_free(&a);
    ao = (api_opts){"k3y", 1, 1000};
    api_init(&a, &f.s, &ao);
    cr_expect_eq(call(&a, "GET", "/checkpoints/1/export", onnx, NULL, NULL, code), 401);
    api_free(&a);
    close_service(&f);
}

/* ---- snapshots ---- */

/* One request through the table with the key (or none), the response left in rs for the
 * caller (free it with api_response_free). */
static void snap_req(api *a, const char *method, const char *path, const char *key,
                     api_response *rs) {
    api_request rq = {0};
    char auth[64];
    rq.method = method;
    rq.path = path;
    rq.path_len = strlen(path);
    if (key) {
        snprintf(auth, sizeof auth, "Bearer %s", key);
        rq.authorization = auth;
    }
    handle(a, &rq, rs);
}

/* The status must be `status` with the error body {"error": {"code": code, "message"}}. */
static void expect_snap_error(api *a, const char *method, const char *path, int status,
                              const char *code) {
    api_response rs;
    snap_req(a, method, path, "k3y", &rs);
    cr_expect_eq(rs.status, status, "%s %.80s: %d, want %d", method, path, rs.status, status);
    cr_expect_not(rs.has_file, "%s %.80s: a file was sent", method, path);
    json_t *j = rs.body ? json_loadb(rs.body, rs.len, 0, NULL) : NULL;
    json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    cr_expect(c && !strcmp(c, code) && json_is_string(json_object_get(e, "message")),
              "%s %.80s: %.200s", method, path, rs.body);
    json_decref(j);
    api_response_free(&rs);
}

static void snapshot_path(const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/snapshots/%s", dir, name);
}

Test(service, snapshots_are_made_listed_streamed_and_deleted_and_always_need_the_key) {
    fixture f;
    open_service(&f);
    for (unsigned i = 0; i < 3; i++) put_image(&f, 700 + i, NULL);
    api a;
    api_opts ao = {"k3y", 0, 1000}; /* reads are open, snapshots are not */
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    api_response rs;
    const char *const routes4[][2] = {{"POST", "/snapshots"}, {"GET", "/snapshots"},
                                      {"GET", "/snapshots/snap-20261201T120000Z-1.db"},
                                      {"DELETE", "/snapshots/snap-20261201T120000Z-1.db"}};
    for (int i = 0; i < 4; i++) {
        snap_req(&a, routes4[i][0], routes4[i][1], NULL, &rs);
        cr_expect_eq(rs.status, 401, "%s %s without the key: %d", routes4[i][0], routes4[i][1],
                     rs.status);
        api_response_free(&rs);
        snap_req(&a, routes4[i][0], routes4[i][1], "wrong", &rs);
        cr_expect_eq(rs.status, 401, "%s %s with a wrong key", routes4[i][0], routes4[i][1]);
        api_response_free(&rs);
    }
    snap_req(&a, "GET", "/status", NULL, &rs);
    cr_expect_eq(rs.status, 200, "other reads stay open");
    api_response_free(&rs);

    snap_req(&a, "GET", "/snapshots", "k3y", &rs);
    cr_expect(rs.status == 200 && !strcmp(rs.body, "{\"snapshots\":[]}"), "%d %s", rs.status,
              rs.body);
    api_response_free(&rs);
    double t0 = svc_now();
    snap_req(&a, "POST", "/snapshots", "k3y", &rs);
    cr_assert_eq(rs.status, 201, "%s", rs.body);
    json_t *made = json_loadb(rs.body, rs.len, 0, NULL);
    api_response_free(&rs);
    const char *name = json_string_value(json_object_get(made, "name"));
    cr_assert(name && svc_snapshot_name_ok(name, strlen(name)), "name %s", name);
    cr_expect_eq(json_integer_value(json_object_get(made, "images")), 3);
    cr_expect_eq(json_integer_value(json_object_get(made, "serving_version")), 1);
    double created = (double)json_integer_value(json_object_get(made, "created"));
    cr_expect(created >= floor(t0) && created <= t0 + 5, "created %.0f, now %.0f", created, t0);
    char file[256];
    snapshot_path(name, file, sizeof file);
    struct stat sb;
    cr_assert(stat(file, &sb) == 0, "no file %s", file);
    cr_expect_eq(json_integer_value(json_object_get(made, "bytes")), sb.st_size);

    snap_req(&a, "GET", "/snapshots", "k3y", &rs);
    json_t *list = json_loadb(rs.body, rs.len, 0, NULL);
    api_response_free(&rs);
    json_t *arr = json_object_get(list, "snapshots");
    cr_expect_eq(json_array_size(arr), 1);
    cr_expect(json_equal(json_array_get(arr, 0), made), "listed as it was made");
    json_decref(list);

    /* a download is the file itself, streamed from a descriptor (no body in memory) */
    char path[128];
    snprintf(path, sizeof path, "/snapshots/%s", name);
    const char *methods[] = {"GET", "HEAD"};
    for (int m = 0; m < 2; m++) {
        snap_req(&a, methods[m], path, "k3y", &rs);
        cr_assert_eq(rs.status, 200, "%s: %d %s", methods[m], rs.status, rs.body);
        cr_assert(rs.has_file && rs.body == NULL && rs.file_len == (uint64_t)sb.st_size);
        cr_expect_str_eq(rs.content_type, "application/vnd.sqlite3");
        cr_expect_str_eq(rs.file_name, name);
        size_t n = (size_t)sb.st_size;
        char *got = malloc(n), *want = malloc(n);
        cr_assert(got && want);
        cr_assert(pread(rs.file_fd, got, n, 0) == (ssize_t)n);
        int fd = open(file, O_RDONLY);
        cr_assert(fd >= 0 && read(fd, want, n) == (ssize_t)n);
        close(fd);
        cr_expect(!memcmp(got, want, n), "the descriptor is not the snapshot's");
        free(got);
        free(want);
        api_response_free(&rs);
    }
    snap_req(&a, "DELETE", path, "k3y", &rs);
    cr_expect_eq(rs.status, 200, "%s", rs.body);
    api_response_free(&rs);
    cr_expect(stat(file, &sb) != 0, "deleted, yet there");
    expect_snap_error(&a, "GET", path, 404, "not_found");
    expect_snap_error(&a, "DELETE", path, 404, "not_found");
    json_decref(made);
    api_free(&a);
    close_service(&f);
}

Test(service, only_names_the_server_makes_are_accepted_and_nothing_else_is_touched) {
    /* a partial copy left by a dead process goes at the next open; other files stay */
    char sdir[128], p[256];
    snprintf(sdir, sizeof sdir, "%s/snapshots", dir);
    cr_assert(mkdir(sdir, 0750) == 0);
    const char *const left[] = {".snap-20261201T120000Z-1.db.partial", ".keep", "notes.txt",
                                "snap-20261201T120000Z-2.db"};
    for (int i = 0; i < 4; i++) {
        snapshot_path(left[i], p, sizeof p);
        FILE *fl = fopen(p, "w");
        cr_assert(fl != NULL);
        fputs("not a database", fl);
        fclose(fl);
    }
    /* a link with a snapshot's name, to the database itself: never followed */
    char db[128];
    snprintf(db, sizeof db, "%s/svc.db", dir);
    snapshot_path("snap-20261201T120000Z-3.db", p, sizeof p);
    cr_assert(symlink(db, p) == 0);
    fixture f;
    open_service(&f);
    snapshot_path(left[0], p, sizeof p);
    cr_expect(access(p, F_OK) != 0, "the partial copy is still there");
    for (int i = 1; i < 4; i++) {
        snapshot_path(left[i], p, sizeof p);
        cr_expect(access(p, F_OK) == 0, "%s was removed", left[i]);
    }
    api a;
    api_opts ao = {"k3y", 0, 1000};
    api_init(&a, &f.s, &ao);
    char overlong[400] = "/snapshots/";
    memset(overlong + 11, 'a', 300);
    char overlong_snap[400];
    snprintf(overlong_snap, sizeof overlong_snap, "/snapshots/snap-20261201T120000Z-%0300d.db",
             1);
    const char *const bad[] = {
        "/snapshots/svc.db",          /* the database's own name */
        "/snapshots/notes.txt",       /* a file there that is not a snapshot */
        "/snapshots/.snap-20261201T120000Z-1.db.partial", /* a partial copy's name */
        "/snapshots/.keep",
        "/snapshots/snap-20261201T120000Z-0.db",  /* the server never makes these */
        "/snapshots/snap-20261201T120000Z-01.db",
        "/snapshots/snap-20261301T120000Z-1.db",  /* month 13 */
        "/snapshots/snap-20261201T120000Z-1.db.db",
        "/snapshots/snap-20261201T120000-1.db",
        "/snapshots/snap-20261201t120000z-1.db",
        "/snapshots/SNAP-20261201T120000Z-1.db",
        "/snapshots/snap-20261201T120000Z-1234567890.db",
        "/snapshots/snap-20261201T120000Z-1.db%00",
        "/snapshots/snap-20261201T12%30000Z-1.db",
        overlong,
        overlong_snap,
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        expect_snap_error(&a, "GET", bad[i], 400, "bad_snapshot_name");
        expect_snap_error(&a, "DELETE", bad[i], 400, "bad_snapshot_name");
    }
    /* paths that leave the directory match no route at all (the dispatcher's split) */
    const char *const outside[] = {"/snapshots/../svc.db", "/snapshots/..", "/snapshots/.",
                                   "/snapshots//etc/passwd", "/snapshots/x/../../svc.db",
                                   "/snapshots/snapshots/snap-20261201T120000Z-1.db"};
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        expect_snap_error(&a, "GET", outside[i], 404, "not_found");
        expect_snap_error(&a, "DELETE", outside[i], 404, "not_found");
    }
    /* valid names: not there, a file that is no SQLite database (listed, unread), a link */
    expect_snap_error(&a, "GET", "/snapshots/snap-20261201T120000Z-1.db", 404, "not_found");
    expect_snap_error(&a, "GET", "/snapshots/snap-20261201T120000Z-3.db", 404, "not_found");
    expect_snap_error(&a, "DELETE", "/snapshots/snap-20261201T120000Z-3.db", 404, "not_found");
    snapshot_path("snap-20261201T120000Z-3.db", p, sizeof p);
    struct stat sb;
    cr_expect(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode), "the link was removed");
    cr_expect(stat(db, &sb) == 0, "the database was removed");
    api_response rs;
    snap_req(&a, "GET", "/snapshots", "k3y", &rs);
    json_t *list = json_loadb(rs.body, rs.len, 0, NULL);
    api_response_free(&rs);
    json_t *arr = json_object_get(list, "snapshots");
    cr_assert_eq(json_array_size(arr), 1, "%s", json_dumps(list, 0));
    json_t *only = json_array_get(arr, 0);
    cr_expect_str_eq(json_string_value(json_object_get(only, "name")), "snap-20261201T120000Z-2.db");
    cr_expect(json_is_null(json_object_get(only, "images")), "an unreadable file's images");
    json_decref(list);
    for (int i = 1; i < 3; i++) {
        snapshot_path(left[i], p, sizeof p);
        cr_expect(access(p, F_OK) == 0, "%s was removed", left[i]);
    }
    /* the name check itself */
    cr_expect(svc_snapshot_name_ok("snap-20261201T120000Z-1.db", 26));
    cr_expect(svc_snapshot_name_ok("snap-20261231T235960Z-999999999.db", 34));
    cr_expect_not(svc_snapshot_name_ok("snap-20261201T120000Z-1.db", 25), "a prefix of one");
    cr_expect_not(svc_snapshot_name_ok("snap-20261201T120000Z-1.d/", 26));
    cr_expect_not(svc_snapshot_name_ok("snap-20261201T120000Z-/.db", 26));
    cr_expect_not(svc_snapshot_name_ok(NULL, 0));
    api_free(&a);
    close_service(&f);
}

/* Makes the database big enough (about 24 MB) that a snapshot takes a while. */
static void fill_store(fixture *f, int n) {
    static unsigned char bytes[65536];
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < sizeof bytes; j++) bytes[j] = (unsigned char)((j * 31 + (size_t)i * 7919) >> 3);
        memcpy(bytes, &i, sizeof i);
        store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, NULL, 0, NULL};
        int64_t id;
        int existed;
        store_err se = {0};
        cr_assert(store_image_put(f->st, &in, &id, &existed, &se) == 0, "%s", se.msg);
    }
}

typedef struct snap_job {
    svc *s;
    int rc;
    svc_err err;
    svc_snapshot made;
} snap_job;

static void *make_snapshot(void *arg) {
    snap_job *j = arg;
    j->rc = svc_snapshot_create(j->s, &j->made, &j->err);
    return NULL;
}

/* Starts a snapshot on another thread and returns once it is being written (the service's flag
 * is up), or once it ended. */
static pthread_t start_snapshot(fixture *f, snap_job *j) {
    memset(j, 0, sizeof *j);
    j->s = &f->s;
    j->rc = 99;
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, make_snapshot, j) == 0);
    double until = now_s() + 10;
    struct timespec nap = {0, 100000};
    while (!atomic_load(&f->s.snap_busy) && now_s() < until) nanosleep(&nap, NULL);
    return t;
}

static int snapshot_files(void) {
    char sdir[128];
    snprintf(sdir, sizeof sdir, "%s/snapshots", dir);
    DIR *d = opendir(sdir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int partial_files(void) {
    char sdir[128];
    snprintf(sdir, sizeof sdir, "%s/snapshots", dir);
    DIR *d = opendir(sdir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".partial") != NULL;
    closedir(d);
    return n;
}

Test(service, one_snapshot_is_written_at_a_time_a_limit_holds_and_a_shutdown_cancels_one) {
    fixture f;
    open_service(&f);
    fill_store(&f, 400);
    api a;
    api_opts ao = {NULL, 0, 1000};
    api_init(&a, &f.s, &ao);
    char code[64];
    /* a second request while one is written is told so at once */
    int refused = 0;
    for (int attempt = 0; attempt < 5 && !refused; attempt++) {
        snap_job j;
        pthread_t t = start_snapshot(&f, &j);
        int st = call(&a, "POST", "/snapshots", NULL, NULL, NULL, code);
        pthread_join(t, NULL);
        cr_assert_eq(j.rc, 0, "%s", j.err.msg);
        if (st == 409) {
            cr_expect_str_eq(code, "snapshot_in_progress");
            refused = 1;
        } else { /* the first had finished before the second asked: try again */
            cr_expect_eq(st, 201, "%s", code);
        }
    }
    cr_expect(refused, "a second snapshot was never refused while one was written");
    int made = snapshot_files();
    cr_expect_geq(made, 1);
    cr_expect_eq(partial_files(), 0);
    /* the limit */
    f.s.opts.max_snapshots = made;
    cr_expect_eq(call(&a, "POST", "/snapshots", NULL, NULL, NULL, code), 409);
    cr_expect_str_eq(code, "too_many_snapshots");
    cr_expect_eq(snapshot_files(), made);
    f.s.opts.max_snapshots = made + 10;
    /* a shutdown abandons the copy being written and refuses new ones; nothing is left */
    snap_job j;
    pthread_t t = start_snapshot(&f, &j);
    svc_snapshot_cancel(&f.s);
    pthread_join(t, NULL);
    cr_expect_eq(j.rc, -1, "the copy was not cancelled");
    cr_expect_eq(j.err.code, ERR_UNAVAILABLE, "%s", j.err.msg);
    cr_expect_eq(call(&a, "POST", "/snapshots", NULL, NULL, NULL, code), 503);
    cr_expect_eq(snapshot_files(), made);
    cr_expect_eq(partial_files(), 0);
    api_free(&a);
    close_service(&f);
}

/* One request through the table; the JSON body (NULL when none) and the status. */
static json_t *call_json(api *a, const char *method, const char *path, const char *const *query,
                         const char *body, int *status) {
    api_request rq = {0};
    rq.method = method;
    rq.path = path;
    rq.path_len = strlen(path);
    rq.query = query ? query_of : NULL;
    rq.query_ctx = (void *)query;
    rq.content_type = body ? "application/json" : NULL;
    rq.body = (const uint8_t *)body;
    rq.body_len = body ? strlen(body) : 0;
    rq.has_body = body != NULL;
    api_response rs;
    handle(a, &rq, &rs);
    json_t *j = rs.body ? json_loadb(rs.body, rs.len, 0, NULL) : NULL;
    *status = rs.status;
    api_response_free(&rs);
    return j;
}

Test(service, the_collection_routes_answer_through_the_route_table) {
    fixture f;
    open_service(&f);
    for (int i = 0; i < 12; i++) {
        char meta[64];
        snprintf(meta, sizeof meta, "{\"label\": \"%s\", \"n\": %d}", i % 3 ? "x" : "y", i);
        put_image(&f, 900u + (unsigned)i, meta);
    }
    embed_queued(&f);
    api a;
    api_opts ao = {"k", 0, 50};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    int st;
    /* a listing page with a filter; next while more match */
    const char *q1[] = {"filter={\"label\": \"x\"}", "limit=3", NULL};
    json_t *j = call_json(&a, "GET", "/images", q1, NULL, &st);
    cr_assert_eq(st, 200);
    json_t *items = json_object_get(j, "images");
    cr_expect_eq(json_array_size(items), 3);
    for (size_t i = 0; i < json_array_size(items); i++)
        cr_expect_str_eq(json_string_value(json_object_get(
                             json_object_get(json_array_get(items, i), "meta"), "label")), "x");
    int64_t next = json_integer_value(json_object_get(j, "next"));
    cr_expect_eq(next, json_integer_value(json_object_get(json_array_get(items, 2), "id")));
    json_decref(j);
    /* a filtered neighbours query */
    const char *q2[] = {"k=20", "filter={\"n\": {\"$lt\": 4}}", NULL};
    j = call_json(&a, "GET", "/neighbors/1", q2, NULL, &st);
    cr_assert_eq(st, 200);
    cr_expect(json_is_true(json_object_get(j, "exact")));
    cr_expect_eq(json_array_size(json_object_get(j, "results")), 3, "n 1, 2, 3 (0 is itself)");
    json_decref(j);
    const char *q3[] = {"filter={\"n\": {\"$lt\": \"4\"}}", NULL};
    j = call_json(&a, "GET", "/neighbors/1", q3, NULL, &st);
    cr_expect_eq(st, 400);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "bad_filter");
    json_decref(j);
    /* delete by filter: the key, then 8 "x" images gone */
    j = call_json(&a, "POST", "/images/delete", NULL, "{\"filter\": {\"label\": \"x\"}}", &st);
    cr_expect_eq(st, 401);
    json_decref(j);
    api_free(&a);
    ao = (api_opts){NULL, 0, 50};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    j = call_json(&a, "POST", "/images/delete", NULL, "{\"filter\": {\"label\": \"x\"}}", &st);
    cr_expect_eq(st, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "deleted")), 8);
    json_decref(j);
    cr_expect_eq(svc_image_count(&f.s), 4);
    j = call_json(&a, "GET", "/images/delete", NULL, NULL, &st);
    cr_expect_eq(st, 405);
    json_decref(j);
    api_free(&a);
    close_service(&f);
}

/* The dashboard's routes in process: the page and its files open to all and marked for the
 * page's policy, config.json saying whether reads need the key; the training log paged by
 * since/every/limit; the c block as reported; thumbnails fitted, never enlarged, PNG. */
Test(service, the_dashboard_routes_answer_through_the_route_table) {
    fixture f;
    open_service(&f);
    int64_t id = put_image(&f, 4242u, "{\"label\": \"x\"}");
    api a;
    api_opts ao = {"k", 1, 50}; /* reads need the key */
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    api_response rs;
    const char *files[] = {"/", "/ui/app.js", "/ui/style.css", "/ui/favicon.svg"};
    const char *types[] = {"text/html", "text/javascript", "text/css", "image/svg+xml"};
    for (int i = 0; i < 4; i++) {
        call_rs(&a, "GET", files[i], NULL, &rs);
        cr_expect_eq(rs.status, 200, "%s without the key: %d", files[i], rs.status);
        cr_expect(rs.ui && rs.len > 100 && !strncmp(rs.content_type, types[i], strlen(types[i])),
                  "%s: %s, %zu bytes", files[i], rs.content_type, rs.len);
        api_response_free(&rs);
    }
    int st;
    json_t *j = call_json(&a, "GET", "/ui/config.json", NULL, NULL, &st);
    cr_expect_eq(st, 200);
    cr_expect(json_is_true(json_object_get(j, "reads_need_key")));
    json_decref(j);
    j = call_json(&a, "GET", "/ui/secrets.js", NULL, NULL, &st);
    cr_expect_eq(st, 404);
    json_decref(j);
    j = call_json(&a, "GET", "/c-matrix", NULL, NULL, &st);
    cr_expect_eq(st, 401, "the data routes still need the key");
    json_decref(j);
    api_free(&a);
    ao = (api_opts){NULL, 0, 50};
    api_init(&a, &f.s, &ao);
    a.ready = 1;

    /* the training log: rows every 10 steps; every 20th after step 20, two at a time */
    for (long step = 10; step <= 100; step += 10) {
        eng_train_stats ts = {step, 100.0 - (double)step, 0.3, 50.0, 0.01 * (double)step, 0.1};
        svc_err err = {0};
        cr_assert(svc_log_training(&f.s, &ts, &err) == 0, "%s", err.msg);
    }
    const char *q1[] = {"since=20", "every=20", "limit=2", NULL};
    j = call_json(&a, "GET", "/training-log", q1, NULL, &st);
    cr_assert_eq(st, 200);
    json_t *rows = json_object_get(j, "rows");
    cr_assert_eq(json_array_size(rows), 2);
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(rows, 0), "step")), 40);
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(rows, 1), "step")), 60);
    cr_expect(fabs(json_real_value(json_object_get(json_array_get(rows, 1), "loss")) - 40.0) < 1e-9);
    cr_expect_eq(json_integer_value(json_object_get(j, "next")), 60);
    json_decref(j);
    const char *q2[] = {"since=60", "every=20", NULL};
    j = call_json(&a, "GET", "/training-log", q2, NULL, &st);
    cr_expect_eq(json_array_size(json_object_get(j, "rows")), 2, "steps 80 and 100");
    cr_expect(json_is_null(json_object_get(j, "next")));
    json_decref(j);
    const char *bad[][2] = {{"limit=5001", "bad_limit"}, {"every=0", "bad_every"},
                            {"since=-1", "bad_since"}};
    for (int i = 0; i < 3; i++) {
        const char *q[] = {bad[i][0], NULL};
        j = call_json(&a, "GET", "/training-log", q, NULL, &st);
        cr_expect_eq(st, 400, "%s", bad[i][0]);
        cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                         bad[i][1]);
        json_decref(j);
    }

    /* the c block: none before a step, then exactly what the trainer reported */
    j = call_json(&a, "GET", "/c-matrix", NULL, NULL, &st);
    cr_expect_eq(st, 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "size")), 0);
    json_decref(j);
    float block[9] = {0.9f, -0.25f, 0.125f, 0.03125f, 1.0f, -0.5f, 0.0f, 0.75f, -1.0f};
    svc_report_corr(&f.s, block, 3, 64, 77);
    j = call_json(&a, "GET", "/c-matrix", NULL, NULL, &st);
    cr_assert_eq(json_integer_value(json_object_get(j, "size")), 3);
    cr_expect_eq(json_integer_value(json_object_get(j, "step")), 77);
    cr_expect_eq(json_integer_value(json_object_get(j, "dim")), 64);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            cr_expect(fabs(json_number_value(json_array_get(
                               json_array_get(json_object_get(j, "values"), (size_t)r), (size_t)c)) -
                           block[r * 3 + c]) < 1e-5, "c[%d][%d]", r, c);
    json_decref(j);

    /* thumbnails: a 28x28 image fitted into 16 is 16x16 with the box filter's mean; at the
     * default 128 it stays 28x28 (never enlarged), pixel for pixel */
    unsigned char img[1024];
    size_t n = make_pgm(4242u, img);
    eng_image orig, thumb;
    eng_err ee = {0};
    cr_assert(eng_image_decode(img, n, NULL, &orig, &ee) == 0, "%s", ee.msg);
    char path[64];
    snprintf(path, sizeof path, "/images/%lld/thumbnail", (long long)id);
    const char *small[] = {"size=16", NULL};
    call_rs(&a, "GET", path, small, &rs);
    cr_assert_eq(rs.status, 200);
    cr_expect_str_eq(rs.content_type, "image/png");
    cr_assert(eng_image_decode(rs.body, rs.len, NULL, &thumb, &ee) == 0, "%s", ee.msg);
    cr_expect(thumb.width == 16 && thumb.height == 16 && thumb.channels == 1, "%dx%d",
              thumb.width, thumb.height);
    double mo = 0, mt = 0;
    for (int i = 0; i < 28 * 28; i++) mo += orig.pixels[i] / 784.0;
    for (int i = 0; i < 16 * 16; i++) mt += thumb.pixels[i] / 256.0;
    cr_expect(fabs(mo - mt) < 1.0, "mean %.2f became %.2f", mo, mt);
    eng_image_free(&thumb);
    api_response_free(&rs);
    call_rs(&a, "GET", path, NULL, &rs);
    cr_assert_eq(rs.status, 200);
    cr_assert(eng_image_decode(rs.body, rs.len, NULL, &thumb, &ee) == 0, "%s", ee.msg);
    cr_expect(thumb.width == 28 && thumb.height == 28);
    cr_expect(!memcmp(thumb.pixels, orig.pixels, 28 * 28), "a copy, pixel for pixel");
    eng_image_free(&thumb);
    eng_image_free(&orig);
    api_response_free(&rs);
    const char *too[][2] = {{"size=15", "bad_size"}, {"size=257", "bad_size"}};
    for (int i = 0; i < 2; i++) {
        const char *q[] = {too[i][0], NULL};
        j = call_json(&a, "GET", path, q, NULL, &st);
        cr_expect_eq(st, 400, "%s", too[i][0]);
        json_decref(j);
    }
    j = call_json(&a, "GET", "/images/999999/thumbnail", NULL, NULL, &st);
    cr_expect_eq(st, 404);
    json_decref(j);
    api_free(&a);
    close_service(&f);
}

/* call_json's status, the body into *out (caller decrefs). */
static int call_status(api *a, const char *method, const char *path, const char *const *query,
                       const char *body, json_t **out) {
    int status;
    *out = call_json(a, method, path, query, body, &status);
    return status;
}

/* The ids of an answer's "results", and their number. */
static int result_ids(json_t *j, int64_t *ids, int max) {
    json_t *r = json_object_get(j, "results");
    int n = 0;
    for (size_t i = 0; i < json_array_size(r) && n < max; i++)
        ids[n++] = json_integer_value(json_object_get(json_array_get(r, i), "id"));
    return n;
}

/* Past --ann-threshold the serving index has its graph: answers say "exact": false, and a
 * request forcing the exact scan gets "exact": true and the brute-force answer (svc_search). */
Test(service, past_the_ann_threshold_answers_say_approximate_unless_forced_exact) {
    fixture f;
    svc_opts o = svc_defaults();
    o.ann_threshold = 40;
    open_service_opts(&f, &o);
    enum { N = 60, K = 5 };
    int64_t ids[N];
    for (int i = 0; i < 30; i++) ids[i] = put_image(&f, 900u + (unsigned)i, NULL);
    embed_queued(&f);
    api a;
    api_opts ao = {NULL, 0, 50};
    api_init(&a, &f.s, &ao);
    a.ready = 1;
    float vec[256];
    int64_t version, got[N];
    cr_assert(svc_vector(&f.s, ids[3], vec, &version) == 0);
    char body[8192];
    int off = snprintf(body, sizeof body, "{\"k\": %d, \"vector\": [", K);
    for (int i = 0; i < f.s.dim; i++)
        off += snprintf(body + off, sizeof body - (size_t)off, "%s%.7g", i ? "," : "", vec[i]);
    snprintf(body + off, sizeof body - (size_t)off, "]}");
    json_t *j;
    /* below the threshold: exact */
    cr_assert_eq(call_status(&a, "POST", "/search", NULL, body, &j), 200);
    cr_expect(json_is_true(json_object_get(j, "exact")), "30 images: exact");
    json_decref(j);
    for (int i = 30; i < N; i++) ids[i] = put_image(&f, 900u + (unsigned)i, NULL);
    embed_queued(&f);
    /* past it: exact scans until the graph is built (the re-embedder's thread does it) */
    cr_assert(svc_index_graph_wanted(&f.s, f.s.serving));
    cr_assert_eq(call_status(&a, "POST", "/search", NULL, body, &j), 200);
    cr_expect(json_is_true(json_object_get(j, "exact")), "60 images, no graph yet: exact");
    json_decref(j);
    svc_build_graphs(&f.s);
    cr_expect(!svc_index_graph_wanted(&f.s, f.s.serving));
    /* then the graph */
    cr_assert_eq(call_status(&a, "POST", "/search", NULL, body, &j), 200);
    cr_expect(json_is_false(json_object_get(j, "exact")), "60 images: the graph answers");
    cr_expect_eq(result_ids(j, got, N), K);
    json_decref(j);
    /* forced exact: the brute-force answer */
    svc_hit want[K];
    int nw;
    svc_err err = {0};
    cr_assert(svc_search(&f.s, vec, K, NULL, want, &nw, &version, &err) == 0, "%s", err.msg);
    body[strlen(body) - 1] = 0;
    strcat(body, ", \"exact\": true}");
    cr_assert_eq(call_status(&a, "POST", "/search", NULL, body, &j), 200);
    cr_expect(json_is_true(json_object_get(j, "exact")));
    cr_assert_eq(result_ids(j, got, N), nw);
    for (int i = 0; i < nw; i++) cr_expect_eq(got[i], want[i].id);
    json_decref(j);
    /* neighbours: the graph, ?exact=true, and a bad value */
    char path[64];
    snprintf(path, sizeof path, "/neighbors/%lld", (long long)ids[7]);
    const char *const k5[] = {"k=5", NULL}, *const forced[] = {"k=5", "exact=true", NULL},
                      *const bad[] = {"exact=yes", NULL};
    cr_assert_eq(call_status(&a, "GET", path, k5, NULL, &j), 200);
    cr_expect(json_is_false(json_object_get(j, "exact")));
    cr_expect_eq(result_ids(j, got, N), K);
    for (int i = 0; i < K; i++) cr_expect_neq(got[i], ids[7], "itself excluded");
    json_decref(j);
    cr_assert(svc_neighbors(&f.s, ids[7], K, NULL, want, &nw, &version, &err) == 0, "%s", err.msg);
    cr_assert_eq(call_status(&a, "GET", path, forced, NULL, &j), 200);
    cr_expect(json_is_true(json_object_get(j, "exact")));
    cr_assert_eq(result_ids(j, got, N), nw);
    for (int i = 0; i < nw; i++) cr_expect_eq(got[i], want[i].id);
    json_decref(j);
    cr_expect_eq(call_status(&a, "GET", path, bad, NULL, &j), 400);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                     "bad_exact");
    json_decref(j);
    /* a deleted image leaves the graph too */
    cr_expect_eq(svc_delete_ids(&f.s, &ids[3], 1, &err), 1);
    cr_assert_eq(call_status(&a, "POST", "/search", NULL, body, &j), 200);
    int n = result_ids(j, got, N);
    for (int i = 0; i < n; i++) cr_expect_neq(got[i], ids[3], "a deleted image found");
    json_decref(j);
    api_free(&a);
    close_service(&f);
}

Test(service, the_batch_model_is_built_when_needed_freed_when_idle_and_gives_the_same_vectors) {
    fixture f;
    open_service(&f);
    svc_version *v = svc_version_acquire(&f.s);
    cr_expect_not(svc_version_batch_built(v), "built before any batch embedding");
    /* eight prepared images, embedded as a batch (>= 4 take the batch model) and one by one */
    enum { N = 8 };
    eng_image imgs[N];
    eng_aug_src srcs[N];
    svc_err err = {0};
    for (int i = 0; i < N; i++) {
        unsigned char pgm[1024];
        size_t n = make_pgm(300 + (unsigned)i, pgm);
        cr_assert(svc_prepare(&f.s, pgm, n, NULL, &imgs[i], &err) == 0, "%s", err.msg);
        srcs[i] = eng_image_as_src(&imgs[i]);
    }
    size_t d = (size_t)v->dim;
    float *a = malloc(N * d * sizeof *a), *b = malloc(N * d * sizeof *b), *one = malloc(d * 4);
    cr_assert(svc_version_embed(v, srcs, N, a, &err) == 0, "%s", err.msg);
    cr_expect(svc_version_batch_built(v), "a batch embedding did not build the batch model");
    svc_release_idle_models(&f.s, 3600); /* used just now: kept */
    cr_expect(svc_version_batch_built(v), "freed although used within the idle time");
    svc_release_idle_models(&f.s, 0);
    cr_expect_not(svc_version_batch_built(v), "not freed once idle");
    cr_assert(svc_version_embed(v, srcs, N, b, &err) == 0, "%s", err.msg);
    cr_expect(svc_version_batch_built(v), "not rebuilt for the next batch");
    for (size_t i = 0; i < N * d; i++)
        cr_assert_eq(a[i], b[i], "float %zu differs after the rebuild: %g vs %g", i, a[i], b[i]);
    for (int i = 0; i < N; i++) { /* and the batch-1 models agree to float rounding */
        cr_assert(svc_version_embed(v, &srcs[i], 1, one, &err) == 0, "%s", err.msg);
        for (size_t j = 0; j < d; j++)
            cr_assert(fabsf(one[j] - a[(size_t)i * d + j]) <= 1e-4f * (1 + fabsf(one[j])),
                      "image %d float %zu: batch-1 %g, batch %g", i, j, one[j],
                      a[(size_t)i * d + j]);
        eng_image_free(&imgs[i]);
    }
    free(a);
    free(b);
    free(one);
    svc_version_release(v);
    close_service(&f);
}
