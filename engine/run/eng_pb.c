/* eng_pb.c — the protocol buffers wire format, written into a growing buffer. */
#include "eng_pb.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* Room for n more bytes; 0 when the buffer has (or already had) failed to grow. */
static int room(eng_pb *b, size_t n) {
    if (b->failed) return 0;
    if (b->cap - b->len >= n) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n && cap <= SIZE_MAX / 2) cap *= 2;
    uint8_t *p = cap - b->len >= n ? realloc(b->p, cap) : NULL;
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

/* Writes v as a varint at out; returns its length (1..10). */
static size_t put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        out[n++] = (uint8_t)(byte | (v ? 0x80 : 0));
    } while (v);
    return n;
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >>= 7) n++;
    return n;
}

void eng_pb_varint(eng_pb *b, uint64_t v) {
    if (room(b, 10)) b->len += put_varint(b->p + b->len, v);
}

static void key(eng_pb *b, int field, int wire) {
    assert(field >= 1);
    eng_pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}

void eng_pb_int(eng_pb *b, int field, int64_t v) {
    key(b, field, WIRE_VARINT);
    eng_pb_varint(b, (uint64_t)v);
}

void eng_pb_float(eng_pb *b, int field, float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    key(b, field, WIRE_FIXED32);
    if (!room(b, 4)) return;
    for (int i = 0; i < 4; i++) b->p[b->len++] = (uint8_t)(u >> (8 * i));
}

void eng_pb_bytes(eng_pb *b, int field, const void *p, size_t n) {
    key(b, field, WIRE_LEN);
    eng_pb_varint(b, n);
    if (!n || !room(b, n)) return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void eng_pb_string(eng_pb *b, int field, const char *s) { eng_pb_bytes(b, field, s, strlen(s)); }

size_t eng_pb_begin(const eng_pb *b) { return b->len; }

void eng_pb_end(eng_pb *b, int field, size_t mark) {
    assert(mark <= b->len);
    if (b->failed) return;
    size_t n = b->len - mark;
    uint64_t k = (uint64_t)field << 3 | WIRE_LEN;
    size_t head = varint_len(k) + varint_len(n);
    if (!room(b, head)) return;
    memmove(b->p + mark + head, b->p + mark, n);
    size_t at = mark + put_varint(b->p + mark, k);
    put_varint(b->p + at, n);
    b->len += head;
}

void eng_pb_free(eng_pb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
