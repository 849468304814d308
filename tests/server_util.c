/* server_util.c — helpers for the tests that drive the real `barlowd serve` over HTTP
 * (test_server, test_hostile, test_crash, ...): a temporary directory, starting and stopping
 * the server, requests through the tests' client or as raw bytes (every response validated
 * against api/openapi.yaml), error checks, test images. */
#define _GNU_SOURCE /* usleep, strcasestr */
#include "server_util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char dir[64];

/* The servers start() made that stop() has not reaped: a test that failed an assert between
 * the two leaves its server running (holding ctest's output pipe), so remove_dir kills them. */
static pid_t running[16];

void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/barlowd-srv-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
}

void remove_dir(void) {
    for (int i = 0; i < (int)(sizeof running / sizeof *running); i++) {
        /* only a child not yet reaped (a test may have killed and reaped it itself): its pid
         * cannot have been reused */
        if (running[i] > 0 && waitpid(running[i], NULL, WNOHANG) == 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
        }
        running[i] = 0;
    }
    char cmd[200];
    /* a test that mounted a file system on data/ and failed before unmounting it */
    snprintf(cmd, sizeof cmd, "umount %s/data >/dev/null 2>&1", dir);
    if (system(cmd)) { /* nothing mounted: the usual case */
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(system(cmd) == 0);
}



double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts barlowd serve (port 0: the kernel picks) with extra flags; waits for its "listening"
 * line to learn the port. */
server start(const char *const *extra) {
    server s = {0};
    static int n_started;
    snprintf(s.log, sizeof s.log, "%s/serve%d.log", dir, n_started++);
    char db[128];
    snprintf(db, sizeof db, "%s/data/barlowd.db", dir);
    const char *argv[48] = {BARLOWD_BIN, "serve", "--listen", "127.0.0.1:0", "--db", db,
                            "--model", "tiny", "--threads", "4"};
    int n = 10;
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    s.pid = fork();
    cr_assert(s.pid >= 0);
    if (s.pid == 0) {
        FILE *f = freopen(s.log, "w", stderr);
        (void)f;
        execv(BARLOWD_BIN, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < (int)(sizeof running / sizeof *running); i++)
        if (running[i] <= 0) {
            running[i] = s.pid;
            break;
        }
    double until = now_s() + 120;
    while (now_s() < until) {
        FILE *f = fopen(s.log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *at = strstr(line, "listening on 127.0.0.1:");
            if (at && sscanf(at, "listening on 127.0.0.1:%d", &s.port) == 1) {
                fclose(f);
                return s;
            }
        }
        if (f) fclose(f);
        int status;
        cr_assert(waitpid(s.pid, &status, WNOHANG) == 0, "the server exited early (see %s)",
                  s.log);
        usleep(50000);
    }
    cr_assert_fail("the server did not start listening within 120 s");
    return s;
}

void stop(server *s) {
    cr_assert(kill(s->pid, SIGTERM) == 0);
    int status;
    cr_assert(waitpid(s->pid, &status, 0) == s->pid);
    for (int i = 0; i < (int)(sizeof running / sizeof *running); i++)
        if (running[i] == s->pid) running[i] = 0;
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d (log %s)", status,
              s->log);
    FILE *f = fopen(s->log, "r");
    char line[1024];
    int clean = 0;
    while (f && fgets(line, sizeof line, f)) {
        cr_expect(!strstr(line, "Sanitizer") && !strstr(line, "runtime error"), "server: %s",
                  line);
        if (strstr(line, "stopped cleanly")) clean = 1;
    }
    if (f) fclose(f);
    cr_expect(clean, "no clean-stop line in %s", s->log);
}

/* The spec (loaded once per process, on first use; it lives until the process exits) and the
 * responses validated per operation. */
static oac_spec spec;
static int spec_loaded;
static int n_validated[OAC_MAX_OPS], n_validated_2xx[OAC_MAX_OPS];

const oac_spec *openapi_spec(void) {
    if (!spec_loaded) {
        char err[256];
        cr_assert(oac_load(OPENAPI_PATH, &spec, err, sizeof err) == 0, "%s", err);
        spec_loaded = 1;
    }
    return &spec;
}

int validated_responses(int op, int *n_2xx) {
    assert(op >= 0 && op < OAC_MAX_OPS);
    if (n_2xx) *n_2xx = n_validated_2xx[op];
    return n_validated[op];
}

void check_response(const char *method, const char *path, int status, const char *content_type,
                    const char *body, size_t len) {
    if (status < 200) return; /* no response (or an interim one): nothing to check */
    const oac_spec *sp = openapi_spec();
    oac_response r = {method, path, status, content_type, body, len};
    char err[640];
    int op;
    int rc = oac_check(sp, &r, &op, err, sizeof err);
    cr_expect(rc == 0, "%s %.200s -> %d does not match api/openapi.yaml: %s", method, path,
              status, err);
    if (rc == 0 && op >= 0) {
        n_validated[op]++;
        if (status >= 200 && status < 300) n_validated_2xx[op]++;
    }
}

reply req(const server *s, const char *method, const char *path, const char *headers,
                 const void *body, size_t len) {
    reply r = {0};
    char err[256];
    cr_assert(http_request("127.0.0.1", s->port, method, path, headers, body, len, 60.0, &r.raw,
                           err, sizeof err) == 0,
              "%s %s: %s", method, path, err);
    r.status = r.raw.status;
    r.json = json_loadb(r.raw.body, r.raw.len, 0, NULL);
    char ct[128], nosniff[32];
    int has_ct = http_reply_header(&r.raw, "Content-Type", ct, sizeof ct) == 0;
    if (http_reply_header(&r.raw, "X-Content-Type-Options", nosniff, sizeof nosniff) == 0)
        check_response(method, path, r.status, has_ct ? ct : NULL, r.raw.body, r.raw.len);
    return r;
}

json_t *get_json(const server *s, const char *path) {
    reply r = req(s, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.raw.body);
    json_t *j = json_incref(r.json);
    reply_free(&r);
    return j;
}

void reply_free(reply *r) {
    json_decref(r->json);
    http_reply_free(&r->raw);
}

/* Validates a raw response (the whole of it, to its Content-Length) against the request line
 * of the bytes sent; a request line that is not "METHOD /path HTTP/..." reaches no route of the
 * spec, so its response is checked as one (a JSON body must be an Error). */
static void check_raw(const void *bytes, size_t len, const char *buf, const char *end, size_t n,
                      size_t need, int status) {
    if (!need || n < need) return; /* streamed, chunked or cut short: no whole body to check */
    const char *ours = strcasestr(buf, "\r\nX-Content-Type-Options:");
    if (!ours || ours > end) return; /* libmicrohttpd's own answer (see server_util.h) */
    static char path[8192]; /* a long URL is still a path */
    char method[16] = "";
    path[0] = 0;
    const char *q = bytes, *sp1 = memchr(q, ' ', len < 16 ? len : 16);
    if (sp1) {
        const char *sp2 = memchr(sp1 + 1, ' ', len - (size_t)(sp1 + 1 - q));
        const char *eol = memchr(q, '\r', len);
        if (sp2 && (!eol || sp2 < eol) && sp2 - sp1 - 1 < (long)sizeof path && sp1[1] == '/') {
            memcpy(method, q, (size_t)(sp1 - q));
            memcpy(path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
            path[sp2 - sp1 - 1] = 0;
        }
    }
    if (!path[0]) snprintf(path, sizeof path, "(no request line)"); /* fits no template */
    char ct[128] = "";
    const char *h = strcasestr(buf, "\r\nContent-Type:");
    if (h && h < end) {
        h += 15;
        while (*h == ' ') h++;
        size_t l = strcspn(h, "\r");
        snprintf(ct, sizeof ct, "%.*s", (int)(l < sizeof ct ? l : sizeof ct - 1), h);
    }
    check_response(method[0] ? method : "?", path, status, ct[0] ? ct : NULL, end + 4,
                   need - (size_t)(end + 4 - buf));
}

reply raw_req_n(const server *s, const void *bytes, size_t len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    /* the server may answer and close before it has read everything (a 413, say) */
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, (const char *)bytes + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char *buf = calloc(1, 65536);
    cr_assert(buf != NULL);
    /* read one response: to its Content-Length, else to the end (a half-closed keep-alive
     * connection may otherwise stay open until the server's idle timeout) */
    size_t n = 0, need = 0;
    for (ssize_t got; n < 65535 && (got = recv(fd, buf + n, 65535 - n, 0)) > 0;) {
        n += (size_t)got;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        if (!need) {
            char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl && cl < end) need = (size_t)(end + 4 - buf) + strtoull(cl + 17, NULL, 10);
        }
        if (need && n >= need) break;
    }
    close(fd);
    reply r = {0};
    if (sscanf(buf, "HTTP/1.1 %d", &r.status) != 1) r.status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    r.json = body ? json_loads(body + 4, 0, NULL) : NULL;
    r.raw.body = buf;
    r.raw.len = n;
    if (body && r.status) check_raw(bytes, len, buf, body, n, need, r.status);
    return r;
}

reply raw_req(const server *s, const char *bytes) { return raw_req_n(s, bytes, strlen(bytes)); }

void expect_error(reply *r, int status, const char *code) {
    cr_expect_eq(r->status, status, "status %d, want %d: %s", r->status, status, r->raw.body);
    json_t *e = r->json ? json_object_get(r->json, "error") : NULL;
    cr_expect(e && json_is_string(json_object_get(e, "message")), "body: %s", r->raw.body);
    const char *c = e ? json_string_value(json_object_get(e, "code")) : NULL;
    cr_expect(c && (!code || !strcmp(c, code)), "code %s, want %s", c ? c : "(none)",
              code ? code : "any");
}

/* A 28x28 binary PGM whose pixels come from seed (distinct seeds, distinct images). */
size_t make_pgm(unsigned seed, unsigned char *out) {
    int h = sprintf((char *)out, "P5\n28 28\n255\n");
    unsigned x = seed * 2654435761u + 1;
    for (int i = 0; i < 28 * 28; i++) {
        x = x * 1103515245u + 12345u;
        /* blobs of light on dark, placed by the seed, with a little noise */
        int r = i / 28, c = i % 28, cx = 6 + (int)(seed % 16), cy = 6 + (int)(seed / 16 % 16);
        int d2 = (r - cy) * (r - cy) + (c - cx) * (c - cx);
        out[h + i] = (unsigned char)((d2 < 40 ? 200 : 20) + (x >> 28));
    }
    return (size_t)h + 28 * 28;
}

const char *PGM = "Content-Type: image/x-portable-graymap\r\n";

int64_t upload(const server *s, unsigned seed, int *existed) {
    unsigned char img[1024];
    size_t n = make_pgm(seed, img);
    reply r = req(s, "POST", "/train", PGM, img, n);
    cr_assert_eq(r.status, 201, "upload: %d %s", r.status, r.raw.body);
    json_t *ids = json_object_get(r.json, "ids");
    cr_assert(json_array_size(ids) == 1);
    int64_t id = json_integer_value(json_array_get(ids, 0));
    if (existed) *existed = json_is_true(json_array_get(json_object_get(r.json, "existed"), 0));
    reply_free(&r);
    return id;
}

reply wait_vector(const server *s, int64_t id) {
    char path[64];
    snprintf(path, sizeof path, "/embed/%lld", (long long)id);
    double until = now_s() + 60;
    for (;;) {
        reply r = req(s, "GET", path, NULL, NULL, 0);
        if (r.status == 200) return r;
        cr_assert(r.status == 503 && now_s() < until, "GET %s: %d %s", path, r.status,
                  r.raw.body);
        reply_free(&r);
        usleep(20000);
    }
}
