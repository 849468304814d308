/* eng_err.h — error values for the engine: every fallible call fills an eng_err and returns -1.
 *
 * The engine never prints and never exits; it describes what went wrong in a short sentence that
 * the caller may log, wrap or send to a client. */
#ifndef ENG_ERR_H
#define ENG_ERR_H

#include <oneapi/dnnl/dnnl.h>

#if DNNL_VERSION_MAJOR != 2
#error "barlowd's engine is written against the oneDNN 2.x C API (Debian 12's libdnnl-dev 2.6)"
#endif

#define ENG_ERR_LEN 256

/* What kind of failure an eng_err holds, for callers that answer clients. */
typedef enum eng_code {
    ENG_OK = 0,
    ENG_INTERNAL,    /* anything not listed below (oneDNN, a bug, a broken invariant) */
    ENG_BAD_INPUT,   /* the caller's data is wrong: an undecodable image, a bad query vector */
    ENG_TOO_LARGE,   /* over a limit the caller set (e.g. an image's pixel count) */
    ENG_NO_MEMORY    /* an allocation failed */
} eng_code;

typedef struct eng_err {
    char msg[ENG_ERR_LEN]; /* NUL-terminated human-readable reason; "" when nothing failed */
    eng_code code;         /* ENG_OK when nothing failed */
} eng_err;

/* Formats a message into err (which may be NULL), sets its code to ENG_INTERNAL and returns -1,
 * so callers can write `return eng_fail(err, "...")`. */
int eng_fail(eng_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a code. */
int eng_fail_code(eng_err *err, eng_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Name of a oneDNN status code ("invalid_arguments", ...). This function can't fail. */
const char *eng_dnnl_status_str(dnnl_status_t s);

/* Runs a oneDNN call; on failure records where and why in `err` and jumps to `fail`. */
#define ENG_DNNL(call)                                                                          \
    do {                                                                                        \
        dnnl_status_t eng_st_ = (call);                                                         \
        if (eng_st_ != dnnl_success) {                                                          \
            eng_fail(err, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                    \
                     eng_dnnl_status_str(eng_st_));                                             \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

/* Propagates a -1 from an engine call (the callee already filled err). */
#define ENG_TRY(call)                                                                           \
    do {                                                                                        \
        if ((call) != 0) goto fail;                                                             \
    } while (0)

#endif
