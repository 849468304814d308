/* test_upload.c — `barlowd upload` and `barlowd search` against the real `barlowd serve`: a
 * directory tree with a bad file and a duplicate goes in once with its directories' labels, an
 * upload killed half way resumes without sending anything twice, search prints k neighbours,
 * and bad arguments exit 2. */
#define _GNU_SOURCE /* usleep, strcasestr */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <png.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server_util.h"
#include "test_util.h"

TestSuite(upload, .init = make_dir, .fini = remove_dir, .timeout = 300);

/* One file of a test tree: where, and its bytes. */
typedef struct file {
    char path[256];
    unsigned char *bytes;
    size_t len;
} file;

static void put(file *f, const char *rel, const void *bytes, size_t len) {
    snprintf(f->path, sizeof f->path, "%s/%s", dir, rel);
    for (char *s = strchr(f->path + strlen(dir) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(f->path, 0755); /* exists already: fine */
        *s = '/';
    }
    f->bytes = malloc(len);
    cr_assert(f->bytes);
    memcpy(f->bytes, bytes, len);
    f->len = len;
    FILE *out = fopen(f->path, "wb");
    cr_assert(out, "cannot write %s", f->path);
    cr_assert(fwrite(bytes, 1, len, out) == len);
    fclose(out);
}

/* A 28x28 grey image from make_pgm's pixels as PNG (libpng's simplified API). */
static void put_png(file *f, const char *rel, unsigned seed) {
    unsigned char pgm[1024];
    size_t n = make_pgm(seed, pgm);
    png_image im = {.version = PNG_IMAGE_VERSION, .width = 28, .height = 28,
                    .format = PNG_FORMAT_GRAY};
    png_alloc_size_t len = 0;
    const unsigned char *px = pgm + n - 28 * 28;
    cr_assert(png_image_write_to_memory(&im, NULL, &len, 0, px, 0, NULL));
    unsigned char *buf = malloc(len);
    cr_assert(png_image_write_to_memory(&im, buf, &len, 0, px, 0, NULL));
    put(f, rel, buf, len);
    free(buf);
}

/* The same as a JPEG. */
static void put_jpeg(file *f, const char *rel, unsigned seed) {
    unsigned char pgm[1024];
    size_t n = make_pgm(seed, pgm), len;
    uint8_t *buf = tu_encode_jpeg(pgm + n - 28 * 28, 28, 28, 1, 75, NULL, 0, &len);
    put(f, rel, buf, len);
    free(buf);
}

static void put_pgm(file *f, const char *rel, unsigned seed) {
    unsigned char pgm[1024];
    size_t n = make_pgm(seed, pgm);
    put(f, rel, pgm, n);
}

/* Starts barlowd with args (NULL-terminated, after the binary), stdout into out_path. */
static pid_t spawn(const char *const *args, const char *out_path) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        char err_path[256];
        snprintf(err_path, sizeof err_path, "%s.err", out_path);
        if (!freopen(out_path, "w", stdout) || !freopen(err_path, "w", stderr)) _exit(126);
        const char *argv[32] = {BARLOWD_BIN};
        for (int i = 0; args[i] && i < 30; i++) argv[i + 1] = args[i];
        execv(BARLOWD_BIN, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    cr_assert(WIFEXITED(status), "barlowd died of signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

/* Runs barlowd with args to the end; its exit code, its stdout in out (NUL-terminated). */
static int run(const char *const *args, char *out, size_t cap) {
    static int n_runs;
    char path[128];
    snprintf(path, sizeof path, "%s/run%d.out", dir, n_runs++);
    int code = wait_exit(spawn(args, path));
    FILE *f = fopen(path, "r");
    cr_assert(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    /* the client's own stderr must be free of sanitizer reports too */
    char err_path[160], line[1024];
    snprintf(err_path, sizeof err_path, "%s.err", path);
    f = fopen(err_path, "r");
    while (f && fgets(line, sizeof line, f))
        cr_expect(!strstr(line, "Sanitizer") && !strstr(line, "runtime error"), "client: %s",
                  line);
    if (f) fclose(f);
    return code;
}

typedef struct counts {
    int sent, there, refused, failed;
} counts;

/* The summary's first line: "sent N, already there M, refused K, failed F (...)". */
static counts summary_of(const char *out) {
    counts c;
    cr_assert_eq(sscanf(out, "sent %d, already there %d, refused %d, failed %d", &c.sent,
                        &c.there, &c.refused, &c.failed),
                 4, "no summary in: %s", out);
    return c;
}

static int64_t n_images(const server *s) {
    json_t *st = get_json(s, "/status");
    int64_t n = json_integer_value(json_object_get(st, "images"));
    json_decref(st);
    return n;
}

Test(upload, a_tree_goes_in_once_with_its_labels_and_the_bad_file_is_refused) {
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    file f[7];
    put_png(&f[0], "tree/shoe/a.png", 1);
    put_pgm(&f[1], "tree/shoe/b.pgm", 2);
    put_pgm(&f[2], "tree/bag/c.PGM", 3);
    put_jpeg(&f[3], "tree/bag/d.jpg", 4);
    put(&f[4], "tree/bag/bad.png", "garbage, not an image", 21);
    put_pgm(&f[5], "tree/shoe/b_again.pgm", 2); /* the same bytes as b.pgm */
    put(&f[6], "tree/bag/notes.txt", "not sent", 8);
    const char *labels[] = {"shoe", "shoe", "bag", "bag"};
    char tree[128], out[8192];
    snprintf(tree, sizeof tree, "%s/tree", dir);
    const char *args[] = {"upload", tree, "--server", url, "--label-from-dir", "--batch", "2",
                          "--jobs", "2", "--meta", "{\"label\": \"no\", \"src\": \"test\"}",
                          NULL};
    cr_expect_eq(run(args, out, sizeof out), 1, "one refused: exit 1\n%s", out);
    counts c = summary_of(out);
    cr_expect_eq(c.sent, 4, "%s", out);
    cr_expect_eq(c.there, 1, "the duplicate is already there: %s", out);
    cr_expect_eq(c.refused, 1, "%s", out);
    cr_expect_eq(c.failed, 0, "%s", out);
    char want[300];
    snprintf(want, sizeof want, "refused %s: unsupported_media_type: ", f[4].path);
    cr_expect(strstr(out, want), "no line '%s' in:\n%s", want, out);

    /* exactly the four distinct good images, each with its directory's label and --meta's key */
    json_t *page = get_json(&s, "/images?limit=100");
    json_t *imgs = json_object_get(page, "images");
    cr_assert_eq(json_array_size(imgs), 4, "%s", json_dumps(page, 0));
    int seen[4] = {0};
    int64_t id_of_a = 0, ids[4];
    for (size_t i = 0; i < 4; i++) {
        json_t *im = json_array_get(imgs, i);
        int64_t id = json_integer_value(json_object_get(im, "id"));
        ids[i] = id;
        char path[64];
        snprintf(path, sizeof path, "/images/%lld/raw", (long long)id);
        reply r = req(&s, "GET", path, NULL, NULL, 0);
        cr_assert_eq(r.status, 200);
        int which = -1;
        for (int k = 0; k < 4; k++)
            if (r.raw.len == f[k].len && !memcmp(r.raw.body, f[k].bytes, f[k].len)) which = k;
        reply_free(&r);
        cr_assert(which >= 0, "image %lld is none of the files", (long long)id);
        seen[which]++;
        if (which == 0) id_of_a = id;
        json_t *meta = json_object_get(im, "meta");
        cr_expect_str_eq(json_string_value(json_object_get(meta, "label")), labels[which]);
        cr_expect_str_eq(json_string_value(json_object_get(meta, "src")), "test");
    }
    for (int k = 0; k < 4; k++) cr_expect_eq(seen[k], 1, "file %s stored %d times", f[k].path,
                                             seen[k]);
    json_decref(page);

    /* search, once the vectors exist: k lines "id score label", the image itself first */
    for (size_t i = 0; i < 4; i++) {
        reply r = wait_vector(&s, ids[i]);
        reply_free(&r);
    }
    const char *sargs[] = {"search", "--server", url, f[0].path, "--k", "3", NULL};
    cr_expect_eq(run(sargs, out, sizeof out), 0, "%s", out);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++) lines++;
    cr_expect_eq(lines, 3, "%s", out);
    long long id;
    double score;
    char label[32];
    cr_expect_eq(sscanf(out, "%lld %lf %31s", &id, &score, label), 3, "%s", out);
    cr_expect_eq(id, id_of_a, "%s", out);
    cr_expect(score > 0.99, "%s", out);
    cr_expect_str_eq(label, "shoe");
    /* a filter narrows it (URL-encoded by the client), and the server's refusals exit 1 */
    const char *fargs[] = {"search", "--server", url, f[0].path, "--k", "10", "--filter",
                           "{\"label\": \"bag\"}", NULL};
    cr_expect_eq(run(fargs, out, sizeof out), 0, "%s", out);
    lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++) lines++;
    cr_expect_eq(lines, 2, "the two bags: %s", out);
    cr_expect(!strstr(out, "shoe"), "%s", out);
    const char *bargs[] = {"search", "--server", url, f[4].path, NULL};
    cr_expect_eq(run(bargs, out, sizeof out), 1);
    for (int k = 0; k < 7; k++) free(f[k].bytes);
    stop(&s);
}

Test(upload, an_interrupted_upload_resumes_and_sends_nothing_twice) {
    const char *flags[] = {"--train", "no", NULL};
    server s = start(flags);
    char url[64], tree[128], out[8192], res[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    snprintf(tree, sizeof tree, "%s/big", dir);
    snprintf(res, sizeof res, "%s/killed.out", dir);
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        file f;
        char rel[64];
        snprintf(rel, sizeof rel, "big/c%d/%03d.pgm", i % 3, i);
        put_pgm(&f, rel, 1000 + (unsigned)i);
        free(f.bytes);
    }
    /* one connection, small batches: slow enough to be caught part way */
    const char *args1[] = {"upload", tree, "--server", url, "--batch", "2", "--jobs", "1", NULL};
    pid_t pid = spawn(args1, res);
    double until = now_s() + 60;
    while (n_images(&s) < 10) {
        cr_assert(now_s() < until, "no images arrived within 60 s");
        usleep(2000);
    }
    cr_assert(kill(pid, SIGKILL) == 0);
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    usleep(200000); /* a request in flight when the client died completes (or not) on its own */
    int64_t before = n_images(&s);
    cr_expect(before >= 10 && before < N, "the kill came after %lld of %d images",
              (long long)before, N);
    cr_log_info("the kill came after %lld of %d images", (long long)before, N);

    const char *args2[] = {"upload", tree, "--server", url, "--batch", "8", "--jobs", "2", NULL};
    cr_expect_eq(run(args2, out, sizeof out), 0, "%s", out);
    counts c = summary_of(out);
    cr_expect_eq(c.there, before, "the images sent before the kill are already there: %s", out);
    cr_expect_eq(c.sent, N - before, "%s", out);
    cr_expect_eq(c.refused + c.failed, 0, "%s", out);
    cr_expect_eq(n_images(&s), N, "every image exactly once");
    /* and a third run has nothing to send */
    cr_expect_eq(run(args2, out, sizeof out), 0, "%s", out);
    c = summary_of(out);
    cr_expect(c.sent == 0 && c.there == N, "%s", out);
    stop(&s);
}

/* With --api-key the server wants `Authorization: Bearer KEY` on POST /train: without it every
 * file is refused as unauthorized (exit 1); with it they go in. */
Test(upload, the_api_key_goes_in_the_bearer_header) {
    const char *flags[] = {"--train", "no", "--api-key", "s3cret", NULL};
    server s = start(flags);
    char url[64], out[4096];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    file f[2];
    put_pgm(&f[0], "keyed/a.pgm", 11);
    put_pgm(&f[1], "keyed/b.pgm", 12);
    char tree[128];
    snprintf(tree, sizeof tree, "%s/keyed", dir);
    const char *no_key[] = {"upload", tree, "--server", url, NULL};
    cr_expect_eq(run(no_key, out, sizeof out), 1, "%s", out);
    counts c = summary_of(out);
    cr_expect(c.refused == 2 && c.sent == 0, "%s", out);
    cr_expect(strstr(out, ": unauthorized: "), "%s", out);
    const char *wrong[] = {"upload", tree, "--server", url, "--api-key", "guess", NULL};
    cr_expect_eq(run(wrong, out, sizeof out), 1, "%s", out);
    const char *key[] = {"upload", tree, "--server", url, "--api-key", "s3cret", NULL};
    cr_expect_eq(run(key, out, sizeof out), 0, "%s", out);
    c = summary_of(out);
    cr_expect(c.sent == 2 && c.refused == 0, "%s", out);
    cr_expect_eq(n_images(&s), 2);
    for (int k = 0; k < 2; k++) free(f[k].bytes);
    stop(&s);
}

/* A batch over the server's body limit (413 without a part) is split until its pieces fit; a
 * file over the limit on its own is refused. */
Test(upload, a_batch_over_the_body_limit_is_split_and_a_file_over_it_refused) {
    const char *flags[] = {"--train", "no", "--max-body", "2048", NULL};
    server s = start(flags);
    char url[64], tree[128], out[4096];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    snprintf(tree, sizeof tree, "%s/split", dir);
    for (int i = 0; i < 6; i++) {
        file f;
        char rel[64];
        snprintf(rel, sizeof rel, "split/%d.pgm", i);
        put_pgm(&f, rel, 50 + (unsigned)i);
        free(f.bytes);
    }
    static unsigned char big[64 * 64 + 16];
    int h = sprintf((char *)big, "P5\n64 64\n255\n");
    file f;
    put(&f, "split/big.pgm", big, (size_t)h + 64 * 64);
    free(f.bytes);
    const char *args[] = {"upload", tree, "--server", url, "--batch", "7", NULL};
    cr_expect_eq(run(args, out, sizeof out), 1, "%s", out);
    counts c = summary_of(out);
    cr_expect(c.sent == 6 && c.refused == 1 && c.failed == 0, "%s", out);
    cr_expect(strstr(out, "big.pgm: body_too_large: "), "%s", out);
    cr_expect_eq(n_images(&s), 6);
    stop(&s);
}

/* A stand-in server for what the real one does rarely: one request per connection, every
 * POST /train before the last answered 503 with Retry-After: 1, GET /images always empty. */
typedef struct fake {
    int fd, port;
    int posts, busy_posts; /* POSTs seen; how many of the first get 503 */
    double first_post, last_post;
} fake;

static void *fake_serve(void *arg) {
    fake *fk = arg;
    for (;;) {
        int c = accept(fk->fd, NULL, NULL);
        if (c < 0) return NULL; /* the test closed the socket */
        char buf[65536];
        size_t n = 0, need = 0;
        for (ssize_t got; n < sizeof buf - 1 && (got = recv(c, buf + n, sizeof buf - 1 - n, 0)) > 0;) {
            n += (size_t)got;
            buf[n] = 0;
            char *end = strstr(buf, "\r\n\r\n");
            if (!end) continue;
            char *cl = strcasestr(buf, "\r\nContent-Length:");
            need = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoull(cl + 17, NULL, 10) : 0);
            if (n >= need) break;
        }
        const char *status = "200 OK", *extra = "", *body = "{\"images\":[],\"next\":null}";
        if (!strncmp(buf, "POST /train", 11)) {
            fk->last_post = now_s();
            if (!fk->posts++) fk->first_post = fk->last_post;
            if (fk->posts <= fk->busy_posts) {
                status = "503 Service Unavailable";
                extra = "Retry-After: 1\r\n";
                body = "{\"error\":{\"code\":\"unavailable\",\"message\":\"busy now\"}}";
            } else {
                status = "201 Created";
                body = "{\"ids\":[1],\"existed\":[false]}";
            }
        }
        char answer[512];
        snprintf(answer, sizeof answer,
                 "HTTP/1.1 %s\r\n%sContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 status, extra, strlen(body), body);
        send(c, answer, strlen(answer), MSG_NOSIGNAL);
        close(c);
    }
}

/* 503 is retried after the server's Retry-After (1 s here, longer than the first backoff). */
Test(upload, a_503_is_retried_after_its_retry_after) {
    fake fk = {.busy_posts = 2};
    fk.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    cr_assert(bind(fk.fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fk.fd, 8) == 0);
    cr_assert(getsockname(fk.fd, (struct sockaddr *)&a, &al) == 0);
    fk.port = ntohs(a.sin_port);
    pthread_t th;
    cr_assert(pthread_create(&th, NULL, fake_serve, &fk) == 0);
    file f;
    put_pgm(&f, "one/x.pgm", 7);
    free(f.bytes);
    char url[64], out[4096];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", fk.port);
    const char *args[] = {"upload", f.path, "--server", url, NULL};
    cr_expect_eq(run(args, out, sizeof out), 0, "%s", out);
    shutdown(fk.fd, SHUT_RDWR);
    close(fk.fd);
    pthread_join(th, NULL);
    counts c = summary_of(out);
    cr_expect(c.sent == 1 && c.failed == 0, "%s", out);
    cr_expect_eq(fk.posts, 3, "two 503s, then 201");
    cr_expect(fk.last_post - fk.first_post > 1.9, "the retries waited %.2f s, not 2 x 1 s",
              fk.last_post - fk.first_post);
}

/* Nothing listens on the port: every file fails after the retries (about 8 s), exit 1. */
Test(upload, an_unreachable_server_fails_the_files_after_retrying) {
    file f;
    put_pgm(&f, "one/x.pgm", 7);
    free(f.bytes);
    char out[4096];
    const char *args[] = {"upload", f.path, "--server", "http://127.0.0.1:9", NULL};
    double t0 = now_s();
    cr_expect_eq(run(args, out, sizeof out), 1, "%s", out);
    double took = now_s() - t0;
    counts c = summary_of(out);
    cr_expect(c.failed == 1 && c.sent == 0, "%s", out);
    cr_expect(strstr(out, "failed ") && strstr(out, "connection"), "%s", out);
    cr_expect(took > 5, "retried with backoff for %.1f s only", took);
}

Test(upload, bad_arguments_exit_2) {
    file f;
    put_pgm(&f, "one/x.pgm", 7);
    free(f.bytes);
    char missing[128], out[4096];
    snprintf(missing, sizeof missing, "%s/nothing-here", dir);
    const char *cases[][8] = {
        {"upload", NULL},
        {"upload", f.path, "--bogus", "1", NULL},
        {"upload", f.path, "--meta", "{not json", NULL},
        {"upload", f.path, "--meta", "[1, 2]", NULL},
        {"upload", missing, NULL},
        {"upload", f.path, "--batch", "0", NULL},
        {"upload", f.path, "--jobs", NULL},
        {"search", NULL},
        {"search", f.path, "--k", "ten", NULL},
        {"search", f.path, "--filter", "label=shoe", NULL},
        {"search", missing, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(run(cases[i], out, sizeof out), 2, "case %zu (%s %s %s): %s", i,
                     cases[i][0], cases[i][1] ? cases[i][1] : "", cases[i][1] && cases[i][2]
                     ? cases[i][2] : "", out);
}
