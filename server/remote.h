/* remote.h — a barlowd server seen from the command line (`barlowd upload`, `barlowd search`):
 * requests over libcurl with retries, replies as JSON with the server's error fields picked out.
 *
 * A remote is one keep-alive connection (one curl easy handle): one thread uses it at a time.
 * curl_global_init must have run (remote_global_init) before the first remote_open. */
#ifndef REMOTE_H
#define REMOTE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct remote remote;

typedef struct remote_reply {
    long status;        /* HTTP status of the last attempt; 0 when no response came */
    json_t *json;       /* the body parsed as JSON, or NULL */
    char code[64];      /* error.code of an error body, or what went wrong without a response */
    char message[512];  /* error.message, or the transport's message; "" on success */
    int part;           /* error.part (the refused image of a multipart POST /train), or -1 */
    uint64_t bytes_up;  /* request body bytes sent by the successful (last) attempt */
} remote_reply;

/* One image of a multipart POST /train. */
typedef struct remote_part {
    const char *filename; /* the part's filename (only its last component is sent) */
    const void *bytes;
    size_t len;
} remote_part;

/* curl_global_init / cleanup: once per process, before any thread starts / after all ended. */
int remote_global_init(void);
void remote_global_cleanup(void);

/* A connection to base_url ("http://host:port", a trailing "/" allowed) sending
 * `Authorization: Bearer api_key` when api_key is not NULL. NULL when out of memory. */
remote *remote_open(const char *base_url, const char *api_key);
void remote_close(remote *r);

/* The requests. path starts with "/" and is already URL-encoded. Each one is retried with
 * exponential backoff (6 attempts in all, 0.25 s doubling between them: 7.75 s of waiting) on
 * connection errors and on 503 (waiting the server's Retry-After instead when it gives one, at
 * most 30 s). Returns 0 when a response other than
 * 503 came (any status: check out->status), -1 when every attempt failed (out->status 0 or 503,
 * out->code and out->message say why). out is always filled; free it with remote_reply_free. */
int remote_get(remote *r, const char *path, remote_reply *out);
int remote_post(remote *r, const char *path, const char *content_type, const void *body,
                size_t len, remote_reply *out);
/* POST path as multipart/form-data: the n images, then a `meta` field when meta_json is not NULL. */
int remote_post_images(remote *r, const char *path, const remote_part *parts, int n,
                       const char *meta_json, remote_reply *out);
void remote_reply_free(remote_reply *out);

/* s URL-encoded for a query parameter (malloc'd; NULL when out of memory). */
char *remote_escape(const char *s);

#endif
