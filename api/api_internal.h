/* api_internal.h — helpers shared by api.c and routes.c only. */
#ifndef API_INTERNAL_H
#define API_INTERNAL_H

#include <jansson.h>

#include "api/api.h"

/* A growing text buffer (p malloc'd, NUL-terminated while len < cap). */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Routes, in the order of api_route_label (and of /metrics). */
enum { R_TRAIN, R_EMBED_ID, R_EMBED, R_NEIGHBORS, R_SEARCH, R_IMAGE, R_IMAGE_RAW, R_IMAGE_DEL,
       R_STATUS, R_CHECKPOINTS, R_HEALTHZ, R_READYZ, R_METRICS, R_NONE, R_REJECTED, R_OTHER };
extern const char *const api_route_label[API_ROUTES];
/* Sets a JSON response (takes the reference to body). */
void api_json(api_response *rs, int status, json_t *body);
/* The error response of a service failure (status from its kind), message after prefix. */
void api_svc_error(api_response *rs, const svc_err *e, const char *prefix);
/* 1 when no key is configured or the request carries it (compared in constant time). */
int api_authorized(const api *a, const api_request *rq);
/* Appends the request counters and histograms in Prometheus text format. */
void api_metrics_text(api *a, buf *b);

#endif
