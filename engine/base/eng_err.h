/* eng_err.h — barlowd's one error value: every fallible call of the engine, the store and the
 * service fills an eng_err (a sentence and a code) and returns -1.
 *
 * The engine never prints and never exits; it describes what went wrong in a short sentence that
 * the caller may log, wrap or send to a client. */
#ifndef ENG_ERR_H
#define ENG_ERR_H

#define ENG_ERR_LEN 256

/* What kind of failure an eng_err holds: one list for the whole program, so that a failure keeps
 * its kind from the layer that saw it to the one HTTP status it gets (api_svc_error). */
typedef enum eng_code {
    ERR_OK = 0,
    ERR_INTERNAL,    /* anything not listed below (oneDNN, SQLite, a bug, a broken invariant) */
    ERR_BAD_INPUT,   /* the caller's data is wrong: an undecodable image, a bad query vector */
    ERR_TOO_LARGE,   /* over a limit the caller set (e.g. an image's pixel count) */
    ERR_NO_MEMORY,   /* an allocation failed: try again later */
    ERR_UNSUPPORTED, /* an unknown media type */
    ERR_NOT_FOUND,   /* no such image or version */
    ERR_UNAVAILABLE, /* not ready yet, or stopping: try again later */
    ERR_DISK_FULL,   /* the disk (the file system holding the database) is full: nothing written */
    ERR_N_CODES
} eng_code;

typedef struct eng_err {
    char msg[ENG_ERR_LEN]; /* NUL-terminated human-readable reason; "" when nothing failed */
    eng_code code;         /* ERR_OK when nothing failed */
} eng_err;

/* Formats a message into err (which may be NULL), sets its code to ERR_INTERNAL and returns -1,
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
