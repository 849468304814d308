/* svc_export.c — a stored model version written for other runtimes (engine/run/eng_export.h):
 * read from the store, refused when the quality gate refused it, then written as ONNX or
 * safetensors. Needs only the store, so the offline `barlowd export` uses it as the route does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

int svc_export_store(store *st, int64_t version, eng_export_format fmt, uint8_t **out,
                     size_t *len, svc_err *err) {
    *out = NULL;
    *len = 0;
    store_err se = {0};
    store_checkpoint_info info;
    void *blob = NULL;
    size_t blob_len = 0;
    int r = store_checkpoint_get(st, version, &info, &blob, &blob_len, &se);
    if (r < 0)
        return svc_fail(err, svc_code_of(&se), "reading model version %lld: %s",
                        (long long)version, se.msg);
    if (r == 1) return 1;
    store_quality q;
    r = store_quality_get(st, version, &q, &se);
    if (r < 0) {
        free(blob);
        return svc_fail(err, svc_code_of(&se), "reading model version %lld's decision: %s",
                        (long long)version, se.msg);
    }
    if (r == 0 && !q.accepted) {
        free(blob);
        svc_fail(err, ERR_BAD_INPUT,
                 "model version %lld was refused by the quality gate (%s); serve it by hand "
                 "(POST /checkpoints/%lld/serve) to export it",
                 (long long)version, q.reason, (long long)version);
        return 2;
    }
    eng_ckpt_weights w;
    eng_err e = {0};
    int bad = eng_checkpoint_weights(blob, blob_len, &w, &e);
    free(blob);
    if (!bad) {
        bad = eng_export(&w, fmt, version, out, len, &e);
        eng_ckpt_weights_free(&w);
    }
    if (bad) {
        /* a stored checkpoint that cannot be written is the server's problem, not the client's */
        eng_code code = e.code == ERR_NO_MEMORY ? ERR_NO_MEMORY : ERR_INTERNAL;
        return svc_fail(err, code, "exporting model version %lld: %s", (long long)version,
                        e.msg);
    }
    return 0;
}

int svc_export(svc *s, int64_t version, eng_export_format fmt, uint8_t **out, size_t *len,
               svc_err *err) {
    return svc_export_store(s->st, version, fmt, out, len, err);
}

int svc_export_default_version(store *st, int64_t *version, svc_err *err) {
    store_err se = {0};
    int r = store_state_get(st, "serving_version", version, &se);
    if (r < 0) return svc_fail(err, svc_code_of(&se), "reading the serving version: %s", se.msg);
    if (r == 0) return 0;
    store_checkpoint_info info;
    int n = store_checkpoint_list(st, &info, 1, &se);
    if (n < 0) return svc_fail(err, svc_code_of(&se), "listing model versions: %s", se.msg);
    if (n == 0) return 1;
    *version = info.version;
    return 0;
}
