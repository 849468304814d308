/* eng_dnnl.h — the neural-network library's glue to oneDNN's C API: the version it is written
 * against, status names, and the macro that turns a failed oneDNN call into an eng_err. */
#ifndef ENG_DNNL_H
#define ENG_DNNL_H

#include <oneapi/dnnl/dnnl.h>

#include "eng_err.h"

#if DNNL_VERSION_MAJOR != 2
#error "barlowd's engine is written against the oneDNN 2.x C API (Debian 12's libdnnl-dev 2.6)"
#endif

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

#endif
