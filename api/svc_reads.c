/* svc_reads.c — what the request paths read besides vectors: image records, bytes and
 * thumbnails, liveness, the list of model versions, the training log, and the embedding of an
 * uploaded image's bytes. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"
#include "eng_thumbnail.h"

int svc_image_get(svc *s, int64_t id, svc_image *out, svc_err *err) {
    store_err se = {0};
    int r = store_image_get(s->st, id, out, &se);
    if (r < 0) return svc_fail(err, ERR_INTERNAL, "reading image %lld: %s", (long long)id, se.msg);
    return r;
}

void svc_image_free(svc_image *img) { store_image_info_free(img); }

int svc_image_bytes(svc *s, int64_t id, void **bytes, size_t *len, char media_type[64],
                    svc_err *err) {
    *bytes = NULL;
    *len = 0;
    svc_image img;
    int r = svc_image_get(s, id, &img, err);
    if (r) return r;
    memcpy(media_type, img.media_type, 64);
    svc_image_free(&img);
    store_err se = {0};
    r = store_image_data(s->st, id, 0, bytes, len, &se);
    if (r < 0) return svc_fail(err, ERR_INTERNAL, "reading image %lld: %s", (long long)id, se.msg);
    return r;
}

int svc_image_thumbnail(svc *s, int64_t id, int side, uint8_t **png, size_t *len, svc_err *err) {
    assert(side >= 1 && side <= SVC_THUMBNAIL_MAX);
    *png = NULL;
    *len = 0;
    void *bytes;
    size_t n;
    char type[64];
    int r = svc_image_bytes(s, id, &bytes, &n, type, err);
    if (r) return r;
    eng_decode_opts o = eng_decode_defaults();
    o.max_pixels = s->opts.max_pixels;
    o.min_side = side; /* a photo's JPEG decodes at 1/8 for a tile (12 MP: 88 ms, not 158) */
    eng_image img = {0}, fit = {0};
    eng_err ee = {0};
    r = eng_image_decode(bytes, n, &o, &img, &ee);
    free(bytes);
    if (!r) r = eng_image_fit(&img, side, &fit, &ee);
    if (!r) r = eng_image_encode_png(&fit, png, len, &ee);
    eng_image_free(&img);
    eng_image_free(&fit);
    if (r) return svc_fail(err, ERR_INTERNAL, "thumbnail of image %lld: %s", (long long)id, ee.msg);
    return 0;
}

int svc_training_log(svc *s, int64_t since, int64_t every, store_log_row *out, int max,
                     svc_err *err) {
    store_err se = {0};
    int n = store_log_since(s->st, since, every, out, max, &se);
    if (n < 0) return svc_store_fail(s, err, &se, "training log: %s", se.msg);
    return n;
}

int svc_image_live(svc *s, int64_t id) { return store_image_live(s->st, id); }

int64_t svc_image_count(svc *s) { return store_image_count(s->st); }

int svc_embed_bytes(svc *s, const void *bytes, size_t len, const char *declared_type, float *v,
                    int64_t *version, svc_err *err) {
    eng_image img;
    if (svc_prepare(s, bytes, len, declared_type, &img, err)) return -1;
    svc_version *ver = svc_version_acquire(s);
    eng_aug_src src = eng_image_as_src(&img);
    int bad = svc_version_embed(ver, &src, 1, v, err);
    *version = ver->id;
    svc_version_release(ver);
    eng_image_free(&img);
    return bad ? -1 : 0;
}

int svc_checkpoint_blob(svc *s, int64_t version, void **blob, size_t *len, svc_err *err) {
    store_err se = {0};
    store_checkpoint_info info;
    *blob = NULL;
    int r = store_checkpoint_get(s->st, version, &info, blob, len, &se);
    if (r < 0) return svc_fail(err, svc_code_of(&se), "reading model version %lld: %s",
                               (long long)version, se.msg);
    return r;
}

int svc_checkpoints(svc *s, svc_checkpoint *out, int max, svc_err *err) {
    store_err se = {0};
    int n = store_checkpoint_list(s->st, out, max, &se);
    if (n < 0) return svc_fail(err, ERR_INTERNAL, "listing model versions: %s", se.msg);
    return n;
}
