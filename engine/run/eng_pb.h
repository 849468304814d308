/* eng_pb.h — writing the protocol buffers wire format (for ONNX files), by hand.
 *
 * The encoding (protobuf.dev, "Encoding"): a message is a sequence of fields, each a key — the
 * varint (field_number << 3 | wire_type) — and a value: wire type 0 is a varint (int32, int64,
 * enums; little-endian base-128 groups of 7 bits, the high bit set on all but the last byte;
 * negative values as their 64-bit two's complement), 5 a fixed 32-bit little-endian value
 * (float), 2 a varint length then that many bytes (strings, bytes, nested messages). Repeated
 * fields are the same field written once per element. Fields may come in any order.
 *
 * A nested message is written in place and then prefixed with its key and length
 * (eng_pb_begin ... eng_pb_end), which moves it by a few bytes: a whole file is copied about
 * once per nesting level. An allocation failure is remembered and turns every later write into
 * a no-op, so a writer checks `failed` once at the end. */
#ifndef ENG_PB_H
#define ENG_PB_H

#include <stddef.h>
#include <stdint.h>

typedef struct eng_pb {
    uint8_t *p;      /* owned (malloc'd): the bytes written so far */
    size_t len, cap;
    int failed;      /* 1 once an allocation failed (the contents are then incomplete) */
} eng_pb;

/* A bare varint (no key). */
void eng_pb_varint(eng_pb *b, uint64_t v);
/* Field `field` (>= 1) as a varint: int32, int64 and enum fields. */
void eng_pb_int(eng_pb *b, int field, int64_t v);
/* Field `field` as a fixed 32-bit float. */
void eng_pb_float(eng_pb *b, int field, float v);
/* Field `field` as n length-delimited bytes (bytes fields; p may be NULL when n is 0). */
void eng_pb_bytes(eng_pb *b, int field, const void *p, size_t n);
/* The same for a NUL-terminated string. */
void eng_pb_string(eng_pb *b, int field, const char *s);
/* A nested message: returns a mark; write its fields; eng_pb_end makes everything written since
 * the mark the value of field `field`. */
size_t eng_pb_begin(const eng_pb *b);
void eng_pb_end(eng_pb *b, int field, size_t mark);
/* Frees the bytes and zeroes b. */
void eng_pb_free(eng_pb *b);

#endif
