/* train_job.c — starting, driving and ending the mpirun job that trains for the server. */
#define _GNU_SOURCE /* pipe2-free posix_spawn, mkdtemp */
#include "train_job.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"

extern char **environ;

#define MAX_ARGS 64

/* 1 when mpirun has ended (reaped here), the reply is overdue, or the server has been stopping
 * for more than 5 s. */
static int give_up(void *ctx) {
    train_job *j = ctx;
    if (j->pid > 0) {
        int status;
        pid_t r = waitpid(j->pid, &status, WNOHANG);
        if (r == j->pid) {
            j->exit_status = status;
            j->pid = 0;
        }
    }
    if (j->pid <= 0) return 1;
    if (j->deadline > 0 && cli_now() > j->deadline) return 1;
    if (j->stop && atomic_load(j->stop)) {
        if (!j->stop_seen) j->stop_seen = cli_now();
        if (cli_now() - j->stop_seen > 5.0) return 1;
    }
    return 0;
}

/* How long a request may wait for its reply. */
static double reply_budget(const train_job *j, uint32_t type) {
    double least = j->timeout_s > 0 ? j->timeout_s : 300.0;
    if (type != WIRE_STEP) least *= 2; /* START and RESUME build or load; SAVE serialises */
    double s = 20.0 * j->step_s;
    return s > least ? s : least;
}

void train_job_why(const train_job *j, char *msg, size_t n) {
    int s = j->exit_status;
    if (j->pid > 0) snprintf(msg, n, "the job's rank 0 stopped answering");
    else if (WIFEXITED(s)) snprintf(msg, n, "mpirun exited with status %d", WEXITSTATUS(s));
    else if (WIFSIGNALED(s)) snprintf(msg, n, "mpirun ended by signal %d", WTERMSIG(s));
    else snprintf(msg, n, "the job ended");
}

/* A request and its reply; the reply's type must be `want` (ERR carries the job's text). */
static int call(train_job *j, uint32_t type, const void *p, size_t len, uint32_t want,
                uint8_t **out, size_t *out_len, char *msg, size_t n) {
    *out = NULL;
    *out_len = 0;
    if (j->fd < 0) {
        snprintf(msg, n, "no training job runs");
        return -1;
    }
    char why[256];
    uint32_t got;
    if (j->pending) { /* the reply given up on (the server was stopping) comes first */
        j->deadline = cli_now() + reply_budget(j, WIRE_STEP);
        uint8_t *old = NULL;
        size_t old_len;
        int bad = wire_recv(j->fd, &got, &old, &old_len, give_up, j, why, sizeof why);
        free(old);
        if (bad) {
            snprintf(msg, n, "the training job's last step did not finish (%s)", why);
            return -1;
        }
        j->pending = 0;
    }
    if (wire_send(j->fd, type, p, len, NULL, 0)) {
        train_job_why(j, why, sizeof why);
        snprintf(msg, n, "the training job is gone (%s)", why);
        return -1;
    }
    double t0 = cli_now();
    j->deadline = t0 + reply_budget(j, type);
    j->pending = 1;
    if (wire_recv(j->fd, &got, out, out_len, give_up, j, why, sizeof why)) {
        char end[128];
        int overdue = j->pid > 0 && cli_now() > j->deadline;
        give_up(j);
        train_job_why(j, end, sizeof end);
        if (overdue)
            snprintf(msg, n, "the training job did not answer within %.0f s (a rank hangs?)",
                     reply_budget(j, type));
        else
            snprintf(msg, n, "the training job ended: %s (%s)", end, why);
        return -1;
    }
    j->pending = 0;
    if (type == WIRE_STEP) j->step_s = cli_now() - t0;
    if (got == WIRE_ERR) {
        snprintf(msg, n, "the training job failed: %.*s", (int)(*out_len < 400 ? *out_len : 400),
                 (const char *)*out);
        free(*out);
        *out = NULL;
        return -1;
    }
    if (got != want) {
        snprintf(msg, n, "the training job answered %u to %u", got, type);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int call_ok(train_job *j, uint32_t type, const void *p, size_t len, char *msg, size_t n) {
    uint8_t *out;
    size_t out_len;
    if (call(j, type, p, len, WIRE_OK, &out, &out_len, msg, n)) return -1;
    int64_t step = 0;
    if (out_len == sizeof step) memcpy(&step, out, sizeof step);
    free(out);
    memset(&j->stats, 0, sizeof j->stats);
    j->stats.step = (long)step;
    return 0;
}

/* mpirun's argv in args (pointing into buf, which holds the split extra arguments). */
static int build_argv(const train_job_opts *o, const char *self, const char *sock, char *np,
                      char *buf, size_t buflen, char **args) {
    int k = 0;
    args[k++] = (char *)(o->mpirun ? o->mpirun : "mpirun");
    if (o->hosts && o->hosts[0]) {
        args[k++] = "--host";
        args[k++] = (char *)o->hosts;
    } else {
        args[k++] = "--oversubscribe"; /* R ranks on this machine, whatever its cores */
    }
    args[k++] = "-np";
    args[k++] = np;
    if (o->args && o->args[0]) {
        snprintf(buf, buflen, "%s", o->args);
        for (char *t = strtok(buf, " "); t && k < MAX_ARGS - 6; t = strtok(NULL, " ")) args[k++] = t;
    }
    args[k++] = (char *)self;
    args[k++] = "train-rank";
    args[k++] = "--feed";
    args[k++] = (char *)sock;
    args[k] = NULL;
    return k;
}

int train_job_start(train_job *j, const train_job_opts *o, const void *blob, size_t len,
                    const atomic_int *stop, char *msg, size_t n) {
    memset(j, 0, sizeof *j);
    j->fd = -1;
    j->stop = stop;
    j->timeout_s = o->timeout_s;
    int lfd = -1;
    char self[4096];
    if (o->program) {
        snprintf(self, sizeof self, "%s", o->program);
    } else {
        ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
        if (sl <= 0) {
            snprintf(msg, n, "cannot find this program (/proc/self/exe)");
            return -1;
        }
        self[sl] = 0;
    }
    snprintf(j->dir, sizeof j->dir, "/tmp/barlowd-job.XXXXXX");
    if (!mkdtemp(j->dir)) {
        snprintf(msg, n, "cannot make the job's socket directory: %s", strerror(errno));
        j->dir[0] = 0;
        return -1;
    }
    snprintf(j->sock, sizeof j->sock, "%.80s/feed", j->dir);
    struct sockaddr_un a = {0};
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", j->sock);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1)) {
        snprintf(msg, n, "cannot listen on %s: %s", j->sock, strerror(errno));
        goto fail;
    }
    char np[16], buf[1024], *args[MAX_ARGS];
    snprintf(np, sizeof np, "%d", o->ranks);
    build_argv(o, self, j->sock, np, buf, sizeof buf, args);
    int rc = posix_spawnp(&j->pid, args[0], NULL, NULL, args, environ);
    if (rc) {
        j->pid = 0;
        snprintf(msg, n, "cannot start %s: %s", args[0], strerror(rc));
        goto fail;
    }
    /* rank 0 connects once every rank is up */
    double until = cli_now() + 60.0;
    while (j->fd < 0) {
        struct pollfd pf = {lfd, POLLIN, 0};
        int r = poll(&pf, 1, 500);
        if (r > 0) {
            j->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (j->fd >= 0) break;
        }
        if (give_up(j) || cli_now() > until) {
            char why[128];
            train_job_why(j, why, sizeof why);
            snprintf(msg, n, "the training job did not start (%s)",
                     j->pid > 0 ? "rank 0 did not connect within 60 s" : why);
            goto fail;
        }
    }
    close(lfd);
    lfd = -1;
    j->last = calloc(1, sizeof *j->last);
    if (!j->last) {
        snprintf(msg, n, "out of memory");
        goto fail;
    }
    if (call_ok(j, WIRE_START, blob, len, msg, n)) goto fail;
    return 0;
fail:
    if (lfd >= 0) close(lfd);
    train_job_end(j);
    return -1;
}

int train_job_batches_wanted(const train_job *j) { return j->ahead ? 1 : 2; }

int train_job_step(train_job *j, const eng_image *imgs, int n, char *msg, size_t msglen) {
    size_t len;
    uint8_t *p = wire_pack_images(imgs, n, &len), *out = NULL;
    if (!p) {
        snprintf(msg, msglen, "out of memory for a batch");
        return -1;
    }
    size_t out_len;
    int bad = call(j, WIRE_STEP, p, len, WIRE_STATS, &out, &out_len, msg, msglen);
    free(p);
    if (bad) return -1;
    if (out_len != sizeof *j->last) {
        free(out);
        snprintf(msg, msglen, "the training job sent statistics of %zu bytes", out_len);
        return -1;
    }
    memcpy(j->last, out, sizeof *j->last);
    free(out);
    j->ahead = j->last->queued > 0;
    const wire_stats *s = j->last;
    j->stats.step = (long)s->step;
    j->stats.loss = s->loss;
    j->stats.lr = s->lr;
    j->stats.images_per_s = s->images_per_s;
    j->stats.diag_mean = s->diag_mean;
    j->stats.offdiag_abs_mean = s->offdiag_abs_mean;
    return 0;
}

int train_job_save(train_job *j, uint8_t **blob, size_t *len, char *msg, size_t msglen) {
    return call(j, WIRE_SAVE, NULL, 0, WIRE_BLOB, blob, len, msg, msglen);
}

int train_job_resume(train_job *j, const void *blob, size_t len, char *msg, size_t msglen) {
    j->ahead = 0; /* the job drops the batches it held */
    return call_ok(j, WIRE_RESUME, blob, len, msg, msglen);
}

int train_job_reseed(train_job *j, uint64_t seed, char *msg, size_t msglen) {
    j->ahead = 0;
    return call_ok(j, WIRE_RESEED, &seed, sizeof seed, msg, msglen); /* OK carries the step */
}

/* Waits up to s seconds for mpirun to end; 1 when it has. */
static int reaped_within(train_job *j, double s) {
    double until = cli_now() + s;
    while (j->pid > 0) {
        int status;
        pid_t r = waitpid(j->pid, &status, WNOHANG);
        if (r == j->pid || (r < 0 && errno == ECHILD)) {
            j->exit_status = status;
            j->pid = 0;
            break;
        }
        if (cli_now() > until) return 0;
        struct timespec pause = {0, 50 * 1000000L};
        nanosleep(&pause, NULL);
    }
    return 1;
}

void train_job_end(train_job *j) {
    if (j->fd >= 0) {
        wire_send(j->fd, WIRE_QUIT, NULL, 0, NULL, 0);
        close(j->fd);
        j->fd = -1;
    }
    int hurry = j->stop && atomic_load(j->stop); /* inside docker stop's grace */
    if (j->pid > 0 && !reaped_within(j, hurry ? 1.0 : 10.0)) {
        kill(j->pid, SIGTERM); /* mpirun passes it to every rank */
        if (!reaped_within(j, hurry ? 1.0 : 5.0)) {
            kill(j->pid, SIGKILL);
            reaped_within(j, 5.0);
        }
    }
    if (j->sock[0]) unlink(j->sock);
    if (j->dir[0]) rmdir(j->dir);
    j->sock[0] = j->dir[0] = 0;
    free(j->last);
    j->last = NULL;
}
