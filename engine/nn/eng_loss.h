/* eng_loss.h — the Barlow Twins loss and its hand-written backward.
 *
 * Shapes: N = batch, D = projector output. Inputs ẑ_A, ẑ_B [N, D] plain rows, already batch-
 * normalised per feature. c = ẑ_Aᵀ ẑ_B / N [D, D];  L = Σ_i (1 − c_ii)² + λ Σ_{i≠j} c_ij².
 * Backward: G = ∂L/∂c with G_ii = −2(1 − c_ii) and G_ij = 2λ c_ij (i ≠ j); then
 * ∂L/∂ẑ_A = ẑ_B Gᵀ / N and ∂L/∂ẑ_B = ẑ_A G / N. All three products are oneDNN matmuls; the
 * transposes are strided views, never copies. Reference: Zbontar et al. 2021, Algorithm 1.
 *
 * Synced (data-parallel): each rank holds n of the N rows; its ẑ_Aᵀẑ_B / N is summed over the
 * ranks before the loss (the D×D matrix travels, not the N×D rows), so every rank has the same
 * c, loss and G, and its ∂L/∂ẑ rows are those of the single-process backward. */
#ifndef ENG_LOSS_H
#define ENG_LOSS_H

#include "eng_reduce.h"
#include "eng_tensor.h"

typedef struct eng_bt_loss {
    int n, d;                /* this rank's rows, features */
    long n_global;           /* N: rows over all ranks (n when not synced) */
    const eng_reduce *red;   /* borrowed: the job's sums (NULL: one rank) */
    double lambda;
    dnnl_primitive_t c_mm;   /* c  = zaᵀ zb / N */
    dnnl_primitive_t da_mm;  /* dza = zb Gᵀ / N */
    dnnl_primitive_t db_mm;  /* dzb = za G / N */
    eng_tensor za_t, zb_w;   /* borrowed: za as [D, N] (transposed view), zb as [N, D] */
    eng_tensor za, zb;       /* borrowed: [N, D] plain */
    eng_tensor dza, dzb;     /* borrowed: [N, D] plain */
    eng_tensor c, g;         /* owned [D, D] plain */
    eng_tensor g_t;          /* borrowed: G as its transpose (strided view of g) */
    double diag_mean;        /* health: mean of c_ii (→ 1 as training succeeds) */
    double offdiag_abs_mean; /* health: mean |c_ij|, i ≠ j (→ 0) */
} eng_bt_loss;

int eng_bt_loss_build(eng_bt_loss *l, eng_ctx *ctx, int n, int d, double lambda, eng_err *err);
/* This rank's n rows of N = n_global over the ranks that red sums. */
int eng_bt_loss_build_synced(eng_bt_loss *l, eng_ctx *ctx, int n, long n_global, int d,
                             double lambda, const eng_reduce *red, eng_err *err);
/* Computes the loss into *loss and, when dza/dzb are not NULL, the gradients. */
int eng_bt_loss_run(eng_bt_loss *l, eng_ctx *ctx, float *za, float *zb, float *dza, float *dzb,
                    double *loss, eng_err *err);
void eng_bt_loss_free(eng_bt_loss *l);

#endif
