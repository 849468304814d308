/* http_server.c — libmicrohttpd in its own thread pool (epoll). Each connection's request is
 * collected into a conn (raw body, or parts from the multipart post processor, never more than
 * the limits allow), then handed whole to api_handle. */
#define _GNU_SOURCE /* strcasestr */
#include "http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"

typedef struct part {
    char *name, *filename, *content_type; /* owned */
    uint8_t *data;                        /* owned */
    size_t len, cap;
} part;

typedef struct conn {
    double t0;
    http_server *h;
    uint8_t *body;          /* owned raw body */
    size_t len, cap;
    size_t received;        /* every body byte seen, kept or not */
    int has_body;
    struct MHD_PostProcessor *pp;
    part *parts;            /* owned [n_parts] */
    int n_parts, cap_parts;
    int reject_status;      /* set when the body broke a limit or could not be parsed */
    const char *reject_code;
    char reject_msg[160];
} conn;

static void reject(conn *c, int status, const char *code, const char *msg) {
    if (c->reject_status) return;
    c->reject_status = status;
    c->reject_code = code;
    snprintf(c->reject_msg, sizeof c->reject_msg, "%s", msg);
}

static int grow(uint8_t **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    uint8_t *q = realloc(*p, c);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Multipart data arrives here part by part, chunk by chunk. */
static enum MHD_Result on_post_data(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *filename, const char *content_type,
                                    const char *transfer_encoding, const char *data, uint64_t off,
                                    size_t size) {
    (void)kind;
    (void)transfer_encoding;
    conn *c = cls;
    if (c->reject_status) return MHD_NO;
    part *p = c->n_parts ? &c->parts[c->n_parts - 1] : NULL;
    if (!p || (off == 0 && p->len > 0) ||
        strcmp(p->name, key ? key : "") || (!!p->filename != !!filename)) {
        if (c->n_parts == c->h->lim.max_parts) {
            char msg[96];
            snprintf(msg, sizeof msg, "more than %d parts in one request", c->h->lim.max_parts);
            reject(c, 413, "too_many_parts", msg);
            return MHD_NO;
        }
        if (c->n_parts == c->cap_parts) {
            int cap = c->cap_parts ? 2 * c->cap_parts : 8;
            part *np = realloc(c->parts, (size_t)cap * sizeof *np);
            if (!np) {
                reject(c, 500, "internal", "out of memory");
                return MHD_NO;
            }
            c->parts = np;
            c->cap_parts = cap;
        }
        p = &c->parts[c->n_parts++];
        memset(p, 0, sizeof *p);
        p->name = strdup(key ? key : "");
        p->filename = filename ? strdup(filename) : NULL;
        p->content_type = content_type ? strdup(content_type) : NULL;
        if (!p->name) {
            reject(c, 500, "internal", "out of memory");
            return MHD_NO;
        }
    }
    c->received += size;
    if (c->received > c->h->lim.max_body) {
        reject(c, 413, "body_too_large", "the request body is over the server's limit");
        return MHD_NO;
    }
    if (size && grow(&p->data, &p->cap, p->len + size)) {
        reject(c, 500, "internal", "out of memory");
        return MHD_NO;
    }
    if (size) memcpy(p->data + p->len, data, size);
    p->len += size;
    return MHD_YES;
}

static void conn_free(conn *c) {
    if (!c) return;
    if (c->pp) MHD_destroy_post_processor(c->pp);
    for (int i = 0; i < c->n_parts; i++) {
        free(c->parts[i].name);
        free(c->parts[i].filename);
        free(c->parts[i].content_type);
        free(c->parts[i].data);
    }
    free(c->parts);
    free(c->body);
    free(c);
}

static const char *query_arg(void *ctx, const char *key) {
    return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, key);
}

/* Printable ASCII only, at most n-1 bytes: client text never forges log lines. */
static void sanitize(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (; in && *in && j + 1 < n; in++)
        out[j++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
    out[j] = 0;
}

static enum MHD_Result send_response(struct MHD_Connection *con, conn *c, const char *method,
                                     const char *url, api_response *rs) {
    struct MHD_Response *r;
    uint64_t sent = rs->len;
    if (rs->has_file) { /* streamed from the file (sendfile where it can): never in memory */
        free(rs->body);
        rs->body = NULL;
        r = MHD_create_response_from_fd64(rs->file_len, rs->file_fd);
        rs->has_file = 0; /* the response owns the descriptor now, or it is closed below */
        if (!r) {
            close(rs->file_fd);
            return MHD_NO;
        }
        sent = rs->file_len;
        if (rs->file_name[0]) {
            char cd[96];
            snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", rs->file_name);
            MHD_add_response_header(r, "Content-Disposition", cd);
        }
    } else {
        r = MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(rs->body);
            return MHD_NO;
        }
        rs->body = NULL;
    }
    if (rs->content_type) MHD_add_response_header(r, "Content-Type", rs->content_type);
    if (rs->allow) MHD_add_response_header(r, "Allow", rs->allow);
    if (rs->filename[0]) {
        char cd[96];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", rs->filename);
        MHD_add_response_header(r, "Content-Disposition", cd);
    }
    if (rs->retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", rs->retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (rs->ui) {
        MHD_add_response_header(r, "Content-Security-Policy", API_UI_CSP);
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
        MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    }
    if (rs->cache_control) MHD_add_response_header(r, "Cache-Control", rs->cache_control);
    enum MHD_Result ok = MHD_queue_response(con, (unsigned)rs->status, r);
    MHD_destroy_response(r);
    double secs = cli_now() - c->t0;
    api_observe(c->h->a, rs->route, rs->status, secs);
    char m[16], u[200];
    sanitize(method, m, sizeof m);
    sanitize(url, u, sizeof u);
    fprintf(stderr, "%s %s %d %llu %.1fms\n", m, u, rs->status, (unsigned long long)sent,
            secs * 1e3);
    return ok;
}

static enum MHD_Result reply_error(struct MHD_Connection *con, conn *c, const char *method,
                                   const char *url, int status, const char *code,
                                   const char *msg) {
    api_response rs;
    memset(&rs, 0, sizeof rs);
    rs.route = "rejected";
    api_error(&rs, status, code, "%s", msg);
    return send_response(con, c, method, url, &rs);
}

static int is_multipart(const char *ct) {
    return ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    http_server *h = cls;
    conn *c = *con_cls;
    if (!c) { /* headers are in; the body (if any) follows */
        static _Thread_local int thread_ready;
        if (!thread_ready) {
            if (h->lim.thread_init) h->lim.thread_init();
            thread_ready = 1;
        }
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->t0 = cli_now();
        c->h = h;
        *con_cls = c;
        atomic_fetch_add(&h->inflight, 1);
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
        const char *te = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Transfer-Encoding");
        const char *ct = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
        c->has_body = cl != NULL || (te && strcasestr(te, "chunked"));
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (*end == 0 && n > h->lim.max_body) {
                char msg[96];
                snprintf(msg, sizeof msg, "the body is %llu bytes; the limit is %zu", n,
                         h->lim.max_body);
                return reply_error(con, c, method, url, 413, "body_too_large", msg);
            }
        }
        if (is_multipart(ct) && c->has_body) {
            c->pp = MHD_create_post_processor(con, 64 * 1024, on_post_data, c);
            if (!c->pp)
                return reply_error(con, c, method, url, 400, "bad_multipart",
                                   "multipart/form-data without a usable boundary");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (c->pp) {
            if (!c->reject_status && MHD_post_process(c->pp, upload_data, *upload_size) != MHD_YES)
                reject(c, 400, "bad_multipart", "the multipart body could not be parsed");
        } else if (!c->reject_status) {
            c->received += *upload_size;
            if (c->received > h->lim.max_body)
                reject(c, 413, "body_too_large", "the request body is over the server's limit");
            else if (grow(&c->body, &c->cap, c->len + *upload_size))
                reject(c, 500, "internal", "out of memory");
            else {
                memcpy(c->body + c->len, upload_data, *upload_size);
                c->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* the whole request is in; a multipart body must have ended with its closing boundary */
    int multipart = c->pp != NULL;
    if (c->pp) {
        enum MHD_Result complete = MHD_destroy_post_processor(c->pp);
        c->pp = NULL;
        if (complete != MHD_YES)
            reject(c, 400, "bad_multipart", "the multipart body ended before its last boundary");
    }
    if (c->reject_status)
        return reply_error(con, c, method, url, c->reject_status, c->reject_code, c->reject_msg);
    api_part *parts = NULL;
    if (multipart) {
        parts = calloc((size_t)c->n_parts + 1, sizeof *parts);
        if (!parts) return reply_error(con, c, method, url, 500, "internal", "out of memory");
        for (int i = 0; i < c->n_parts; i++)
            parts[i] = (api_part){c->parts[i].name, c->parts[i].filename,
                                  c->parts[i].content_type, c->parts[i].data, c->parts[i].len};
    }
    api_request rq = {
        .method = method,
        .path = url,
        .path_len = strlen(url),
        .query = query_arg,
        .query_ctx = con,
        .content_type = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type"),
        .authorization = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization"),
        .has_body = c->has_body,
        .body = c->body ? c->body : (const uint8_t *)"",
        .body_len = c->len,
        .multipart = multipart,
        .parts = parts,
        .n_parts = c->n_parts,
    };
    api_response rs;
    api_handle(h->a, &rq, &rs);
    free(parts);
    return send_response(con, c, method, url, &rs);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)con;
    (void)toe;
    http_server *h = cls;
    if (*con_cls) {
        conn_free(*con_cls);
        *con_cls = NULL;
        atomic_fetch_sub(&h->inflight, 1);
    }
}

/* Decodes %HH escapes except %00, which stays as the three characters: a NUL never reaches
 * route matching or a query value. */
static size_t unescape(void *cls, struct MHD_Connection *con, char *s) {
    (void)cls;
    (void)con;
    char *w = s;
    for (char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && r[1] && r[2] &&
            (hi = (r[1] >= '0' && r[1] <= '9')   ? r[1] - '0'
                  : (r[1] | 32) >= 'a' && (r[1] | 32) <= 'f' ? (r[1] | 32) - 'a' + 10
                                                              : -1) >= 0 &&
            (lo = (r[2] >= '0' && r[2] <= '9')   ? r[2] - '0'
                  : (r[2] | 32) >= 'a' && (r[2] | 32) <= 'f' ? (r[2] | 32) - 'a' + 10
                                                              : -1) >= 0 &&
            (hi | lo)) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else if (*r == '+') { /* form encoding of a space in query values */
            *w++ = ' ';
            r++;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return (size_t)(w - s);
}

int http_start(http_server *h, api *a, const char *host, int port, const http_limits *lim,
               char *msg, size_t msg_len) {
    memset(h, 0, sizeof *h);
    h->a = a;
    h->lim = *lim;
    atomic_init(&h->inflight, 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(msg, msg_len, "cannot listen on '%s': give a numeric IPv4 or IPv6 address", host);
        return -1;
    }
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)lim->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)lim->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)lim->timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        /* strict HTTP/1.1 parsing: e.g. a request without Host is a 400 */
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(msg, msg_len, "cannot listen on %s:%d (in use, or not an address of this host?)",
                 host, port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    return 0;
}

void http_stop(http_server *h, double grace_s) {
    if (!h->daemon) return;
    MHD_socket s = MHD_quiesce_daemon(h->daemon); /* no new connections from here on */
    double until = cli_now() + grace_s;
    while (atomic_load(&h->inflight) > 0 && cli_now() < until) usleep(10000);
    MHD_stop_daemon(h->daemon);
    if (s != MHD_INVALID_SOCKET) close(s);
    h->daemon = NULL;
}
