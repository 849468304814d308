/* api_internal.h — helpers shared by api.c and routes.c only. */
#ifndef API_INTERNAL_H
#define API_INTERNAL_H

#include <jansson.h>

#include "api.h"

/* A growing text buffer (p malloc'd, NUL-terminated while len < cap). */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The label of metrics slot i (0 <= i < API_ROUTES): the routes of routes.c's table in its order
 * ("POST /train", ...), then "unmatched", "rejected", "other". */
const char *api_route_label(int i);
/* How a route label's pattern ("GET /images/{id}") fits a path: -1 when it does not, else a score
 * that is higher for more literal segments, earlier ones counting more (the dispatcher takes the
 * best fit, then the method). */
long api_pattern_fit(const char *label, const char *path);
/* Sets a JSON response (takes the reference to body). */
void api_json(api_response *rs, int status, json_t *body);
/* The error response of a service failure (the status from its code), message after prefix. */
void api_svc_error(api_response *rs, const svc_err *e, const char *prefix);
/* The same for the image part `part` (0-based among a multipart POST /train's image parts) that
 * was refused: a 4xx body also carries "part": part (a 5xx never does); -1 for none. */
void api_svc_error_part(api_response *rs, const svc_err *e, const char *prefix, int part);
/* 503 out_of_memory with Retry-After (an allocation of the handler's own failed). */
void api_out_of_memory(api_response *rs);
/* 1 when no key is configured or the request carries it (compared in constant time). */
int api_authorized(const api *a, const api_request *rq);
/* Appends the request counters and histograms in Prometheus text format. */
void api_metrics_text(api *a, buf *b);

#endif
