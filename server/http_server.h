/* http_server.h — libmicrohttpd plumbing: listening, request bodies (raw or multipart through
 * the post processor), limits, one log line per request, and handing complete requests to the
 * API (api/api.h). */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <stdatomic.h>
#include <stddef.h>

#include "api.h"

typedef struct http_limits {
    int threads;           /* worker threads of the pool */
    int max_connections;
    int timeout_s;         /* idle connections are closed after this */
    size_t max_body;       /* bytes; more is a 413 */
    int max_parts;         /* multipart parts; more is a 413 */
    void (*thread_init)(void); /* run once on each request thread before its first request
                                * (the service's per-thread setup); NULL: none */
} http_limits;

typedef struct http_server {
    struct MHD_Daemon *daemon;
    api *a;                /* borrowed */
    http_limits lim;
    int port;              /* the bound port (useful with port 0) */
    atomic_long inflight;  /* requests being handled */
} http_server;

/* Binds host:port and starts serving. Returns 0, or -1 with a message in msg. */
int http_start(http_server *h, api *a, const char *host, int port, const http_limits *lim,
               char *msg, size_t msg_len);
/* Stops accepting, waits up to grace_s seconds for open requests to finish, then stops. */
void http_stop(http_server *h, double grace_s);

#endif
