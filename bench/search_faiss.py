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
    a = ap.parse_args()

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


if __name__ == "__main__":
    main()
