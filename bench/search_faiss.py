#!/usr/bin/python3
"""bench/search_faiss.py — the FAISS peer of `barlowd bench-search`, on the very same vectors.

Reads the raw float32 files that `barlowd bench-search --dump-prefix P` writes (P.base.f32
[n, dim], P.query.f32 [m, dim], P.truth.i64 [queries, k]), L2-normalises them and searches an
exact faiss.IndexFlatIP (inner product of unit vectors = cosine):
  - single-query latency (median, p99) over --queries queries, one at a time, 1 thread;
  - batch throughput for --batch queries in one search call, 2 threads;
  - recall@k of its single-query answers against barlowd's exact ids (checks the data is shared;
    a tie at the k-th score may swap an id, so expect 1.0 or a hair below).
Prints one line: `faiss key=value ...` with the thread count of each figure.

With --ann (the peers of `barlowd bench-search --ann 1`), instead: faiss.IndexHNSWFlat (inner
product, --m, --ef-construction, one line per efSearch of --ef) and faiss.IndexIVFFlat (inner
product, --nlist lists, default 4·sqrt(n), k-means on --ivf-train sampled rows; one line per
nprobe of --nprobe), each built on --build-threads threads and queried one query at a time on 1
thread: build seconds, the process's resident memory before and after, the graph's bytes (HNSW:
neighbour lists, offsets, levels), p50/p99 and recall@k against barlowd's exact ids. Lines:
`faiss_ann index=... key=value ...`.

Needs Debian's python3-faiss (`apt-get install -y python3-faiss`).
"""
import argparse
import os
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("error: numpy is missing: apt-get install -y python3-numpy")
try:
    import faiss
except ImportError:
    sys.exit("error: faiss is missing: install Debian's package with `apt-get install -y python3-faiss`")


def load(path, dtype, cols):
    a = np.fromfile(path, dtype=dtype)
    if a.size % cols:
        sys.exit(f"error: {path}: {a.size} values is not a multiple of {cols}")
    return a.reshape(-1, cols)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", required=True, help="the --dump-prefix given to barlowd bench-search")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200, help="single queries timed")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batch call")
    ap.add_argument("--batch-threads", type=int, default=2)
    ap.add_argument("--ann", action="store_true", help="HNSW and IVF peers instead of the flat index")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--nlist", type=int, default=0, help="0: 4*sqrt(n)")
    ap.add_argument("--nprobe", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--ivf-train", type=int, default=100000, help="rows k-means trains on")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: hnsw, ivf")
    a = ap.parse_args()
    if a.ann:
        return ann(a)

    base = load(a.prefix + ".base.f32", np.float32, a.dim)
    qs = load(a.prefix + ".query.f32", np.float32, a.dim)
    truth = load(a.prefix + ".truth.i64", np.int64, a.k) if os.path.exists(a.prefix + ".truth.i64") else None
    if qs.shape[0] < max(a.queries, a.batch):
        sys.exit(f"error: {qs.shape[0]} queries in the file, need {max(a.queries, a.batch)}")
    base = np.ascontiguousarray(base)
    qs = np.ascontiguousarray(qs)
    faiss.normalize_L2(base)
    faiss.normalize_L2(qs)
    index = faiss.IndexFlatIP(a.dim)
    index.add(base)

    faiss.omp_set_num_threads(1)
    single_threads = faiss.omp_get_max_threads()
    index.search(qs[:1], a.k)  # warm-up
    lat, ids = [], []
    for i in range(a.queries):
        q = qs[i:i + 1]
        t = time.perf_counter()
        _, I = index.search(q, a.k)
        lat.append((time.perf_counter() - t) * 1e3)
        ids.append(I[0])
    lat.sort()
    med = lat[len(lat) // 2]
    p99 = lat[int((len(lat) - 1) * 0.99)]

    recall = float("nan")
    if truth is not None:
        n = min(a.queries, truth.shape[0])
        recall = sum(len(set(ids[i].tolist()) & set(truth[i].tolist())) for i in range(n)) / (n * a.k)

    faiss.omp_set_num_threads(a.batch_threads)
    batch_threads = faiss.omp_get_max_threads()
    t = time.perf_counter()
    index.search(qs[:a.batch], a.k)
    batch_ms = (time.perf_counter() - t) * 1e3

    print(f"faiss version={faiss.__version__} index=IndexFlatIP n={base.shape[0]} dim={a.dim} k={a.k} "
          f"single_threads={single_threads} single_median_ms={med:.2f} single_p99_ms={p99:.2f} "
          f"batch={a.batch} batch_threads={batch_threads} batch_ms={batch_ms:.1f} "
          f"batch_qps={a.batch / (batch_ms * 1e-3):.0f} recall_vs_barlowd={recall:.4f}")


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def timed_queries(index, qs, k, n, truth):
    """Single queries, one at a time: median, p99 ms and recall@k against truth."""
    index.search(qs[:1], k)
    lat, hit = [], 0
    for i in range(n):
        t = time.perf_counter()
        _, I = index.search(qs[i:i + 1], k)
        lat.append((time.perf_counter() - t) * 1e3)
        hit += len(set(I[0].tolist()) & set(truth[i].tolist()))
    lat.sort()
    return lat[len(lat) // 2], lat[int((len(lat) - 1) * 0.99)], hit / (n * k)


def ann(a):
    base = np.ascontiguousarray(load(a.prefix + ".base.f32", np.float32, a.dim))
    qs = np.ascontiguousarray(load(a.prefix + ".query.f32", np.float32, a.dim))
    truth = load(a.prefix + ".truth.i64", np.int64, a.k)
    faiss.normalize_L2(base)
    faiss.normalize_L2(qs)
    n = base.shape[0]
    nq = min(a.queries, truth.shape[0])
    skip = set(x for x in a.skip.split(",") if x)
    common = f"version={faiss.__version__} n={n} dim={a.dim} k={a.k} build_threads={a.build_threads} query_threads=1"
    if "hnsw" not in skip:
        faiss.omp_set_num_threads(a.build_threads)
        r0 = rss_kb()
        index = faiss.IndexHNSWFlat(a.dim, a.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = a.ef_construction
        t = time.perf_counter()
        index.add(base)
        build_s = time.perf_counter() - t
        r1 = rss_kb()
        h = index.hnsw
        graph = (faiss.vector_to_array(h.neighbors).nbytes + faiss.vector_to_array(h.offsets).nbytes
                 + faiss.vector_to_array(h.levels).nbytes)
        faiss.omp_set_num_threads(1)
        for ef in (int(x) for x in a.ef.split(",")):
            h.efSearch = ef
            med, p99, rec = timed_queries(index, qs, a.k, nq, truth)
            print(f"faiss_ann index=IndexHNSWFlat {common} m={a.m} ef_construction={a.ef_construction} "
                  f"ef={ef} build_s={build_s:.1f} graph_bytes={graph} rss_before_kb={r0} rss_after_kb={r1} "
                  f"median_ms={med:.3f} p99_ms={p99:.3f} recall_at_k={rec:.4f}", flush=True)
        del index
    if "ivf" not in skip:
        faiss.omp_set_num_threads(a.build_threads)
        nlist = a.nlist or int(4 * np.sqrt(n))
        r0 = rss_kb()
        quant = faiss.IndexFlatIP(a.dim)
        index = faiss.IndexIVFFlat(quant, a.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(1)
        sample = base[rng.choice(n, size=min(n, a.ivf_train), replace=False)]
        t = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - t
        index.add(base)
        build_s = time.perf_counter() - t
        r1 = rss_kb()
        faiss.omp_set_num_threads(1)
        for nprobe in (int(x) for x in a.nprobe.split(",")):
            index.nprobe = nprobe
            med, p99, rec = timed_queries(index, qs, a.k, nq, truth)
            print(f"faiss_ann index=IndexIVFFlat {common} nlist={nlist} train_rows={sample.shape[0]} "
                  f"nprobe={nprobe} build_s={build_s:.1f} train_s={train_s:.1f} rss_before_kb={r0} "
                  f"rss_after_kb={r1} median_ms={med:.3f} p99_ms={p99:.3f} recall_at_k={rec:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
