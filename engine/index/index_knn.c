/* index_knn.c — the quality monitor's figures over an index's own rows: leave-one-out k-NN
 * accuracy (by the exact back end's batch search) and, without labels, the effective rank and
 * spread of the rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

#define LOO_CHUNK 512 /* queries per batch search */

/* The majority label among the hits (skipping `self`), at most k of them; ties go to the tied
 * label met first. */
static int vote(const eng_hit *h, int n, int64_t self, int k, int (*label_of)(void *, int64_t),
                void *ctx, int *labels, int *counts) {
    int m = 0, used = 0;
    for (int i = 0; i < n && used < k; i++) {
        if (h[i].id == self) continue;
        int l = label_of(ctx, h[i].id), j = 0;
        used++;
        while (j < m && labels[j] != l) j++;
        if (j == m) {
            labels[m] = l;
            counts[m++] = 0;
        }
        counts[j]++;
    }
    int best = 0;
    for (int j = 1; j < m; j++)
        if (counts[j] > counts[best]) best = j; /* strictly more: the earlier label keeps a tie */
    return m ? labels[best] : -1;
}

int eng_index_knn_loo(const eng_index *ix, int k, int (*label_of)(void *ctx, int64_t id),
                      void *ctx, double *accuracy, eng_err *err) {
    *accuracy = 0;
    if (k < 1) return eng_fail_code(err, ERR_BAD_INPUT, "knn: k must be at least 1 (got %d)", k);
    if (ix->n < (size_t)k + 1)
        return eng_fail_code(err, ERR_BAD_INPUT, "knn: %zu rows, leave-one-out k=%d needs %d",
                             ix->n, k, k + 1);
    int kk = k + 1; /* the row itself comes back too */
    float *q = malloc((size_t)LOO_CHUNK * ix->dim * sizeof *q);
    eng_hit *hits = malloc((size_t)LOO_CHUNK * kk * sizeof *hits);
    int *got = malloc(LOO_CHUNK * sizeof *got);
    int *labels = malloc((size_t)kk * sizeof *labels), *counts = malloc((size_t)kk * sizeof *counts);
    if (!q || !hits || !got || !labels || !counts) {
        free(q);
        free(hits);
        free(got);
        free(labels);
        free(counts);
        return eng_fail_code(err, ERR_NO_MEMORY, "knn: out of memory");
    }
    size_t right = 0;
    int rc = 0;
    for (size_t from = 0; from < ix->n && rc == 0; from += LOO_CHUNK) {
        int nq = ix->n - from < LOO_CHUNK ? (int)(ix->n - from) : LOO_CHUNK;
        for (int i = 0; i < nq; i++)
            memcpy(q + (size_t)i * ix->dim, ix->rows + (from + (size_t)i) * ix->stride,
                   (size_t)ix->dim * sizeof *q);
        rc = eng_index_search_batch(ix, q, nq, kk, NULL, hits, got, err);
        for (int i = 0; rc == 0 && i < nq; i++) {
            int64_t self = ix->ids[from + (size_t)i];
            int l = vote(hits + (size_t)i * kk, got[i], self, k, label_of, ctx, labels, counts);
            right += l == label_of(ctx, self);
        }
    }
    free(q);
    free(hits);
    free(got);
    free(labels);
    free(counts);
    if (rc) return -1;
    *accuracy = (double)right / (double)ix->n;
    return 0;
}

/* Eigenvalues of the symmetric n x n matrix a (row-major, destroyed) into w, by cyclic Jacobi
 * rotations until the off-diagonal part is negligible. */
static void jacobi_eigenvalues(double *a, int n, double *w) {
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double v = a[i * n + j] * a[i * n + j];
                if (i == j)
                    diag += v;
                else
                    off += v;
            }
        if (off <= 1e-22 * (diag + 1e-300)) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p and q */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p and q */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++) w[i] = a[i * n + i];
}

int eng_index_health(const eng_index *ix, double *eff_rank, double *mean_std, eng_err *err) {
    *eff_rank = *mean_std = 0;
    if (ix->n < 2) return eng_fail_code(err, ERR_BAD_INPUT, "health: %zu rows, needs 2", ix->n);
    int d = ix->dim;
    double *mean = calloc((size_t)d, sizeof *mean), *cov = calloc((size_t)d * d, sizeof *cov);
    double *w = malloc((size_t)d * sizeof *w), *x = malloc((size_t)d * sizeof *x);
    if (!mean || !cov || !w || !x) {
        free(mean);
        free(cov);
        free(w);
        free(x);
        return eng_fail_code(err, ERR_NO_MEMORY, "health: out of memory");
    }
    for (size_t r = 0; r < ix->n; r++)
        for (int i = 0; i < d; i++) mean[i] += ix->rows[r * ix->stride + i];
    for (int i = 0; i < d; i++) mean[i] /= (double)ix->n;
    for (size_t r = 0; r < ix->n; r++) { /* the upper triangle of X^T X, centred */
        for (int i = 0; i < d; i++) x[i] = ix->rows[r * ix->stride + i] - mean[i];
        for (int i = 0; i < d; i++)
            for (int j = i; j < d; j++) cov[i * d + j] += x[i] * x[j];
    }
    double std_sum = 0;
    for (int i = 0; i < d; i++) {
        std_sum += sqrt(cov[i * d + i] / (double)(ix->n - 1));
        for (int j = 0; j < i; j++) cov[i * d + j] = cov[j * d + i];
    }
    *mean_std = std_sum / d;
    jacobi_eigenvalues(cov, d, w);
    double total = 0, entropy = 0; /* singular values of the centred rows: sqrt(eigenvalues) */
    for (int i = 0; i < d; i++) total += w[i] = sqrt(w[i] > 0 ? w[i] : 0);
    for (int i = 0; i < d && total > 0; i++)
        if (w[i] > 0) entropy -= w[i] / total * log(w[i] / total);
    *eff_rank = total > 0 ? exp(entropy) : 0.0;
    free(mean);
    free(cov);
    free(w);
    free(x);
    return 0;
}
