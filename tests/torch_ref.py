"""PyTorch reference model for the C Barlow Twins training engine.

This module is the single source of truth, on the Python side, for what the C
engine computes.  It is used by ``tests/gen_fixtures.py`` (which writes the
binary fixtures the C tests compare against) and by
``bench/train_step_torch.py`` (the PyTorch peer of the throughput benchmark).
The C tests themselves never need PyTorch: they only read the fixture files.

Contents
--------
* ``BarlowTwinsNet``: ResNet-style encoder (3x3 stem + basic residual blocks +
  global average pooling) followed by a projector MLP and a final affine-free
  BatchNorm1d, built from a config dict such as::

      {"in_channels": 1, "input_size": 16, "stem_width": 8,
       "stages": [[1, 8], [1, 16]], "projector": [32, 32], "lambda": 0.0051}

* ``param_layout`` / ``bn_layout``: the canonical parameter order and the
  canonical BatchNorm order, derived from the config alone.  The model asserts
  at construction time that ``model.parameters()`` yields exactly this order.
* ``init_torchvision``: torchvision-style initialisation from a seed.
* ``barlow_twins_loss``: the Barlow Twins loss on the two normalised
  embeddings.
* ``LARS`` + ``lr_factor`` / ``set_lars_lr``: the LARS optimiser and learning
  rate schedule of the Barlow Twins reference implementation.
* ``write_f32`` / ``read_f32``: float32 little-endian raw file helpers.

Conventions (the C side relies on these)
-----------------------------------------
* Tensors are stored flattened in PyTorch's contiguous (row-major) order:
  conv weights [out, in, kh, kw], linear weights [out, in], images NCHW.
* BatchNorm: eps 1e-5, momentum 0.1, training mode.  The forward pass uses the
  biased batch variance; the running variance is updated with the unbiased
  batch variance (n / (n - 1) correction, n = N*H*W for 2-D BN, N for 1-D BN):
  ``running = (1 - 0.1) * running + 0.1 * batch_stat``.
"""

import json
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1

LARS_MOMENTUM = 0.9
LARS_ETA = 0.001
LARS_WEIGHT_DECAY = 1.5e-6
LR_WEIGHTS = 0.2
LR_BIASES = 0.0048


# --------------------------------------------------------------------------
# Configuration and canonical layouts
# --------------------------------------------------------------------------

def load_config(path):
    """Read a model config JSON file into a dict."""
    with open(path, "r") as f:
        return json.load(f)


def block_plan(config):
    """List of (in_channels, out_channels, stride) for every residual block,
    in network order.  The first block of every stage with index >= 1 has
    stride 2; every other block has stride 1."""
    plan = []
    cin = config["stem_width"]
    for stage_idx, (blocks, width) in enumerate(config["stages"]):
        for b in range(blocks):
            stride = 2 if (stage_idx >= 1 and b == 0) else 1
            plan.append((cin, width, stride))
            cin = width
    return plan


def block_has_shortcut(cin, cout, stride):
    return stride != 1 or cin != cout


def representation_dim(config):
    return config["stages"][-1][1]


def param_layout(config):
    """Canonical parameter order as a list of (description, shape)."""
    out = []
    c_in = config["in_channels"]
    sw = config["stem_width"]
    out.append(("stem.conv.weight", (sw, c_in, 3, 3)))
    out.append(("stem.bn.weight", (sw,)))
    out.append(("stem.bn.bias", (sw,)))
    for i, (cin, cout, stride) in enumerate(block_plan(config)):
        p = "block%d." % i
        out.append((p + "conv1.weight", (cout, cin, 3, 3)))
        out.append((p + "bn1.weight", (cout,)))
        out.append((p + "bn1.bias", (cout,)))
        out.append((p + "conv2.weight", (cout, cout, 3, 3)))
        out.append((p + "bn2.weight", (cout,)))
        out.append((p + "bn2.bias", (cout,)))
        if block_has_shortcut(cin, cout, stride):
            out.append((p + "shortcut.conv.weight", (cout, cin, 1, 1)))
            out.append((p + "shortcut.bn.weight", (cout,)))
            out.append((p + "shortcut.bn.bias", (cout,)))
    d_in = representation_dim(config)
    widths = config["projector"]
    for j, d_out in enumerate(widths):
        p = "proj%d." % j
        out.append((p + "linear.weight", (d_out, d_in)))
        if j < len(widths) - 1:
            out.append((p + "bn.weight", (d_out,)))
            out.append((p + "bn.bias", (d_out,)))
        d_in = d_out
    return out


def bn_layout(config):
    """Canonical BatchNorm order (for running statistics) as a list of
    (description, channels)."""
    out = [("stem.bn", config["stem_width"])]
    for i, (cin, cout, stride) in enumerate(block_plan(config)):
        out.append(("block%d.bn1" % i, cout))
        out.append(("block%d.bn2" % i, cout))
        if block_has_shortcut(cin, cout, stride):
            out.append(("block%d.shortcut.bn" % i, cout))
    widths = config["projector"]
    for j, d in enumerate(widths[:-1]):
        out.append(("proj%d.bn" % j, d))
    out.append(("final_bn", widths[-1]))
    return out


def param_count(config):
    return sum(int(np.prod(shape)) for _, shape in param_layout(config))


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def _bn2d(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def _bn1d(c, affine=True):
    return nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, add, ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        # Declaration order == canonical parameter order.
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = _bn2d(cout)
        if block_has_shortcut(cin, cout, stride):
            self.sc_conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.sc_bn = _bn2d(cout)
        else:
            self.sc_conv = None
            self.sc_bn = None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.sc_conv is None else self.sc_bn(self.sc_conv(x))
        return F.relu(y + s)


def canonical_name(torch_name):
    """Map a ``named_parameters()`` name of BarlowTwinsNet to the description
    used in ``param_layout``."""
    parts = torch_name.split(".")
    if parts[0] == "stem_conv":
        return "stem.conv." + parts[1]
    if parts[0] == "stem_bn":
        return "stem.bn." + parts[1]
    if parts[0] == "blocks":
        sub = {"sc_conv": "shortcut.conv", "sc_bn": "shortcut.bn"}.get(parts[2], parts[2])
        return "block%s.%s.%s" % (parts[1], sub, parts[3])
    if parts[0] == "projector":
        k = int(parts[1])
        kind = {0: "linear", 1: "bn"}[k % 3]
        return "proj%d.%s.%s" % (k // 3, kind, parts[2])
    raise ValueError(torch_name)


class BarlowTwinsNet(nn.Module):
    """Encoder + projector + final affine-free BatchNorm1d."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        self.lam = float(config["lambda"])
        self.stem_conv = nn.Conv2d(config["in_channels"], config["stem_width"], 3,
                                   stride=1, padding=1, bias=False)
        self.stem_bn = _bn2d(config["stem_width"])
        self.blocks = nn.Sequential(*[BasicBlock(ci, co, s)
                                      for ci, co, s in block_plan(config)])
        layers = []
        d_in = representation_dim(config)
        widths = config["projector"]
        for j, d_out in enumerate(widths):
            layers.append(nn.Linear(d_in, d_out, bias=False))
            if j < len(widths) - 1:
                layers.append(_bn1d(d_out))
                layers.append(nn.ReLU())
            d_in = d_out
        self.projector = nn.Sequential(*layers)
        self.final_bn = _bn1d(widths[-1], affine=False)

        # The canonical order is a contract with the C side: check names and
        # shapes of model.parameters() against the layout derived from config.
        got = [(canonical_name(n), tuple(p.shape)) for n, p in self.named_parameters()]
        want = param_layout(config)
        assert got == want, "parameter order mismatch:\n%s\n%s" % (got, want)
        assert len(self.batchnorms()) == len(bn_layout(config))
        assert [bn.num_features for bn in self.batchnorms()] == \
            [c for _, c in bn_layout(config)]

    def batchnorms(self):
        """All BatchNorm modules in canonical BN order."""
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def encode(self, x):
        """Representation: globally average-pooled encoder output, [N, D]."""
        y = F.relu(self.stem_bn(self.stem_conv(x)))
        y = self.blocks(y)
        return y.mean(dim=(2, 3))

    def embed(self, x):
        """Returns (representation, normalised embedding z_hat)."""
        rep = self.encode(x)
        return rep, self.final_bn(self.projector(rep))

    def forward(self, view_a, view_b):
        """Two separate forward passes (A first, then B); returns
        (loss, rep_a, rep_b)."""
        rep_a, za = self.embed(view_a)
        rep_b, zb = self.embed(view_b)
        return barlow_twins_loss(za, zb, self.lam), rep_a, rep_b


def build_model(config):
    return BarlowTwinsNet(config)


def init_torchvision(model, seed):
    """torchvision-style init: seed the global RNG, then kaiming_normal_
    (fan_out, relu) for convs, BN weight 1 / bias 0, bn2 of each residual block
    weight 0.  Linear layers keep PyTorch's default init (which was drawn when
    the model was constructed), so call this on a model built right after
    ``torch.manual_seed(seed)`` -- ``make_initialised_model`` does both."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    return model


def make_initialised_model(config, seed):
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        init_torchvision(model, seed)
    return model


def flat_params(model):
    """All parameters concatenated in canonical order (1-D tensor)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat_params(model, flat):
    """Inverse of flat_params."""
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(flat[off:off + n].reshape(p.shape).to(p.dtype))
            off += n
    assert off == flat.numel()


def running_stats_flat(model):
    """For every BN in canonical order: running_mean[C] then running_var[C]."""
    parts = []
    for bn in model.batchnorms():
        parts.append(bn.running_mean.detach().reshape(-1))
        parts.append(bn.running_var.detach().reshape(-1))
    return torch.cat(parts)


# --------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------

def barlow_twins_loss(za, zb, lam):
    """c = za^T zb / N;  loss = sum_i (1 - c_ii)^2 + lam * sum_{i!=j} c_ij^2."""
    n = za.shape[0]
    c = za.t() @ zb / n
    diag = torch.diagonal(c)
    on_diag = (1.0 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lam * off_diag


def cross_correlation_loss(c, lam):
    """The same loss, written directly on a given D x D matrix c."""
    diag = torch.diagonal(c)
    return (1.0 - diag).pow(2).sum() + lam * (c.pow(2).sum() - diag.pow(2).sum())


# --------------------------------------------------------------------------
# LARS optimiser and learning-rate schedule
# --------------------------------------------------------------------------

def lr_factor(step, warmup, total, schedule="cosine"):
    """f(step), step 0-based: linear warmup step/warmup, then either cosine
    decay to 0.001 at step == total, or constant 1."""
    if step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError("unknown schedule %r" % schedule)
    span = total - warmup
    if span <= 0:
        return 1.0
    q = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span))
    return q + 0.001 * (1.0 - q)


class LARS(torch.optim.Optimizer):
    """LARS as in the Barlow Twins reference implementation.

    For every parameter p with gradient g:
      * p.ndim != 1:  dp = g + weight_decay * p, then multiplied by the trust
        ratio q = eta*||p||/||dp|| (q = 1 if ||p|| == 0 or ||dp|| == 0);
      * p.ndim == 1:  dp = g (no weight decay, no trust ratio);
      mu = momentum * mu + dp   (mu starts at zero);  p -= lr * mu.
    Each param group carries its own ``lr``.
    """

    def __init__(self, params, lr=0.0, momentum=LARS_MOMENTUM, eta=LARS_ETA,
                 weight_decay=LARS_WEIGHT_DECAY):
        defaults = dict(lr=lr, momentum=momentum, eta=eta, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr = group["lr"]
            mom = group["momentum"]
            eta = group["eta"]
            wd = group["weight_decay"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if p.ndim != 1:
                    dp = g.add(p, alpha=wd)
                    p_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(dp)
                    one = torch.ones_like(p_norm)
                    trust = torch.where(p_norm > 0,
                                        torch.where(d_norm > 0, eta * p_norm / d_norm, one),
                                        one)
                    dp = dp.mul(trust)
                else:
                    dp = g
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(mom).add_(dp)
                p.add_(mu, alpha=-lr)
        return None


def lars_param_groups(params):
    """Two groups: weights (ndim != 1) and 1-D params (BN weights/biases)."""
    params = list(params)
    weights = [p for p in params if p.ndim != 1]
    biases = [p for p in params if p.ndim == 1]
    return [dict(params=weights, lr_scale=LR_WEIGHTS),
            dict(params=biases, lr_scale=LR_BIASES)]


def make_lars(params):
    return LARS(lars_param_groups(params))


def set_lars_lr(optimizer, step, batch, warmup, total, schedule="cosine"):
    """lr = f(step) * batch/256 * lr_scale for each group; returns the base."""
    base = lr_factor(step, warmup, total, schedule) * batch / 256.0
    for group in optimizer.param_groups:
        group["lr"] = base * group["lr_scale"]
    return base


# --------------------------------------------------------------------------
# Raw float32 little-endian files
# --------------------------------------------------------------------------

def _as_f32_bytes(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)).astype("<f4").tobytes()


def write_f32(path, *arrays):
    """Write the given tensors/arrays/scalars, flattened in row-major order and
    concatenated, as raw float32 little-endian.  Returns the float count."""
    blob = b"".join(_as_f32_bytes(a) for a in arrays)
    with open(path, "wb") as f:
        f.write(blob)
    return len(blob) // 4


def read_f32(path):
    """Read a raw float32 little-endian file into a float32 tensor."""
    return torch.from_numpy(np.fromfile(path, dtype="<f4").astype(np.float32))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
