/* eng_index.h — nearest-neighbour search by cosine similarity: one API, three back ends.
 *
 * Holds the serving model's vectors L2-normalised in one contiguous float32 matrix (rows padded
 * to 16 floats and 64-byte aligned), with an id → row hash map so inserts, replacements and
 * deletes are O(1). A query scans every row with a vectorised dot-product kernel (AVX-512 or
 * AVX2+FMA when the CPU has them and the ISA cap allows them, picked at init: eng_isa.h,
 * BARLOWD_MAX_ISA or ONEDNN_MAX_CPU_ISA) and keeps the k best in a heap: a partial selection,
 * never a full sort. Ranking is deterministic: higher score first, equal scores by lower id. A
 * batch of queries reads the matrix once: blocks of rows shared out to the threads, each scored
 * against tiles of queries by one sgemm (oneDNN's), the scores tested against each heap's k-th
 * best while still in cache.
 *
 * Compact first pass (the ENG_INDEX_INT8 back end): beside the float rows the index keeps an int8 copy
 * of every row, in step with every put, replace and remove. Each row has its own symmetric scale
 * (max |x_i| ↦ 127; a per-row scale rather than one global scale because a unit vector's
 * largest component ranges from 1/√dim to 1, and one global scale would leave few levels for
 * the spread-out rows that are the common case). The first pass reads only the int8 rows (a
 * quarter of the float bytes) with an integer dot-product kernel (AVX-512 VNNI, AVX-512BW, AVX2
 * or scalar, picked at init under the same cap), keeps the best R candidates by approximate
 * score, then re-scores those R with the float kernel: every returned score is exact and equals
 * eng_index_search's.
 * Integer dot products are exact, so every int8 kernel finds the same candidates.
 *
 * Approximate pass (the ENG_INDEX_HNSW back end, index_hnsw.c): once eng_index_hnsw_build has run,
 * the index also keeps a hierarchical navigable small-world graph (HNSW: Malkov & Yashunin, 2016)
 * over the same float rows, in step with every put, replace and remove (the graph holds links
 * only, never a copy of a vector). A query walks the graph and scores the rows it meets with the
 * float kernel, so its scores are exact; it may miss true top-k rows (recall@10 >= 0.95 tested on
 * clustered data). A filtered query that matches few rows is answered by the exact scan instead.
 *
 * Not thread-safe for writers: one writer at a time, and no reader during a write (the server
 * swaps whole indexes atomically). Any number of concurrent searches is fine.
 *
 * Layout (the way Redis's ae.c hides epoll, kqueue and select): eng_index.c owns the rows, the
 * ids and the id map and dispatches each search; index_exact.c (the float kernels, the scan and
 * the GEMM batch), index_int8.c (the int8 copy, its kernels and the first pass) and index_hnsw.c
 * (the graph, its build, its upkeep and its walk) are the back ends, each one table of functions
 * (index_internal.h). */
#ifndef ENG_INDEX_H
#define ENG_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "eng_err.h"
#include "eng_idset.h"

typedef struct eng_hit {
    int64_t id;  /* the vector's id */
    float score; /* cosine similarity with the query, in [-1, 1] */
} eng_hit;

typedef float (*eng_dot_fn)(const float *a, const float *b, size_t n);

/* Integer dot products of one int8 query with nrows int8 rows (stride bytes apart, 64-byte
 * aligned, stride a multiple of 64): out[r] = Σ q[i]·rows[r][i], exactly. rsum[r] is Σ rows[r][i]
 * (the VNNI kernel uses it to undo its unsigned-query offset). */
typedef void (*eng_dot8_fn)(const int8_t *q, const int8_t *rows, const int32_t *rsum,
                            size_t stride, size_t nrows, int32_t *out);

/* Graph defaults (see eng_hnsw_params). */
#define ENG_HNSW_M 16
#define ENG_HNSW_EF_CONSTRUCTION 100
#define ENG_HNSW_EF_SEARCH 64

struct index_hnsw; /* the graph (index_hnsw.c); opaque */

/* Default rerank factor of the int8 pass: R = max(factor·k, k + ENG_INDEX_RERANK_MARGIN). */
#define ENG_INDEX_RERANK_FACTOR 8
#define ENG_INDEX_RERANK_MARGIN 32

typedef struct eng_index {
    int dim;              /* vector length */
    size_t stride;        /* floats per stored row: dim rounded up to 16 */
    size_t n, cap;        /* rows used, rows allocated */
    unsigned passes;      /* back ends kept (1u << pass each; eng_index_init_passes) */
    float *rows;          /* owned [cap, stride], unit length, zero padding */
    int64_t *ids;         /* owned [cap]: id of each row */
    size_t n_slots;       /* hash table size (power of two, >= 2 * cap) */
    int64_t *slot_id;     /* owned [n_slots]: id, or EMPTY / TOMBSTONE */
    size_t *slot_row;     /* owned [n_slots]: row of slot_id */
    size_t tombstones;    /* slots marked deleted (rehash when many) */
    eng_dot_fn dot;       /* kernel chosen for this CPU */
    const char *kernel;   /* its name: "avx512", "avx2", "scalar" */
    size_t stride8;       /* bytes per int8 row: dim rounded up to 64 */
    int8_t *rows8;        /* owned [cap, stride8]: row i quantised, round(x·127 / max|x|) */
    float *scale8;        /* owned [cap]: max|x| / 127, so x ≈ rows8 · scale8 */
    int32_t *rsum8;       /* owned [cap]: Σ rows8[i] (for the VNNI kernel) */
    eng_dot8_fn dot8;     /* int8 kernel chosen for this CPU */
    const char *kernel8;  /* its name: "vnni", "avx512bw", "avx2", "scalar" */
    struct index_hnsw *hnsw; /* owned: the HNSW graph over the rows, NULL until built */
} eng_index;

/* An empty index of dim-long vectors. On error returns -1 and ix is zeroed. */
int eng_index_init(eng_index *ix, int dim, eng_err *err);

/* Every back end's bit (1u << pass) in a set of passes. */
#define ENG_INDEX_ALL_PASSES ((1u << ENG_INDEX_PASSES) - 1u)

/* As eng_index_init (which keeps every back end), but keeping only the back ends whose bit
 * (1u << pass) is in passes; ENG_INDEX_EXACT is always kept. A back end not kept holds no state
 * (the int8 copy costs a quarter of the float rows: the server, which never asks for that pass,
 * does without), and a search asking for it is refused (ERR_BAD_INPUT). */
int eng_index_init_passes(eng_index *ix, int dim, unsigned passes, eng_err *err);

/* Inserts vec under id, or replaces the vector already there. vec is copied and normalised; a
 * zero or non-finite vector is refused. On error returns -1 and the index is unchanged. */
int eng_index_put(eng_index *ix, int64_t id, const float *vec, eng_err *err);

/* Removes id; returns 1 if it was there, 0 if not. This function can't fail. */
int eng_index_remove(eng_index *ix, int64_t id);

/* The stored (normalised) vector of id, or NULL. Valid until the next write. */
const float *eng_index_get(const eng_index *ix, int64_t id);

/* How a query is answered: which back end scores the rows, and what it skips. */
typedef enum eng_index_pass {
    ENG_INDEX_EXACT = 0, /* every float row scored: the exact top k */
    ENG_INDEX_INT8 = 1,  /* int8 first pass, its best candidates re-scored in float (see above) */
    ENG_INDEX_HNSW = 2,  /* walk of the HNSW graph (see above); exact scan while none is built */
    ENG_INDEX_PASSES     /* number of back ends */
} eng_index_pass;

typedef struct eng_search_opts {
    eng_index_pass pass; /* the back end */
    int64_t exclude;     /* the id never returned (a neighbours query's own), INT64_MIN for none */
    int rerank;          /* ENG_INDEX_INT8: R = max(rerank·k, k + ENG_INDEX_RERANK_MARGIN)
                          * candidates (capped at the row count); 0 = ENG_INDEX_RERANK_FACTOR */
    const eng_idset *allow; /* only rows whose id is in this set are scored and returned (a
                             * metadata filter); NULL for every row */
    int ef;              /* ENG_INDEX_HNSW: candidates kept during the walk (raised to k);
                          * 0 = the graph's ef_search */
    int *exact_out;      /* if not NULL, set to 1 when the answer is the exact top k (any exact
                          * pass, or ENG_INDEX_HNSW answered by the exact scan), 0 otherwise */
} eng_search_opts;

/* Exact, nothing excluded, every row allowed, default rerank. This function can't fail. */
eng_search_opts eng_search_defaults(void);

/* "exact", "int8" or "hnsw"; NULL for any other value. */
const char *eng_index_pass_name(eng_index_pass pass);

/* The k best rows for a query vector (normalised here; need not be unit length), by the back
 * end opts->pass (NULL: eng_search_defaults()). Writes min(k, rows) hits to out, best first, and
 * their number to *n_out. Every back end returns exact float scores, by the same kernel, in the
 * same order; ENG_INDEX_INT8 may miss a true top-k row when its int8 score falls below R others
 * (the tests measure recall@10 >= 0.99 at the default). Refuses k < 1, rerank < 0, an unknown
 * pass, and zero or non-finite queries (ERR_BAD_INPUT). */
int eng_index_search(const eng_index *ix, const float *query, int k, const eng_search_opts *opts,
                     eng_hit *out, int *n_out, eng_err *err);

/* The k nearest neighbours of a stored id, excluding itself, among the ids in allow (NULL: all),
 * by the exact back end. Refuses unknown ids. */
int eng_index_neighbors(const eng_index *ix, int64_t id, int k, const eng_idset *allow,
                        eng_hit *out, int *n_out, eng_err *err);

/* nq queries at once (row-major [nq, dim]), by the exact back end, among the ids in allow (NULL:
 * all); out holds nq × k hits, query i's at out + i·k, and n_out[i] their number (min(k, allowed
 * rows)), in eng_index_search's order. Blocks of 256 rows are shared out to the OpenMP threads;
 * each scores its block against 256 queries at a time with one single-threaded sgemm and offers
 * the scores to its own heaps, merged at the end (the top k under (score, id) is unique, so the
 * split cannot change it). Beside the output it allocates (threads − 1) × nq × k hits and a
 * 256 KB score tile per thread. Scores may differ from eng_index_search's in the last float bits.
 * Refuses k < 1, nq < 0 and zero or non-finite queries. */
int eng_index_search_batch(const eng_index *ix, const float *queries, int nq, int k,
                           const eng_idset *allow, eng_hit *out, int *n_out, eng_err *err);

/* Selects the first pass's int8 kernel by name ("vnni", "avx512bw", "avx2", "scalar"); for
 * tests and benchmarks. Returns -1 when this CPU lacks it, the ISA cap (eng_isa.h) forbids it or
 * the name is unknown, leaving the current kernel. */
int eng_index_use_kernel8(eng_index *ix, const char *name);

/* Selects a kernel by name ("avx512", "avx2", "scalar"); for tests and benchmarks. Returns -1
 * when this CPU lacks it, the ISA cap (eng_isa.h) forbids it or the name is unknown, leaving the
 * current kernel. */
int eng_index_use_kernel(eng_index *ix, const char *name);

/* Recall of hits (nf) against the exact top hits (ne, best first): the fraction of the exact
 * ones found. A hit whose score ties the exact k-th score within float rounding counts as found:
 * either row is a correct answer. 1.0 when ne is 0. This function can't fail. */
double eng_index_recall(const eng_hit *hits, int nf, const eng_hit *exact, int ne);

/* Leave-one-out k-nearest-neighbour accuracy of labelled vectors: each stored row is classified
 * by the majority label of its k nearest other rows (cosine, exact scores in batches), ties going
 * to the tied label met first in rank order; the result is the fraction classified as its own
 * label. label_of(ctx, id) gives a row's label (>= 0). Needs at least k + 1 rows. On error
 * (k < 1, too few rows, out of memory) returns -1. */
int eng_index_knn_loo(const eng_index *ix, int k, int (*label_of)(void *ctx, int64_t id),
                      void *ctx, double *accuracy, eng_err *err);

/* Health of the stored rows without labels: the effective rank of the centred rows (exp of the
 * entropy of their normalised singular values: up to dim, 0 when every row is the same) and the mean
 * over dimensions of the rows' standard deviation. Needs at least 2 rows. On error (too few rows,
 * out of memory) returns -1. */
int eng_index_health(const eng_index *ix, double *eff_rank, double *mean_std, eng_err *err);

/* ---------------------------------------------------------------------------------------------
 * The HNSW graph (index_hnsw.c).
 *
 * Each row is a node with links on level 0 (up to 2·m) and, with probability 1/m per level, on
 * the levels above (up to m each); a query descends greedily from the top node and then keeps
 * the ef best rows met on level 0. Deletes repair the neighbours' links in place (see
 * index_hnsw.c for why). */
typedef struct eng_hnsw_params {
    int m;               /* links per node per level above 0; 2·m on level 0 (2..64) */
    int ef_construction; /* candidates kept while linking a new node (>= m) */
    int ef_search;       /* default ef of a query (>= 1) */
    uint64_t seed;       /* draws each node's level: the same seed and rows give the same graph,
                          * whatever the thread count */
} eng_hnsw_params;

/* ENG_HNSW_M, ENG_HNSW_EF_CONSTRUCTION, ENG_HNSW_EF_SEARCH, seed 1. This function can't fail. */
eng_hnsw_params eng_hnsw_defaults(void);

/* Builds the graph over every row, in parallel over OpenMP's threads (p NULL: the defaults);
 * from then on every put, replace and remove keeps it up to date. Replaces a graph already
 * there. On error returns -1 and the index has no graph (searches stay exact). */
int eng_index_hnsw_build(eng_index *ix, const eng_hnsw_params *p, eng_err *err);

/* The same graph, built beside readers (see index_hnsw.c). begin attaches an empty graph in the
 * building state (p NULL: the defaults; replaces a graph already there), in which ENG_INDEX_HNSW
 * queries are exact scans and puts and removes keep the graph; needs exclusive access. extend
 * links up to max_rows (>= 1) of the rows not in the graph yet and returns 1 while some remain,
 * 0 when every row is in, -1 on error (out of memory; the graph is then still attached and the
 * caller drops it). extend writes only the graph: it may run beside readers of the index
 * (searches, gets), never beside writers, nor beside another extend. finish (exclusive access)
 * lets queries walk the graph. building: 1 between begin and finish. */
int eng_index_hnsw_begin(eng_index *ix, const eng_hnsw_params *p, eng_err *err);
int eng_index_hnsw_extend(eng_index *ix, size_t max_rows, eng_err *err);
void eng_index_hnsw_finish(eng_index *ix);
int eng_index_hnsw_building(const eng_index *ix);

/* Drops the graph (searches by ENG_INDEX_HNSW become exact scans). This function can't fail. */
void eng_index_hnsw_drop(eng_index *ix);

/* Bytes the graph holds (links, levels, node maps); 0 without a graph or while it is building.
 * This function can't fail. */
size_t eng_index_hnsw_bytes(const eng_index *ix);

/* Sets the default ef of queries (>= 1); no effect without a graph. */
void eng_index_hnsw_set_ef(eng_index *ix, int ef_search);

/* The filter size below which an ENG_INDEX_HNSW query is answered by the exact scan of the
 * allowed rows: a filter allowing c of n rows makes a graph walk meet about 1/(c/n) times as many
 * rows as it keeps, and the exact scan reads c rows, so the scan wins below c ≈ √(C·n). */
int64_t eng_index_hnsw_filter_exact_below(const eng_index *ix);

/* Sets that C (default 4096; 0: every filter walks the graph); for benchmarks. No effect without
 * a graph. */
void eng_index_hnsw_set_filter_c(eng_index *ix, double c);

void eng_index_free(eng_index *ix);

#endif
