/* remote.c — requests to a barlowd server over libcurl, retried with backoff; see remote.h.
 *
 * Every request starts from curl_easy_reset, which keeps the handle's live connection, so one
 * remote is one keep-alive connection whatever was sent on it before. */
#include "remote.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ATTEMPTS 6
#define FIRST_WAIT_S 0.25
#define LONGEST_WAIT_S 8.0 /* a cap for a longer MAX_ATTEMPTS; 6 attempts never reach it */
#define LONGEST_RETRY_AFTER_S 30
#define MAX_REPLY_BYTES (64u << 20)

struct remote {
    CURL *h;
    char *base;                   /* base URL without a trailing '/' */
    char *auth;                   /* "Authorization: Bearer KEY", or NULL */
    char *body;                   /* the reply being received (malloc'd, NUL-terminated) */
    size_t len, cap;
    char errbuf[CURL_ERROR_SIZE]; /* curl's detail on a transport error */
};

int remote_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

void remote_global_cleanup(void) { curl_global_cleanup(); }

remote *remote_open(const char *base_url, const char *api_key) {
    assert(base_url);
    remote *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->h = curl_easy_init();
    r->base = strdup(base_url);
    if (api_key) {
        size_t n = strlen(api_key) + 32;
        r->auth = malloc(n);
        if (r->auth) snprintf(r->auth, n, "Authorization: Bearer %s", api_key);
    }
    if (!r->h || !r->base || (api_key && !r->auth)) {
        remote_close(r);
        return NULL;
    }
    size_t n = strlen(r->base);
    while (n > 0 && r->base[n - 1] == '/') r->base[--n] = 0;
    return r;
}

void remote_close(remote *r) {
    if (!r) return;
    if (r->h) curl_easy_cleanup(r->h);
    free(r->base);
    free(r->auth);
    free(r->body);
    free(r);
}

void remote_reply_free(remote_reply *out) {
    json_decref(out->json);
    out->json = NULL;
}

char *remote_escape(const char *s) {
    char *e = curl_easy_escape(NULL, s, 0);
    char *copy = e ? strdup(e) : NULL;
    curl_free(e);
    return copy;
}

/* curl's write callback: appends to r->body (refusing replies over MAX_REPLY_BYTES). */
static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx) {
    remote *r = ctx;
    size_t n = size * nmemb;
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        if (cap > MAX_REPLY_BYTES) return 0; /* curl fails the transfer (CURLE_WRITE_ERROR) */
        char *p = realloc(r->body, cap);
        if (!p) return 0;
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = 0;
    return n;
}

/* Transport errors worth another attempt (the server restarting, a dropped connection). */
static int transient(CURLcode c) {
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Fills out from a response that came: status, JSON, the error's fields. */
static void read_reply(remote *r, long status, remote_reply *out) {
    out->status = status;
    json_decref(out->json);
    out->json = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    out->code[0] = out->message[0] = 0;
    out->part = -1;
    if (status < 400) return;
    json_t *e = json_object_get(out->json, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    json_t *part = json_object_get(e, "part");
    snprintf(out->code, sizeof out->code, "%s", code ? code : "http_error");
    if (msg)
        snprintf(out->message, sizeof out->message, "%s", msg);
    else
        snprintf(out->message, sizeof out->message, "HTTP %ld: %.200s", status,
                 r->len ? r->body : "(no body)");
    if (json_is_integer(part) && json_integer_value(part) >= 0 &&
        json_integer_value(part) < 1 << 30)
        out->part = (int)json_integer_value(part);
}

/* Runs the request set up on r->h (with its header list) until it gets an answer other than 503
 * or runs out of attempts. */
static int perform(remote *r, remote_reply *out) {
    double wait = FIRST_WAIT_S;
    for (int attempt = 1;; attempt++) {
        r->len = 0;
        r->errbuf[0] = 0;
        curl_off_t retry_after = 0;
        CURLcode c = curl_easy_perform(r->h);
        if (c == CURLE_OK) {
            long status = 0;
            curl_off_t up = 0;
            curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(r->h, CURLINFO_SIZE_UPLOAD_T, &up);
            read_reply(r, status, out);
            out->bytes_up = up > 0 ? (uint64_t)up : 0;
            if (status != 503) return 0;
            curl_easy_getinfo(r->h, CURLINFO_RETRY_AFTER, &retry_after);
        } else {
            out->status = 0;
            out->part = -1;
            snprintf(out->code, sizeof out->code, "connection");
            snprintf(out->message, sizeof out->message, "%s%s%s", curl_easy_strerror(c),
                     r->errbuf[0] ? ": " : "", r->errbuf);
            if (!transient(c)) return -1;
        }
        if (attempt == MAX_ATTEMPTS) return -1;
        if (retry_after > 0)
            sleep_s((double)(retry_after < LONGEST_RETRY_AFTER_S ? retry_after
                                                                  : LONGEST_RETRY_AFTER_S));
        else
            sleep_s(wait);
        wait = wait * 2 < LONGEST_WAIT_S ? wait * 2 : LONGEST_WAIT_S;
    }
}

/* Resets the handle for a new request to path; *headers gets the request's header list (the
 * caller frees it after perform). -1 when out of memory. */
static int setup(remote *r, const char *path, const char *content_type,
                 struct curl_slist **headers) {
    assert(path && path[0] == '/');
    curl_easy_reset(r->h);
    size_t n = strlen(r->base) + strlen(path) + 1;
    char *url = malloc(n);
    if (!url) return -1;
    snprintf(url, n, "%s%s", r->base, path);
    CURLcode c = curl_easy_setopt(r->h, CURLOPT_URL, url); /* curl copies the string */
    free(url);
    struct curl_slist *h = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (h && r->auth) h = curl_slist_append(h, r->auth);
    if (h && content_type) {
        char ct[160];
        snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
        h = curl_slist_append(h, ct);
    }
    *headers = h;
    if (c != CURLE_OK || !h) return -1;
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for DNS timeouts */
    curl_easy_setopt(r->h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT, 600L);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->h, CURLOPT_ERRORBUFFER, r->errbuf);
    return 0;
}

static int out_of_memory(remote_reply *out) {
    out->status = 0;
    out->part = -1;
    snprintf(out->code, sizeof out->code, "out_of_memory");
    snprintf(out->message, sizeof out->message, "out of memory building the request");
    return -1;
}

int remote_get(remote *r, const char *path, remote_reply *out) {
    struct curl_slist *h = NULL;
    int rc = setup(r, path, NULL, &h) ? out_of_memory(out) : perform(r, out);
    curl_slist_free_all(h);
    return rc;
}

int remote_post(remote *r, const char *path, const char *content_type, const void *body,
                size_t len, remote_reply *out) {
    struct curl_slist *h = NULL;
    int rc;
    if (setup(r, path, content_type, &h)) {
        rc = out_of_memory(out);
    } else {
        curl_easy_setopt(r->h, CURLOPT_POST, 1L);
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        rc = perform(r, out);
    }
    curl_slist_free_all(h);
    return rc;
}

int remote_post_images(remote *r, const char *path, const remote_part *parts, int n,
                       const char *meta_json, remote_reply *out) {
    assert(n > 0);
    struct curl_slist *h = NULL;
    curl_mime *mime = NULL;
    int rc = -1, ok = setup(r, path, NULL, &h) == 0 && (mime = curl_mime_init(r->h));
    for (int i = 0; ok && i < n; i++) {
        curl_mimepart *p = curl_mime_addpart(mime);
        const char *base = strrchr(parts[i].filename, '/');
        ok = p && curl_mime_name(p, "image") == CURLE_OK &&
             curl_mime_filename(p, base ? base + 1 : parts[i].filename) == CURLE_OK &&
             curl_mime_type(p, "application/octet-stream") == CURLE_OK && /* the bytes decide */
             curl_mime_data(p, parts[i].bytes, parts[i].len) == CURLE_OK;
    }
    if (ok && meta_json) {
        curl_mimepart *p = curl_mime_addpart(mime);
        ok = p && curl_mime_name(p, "meta") == CURLE_OK &&
             curl_mime_data(p, meta_json, CURL_ZERO_TERMINATED) == CURLE_OK;
    }
    if (ok) {
        curl_easy_setopt(r->h, CURLOPT_MIMEPOST, mime);
        rc = perform(r, out);
    } else {
        rc = out_of_memory(out);
    }
    curl_mime_free(mime);
    curl_slist_free_all(h);
    return rc;
}
