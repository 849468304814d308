/* test_dist_server.c — `barlowd serve --train-ranks 2`: the server trains through an MPI job of
 * two `barlowd train-rank` processes (mpirun --oversubscribe on this machine), keeps serving
 * when a rank dies or hangs (/status says "ranks_lost" and why), and trains again from the newest
 * stored version once a new job is up; SIGTERM still ends everything cleanly. */
#define _DEFAULT_SOURCE /* usleep */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server_util.h"
#include "test_util.h"

TestSuite(dist_server, .init = make_dir, .fini = remove_dir, .timeout = 600);

/* The training state, step and ranks of /status. */
static const char *training(const server *s, long *step, long *ranks, char *error, size_t n) {
    static char state[32];
    json_t *j = get_json(s, "/status");
    json_t *t = json_object_get(j, "training");
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(t, "state")));
    *step = (long)json_integer_value(json_object_get(t, "step"));
    *ranks = (long)json_integer_value(json_object_get(t, "ranks"));
    const char *e = json_string_value(json_object_get(t, "error"));
    snprintf(error, n, "%s", e ? e : "");
    json_decref(j);
    return state;
}

/* Waits (at most `seconds`) for /status to show `want` with step >= min_step. */
static long wait_state(const server *s, const char *want, long min_step, double seconds,
                       char *error, size_t n) {
    double until = now_s() + seconds;
    long step = 0, ranks = 0;
    const char *st = "";
    while (now_s() < until) {
        st = training(s, &step, &ranks, error, n);
        if (!strcmp(st, want) && step >= min_step) return step;
        usleep(200000);
    }
    cr_assert_fail("training stayed %s at step %ld (wanted %s from step %ld; error: %s)", st, step,
                   want, min_step, error);
    return -1;
}

/* A process's state letter and parent from /proc/PID/stat; 0 when it is gone. */
static int proc_stat(pid_t pid, char *state, pid_t *parent) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    const char *end = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    int ppid = 0;
    if (!end || sscanf(end + 1, " %c %d", state, &ppid) != 2) return 0;
    *parent = (pid_t)ppid;
    return 1;
}

static pid_t parent_of(pid_t pid) {
    char state;
    pid_t parent;
    return proc_stat(pid, &state, &parent) ? parent : 0;
}

/* 1 while pid runs (a zombie that no one reaped yet has ended). */
static int alive(pid_t pid) {
    char state;
    pid_t parent;
    return proc_stat(pid, &state, &parent) && state != 'Z' && state != 'X';
}

/* 1 when pid descends from ancestor (another suite's jobs on this machine are not ours). */
static int descends_from(pid_t pid, pid_t ancestor) {
    for (int depth = 0; pid > 1 && depth < 64; depth++) {
        if (pid == ancestor) return 1;
        pid = parent_of(pid);
    }
    return 0;
}

static pid_t server_pid; /* the server under test: ranks are its descendants */

/* The pid of the server's job process of MPI rank `rank` (its environment says so), or 0. */
static pid_t rank_pid(int rank) {
    char want[48];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (d && (e = readdir(d)) && !found) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], buf[65536];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        int is_rank = 0;
        for (size_t i = 0; i < k; i += strlen(buf + i) + 1)
            if (!strcmp(buf + i, "train-rank")) is_rank = 1;
        if (!is_rank) continue;
        snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
        f = fopen(path, "rb");
        if (!f) continue;
        k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        for (size_t i = 0; i < k; i += strlen(buf + i) + 1)
            if (!strcmp(buf + i, want) && descends_from((pid_t)atoi(e->d_name), server_pid))
                found = (pid_t)atoi(e->d_name);
    }
    if (d) closedir(d);
    return found;
}

Test(dist_server, trains_over_two_ranks_survives_a_dead_rank_and_resumes) {
    /* Open MPI as root (CI) needs consent; the ranks' LeakSanitizer is off (Open MPI's own
     * leaks at MPI_Finalize, tests/CMakeLists.txt) while the server keeps its own */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const char *extra[] = {"--train-ranks", "2", "--train-retry", "2", "--train-timeout", "3",
                           "--batch", "8",
                           "--min-images", "16", "--publish-every", "10", "--gate", "no",
                           "--train-mpi-args",
                           "-x ASAN_OPTIONS=detect_leaks=0 -x OMP_NUM_THREADS=1", NULL};
    server s = start(extra);
    server_pid = s.pid;
    int64_t ids[24];
    for (unsigned i = 0; i < 24; i++) ids[i] = upload(&s, 100 + i, NULL);
    char error[512];
    wait_state(&s, "training", 30, 120, error, sizeof error);
    long step, ranks;
    training(&s, &step, &ranks, error, sizeof error);
    cr_expect_eq(ranks, 2, "/status says %ld ranks train", ranks);
    pid_t r0 = rank_pid(0), r1 = rank_pid(1);
    cr_assert(r0 > 0 && r1 > 0, "ranks 0 and 1 of the job (pids %d, %d)", r0, r1);

    cr_assert(kill(r1, SIGKILL) == 0);
    long lost_at = wait_state(&s, "ranks_lost", 0, 30, error, sizeof error);
    cr_expect(strstr(error, "training job ended") != NULL, "/status error: %s", error);
    /* still serving: a vector, a new upload and its vector */
    reply r = wait_vector(&s, ids[3]);
    cr_expect_eq(r.status, 200);
    reply_free(&r);
    int64_t fresh = upload(&s, 900, NULL);
    r = wait_vector(&s, fresh);
    cr_expect_eq(r.status, 200, "an upload after the rank died has no vector");
    reply_free(&r);
    usleep(300000);
    cr_expect(rank_pid(0) == 0 || rank_pid(0) != r0, "rank 0 of the dead job is still running");

    /* a new job (after --train-retry 2 s) trains on from the newest stored version */
    json_t *st = get_json(&s, "/status");
    long published = (long)json_integer_value(
        json_object_get(json_object_get(st, "training"), "last_published_version"));
    json_decref(st);
    long again = wait_state(&s, "training", 1, 60, error, sizeof error);
    cr_expect(again > 0, "training did not resume (step %ld, lost at %ld)", again, lost_at);
    pid_t n0 = rank_pid(0), n1 = rank_pid(1);
    cr_expect(n1 > 0 && n1 != r1, "no new rank 1 (pid %d; the dead one was %d)", n1, r1);
    cr_expect(n0 > 0 && n0 != r0, "no new rank 0 (pid %d)", n0);
    json_t *ck = get_json(&s, "/status");
    long v = (long)json_integer_value(
        json_object_get(json_object_get(ck, "models"), "serving_version"));
    cr_expect(v >= published, "serving version %ld went back from %ld", v, published);
    json_decref(ck);

    /* a hung rank (stopped, its sockets open): no answer within --train-timeout 3 s ends the
     * job as a dead one does */
    cr_assert(kill(n1, SIGSTOP) == 0);
    wait_state(&s, "ranks_lost", 0, 40, error, sizeof error);
    cr_expect(strstr(error, "did not answer within 3 s") != NULL, "/status error: %s", error);
    kill(n1, SIGKILL); /* mpirun's SIGTERM waits in a stopped process */
    kill(n1, SIGCONT);
    long third = wait_state(&s, "training", 1, 60, error, sizeof error);
    cr_expect(third > 0 && rank_pid(1) != n1, "no new job after the hung one");
    pid_t left[2] = {rank_pid(0), rank_pid(1)};
    stop(&s); /* exit status 0: the job is ended and the last step published */
    for (int k = 0; k < 2; k++) {
        for (int tries = 0; tries < 50 && left[k] > 0 && alive(left[k]); tries++) usleep(100000);
        cr_expect(left[k] <= 0 || !alive(left[k]), "rank %d (pid %d) outlived the server by 5 s",
                  k, left[k]);
    }
}

Test(dist_server, more_ranks_than_images_in_a_batch_is_refused_at_start) {
    char db[160], msg[2048];
    snprintf(db, sizeof db, "%s/refused.db", dir);
    char *argv[] = {BARLOWD_BIN, "serve", "--listen", "127.0.0.1:0", "--db", db, "--model", "tiny",
                    "--batch", "4", "--train-ranks", "8", NULL};
    cr_expect_eq(tu_run(argv, msg, sizeof msg), 2, "stderr: %s", msg);
    cr_expect(strstr(msg, "cannot be shared by more ranks than images") != NULL, "stderr: %s", msg);
}
