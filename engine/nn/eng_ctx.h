/* eng_ctx.h — the oneDNN execution context one model runs in.
 *
 * A context owns a CPU engine, an in-order stream, the primitive attribute every primitive is
 * created with (user-managed scratchpad), and the scratchpad buffer itself. Primitives built in a
 * context execute one after another on its stream, so they can share one scratchpad: its size is
 * the largest that any primitive asked for (see eng_ctx_note_scratch), allocated once by
 * eng_ctx_finish_build. Nothing here is global: two contexts can run in the same process. */
#ifndef ENG_CTX_H
#define ENG_CTX_H

#include <stddef.h>

#include "eng_dnnl.h"

#define ENG_CTX_MAX_IMPLS 24

typedef struct eng_ctx {
    dnnl_engine_t engine;       /* CPU engine */
    dnnl_stream_t stream;       /* in-order stream all primitives of this context run on */
    dnnl_primitive_attr_t attr; /* scratchpad_mode_user; cloned into attrs that add post-ops */
    size_t scratch_bytes;       /* largest scratchpad any primitive asked for */
    void *scratch;              /* owned, 64-byte aligned, scratch_bytes long (after finish_build) */
    dnnl_memory_t scratch_mem;  /* wraps scratch; NULL until finish_build */
    /* the distinct oneDNN implementations this context's primitives run ("jit:avx2",
     * "brg:avx512_core", "jit_wino_4x3:avx512_core", ...), first ENG_CTX_MAX_IMPLS of them */
    char impls[ENG_CTX_MAX_IMPLS][48];
    int n_impls;
} eng_ctx;

/* Creates the engine, stream and attribute and turns on flush-to-zero/denormals-are-zero on every
 * OpenMP thread. On error returns -1 and leaves ctx zeroed. */
int eng_ctx_init(eng_ctx *ctx, eng_err *err);

/* Records that primitive descriptor pd needs a scratchpad (grows the shared requirement) and the
 * name of the implementation oneDNN chose for it (ctx->impls). */
int eng_ctx_note_scratch(eng_ctx *ctx, const_dnnl_primitive_desc_t pd, eng_err *err);

/* Allocates the shared scratchpad after every primitive has been created. */
int eng_ctx_finish_build(eng_ctx *ctx, eng_err *err);

/* Executes prim with args plus the shared scratchpad (nargs < 15). */
int eng_ctx_exec(eng_ctx *ctx, dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args,
                 eng_err *err);

/* Creates a primitive descriptor from an operation descriptor with the context's attribute (or
 * `attr` when not NULL), notes its scratchpad, and creates the primitive. *pd_out may be NULL if the
 * caller does not need to keep the descriptor. */
int eng_ctx_make_prim(eng_ctx *ctx, const void *op_desc, const_dnnl_primitive_attr_t attr,
                      const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *pd_out,
                      dnnl_primitive_t *prim_out, eng_err *err);

/* The highest instruction set oneDNN's kernels may use in this process, as oneDNN names it
 * ("avx2", "avx512_core", "avx512_core_vnni", ...): the CPU's, or lower under ONEDNN_MAX_CPU_ISA. */
const char *eng_cpu_isa(void);

/* ctx->impls joined with ", " into buf (truncated to size). */
void eng_ctx_impls(const eng_ctx *ctx, char *buf, size_t size);

/* 1 when oneDNN picked its slow reference implementation for pd ("ref:any" and friends). */
int eng_pd_is_ref(const_dnnl_primitive_desc_t pd);

/* Sets FTZ/DAZ on the calling thread and on every thread of the OpenMP team. */
void eng_set_flush_denormals(void);

/* How many OpenMP threads the engine's work on the calling thread may use from now on (its
 * OpenMP team size); n < 1 means the default (one per core). Servers give request threads one
 * thread each so concurrent requests do not oversubscribe the cores. */
void eng_set_threads(int n);

/* The calling thread's current OpenMP team size (what eng_set_threads last set, or the default). */
int eng_get_threads(void);

void eng_ctx_free(eng_ctx *ctx);

#endif
