/* openapi_check.h — api/openapi.yaml as a tree (libyaml into jansson values) and a validator of
 * real responses against it: the path template and operation, the response for the status, its
 * media type and, for JSON, the body against the OpenAPI 3.0 schema subset the spec uses.
 * Never prints, never exits: every failure comes back as a value with a message. */
#ifndef OPENAPI_CHECK_H
#define OPENAPI_CHECK_H

#include <jansson.h>
#include <stddef.h>

#define OAC_MAX_OPS 64

typedef struct oac_op {
    char method[8];    /* upper case: "GET" */
    const char *path;  /* the template, "/images/{id}/raw" (a key of the spec tree) */
    const json_t *def; /* the operation object (borrowed from the tree) */
} oac_op;

typedef struct oac_spec {
    json_t *root; /* the whole document (owned) */
    int n_ops;
    oac_op ops[OAC_MAX_OPS]; /* in the spec's order, paths then methods */
} oac_spec;

typedef struct oac_response {
    const char *method;       /* as sent: "GET" */
    const char *path;         /* concrete, may carry a query: "/images/12/raw?x=1" */
    int status;
    const char *content_type; /* the header's value, NULL when absent */
    const char *body;
    size_t len;
} oac_response;

/* Loads the YAML file at path into *out. Plain scalars become JSON integers, reals, booleans
 * or null when they read as such; quoted ones stay strings. Returns 0, or -1 with a message in
 * err (and *out zeroed). The caller owns *out and frees it with oac_free. */
int oac_load(const char *path, oac_spec *out, char *err, size_t n);
void oac_free(oac_spec *s);

/* The operation a request reaches: the template that fits the path (literal segments before
 * parameters, as OpenAPI orders them) with that method; -1 when none does. */
int oac_find_op(const oac_spec *s, const char *method, const char *path);

/* Validates a response. *op gets oac_find_op's answer. Without an operation, a JSON body must
 * still be the Error schema. Returns 0 when the response fits, -1 with "pointer: what is
 * wrong" in err. */
int oac_check(const oac_spec *s, const oac_response *r, int *op, char *err, size_t n);

/* Validates instance against schema (resolving $ref in s). 0 or -1 with a message in err. */
int oac_validate(const oac_spec *s, const json_t *schema, const json_t *instance, char *err,
                 size_t n);

#endif
