/* store_lock.c — one process's claim on a database path: an exclusive flock on PATH.lock.
 *
 * SQLite's own locks say nothing useful about "a server runs on this file" (in WAL mode any
 * reader holds the same locks a server does, and only while it reads), so the server claims the
 * path for as long as it runs, and `barlowd restore` claims it while it replaces the file. The
 * lock file is separate from the database because restore renames the database away: a lock on
 * the old inode would guard nothing. The kernel drops an flock when its holder exits, even by
 * kill -9, so a claim can never be left stale; the file itself stays (removing a lock file races
 * with the next claimant). */
#define _DEFAULT_SOURCE /* flock */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "store_internal.h"

int store_claim(const char *db_path, int *fd, store_err *err) {
    assert(db_path && fd);
    *fd = -1;
    char path[4200];
    if (snprintf(path, sizeof path, "%s.lock", db_path) >= (int)sizeof path)
        return store_fail(err, "store: the database path is too long");
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (f < 0) return store_fail(err, "store: cannot open the lock file %s: %s", path,
                                 strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB)) {
        int e = errno;
        close(f);
        if (e == EWOULDBLOCK) return 1;
        return store_fail(err, "store: cannot lock %s: %s", path, strerror(e));
    }
    *fd = f;
    return 0;
}

void store_unclaim(int fd) {
    if (fd >= 0) close(fd); /* closing the only descriptor drops the flock */
}
