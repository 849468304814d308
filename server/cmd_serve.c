/* cmd_serve.c — `barlowd serve`: the server process. Opens the store, builds (or resumes) the
 * trainer, brings the serving model and index up, starts HTTP and the workers, and on
 * SIGTERM/SIGINT stops accepting, lets requests finish (2 s at most), interrupts the running
 * training step, checkpoints the last completed one and closes the database before exiting 0,
 * within Docker's default 10 s grace with room to spare (SHUTDOWN_* below). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "eng_checkpoint.h"
#include "cli_util.h"
#include "commands.h"
#include "http_server.h"
#include "serve_opts.h"
#include "workers.h"

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path) {
    char dir[4096];
    if (strlen(path) >= sizeof dir) return -1;
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(dir, 0750) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(dir, 0750) && errno != EEXIST) return -1;
    return 0;
}

/* Seconds a shutdown gives requests in flight, then the trainer's thread (counted from the
 * signal), then a step's update when the trainer is starved: at most ~4 s before the exit. */
#define SHUTDOWN_DRAIN_S 2.0
#define SHUTDOWN_TRAINER_S 2.5

/* The database's directory (and the file, when it exists) must be writable by this process: in
 * a container, a bind mount owned by root is not, and SQLite would only say "unable to open
 * database file". Returns -1 with the reason and the fix printed. */
static int check_writable(const char *db) {
    char dir[4096];
    if (strlen(db) >= sizeof dir) return 0; /* store_open will say */
    strcpy(dir, db);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    const char *what = NULL;
    if (access(dir, W_OK | X_OK))
        what = dir;
    else if (access(db, F_OK) == 0 && access(db, R_OK | W_OK))
        what = db;
    if (!what) return 0;
    int e = errno;
    fprintf(stderr,
            "error: %s is not writable by uid %d (gid %d): %s. The database %s needs it. Make it "
            "writable by this user (for a Docker bind mount: chown -R %d:%d on the host "
            "directory), or use a named volume (docker run -v barlowd-data:/data ...).\n",
            what, (int)getuid(), (int)getgid(), strerror(e), db, (int)getuid(), (int)getgid());
    return -1;
}

/* Writes "HOST:PORT\n" to path atomically (a temporary file renamed over it). */
static int write_addr_file(const char *path, const char *host, int port) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int bad = fprintf(f, strchr(host, ':') ? "[%s]:%d\n" : "%s:%d\n", host, port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The model of an existing database (its newest version), else the --model flag's. *batch
 * becomes the checkpoint's training batch when there is one; that checkpoint's blob is left in
 * *blob (malloc'd, the caller frees; NULL for a new database) for the trainer to resume from. */
static int choose_model(store *st, const serve_opts *o, eng_config *cfg, int *batch, void **blob,
                        size_t *len) {
    store_checkpoint_info info;
    store_err se = {0};
    *blob = NULL;
    *len = 0;
    int r = store_checkpoint_latest(st, &info, blob, len, &se);
    if (r < 0) {
        fprintf(stderr, "error: %s\n", se.msg);
        return -1;
    }
    eng_err e = {0};
    if (r == 0) {
        eng_ckpt_meta meta;
        if (eng_checkpoint_peek(*blob, *len, cfg, &meta, &e)) {
            free(*blob);
            *blob = NULL;
            fprintf(stderr, "error: model version %lld: %s\n", (long long)info.version, e.msg);
            return -1;
        }
        if (meta.opt.batch != *batch)
            fprintf(stderr, "note: the database's model trains at batch %d; --batch %d ignored\n",
                    meta.opt.batch, *batch);
        *batch = meta.opt.batch;
        return 0;
    }
    if (eng_config_resolve(cfg, o->model, &e)) {
        fprintf(stderr, "error: --model: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    int pr = serve_opts_parse(&o, argc, argv);
    if (pr) return pr > 0 ? CLI_OK : CLI_BAD_INPUT;
    char host[256];
    int port;
    if (serve_parse_listen(o.listen, host, sizeof host, &port)) {
        fprintf(stderr, "error: --listen %s: expected HOST:PORT or [IPV6]:PORT\n", o.listen);
        return CLI_BAD_INPUT;
    }
    /* every thread started from here on inherits this mask: only sigwait below sees them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (make_parent_dirs(o.db)) {
        int e = errno;
        fprintf(stderr, "error: cannot create the directory of %s as uid %d: %s\n", o.db,
                (int)getuid(), strerror(e));
        return CLI_FAIL;
    }
    if (check_writable(o.db)) return CLI_FAIL;
    /* one server per database; `barlowd restore` claims it too while it replaces the file */
    int claim;
    store_err se = {0};
    int held = store_claim(o.db, &claim, &se);
    if (held) {
        if (held > 0)
            fprintf(stderr, "error: %s is in use: another barlowd serves it or restores it "
                            "(%s.lock is held)\n", o.db, o.db);
        else
            fprintf(stderr, "error: %s\n", se.msg);
        return CLI_FAIL;
    }
    store_opts so = store_defaults();
    so.synchronous_full = o.sync_full;
    so.keep_versions = (int)o.keep_versions;
    store *st;
    if (store_open(o.db, &so, &st, &se)) {
        fprintf(stderr, "error: %s: %s\n", o.db, se.msg);
        store_unclaim(claim);
        return CLI_FAIL;
    }
    int rc = CLI_FAIL, batch = (int)o.batch;
    eng_config cfg;
    train_worker tw;
    int tw_made = 0, svc_made = 0, api_made = 0, embed_made = 0;
    svc s;
    api a;
    http_server http;
    embed_workers ew;
    memset(&http, 0, sizeof http);
    void *newest = NULL;
    size_t newest_len = 0;
    if (choose_model(st, &o, &cfg, &batch, &newest, &newest_len)) goto done;
    if (o.train && o.train_ranks > batch) {
        fprintf(stderr, "error: --train-ranks %ld: a batch of %d cannot be shared by more ranks "
                        "than images\n", o.train_ranks, batch);
        free(newest);
        rc = CLI_BAD_INPUT;
        goto done;
    }

    uint8_t *initial = NULL;
    size_t initial_len = 0;
    char msg[512];
    tw_made = 1; /* the training model itself is built only while training runs (workers.h) */
    int tw_bad = train_worker_create(&tw, &cfg, batch, (uint64_t)o.seed, newest, newest_len,
                                     &initial, &initial_len, msg, sizeof msg);
    free(newest);
    if (tw_bad) {
        fprintf(stderr, "error: %s\n", msg);
        goto done;
    }
    tw.min_images = o.min_images;
    tw.publish_steps = o.publish_steps;
    tw.publish_seconds = (double)o.publish_seconds;
    tw.idle_steps = o.idle_steps;
    tw.release_after = (double)o.release_after;
    if (o.train_ranks >= 2) {
        train_job_opts jo = {(int)o.train_ranks, o.train_hosts, o.train_mpirun, o.train_mpi_args,
                             (double)o.train_retry, (double)o.train_timeout, NULL};
        train_worker_use_job(&tw, &jo);
    }
    svc_opts sv = svc_defaults();
    sv.max_pixels = o.max_pixels;
    sv.embed_batch = (int)o.embed_batch;
    sv.ann_threshold = o.ann_threshold;
    sv.gate = o.gate;
    sv.gate_tolerance = o.gate_tolerance;
    snprintf(sv.label_key, sizeof sv.label_key, "%s", o.label_key);
    sv.max_snapshots = (int)o.max_snapshots;
    svc_err err = {0};
    int bad = svc_open(&s, st, &sv, initial, initial_len, &err);
    free(initial);
    if (bad) {
        fprintf(stderr, "error: %s\n", err.msg);
        goto done;
    }
    svc_made = 1;
    svc_report_training(&s, o.train ? SVC_TRAIN_WAITING : SVC_TRAIN_STOPPED, &tw.held, NULL);
    api_opts ao = {o.api_key, o.api_key_reads, 1000};
    api_init(&a, &s, &ao);
    api_made = 1;
    http_limits lim = {(int)o.threads, (int)o.max_connections, (int)o.timeout,
                       (size_t)o.max_body, (int)o.max_parts, api_thread_init};
    if (http_start(&http, &a, host, port, &lim, msg, sizeof msg)) {
        fprintf(stderr, "error: %s\n", msg);
        goto done;
    }
    if (embed_workers_start(&ew, &s)) {
        fprintf(stderr, "error: cannot start the embedders\n");
        goto done;
    }
    embed_made = 1;
    if (o.train && train_worker_start(&tw, &s)) {
        fprintf(stderr, "error: cannot start the trainer\n");
        goto done;
    }
    if (o.addr_file && write_addr_file(o.addr_file, host, http.port)) {
        fprintf(stderr, "error: cannot write --addr-file %s: %s\n", o.addr_file, strerror(errno));
        goto done;
    }
    a.ready = 1;
    fprintf(stderr,
            "barlowd: listening on %s:%d; database %s; model version %lld serving (%lld images, "
            "%d-float vectors); training %s\n",
            host, http.port, o.db, (long long)svc_serving_version(&s),
            (long long)store_image_count(st), s.dim,
            o.train ? "on" : "off");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "barlowd: %s: finishing requests, interrupting the training step, saving a "
                    "checkpoint\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = CLI_OK;
done:;
    double stop_from = cli_now();
    if (tw_made) train_worker_signal_stop(&tw); /* the step gives up while requests drain */
    if (api_made) a.ready = 0;
    if (svc_made) svc_snapshot_cancel(&s); /* a snapshot being written gives up at once */
    http_stop(&http, SHUTDOWN_DRAIN_S);
    if (o.addr_file) unlink(o.addr_file);
    /* the embedders stop after their current batch; the final checkpoint below then starts no
     * re-embedding pass (the next start brings its version into service) */
    if (svc_made) svc_stop(&s);
    int abandoned = 0;
    if (tw_made) {
        double left = SHUTDOWN_TRAINER_S - (cli_now() - stop_from);
        abandoned = train_worker_stop(&tw, left > 0.2 ? left : 0.2);
    }
    if (embed_made) embed_workers_join(&ew);
    if (abandoned) {
        /* The trainer's thread is still inside a step (SCHED_IDLE, starved by other work): its
         * last completed step is published above, every acknowledged upload is committed, and
         * SQLite needs no close to keep them. Freeing what that thread still uses would be
         * unsafe, and so would exit()'s destructors: leave at once. */
        fprintf(stderr, "barlowd: the trainer's thread did not stop within %.1f s (starved of "
                        "CPU); its last completed step is saved; stopped after %.1f s\n",
                SHUTDOWN_TRAINER_S, cli_now() - stop_from);
        _exit(rc == CLI_OK ? 0 : 1);
    }
    if (tw_made) train_worker_free(&tw);
    if (api_made) api_free(&a);
    if (svc_made) svc_close(&s);
    store_close(st);
    store_unclaim(claim);
    if (rc == CLI_OK)
        fprintf(stderr, "barlowd: stopped cleanly in %.2f s\n", cli_now() - stop_from);
    return rc;
}
