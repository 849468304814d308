/* svc_collection.c — the collection as a whole: metadata filters, listing in id order, finding
 * an upload by its SHA-256, and deleting many images (by ids or by filter) at once. Filters are
 * evaluated from the store's in-memory metadata index (store_meta.c), never by scanning SQL. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "svc_internal.h"

int svc_filter_parse(const svc *s, const char *json, size_t len, svc_filter **out, svc_err *err) {
    (void)s;
    store_err se = {0};
    if (store_filter_parse(json, len, out, &se)) return svc_fail(err, se.code, "%s", se.msg);
    return 0;
}

void svc_filter_free(svc_filter *f) { store_filter_free(f); }

int svc_filter_is_empty(const svc_filter *f) { return store_filter_is_empty(f); }

int svc_image_page(svc *s, const svc_filter *f, int64_t after, int limit, svc_image *out,
                   int *n, int64_t *next, svc_err *err) {
    *n = 0;
    *next = -1;
    eng_idset set;
    store_err se = {0};
    if (store_filter_eval(s->st, f, &set, &se)) return svc_fail(err, se.code, "%s", se.msg);
    int rc = 0;
    int64_t id = eng_idset_next(&set, after < 0 ? 0 : after + 1);
    while (id >= 0 && *n < limit) {
        int r = store_image_get(s->st, id, &out[*n], &se);
        if (r < 0) {
            rc = svc_fail(err, ERR_INTERNAL, "reading image %lld: %s", (long long)id, se.msg);
            break;
        }
        if (r == 0) ++*n; /* r == 1: deleted since the filter ran */
        id = eng_idset_next(&set, id + 1);
    }
    if (rc == 0 && id >= 0 && *n > 0) *next = out[*n - 1].id;
    if (rc) {
        for (int i = 0; i < *n; i++) svc_image_free(&out[i]);
        *n = 0;
    }
    eng_idset_free(&set);
    return rc;
}

int svc_image_by_sha(svc *s, const char *sha256_hex, svc_image *out, svc_err *err) {
    char hex[65];
    size_t len = strlen(sha256_hex);
    if (len != 64) return svc_fail(err, ERR_BAD_INPUT, "a SHA-256 is 64 hex digits");
    for (size_t i = 0; i < 64; i++) {
        if (!isxdigit((unsigned char)sha256_hex[i]))
            return svc_fail(err, ERR_BAD_INPUT, "a SHA-256 is 64 hex digits");
        hex[i] = (char)tolower((unsigned char)sha256_hex[i]);
    }
    hex[64] = 0;
    int64_t id;
    store_err se = {0};
    int r = store_image_by_sha(s->st, hex, &id, &se);
    if (r < 0) return svc_fail(err, ERR_INTERNAL, "%s", se.msg);
    if (r == 1) return 1;
    return svc_image_get(s, id, out, err);
}

int64_t svc_delete_matching(svc *s, const svc_filter *f, svc_err *err) {
    eng_idset set;
    store_err se = {0};
    if (store_filter_eval(s->st, f, &set, &se)) return svc_fail(err, se.code, "%s", se.msg);
    int64_t n = eng_idset_count(&set), m = 0;
    int64_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) {
        eng_idset_free(&set);
        return svc_fail(err, ERR_NO_MEMORY, "out of memory for %lld ids", (long long)n);
    }
    for (int64_t id = eng_idset_next(&set, 0); id >= 0; id = eng_idset_next(&set, id + 1))
        ids[m++] = id;
    eng_idset_free(&set);
    int64_t deleted = svc_delete_ids(s, ids, (size_t)m, err);
    free(ids);
    return deleted;
}
