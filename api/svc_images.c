/* svc_images.c — uploads (decode, training copy, durable save, queue for a vector), image
 * preparation for queries, and deletes. */
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

/* Decodes and makes the training copy; *width and *height are the original's. */
static int prepare(const svc *s, const void *bytes, size_t len, const char *declared_type,
                   eng_image *out, int *width, int *height, svc_err *err) {
    memset(out, 0, sizeof *out);
    if (len == 0) return svc_fail(err, ERR_BAD_INPUT, "the image is empty");
    int kind = eng_image_sniff(bytes, len);
    const char *actual = eng_image_media_type(kind);
    if (!actual)
        return svc_fail(err, ERR_UNSUPPORTED,
                        "the body is not a PNG, JPEG or binary PGM image (unknown magic bytes)");
    if (declared_type && strcmp(declared_type, "application/octet-stream") &&
        strcmp(declared_type, actual))
        return svc_fail(err, ERR_UNSUPPORTED, "Content-Type says %.64s but the body is %s",
                        declared_type, actual);
    eng_decode_info info;
    eng_err e = {0};
    if (eng_train_copy_decode(bytes, len, s->opts.max_pixels, s->cfg.in_channels,
                              2 * s->cfg.input_size, out, &info, &e))
        return svc_fail(err, svc_code_of(&e), "%s", e.msg);
    *width = info.width;
    *height = info.height;
    return 0;
}

int svc_prepare(const svc *s, const void *bytes, size_t len, const char *declared_type,
                eng_image *out, svc_err *err) {
    int w, h;
    return prepare(s, bytes, len, declared_type, out, &w, &h, err);
}

int svc_upload(svc *s, const svc_blob *imgs, int n, const char *meta_json, int64_t *ids,
               int *existed, int *failed, svc_err *err) {
    *failed = -1;
    eng_image copy = {0};
    uint8_t **packed = calloc((size_t)n, sizeof *packed);
    size_t *packed_len = calloc((size_t)n, sizeof *packed_len);
    int *dims = calloc((size_t)n * 2, sizeof *dims);
    int rc = -1;
    if (!packed || !packed_len || !dims) {
        svc_fail(err, ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    /* every image is checked before any is saved: a request is stored whole or not at all */
    for (int i = 0; i < n; i++) {
        if (prepare(s, imgs[i].bytes, imgs[i].len, imgs[i].type, &copy, &dims[2 * i],
                    &dims[2 * i + 1], err)) {
            *failed = i;
            goto done;
        }
        eng_err e = {0};
        int bad = eng_train_copy_pack(&copy, &packed[i], &packed_len[i], &e);
        eng_image_free(&copy);
        if (bad) {
            svc_fail(err, ERR_INTERNAL, "%s", e.msg);
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        store_image_in in = {imgs[i].bytes, imgs[i].len,
                             eng_image_media_type(eng_image_sniff(imgs[i].bytes, imgs[i].len)),
                             dims[2 * i], dims[2 * i + 1], packed[i], packed_len[i], meta_json};
        store_err se = {0};
        if (store_image_put(s->st, &in, &ids[i], &existed[i], &se)) {
            svc_store_fail(s, err, &se, "saving image %d: %s", i, se.msg);
            goto done;
        }
        if (!existed[i]) svc_queue_push(s, ids[i]);
    }
    svc_write_ok(s);
    rc = 0;
done:
    for (int i = 0; packed && i < n; i++) free(packed[i]);
    free(packed);
    free(packed_len);
    free(dims);
    return rc;
}

int64_t svc_delete_ids(svc *s, const int64_t *ids, size_t n, svc_err *err) {
    int64_t *gone = malloc((n ? n : 1) * sizeof *gone);
    if (!gone) return svc_fail(err, ERR_NO_MEMORY, "out of memory for %zu ids", n);
    store_err se = {0};
    svc_mutex_lock(&s->member_mu);
    int64_t m = store_images_delete(s->st, ids, n, gone, &se);
    if (m > 0) {
        svc_version *v[2];
        svc_versions_acquire(s, &v[0], &v[1]);
        for (int i = 0; i < 2 && v[i]; i++) {
            svc_rwlock_wrlock(&v[i]->index_lock);
            for (int64_t j = 0; j < m; j++) eng_index_remove(&v[i]->index, gone[j]);
            svc_rwlock_unlock(&v[i]->index_lock);
        }
        svc_version_release(v[0]);
        svc_version_release(v[1]);
    }
    svc_mutex_unlock(&s->member_mu);
    free(gone);
    if (m < 0) return svc_store_fail(s, err, &se, "deleting images: %s", se.msg);
    if (m > 0) svc_write_ok(s);
    return m;
}

int svc_delete(svc *s, int64_t id, svc_err *err) {
    int64_t m = svc_delete_ids(s, &id, 1, err);
    return m < 0 ? -1 : m == 1 ? 0 : 1;
}

int svc_load_copies(svc *s, const int64_t *ids, int n, eng_image *imgs, eng_aug_src *srcs,
                    int64_t *kept, svc_err *err) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        void *bytes;
        size_t len;
        store_err se = {0};
        int r = store_image_data(s->st, ids[i], 1, &bytes, &len, &se);
        if (r == 1) continue; /* deleted meanwhile */
        if (r < 0) {
            for (int j = 0; j < m; j++) eng_image_free(&imgs[j]);
            return svc_fail(err, ERR_INTERNAL, "reading image %lld: %s", (long long)ids[i], se.msg);
        }
        eng_err e = {0};
        int bad = eng_train_copy_unpack(bytes, len, &imgs[m], &e);
        free(bytes);
        if (bad) { /* a damaged row: skip it rather than stall every batch behind it */
            continue;
        }
        srcs[m] = eng_image_as_src(&imgs[m]);
        kept[m++] = ids[i];
    }
    return m;
}
