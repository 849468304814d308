#!/usr/bin/python3
"""PyTorch peer for the Barlow Twins representation-quality benchmark (Fashion-MNIST, k-NN).

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000 \\
    /usr/bin/python3 bench/quality_torch.py --config small.json --minutes 60 \\
        --eval-at 5,15,30,60 --batch 256 --threads 2 --seed 1 --out results.json \\
        [--recipe bench/recipes/u2_lars_lossscale.json]

Run it with the two glibc malloc variables above.  Without them glibc returns the large
activation buffers to the kernel after every step and maps them again (page faults on every
step); measured here, torch is then about 3x slower.  The script warns on stderr (and records in
the JSON) when they are not set.

What it does
------------
Trains the model of the config JSON (tests/torch_ref.py: BarlowTwinsNet, torchvision-style init
from --seed, Barlow Twins loss, LARS with warmup then constant learning rate:
batch/256 x 0.2 for weights, x 0.0048 for 1-D parameters; --recipe replaces any of these and the
augmentation settings with a barlowd recipe file's, key for key, so `--recipe
bench/recipes/u2_lars_lossscale.json` runs barlowd's default recipe) on the 60k Fashion-MNIST training
images (Debian's dataset-fashion-mnist; labels are never used for training), on the CPU in
float32, for --minutes of *training* wall-clock time.  At each --eval-at point (cumulative
training minutes) the clock is paused and the encoder (model.eval(), so BatchNorm uses its
running statistics) embeds the train and test images (evaluation view); the test set is then
classified by k-NN against the train set (see knn_accuracy).  Before training the same figures
are computed for raw pixels and for the randomly initialised encoder.

Data and augmentation (mirrors engine/data/eng_augment.h and the C trainer)
----------------------------------------------------------------------
* Training copy of each image: the image converted to the model's channel count (gray -> RGB by
  replication) and, only when its shorter side exceeds 2*S (S = input_size), downscaled with the
  C engine's box filter to shorter side 2*S (Fashion-MNIST's 28x28 is kept for S >= 14).
* Sampling: every batch draws --batch images uniformly *with replacement* (as eng_source does).
* Two views per image, each: random resized crop (scale (0.2, 1.0), ratio (3/4, 4/3),
  torchvision's get_params: 10 attempts, log-uniform ratio, round half to even, centre-crop
  fallback) resampled bilinearly to S x S from the 8-bit copy (half-pixel centres, positions
  clamped to the box, no antialiasing); horizontal flip p=0.5; colour jitter p=0.8 (brightness
  0.4, contrast 0.4, saturation 0.2, hue 0.1, in a random order per view; saturation and hue only
  for 3-channel models; contrast mean = mean luma 0.299/0.587/0.114); grayscale p=0.2 (luma,
  a no-op for 1 channel); Gaussian blur with p=1.0 for view A, 0.1 for view B, sigma uniform in
  [max(0.1, 0.1*S/224), max(0.1, 2.0*S/224)] pixels, kernel radius ceil(3 sigma), separable,
  borders reflected without repeating the edge (periodically when needed); solarisation p=0.0
  for A, 0.2 for B (values >= 0.5 become 1 - v); normalisation with ImageNet mean/std for
  3 channels, mean 0.5 / std 0.25 for 1 channel.
  torchvision is not installed on this machine, and its transforms work one image at a time, so
  the pipeline is written here as batched tensor operations with the same semantics (random
  numbers come from numpy, seeded per batch from (--seed, batch index); they are of course not
  the C engine's random numbers).
* Augmentation runs in a DataLoader with one persistent worker process (torch threads 1 there),
  one batch ahead of the training step (prefetch_factor 1), like the C prefetch thread.
* Evaluation view: the whole channel-converted image (not the downscaled training copy; the same
  thing for Fashion-MNIST whenever S >= 14) resized bilinearly (same resampler, box = whole
  image) to S x S and normalised; no augmentation.

Clock: starts once the DataLoader worker has been started (process start-up excluded), and
counts every training step including any wait for the worker's next batch, except the first
step: torch does its lazy set-up there (about 25 s here; barlowd's set-up also happens before
its clock starts), so it is timed apart as first_step_s.  A step is never
interrupted: the evaluation for point t happens after the first step that brings the training
time to >= t minutes, and the reported train_s is the actual training time at that moment.
Training stops at the last point (--minutes is added to the points if missing).

Output: one line per baseline and per evaluation point on stdout, e.g.

    torch minutes=5 steps=123 images_per_s=104.9 knn20=0.7712 knn200w=0.7801 loss=812.3

(images_per_s = steps * batch / training seconds so far; loss = mean loss of the steps since
the previous point), progress on stderr, and everything in --out as JSON (rewritten after every
evaluation, so an interrupted run keeps its earlier points).

Importable: ``from quality_torch import knn_accuracy, load_fashion_mnist`` (nothing runs on
import; torch and numpy are the only dependencies).
"""

import argparse
import datetime
import gzip
import json
import math
import os
import platform
import resource
import shlex
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_env import apply_to_this_process, describe  # noqa: E402

apply_to_this_process()  # before numpy and torch load OpenBLAS
import numpy as np  # noqa: E402
import torch  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))
import torch_ref as R  # noqa: E402

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
PAPER_SIZE = 224
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "1000000000000"}


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def _read_idx_gz(path, want_magic):
    """One gzipped IDX file as a numpy array (uint8 data, big-endian header)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic != want_magic:
        raise ValueError("%s: IDX magic 0x%08x, expected 0x%08x" % (path, magic, want_magic))
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - off != count:
        raise ValueError("%s: %d data bytes, header says %d" % (path, len(raw) - off, count))
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=off).reshape(dims).copy()


def load_fashion_mnist(directory=FASHION_MNIST_DIR):
    """Returns (train_images uint8 [60000, 28, 28], train_labels uint8 [60000],
    test_images uint8 [10000, 28, 28], test_labels uint8 [10000]) from the gzipped IDX files
    of Debian's dataset-fashion-mnist."""
    def p(name):
        return os.path.join(directory, name)
    tr_x = _read_idx_gz(p("train-images-idx3-ubyte.gz"), 0x00000803)
    tr_y = _read_idx_gz(p("train-labels-idx1-ubyte.gz"), 0x00000801)
    te_x = _read_idx_gz(p("t10k-images-idx3-ubyte.gz"), 0x00000803)
    te_y = _read_idx_gz(p("t10k-labels-idx1-ubyte.gz"), 0x00000801)
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise ValueError("image and label counts differ")
    return tr_x, tr_y, te_x, te_y


def to_channels(images, channels):
    """uint8 [N, H, W] gray -> uint8 [N, H, W, channels] (replicated for 3)."""
    x = images[..., None]
    return np.ascontiguousarray(np.repeat(x, channels, axis=3)) if channels == 3 else x


def _box_matrix(src, dst):
    """Integer overlap weights [dst, src] of the C engine's box filter (eng_image_downscale):
    output i covers [i*src, (i+1)*src), source j covers [j*dst, (j+1)*dst)."""
    m = np.zeros((dst, src), dtype=np.int64)
    for i in range(dst):
        lo, hi = i * src, (i + 1) * src
        for j in range(lo // dst, -(-hi // dst)):
            m[i, j] = min(hi, (j + 1) * dst) - max(lo, j * dst)
    return m


def box_downscale(images, max_side):
    """The C engine's eng_image_downscale on a uniform-size batch uint8 [N, H, W, C]: when the
    shorter side exceeds max_side, shrink it to max_side (longer side scaled by the same
    factor, rounded), box filter with exact integer weights, rounded half up."""
    n, h, w, c = images.shape
    shorter, longer = min(w, h), max(w, h)
    if shorter <= max_side:
        return images
    scaled = max(1, (longer * max_side + shorter // 2) // shorter)
    ow, oh = (max_side, scaled) if w < h else (scaled, max_side)
    if w == h:
        ow = oh = max_side
    mx, my = _box_matrix(w, ow), _box_matrix(h, oh)
    x = images.astype(np.int64)
    x = np.einsum("xw,nhwc->nhxc", mx, x)
    x = np.einsum("yh,nhxc->nyxc", my, x)
    denom = w * h
    return ((x + denom // 2) // denom).astype(np.uint8)


# --------------------------------------------------------------------------
# Augmentation (batched; semantics of engine/data/eng_augment.c)
# --------------------------------------------------------------------------

LUMA = (0.299, 0.587, 0.114)


class AugConfig:
    def __init__(self, size, channels):
        self.size = size
        self.channels = channels
        self.scale = (0.2, 1.0)
        self.ratio = (3.0 / 4.0, 4.0 / 3.0)
        self.flip_p = 0.5
        self.jitter_p = 0.8
        self.brightness = 0.4
        self.contrast = 0.4
        self.saturation = 0.2
        self.hue = 0.1
        self.gray_p = 0.2
        self.blur_p = (1.0, 0.1)
        s = size / PAPER_SIZE
        self.blur_sigma = (max(0.1, 0.1 * s), max(0.1, 2.0 * s))
        self.solarize_p = (0.0, 0.2)
        self.solarize_threshold = 0.5
        if channels == 3:
            self.mean, self.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        else:
            self.mean, self.std = (0.5,), (0.25,)

    def as_dict(self):
        return dict(self.__dict__)


def crop_params(rng, n, width, height, scale, ratio):
    """n crop boxes (x, y, w, h) for a width x height image, torchvision's
    RandomResizedCrop.get_params drawn for all n at once: 10 attempts with area fraction
    uniform in scale and log-uniform aspect ratio, w/h rounded half to even (np.rint, like
    Python's round), the first attempt that fits wins; otherwise the centre crop clamped to
    the ratio range."""
    area = float(width) * height
    target = area * rng.uniform(scale[0], scale[1], size=(n, 10))
    ar = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, 10)))
    w = np.rint(np.sqrt(target * ar)).astype(np.int64)
    h = np.rint(np.sqrt(target / ar)).astype(np.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(n), first]
    bw = w[np.arange(n), first]
    bh = h[np.arange(n), first]
    # Fallback (centre crop of the whole image, clamped to the ratio range).
    in_ratio = width / height
    fw, fh = width, height
    if in_ratio < ratio[0]:
        fh = int(round(fw / ratio[0]))
    elif in_ratio > ratio[1]:
        fw = int(round(fh * ratio[1]))
    fw, fh = min(max(fw, 1), width), min(max(fh, 1), height)
    bw = np.where(found, bw, fw)
    bh = np.where(found, bh, fh)
    # Position: uniform integer in [0, H - h] and [0, W - w].
    by = np.floor(rng.random(n) * (height - bh + 1)).astype(np.int64)
    bx = np.floor(rng.random(n) * (width - bw + 1)).astype(np.int64)
    by = np.where(found, np.minimum(by, height - bh), (height - fh) // 2)
    bx = np.where(found, np.minimum(bx, width - bw), (width - fw) // 2)
    return bx, by, bw, bh


def _taps(start, length, size):
    """Bilinear taps for `size` outputs over [start, start + length) per row of the inputs
    (arrays [n]): half-pixel centres, positions clamped to the box (align_corners=False, no
    antialiasing).  Returns (i0, i1, t) of shape [n, size]."""
    o = np.arange(size, dtype=np.float64)[None, :]
    ln = length[:, None].astype(np.float64)
    pos = (o + 0.5) * ln / size - 0.5
    pos = np.clip(pos, 0.0, ln - 1.0)
    a = np.floor(pos).astype(np.int64)
    b = np.minimum(a + 1, length[:, None] - 1)
    t = (pos - a).astype(np.float32)
    return start[:, None] + a, start[:, None] + b, t


def resized_crop(images, src, bx, by, bw, bh, size):
    """Views [n, C, size, size] float32 in [0, 1]: the box (bx, by, bw, bh) of image src[i] of
    images (uint8 tensor [N, H, W, C]) resampled bilinearly to size x size."""
    y0, y1, ty = _taps(by, bh, size)
    x0, x1, tx = _taps(bx, bw, size)
    s = torch.from_numpy(src)[:, None, None]
    y0, y1 = torch.from_numpy(y0)[:, :, None], torch.from_numpy(y1)[:, :, None]
    x0, x1 = torch.from_numpy(x0)[:, None, :], torch.from_numpy(x1)[:, None, :]
    ty = torch.from_numpy(ty)[:, :, None, None]
    tx = torch.from_numpy(tx)[:, None, :, None]
    p00 = images[s, y0, x0].float()
    p01 = images[s, y0, x1].float()
    p10 = images[s, y1, x0].float()
    p11 = images[s, y1, x1].float()
    top = p00 + (p01 - p00) * tx
    bot = p10 + (p11 - p10) * tx
    out = (top + (bot - top) * ty) * (1.0 / 255.0)          # [n, S, S, C]
    return out.permute(0, 3, 1, 2).contiguous()


def _luma(x):
    """[n, 3, H, W] -> [n, 1, H, W]."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def _col(f, x):
    return torch.as_tensor(f, dtype=x.dtype).reshape(-1, 1, 1, 1)


def adjust_brightness(x, f):
    return (_col(f, x) * x).clamp_(0.0, 1.0)


def adjust_contrast(x, f):
    g = _luma(x) if x.shape[1] == 3 else x
    m = g.mean(dim=(1, 2, 3), keepdim=True)
    f = _col(f, x)
    return (f * x + (1.0 - f) * m).clamp_(0.0, 1.0)


def adjust_saturation(x, f):
    f = _col(f, x)
    return (f * x + (1.0 - f) * _luma(x)).clamp_(0.0, 1.0)


def adjust_hue(x, shift):
    """torchvision's adjust_hue (RGB -> HSV, hue += shift mod 1, -> RGB), per-image shift."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.max(torch.max(r, g), b)
    minc = torch.min(torch.min(r, g), b)
    eq = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eq, ones, maxc)
    div = torch.where(eq, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = torch.where(maxc == r, bc - gc,
                    torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    h = torch.fmod(h + torch.as_tensor(shift, dtype=x.dtype).reshape(-1, 1, 1) + 1.0, 1.0)
    h = torch.where(h < 0, h + 1.0, h)
    v = maxc
    h6 = h * 6.0
    fi = torch.floor(h6)
    fr = h6 - fi
    sector = torch.remainder(fi.long(), 6)
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * fr)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - fr))).clamp(0.0, 1.0)
    table_r = torch.stack([v, q, p, p, t, v], dim=1)
    table_g = torch.stack([t, v, v, q, p, p], dim=1)
    table_b = torch.stack([p, p, t, v, v, q], dim=1)
    idx = sector[:, None]
    out = torch.stack([table_r.gather(1, idx)[:, 0], table_g.gather(1, idx)[:, 0],
                       table_b.gather(1, idx)[:, 0]], dim=1)
    return out


def _reflect(i, n):
    """Reflect indices into [0, n) without repeating the edge, periodically."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i < n, i, period - i)


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of [n, C, H, W] with per-image sigma [n]: radius
    max(1, ceil(3 sigma)) per image, weights normalised over that radius, reflected borders."""
    n, c, h, w = x.shape
    rad = np.maximum(1, np.ceil(3.0 * sigma)).astype(np.int64)
    rmax = int(rad.max())
    k = np.arange(-rmax, rmax + 1, dtype=np.float64)[None, :]
    kern = np.exp(-k * k / (2.0 * sigma[:, None] ** 2))
    kern = np.where(np.abs(k) <= rad[:, None], kern, 0.0)
    kern = torch.from_numpy((kern / kern.sum(axis=1, keepdims=True)).astype(np.float32))
    kern = kern.reshape(n, 1, 1, 1, -1)
    offs = np.arange(-rmax, rmax + 1)[None, :]
    ix = torch.from_numpy(_reflect(np.arange(w)[:, None] + offs, w))   # [w, 2r+1]
    iy = torch.from_numpy(_reflect(np.arange(h)[:, None] + offs, h))   # [h, 2r+1]
    x = (x[:, :, :, ix] * kern).sum(-1)                                  # horizontal
    x = (x.transpose(2, 3)[:, :, :, iy] * kern).sum(-1).transpose(2, 3)  # vertical
    return x.contiguous()


def augment_views(images, src, cfg, view, rng):
    """One view (0 = A, 1 = B) of each image src[i] of images (uint8 tensor [N, H, W, C]):
    float32 [n, C, S, S], normalised."""
    n = len(src)
    _, height, width, c = images.shape
    s = cfg.size
    bx, by, bw, bh = crop_params(rng, n, width, height, cfg.scale, cfg.ratio)
    x = resized_crop(images, src, bx, by, bw, bh, s)

    flip = torch.from_numpy(rng.random(n) < cfg.flip_p)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)

    jit = rng.random(n) < cfg.jitter_p
    order = np.argsort(rng.random((n, 4)), axis=1)          # a random permutation per view
    fb = rng.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, n)
    fc = rng.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, n)
    fs = rng.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, n)
    fh = rng.uniform(-cfg.hue, cfg.hue, n)
    for step in range(4):
        for op in range(4):
            sel = np.nonzero(jit & (order[:, step] == op))[0]
            if len(sel) == 0:
                continue
            t = torch.from_numpy(sel)
            if op == 0 and cfg.brightness > 0:
                x[t] = adjust_brightness(x[t], fb[sel])
            elif op == 1 and cfg.contrast > 0:
                x[t] = adjust_contrast(x[t], fc[sel])
            elif op == 2 and c == 3 and cfg.saturation > 0:
                x[t] = adjust_saturation(x[t], fs[sel])
            elif op == 3 and c == 3 and cfg.hue > 0:
                x[t] = adjust_hue(x[t], fh[sel])

    gray = rng.random(n) < cfg.gray_p
    if c == 3 and gray.any():
        t = torch.from_numpy(np.nonzero(gray)[0])
        x[t] = _luma(x[t]).expand(-1, 3, -1, -1)

    blur = rng.random(n) < cfg.blur_p[view]
    sig = rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n)
    if blur.any():
        sel = np.nonzero(blur)[0]
        t = torch.from_numpy(sel)
        x[t] = gaussian_blur(x[t], sig[sel])

    sol = torch.from_numpy(rng.random(n) < cfg.solarize_p[view])[:, None, None, None]
    x = torch.where(sol & (x >= cfg.solarize_threshold), 1.0 - x, x)

    mean = torch.tensor(cfg.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def eval_views(images, cfg):
    """Evaluation view of every image of images (uint8 tensor [n, H, W, C]): the whole image
    resized bilinearly to S x S and normalised.  float32 [n, C, S, S]."""
    n, h, w, _ = images.shape
    z = np.zeros(n, dtype=np.int64)
    x = resized_crop(images, np.arange(n), z, z, np.full(n, w), np.full(n, h), cfg.size)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


class TwoViewStream(torch.utils.data.IterableDataset):
    """Endless stream of (view_a, view_b) batches: batch k draws `batch` images uniformly with
    replacement and both their views from a numpy generator seeded with (seed, k)."""

    def __init__(self, images, cfg, batch, seed):
        super().__init__()
        self.images = images          # uint8 tensor [N, H, W, C]
        self.cfg = cfg
        self.batch = batch
        self.seed = seed

    def __iter__(self):
        k = 0
        while True:
            rng = np.random.default_rng([self.seed, k])
            src = rng.integers(0, self.images.shape[0], size=self.batch)
            a = augment_views(self.images, src, self.cfg, 0, rng)
            b = augment_views(self.images, src, self.cfg, 1, rng)
            yield a, b
            k += 1


def _worker_init(_):
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


# --------------------------------------------------------------------------
# k-NN evaluation
# --------------------------------------------------------------------------

def _pick(scores):
    """argmax over the last axis, ties going to the smallest index (label)."""
    best = scores.max(dim=1, keepdim=True).values
    idx = torch.arange(scores.shape[1]).expand_as(scores)
    return torch.where(scores == best, idx, scores.shape[1]).min(dim=1).values


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k=20, k_weighted=200,
                 temperature=0.1, chunk=256):
    """k-NN accuracy of the test set against the train set, cosine similarity.

    train_feats [Ntr, D], test_feats [Nte, D] (numpy arrays or torch tensors, any float type;
    computed in float32 after L2-normalising every row, a zero row stays zero), labels integer
    class ids in [0, C).  Returns (acc_k, acc_k_weighted) as Python floats:

    * acc_k: plain majority vote of the k (20) most similar training vectors; a tie between
      classes goes to the smallest label.
    * acc_k_weighted: the InstDisc / common "kNN monitor" protocol: the k_weighted (200) most
      similar training vectors vote with weight exp(sim / temperature) (temperature 0.1),
      summed per class (accumulated in float64); the largest sum wins, ties to the smallest
      label.

    Neighbours are chosen with torch.topk; among training vectors with exactly equal similarity
    at the k-th place, which ones are kept is torch's choice.  k and k_weighted are capped at
    Ntr.  The test set is processed `chunk` rows at a time, so memory is about
    chunk x Ntr x 4 bytes (61 MB for 256 x 60000) plus the features.
    """
    tr = torch.as_tensor(np.asarray(train_feats) if not torch.is_tensor(train_feats)
                         else train_feats).float()
    te = torch.as_tensor(np.asarray(test_feats) if not torch.is_tensor(test_feats)
                         else test_feats).float()
    trl = torch.as_tensor(np.asarray(train_labels).astype(np.int64)
                          if not torch.is_tensor(train_labels) else train_labels).long()
    tel = torch.as_tensor(np.asarray(test_labels).astype(np.int64)
                          if not torch.is_tensor(test_labels) else test_labels).long()
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise ValueError("features must be [N, D] with the same D")
    if len(trl) != len(tr) or len(tel) != len(te) or len(tr) == 0 or len(te) == 0:
        raise ValueError("feature and label counts differ, or a set is empty")
    tr = torch.nn.functional.normalize(tr, dim=1)
    te = torch.nn.functional.normalize(te, dim=1)
    classes = int(max(trl.max().item(), tel.max().item())) + 1
    k = min(k, len(tr))
    kw = min(k_weighted, len(tr))
    kmax = max(k, kw)
    right_k = right_w = 0
    with torch.no_grad():
        for i in range(0, len(te), chunk):
            sim = te[i:i + chunk] @ tr.t()
            vals, idx = sim.topk(kmax, dim=1, largest=True, sorted=True)
            lab = trl[idx]                                               # [c, kmax]
            m = len(lab)
            votes = torch.zeros(m, classes, dtype=torch.int64)
            votes.scatter_add_(1, lab[:, :k], torch.ones(m, k, dtype=torch.int64))
            right_k += int((_pick(votes) == tel[i:i + chunk]).sum())
            w = torch.exp(vals[:, :kw].double() / temperature)
            scores = torch.zeros(m, classes, dtype=torch.float64)
            scores.scatter_add_(1, lab[:, :kw], w)
            right_w += int((_pick(scores) == tel[i:i + chunk]).sum())
    return right_k / len(te), right_w / len(te)


def linear_probe(train_feats, train_labels, test_feats, test_labels, holdout=5000,
                 decays=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2), seed=0):
    """Linear-probe accuracy: multinomial logistic regression on standardised features.

    The features are standardised with the training set's per-dimension mean and standard
    deviation; the L2 penalty is chosen among `decays` by accuracy on `holdout` training
    images held out (a fixed random split by `seed`), then the probe is fitted on every
    training image with it and evaluated on the test set. Each fit is full-batch L-BFGS (float64,
    300 iterations at most), so the result does not depend on thread counts or batch order.
    Returns (test accuracy, the chosen decay)."""
    tr = torch.as_tensor(np.asarray(train_feats), dtype=torch.float64)
    te = torch.as_tensor(np.asarray(test_feats), dtype=torch.float64)
    trl = torch.as_tensor(np.asarray(train_labels).astype(np.int64))
    tel = torch.as_tensor(np.asarray(test_labels).astype(np.int64))
    mean, std = tr.mean(0), tr.std(0).clamp_min(1e-8)
    tr, te = (tr - mean) / std, (te - mean) / std
    classes = int(max(trl.max().item(), tel.max().item())) + 1

    def fit(x, y, decay):
        w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w + b, y) + decay * (w * w).sum()
            loss.backward()
            return loss
        opt.step(closure)
        return w.detach(), b.detach()

    def accuracy(wb, x, y):
        return float(((x @ wb[0] + wb[1]).argmax(1) == y).double().mean())

    perm = torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))
    held, rest = perm[:holdout], perm[holdout:]
    best = max(decays, key=lambda d: accuracy(fit(tr[rest], trl[rest], d), tr[held], trl[held]))
    return accuracy(fit(tr, trl, best), te, tel), best


@torch.no_grad()
def encode_all(model, images, cfg, chunk=1000):
    """Representations (model.encode, eval mode) of the evaluation views of images
    (uint8 tensor [N, H, W, C]); restores the model's training flag.  float32 [N, D]."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, images.shape[0], chunk):
        out.append(model.encode(eval_views(images[i:i + chunk], cfg)))
    model.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch Barlow Twins quality benchmark "
                                 "(Fashion-MNIST, k-NN); see the module docstring.")
    ap.add_argument("--config", required=True, help="model config JSON")
    ap.add_argument("--minutes", type=float, required=True, help="training minutes (wall clock)")
    ap.add_argument("--eval-at", default="",
                    help="comma-separated cumulative training minutes to evaluate at "
                         "(--minutes is always added)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training step")
    ap.add_argument("--seed", type=int, default=1, help="model init and augmentation seed")
    ap.add_argument("--lr-warmup", type=int, default=200, help="LR warmup steps")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--data-dir", default=FASHION_MNIST_DIR)
    ap.add_argument("--limit-train", type=int, default=0,
                    help="use only the first N training images (training and k-NN); 0 = all")
    ap.add_argument("--limit-test", type=int, default=0,
                    help="use only the first N test images; 0 = all")
    ap.add_argument("--eval-chunk", type=int, default=1000, help="images per encoder call")
    ap.add_argument("--recipe", default=None,
                    help="a barlowd recipe JSON (bench/recipes/): its keys replace the paper's "
                         "settings here exactly as `barlowd train --recipe` applies them")
    return ap.parse_args(argv)


# barlowd's recipe keys (engine/run/eng_recipe.c) -> the AugConfig attribute each one sets.
RECIPE_AUG = {"crop_scale": "scale", "crop_ratio": "ratio", "flip": "flip_p",
              "jitter": "jitter_p", "brightness": "brightness", "contrast": "contrast",
              "saturation": "saturation", "hue": "hue", "gray": "gray_p", "blur": "blur_p",
              "blur_sigma": "blur_sigma", "solarize": "solarize_p",
              "solarize_threshold": "solarize_threshold"}
RECIPE_OPT = ("lr", "lr_biases", "weight_decay", "eta", "momentum", "warmup", "cosine_steps")


def apply_recipe(recipe, cfg):
    """The optimiser settings of a recipe (paper values for keys it leaves out); sets the
    augmentation keys on cfg.  An unknown key is an error, as in barlowd."""
    opt = {"lr": R.LR_WEIGHTS, "lr_biases": R.LR_BIASES, "weight_decay": R.LARS_WEIGHT_DECAY,
           "eta": R.LARS_ETA, "momentum": R.LARS_MOMENTUM, "warmup": None, "cosine_steps": 0}
    for key, value in recipe.items():
        if key in RECIPE_OPT:
            opt[key] = value
        elif key in RECIPE_AUG:
            setattr(cfg, RECIPE_AUG[key], tuple(value) if isinstance(value, list) else value)
        else:
            sys.exit("recipe: unknown key %r" % key)
    return opt


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    points = sorted({float(v) for v in args.eval_at.split(",") if v.strip()} | {args.minutes})
    if args.minutes <= 0 or points[0] <= 0 or points[-1] > args.minutes:
        sys.exit("need --minutes > 0 and eval points in (0, --minutes]")
    if args.batch < 2 or args.threads < 1:
        sys.exit("need --batch >= 2 and --threads >= 1")
    missing = [k for k, v in MALLOC_ENV.items() if os.environ.get(k) != v]
    if missing:
        _log("warning: run with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000 "
             "(torch is ~3x slower without them); not set: %s" % ", ".join(missing))

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_flush_denormal(True)

    config = R.load_config(args.config)
    ch, size = int(config["in_channels"]), int(config["input_size"])
    cfg = AugConfig(size, ch)

    tr_x, tr_y, te_x, te_y = load_fashion_mnist(args.data_dir)
    if args.limit_train > 0:
        tr_x, tr_y = tr_x[:args.limit_train], tr_y[:args.limit_train]
    if args.limit_test > 0:
        te_x, te_y = te_x[:args.limit_test], te_y[:args.limit_test]
    tr_img = torch.from_numpy(to_channels(tr_x, ch))          # [N, 28, 28, C] uint8
    te_img = torch.from_numpy(to_channels(te_x, ch))
    train_copy = torch.from_numpy(box_downscale(tr_img.numpy(), 2 * size))
    tr_lab, te_lab = torch.from_numpy(tr_y.astype(np.int64)), torch.from_numpy(te_y.astype(np.int64))

    recipe = {}
    if args.recipe:
        with open(args.recipe) as f:
            recipe = json.load(f)
    ropt = apply_recipe(recipe, cfg)
    if ropt["warmup"] is not None:
        args.lr_warmup = int(ropt["warmup"])
    total = int(ropt["cosine_steps"])
    schedule = "cosine" if total > 0 else "constant"

    model = R.make_initialised_model(config, args.seed).float().train()
    groups = R.lars_param_groups(model.parameters())
    groups[0]["lr_scale"], groups[1]["lr_scale"] = ropt["lr"], ropt["lr_biases"]
    opt = R.LARS(groups, momentum=ropt["momentum"], eta=ropt["eta"],
                 weight_decay=ropt["weight_decay"])

    result = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "argv": sys.argv,
        "args": vars(args),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": describe(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "augment_worker_threads": 1,
        "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV},
        "config": config,
        "params": R.param_count(config),
        "train_images": int(tr_img.shape[0]),
        "train_copy_shape": list(train_copy.shape[1:]),
        "test_images": int(te_img.shape[0]),
        "augmentation": cfg.as_dict(),
        "recipe": recipe,
        "optimizer": {"name": "LARS (tests/torch_ref.py)", "lr_weights": ropt["lr"],
                      "lr_biases": ropt["lr_biases"], "weight_decay": ropt["weight_decay"],
                      "eta": ropt["eta"], "momentum": ropt["momentum"], "batch": args.batch,
                      "warmup_steps": args.lr_warmup, "schedule": schedule,
                      "cosine_steps": total},
        "knn": {"similarity": "cosine", "k": 20, "vote": "majority, ties to smallest label",
                "k_weighted": 200, "weight": "exp(sim/0.1) summed per class",
                "train_set": "train images (eval view)", "test_set": "test images (eval view)"},
        "baselines": {},
        "evals": [],
    }

    def save():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.out)

    _log("cpu: %s" % describe())
    _log("torch %s, threads=%d, params=%d, train=%d test=%d, input=%dx%dx%d, batch=%d"
         % (torch.__version__, torch.get_num_threads(), R.param_count(config),
            tr_img.shape[0], te_img.shape[0], ch, size, size, args.batch))

    # Baselines.  Raw pixels: the original 28x28 gray images / 255, flattened, no centring
    # (cosine similarity of raw intensities).  Also the pixels of the evaluation view (what the
    # encoder sees: S x S, model channels, normalised with the mean/std above).
    t0 = time.perf_counter()
    a20, a200 = knn_accuracy(tr_x.reshape(len(tr_x), -1).astype(np.float32) / 255.0, tr_lab,
                             te_x.reshape(len(te_x), -1).astype(np.float32) / 255.0, te_lab)
    result["baselines"]["pixels"] = {"knn20": a20, "knn200w": a200,
                                     "features": "28x28 gray pixels / 255, flattened"}
    print("torch baseline=pixels knn20=%.4f knn200w=%.4f" % (a20, a200), flush=True)
    fv_tr = torch.cat([eval_views(tr_img[i:i + 5000], cfg).flatten(1)
                       for i in range(0, tr_img.shape[0], 5000)])
    fv_te = torch.cat([eval_views(te_img[i:i + 5000], cfg).flatten(1)
                       for i in range(0, te_img.shape[0], 5000)])
    a20, a200 = knn_accuracy(fv_tr, tr_lab, fv_te, te_lab)
    del fv_tr, fv_te
    result["baselines"]["pixels_eval_view"] = {
        "knn20": a20, "knn200w": a200,
        "features": "evaluation view (%dx%dx%d, normalised), flattened" % (ch, size, size)}
    print("torch baseline=pixels_eval_view knn20=%.4f knn200w=%.4f" % (a20, a200), flush=True)
    f_tr = encode_all(model, tr_img, cfg, args.eval_chunk)
    f_te = encode_all(model, te_img, cfg, args.eval_chunk)
    a20, a200 = knn_accuracy(f_tr, tr_lab, f_te, te_lab)
    result["baselines"]["random_encoder"] = {
        "knn20": a20, "knn200w": a200,
        "features": "encoder output of the initialised model (seed %d), eval mode" % args.seed}
    print("torch baseline=random_encoder knn20=%.4f knn200w=%.4f" % (a20, a200), flush=True)
    _log("baselines took %.1f s" % (time.perf_counter() - t0))
    save()

    stream = TwoViewStream(train_copy, cfg, args.batch, args.seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1,
                                         persistent_workers=True, prefetch_factor=1,
                                         worker_init_fn=_worker_init)
    it = iter(loader)

    train_s = 0.0
    wait_s = 0.0
    step = 0
    losses = []
    curve = []  # losses of the last 20 steps, averaged into result["loss_curve"]
    result["loss_curve"] = []
    next_point = 0
    while next_point < len(points):
        t_start = time.perf_counter()
        a, b = next(it)
        t_data = time.perf_counter()
        R.set_lars_lr(opt, step, args.batch, args.lr_warmup, total, schedule)
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model(a, b)
        loss.backward()
        opt.step()
        lv = loss.item()
        t_end = time.perf_counter()
        step += 1
        if step == 1:
            # torch's lazy set-up (oneDNN primitives, first-touch of the allocator's arena) runs
            # inside the first step and takes ~25 s here; barlowd does its set-up before its
            # clock starts, so the first step is timed apart (recorded) and not counted.
            result["first_step_s"] = t_end - t_start
            _log("first step (set-up, not counted) %.1f s" % (t_end - t_start))
        else:
            train_s += t_end - t_start
            wait_s += t_data - t_start
        losses.append(lv)
        curve.append(lv)
        if len(curve) == 20:
            result["loss_curve"].append({"train_s": train_s, "step": step,
                                         "loss": float(np.mean(curve))})
            curve = []
        if not math.isfinite(lv):
            _log("step %d: loss %r" % (step, lv))
        if step % 20 == 0:
            _log("step %d  train %.1f s  loss %.3f" % (step, train_s, lv))
        if train_s < points[next_point] * 60.0:
            continue
        # Evaluation (clock paused).
        t_e = time.perf_counter()
        f_tr = encode_all(model, tr_img, cfg, args.eval_chunk)
        f_te = encode_all(model, te_img, cfg, args.eval_chunk)
        a20, a200 = knn_accuracy(f_tr, tr_lab, f_te, te_lab)
        eval_s = time.perf_counter() - t_e
        ips = step * args.batch / train_s
        rec = {"minutes": points[next_point], "train_s": train_s, "steps": step,
               "images": step * args.batch, "images_per_s": ips, "data_wait_s": wait_s,
               "knn20": a20, "knn200w": a200,
               "loss": float(np.mean(losses)), "loss_last": lv, "eval_s": eval_s,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        result["evals"].append(rec)
        save()
        print("torch minutes=%g steps=%d images_per_s=%.1f knn20=%.4f knn200w=%.4f loss=%.4f"
              % (points[next_point], step, ips, a20, a200, rec["loss"]), flush=True)
        _log("  (train %.1f s, waited for data %.1f s, eval %.1f s)" % (train_s, wait_s, eval_s))
        losses = []
        next_point += 1
        while next_point < len(points) and train_s >= points[next_point] * 60.0:
            # A single step crossed several points: they share this evaluation.
            result["evals"].append(dict(rec, minutes=points[next_point]))
            print("torch minutes=%g steps=%d images_per_s=%.1f knn20=%.4f knn200w=%.4f "
                  "loss=%.4f (same evaluation)" % (points[next_point], step, ips, a20, a200,
                                                   rec["loss"]), flush=True)
            next_point += 1
        save()
    del it, loader
    _log("wrote %s" % args.out)


if __name__ == "__main__":
    main()
