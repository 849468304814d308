#!/usr/bin/python3
"""tests/export_torch.py — a safetensors file written by `barlowd export`, loaded into the PyTorch
reference module (tests/torch_ref.py's BarlowTwinsNet) with load_state_dict(strict=True), gives
barlowd's representations for the same preprocessed images.

    /usr/bin/python3 tests/export_torch.py [--build build] [--fixture odd | --checkpoint C.bin]
                                           [--images 16]

The model is a fixture's (its perturbed weights, random running statistics: tests/export_case.h)
or any checkpoint file (e.g. from `barlowd train`). build/tests/export_case writes the case (a
store holding the model, images, barlowd's preprocessing of them and barlowd's vectors), then
`barlowd export --format safetensors` writes the file, read here with json and torch.frombuffer
only (Debian has no safetensors package). Prints the largest relative difference per vector,
max |torch - barlowd| / max |barlowd|, in float32 and float64; exits 1 above 1e-4.

Needs Debian's python3-torch; the test suite never runs this (test_export checks the file's
format in C, test_onnxruntime the ONNX file in a real runtime)."""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_ref as R  # noqa: E402

TOLERANCE = 1e-4
DTYPES = {"F32": torch.float32, "I64": torch.int64}


def read_safetensors(path):
    """(state dict, __metadata__) of a safetensors file, checking its layout on the way."""
    with open(path, "rb") as f:
        blob = bytearray(f.read())  # writable: torch.frombuffer shares its memory
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    start, end = 8 + n, len(blob)
    spans, state = [], {}
    for name, e in header.items():
        b, stop = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        assert stop - b == count * torch.empty((), dtype=dtype).element_size(), name
        t = torch.frombuffer(blob, dtype=dtype, count=count, offset=start + b)
        state[name] = t.reshape(e["shape"]).clone()
        spans.append((b, stop))
    spans.sort()
    at = 0
    for b, stop in spans:
        assert b == at, "a gap or an overlap at byte %d" % at
        at = stop
    assert at == end - start, "the entries cover %d of %d data bytes" % (at, end - start)
    return state, meta


def rel_diff(got, want):
    """max |got - want| / max |want| per row."""
    return ((got - want).abs().amax(dim=1) / want.abs().amax(dim=1)).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--fixture", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    source = (["--checkpoint", args.checkpoint] if args.checkpoint
              else ["--fixture", args.fixture or "odd"])
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([os.path.join(args.build, "tests", "export_case"), d] + source +
                       ["--images", str(args.images)], check=True)
        out = os.path.join(d, "model.safetensors")
        subprocess.run([os.path.join(args.build, "barlowd"), "export", "--db",
                        os.path.join(d, "barlowd.db"), "--format", "safetensors", "--out", out],
                       check=True)
        case = json.load(open(os.path.join(d, "case.json")))
        n, c, s, dim = case["n"], case["channels"], case["size"], case["dim"]
        x = R.read_f32(os.path.join(d, "input.f32")).reshape(n, c, s, s)
        want = R.read_f32(os.path.join(d, "want.f32")).reshape(n, dim)
        state, meta = read_safetensors(out)
        size = os.path.getsize(out)

    config = json.loads(meta["barlowd.config"])
    model = R.build_model(config)
    result = model.load_state_dict(state, strict=True)  # raises on a missing or unexpected key
    assert not result.missing_keys and not result.unexpected_keys
    for name, t in model.state_dict().items():  # every value arrived, int64 counters too
        assert torch.equal(t, state[name].to(t.dtype)), name
    model.eval()
    with torch.no_grad():
        d32 = rel_diff(model.encode(x), want)
        d64 = rel_diff(model.double().encode(x.double()), want.double())
    steps = int(meta["barlowd.step"])
    print("safetensors: %d bytes, %d entries (strict load), step %d, num_batches_tracked %d"
          % (size, len(state), steps, int(state["stem_bn.num_batches_tracked"])))
    print("PyTorch %s BarlowTwinsNet.encode vs barlowd, %d images [%d, %d, %d] -> [%d]: max "
          "relative difference %.3e (float32), %.3e (float64); bound %g"
          % (torch.__version__, n, c, s, s, dim, d32.max(), d64.max(), TOLERANCE))
    return 0 if max(d32.max(), d64.max()) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
