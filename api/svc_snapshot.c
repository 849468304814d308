/* svc_snapshot.c — snapshots of the whole database, in <the database's directory>/snapshots/.
 *
 * The server makes every name (snap-YYYYMMDDTHHMMSSZ-N.db, UTC, N the first free number in that
 * second) and accepts no other: a client's name is checked character by character against that
 * form before it is joined to the directory, so nothing a client sends becomes a path of its own.
 * One snapshot is written at a time (a second request is told so at once); the copy is the
 * store's (store_backup: VACUUM INTO, one read transaction, renamed into place when complete), so
 * uploads and training go on while it runs and no partial file ever has a snapshot's name. */
#define _DEFAULT_SOURCE /* timegm */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "svc_internal.h"

#define PREFIX "snap-"
#define PREFIX_LEN 5
#define STAMP_LEN 16 /* 20261201T120000Z */
#define SEQ_MAX_DIGITS 9

/* The parts of a valid name: its time and its number. 1 when name[0..len) is one the server
 * makes, else 0. */
static int parse_name(const char *name, size_t len, double *created, long *seq) {
    /* "snap-" 8 digits "T" 6 digits "Z-" 1..9 digits (no leading zero) ".db" */
    if (len < PREFIX_LEN + STAMP_LEN + 1 + 1 + 3 || len >= SVC_SNAPSHOT_NAME_MAX) return 0;
    if (memcmp(name, PREFIX, PREFIX_LEN) || memcmp(name + len - 3, ".db", 3)) return 0;
    const char *t = name + PREFIX_LEN;
    for (int i = 0; i < STAMP_LEN; i++) {
        int want_digit = i != 8 && i != 15;
        if (want_digit ? (t[i] < '0' || t[i] > '9') : t[i] != (i == 8 ? 'T' : 'Z')) return 0;
    }
    if (t[STAMP_LEN] != '-') return 0;
    const char *n = t + STAMP_LEN + 1;
    size_t digits = (size_t)(name + len - 3 - n);
    if (digits < 1 || digits > SEQ_MAX_DIGITS || n[0] == '0') return 0;
    long v = 0;
    for (size_t i = 0; i < digits; i++) {
        if (n[i] < '0' || n[i] > '9') return 0;
        v = v * 10 + (n[i] - '0');
    }
    /* the time: fields of the stamp (digits checked above), UTC */
    struct tm tm = {0};
    int f[6], off[6] = {0, 4, 6, 9, 11, 13}, cnt[6] = {4, 2, 2, 2, 2, 2};
    for (int k = 0; k < 6; k++) {
        f[k] = 0;
        for (int i = 0; i < cnt[k]; i++) f[k] = f[k] * 10 + (t[off[k] + i] - '0');
    }
    if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 60)
        return 0;
    tm.tm_year = f[0] - 1900;
    tm.tm_mon = f[1] - 1;
    tm.tm_mday = f[2];
    tm.tm_hour = f[3];
    tm.tm_min = f[4];
    tm.tm_sec = f[5];
    if (created) *created = (double)timegm(&tm);
    if (seq) *seq = v;
    return 1;
}

int svc_snapshot_name_ok(const char *name, size_t len) {
    return name && parse_name(name, len, NULL, NULL);
}

/* dir/name into out; -1 when it does not fit. */
static int join(const char *dir, const char *name, char *out, size_t n) {
    int len = snprintf(out, n, "%s/%s", dir, name);
    return len > 0 && (size_t)len < n ? 0 : -1;
}

void svc_snapshot_setup(svc *s) {
    atomic_init(&s->snap_busy, 0);
    atomic_init(&s->snap_cancel, 0);
    s->snap_dir = NULL;
    const char *db = store_path(s->st);
    if (!db || !db[0] || db[0] == ':') return; /* in memory or temporary: no snapshots */
    const char *slash = strrchr(db, '/');
    /* "--db b.db" lives in the working directory: its snapshots in ./snapshots */
    int dlen = slash ? (int)(slash - db) : 1;
    const char *dir = slash ? db : ".";
    size_t n = (size_t)dlen + sizeof "/snapshots";
    s->snap_dir = malloc(n);
    if (!s->snap_dir) return; /* then snapshots answer "unavailable" */
    snprintf(s->snap_dir, n, "%.*s/snapshots", dlen, dir);
    /* partial copies left by a process that died while writing one (store_backup names them
     * .NAME.partial): one server per database, and this one writes none yet */
    DIR *d = opendir(s->snap_dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        char path[4200];
        if (len > 9 && e->d_name[0] == '.' && !strcmp(e->d_name + len - 8, ".partial") &&
            svc_snapshot_name_ok(e->d_name + 1, len - 9) &&
            !join(s->snap_dir, e->d_name, path, sizeof path))
            unlink(path);
    }
    closedir(d);
}

void svc_snapshot_teardown(svc *s) {
    free(s->snap_dir);
    s->snap_dir = NULL;
}

void svc_snapshot_cancel(svc *s) { atomic_store(&s->snap_cancel, 1); }

/* store_backup's cancel: a shutdown abandons the copy. */
static int cancelled(void *ctx) {
    svc *s = ctx;
    return atomic_load(&s->snap_cancel) || atomic_load(&s->stopping);
}

static int by_newest(const void *a, const void *b) {
    const svc_snapshot *x = a, *y = b;
    if (x->created != y->created) return x->created < y->created ? 1 : -1;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

int svc_snapshot_list(svc *s, svc_snapshot **out, int *n, svc_err *err) {
    *out = NULL;
    *n = 0;
    if (!s->snap_dir) return svc_fail(err, ERR_UNAVAILABLE, "snapshots need a database file");
    DIR *d = opendir(s->snap_dir);
    if (!d) {
        if (errno == ENOENT) return 0; /* none made yet */
        return svc_fail(err, ERR_INTERNAL, "cannot read the snapshot directory: %s",
                        strerror(errno));
    }
    int cap = 0, rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        double created;
        long seq;
        size_t len = strlen(e->d_name);
        if (!parse_name(e->d_name, len, &created, &seq)) continue; /* len < the name's size */
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            svc_snapshot *p = realloc(*out, (size_t)cap * sizeof *p);
            if (!p) {
                rc = svc_fail(err, ERR_NO_MEMORY, "out of memory listing snapshots");
                break;
            }
            *out = p;
        }
        svc_snapshot *sn = &(*out)[*n];
        memset(sn, 0, sizeof *sn);
        memcpy(sn->name, e->d_name, len + 1);
        sn->created = created;
        sn->seq = seq;
        char path[4200];
        store_snapshot_info info;
        store_err se = {0};
        struct stat sb; /* only regular files: a link with a snapshot's name is not followed */
        if (join(s->snap_dir, sn->name, path, sizeof path) || lstat(path, &sb) ||
            !S_ISREG(sb.st_mode))
            continue;
        sn->bytes = (int64_t)sb.st_size;
        sn->images = sn->serving_version = -1; /* a damaged file: listed with what is known */
        if (store_snapshot_inspect(path, 0, &info, &se) == 0) {
            sn->bytes = info.bytes;
            sn->images = info.images;
            sn->serving_version = info.serving_version;
        }
        (*n)++;
    }
    closedir(d);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1) qsort(*out, (size_t)*n, sizeof **out, by_newest);
    return 0;
}

int svc_snapshot_create(svc *s, svc_snapshot *out, svc_err *err) {
    memset(out, 0, sizeof *out);
    if (!s->snap_dir) return svc_fail(err, ERR_UNAVAILABLE, "snapshots need a database file");
    int idle = 0;
    if (!atomic_compare_exchange_strong(&s->snap_busy, &idle, 1)) return 1;
    int rc = -1;
    if (cancelled(s)) {
        svc_fail(err, ERR_UNAVAILABLE, "the server is stopping");
        goto done;
    }
    if (mkdir(s->snap_dir, 0750) && errno != EEXIST) {
        int e = errno;
        svc_fail(err, e == ENOSPC || e == EDQUOT ? ERR_DISK_FULL : ERR_INTERNAL,
                 "cannot make the snapshot directory: %s", strerror(e));
        if (e == ENOSPC || e == EDQUOT) atomic_fetch_add(&s->disk_full_errors, 1);
        goto done;
    }
    svc_snapshot *list;
    int n;
    if (svc_snapshot_list(s, &list, &n, err)) goto done;
    free(list);
    if (n >= s->opts.max_snapshots) {
        rc = 2;
        goto done;
    }
    time_t now = time(NULL);
    struct tm tm;
    char stamp[STAMP_LEN + 1], path[4200];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int seq = 1;; seq++) { /* the first free number in this second (1 but for races) */
        int len = snprintf(out->name, sizeof out->name, PREFIX "%.16s-%d.db", stamp, seq);
        if (len < 0 || (size_t)len >= sizeof out->name || seq > 999999999 ||
            join(s->snap_dir, out->name, path, sizeof path)) {
            svc_fail(err, ERR_INTERNAL, "no snapshot name is free");
            goto done;
        }
        struct stat sb;
        if (lstat(path, &sb)) break;
    }
    parse_name(out->name, strlen(out->name), &out->created, &out->seq);
    store_snapshot_info info;
    store_err se = {0};
    if (store_backup(store_path(s->st), path, cancelled, s, &info, &se)) {
        if (se.code == ERR_DISK_FULL) atomic_fetch_add(&s->disk_full_errors, 1);
        svc_fail(err, svc_code_of(&se), "snapshot: %s", se.msg);
        goto done;
    }
    out->bytes = info.bytes;
    out->images = info.images;
    out->serving_version = info.serving_version;
    rc = 0;
done:
    atomic_store(&s->snap_busy, 0);
    return rc;
}

int svc_snapshot_open(svc *s, const char *name, int *fd, int64_t *bytes, svc_err *err) {
    *fd = -1;
    if (!svc_snapshot_name_ok(name, strlen(name))) return 1;
    if (!s->snap_dir) return svc_fail(err, ERR_UNAVAILABLE, "snapshots need a database file");
    char path[4200];
    if (join(s->snap_dir, name, path, sizeof path)) return 1;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
        if (errno == ENOENT || errno == ELOOP) return 1;
        return svc_fail(err, ERR_INTERNAL, "cannot open snapshot %s: %s", name, strerror(errno));
    }
    struct stat sb;
    if (fstat(f, &sb) || !S_ISREG(sb.st_mode)) {
        close(f);
        return 1;
    }
    *fd = f;
    *bytes = (int64_t)sb.st_size;
    return 0;
}

int svc_snapshot_delete(svc *s, const char *name, svc_err *err) {
    if (!svc_snapshot_name_ok(name, strlen(name))) return 1;
    if (!s->snap_dir) return svc_fail(err, ERR_UNAVAILABLE, "snapshots need a database file");
    char path[4200];
    if (join(s->snap_dir, name, path, sizeof path)) return 1;
    struct stat sb;
    if (lstat(path, &sb) || !S_ISREG(sb.st_mode)) return 1;
    if (unlink(path)) {
        if (errno == ENOENT) return 1;
        return svc_fail(err, ERR_INTERNAL, "cannot delete snapshot %s: %s", name,
                        strerror(errno));
    }
    return 0;
}
