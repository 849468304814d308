/* api.c — responses, authentication, request metrics and their Prometheus exposition. */
#include "api.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_internal.h"
#include "eng_ctx.h"

void api_thread_init(void) {
    eng_set_threads(1);
    eng_set_flush_denormals();
}

static const double bucket_le[API_BUCKETS] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                              0.2,   0.5,   1,     2,    5,    10,  30};

void api_init(api *a, svc *s, const api_opts *opts) {
    memset(a, 0, sizeof *a);
    a->s = s;
    a->opts = *opts;
    if (a->opts.max_k < 1) a->opts.max_k = 1000;
    a->started = svc_now();
    pthread_mutex_init(&a->metrics_mu, NULL);
}

void api_free(api *a) { pthread_mutex_destroy(&a->metrics_mu); }

void api_json(api_response *rs, int status, json_t *body) {
    rs->status = status;
    rs->content_type = "application/json";
    rs->body = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(body);
    if (!rs->body) { /* out of memory: a fixed body still tells the client */
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        rs->status = 500;
        rs->body = malloc(sizeof oom);
        if (rs->body) memcpy(rs->body, oom, sizeof oom);
    }
    rs->len = rs->body ? strlen(rs->body) : 0;
}

void api_response_free(api_response *rs) {
    free(rs->body);
    rs->body = NULL;
    if (rs->has_file) close(rs->file_fd);
    rs->has_file = 0;
}

/* The error body {"error": {"code", "message"[, "part"]}}; part < 0 leaves the member out. */
static void error_response(api_response *rs, int status, const char *code, int part,
                           const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    free(rs->body);
    rs->body = NULL;
    /* json_string refuses invalid UTF-8 (messages may quote client bytes): fall back to ASCII */
    json_t *m = json_string(msg);
    if (!m) {
        for (char *c = msg; *c; c++)
            if ((unsigned char)*c >= 0x80 || (unsigned char)*c < 0x20) *c = '?';
        m = json_string(msg);
    }
    json_t *err = json_pack("{s:s,s:o}", "code", code, "message", m);
    if (err && part >= 0) json_object_set_new(err, "part", json_integer(part));
    api_json(rs, status, json_pack("{s:o}", "error", err));
}

void api_error(api_response *rs, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_response(rs, status, code, -1, fmt, ap);
    va_end(ap);
}

static void error_at(api_response *rs, int status, const char *code, int part, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static void error_at(api_response *rs, int status, const char *code, int part, const char *fmt,
                     ...) {
    va_list ap;
    va_start(ap, fmt);
    error_response(rs, status, code, part, fmt, ap);
    va_end(ap);
}

void api_svc_error_part(api_response *rs, const svc_err *e, const char *prefix, int part) {
    assert(part >= -1); /* -1: no part (api_svc_error) */
    static const struct {
        int status;
        const char *code;
    } map[ERR_N_CODES] = {[ERR_OK] = {500, "internal"},
               [ERR_BAD_INPUT] = {422, "invalid_image"},
               [ERR_NOT_FOUND] = {404, "not_found"},
               [ERR_TOO_LARGE] = {413, "too_large"},
               [ERR_UNSUPPORTED] = {415, "unsupported_media_type"},
               [ERR_UNAVAILABLE] = {503, "unavailable"},
               [ERR_INTERNAL] = {500, "internal"},
               [ERR_NO_MEMORY] = {503, "out_of_memory"},
               [ERR_DISK_FULL] = {507, "disk_full"}};
    int k = e->code > ERR_OK && e->code < ERR_N_CODES ? (int)e->code : ERR_INTERNAL;
    int status = map[k].status;
    /* only a client error is the part's fault; a 5xx is about the server, whichever part */
    error_at(rs, status, map[k].code, status < 500 ? part : -1, "%s%s", prefix, e->msg);
    if (k == ERR_UNAVAILABLE || k == ERR_NO_MEMORY) rs->retry_after = 1;
}

void api_svc_error(api_response *rs, const svc_err *e, const char *prefix) {
    api_svc_error_part(rs, e, prefix, -1);
}

void api_out_of_memory(api_response *rs) {
    svc_err e = {.msg = "out of memory", .code = ERR_NO_MEMORY};
    api_svc_error(rs, &e, "");
}

/* Constant-time comparison of the presented bearer token with the key. */
int api_authorized(const api *a, const api_request *rq) {
    const char *key = a->opts.api_key;
    if (!key) return 1;
    const char *h = rq->authorization;
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    const char *t = h + 7;
    size_t kl = strlen(key), tl = strlen(t);
    unsigned char diff = (unsigned char)(kl != tl);
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(key[i] ^ (i < tl ? t[i] : 0));
    return diff == 0;
}

static int route_index(const char *route) {
    for (int i = 0; i < API_ROUTES; i++)
        if (route && !strcmp(route, api_route_label(i))) return i;
    return API_ROUTES - 1;
}


void api_observe(api *a, const char *route, int status, double seconds) {
    int r = route_index(route);
    int cls = status / 100;
    pthread_mutex_lock(&a->metrics_mu);
    api_route_stats *st = &a->routes[r];
    if (cls >= 1 && cls <= 5) st->by_class[cls]++;
    for (int b = 0; b < API_BUCKETS; b++)
        if (seconds <= bucket_le[b]) st->buckets[b]++;
    st->count++;
    st->sum += seconds;
    pthread_mutex_unlock(&a->metrics_mu);
}

/* Appends printf output to a growing buffer; returns -1 when out of memory. */
int buf_printf(buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return 0;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
}

void api_metrics_text(api *a, buf *b) {
    api_route_stats copy[API_ROUTES];
    pthread_mutex_lock(&a->metrics_mu);
    memcpy(copy, a->routes, sizeof copy);
    pthread_mutex_unlock(&a->metrics_mu);
    buf_printf(b, "# HELP barlowd_requests_total HTTP requests by route and status class.\n"
                  "# TYPE barlowd_requests_total counter\n");
    for (int r = 0; r < API_ROUTES; r++)
        for (int c = 1; c <= 5; c++)
            if (copy[r].by_class[c])
                buf_printf(b, "barlowd_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                           api_route_label(r), c, (unsigned long long)copy[r].by_class[c]);
    buf_printf(b, "# HELP barlowd_request_seconds Time from request to response by route.\n"
                  "# TYPE barlowd_request_seconds histogram\n");
    for (int r = 0; r < API_ROUTES; r++) {
        if (!copy[r].count) continue;
        for (int k = 0; k < API_BUCKETS; k++)
            buf_printf(b, "barlowd_request_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                       api_route_label(r), bucket_le[k], (unsigned long long)copy[r].buckets[k]);
        buf_printf(b, "barlowd_request_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                   api_route_label(r), (unsigned long long)copy[r].count);
        buf_printf(b, "barlowd_request_seconds_sum{route=\"%s\"} %.6f\n", api_route_label(r),
                   copy[r].sum);
        buf_printf(b, "barlowd_request_seconds_count{route=\"%s\"} %llu\n", api_route_label(r),
                   (unsigned long long)copy[r].count);
    }
}
