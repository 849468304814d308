"""bench/peer_env.py — the environment of the benchmarks' BLAS-backed peers (PyTorch, FAISS).

Debian's OpenBLAS 0.3.21 may misdetect a CPU, so the peers' kernel family is chosen from the
CPU's own flags, never fixed: SkylakeX exactly when /proc/cpuinfo lists avx512f, avx512bw,
avx512vl and avx512dq (SkylakeX kernels die with an illegal instruction on a CPU without them),
Haswell (AVX2 + FMA) otherwise. OPENBLAS_L2_SIZE, which some hosts set for old builds, goes with
it. Every benchmark prints the choice beside its figures.

    from peer_env import peer_env, apply_to_this_process
"""
import os

AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def openblas_coretype():
    return "SkylakeX" if set(AVX512) <= cpu_flags() else "Haswell"


def describe():
    kind = "AVX-512" if set(AVX512) <= cpu_flags() else "AVX2 only"
    return "%s (%s); peers' OPENBLAS_CORETYPE=%s" % (cpu_model(), kind, openblas_coretype())


def peer_env(base=None):
    """A copy of base (default os.environ) for a peer's process."""
    env = dict(os.environ if base is None else base)
    env["OPENBLAS_CORETYPE"] = openblas_coretype()
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def apply_to_this_process():
    """For a peer that runs in this very process: call before importing torch, numpy or faiss."""
    os.environ["OPENBLAS_CORETYPE"] = openblas_coretype()
    os.environ.pop("OPENBLAS_L2_SIZE", None)
