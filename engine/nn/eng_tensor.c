/* eng_tensor.c — float32 tensors over oneDNN memory, and layout helpers. */
#include "eng_tensor.h"

#include <stdlib.h>
#include <string.h>

#include "eng_alloc.h"

int eng_tensor_alloc(eng_tensor *t, eng_ctx *ctx, const dnnl_memory_desc_t *md, eng_err *err) {
    memset(t, 0, sizeof *t);
    size_t bytes = dnnl_memory_desc_get_size(md);
    float *data = eng_alloc_zeroed(bytes);
    if (!data) return eng_fail(err, "out of memory for a %zu-byte tensor", bytes);
    if (eng_tensor_wrap(t, ctx, md, data, err) != 0) {
        free(data);
        return -1;
    }
    t->owns = 1;
    return 0;
}

int eng_tensor_wrap(eng_tensor *t, eng_ctx *ctx, const dnnl_memory_desc_t *md, float *data,
                    eng_err *err) {
    memset(t, 0, sizeof *t);
    t->md = *md;
    t->bytes = dnnl_memory_desc_get_size(md);
    t->data = data;
    ENG_DNNL(dnnl_memory_create(&t->mem, md, ctx->engine, data ? (void *)data : DNNL_MEMORY_NONE));
    return 0;
fail:
    t->mem = NULL;
    return -1;
}

int eng_tensor_point(eng_tensor *t, float *data, eng_err *err) {
    t->data = data;
    ENG_DNNL(dnnl_memory_set_data_handle(t->mem, data));
    return 0;
fail:
    return -1;
}

void eng_tensor_free(eng_tensor *t) {
    if (t->mem) dnnl_memory_destroy(t->mem);
    if (t->owns) free(t->data);
    memset(t, 0, sizeof *t);
}

int eng_md_plain(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims, eng_err *err) {
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                             dnnl_abcd, dnnl_abcde};
    if (ndims < 1 || ndims > 5) return eng_fail(err, "eng_md_plain: %d dims unsupported", ndims);
    ENG_DNNL(dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tags[ndims]));
    return 0;
fail:
    return -1;
}

int eng_md_any(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims, eng_err *err) {
    ENG_DNNL(dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, dnnl_format_tag_any));
    return 0;
fail:
    return -1;
}

int eng_md_rows_contiguous(const dnnl_memory_desc_t *md, size_t *row_bytes) {
    if (md->format_kind != dnnl_blocked || md->offset0 != 0) return 0;
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    for (int i = 0; i < b->inner_nblks; i++)
        if (b->inner_idxs[i] == 0) return 0; /* the batch is blocked: rows interleave */
    if (md->padded_dims[0] != md->dims[0]) return 0;
    dnnl_dim_t n = md->dims[0];
    size_t total = dnnl_memory_desc_get_size(md);
    if (n <= 0 || total % (size_t)n) return 0;
    /* dim 0 must be the outermost: its stride times its size is the whole buffer */
    size_t stride_bytes = (size_t)b->strides[0] * sizeof(float);
    if (stride_bytes * (size_t)n != total) return 0;
    *row_bytes = stride_bytes;
    return 1;
}

int eng_md_with_batch(dnnl_memory_desc_t *out, const dnnl_memory_desc_t *md, dnnl_dim_t n,
                      eng_err *err) {
    size_t row_bytes;
    if (!eng_md_rows_contiguous(md, &row_bytes))
        return eng_fail(err, "layout does not keep batch rows contiguous");
    *out = *md;
    out->dims[0] = n;
    out->padded_dims[0] = n;
    return 0;
}

int eng_reorder_make(eng_ctx *ctx, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                     dnnl_primitive_t *prim, eng_err *err) {
    dnnl_primitive_desc_t pd = NULL;
    *prim = NULL;
    if (dnnl_memory_desc_equal(from, to)) return 0;
    ENG_DNNL(dnnl_reorder_primitive_desc_create(&pd, from, ctx->engine, to, ctx->engine, ctx->attr));
    ENG_TRY(eng_ctx_note_scratch(ctx, pd, err));
    ENG_DNNL(dnnl_primitive_create(prim, pd));
    dnnl_primitive_desc_destroy(pd);
    return 0;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    return -1;
}

int eng_reorder_run(eng_ctx *ctx, dnnl_primitive_t prim, eng_tensor *from, eng_tensor *to,
                    eng_err *err) {
    if (!prim) {
        if (from->data != to->data) memcpy(to->data, from->data, to->bytes);
        return 0;
    }
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from->mem}, {DNNL_ARG_TO, to->mem}};
    return eng_ctx_exec(ctx, prim, 2, args, err);
}

int eng_staged_build(eng_staged *s, eng_ctx *ctx, const dnnl_memory_desc_t *plain_md,
                     const dnnl_memory_desc_t *prim_md, int to_prim, eng_err *err) {
    memset(s, 0, sizeof *s);
    s->to_prim = to_prim;
    ENG_TRY(eng_tensor_wrap(&s->plain, ctx, plain_md, NULL, err));
    if (dnnl_memory_desc_equal(plain_md, prim_md)) {
        ENG_TRY(eng_tensor_wrap(&s->prim, ctx, prim_md, NULL, err));
        return 0;
    }
    ENG_TRY(eng_tensor_alloc(&s->prim, ctx, prim_md, err));
    if (to_prim)
        ENG_TRY(eng_reorder_make(ctx, plain_md, prim_md, &s->reorder, err));
    else
        ENG_TRY(eng_reorder_make(ctx, prim_md, plain_md, &s->reorder, err));
    return 0;
fail:
    eng_staged_free(s);
    return -1;
}

int eng_staged_bind(eng_staged *s, float *plain, eng_err *err) {
    if (eng_tensor_point(&s->plain, plain, err)) return -1;
    if (!s->reorder) return eng_tensor_point(&s->prim, plain, err);
    return 0;
}

int eng_staged_sync(eng_staged *s, eng_ctx *ctx, eng_err *err) {
    if (!s->reorder) return 0;
    if (s->to_prim) return eng_reorder_run(ctx, s->reorder, &s->plain, &s->prim, err);
    return eng_reorder_run(ctx, s->reorder, &s->prim, &s->plain, err);
}

void eng_staged_free(eng_staged *s) {
    if (s->reorder) dnnl_primitive_destroy(s->reorder);
    eng_tensor_free(&s->plain);
    eng_tensor_free(&s->prim);
    memset(s, 0, sizeof *s);
}
