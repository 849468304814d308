/* api.h — the HTTP API as plain functions: a parsed request in, a JSON response out.
 *
 * The server (server/http_server.c) owns sockets and libmicrohttpd; it hands each complete
 * request here as an api_request (with multipart bodies already split into parts by the post
 * processor) and sends back the api_response. Nothing here knows about connections, so the
 * handlers are plain code over the service (svc.h). Every error is
 * {"error": {"code": "...", "message": "..."}} with a 4xx status for anything the client did. */
#ifndef API_H
#define API_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "svc.h"

typedef struct api_part {
    const char *name;         /* form field name ("" when none) */
    const char *filename;     /* NULL when the part is not a file */
    const char *content_type; /* NULL when not given */
    const uint8_t *data;
    size_t len;
} api_part;

typedef struct api_request {
    const char *method;
    const char *path;          /* decoded path without the query */
    size_t path_len;           /* bytes in path (a decoded %00 makes strlen shorter) */
    /* query argument by name, or NULL */
    const char *(*query)(void *ctx, const char *key);
    void *query_ctx;
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    int has_body;              /* a Content-Length or chunked body was announced */
    const uint8_t *body;       /* the whole body (not for multipart) */
    size_t body_len;
    int multipart;             /* 1: parts[] hold the body */
    const api_part *parts;
    int n_parts;
} api_request;

typedef struct api_response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* malloc'd; the caller frees */
    size_t len;
    int has_file;             /* 1: the body is file_len bytes of file_fd, streamed from it */
    int file_fd;              /* owned by whoever sends the response (the HTTP layer closes it) */
    uint64_t file_len;
    char file_name[48];       /* a server-made name for Content-Disposition: attachment, or "" */
    const char *allow;        /* Allow header for 405 (static, or allow_buf), or NULL */
    char allow_buf[48];
    int retry_after;          /* seconds, 0 for none */
    const char *route;        /* route label for logs and metrics (static) */
    char filename[64];        /* a download's name (Content-Disposition: attachment), or "" */
    int ui;                   /* 1: a dashboard page or asset (sent with its Content-Security-
                               * Policy, API_UI_CSP, and no framing or referrer) */
    const char *cache_control; /* static Cache-Control value, or NULL */
} api_response;

/* The dashboard's policy: its own scripts, styles and data only (no inline script, no other
 * origin); images also from blob: URLs, which the page makes of images it fetched with the
 * key in a header. */
#define API_UI_CSP                                                                          \
    "default-src 'self'; img-src 'self' blob:; base-uri 'none'; form-action 'none'; "      \
    "frame-ancestors 'none'"

typedef struct api_opts {
    const char *api_key;       /* NULL: no authentication */
    int key_reads;             /* 1: reads need the key too (health probes never do) */
    int max_k;                 /* largest k a search may ask for (1000) */
} api_opts;

#define API_ROUTES 29
#define API_BUCKETS 14

/* Prometheus counters per route (requests by status class, latency histogram). */
typedef struct api_route_stats {
    uint64_t by_class[6];        /* [1..5] = 1xx..5xx */
    uint64_t buckets[API_BUCKETS];
    uint64_t count;
    double sum;
} api_route_stats;

typedef struct api {
    svc *s;                        /* borrowed */
    api_opts opts;
    double started;                /* unix seconds */
    int ready;                     /* /readyz: 1 once the server accepts work */
    pthread_mutex_t metrics_mu;
    api_route_stats routes[API_ROUTES];
} api;

void api_init(api *a, svc *s, const api_opts *opts);
/* Per-thread setup of a request thread, before its first request: its inference runs on one
 * thread (its own core) with denormals flushed. */
void api_thread_init(void);
void api_free(api *a);

/* Handles one complete request. Never fails: errors become error responses. */
void api_handle(api *a, const api_request *rq, api_response *rs);

/* Frees a response's body and closes its file, for callers that do not send it. */
void api_response_free(api_response *rs);

/* A response the server makes itself (413 body too large, 400 malformed multipart...). */
void api_error(api_response *rs, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records a finished request for /metrics. */
void api_observe(api *a, const char *route, int status, double seconds);

#endif
