/* server_util.h — helpers for tests that drive the real `barlowd serve` over HTTP. The
 * server runs from BARLOWD_BIN with its database under `dir` (a temporary directory made by
 * make_dir, a Criterion suite's .init; remove_dir is its .fini). */
#ifndef SERVER_UTIL_H
#define SERVER_UTIL_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http_client.h"
#include "openapi_check.h"

extern char dir[64];
void make_dir(void);
void remove_dir(void);

typedef struct server {
    pid_t pid;
    int port;
    char log[128];
} server;

typedef struct reply {
    int status;
    json_t *json; /* NULL when the body is not JSON */
    http_reply raw;
} reply;

double now_s(void);

/* Starts barlowd serve (port 0: the kernel picks) with extra flags (NULL-terminated); waits for
 * its "listening" line to learn the port. */
server start(const char *const *extra);
/* SIGTERM, then the exit status must be 0 and the log free of sanitizer reports. */
void stop(server *s);

/* Every response that req and raw_req see is validated against api/openapi.yaml
 * (openapi_check.h): a mismatch fails the test (cr_expect) with the method, path, status and
 * the JSON pointer of what is wrong. Not checked: what libmicrohttpd answers by itself to a
 * request it cannot parse (a bad request line, header or Content-Length, HTTP/9.9, a 100 KB
 * URL), before barlowd's routes see it; every answer of barlowd's own carries
 * X-Content-Type-Options, and those do not. The spec, loaded on first use (this process's
 * copy): */
const oac_spec *openapi_spec(void);
/* How many responses to spec operation op (an index of openapi_spec()->ops) were validated in
 * this process, and how many of them were 2xx (into *n_2xx when not NULL). */
int validated_responses(int op, int *n_2xx);
/* Validates one response (req and raw_req call it); content_type may be NULL. */
void check_response(const char *method, const char *path, int status, const char *content_type,
                    const char *body, size_t len);

/* A request through the tests' client (it always sends Content-Length). */
reply req(const server *s, const char *method, const char *path, const char *headers,
          const void *body, size_t len);
/* Raw bytes on a new connection (requests the client would never write), read until the
 * server closes; status 0 when no status line came back. */
reply raw_req(const server *s, const char *bytes);
/* The same for len bytes; the write side is shut after sending (the server sees the end). */
reply raw_req_n(const server *s, const void *bytes, size_t len);
void reply_free(reply *r);
/* GET path, which must answer 200 with JSON; the caller owns the returned value. */
json_t *get_json(const server *s, const char *path);
/* The status must be `status` and the body {"error": {"code": code (NULL: any), "message"}}. */
void expect_error(reply *r, int status, const char *code);

/* A 28x28 binary PGM from seed (distinct seeds, distinct images); returns its size (< 1024). */
size_t make_pgm(unsigned seed, unsigned char *out);
extern const char *PGM; /* its Content-Type header line */
/* POST /train of make_pgm(seed): the id (existed: whether it was a duplicate). */
int64_t upload(const server *s, unsigned seed, int *existed);
/* GET /embed/{id} until it has a vector (the embedder runs in the background). */
reply wait_vector(const server *s, int64_t id);

#endif
