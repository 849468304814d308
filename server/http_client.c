/* http_client.c — one HTTP/1.1 request per connection, "Connection: close", whole response
 * read into memory (bodies here are small: JSON and test images). */
#include "http_client.h"
#include "cli_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int wait_fd(int fd, short ev, double until) {
    int ms = (int)((until - cli_now()) * 1e3);
    if (ms < 0) return -1;
    struct pollfd p = {fd, ev, 0};
    return poll(&p, 1, ms) == 1 ? 0 : -1;
}

static int send_all(int fd, const void *p, size_t n, double until) {
    const char *c = p;
    while (n) {
        if (wait_fd(fd, POLLOUT, until)) return -1;
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int http_request(const char *host, int port, const char *method, const char *path,
                 const char *extra_headers, const void *body, size_t len, double timeout_s,
                 http_reply *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    double until = cli_now() + timeout_s;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        sl = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        sl = sizeof *v6;
    } else {
        snprintf(err, err_len, "not a numeric address: %s", host);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    char *resp = NULL;
    size_t rlen = 0, rcap = 0;
    if (connect(fd, (struct sockaddr *)&ss, sl)) {
        snprintf(err, err_len, "connect %s:%d: %s", host, port, strerror(errno));
        goto fail;
    }
    char head[2048];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, host, port, extra_headers ? extra_headers : "", len);
    if (hn < 0 || (size_t)hn >= sizeof head) {
        snprintf(err, err_len, "request head too long");
        goto fail;
    }
    if (send_all(fd, head, (size_t)hn, until) || (len && send_all(fd, body, len, until))) {
        /* the server may answer early (e.g. 413) and close: still read what it said */
    }
    for (;;) {
        if (rlen + 4096 + 1 > rcap) {
            size_t c = rcap ? 2 * rcap : 16384;
            char *p = realloc(resp, c);
            if (!p) goto fail;
            resp = p;
            rcap = c;
        }
        if (wait_fd(fd, POLLIN, until)) {
            snprintf(err, err_len, "timed out waiting for the response");
            goto fail;
        }
        ssize_t k = recv(fd, resp + rlen, rcap - rlen - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && rlen == 0) {
            snprintf(err, err_len, "recv: %s", strerror(errno));
            goto fail;
        }
        if (k <= 0) break;
        rlen += (size_t)k;
    }
    close(fd);
    fd = -1;
    if (!resp) {
        snprintf(err, err_len, "empty response");
        return -1;
    }
    resp[rlen] = 0;
    char *end = strstr(resp, "\r\n\r\n");
    if (!end || sscanf(resp, "HTTP/1.%*d %d", &out->status) != 1) {
        snprintf(err, err_len, "malformed response");
        free(resp);
        return -1;
    }
    size_t hl = (size_t)(end - resp);
    out->headers = malloc(hl + 1);
    size_t bl = rlen - hl - 4;
    out->body = malloc(bl + 1);
    if (!out->headers || !out->body) {
        http_reply_free(out);
        free(resp);
        return -1;
    }
    memcpy(out->headers, resp, hl);
    out->headers[hl] = 0;
    memcpy(out->body, end + 4, bl);
    out->body[bl] = 0;
    out->len = bl;
    free(resp);
    return 0;
fail:
    if (fd >= 0) close(fd);
    free(resp);
    return -1;
}

int http_reply_header(const http_reply *r, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            size_t vl = ll - (size_t)(v - line);
            if (vl >= n) vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 0;
        }
        line = eol ? eol + 2 : NULL;
    }
    return -1;
}

void http_reply_free(http_reply *r) {
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}
