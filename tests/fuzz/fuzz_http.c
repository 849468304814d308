/* fuzz_http.c — libFuzzer harness: raw bytes as an HTTP request to the real request path.
 *
 * LLVMFuzzerInitialize starts the server's own pieces in this process — a store in a temporary
 * directory, the service with a `tiny` model, the API and libmicrohttpd (server/http_server.c)
 * on a loopback port — so header handling, multipart through the post processor, JSON bodies,
 * query strings, ids, snapshot names and image uploads are all exercised, with the fuzzer's
 * coverage counters seeing our callbacks in the server threads. Each input is written to a new connection, the
 * write side is closed, and the first response is read (50 ms at most: an incomplete request
 * waits for bytes that never come and is left to the server's 1 s idle timeout). Built by
 * `bench/fuzz`.
 *
 * Limits: requests still running in the server when the next input starts can make libFuzzer
 * blame a crash on the wrong input (re-run a saved crasher alone to confirm it); no embedder
 * thread runs, so fresh uploads never get vectors here (POST /embed and searches still run
 * inference on the serving model). */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "api.h"
#include "svc.h"
#include "eng_checkpoint.h"
#include "eng_ctx.h"
#include "http_server.h"
#include "store.h"

static int port;       /* the in-process server's */
static char dir[] = "/tmp/barlowd-fuzz-http-XXXXXX";
static char db[64];

/* The temporary database and its snapshots go when the fuzzer exits normally (its time is up). */
static void remove_db(void) {
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[96];
        snprintf(p, sizeof p, "%s%s", db, suffix[i]);
        unlink(p);
    }
    char snaps[64];
    snprintf(snaps, sizeof snaps, "%s/snapshots", dir);
    DIR *d = opendir(snaps);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", snaps, e->d_name);
        if (e->d_name[0] != '.' || strlen(e->d_name) > 2) unlink(p);
    }
    if (d) closedir(d);
    rmdir(snaps);
    rmdir(dir);
}

static void die(const char *what, const char *msg) {
    fprintf(stderr, "fuzz_http: %s: %s\n", what, msg);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    /* These live until the process ends: the fuzzer never returns from its loop. */
    static store *st;
    static svc s;
    static api a;
    static http_server h;
    eng_set_threads(1);
    if (!mkdtemp(dir)) die("mkdtemp", "failed");
    snprintf(db, sizeof db, "%s/fuzz.db", dir);
    atexit(remove_db);
    store_opts so = store_defaults();
    so.synchronous_full = 0;
    store_err se = {0};
    if (store_open(db, &so, &st, &se)) die("store", se.msg);
    eng_err e = {0};
    eng_config cfg;
    eng_model m;
    if (eng_config_preset(&cfg, "tiny", &e) || eng_model_build(&m, &cfg, 2, 0, &e))
        die("model", e.msg);
    eng_model_init_params(&m, 1);
    eng_ckpt_meta meta = {.step = 0, .loss = NAN};
    uint8_t *blob;
    size_t len;
    if (eng_checkpoint_save(&m, &meta, &blob, &len, &e)) die("checkpoint", e.msg);
    eng_model_free(&m);
    svc_opts sv = svc_defaults();
    sv.max_pixels = 4000000;
    sv.embed_batch = 8;
    sv.max_snapshots = 4; /* POST /snapshots is in the corpus: a bounded number of files */
    svc_err err = {0};
    if (svc_open(&s, st, &sv, blob, len, &err)) die("svc", err.msg);
    free(blob);
    api_opts ao = {NULL, 0, 1000};
    api_init(&a, &s, &ao);
    a.ready = 1;
    /* libmicrohttpd keeps a half-closed connection until its idle timeout (1 s here) when the
     * request in it is incomplete; the harness does not wait for those, so many may linger:
     * room for them, in connections and in file descriptors */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    http_limits lim = {2, 4000, 1, 1 << 20, 64, api_thread_init};
    char msg[256];
    if (http_start(&h, &a, "127.0.0.1", 0, &lim, msg, sizeof msg)) die("http", msg);
    port = h.port;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* an answer comes at once or not at all (an incomplete request waits for more bytes) */
    struct timeval tv = {0, 50000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 0; /* connection table full for a moment: skip this input */
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0) break; /* the server may close early (e.g. a 413) */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    /* read the first response: its headers, then Content-Length bytes (libmicrohttpd may keep
     * a half-closed connection open until its idle timeout, so reading to EOF would wait) */
    static char buf[1 << 20];
    size_t have = 0, need = 0;
    for (ssize_t n; have < sizeof buf - 1 && (n = recv(fd, buf + have, sizeof buf - 1 - have, 0)) > 0;) {
        have += (size_t)n;
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        if (!need) {
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            need = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoull(cl + 17, NULL, 10) : 0);
        }
        if (have >= need) break;
    }
    close(fd);
    return 0;
}
