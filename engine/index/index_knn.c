/* index_knn.c — leave-one-out k-NN accuracy over an index's own rows (the quality monitor's
 * figure), by the exact back end's batch search. */
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
        rc = eng_index_search_batch(ix, q, nq, kk, hits, got, err);
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
