/* svc_reads.c — what the request paths read besides vectors: image records and bytes, liveness,
 * the list of model versions, and the embedding of an uploaded image's bytes. */
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

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
