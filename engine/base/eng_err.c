/* eng_err.c — formatting of engine error values. */
#include "eng_err.h"

#include <stdarg.h>
#include <stdio.h>

static void vfail(eng_err *err, eng_code code, const char *fmt, va_list ap) {
    if (!err) return;
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int eng_fail(eng_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, ERR_INTERNAL, fmt, ap);
    va_end(ap);
    return -1;
}

int eng_fail_code(eng_err *err, eng_code code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, fmt, ap);
    va_end(ap);
    return -1;
}
