/* eng_ctx.c — oneDNN engine, stream, attribute and shared scratchpad of one model. */
#include "eng_ctx.h"

#include <assert.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>

#include "eng_alloc.h"

void eng_set_flush_denormals(void) {
    /* MXCSR bit 15 = flush-to-zero, bit 6 = denormals-are-zero. Denormals slow training badly and
     * change no result that matters at float32. */
#pragma omp parallel
    { _mm_setcsr(_mm_getcsr() | 0x8040); }
    _mm_setcsr(_mm_getcsr() | 0x8040);
}

int eng_ctx_init(eng_ctx *ctx, eng_err *err) {
    memset(ctx, 0, sizeof *ctx);
    ENG_DNNL(dnnl_engine_create(&ctx->engine, dnnl_cpu, 0));
    ENG_DNNL(dnnl_stream_create(&ctx->stream, ctx->engine, dnnl_stream_default_flags));
    ENG_DNNL(dnnl_primitive_attr_create(&ctx->attr));
    ENG_DNNL(dnnl_primitive_attr_set_scratchpad_mode(ctx->attr, dnnl_scratchpad_mode_user));
    eng_set_flush_denormals();
    return 0;
fail:
    eng_ctx_free(ctx);
    return -1;
}

static void note_impl(eng_ctx *ctx, const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return;
    for (int i = 0; i < ctx->n_impls; i++)
        if (!strcmp(ctx->impls[i], impl)) return;
    if (ctx->n_impls == ENG_CTX_MAX_IMPLS) return;
    snprintf(ctx->impls[ctx->n_impls++], sizeof ctx->impls[0], "%s", impl);
}

int eng_ctx_note_scratch(eng_ctx *ctx, const_dnnl_primitive_desc_t pd, eng_err *err) {
    note_impl(ctx, pd);
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (!md) return 0;
    size_t need = dnnl_memory_desc_get_size(md);
    if (need > ctx->scratch_bytes) {
        if (ctx->scratch_mem)
            return eng_fail(err, "scratchpad grew after eng_ctx_finish_build (%zu bytes)", need);
        ctx->scratch_bytes = need;
    }
    return 0;
}

int eng_ctx_finish_build(eng_ctx *ctx, eng_err *err) {
    if (ctx->scratch_mem) return 0;
    size_t bytes = ctx->scratch_bytes ? ctx->scratch_bytes : 64;
    bytes = (bytes + 63) / 64 * 64;
    ctx->scratch = eng_alloc_zeroed(bytes);
    if (!ctx->scratch) return eng_fail(err, "out of memory for a %zu-byte scratchpad", bytes);
    dnnl_dims_t dims = {(dnnl_dim_t)bytes};
    dnnl_memory_desc_t md;
    ENG_DNNL(dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_a));
    ENG_DNNL(dnnl_memory_create(&ctx->scratch_mem, &md, ctx->engine, ctx->scratch));
    return 0;
fail:
    free(ctx->scratch);
    ctx->scratch = NULL;
    return -1;
}

int eng_ctx_exec(eng_ctx *ctx, dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args,
                 eng_err *err) {
    dnnl_exec_arg_t all[16];
    if (nargs > 15) return eng_fail(err, "eng_ctx_exec: too many arguments (%d)", nargs);
    memcpy(all, args, sizeof *args * (size_t)nargs);
    all[nargs].arg = DNNL_ARG_SCRATCHPAD;
    all[nargs].memory = ctx->scratch_mem;
    ENG_DNNL(dnnl_primitive_execute(prim, ctx->stream, nargs + 1, all));
    return 0;
fail:
    return -1;
}

int eng_ctx_make_prim(eng_ctx *ctx, const void *op_desc, const_dnnl_primitive_attr_t attr,
                      const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *pd_out,
                      dnnl_primitive_t *prim_out, eng_err *err) {
    dnnl_primitive_desc_t pd = NULL;
    *prim_out = NULL;
    ENG_DNNL(dnnl_primitive_desc_create(&pd, op_desc, attr ? attr : ctx->attr, ctx->engine, hint));
    ENG_TRY(eng_ctx_note_scratch(ctx, pd, err));
    ENG_DNNL(dnnl_primitive_create(prim_out, pd));
    if (pd_out)
        *pd_out = pd;
    else
        dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    return -1;
}

const char *eng_cpu_isa(void) {
    const char *name = dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa());
    return strncmp(name, "cpu_isa_", 8) ? name : name + 8;
}

void eng_ctx_impls(const eng_ctx *ctx, char *buf, size_t size) {
    assert(size > 0);
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < ctx->n_impls && at < size; i++) {
        int n = snprintf(buf + at, size - at, "%s%s", i ? ", " : "", ctx->impls[i]);
        if (n < 0) break;
        at += (size_t)n;
    }
}

int eng_pd_is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return 0;
    return strncmp(impl, "ref", 3) == 0;
}

void eng_ctx_free(eng_ctx *ctx) {
    if (ctx->scratch_mem) dnnl_memory_destroy(ctx->scratch_mem);
    free(ctx->scratch);
    if (ctx->attr) dnnl_primitive_attr_destroy(ctx->attr);
    if (ctx->stream) dnnl_stream_destroy(ctx->stream);
    if (ctx->engine) dnnl_engine_destroy(ctx->engine);
    memset(ctx, 0, sizeof *ctx);
}

void eng_set_threads(int n) { omp_set_num_threads(n >= 1 ? n : omp_get_num_procs()); }

int eng_get_threads(void) { return omp_get_max_threads(); }
