/* eng_err.h — error values for the engine: every fallible call fills an eng_err and returns -1.
 *
 * The engine never prints and never exits; it describes what went wrong in a short sentence that
 * the caller may log, wrap or send to a client. */
#ifndef ENG_ERR_H
#define ENG_ERR_H

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

/* Propagates a -1 from an engine call (the callee already filled err). */
#define ENG_TRY(call)                                                                           \
    do {                                                                                        \
        if ((call) != 0) goto fail;                                                             \
    } while (0)

#endif
