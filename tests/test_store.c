/* test_store.c — the SQLite store on real database files in a temporary directory: round trips
 * of every table, dedup, pruning, migrations, concurrent group-committed uploads, the sampler,
 * and crash safety under SIGKILL. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static char dir[64], path[96];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/barlowd-store-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/test.db", dir);
}

static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(system(cmd) == 0);
}

TestSuite(store, .init = make_dir, .fini = remove_dir);

static store *open_store(void) {
    store *s;
    store_err err = {0};
    cr_assert(store_open(path, NULL, &s, &err) == 0, "%s", err.msg);
    return s;
}

/* Deterministic fake image bytes for a seed. */
static void fake_bytes(uint64_t seed, unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        b[i] = (unsigned char)(seed >> 56);
    }
}

static int64_t put_fake(store *s, uint64_t seed, int *existed) {
    unsigned char bytes[300], train[50];
    fake_bytes(seed, bytes, sizeof bytes);
    fake_bytes(seed + 1, train, sizeof train);
    store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, train, sizeof train,
                         "{\"label\": 3}"};
    int64_t id;
    store_err err = {0};
    cr_assert(store_image_put(s, &in, &id, existed, &err) == 0, "%s", err.msg);
    return id;
}

Test(store, images_round_trip_and_identical_bytes_return_the_existing_id) {
    store *s = open_store();
    int existed;
    int64_t a = put_fake(s, 1, &existed);
    cr_expect(!existed);
    int64_t b = put_fake(s, 2, &existed);
    cr_expect(!existed && b != a);
    cr_expect_eq(put_fake(s, 1, &existed), a, "same bytes, same id");
    cr_expect(existed);
    cr_expect_eq(store_image_count(s), 2);

    store_image_info info;
    store_err err = {0};
    cr_assert(store_image_get(s, a, &info, &err) == 0, "%s", err.msg);
    cr_expect(info.width == 28 && info.height == 28 && info.bytes == 300);
    cr_expect_str_eq(info.media_type, "image/png");
    cr_expect_str_eq(info.meta_json, "{\"label\": 3}");
    cr_expect_eq(strlen(info.sha256), 64);
    store_image_info_free(&info);
    void *data;
    size_t len;
    unsigned char want[300];
    fake_bytes(1, want, sizeof want);
    cr_assert(store_image_data(s, a, 0, &data, &len, &err) == 0, "%s", err.msg);
    cr_expect(len == 300 && memcmp(data, want, 300) == 0, "original bytes differ");
    free(data);
    cr_assert(store_image_data(s, a, 1, &data, &len, &err) == 0);
    cr_expect_eq(len, 50);
    free(data);

    cr_expect_eq(store_image_delete(s, a, &err), 0);
    cr_expect_eq(store_image_delete(s, a, &err), 1, "second delete finds nothing");
    cr_expect_eq(store_image_get(s, a, &info, &err), 1);
    cr_expect_eq(store_image_count(s), 1);
    store_close(s);
    /* reopening: the sampler is rebuilt from the table */
    s = open_store();
    cr_expect_eq(store_image_count(s), 1);
    int64_t ids[20];
    uint64_t rng = 5;
    cr_assert_eq(store_sample(s, ids, 20, &rng, 0), 20);
    for (int i = 0; i < 20; i++) cr_expect_eq(ids[i], b, "a deleted image was sampled");
    store_close(s);
}

Test(store, bad_uploads_are_refused) {
    store *s = open_store();
    store_err err = {0};
    int64_t id;
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    store_image_in empty = {"", 0, "image/png", 1, 1, NULL, 0, NULL};
    cr_expect(store_image_put(s, &empty, &id, NULL, &err) != 0);
    store_image_in meta = {"abc", 3, "image/png", 1, 1, NULL, 0, big};
    cr_expect(store_image_put(s, &meta, &id, NULL, &err) != 0 && strstr(err.msg, "4 KiB"));
    cr_expect_eq(store_image_count(s), 0);
    store_close(s);
}

Test(store, checkpoints_keep_the_newest_versions_and_the_serving_one) {
    store *s = open_store(); /* keep_versions 3 */
    store_err err = {0};
    int64_t v[6];
    int existed;
    int64_t img = put_fake(s, 9, &existed);
    float vec[4] = {1, 2, 3, 4};
    for (int i = 1; i <= 5; i++) {
        char blob[64];
        snprintf(blob, sizeof blob, "checkpoint %d", i);
        cr_assert(store_checkpoint_put(s, i * 100, "{}", 1.0 / i, blob, strlen(blob) + 1, 1,
                                       &v[i], &err) == 0, "%s", err.msg);
        cr_assert(store_embedding_put(s, v[i], 1, &img, vec, 4, &err) == 0, "%s", err.msg);
    }
    store_checkpoint_info list[10];
    int n = store_checkpoint_list(s, list, 10, &err);
    cr_assert_eq(n, 4, "versions 5, 4, 3 and the serving 1 remain (got %d)", n);
    cr_expect(list[0].version == v[5] && list[1].version == v[4] && list[2].version == v[3] &&
              list[3].version == v[1]);
    cr_expect(list[0].step == 500 && fabs(list[0].loss - 0.2) < 1e-12);
    float got[4];
    cr_expect_eq(store_embedding_get(s, img, v[2], got, 4, &err), 1, "pruned version's vectors");
    cr_expect_eq(store_embedding_get(s, img, v[1], got, 4, &err), 0, "serving version kept");
    void *blob;
    size_t len;
    store_checkpoint_info info;
    cr_assert(store_checkpoint_latest(s, &info, &blob, &len, &err) == 0, "%s", err.msg);
    cr_expect(info.version == v[5] && strcmp(blob, "checkpoint 5") == 0);
    free(blob);
    cr_expect_eq(store_checkpoint_get(s, v[2], &info, &blob, &len, &err), 1);
    /* a version the gate decided on keeps its checkpoint past keep_versions */
    store_quality q = {.version = v[3], .decided = 1.0, .knn20 = NAN, .pixels_knn20 = NAN,
                       .serving_knn20 = NAN, .eff_rank = NAN, .mean_std = NAN};
    cr_assert(store_quality_put(s, &q, &err) == 0, "%s", err.msg);
    for (int i = 6; i <= 8; i++) {
        int64_t vi;
        cr_assert(store_checkpoint_put(s, i * 100, "{}", 1.0, "x", 2, 1, &vi, &err) == 0);
    }
    cr_expect_eq(store_checkpoint_get(s, v[3], &info, &blob, &len, &err), 0, "decided: kept");
    free(blob);
    cr_expect_eq(store_checkpoint_get(s, v[4], &info, &blob, &len, &err), 1, "undecided: pruned");
    store_close(s);
}

static int count_cb(void *ctx, int64_t id, const float *vec) {
    (void)id;
    double *sum = ctx;
    *sum += vec[0];
    return 0;
}

Test(store, embeddings_follow_their_images_and_versions) {
    store *s = open_store();
    store_err err = {0};
    int existed;
    int64_t ids[3] = {put_fake(s, 1, &existed), put_fake(s, 2, &existed), put_fake(s, 3, &existed)};
    float vecs[6] = {1, 0, 2, 0, 3, 0};
    cr_assert(store_embedding_put(s, 7, 3, ids, vecs, 2, &err) == 0, "%s", err.msg);
    float v[2];
    cr_assert(store_embedding_get(s, ids[1], 7, v, 2, &err) == 0);
    cr_expect(v[0] == 2 && v[1] == 0);
    cr_expect(store_embedding_get(s, ids[1], 7, v, 3, &err) == -1 && strstr(err.msg, "bytes"),
              "a dimension mismatch is an error");
    cr_assert(store_image_delete(s, ids[0], &err) == 0);
    double sum = 0;
    cr_assert(store_embedding_each(s, 7, 2, count_cb, &sum, &err) == 0, "%s", err.msg);
    cr_expect(sum == 5.0, "a deleted image's vector went with it (sum %g)", sum);
    /* vectors computed for an image deleted meanwhile are dropped, not an error */
    cr_assert(store_embedding_put(s, 8, 1, ids, vecs, 2, &err) == 0, "%s", err.msg);
    cr_expect_eq(store_embedding_get(s, ids[0], 8, v, 2, &err), 1);
    store_close(s);
}

Test(store, training_log_keeps_rows_in_step_order) {
    store *s = open_store();
    store_err err = {0};
    for (int i = 0; i < 10; i++) {
        store_log_row r = {i, 100.0 + i, 50.0 - i, 0.1, 200, 0.5, 0.01};
        cr_assert(store_log_append(s, &r, &err) == 0, "%s", err.msg);
    }
    store_log_row rows[4];
    int n = store_log_tail(s, rows, 4, &err);
    cr_assert_eq(n, 4);
    for (int i = 0; i < 4; i++) cr_expect_eq(rows[i].step, 6 + i);
    cr_expect(rows[3].loss == 41.0);
    store_close(s);
}

Test(store, the_sampler_draws_live_images_uniformly_or_favours_recent_ones) {
    store *s = open_store();
    int existed;
    int64_t first = 0;
    for (int i = 0; i < 100; i++) {
        int64_t id = put_fake(s, 1000 + (uint64_t)i, &existed);
        if (i == 0) first = id;
    }
    static int64_t ids[100000];
    uint64_t rng = 1;
    cr_assert_eq(store_sample(s, ids, 100000, &rng, 0), 100000);
    int counts[101] = {0}, recent = 0;
    for (int i = 0; i < 100000; i++) {
        cr_assert(ids[i] >= first && ids[i] < first + 100);
        counts[ids[i] - first]++;
    }
    for (int i = 0; i < 100; i++)
        cr_expect(counts[i] > 850 && counts[i] < 1150, "image %d drawn %d times of ~1000", i,
                  counts[i]);
    cr_assert_eq(store_sample(s, ids, 10000, &rng, 0.5), 10000);
    for (int i = 0; i < 10000; i++) recent += ids[i] >= first + 90;
    cr_expect(recent > 5000, "with recent_weight 0.5, %d of 10000 from the newest 10%%", recent);
    store_close(s);
}

Test(store, migrates_an_empty_old_file_and_refuses_a_newer_schema) {
    sqlite3 *db;
    cr_assert(sqlite3_open(path, &db) == SQLITE_OK);
    cr_assert(sqlite3_exec(db, "CREATE TABLE unrelated(x); PRAGMA user_version = 0;", NULL, NULL,
                           NULL) == SQLITE_OK);
    sqlite3_close(db);
    store *s = open_store();
    int existed;
    put_fake(s, 4, &existed);
    store_close(s);
    cr_assert(sqlite3_open(path, &db) == SQLITE_OK);
    cr_assert(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    store_err err = {0};
    cr_expect(store_open(path, NULL, &s, &err) != 0);
    cr_expect(strstr(err.msg, "newer") != NULL, "message: %s", err.msg);
}

/* tests/fixtures/store_v1/barlowd_v1.db was written by the schema-1 store (see make.c there):
 * two live images (one with metadata), one deleted, version 1 with vectors for both, a log row. */
Test(store, migrates_a_schema_1_file_written_by_an_older_barlowd) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/store_v1/barlowd_v1.db %s", BARLOWD_FIXTURES, path);
    cr_assert(system(cmd) == 0);
    store *s = open_store();
    cr_expect_eq(store_image_count(s), 2);
    store_image_info info;
    store_err err = {0};
    cr_assert(store_image_get(s, 2, &info, &err) == 0, "%s", err.msg);
    cr_expect_eq(info.width, 3);
    cr_expect_str_eq(info.meta_json, "{\"label\": \"one\"}");
    store_image_info_free(&info);
    cr_expect_eq(store_image_get(s, 3, &info, &err), 1, "the deleted image stays deleted");
    void *bytes;
    size_t len;
    cr_assert(store_image_data(s, 1, 0, &bytes, &len, &err) == 0, "%s", err.msg);
    cr_expect(len == strlen("image-0-original-bytes") && !memcmp(bytes, "image-0-original-bytes", len));
    free(bytes);
    store_checkpoint_info ck;
    void *blob;
    cr_assert(store_checkpoint_latest(s, &ck, &blob, &len, &err) == 0, "%s", err.msg);
    cr_expect(ck.version == 1 && ck.step == 40 && len == sizeof "checkpoint-blob-v1");
    free(blob);
    float v[4];
    cr_assert(store_embedding_get(s, 2, 1, v, 4, &err) == 0, "%s", err.msg);
    cr_expect(v[0] == 0 && v[1] == 0.5f && v[2] == 0.5f);
    cr_expect_eq(store_embedding_count(s, 1, &err), 2);
    store_log_row row;
    cr_expect_eq(store_log_tail(s, &row, 1, &err), 1);
    cr_expect_eq(row.step, 40);
    /* schema 2's table exists and works, and the file now says version 2 */
    int64_t value = 0;
    cr_expect_eq(store_state_get(s, "serving_version", &value, &err), 1);
    cr_assert(store_state_set(s, "serving_version", 1, &err) == 0, "%s", err.msg);
    store_close(s);
    s = open_store();
    cr_expect_eq(store_state_get(s, "serving_version", &value, &err), 0);
    cr_expect_eq(value, 1);
    store_close(s);
    sqlite3 *db;
    cr_assert(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK);
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    cr_expect_eq(sqlite3_column_int(st, 0), STORE_SCHEMA_VERSION);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

Test(store, live_ids_snapshot_and_membership_follow_puts_and_deletes) {
    store *s = open_store();
    int existed;
    int64_t a = put_fake(s, 11, &existed), b = put_fake(s, 12, &existed),
            c = put_fake(s, 13, &existed);
    store_err err = {0};
    cr_assert(store_image_delete(s, b, &err) == 0, "%s", err.msg);
    cr_expect(store_image_live(s, a) && !store_image_live(s, b) && store_image_live(s, c));
    cr_expect(!store_image_live(s, -1) && !store_image_live(s, 1000000));
    int64_t *ids;
    cr_assert_eq(store_image_ids(s, &ids), 2);
    cr_expect(ids[0] == a && ids[1] == c);
    free(ids);
    store_close(s);
}

typedef struct uploader {
    store *s;
    int thread;
    int64_t ids[50];
} uploader;

static void *upload_many(void *p) {
    uploader *u = p;
    for (int i = 0; i < 50; i++) u->ids[i] = put_fake(u->s, 100000 + (uint64_t)u->thread * 1000 + i, NULL);
    return NULL;
}

Test(store, concurrent_uploads_are_all_saved_once) {
    store *s = open_store();
    uploader u[8];
    pthread_t th[8];
    for (int t = 0; t < 8; t++) {
        u[t].s = s;
        u[t].thread = t;
        pthread_create(&th[t], NULL, upload_many, &u[t]);
    }
    for (int t = 0; t < 8; t++) pthread_join(th[t], NULL);
    cr_expect_eq(store_image_count(s), 400);
    store_image_info info;
    store_err err = {0};
    for (int t = 0; t < 8; t++)
        for (int i = 0; i < 50; i++) {
            cr_expect_eq(store_image_get(s, u[t].ids[i], &info, &err), 0);
            store_image_info_free(&info);
        }
    store_close(s);
}

/* A child uploads in a loop and reports each acknowledged id through a pipe; the parent kills
 * it at a random moment, reopens the file and checks every acknowledged image, 50 times. */
Test(store, every_acknowledged_upload_survives_kill_9, .timeout = 120) {
    srand(12345);
    int64_t total_acked = 0;
    for (int cycle = 0; cycle < 50; cycle++) {
        int fds[2];
        cr_assert(pipe(fds) == 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            store *s;
            store_err err;
            if (store_open(path, NULL, &s, &err)) _exit(3);
            for (uint64_t k = 0;; k++) {
                uint64_t seed = (uint64_t)cycle * 1000000 + k;
                unsigned char bytes[300];
                fake_bytes(seed, bytes, sizeof bytes);
                store_image_in in = {bytes, sizeof bytes, "image/png", 1, 1, NULL, 0, NULL};
                int64_t id;
                if (store_image_put(s, &in, &id, NULL, &err)) _exit(4);
                int64_t rec[2] = {id, (int64_t)seed};
                if (write(fds[1], rec, sizeof rec) != sizeof rec) _exit(5);
            }
        }
        close(fds[1]);
        struct timespec d = {0, (long)(1 + rand() % 40) * 1000000L};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child exited on its own (status %d)", status);
        store *s = open_store();
        int64_t rec[2];
        while (read(fds[0], rec, sizeof rec) == sizeof rec) {
            void *data;
            size_t len;
            store_err err = {0};
            unsigned char want[300];
            fake_bytes((uint64_t)rec[1], want, sizeof want);
            cr_assert_eq(store_image_data(s, rec[0], 0, &data, &len, &err), 0,
                         "cycle %d: acknowledged image %lld is missing", cycle, (long long)rec[0]);
            cr_expect(len == 300 && memcmp(data, want, 300) == 0, "image %lld changed",
                      (long long)rec[0]);
            free(data);
            total_acked++;
        }
        close(fds[0]);
        store_close(s);
    }
    cr_expect(total_acked > 50, "only %lld uploads were acknowledged in 50 cycles",
              (long long)total_acked);
    sqlite3 *db;
    cr_assert(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    cr_expect_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
    cr_log_info("%lld acknowledged uploads checked after 50 kills", (long long)total_acked);
}

/* Collects what store_labelled_each passes. */
typedef struct labelled_seen {
    int n;
    int64_t ids[16];
    char labels[16][16];
} labelled_seen;

static int see_labelled(void *ctx, int64_t id, const char *label) {
    labelled_seen *l = ctx;
    l->ids[l->n] = id;
    snprintf(l->labels[l->n++], 16, "%s", label);
    return 0;
}

Test(store, quality_records_round_trip_and_the_labelled_sample_is_in_sha256_order) {
    store *s = open_store();
    store_err err = {0};
    store_quality q = {.version = 4, .decided = 123.5, .labelled = 300, .knn20 = 0.81,
                       .pixels_knn20 = 0.79, .serving_knn20 = NAN, .eff_rank = 31.5,
                       .mean_std = NAN, .accepted = 0};
    snprintf(q.reason, sizeof q.reason, "refused: why");
    cr_assert(store_quality_put(s, &q, &err) == 0, "%s", err.msg);
    store_quality back;
    cr_assert_eq(store_quality_get(s, 4, &back, &err), 0, "%s", err.msg);
    cr_expect(back.version == 4 && back.decided == 123.5 && back.labelled == 300 &&
              back.knn20 == 0.81 && back.pixels_knn20 == 0.79 && isnan(back.serving_knn20) &&
              !back.accepted && !strcmp(back.reason, "refused: why") && back.eff_rank == 31.5 &&
              isnan(back.mean_std));
    cr_expect_eq(store_quality_get(s, 5, &back, &err), 1, "no record");
    q.accepted = 1; /* a later decision replaces the record */
    cr_assert(store_quality_put(s, &q, &err) == 0, "%s", err.msg);
    cr_assert_eq(store_quality_get(s, 4, &back, &err), 0);
    cr_expect(back.accepted);
    /* labelled images: strings and numbers under the key, in SHA-256 order, at most max */
    static const char *const metas[] = {"{\"label\": \"shoe\"}", "{\"label\": 7}", NULL,
                                        "{\"other\": 1}", "{\"label\": [1]}", "{\"label\": 2.5}"};
    for (int i = 0; i < 6; i++) {
        unsigned char bytes[64];
        fake_bytes(900 + (uint64_t)i, bytes, sizeof bytes);
        store_image_in in = {bytes, sizeof bytes, "image/png", 8, 8, bytes, 8, metas[i]};
        int64_t id;
        int existed;
        cr_assert(store_image_put(s, &in, &id, &existed, &err) == 0, "%s", err.msg);
    }
    labelled_seen seen = {0};
    cr_expect_eq(store_labelled_each(s, "label", 10, see_labelled, &seen, &err), 3, "%s", err.msg);
    cr_assert_eq(seen.n, 3);
    for (int i = 0; i + 1 < seen.n; i++) {
        store_image_info a, b;
        cr_assert(store_image_get(s, seen.ids[i], &a, &err) == 0);
        cr_assert(store_image_get(s, seen.ids[i + 1], &b, &err) == 0);
        cr_expect(strcmp(a.sha256, b.sha256) < 0, "SHA-256 order");
        store_image_info_free(&a);
        store_image_info_free(&b);
    }
    int texts = 0;
    for (int i = 0; i < seen.n; i++)
        texts += !strcmp(seen.labels[i], "shoe") + !strcmp(seen.labels[i], "7") +
                 !strcmp(seen.labels[i], "2.5");
    cr_expect_eq(texts, 3, "labels as text");
    labelled_seen two = {0};
    cr_expect_eq(store_labelled_each(s, "label", 2, see_labelled, &two, &err), 2);
    cr_expect(two.ids[0] == seen.ids[0] && two.ids[1] == seen.ids[1], "the smallest SHA-256 first");
    cr_expect_lt(store_labelled_each(s, "la'bel", 2, see_labelled, &two, &err), 0);
    store_close(s);
}
