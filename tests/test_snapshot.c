/* test_snapshot.c — the store's snapshots on real files: a copy taken under concurrent uploads
 * holds every acknowledged one and passes SQLite's integrity check, failures (a full disk, a
 * cancel, an existing destination) leave no file, what a file holds is read back and unsound
 * files are refused, restore keeps the old database with its WAL folded in, and a claimed
 * database is never replaced. */
#define _DEFAULT_SOURCE /* usleep */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static char dir[64], path[96];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/barlowd-snap-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/test.db", dir);
}

static void remove_dir(void) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "umount %s/full >/dev/null 2>&1", dir); /* a failed disk test */
    if (system(cmd)) { /* nothing mounted: the usual case */
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(system(cmd) == 0);
}

TestSuite(snapshot, .init = make_dir, .fini = remove_dir, .timeout = 120);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static store *open_at(const char *p) {
    store *s;
    store_err err = {0};
    cr_assert(store_open(p, NULL, &s, &err) == 0, "%s", err.msg);
    return s;
}

/* Deterministic fake image bytes for a seed (len bytes, at most 8192). */
static void fake_bytes(uint64_t seed, unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        b[i] = (unsigned char)(seed >> 56);
    }
}

#define IMG_BYTES 4000

static int64_t put_seed(store *s, uint64_t seed) {
    unsigned char bytes[IMG_BYTES];
    fake_bytes(seed, bytes, sizeof bytes);
    store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, NULL, 0, NULL};
    int64_t id;
    int existed;
    store_err err = {0};
    cr_assert(store_image_put(s, &in, &id, &existed, &err) == 0, "%s", err.msg);
    cr_assert(!existed);
    return id;
}

static int file_exists(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0;
}

/* Entries of a directory other than . and .. */
static int entries(const char *d) {
    DIR *dh = opendir(d);
    cr_assert(dh != NULL, "%s", d);
    int n = 0;
    for (struct dirent *e; (e = readdir(dh));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(dh);
    return n;
}

/* The original bytes of image id in the database file p (read-only); 1 found. */
static int file_has_image(sqlite3 *db, int64_t id, uint64_t seed) {
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "SELECT bytes FROM images WHERE id = ?", -1, &st, NULL) ==
              SQLITE_OK);
    sqlite3_bind_int64(st, 1, id);
    int found = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        unsigned char want[IMG_BYTES];
        fake_bytes(seed, want, sizeof want);
        found = sqlite3_column_bytes(st, 0) == IMG_BYTES &&
                !memcmp(sqlite3_column_blob(st, 0), want, IMG_BYTES);
    }
    sqlite3_finalize(st);
    return found;
}

/* ---- concurrent uploads ---- */

#define WRITERS 4
#define MAX_ACKED 100000

typedef struct uploads {
    store *s;
    atomic_int stop;
    pthread_mutex_t mu;
    int64_t ids[MAX_ACKED];    /* acknowledged uploads, in the order they were acknowledged */
    uint64_t seeds[MAX_ACKED];
    int n;
} uploads;

typedef struct writer {
    uploads *u;
    uint64_t next_seed;
} writer;

static void *write_loop(void *arg) {
    writer *w = arg;
    while (!atomic_load(&w->u->stop)) {
        uint64_t seed = w->next_seed++;
        int64_t id = put_seed(w->u->s, seed);
        pthread_mutex_lock(&w->u->mu);
        if (w->u->n < MAX_ACKED) {
            w->u->ids[w->u->n] = id;
            w->u->seeds[w->u->n++] = seed;
        }
        pthread_mutex_unlock(&w->u->mu);
    }
    return NULL;
}

static int acked(uploads *u) {
    pthread_mutex_lock(&u->mu);
    int n = u->n;
    pthread_mutex_unlock(&u->mu);
    return n;
}

Test(snapshot, a_copy_under_concurrent_uploads_holds_every_acknowledged_one_and_is_sound) {
    static uploads u;
    memset(&u, 0, sizeof u);
    u.s = open_at(path);
    pthread_mutex_init(&u.mu, NULL);
    for (uint64_t i = 0; i < 3000; i++) put_seed(u.s, 1000000 + i); /* ~12 MB to copy */
    writer w[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer){&u, (uint64_t)(i + 1) << 32};
        cr_assert(pthread_create(&th[i], NULL, write_loop, &w[i]) == 0);
    }
    while (acked(&u) < 50) usleep(1000);
    int before = acked(&u); /* acknowledged before the call */
    char out[128];
    snprintf(out, sizeof out, "%s/copy.db", dir);
    store_snapshot_info info;
    store_err err = {0};
    double t0 = now_s();
    cr_assert(store_backup(path, out, NULL, NULL, &info, &err) == 0, "%s", err.msg);
    double secs = now_s() - t0;
    int after = acked(&u);
    atomic_store(&u.stop, 1);
    for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
    cr_expect_gt(after, before, "no upload was acknowledged during the %.3f s copy: writers "
                 "waited for it", secs);

    /* what the copy holds, read back; and it passes SQLite's integrity check */
    store_snapshot_info checked;
    cr_assert(store_snapshot_inspect(out, 1, &checked, &err) == 0, "%s", err.msg);
    cr_expect_eq(checked.images, info.images);
    cr_expect_eq(checked.bytes, info.bytes);
    cr_expect_eq(checked.schema, STORE_SCHEMA_VERSION);
    cr_expect_geq(info.images, 3000 + before);
    cr_expect_leq(info.images, 3000 + after);
    sqlite3 *db;
    cr_assert(sqlite3_open_v2(out, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    int missing = 0;
    for (int i = 0; i < before; i++) missing += !file_has_image(db, u.ids[i], u.seeds[i]);
    cr_expect_eq(missing, 0, "%d of %d acknowledged uploads are not in the copy", missing, before);
    cr_expect(file_has_image(db, 1, 1000000), "the first image");
    sqlite3_close(db);
    /* a single complete file: no partial copy, journal or WAL beside it */
    char p[160];
    snprintf(p, sizeof p, "%s/.copy.db.partial", dir);
    cr_expect(!file_exists(p));
    snprintf(p, sizeof p, "%s/copy.db-wal", dir);
    cr_expect(!file_exists(p));
    snprintf(p, sizeof p, "%s/copy.db-journal", dir);
    cr_expect(!file_exists(p));
    fprintf(stderr, "snapshot: a copy of %lld images, %lld bytes in %.3f s beside %d writers\n",
            (long long)info.images, (long long)info.bytes, secs, WRITERS);
    store_close(u.s);
    pthread_mutex_destroy(&u.mu);
}

/* A cancel that says yes at once. */
static int cancel_now(void *ctx) {
    atomic_fetch_add((atomic_int *)ctx, 1);
    return 1;
}

Test(snapshot, an_existing_destination_is_refused_and_a_cancelled_copy_leaves_nothing) {
    store *s = open_at(path);
    for (uint64_t i = 0; i < 200; i++) put_seed(s, i);
    char out[128];
    snprintf(out, sizeof out, "%s/out", dir);
    cr_assert(mkdir(out, 0755) == 0);
    snprintf(out, sizeof out, "%s/out/copy.db", dir);
    store_err err = {0};
    atomic_int calls = 0;
    cr_expect_eq(store_backup(path, out, cancel_now, &calls, NULL, &err), -1);
    cr_expect_eq(err.code, ERR_UNAVAILABLE, "%s", err.msg);
    cr_expect_gt(atomic_load(&calls), 0, "the cancel was never asked");
    char d[128];
    snprintf(d, sizeof d, "%s/out", dir);
    cr_expect_eq(entries(d), 0, "a cancelled copy left a file");

    cr_assert(store_backup(path, out, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    struct stat sb;
    cr_assert(stat(out, &sb) == 0);
    err.code = ERR_OK;
    cr_expect_eq(store_backup(path, out, NULL, NULL, NULL, &err), -1, "overwrote a file");
    cr_expect_eq(err.code, ERR_BAD_INPUT);
    struct stat again;
    cr_assert(stat(out, &again) == 0);
    cr_expect(again.st_ino == sb.st_ino && again.st_mtime == sb.st_mtime);
    snprintf(d, sizeof d, "%s/nothing.db", dir);
    cr_expect_eq(store_backup(d, out, NULL, NULL, NULL, &err), -1, "a missing database");
    cr_expect_eq(err.code, ERR_BAD_INPUT);
    store_close(s);
}

/* The database on the file system, the copy on a 256 KiB tmpfs: SQLite's SQLITE_FULL (ENOSPC) is
 * a disk-full error and no partial file stays. */
Test(snapshot, a_full_disk_is_disk_full_and_leaves_no_file) {
    store *s = open_at(path);
    for (uint64_t i = 0; i < 300; i++) put_seed(s, i); /* 1.2 MB */
    char full[96], cmd[200], out[128];
    snprintf(full, sizeof full, "%s/full", dir);
    cr_assert(mkdir(full, 0755) == 0);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=256k tmpfs %s 2>&1", full);
    cr_assert(system(cmd) == 0, "cannot mount a tmpfs (the suite runs as root): %s", cmd);
    snprintf(out, sizeof out, "%s/copy.db", full);
    store_err err = {0};
    cr_expect_eq(store_backup(path, out, NULL, NULL, NULL, &err), -1);
    cr_expect_eq(err.code, ERR_DISK_FULL, "code %d: %s", err.code, err.msg);
    cr_expect_eq(entries(full), 0, "a failed copy left a file");
    /* with room it works on the same mount */
    snprintf(cmd, sizeof cmd, "mount -o remount,size=8m %s", full);
    cr_assert(system(cmd) == 0);
    cr_expect(store_backup(path, out, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    snprintf(cmd, sizeof cmd, "umount %s", full);
    cr_expect(system(cmd) == 0);
    store_close(s);
}

static void write_bytes(const char *p, const void *data, size_t n) {
    FILE *f = fopen(p, "wb");
    cr_assert(f != NULL);
    cr_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static void sql(const char *p, const char *text) {
    sqlite3 *db;
    cr_assert(sqlite3_open(p, &db) == SQLITE_OK);
    cr_assert(sqlite3_exec(db, text, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* inspect must refuse p, saying `reason` (a piece of its message). */
static void expect_refused(const char *p, int check, const char *why, const char *reason) {
    store_snapshot_info info;
    store_err err = {0};
    cr_expect_eq(store_snapshot_inspect(p, check, &info, &err), -1, "%s accepted", why);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "%s: code %d (%s)", why, err.code, err.msg);
    cr_expect(strstr(err.msg, reason), "%s: %s", why, err.msg);
}

Test(snapshot, files_that_are_not_sound_barlowd_databases_are_refused) {
    store *s = open_at(path);
    for (uint64_t i = 0; i < 100; i++) put_seed(s, i);
    store_err err = {0};
    cr_assert(store_state_set(s, "serving_version", 7, &err) == 0, "%s", err.msg);
    char good[128], p[128];
    snprintf(good, sizeof good, "%s/good.db", dir);
    cr_assert(store_backup(path, good, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    store_close(s);
    store_snapshot_info info;
    cr_assert(store_snapshot_inspect(good, 1, &info, &err) == 0, "%s", err.msg);
    cr_expect_eq(info.images, 100);
    cr_expect_eq(info.serving_version, 7);
    /* a name that means something in a URI is still just a file name */
    snprintf(p, sizeof p, "%s/we ird?x=1#%%41.db", dir);
    cr_assert(rename(good, p) == 0);
    cr_expect(store_snapshot_inspect(p, 1, &info, &err) == 0 && info.images == 100, "%s", err.msg);
    cr_assert(rename(p, good) == 0);

    snprintf(p, sizeof p, "%s/noise.db", dir);
    unsigned char noise[8192];
    fake_bytes(3, noise, sizeof noise);
    write_bytes(p, noise, sizeof noise);
    expect_refused(p, 1, "random bytes", "not a SQLite database");
    expect_refused(dir, 1, "a directory", "not a regular file");

    snprintf(p, sizeof p, "%s/other.db", dir);
    sql(p, "CREATE TABLE t(x); PRAGMA user_version = 2;");
    expect_refused(p, 1, "another program's database", "not a barlowd database");

    snprintf(p, sizeof p, "%s/newer.db", dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cp %s %s", good, p);
    cr_assert(system(cmd) == 0);
    sql(p, "PRAGMA user_version = 99;");
    expect_refused(p, 0, "a newer schema", "newer than this barlowd");

    /* damage in the middle of the file: a page of image bytes overwritten with a bad header */
    snprintf(p, sizeof p, "%s/damaged.db", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s", good, p);
    cr_assert(system(cmd) == 0);
    FILE *f = fopen(p, "r+b");
    cr_assert(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    for (long page = 4096; page + 4096 <= size; page += 4096 * 7) {
        fseek(f, page, SEEK_SET);
        fwrite("\x0d\xff\xff\xff\xff\xff\xff\xff", 1, 8, f); /* a leaf with nonsense counts */
    }
    fclose(f);
    expect_refused(p, 1, "a damaged file", "integrity check");
}

/* A process that opens the store, saves n images and dies without closing it: its WAL holds
 * them (the file alone does not). */
static void killed_writer(const char *p, uint64_t first, int n) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        store *s;
        store_err err = {0};
        if (store_open(p, NULL, &s, &err)) _exit(1);
        for (int i = 0; i < n; i++) {
            unsigned char bytes[IMG_BYTES];
            fake_bytes(first + (uint64_t)i, bytes, sizeof bytes);
            store_image_in in = {bytes, sizeof bytes, "image/png", 28, 28, NULL, 0, NULL};
            int64_t id;
            int existed;
            if (store_image_put(s, &in, &id, &existed, &err)) _exit(1);
        }
        _exit(0);
    }
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status));
}

static int64_t images_in(const char *p) {
    sqlite3 *db;
    cr_assert(sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert(sqlite3_prepare_v2(db, "SELECT count(*) FROM images", -1, &st, NULL) == SQLITE_OK,
              "%s: %s", p, sqlite3_errmsg(db));
    cr_assert(sqlite3_step(st) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

Test(snapshot, restore_keeps_the_old_database_with_its_wal_and_puts_the_snapshot_in_place) {
    /* the snapshot: 40 images of another database */
    char other[128], snap[128], p[160];
    snprintf(other, sizeof other, "%s/other.db", dir);
    snprintf(snap, sizeof snap, "%s/snap.db", dir);
    store *s = open_at(other);
    for (uint64_t i = 0; i < 40; i++) put_seed(s, 5000 + i);
    store_err err = {0};
    cr_assert(store_backup(other, snap, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    store_close(s);
    /* the database to replace: 25 images only in its WAL, as a server killed by -9 leaves it */
    killed_writer(path, 1, 25);
    snprintf(p, sizeof p, "%s-wal", path);
    struct stat sb;
    cr_assert(stat(p, &sb) == 0 && sb.st_size > 0, "no WAL to fold");

    store_snapshot_info info;
    cr_assert(store_restore(snap, path, &info, &err) == 0, "%s", err.msg);
    cr_expect_eq(info.images, 40);
    /* no stale WAL or index beside the new file; the old one alone holds its 25 images */
    const char *const sfx[] = {"-wal", "-shm", "-journal", ".restoring", ".before-restore-wal"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        cr_expect(!file_exists(p), "%s is left", p);
    }
    snprintf(p, sizeof p, "%s.before-restore", path);
    cr_expect_eq(images_in(p), 25, "the old database lost what its WAL held");
    s = open_at(path);
    cr_expect_eq(store_image_count(s), 40);
    sqlite3 *db;
    cr_assert(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    cr_expect(file_has_image(db, 40, 5039));
    sqlite3_close(db);
    store_close(s);

    /* a second restore never overwrites the first one's old database */
    cr_expect_eq(store_restore(snap, path, &info, &err), -1);
    cr_expect_eq(err.code, ERR_BAD_INPUT, "%s", err.msg);
    snprintf(p, sizeof p, "%s.before-restore", path);
    cr_expect_eq(images_in(p), 25);
    /* a bad snapshot is refused before anything moves */
    cr_expect(unlink(p) == 0);
    snprintf(p, sizeof p, "%s/noise.db", dir);
    write_bytes(p, "not a database at all, not even close", 37);
    cr_expect_eq(store_restore(p, path, &info, &err), -1);
    snprintf(p, sizeof p, "%s.before-restore", path);
    cr_expect(!file_exists(p));
    cr_expect_eq(images_in(path), 40);
}

Test(snapshot, a_claimed_database_is_never_replaced_and_claims_end_with_their_holder) {
    char snap[128];
    snprintf(snap, sizeof snap, "%s/snap.db", dir);
    store *s = open_at(path);
    for (uint64_t i = 0; i < 10; i++) put_seed(s, i);
    store_err err = {0};
    cr_assert(store_backup(path, snap, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    put_seed(s, 99);
    store_close(s);

    int fd, fd2;
    cr_assert(store_claim(path, &fd, &err) == 0, "%s", err.msg);
    cr_expect_eq(store_claim(path, &fd2, &err), 1, "two claims in one process");
    store_unclaim(fd);
    cr_assert(store_claim(path, &fd2, &err) == 0, "released, yet still claimed");
    store_unclaim(fd2);

    /* another process holds it (a server): restore changes nothing */
    int ready[2], done[2];
    cr_assert(pipe(ready) == 0 && pipe(done) == 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int f;
        if (store_claim(path, &f, NULL)) _exit(1);
        char c = 'r';
        if (write(ready[1], &c, 1) != 1) _exit(1);
        if (read(done[0], &c, 1) != 1) _exit(1); /* until the parent says so */
        _exit(0);
    }
    char c;
    cr_assert(read(ready[0], &c, 1) == 1);
    struct stat before, after;
    cr_assert(stat(path, &before) == 0);
    store_snapshot_info info;
    cr_expect_eq(store_restore(snap, path, &info, &err), 1);
    cr_assert(stat(path, &after) == 0);
    cr_expect(before.st_ino == after.st_ino, "the database was replaced under its holder");
    cr_expect_eq(images_in(path), 11);
    char p[160];
    snprintf(p, sizeof p, "%s.before-restore", path);
    cr_expect(!file_exists(p));
    /* the holder dies (as kill -9 would do it): the claim goes with it */
    cr_assert(kill(pid, SIGKILL) == 0);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    cr_expect_eq(store_restore(snap, path, &info, &err), 0, "%s", err.msg);
    cr_expect_eq(images_in(path), 10);
    cr_expect_eq(images_in(p), 11);
}

/* A snapshot of an older schema (the schema-1 file an older barlowd wrote, in WAL mode) is
 * accepted and migrated by the next open; the fixture itself is only read, nothing is made
 * beside it. */
Test(snapshot, an_older_schema_is_restored_and_migrated_at_the_next_open) {
    const char *fixture = BARLOWD_FIXTURES "/store_v1/barlowd_v1.db";
    struct stat before;
    cr_assert(stat(fixture, &before) == 0);
    store_snapshot_info info;
    store_err err = {0};
    cr_assert(store_restore(fixture, path, &info, &err) == 0, "%s", err.msg);
    cr_expect_eq(info.schema, 1);
    cr_expect_eq(info.images, 2);
    cr_expect_eq(info.serving_version, 0, "schema 1 records no serving version");
    store *s = open_at(path);
    cr_expect_eq(store_image_count(s), 2);
    store_close(s);
    cr_assert(store_snapshot_inspect(path, 1, &info, &err) == 0, "%s", err.msg);
    cr_expect_eq(info.schema, STORE_SCHEMA_VERSION);
    struct stat after;
    cr_assert(stat(fixture, &after) == 0);
    cr_expect(after.st_size == before.st_size && after.st_mtime == before.st_mtime,
              "the fixture was written");
    /* a WAL-mode file at rest is read without leaving a -wal or -shm beside it */
    cr_expect(access(BARLOWD_FIXTURES "/store_v1/barlowd_v1.db-wal", F_OK) != 0);
    cr_expect(access(BARLOWD_FIXTURES "/store_v1/barlowd_v1.db-shm", F_OK) != 0);
}
