/* eng_err.c — formatting of engine error values. */
#include "engine/eng_err.h"

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
    vfail(err, ENG_INTERNAL, fmt, ap);
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

const char *eng_dnnl_status_str(dnnl_status_t s) {
    switch (s) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out_of_memory";
    case dnnl_invalid_arguments: return "invalid_arguments";
    case dnnl_unimplemented: return "unimplemented";
    case dnnl_iterator_ends: return "iterator_ends";
    case dnnl_runtime_error: return "runtime_error";
    case dnnl_not_required: return "not_required";
    default: return "unknown_status";
    }
}
