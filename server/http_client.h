/* http_client.h — a minimal blocking HTTP/1.1 client (one request per connection): the health
 * probe of `barlowd health` (so the Docker image needs no curl) and the tests' client. */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include <stddef.h>

typedef struct http_reply {
    int status;        /* 0 when no valid response came */
    char *headers;     /* malloc'd raw header block (NUL-terminated) */
    char *body;        /* malloc'd, NUL-terminated (len bytes before it) */
    size_t len;
} http_reply;

/* Sends one request to host:port (numeric IPv4/IPv6) and reads the whole response.
 * extra_headers: "Name: value\r\n" lines or NULL. body may be NULL. Returns 0 when a response
 * came (any status), -1 on a connection failure or timeout (message in err). */
int http_request(const char *host, int port, const char *method, const char *path,
                 const char *extra_headers, const void *body, size_t len, double timeout_s,
                 http_reply *out, char *err, size_t err_len);
/* A header's value (case-insensitive name) copied into out; 0 found, -1 not. */
int http_reply_header(const http_reply *r, const char *name, char *out, size_t n);
void http_reply_free(http_reply *r);

#endif
