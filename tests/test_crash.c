/* test_crash.c — kill -9 at random moments while clients upload, the trainer trains and the
 * re-embedder brings in new versions; restart each time and check that nothing acknowledged was
 * lost: every upload that got a 201 is there with identical bytes, the database passes
 * PRAGMA integrity_check, the server comes back on the newest checkpoint and resumes training
 * from its step, and the serving index answers with the stored vectors.
 *
 * BARLOWD_CRASH_CYCLES sets the number of cycles (default 20: the suite's short budget;
 * bench/crash runs more). */
#define _DEFAULT_SOURCE /* usleep */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server_util.h"

TestSuite(crash, .init = make_dir, .fini = remove_dir, .timeout = 1200);

typedef struct acked {
    int64_t id;
    unsigned seed;
} acked;

typedef struct uploads {
    pthread_mutex_t mu;
    acked *list;
    size_t n, cap;
    atomic_uint next_seed;
    atomic_int stop;
    int port;
} uploads;

static void *client(void *arg) {
    uploads *u = arg;
    unsigned char img[1024];
    while (!atomic_load(&u->stop)) {
        unsigned seed = atomic_fetch_add(&u->next_seed, 1);
        size_t n = make_pgm(seed, img);
        http_reply r;
        char err[256];
        if (http_request("127.0.0.1", u->port, "POST", "/train", PGM, img, n, 10.0, &r, err,
                         sizeof err)) {
            usleep(1000); /* the server is gone (or not yet back): nothing was acknowledged */
            continue;
        }
        json_t *j = r.status == 201 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        json_t *ids = j ? json_object_get(j, "ids") : NULL;
        if (json_array_size(ids) == 1) {
            pthread_mutex_lock(&u->mu);
            if (u->n == u->cap) {
                u->cap = u->cap ? 2 * u->cap : 256;
                u->list = realloc(u->list, u->cap * sizeof *u->list);
            }
            u->list[u->n++] = (acked){json_integer_value(json_array_get(ids, 0)), seed};
            pthread_mutex_unlock(&u->mu);
        }
        json_decref(j);
        http_reply_free(&r);
        /* ~100 uploads/s per client: every kill still lands among acknowledged and in-flight
         * uploads, while the collection stays small enough that each restart's re-embedding
         * (which grows with it) stays cheap on the slower CPUs */
        usleep(10000);
    }
    return NULL;
}

static void integrity_ok(const char *db) {
    sqlite3 *h;
    cr_assert(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    const char *res = (const char *)sqlite3_column_text(st, 0);
    cr_expect_str_eq(res, "ok", "integrity_check: %s", res);
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* The newest checkpoint's step (0 when there is none beyond the initial weights). */
static long long newest_checkpoint_step(const server *s) {
    json_t *j = get_json(s, "/checkpoints");
    json_t *list = json_object_get(j, "checkpoints");
    long long step = 0, version = -1;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        long long v = json_integer_value(json_object_get(c, "version"));
        if (v > version) {
            version = v;
            step = json_integer_value(json_object_get(c, "step"));
        }
    }
    json_decref(j);
    return step;
}

/* Acknowledged uploads are there, byte for byte: every one from index `from` on (those the
 * last kill could have hit) and every `stride`-th before it (all of them when stride is 1). */
static void acked_present(const server *s, const uploads *u, size_t from, size_t stride) {
    unsigned char img[1024];
    for (size_t i = 0; i < u->n; i = i >= from ? i + 1 : i + stride < from ? i + stride : from) {
        char path[64];
        snprintf(path, sizeof path, "/images/%lld/raw", (long long)u->list[i].id);
        reply r = req(s, "GET", path, NULL, NULL, 0);
        size_t n = make_pgm(u->list[i].seed, img);
        cr_expect_eq(r.status, 200, "acknowledged image %lld (seed %u) is gone",
                     (long long)u->list[i].id, u->list[i].seed);
        cr_expect(r.status != 200 || (r.raw.len == n && !memcmp(r.raw.body, img, n)),
                  "image %lld's bytes changed", (long long)u->list[i].id);
        reply_free(&r);
    }
}

/* The serving index holds the stored vectors: searching with an image's vector (as stored for
 * the serving version) finds that image with score 1. */
static void index_matches_store(const server *s, const uploads *u) {
    size_t step = u->n > 24 ? u->n / 24 : 1;
    for (size_t i = 0; i < u->n; i += step) {
        reply v = wait_vector(s, u->list[i].id);
        json_t *q = json_pack("{s:O,s:i}", "vector", json_object_get(v.json, "vector"), "k", 5);
        long long version = json_integer_value(json_object_get(v.json, "model_version"));
        char *body = json_dumps(q, JSON_COMPACT);
        reply r = req(s, "POST", "/search", "Content-Type: application/json\r\n", body,
                      strlen(body));
        cr_assert_eq(r.status, 200, "search: %s", r.raw.body);
        int found = 0;
        size_t k;
        json_t *hit;
        json_array_foreach(json_object_get(r.json, "results"), k, hit) {
            if (json_integer_value(json_object_get(hit, "id")) == u->list[i].id)
                found = json_real_value(json_object_get(hit, "score")) > 0.9999;
        }
        /* a version swap between the two requests would change the vector: only compare
         * answers from the same version */
        if (json_integer_value(json_object_get(r.json, "model_version")) == version)
            cr_expect(found, "image %lld is not its own nearest neighbour at score 1: %s",
                      (long long)u->list[i].id, r.raw.body);
        reply_free(&r);
        free(body);
        json_decref(q);
        reply_free(&v);
    }
}

Test(crash, kill_9_while_uploading_training_and_reembedding_loses_nothing) {
    const char *env = getenv("BARLOWD_CRASH_CYCLES");
    int cycles = env ? atoi(env) : 20;
    cr_assert(cycles >= 1);
    const char *flags[] = {"--min-images", "16", "--batch", "8", "--publish-every", "10",
                           "--embed-batch", "8", NULL};
    char db[128];
    snprintf(db, sizeof db, "%s/data/barlowd.db", dir);
    uploads u = {.mu = PTHREAD_MUTEX_INITIALIZER};
    atomic_init(&u.next_seed, 1);
    unsigned rng = 12345;
    long long max_step = 0;
    int trained_cycles = 0, reembedded_cycles = 0;
    long long last_serving = 1;
    int pending_cycles = 0;
    size_t last_from = 0; /* uploads acknowledged before the last cycle began */
    for (int c = 0; c < cycles; c++) {
        server s = start(flags);
        /* came back on the newest checkpoint, at its step */
        long long ck = newest_checkpoint_step(&s);
        json_t *st = get_json(&s, "/status");
        long long step = json_integer_value(json_object_get(json_object_get(st, "training"), "step"));
        json_decref(st);
        cr_expect_geq(step, ck, "cycle %d: resumed at step %lld, newest checkpoint %lld", c, step,
                      ck);
        cr_expect_geq(ck, max_step, "cycle %d: the newest checkpoint (step %lld) is older than "
                      "one seen before (%lld)", c, ck, max_step);
        max_step = ck;
        acked_present(&s, &u, last_from, 37);
        index_matches_store(&s, &u);
        last_from = u.n;

        /* now load it: three uploaders while it trains and re-embeds, then kill -9 */
        u.port = s.port;
        atomic_store(&u.stop, 0);
        pthread_t t[3];
        for (int i = 0; i < 3; i++) cr_assert(pthread_create(&t[i], NULL, client, &u) == 0);
        rng = rng * 1103515245u + 12345u;
        usleep(300000 + (rng >> 8) % 1200000);
        json_t *before = get_json(&s, "/status");
        json_t *tr = json_object_get(before, "training");
        if (!strcmp(json_string_value(json_object_get(tr, "state")), "training")) trained_cycles++;
        long long serving =
            json_integer_value(json_object_get(json_object_get(before, "models"),
                                               "serving_version"));
        if (serving != last_serving) reembedded_cycles++; /* a new version came into service */
        last_serving = serving;
        if (!json_is_null(json_object_get(json_object_get(before, "models"), "pending_version")))
            pending_cycles++; /* killed (about) while re-embedding */
        json_decref(before);
        cr_assert(kill(s.pid, SIGKILL) == 0);
        int status;
        cr_assert(waitpid(s.pid, &status, 0) == s.pid);
        atomic_store(&u.stop, 1);
        for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
        integrity_ok(db);
    }
    server s = start(flags);
    acked_present(&s, &u, 0, 1);
    index_matches_store(&s, &u);
    stop(&s);
    integrity_ok(db);
    cr_log_info("%d cycles: %zu uploads acknowledged, training in %d cycles, re-embedding at "
                "the kill in %d, a new version serving in %d, newest checkpoint at step %lld",
                cycles, u.n, trained_cycles, pending_cycles, reembedded_cycles, max_step);
    cr_expect_gt(u.n, (size_t)cycles * 10, "too few uploads to mean anything (%zu)", u.n);
    cr_expect_gt(trained_cycles, cycles / 2, "training ran in only %d of %d cycles",
                 trained_cycles, cycles);
    cr_expect_gt(max_step, 0, "no checkpoint beyond the initial weights was ever published");
    cr_expect_gt(pending_cycles, 0, "no kill came while a version was being re-embedded");
    free(u.list);
}
