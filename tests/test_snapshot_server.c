/* test_snapshot_server.c — snapshots over real HTTP and from the command line: `barlowd serve`
 * snapshots its database while clients upload and it trains, the snapshot holds every upload
 * acknowledged before the call and passes SQLite's integrity check, `barlowd backup` does the
 * same beside the running server, `barlowd restore` refuses while a server holds the database
 * and otherwise puts a snapshot in place, and a server started on it serves the same version and
 * finds the same neighbours. The key guards every snapshot route, a full disk is a 507 that
 * leaves no file. */
#define _DEFAULT_SOURCE /* usleep */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server_util.h"
#include "store.h"

TestSuite(snapshot_server, .init = make_dir, .fini = remove_dir, .timeout = 400);

/* Runs barlowd with args (NULL-terminated); returns its exit code, stdout and stderr (each
 * truncated to its buffer). */
static int run_barlowd(const char *const *args, char *out, size_t outlen, char *err,
                       size_t errlen) {
    char op[128], ep[128];
    snprintf(op, sizeof op, "%s/cli.out", dir);
    snprintf(ep, sizeof ep, "%s/cli.err", dir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen(op, "w", stdout) || !freopen(ep, "w", stderr)) _exit(126);
        const char *argv[16] = {BARLOWD_BIN};
        for (int i = 0; args[i] && i < 14; i++) argv[i + 1] = args[i];
        execv(BARLOWD_BIN, (char *const *)argv);
        _exit(127);
    }
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    cr_assert(WIFEXITED(status), "barlowd was killed by signal %d", WTERMSIG(status));
    const char *paths[2] = {op, ep};
    char *bufs[2] = {out, err};
    size_t lens[2] = {outlen, errlen};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "r");
        size_t n = f ? fread(bufs[i], 1, lens[i] - 1, f) : 0;
        bufs[i][n] = 0;
        if (f) fclose(f);
    }
    return WEXITSTATUS(status);
}

/* ---- uploads from other threads (no Criterion assertions there) ---- */

#define UPLOADERS 3
#define MAX_ACKED 20000

typedef struct uploads {
    int port;
    atomic_int stop, failures;
    pthread_mutex_t mu;
    int64_t ids[MAX_ACKED]; /* acknowledged, in the order the acknowledgements came */
    unsigned seeds[MAX_ACKED];
    int n;
} uploads;

typedef struct uploader {
    uploads *u;
    unsigned seed; /* next seed */
} uploader;

static void *upload_loop(void *arg) {
    uploader *w = arg;
    while (!atomic_load(&w->u->stop)) {
        unsigned char img[1024];
        unsigned seed = w->seed++;
        size_t n = make_pgm(seed, img);
        http_reply r;
        char err[128];
        if (http_request("127.0.0.1", w->u->port, "POST", "/train", PGM, img, n, 30.0, &r, err,
                         sizeof err)) {
            atomic_fetch_add(&w->u->failures, 1);
            continue;
        }
        json_t *j = r.status == 201 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        json_t *id = json_array_get(json_object_get(j, "ids"), 0);
        if (json_is_integer(id)) {
            pthread_mutex_lock(&w->u->mu);
            if (w->u->n < MAX_ACKED) {
                w->u->ids[w->u->n] = json_integer_value(id);
                w->u->seeds[w->u->n++] = seed;
            }
            pthread_mutex_unlock(&w->u->mu);
        } else {
            atomic_fetch_add(&w->u->failures, 1);
        }
        json_decref(j);
        http_reply_free(&r);
    }
    return NULL;
}

static int acked(uploads *u) {
    pthread_mutex_lock(&u->mu);
    int n = u->n;
    pthread_mutex_unlock(&u->mu);
    return n;
}

static int64_t status_int(const server *s, const char *group, const char *key) {
    json_t *st = get_json(s, "/status");
    json_t *g = group ? json_object_get(st, group) : st;
    int64_t v = json_integer_value(json_object_get(g, key));
    json_decref(st);
    return v;
}

/* 1 when the image id in the database file db has make_pgm(seed)'s bytes. */
static int file_has_image(sqlite3 *db, int64_t id, unsigned seed) {
    unsigned char want[1024];
    size_t n = make_pgm(seed, want);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "SELECT bytes FROM images WHERE id = ?", -1, &st, NULL) ==
              SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    int ok = sqlite3_step(st) == SQLITE_ROW && (size_t)sqlite3_column_bytes(st, 0) == n &&
             !memcmp(sqlite3_column_blob(st, 0), want, n);
    sqlite3_finalize(st);
    return ok;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "%s", path);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

/* POST /snapshots (201 required): the response's JSON, the caller's. */
static json_t *make_snapshot(const server *s, const char *headers) {
    reply r = req(s, "POST", "/snapshots", headers, NULL, 0);
    cr_assert_eq(r.status, 201, "POST /snapshots: %d %s", r.status, r.raw.body);
    json_t *j = json_incref(r.json);
    reply_free(&r);
    return j;
}

/* GET /snapshots/{name} into path; returns its size. */
static size_t download(const server *s, const char *name, const char *headers, const char *path) {
    char url[128];
    snprintf(url, sizeof url, "/snapshots/%s", name);
    reply r = req(s, "GET", url, headers, NULL, 0);
    cr_assert_eq(r.status, 200, "GET %s: %d", url, r.status);
    char type[64], disp[128];
    cr_expect(http_reply_header(&r.raw, "Content-Type", type, sizeof type) == 0 &&
              !strcmp(type, "application/vnd.sqlite3"), "Content-Type %s", type);
    cr_expect(http_reply_header(&r.raw, "Content-Disposition", disp, sizeof disp) == 0 &&
              strstr(disp, name), "Content-Disposition %s", disp);
    write_file(path, r.raw.body, r.raw.len);
    size_t n = r.raw.len;
    reply_free(&r);
    return n;
}

/* The k neighbours of id as [[id, score], ...] and the version that answered. */
static json_t *neighbours(const server *s, int64_t id, int64_t *version) {
    char url[64];
    snprintf(url, sizeof url, "/neighbors/%lld?k=5", (long long)id);
    json_t *j = get_json(s, url);
    *version = json_integer_value(json_object_get(j, "model_version"));
    json_t *out = json_array();
    json_t *hit;
    size_t i;
    json_array_foreach(json_object_get(j, "results"), i, hit)
        json_array_append_new(out, json_pack("[O,O]", json_object_get(hit, "id"),
                                             json_object_get(hit, "score")));
    json_decref(j);
    return out;
}

/* Waits until the server is quiet: training paused, no pending version, nothing queued, a vector
 * for every image. */
static void wait_quiet(const server *s) {
    double until = now_s() + 180;
    for (;;) {
        json_t *st = get_json(s, "/status");
        const char *state =
            json_string_value(json_object_get(json_object_get(st, "training"), "state"));
        int quiet = state && !strcmp(state, "paused") &&
                    json_is_null(json_object_get(json_object_get(st, "models"),
                                                 "pending_version")) &&
                    json_integer_value(json_object_get(st, "embed_queue")) == 0 &&
                    json_integer_value(json_object_get(st, "vectors")) ==
                        json_integer_value(json_object_get(st, "images"));
        json_decref(st);
        if (quiet) return;
        cr_assert(now_s() < until, "the server never became quiet");
        usleep(100000);
    }
}

Test(snapshot_server, a_snapshot_under_uploads_and_training_restores_to_the_same_server) {
    const char *flags[] = {"--batch", "8", "--min-images", "16", "--publish-every", "10",
                           "--embed-batch", "8", "--idle-steps", "40", NULL};
    server a = start(flags);
    for (unsigned i = 0; i < 40; i++) upload(&a, 100 + i, NULL);
    double until = now_s() + 180;
    while (status_int(&a, "models", "serving_version") < 2) {
        cr_assert(now_s() < until, "no second version served within 180 s");
        usleep(100000);
    }

    /* uploads from three clients while the server trains; a snapshot in the middle */
    static uploads u;
    memset(&u, 0, sizeof u);
    u.port = a.port;
    pthread_mutex_init(&u.mu, NULL);
    uploader w[UPLOADERS];
    pthread_t th[UPLOADERS];
    for (int i = 0; i < UPLOADERS; i++) {
        w[i] = (uploader){&u, 10000u * (unsigned)(i + 1)};
        cr_assert(pthread_create(&th[i], NULL, upload_loop, &w[i]) == 0);
    }
    while (acked(&u) < 30) usleep(2000);
    int before = acked(&u);
    json_t *snap = make_snapshot(&a, NULL);
    int after = acked(&u);
    /* the command line's backup beside the running server, uploads still going */
    char db[128], cli_copy[128], out[1024], err[1024];
    snprintf(db, sizeof db, "%s/data/barlowd.db", dir);
    snprintf(cli_copy, sizeof cli_copy, "%s/cli-backup.db", dir);
    int cli_before = acked(&u);
    const char *backup[] = {"backup", "--db", db, "--out", cli_copy, NULL};
    cr_expect_eq(run_barlowd(backup, out, sizeof out, err, sizeof err), 0, "backup: %s", err);
    json_t *bj = json_loads(out, 0, NULL);
    cr_expect(json_integer_value(json_object_get(bj, "images")) >= 40 + cli_before, "%s", out);
    json_decref(bj);
    atomic_store(&u.stop, 1);
    for (int i = 0; i < UPLOADERS; i++) pthread_join(th[i], NULL);
    cr_expect_eq(atomic_load(&u.failures), 0, "uploads failed beside the snapshot");
    const char *name = json_string_value(json_object_get(snap, "name"));
    cr_assert(name);
    int64_t images = json_integer_value(json_object_get(snap, "images"));
    cr_expect(images >= 40 + before && images <= 40 + after + UPLOADERS,
              "%lld images; %d acknowledged before, %d after", (long long)images, before, after);

    /* the download is the file, and the file holds every upload acknowledged before the call */
    char dl[128], kept[256];
    snprintf(dl, sizeof dl, "%s/downloaded.db", dir);
    size_t n = download(&a, name, NULL, dl);
    snprintf(kept, sizeof kept, "%s/data/snapshots/%s", dir, name);
    struct stat sb;
    cr_assert(stat(kept, &sb) == 0);
    cr_expect_eq((int64_t)n, sb.st_size);
    cr_expect_eq((int64_t)n, json_integer_value(json_object_get(snap, "bytes")));
    store_snapshot_info info;
    store_err se = {0};
    cr_assert(store_snapshot_inspect(dl, 1, &info, &se) == 0, "integrity: %s", se.msg);
    cr_expect_eq(info.images, images);
    cr_expect_eq(info.serving_version, json_integer_value(json_object_get(snap, "serving_version")));
    cr_expect_geq(info.serving_version, 2);
    store_snapshot_info cinfo;
    cr_assert(store_snapshot_inspect(cli_copy, 1, &cinfo, &se) == 0, "backup: %s", se.msg);
    cr_expect_geq(cinfo.images, images, "the later backup holds less than the snapshot");
    sqlite3 *sdb;
    cr_assert(sqlite3_open_v2(dl, &sdb, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    int missing = 0;
    for (int i = 0; i < before; i++) missing += !file_has_image(sdb, u.ids[i], u.seeds[i]);
    for (unsigned i = 0; i < 40; i++) missing += !file_has_image(sdb, (int64_t)i + 1, 100 + i);
    sqlite3_close(sdb);
    cr_expect_eq(missing, 0, "%d acknowledged uploads are missing from the snapshot", missing);
    fprintf(stderr, "snapshot: %lld images (%d uploads acknowledged before the call, %d after it), "
            "serving version %lld, %zu bytes\n", (long long)images, before, after,
            (long long)info.serving_version, n);

    /* while the server holds its database, restore changes nothing and a second server on it
     * is refused */
    const char *restore_busy[] = {"restore", dl, "--db", db, NULL};
    cr_expect_eq(run_barlowd(restore_busy, out, sizeof out, err, sizeof err), 1);
    cr_expect(strstr(err, "in use"), "restore: %s", err);
    char before_restore[160];
    snprintf(before_restore, sizeof before_restore, "%s.before-restore", db);
    cr_expect(access(before_restore, F_OK) != 0, "restore moved the database of a server");
    const char *second[] = {"serve", "--listen", "127.0.0.1:0", "--db", db, "--model", "tiny",
                            NULL};
    cr_expect_eq(run_barlowd(second, out, sizeof out, err, sizeof err), 1);
    cr_expect(strstr(err, "in use"), "a second server: %s", err);
    cr_expect_eq(status_int(&a, NULL, "images"), 40 + acked(&u), "the server lost images");

    /* quiet now (training paused, everything embedded): another snapshot, and what the server
     * answers from it */
    wait_quiet(&a);
    json_t *snap2 = make_snapshot(&a, NULL);
    int64_t serving = status_int(&a, "models", "serving_version");
    cr_expect_eq(json_integer_value(json_object_get(snap2, "serving_version")), serving);
    int64_t probe[5] = {1, 7, 23, 40, u.ids[before - 1]};
    json_t *want[5];
    for (int i = 0; i < 5; i++) {
        int64_t v;
        want[i] = neighbours(&a, probe[i], &v);
        cr_expect_eq(v, serving);
    }
    json_t *list = get_json(&a, "/snapshots");
    cr_expect_eq(json_array_size(json_object_get(list, "snapshots")), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(list,
                     "snapshots"), 0), "name")), json_string_value(json_object_get(snap2, "name")),
                     "newest first");
    json_decref(list);
    stop(&a);

    /* restore it as another database; a server started there serves the same */
    char bdir[128], bdb[160], src[256];
    snprintf(bdir, sizeof bdir, "%s/b", dir);
    cr_assert(mkdir(bdir, 0750) == 0);
    snprintf(bdb, sizeof bdb, "%s/barlowd.db", bdir);
    snprintf(src, sizeof src, "%s/data/snapshots/%s", dir,
             json_string_value(json_object_get(snap2, "name")));
    const char *restore[] = {"restore", src, "--db", bdb, NULL};
    cr_assert_eq(run_barlowd(restore, out, sizeof out, err, sizeof err), 0, "restore: %s", err);
    json_t *rj = json_loads(out, 0, NULL);
    cr_expect_eq(json_integer_value(json_object_get(rj, "serving_version")), serving, "%s", out);
    json_decref(rj);
    const char *bflags[] = {"--db", bdb, "--train", "no", NULL};
    server b = start(bflags);
    cr_expect_eq(status_int(&b, "models", "serving_version"), serving);
    cr_expect_eq(status_int(&b, NULL, "images"),
                 json_integer_value(json_object_get(snap2, "images")));
    cr_expect_eq(status_int(&b, NULL, "vectors"), status_int(&b, NULL, "images"),
                 "vectors were not in the snapshot");
    for (int i = 0; i < 5; i++) {
        int64_t v;
        json_t *got = neighbours(&b, probe[i], &v);
        cr_expect_eq(v, serving);
        cr_expect_eq(json_array_size(got), json_array_size(want[i]));
        for (size_t k = 0; k < json_array_size(got); k++) {
            json_t *g = json_array_get(got, k), *e = json_array_get(want[i], k);
            cr_expect_eq(json_integer_value(json_array_get(g, 0)),
                         json_integer_value(json_array_get(e, 0)), "image %lld, neighbour %zu",
                         (long long)probe[i], k);
            cr_expect(fabs(json_number_value(json_array_get(g, 1)) -
                           json_number_value(json_array_get(e, 1))) < 1e-6,
                      "image %lld, neighbour %zu: score", (long long)probe[i], k);
        }
        json_decref(got);
        json_decref(want[i]);
    }
    stop(&b);
    json_decref(snap);
    json_decref(snap2);
    pthread_mutex_destroy(&u.mu);
}

static int files_in(const char *d) {
    DIR *dh = opendir(d);
    cr_assert(dh != NULL, "%s", d);
    int n = 0;
    for (struct dirent *e; (e = readdir(dh));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(dh);
    return n;
}

/* The snapshot directory on a 64 KiB tmpfs (the database beside it is larger): 507 disk_full and
 * no file; the database's own writes are unaffected; with room it works. The key guards every
 * snapshot route while other reads stay open. */
Test(snapshot_server, snapshots_need_the_key_and_a_full_disk_is_507_leaving_no_file) {
    char data[128], snaps[160], cmd[300];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(snaps, sizeof snaps, "%s/snapshots", data);
    cr_assert(mkdir(data, 0750) == 0 && mkdir(snaps, 0750) == 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=64k tmpfs %s 2>&1", snaps);
    cr_assert(system(cmd) == 0, "cannot mount a tmpfs (the suite runs as root): %s", cmd);
    const char *flags[] = {"--train", "no", "--api-key", "k3y", NULL};
    server s = start(flags);
    const char *key = "Authorization: Bearer k3y\r\n";
    char pk[1200];
    for (unsigned i = 0; i < 4; i++) {
        unsigned char img[1024];
        size_t n = make_pgm(i, img);
        snprintf(pk, sizeof pk, "%s%s", key, PGM);
        reply r = req(&s, "POST", "/train", pk, img, n);
        cr_assert_eq(r.status, 201, "%s", r.raw.body);
        reply_free(&r);
    }
    const char *const routes4[][2] = {{"POST", "/snapshots"}, {"GET", "/snapshots"},
                                      {"GET", "/snapshots/snap-20261201T120000Z-1.db"},
                                      {"HEAD", "/snapshots/snap-20261201T120000Z-1.db"},
                                      {"DELETE", "/snapshots/snap-20261201T120000Z-1.db"}};
    for (int i = 0; i < 5; i++) {
        reply r = req(&s, routes4[i][0], routes4[i][1], NULL, NULL, 0);
        cr_expect_eq(r.status, 401, "%s %s without the key: %d", routes4[i][0], routes4[i][1],
                     r.status);
        if (strcmp(routes4[i][0], "HEAD")) expect_error(&r, 401, "unauthorized");
        reply_free(&r);
    }
    reply r = req(&s, "GET", "/images/1", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "reads stay open without --api-key-reads");
    reply_free(&r);

    r = req(&s, "POST", "/snapshots", key, NULL, 0);
    expect_error(&r, 507, "disk_full");
    reply_free(&r);
    cr_expect_eq(files_in(snaps), 0, "a failed snapshot left a file");
    json_t *list = NULL;
    r = req(&s, "GET", "/snapshots", key, NULL, 0);
    cr_expect(r.status == 200 && json_array_size(json_object_get(r.json, "snapshots")) == 0,
              "%s", r.raw.body);
    reply_free(&r);
    r = req(&s, "GET", "/readyz", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "the database's writes are not failing: %s", r.raw.body);
    reply_free(&r);
    r = req(&s, "GET", "/metrics", NULL, NULL, 0);
    cr_expect(r.status == 200 && !strstr(r.raw.body, "barlowd_disk_full_errors_total 0\n"),
              "the failure is not counted");
    reply_free(&r);

    snprintf(cmd, sizeof cmd, "mount -o remount,size=8m %s", snaps);
    cr_assert(system(cmd) == 0);
    json_t *snap = make_snapshot(&s, key);
    const char *name = json_string_value(json_object_get(snap, "name"));
    cr_expect_eq(json_integer_value(json_object_get(snap, "images")), 4);
    cr_expect_eq(files_in(snaps), 1);
    char dl[128];
    snprintf(dl, sizeof dl, "%s/dl.db", dir);
    download(&s, name, key, dl);
    store_snapshot_info info;
    store_err se = {0};
    cr_expect(store_snapshot_inspect(dl, 1, &info, &se) == 0 && info.images == 4, "%s", se.msg);
    char url[128];
    snprintf(url, sizeof url, "/snapshots/%s", name);
    r = req(&s, "HEAD", url, key, NULL, 0);
    cr_expect_eq(r.status, 200);
    reply_free(&r);
    r = req(&s, "DELETE", url, key, NULL, 0);
    cr_expect_eq(r.status, 200, "%s", r.raw.body);
    reply_free(&r);
    cr_expect_eq(files_in(snaps), 0);
    json_decref(list);
    json_decref(snap);
    stop(&s);
    snprintf(cmd, sizeof cmd, "umount %s", snaps);
    cr_expect(system(cmd) == 0);
}

Test(snapshot_server, backup_and_restore_refuse_bad_arguments_and_bad_files) {
    char out[1024], err[1024], db[128], junk[128], copy[128];
    snprintf(db, sizeof db, "%s/x.db", dir);
    snprintf(junk, sizeof junk, "%s/junk.db", dir);
    snprintf(copy, sizeof copy, "%s/copy.db", dir);
    write_file(junk, "this is not a database, and restore must say so", 48);
    const char *no_flags[] = {"backup", NULL};
    cr_expect_eq(run_barlowd(no_flags, out, sizeof out, err, sizeof err), 2, "%s", err);
    const char *unknown[] = {"backup", "--db", db, "--out", copy, "--bogus", "1", NULL};
    cr_expect_eq(run_barlowd(unknown, out, sizeof out, err, sizeof err), 2, "%s", err);
    const char *missing_db[] = {"backup", "--db", db, "--out", copy, NULL};
    cr_expect_eq(run_barlowd(missing_db, out, sizeof out, err, sizeof err), 2, "%s", err);
    cr_expect(access(copy, F_OK) != 0);
    cr_expect(access(db, F_OK) != 0, "backup created the database it was to copy");
    const char *over[] = {"backup", "--db", junk, "--out", junk, NULL};
    cr_expect_eq(run_barlowd(over, out, sizeof out, err, sizeof err), 2, "%s", err);
    cr_expect(strstr(err, "exists"), "%s", err);
    const char *no_db[] = {"restore", junk, NULL};
    cr_expect_eq(run_barlowd(no_db, out, sizeof out, err, sizeof err), 2, "%s", err);
    const char *two[] = {"restore", junk, junk, "--db", db, NULL};
    cr_expect_eq(run_barlowd(two, out, sizeof out, err, sizeof err), 2, "%s", err);
    const char *bad[] = {"restore", junk, "--db", db, NULL};
    cr_expect_eq(run_barlowd(bad, out, sizeof out, err, sizeof err), 2, "%s", err);
    cr_expect(strstr(err, "not a SQLite database"), "%s", err);
    cr_expect(access(db, F_OK) != 0, "a refused restore created the database");
}
