/* train_wire.c — frames between the server and its training job's rank 0 (train_wire.h). */
#include "train_wire.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct wire_hdr {
    uint32_t magic, type;
    uint64_t len;
} wire_hdr;

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int wire_send(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen) {
    wire_hdr h = {WIRE_MAGIC, type, (uint64_t)(alen + blen)};
    if (write_all(fd, &h, sizeof h)) return -1;
    if (alen && write_all(fd, a, alen)) return -1;
    if (blen && write_all(fd, b, blen)) return -1;
    return 0;
}

/* Reads n bytes, polling a second at a time so that give_up is asked. */
static int read_all(int fd, void *buf, size_t n, int (*give_up)(void *), void *ctx, char *msg,
                    size_t msglen) {
    char *p = buf;
    while (n) {
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, 1000);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(msg, msglen, "poll: %s", strerror(errno));
            return -1;
        }
        if (r == 0) {
            if (give_up && give_up(ctx)) {
                snprintf(msg, msglen, "gave up waiting");
                return -1;
            }
            continue;
        }
        ssize_t k = read(fd, p, n);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) {
            snprintf(msg, msglen, "%s", k == 0 ? "the connection closed" : strerror(errno));
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int wire_recv(int fd, uint32_t *type, uint8_t **payload, size_t *len, int (*give_up)(void *),
              void *ctx, char *msg, size_t msglen) {
    *payload = NULL;
    *len = 0;
    wire_hdr h;
    if (read_all(fd, &h, sizeof h, give_up, ctx, msg, msglen)) return -1;
    if (h.magic != WIRE_MAGIC || h.len > WIRE_MAX_PAYLOAD) {
        snprintf(msg, msglen, "a bad frame (magic %08x, %llu bytes)", h.magic,
                 (unsigned long long)h.len);
        return -1;
    }
    if (h.len) {
        *payload = malloc((size_t)h.len);
        if (!*payload) {
            snprintf(msg, msglen, "out of memory for a frame of %llu bytes", (unsigned long long)h.len);
            return -1;
        }
        if (read_all(fd, *payload, (size_t)h.len, give_up, ctx, msg, msglen)) {
            free(*payload);
            *payload = NULL;
            return -1;
        }
    }
    *type = h.type;
    *len = (size_t)h.len;
    return 0;
}

uint8_t *wire_pack_images(const eng_image *imgs, int n, size_t *len) {
    size_t total = 4;
    for (int i = 0; i < n; i++)
        total += 12 + (size_t)imgs[i].width * imgs[i].height * imgs[i].channels;
    uint8_t *p = malloc(total), *at = p;
    if (!p) return NULL;
    uint32_t count = (uint32_t)n;
    memcpy(at, &count, 4);
    at += 4;
    for (int i = 0; i < n; i++) {
        uint32_t d[3] = {(uint32_t)imgs[i].width, (uint32_t)imgs[i].height,
                         (uint32_t)imgs[i].channels};
        size_t bytes = (size_t)d[0] * d[1] * d[2];
        memcpy(at, d, 12);
        memcpy(at + 12, imgs[i].pixels, bytes);
        at += 12 + bytes;
    }
    *len = total;
    return p;
}

int wire_unpack_images(const uint8_t *p, size_t len, eng_image *imgs, int cap, int *n) {
    uint32_t count;
    *n = 0;
    if (len < 4) return -1;
    memcpy(&count, p, 4);
    if (count > (uint32_t)cap) return -1;
    size_t at = 4;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t d[3];
        if (len - at < 12) goto bad;
        memcpy(d, p + at, 12);
        at += 12;
        if (!d[0] || !d[1] || d[2] < 1 || d[2] > 4 || d[0] > 65536 || d[1] > 65536) goto bad;
        size_t bytes = (size_t)d[0] * d[1] * d[2];
        if (len - at < bytes) goto bad;
        imgs[i].pixels = malloc(bytes);
        if (!imgs[i].pixels) goto bad;
        memcpy(imgs[i].pixels, p + at, bytes);
        imgs[i].width = (int)d[0];
        imgs[i].height = (int)d[1];
        imgs[i].channels = (int)d[2];
        at += bytes;
        (*n)++;
    }
    if (at != len) goto bad;
    return 0;
bad:
    for (int i = 0; i < *n; i++) eng_image_free(&imgs[i]);
    *n = 0;
    return -1;
}
