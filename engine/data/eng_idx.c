/* eng_idx.c — IDX parsing: a big-endian header checked against the payload, no copy. */
#include "eng_idx.h"

#include <string.h>

/* A big-endian 32-bit field. */
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int eng_idx_parse(const void *bytes, size_t len, eng_idx *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    const uint8_t *b = bytes;
    if (!b || len < 4) return eng_fail(err, "idx: truncated header (%zu bytes)", len);
    if (b[0] != 0 || b[1] != 0)
        return eng_fail(err, "idx: bad magic %02x %02x %02x %02x (not an IDX file)", b[0], b[1],
                        b[2], b[3]);
    if (b[2] != 0x08)
        return eng_fail(err, "idx: unsupported element type 0x%02x (only unsigned bytes, 0x08)",
                        b[2]);
    int dims = b[3];
    if (dims != ENG_IDX_IMAGES && dims != ENG_IDX_LABELS)
        return eng_fail(err, "idx: unsupported rank %d (only 1 for labels, 3 for images)", dims);
    size_t header = 4 + 4 * (size_t)dims;
    if (len < header) return eng_fail(err, "idx: truncated header (%zu bytes)", len);
    size_t count = be32(b + 4);
    size_t per = 1;
    int rows = 0, cols = 0;
    if (dims == ENG_IDX_IMAGES) {
        uint32_t r = be32(b + 8), c = be32(b + 12);
        if (r < 1 || c < 1 || r > ENG_IMAGE_MAX_SIDE || c > ENG_IMAGE_MAX_SIDE)
            return eng_fail(err, "idx: invalid image size %ux%u (each side must be 1..%d)",
                            (unsigned)r, (unsigned)c, ENG_IMAGE_MAX_SIDE);
        rows = (int)r;
        cols = (int)c;
        per = (size_t)r * (size_t)c; /* < 2^32: fits */
    }
    size_t avail = len - header;
    if (count > avail / per)
        return eng_fail(err, "idx: truncated (header declares %zu items of %zu bytes, %zu bytes "
                             "present)",
                        count, per, avail);
    if (count * per != avail)
        return eng_fail(err, "idx: %zu unexpected trailing bytes", avail - count * per);
    out->kind = dims;
    out->count = count;
    out->rows = rows;
    out->cols = cols;
    out->data = b + header;
    return 0;
}

int eng_idx_image(const eng_idx *idx, size_t i, eng_image *out, eng_err *err) {
    memset(out, 0, sizeof *out);
    if (!idx || idx->kind != ENG_IDX_IMAGES || !idx->data)
        return eng_fail(err, "idx: not an image file");
    if (i >= idx->count)
        return eng_fail(err, "idx: image %zu out of range (%zu images)", i, idx->count);
    if (eng_image_alloc(out, idx->cols, idx->rows, 1, err) != 0) return -1;
    size_t per = (size_t)idx->rows * (size_t)idx->cols;
    memcpy(out->pixels, idx->data + i * per, per);
    return 0;
}
