/* index_hnsw.c — the approximate back end: an HNSW graph (Malkov & Yashunin, "Efficient and robust
 * approximate nearest neighbor search using Hierarchical Navigable Small World graphs", 2016)
 * over the core's float rows. The graph holds links only; a node's vector is its row in
 * ix->rows, found through node → row and row → node maps, so the core may move rows (a remove
 * moves the last row into the hole) without the graph renaming any link.
 *
 * What it deliberately is not: a second copy of the vectors, a graph on disk, or a lock-based
 * concurrent writer. Writers are serialised by the caller like every other index write.
 *
 * Build. eng_index_hnsw_build inserts the rows in batches: every node of a batch first searches
 * the graph as it stood before the batch (read-only, in parallel over OpenMP's threads), then its
 * own links are written (in parallel: each node owns its list) and the links back to it are added
 * owner by owner (in parallel: each owner's list is written by one thread, its new links taken in
 * node order). No step depends on thread timing, so a seed gives one graph on any thread count.
 * A batch is at most 1/32 of the nodes already in (at most 512), so the nodes a batch cannot see
 * of each other are few; they link through the graph's next batches.
 *
 * Building beside readers. eng_index_hnsw_begin attaches an empty graph in the building state, in
 * which every query is an exact scan and no reader looks at the graph; eng_index_hnsw_extend then
 * links the rows that have no node yet, a batch at a time, so the caller can let readers in
 * between (and during: extend writes only the graph, which readers do not touch while it is
 * building) and let writers in between batches (a put meanwhile links its row at once, as on a
 * finished graph). eng_index_hnsw_finish makes queries walk it. The full build is the same steps
 * without a pause. A batch ends at a step's end, so the step size decides the batches: a build in
 * the service's steps gives a graph as good as eng_index_hnsw_build's, not the same one.
 *
 * Deletes. The removed row's vector is gone once the core moves the last row into the hole, so
 * the graph cannot keep a deleted node as a waypoint (hnswlib's mark-delete keeps the vector and
 * walks through it). Instead the node is unlinked at once and its neighbourhood repaired: each of
 * its neighbours that links back to it loses that link and gains, in its place, the removed
 * node's neighbour closest to it that it does not link yet (a local, cheap version of
 * FreshDiskANN's delete consolidation: about 2·m dot products per neighbour, not a re-prune). Links
 * held by nodes the removed one did not link (HNSW's links are mostly but not always mutual) are
 * left dangling and skipped by every walk; the slot is reused by a later insert, and such a link
 * then is a random long link, which costs nothing in correctness. The tests hold recall@10 after
 * deleting 30% of the rows. A replacement is a delete and an insert of the same row. */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "index_internal.h"

#define NONE UINT32_MAX
#define MAX_LEVEL 15      /* levels above 0 a node may have (1/m^15: never reached) */
#define BATCH_MAX 512     /* nodes per build batch at most */
#define BATCH_SHARE 32    /* a batch is at most 1/32 of the nodes already in */
/* eng_index_hnsw_filter_exact_below: exact below √(C·n) allowed rows. Measured at 200k × 256
 * (docs/BENCHMARKS.md): the scan of the allowed rows wins at 10% (1.6 vs 2.0 ms), the walk at
 * 20% (0.96 vs 3.0 ms); √(4096·200000) = 28,621 rows = 14%. */
#define FILTER_C 4096.0
#define WIDEN 4           /* a filtered walk short of k matches retries with WIDEN × ef */

struct index_hnsw {
    int m, m0;             /* links per node per level above 0, on level 0 (2·m) */
    int ef_construction;   /* candidates kept while linking */
    int ef_search;         /* default ef of a query */
    double filter_c;       /* filters allowing < √(filter_c·n) rows go to the exact scan */
    uint64_t seed;         /* draws the levels */
    uint64_t draws;        /* levels drawn so far: the next node's draw index */
    size_t cap;            /* nodes (and rows) allocated: ix->cap */
    size_t n_nodes;        /* nodes used so far (high-water mark; freed ones are reused) */
    uint32_t *link0;       /* owned [cap, m0 + 1]: count, then the level-0 neighbours */
    uint32_t **upper;      /* owned [cap]: per node, owned [level, m + 1] (NULL at level 0) */
    uint8_t *level;        /* owned [cap]: the node's top level */
    uint32_t *row_of;      /* owned [cap]: node → row, NONE for a free node */
    uint32_t *node_of;     /* owned [cap]: row → node, NONE for a row without one */
    uint32_t *free_nodes;  /* owned [cap]: stack of free nodes */
    size_t n_free;         /* its height */
    size_t upper_bytes;    /* bytes of every upper list */
    uint32_t entry;        /* the walk's first node (one of the top level), NONE when empty */
    int max_level;         /* its level */
    int building;          /* 1 from eng_index_hnsw_begin to _finish: queries scan exactly */
    struct batch *cached[2]; /* owned, reused between calls (see cached_batch), or NULL */
    size_t cached_cap[2];  /* the cap their scratches' visited sets were made for */
    size_t cursor;         /* the next row eng_index_hnsw_extend looks at */
    int found_in_pass;     /* 1 when the pass that cursor is on found a row without a node */
};

/* A scored node. */
typedef struct cand {
    float s;    /* similarity with the query, or the heap key */
    uint32_t n; /* node */
} cand;

/* A binary max-heap on cand.s (a min-heap stores -s). */
typedef struct heap {
    cand *a;    /* owned [cap] */
    size_t n, cap;
} heap;

/* What one thread needs for a walk: the visited set and the heaps. */
typedef struct scratch {
    uint64_t *seen;        /* owned [(cap + 63) / 64]: visited bitmap, clear between walks */
    uint32_t *touched;     /* owned [n_touched_cap]: nodes marked, to clear seen after a walk */
    size_t n_touched, touched_cap;
    heap cand, best;       /* to expand (best first); the ef best so far (worst at the root) */
    cand *sorted;          /* owned [sorted_cap]: best's contents best first, or candidates */
    size_t sorted_cap;
} scratch;

/* A walk's results filter: each scored live node passes through it into t (queries only). */
typedef struct offer {
    topk *t;
    const eng_idset *allow; /* NULL: every id */
    int64_t exclude;
} offer;

/* ---------------------------------------------------------------------------------------------
 * Small helpers. */

/* Room for need elements of size bytes in *p (capacity *cap); -1 when out of memory. */
static int ensure(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int heap_push(heap *h, float s, uint32_t n) {
    if (ensure((void **)&h->a, &h->cap, h->n + 1, sizeof *h->a)) return -1;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->a[p].s >= s) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i].s = s;
    h->a[i].n = n;
    return 0;
}

static void heap_pop(heap *h) {
    assert(h->n > 0);
    cand x = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        float ws = x.s;
        if (l < h->n && h->a[l].s > ws) w = l, ws = h->a[l].s;
        if (r < h->n && h->a[r].s > ws) w = r;
        if (w == i) break;
        h->a[i] = h->a[w];
        i = w;
    }
    if (h->n) h->a[i] = x;
}

/* Best first: higher similarity, then lower node (deterministic order for equal scores). */
static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->n > y->n) - (x->n < y->n);
}

static void scratch_free(scratch *s) {
    free(s->seen);
    free(s->touched);
    free(s->cand.a);
    free(s->best.a);
    free(s->sorted);
    memset(s, 0, sizeof *s);
}

/* A scratch for walks over a graph of cap nodes; -1 when out of memory. */
static int scratch_init(scratch *s, size_t cap) {
    memset(s, 0, sizeof *s);
    s->seen = calloc((cap + 63) / 64, sizeof *s->seen);
    return s->seen ? 0 : -1;
}

static uint32_t *links(const struct index_hnsw *g, uint32_t node, int level) {
    return level == 0 ? g->link0 + (size_t)node * (size_t)(g->m0 + 1)
                      : g->upper[node] + (size_t)(level - 1) * (size_t)(g->m + 1);
}

static const float *row_vec(const eng_index *ix, const struct index_hnsw *g, uint32_t node) {
    return ix->rows + (size_t)g->row_of[node] * ix->stride;
}

/* 1 if node is live and has level among its levels: a dangling link may name a freed node, or
 * one reused since with fewer levels. */
static int alive_at(const struct index_hnsw *g, uint32_t node, int level) {
    return g->row_of[node] != NONE && g->level[node] >= level;
}

static float sim(const eng_index *ix, const struct index_hnsw *g, uint32_t a, uint32_t b) {
    return ix->dot(row_vec(ix, g, a), row_vec(ix, g, b), ix->stride);
}

/* The level of the draw-th node: floor(-ln(u) / ln(m)) for u uniform in (0, 1] from a hash of
 * (seed, draw) (splitmix64), so it depends on neither the thread nor the order of the draws. */
static int draw_level(const struct index_hnsw *g, uint64_t draw) {
    uint64_t z = g->seed + (draw + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double l = -log(u) / log((double)g->m);
    return l >= MAX_LEVEL ? MAX_LEVEL : (int)l;
}

/* Gives node its level's upper lists; a node whose lists cannot be allocated stays on level 0
 * (it is still found through level 0, the only level a query's results come from): a put keeps
 * it so, a build takes it as running out of memory. */
static void set_level(struct index_hnsw *g, uint32_t node, int level) {
    g->level[node] = 0;
    g->upper[node] = NULL;
    if (level == 0) return;
    size_t bytes = (size_t)level * (size_t)(g->m + 1) * sizeof(uint32_t);
    uint32_t *u = malloc(bytes);
    if (!u) return;
    for (int l = 0; l < level; l++) u[(size_t)l * (size_t)(g->m + 1)] = 0;
    g->upper[node] = u;
    g->level[node] = (uint8_t)level;
    g->upper_bytes += bytes;
}

static void clear_level(struct index_hnsw *g, uint32_t node) {
    if (g->upper[node]) g->upper_bytes -= (size_t)g->level[node] * (size_t)(g->m + 1) * sizeof(uint32_t);
    free(g->upper[node]);
    g->upper[node] = NULL;
    g->level[node] = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Walks. */

/* From *ep (similarity *eps), moves to the best neighbour on level while one is better. */
static void greedy(const eng_index *ix, const struct index_hnsw *g, const float *q, int level,
                   uint32_t *ep, float *eps) {
    for (int moved = 1; moved;) {
        moved = 0;
        const uint32_t *l = links(g, *ep, level);
        for (uint32_t j = 1; j <= l[0]; j++) {
            uint32_t nb = l[j];
            if (!alive_at(g, nb, level)) continue; /* a dangling link to a removed node */
            float s = ix->dot(q, row_vec(ix, g, nb), ix->stride);
            if (s > *eps) *eps = s, *ep = nb, moved = 1;
        }
    }
}

/* The beam search of one level from ep: leaves the ef best nodes met in s->best (a min-heap of
 * -similarity) and offers every live node met to of (NULL: none). -1 when out of memory. */
static int search_layer(const eng_index *ix, const struct index_hnsw *g, const float *q,
                        uint32_t ep, float eps, int level, int ef, scratch *s, const offer *of) {
    s->cand.n = s->best.n = 0;
    s->n_touched = 0;
    int rc = 0;
    uint32_t fresh[2 * 64 + 1];
#define MARK(node)                                                                          \
    do {                                                                                    \
        s->seen[(node) >> 6] |= (uint64_t)1 << ((node) & 63);                               \
        if (ensure((void **)&s->touched, &s->touched_cap, s->n_touched + 1, sizeof *s->touched)) \
            rc = -1;                                                                        \
        else                                                                                \
            s->touched[s->n_touched++] = (node);                                            \
    } while (0)
#define OFFER(node, score)                                                                  \
    do {                                                                                    \
        if (of && g->row_of[node] < ix->n) {                                                \
            int64_t id_ = ix->ids[g->row_of[node]];                                         \
            if (id_ != of->exclude && (!of->allow || eng_idset_has(of->allow, id_)))        \
                index_topk_offer(of->t, (score), id_);                                      \
        }                                                                                   \
    } while (0)
/* Under a filter, the ef best are the best allowed nodes: the walk goes on through disallowed
 * ones (they stay in cand) until ef allowed ones are met and nothing better is left, so a query
 * inside a filtered-out cluster walks out of it (hnswlib's filtered search does the same). */
#define PASSES(node) \
    (!of || !of->allow || eng_idset_has(of->allow, ix->ids[g->row_of[node]]))
    MARK(ep);
    OFFER(ep, eps);
    if (heap_push(&s->cand, eps, ep) || (PASSES(ep) && heap_push(&s->best, -eps, ep))) rc = -1;
    while (rc == 0 && s->cand.n) {
        cand c = s->cand.a[0];
        if (s->best.n >= (size_t)ef && c.s < -s->best.a[0].s) break; /* nothing left can enter */
        heap_pop(&s->cand);
        const uint32_t *l = links(g, c.n, level);
        int nf = 0;
        for (uint32_t j = 1; j <= l[0]; j++) {
            uint32_t nb = l[j];
            if (s->seen[nb >> 6] >> (nb & 63) & 1) continue;
            MARK(nb);
            if (!alive_at(g, nb, level)) continue;
            __builtin_prefetch(row_vec(ix, g, nb));
            fresh[nf++] = nb;
        }
        for (int j = 0; j < nf && rc == 0; j++) {
            uint32_t nb = fresh[j];
            if (j + 1 < nf) __builtin_prefetch(row_vec(ix, g, fresh[j + 1]) + 16);
            float sc = ix->dot(q, row_vec(ix, g, nb), ix->stride);
            OFFER(nb, sc);
            if (s->best.n < (size_t)ef || sc > -s->best.a[0].s) {
                if (heap_push(&s->cand, sc, nb)) rc = -1;
                if (!PASSES(nb)) continue; /* a waypoint, not a result */
                if (heap_push(&s->best, -sc, nb)) rc = -1;
                if (s->best.n > (size_t)ef) heap_pop(&s->best);
            }
        }
    }
#undef MARK
#undef OFFER
#undef PASSES
    for (size_t i = 0; i < s->n_touched; i++) s->seen[s->touched[i] >> 6] = 0;
    return rc;
}

/* s->best's nodes into s->sorted, best first, similarity restored; their number, -1 on OOM. */
static long best_sorted(scratch *s) {
    if (ensure((void **)&s->sorted, &s->sorted_cap, s->best.n, sizeof *s->sorted)) return -1;
    for (size_t i = 0; i < s->best.n; i++) {
        s->sorted[i].s = -s->best.a[i].s;
        s->sorted[i].n = s->best.a[i].n;
    }
    qsort(s->sorted, s->best.n, sizeof *s->sorted, cmp_cand);
    return (long)s->best.n;
}

/* The neighbour-selection heuristic (the paper's Algorithm 4, without extending candidates):
 * from c[0..nc) (best first by similarity to the base node), keeps a candidate only if it is
 * more similar to the base than to every candidate kept before it, up to max. This spreads the
 * links over directions, so clusters stay connected to each other. Writes the kept nodes to out
 * and returns their number. */
static int select_heuristic(const eng_index *ix, const struct index_hnsw *g, const cand *c,
                            int nc, int max, uint32_t *out) {
    int nk = 0;
    for (int i = 0; i < nc && nk < max; i++) {
        int keep = 1;
        for (int j = 0; j < nk && keep; j++)
            if (sim(ix, g, c[i].n, out[j]) > c[i].s) keep = 0;
        if (keep) out[nk++] = c[i].n;
    }
    return nk;
}

/* ---------------------------------------------------------------------------------------------
 * Inserting a batch of nodes. */

/* One batch node's chosen neighbours per level: plan[l·(m + 1)] is the count of level l. */
typedef struct batch {
    uint32_t *nodes;   /* [count] the batch's nodes, in insertion order */
    size_t count;
    uint32_t *plan;    /* owned [BATCH_MAX, (MAX_LEVEL + 1)·(m + 1)] */
    uint64_t *back;    /* owned [BATCH_MAX·(MAX_LEVEL + 1)·m]: (level, owner, node) keys */
    size_t n_back;
    size_t *groups;    /* owned [n_back + 1]: where each (level, owner) run of back starts */
    scratch *th;       /* [threads] one scratch per thread */
    int threads;
} batch;

static size_t plan_stride(const struct index_hnsw *g) { return (size_t)(MAX_LEVEL + 1) * (size_t)(g->m + 1); }

/* Phase 1 for the i-th node of the batch: its neighbours on each of its levels, chosen from the
 * graph as it stood before the batch. Reads the graph only. -1 when out of memory. */
static int plan_node(const eng_index *ix, const struct index_hnsw *g, batch *b, size_t i,
                     scratch *s) {
    uint32_t x = b->nodes[i];
    uint32_t *plan = b->plan + i * plan_stride(g);
    for (int l = 0; l <= MAX_LEVEL; l++) plan[(size_t)l * (size_t)(g->m + 1)] = 0;
    if (g->entry == NONE) return 0;
    const float *q = row_vec(ix, g, x);
    uint32_t ep = g->entry;
    float eps = ix->dot(q, row_vec(ix, g, ep), ix->stride);
    int top = g->level[x];
    for (int l = g->max_level; l > top; l--) greedy(ix, g, q, l, &ep, &eps);
    for (int l = top < g->max_level ? top : g->max_level; l >= 0; l--) {
        if (search_layer(ix, g, q, ep, eps, l, g->ef_construction, s, NULL)) return -1;
        long nc = best_sorted(s);
        if (nc < 0) return -1;
        uint32_t *p = plan + (size_t)l * (size_t)(g->m + 1);
        p[0] = (uint32_t)select_heuristic(ix, g, s->sorted, (int)nc, g->m, p + 1);
        ep = s->sorted[0].n;
        eps = s->sorted[0].s;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Phase 3 for one owner: adds the batch's nodes new[0..nn) to owner's list on level; when the
 * list overflows, keeps the heuristic's choice among the old and new links. -1 on OOM. */
static int link_back(const eng_index *ix, struct index_hnsw *g, uint32_t owner, int level,
                     const uint32_t *add, size_t nn, scratch *s) {
    uint32_t *l = links(g, owner, level);
    uint32_t max = (uint32_t)(level ? g->m : g->m0);
    size_t nl = l[0];
    if (nl + nn <= max) {
        for (size_t i = 0; i < nn; i++) {
            int dup = 0;
            for (uint32_t j = 1; j <= l[0] && !dup; j++) dup = l[j] == add[i];
            if (!dup) l[++l[0]] = add[i];
        }
        return 0;
    }
    if (ensure((void **)&s->sorted, &s->sorted_cap, nl + nn, sizeof *s->sorted)) return -1;
    size_t nc = 0;
    for (size_t j = 1; j <= nl; j++)
        if (alive_at(g, l[j], level)) s->sorted[nc++] = (cand){sim(ix, g, owner, l[j]), l[j]};
    for (size_t i = 0; i < nn; i++) {
        int dup = 0;
        for (size_t j = 1; j <= nl && !dup; j++) dup = l[j] == add[i];
        if (!dup) s->sorted[nc++] = (cand){sim(ix, g, owner, add[i]), add[i]};
    }
    qsort(s->sorted, nc, sizeof *s->sorted, cmp_cand);
    l[0] = (uint32_t)select_heuristic(ix, g, s->sorted, (int)nc, (int)max, l + 1);
    return 0;
}

/* Links the batch's nodes (levels set, rows in place) into the graph; see the file comment. On
 * error (out of memory) returns -1 and some of the batch may be linked only partly (a node
 * without links is still a node: the caller drops the graph). */
static int insert_batch(const eng_index *ix, struct index_hnsw *g, batch *b) {
    int failed = 0;
    long count = (long)b->count;
    /* phase 1: plans, read-only */
#pragma omp parallel for schedule(dynamic, 4) num_threads(b->threads) if (count > 1)
    for (long i = 0; i < count; i++) {
        scratch *s = &b->th[omp_get_thread_num()];
        if (plan_node(ix, g, b, (size_t)i, s)) {
#pragma omp atomic write
            failed = 1;
        }
    }
    if (failed) return -1;
    /* phase 2: each node's own lists; and the back links to add, as sortable keys */
    b->n_back = 0;
    for (size_t i = 0; i < b->count; i++) {
        uint32_t x = b->nodes[i];
        const uint32_t *plan = b->plan + i * plan_stride(g);
        for (int l = 0; l <= g->level[x]; l++) {
            const uint32_t *p = plan + (size_t)l * (size_t)(g->m + 1);
            uint32_t *dst = links(g, x, l);
            memcpy(dst, p, (p[0] + 1) * sizeof *p);
            for (uint32_t j = 1; j <= p[0]; j++) /* level 4 bits, owner 30, node 30 */
                b->back[b->n_back++] = (uint64_t)l << 60 | (uint64_t)p[j] << 30 | x;
        }
    }
    /* phase 3: back links, owner by owner */
    qsort(b->back, b->n_back, sizeof *b->back, cmp_u64);
    size_t ng = 0;
    for (size_t i = 0; i < b->n_back; i++)
        if (i == 0 || b->back[i] >> 30 != b->back[i - 1] >> 30) b->groups[ng++] = i;
    b->groups[ng] = b->n_back;
    long ngl = (long)ng;
#pragma omp parallel for schedule(dynamic, 8) num_threads(b->threads) if (ngl > 1)
    for (long gi = 0; gi < ngl; gi++) {
        scratch *s = &b->th[omp_get_thread_num()];
        size_t from = b->groups[gi], to = b->groups[gi + 1];
        uint64_t key = b->back[from];
        uint32_t add[BATCH_MAX];
        size_t nn = 0;
        for (size_t i = from; i < to; i++) add[nn++] = (uint32_t)(b->back[i] & 0x3fffffff);
        if (link_back(ix, g, (uint32_t)(key >> 30 & 0x3fffffff), (int)(key >> 60), add, nn, s)) {
#pragma omp atomic write
            failed = 1;
        }
    }
    /* a node above the top level becomes the entry (the first such, in batch order) */
    for (size_t i = 0; i < b->count; i++) {
        uint32_t x = b->nodes[i];
        if (g->entry == NONE || g->level[x] > g->max_level) {
            g->entry = x;
            g->max_level = g->level[x];
        }
    }
    return failed ? -1 : 0;
}

static void batch_free(batch *b) {
    for (int t = 0; b->th && t < b->threads; t++) scratch_free(&b->th[t]);
    free(b->th);
    free(b->plan);
    free(b->back);
    free(b->groups);
    free(b->nodes);
    memset(b, 0, sizeof *b);
}

/* Buffers for batches of up to max nodes on threads threads; -1 when out of memory. */
static int batch_init(batch *b, const struct index_hnsw *g, size_t max, int threads) {
    memset(b, 0, sizeof *b);
    size_t backs = max * (size_t)(MAX_LEVEL + 1) * (size_t)g->m;
    b->threads = threads;
    b->nodes = malloc(max * sizeof *b->nodes);
    b->plan = malloc(max * plan_stride(g) * sizeof *b->plan);
    b->back = malloc(backs * sizeof *b->back);
    b->groups = malloc((backs + 1) * sizeof *b->groups);
    b->th = calloc((size_t)threads, sizeof *b->th);
    int bad = !b->nodes || !b->plan || !b->back || !b->groups || !b->th;
    for (int t = 0; !bad && t < threads; t++) bad = scratch_init(&b->th[t], g->cap);
    if (bad) batch_free(b);
    return bad ? -1 : 0;
}

/* The graph keeps two batches between calls, so that no put and no build step allocates (and
 * zeroes a visited set of the whole graph) again: BATCH_PUT, one node on one thread, for
 * hnsw_row_set; BATCH_BUILD, BATCH_MAX nodes on OpenMP's threads, for eng_index_hnsw_extend
 * until the build finishes. */
enum { BATCH_PUT, BATCH_BUILD };

static void drop_cached(struct index_hnsw *g, int kind) {
    if (!g->cached[kind]) return;
    batch_free(g->cached[kind]);
    free(g->cached[kind]);
    g->cached[kind] = NULL;
}

/* The batch of kind, made again when the graph has grown since (its scratches' visited sets
 * must cover every node); NULL when out of memory. */
static batch *cached_batch(struct index_hnsw *g, int kind) {
    if (g->cached[kind] && g->cached_cap[kind] == g->cap) return g->cached[kind];
    drop_cached(g, kind);
    batch *b = malloc(sizeof *b);
    int put = kind == BATCH_PUT;
    if (!b || batch_init(b, g, put ? 1 : BATCH_MAX, put ? 1 : omp_get_max_threads())) {
        free(b);
        return NULL;
    }
    g->cached[kind] = b;
    g->cached_cap[kind] = g->cap;
    return b;
}

/* ---------------------------------------------------------------------------------------------
 * The graph's lifetime. */

static void graph_free(struct index_hnsw *g) {
    if (!g) return;
    drop_cached(g, BATCH_PUT);
    drop_cached(g, BATCH_BUILD);
    for (size_t i = 0; g->upper && i < g->n_nodes; i++) free(g->upper[i]);
    free(g->link0);
    free(g->upper);
    free(g->level);
    free(g->row_of);
    free(g->node_of);
    free(g->free_nodes);
    free(g);
}

/* Room for cap nodes and rows; on error -1 and the graph is as it was. */
static int graph_grow(struct index_hnsw *g, size_t cap) {
    if (cap <= g->cap) return 0;
    size_t l0 = (size_t)(g->m0 + 1);
    uint32_t *link0 = realloc(g->link0, cap * l0 * sizeof *link0);
    if (link0) g->link0 = link0;
    uint32_t **upper = realloc(g->upper, cap * sizeof *upper);
    if (upper) g->upper = upper;
    uint8_t *level = realloc(g->level, cap);
    if (level) g->level = level;
    uint32_t *row_of = realloc(g->row_of, cap * sizeof *row_of);
    if (row_of) g->row_of = row_of;
    uint32_t *node_of = realloc(g->node_of, cap * sizeof *node_of);
    if (node_of) g->node_of = node_of;
    uint32_t *free_nodes = realloc(g->free_nodes, cap * sizeof *free_nodes);
    if (free_nodes) g->free_nodes = free_nodes;
    if (!link0 || !upper || !level || !row_of || !node_of || !free_nodes) return -1;
    for (size_t i = g->cap; i < cap; i++) {
        g->link0[i * l0] = 0;
        g->upper[i] = NULL;
        g->level[i] = 0;
        g->row_of[i] = NONE;
        g->node_of[i] = NONE;
    }
    g->cap = cap;
    return 0;
}

eng_hnsw_params eng_hnsw_defaults(void) {
    eng_hnsw_params p = {ENG_HNSW_M, ENG_HNSW_EF_CONSTRUCTION, ENG_HNSW_EF_SEARCH, 1};
    return p;
}

void eng_index_hnsw_drop(eng_index *ix) {
    graph_free(ix->hnsw);
    ix->hnsw = NULL;
}

int eng_index_hnsw_begin(eng_index *ix, const eng_hnsw_params *p, eng_err *err) {
    eng_hnsw_params pr = p ? *p : eng_hnsw_defaults();
    eng_index_hnsw_drop(ix);
    if (pr.m < 2 || pr.m > 64 || pr.ef_construction < pr.m || pr.ef_search < 1)
        return eng_fail_code(err, ERR_BAD_INPUT, "index: bad HNSW parameters (m %d, ef_construction %d, ef_search %d)",
                             pr.m, pr.ef_construction, pr.ef_search);
    if (!index_keeps(ix, ENG_INDEX_HNSW)) /* its hooks would not keep the graph in step */
        return eng_fail_code(err, ERR_BAD_INPUT, "index: this index does not keep the hnsw pass");
    if (ix->cap >= ((size_t)1 << 30))
        return eng_fail_code(err, ERR_BAD_INPUT, "index: HNSW holds at most 2^30 rows");
    struct index_hnsw *g = calloc(1, sizeof *g);
    if (!g) return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for the graph");
    g->m = pr.m;
    g->m0 = 2 * pr.m;
    g->ef_construction = pr.ef_construction;
    g->ef_search = pr.ef_search;
    g->filter_c = FILTER_C;
    g->seed = pr.seed;
    g->entry = NONE;
    g->building = 1;
    if (graph_grow(g, ix->cap)) {
        graph_free(g);
        return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory for the graph of %zu rows", ix->cap);
    }
    ix->hnsw = g;
    return 0;
}

/* A node for row r (a freed one first), with no links and a drawn level. Returns 0 when the
 * level's upper lists could not be allocated (the node then sits on level 0 only). */
static int new_node(struct index_hnsw *g, size_t r, uint32_t *out) {
    uint32_t x = g->n_free ? g->free_nodes[--g->n_free] : (uint32_t)g->n_nodes++;
    assert(x < g->cap);
    g->row_of[x] = (uint32_t)r;
    g->node_of[r] = x;
    links(g, x, 0)[0] = 0;
    int level = draw_level(g, g->draws++);
    set_level(g, x, level);
    *out = x;
    return g->level[x] == level;
}

/* Up to max rows without a node, from g->cursor on, into b (each given a node and its level).
 * Sets *done when a whole pass over the rows found none. -1 when out of memory. */
static int gather(eng_index *ix, struct index_hnsw *g, batch *b, size_t max, int *done) {
    b->count = 0;
    *done = 0;
    while (b->count < max) {
        if (g->cursor >= ix->n) { /* a row moved into a hole behind the cursor needs a new pass */
            if (!g->found_in_pass) {
                *done = b->count == 0;
                return 0;
            }
            g->cursor = 0;
            g->found_in_pass = 0;
            if (b->count) return 0;
            continue;
        }
        size_t r = g->cursor++;
        if (g->node_of[r] != NONE) continue;
        g->found_in_pass = 1;
        uint32_t x;
        int whole = new_node(g, r, &x);
        b->nodes[b->count++] = x;
        if (!whole) return -1; /* out of memory for its upper lists: the build fails */
    }
    return 0;
}

int eng_index_hnsw_extend(eng_index *ix, size_t max_rows, eng_err *err) {
    struct index_hnsw *g = ix->hnsw;
    assert(g && g->building && max_rows >= 1);
    batch *b = cached_batch(g, BATCH_BUILD);
    if (!b) return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory building the graph");
    int rc = 1, done = 0;
    for (size_t linked = 0; linked < max_rows && rc == 1;) {
        size_t in = g->n_nodes - g->n_free, nb = in / BATCH_SHARE;
        nb = nb < 1 ? 1 : nb > BATCH_MAX ? BATCH_MAX : nb;
        if (nb > max_rows - linked) nb = max_rows - linked;
        if (gather(ix, g, b, nb, &done) || (b->count && insert_batch(ix, g, b)))
            rc = eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory building the graph of %zu rows", ix->n);
        else if (done)
            rc = 0;
        linked += b->count;
    }
    if (rc < 0) drop_cached(g, BATCH_BUILD); /* a failed walk may leave its visited set dirty */
    return rc;
}

void eng_index_hnsw_finish(eng_index *ix) {
    assert(ix->hnsw);
    ix->hnsw->building = 0;
    drop_cached(ix->hnsw, BATCH_BUILD);
}

int eng_index_hnsw_building(const eng_index *ix) { return ix->hnsw && ix->hnsw->building; }

int eng_index_hnsw_build(eng_index *ix, const eng_hnsw_params *p, eng_err *err) {
    if (eng_index_hnsw_begin(ix, p, err)) return -1;
    int r;
    while ((r = eng_index_hnsw_extend(ix, BATCH_MAX, err)) == 1) continue;
    if (r < 0) {
        eng_index_hnsw_drop(ix);
        return -1;
    }
    eng_index_hnsw_finish(ix);
    return 0;
}

size_t eng_index_hnsw_bytes(const eng_index *ix) {
    const struct index_hnsw *g = ix->hnsw;
    if (!g || g->building) return 0; /* while building, extend may be changing it beside us */
    size_t per = (size_t)(g->m0 + 1) * 4 + sizeof *g->upper + 1 + 4 + 4 + 4;
    return sizeof *g + g->cap * per + g->upper_bytes;
}

void eng_index_hnsw_set_ef(eng_index *ix, int ef_search) {
    assert(ef_search >= 1);
    if (ix->hnsw) ix->hnsw->ef_search = ef_search;
}

int64_t eng_index_hnsw_filter_exact_below(const eng_index *ix) {
    double c = ix->hnsw ? ix->hnsw->filter_c : FILTER_C;
    return (int64_t)sqrt(c * (double)ix->n);
}

void eng_index_hnsw_set_filter_c(eng_index *ix, double c) {
    assert(c >= 0);
    if (ix->hnsw) ix->hnsw->filter_c = c;
}

/* ---------------------------------------------------------------------------------------------
 * Keeping the graph in step with the rows. */

/* Unlinks node x and repairs its neighbours' links (see the file comment), then frees it. */
static void drop_node(eng_index *ix, struct index_hnsw *g, uint32_t x) {
    for (int lv = 0; lv <= g->level[x]; lv++) {
        const uint32_t *lx = links(g, x, lv);
        for (uint32_t i = 1; i <= lx[0]; i++) {
            uint32_t p = lx[i];
            if (p == x || !alive_at(g, p, lv)) continue;
            uint32_t *lp = links(g, p, lv);
            uint32_t at = 0;
            for (uint32_t j = 1; j <= lp[0] && !at; j++)
                if (lp[j] == x) at = j;
            if (!at) continue;
            lp[at] = lp[lp[0]--];
            uint32_t best = NONE;
            float bs = -INFINITY;
            for (uint32_t j = 1; j <= lx[0]; j++) {
                uint32_t c = lx[j];
                if (c == p || c == x || !alive_at(g, c, lv)) continue;
                int have = 0;
                for (uint32_t h = 1; h <= lp[0] && !have; h++) have = lp[h] == c;
                if (have) continue;
                float s = sim(ix, g, p, c);
                if (s > bs) bs = s, best = c;
            }
            if (best != NONE) lp[++lp[0]] = best;
        }
    }
    uint32_t r = g->row_of[x];
    g->node_of[r] = NONE;
    g->row_of[x] = NONE;
    links(g, x, 0)[0] = 0;
    clear_level(g, x);
    g->free_nodes[g->n_free++] = x;
    if (g->entry == x) { /* rare (one node in n): the highest live node, scanning them all */
        g->entry = NONE;
        g->max_level = 0;
        for (size_t i = 0; i < g->n_nodes; i++)
            if (g->row_of[i] != NONE && (g->entry == NONE || g->level[i] > g->max_level)) {
                g->entry = (uint32_t)i;
                g->max_level = g->level[i];
            }
    }
}

static int hnsw_grow(eng_index *ix, size_t cap, eng_err *err) {
    if (!ix->hnsw || graph_grow(ix->hnsw, cap) == 0) return 0;
    return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory growing the graph to %zu rows", cap);
}

/* Row r was written: a new row or a replaced vector. The graph takes it as an insert (after
 * dropping r's old node). This hook can't fail: when memory runs out the row stays out of the
 * graph (found by exact scans only) and the graph is otherwise intact. */
static void hnsw_row_set(eng_index *ix, size_t r) {
    struct index_hnsw *g = ix->hnsw;
    if (!g) return;
    assert(r < g->cap);
    if (g->node_of[r] != NONE) drop_node(ix, g, g->node_of[r]);
    uint32_t x;
    (void)new_node(g, r, &x); /* without its upper lists it is still found through level 0 */
    batch *b = cached_batch(g, BATCH_PUT);
    if (b) {
        b->nodes[0] = x;
        b->count = 1;
        if (insert_batch(ix, g, b) == 0) return;
        drop_cached(g, BATCH_PUT); /* a failed walk may leave its visited set dirty */
    }
    /* out of memory: take the node out again (its half-made links are repaired like a delete) */
    drop_node(ix, g, x);
}

static void hnsw_row_drop(eng_index *ix, size_t r) {
    struct index_hnsw *g = ix->hnsw;
    if (g && g->node_of[r] != NONE) drop_node(ix, g, g->node_of[r]);
}

static void hnsw_row_move(eng_index *ix, size_t dst, size_t src) {
    struct index_hnsw *g = ix->hnsw;
    if (!g) return;
    uint32_t x = g->node_of[src];
    g->node_of[dst] = x;
    if (x != NONE) g->row_of[x] = (uint32_t)dst;
    g->node_of[src] = NONE;
}

static void hnsw_release(eng_index *ix) { eng_index_hnsw_drop(ix); }

/* ---------------------------------------------------------------------------------------------
 * Queries. */

static int exact(const eng_index *ix, const float *q, const eng_search_opts *o, topk *t,
                 eng_err *err) {
    if (o->exact_out) *o->exact_out = 1;
    t->n = 0;
    return index_exact.search(ix, q, o, t, err);
}

/* A walk with ef, then, while a filter leaves fewer than k matches, walks with WIDEN × ef, and
 * the exact scan once ef would reach the row count: so a filtered answer has k hits whenever k
 * rows match, like the exact scan's. */
static int hnsw_search(const eng_index *ix, const float *q, const eng_search_opts *o, topk *t,
                       eng_err *err) {
    const struct index_hnsw *g = ix->hnsw;
    if (!g || g->building || g->entry == NONE || ix->n <= (size_t)t->k)
        return exact(ix, q, o, t, err);
    if (o->allow && eng_idset_count(o->allow) < eng_index_hnsw_filter_exact_below(ix))
        return exact(ix, q, o, t, err);
    if (o->exact_out) *o->exact_out = 0;
    scratch s;
    if (scratch_init(&s, g->cap)) return eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory");
    int ef = o->ef > 0 ? o->ef : g->ef_search;
    if (ef < t->k) ef = t->k;
    offer of = {t, o->allow, o->exclude};
    uint32_t ep0 = g->entry;
    float eps0 = ix->dot(q, row_vec(ix, g, ep0), ix->stride);
    for (int l = g->max_level; l > 0; l--) greedy(ix, g, q, l, &ep0, &eps0);
    int rc = 0;
    for (;;) {
        t->n = 0;
        if (search_layer(ix, g, q, ep0, eps0, 0, ef, &s, &of)) {
            rc = eng_fail_code(err, ERR_NO_MEMORY, "index: out of memory");
            break;
        }
        if (t->n == t->k) break;
        if ((size_t)ef * WIDEN >= ix->n) {
            rc = exact(ix, q, o, t, err);
            break;
        }
        ef *= WIDEN;
    }
    scratch_free(&s);
    return rc;
}

const index_backend index_hnsw = {
    .pass = ENG_INDEX_HNSW,
    .name = "hnsw",
    .grow = hnsw_grow,
    .row_set = hnsw_row_set,
    .row_move = hnsw_row_move,
    .row_drop = hnsw_row_drop,
    .release = hnsw_release,
    .search = hnsw_search,
};
