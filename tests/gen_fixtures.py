#!/usr/bin/python3
"""Generate the PyTorch reference fixtures for the C tests.

Run from the repository root:

    /usr/bin/python3 tests/gen_fixtures.py

It (re)writes tests/fixtures/<name>/ for the model configs "tiny", "deep3ch",
"odd", and tests/fixtures/lars/ for the LARS optimiser.  All references are
computed in float64 from the float32 inputs (which are stored as they are) and
stored as float32 little-endian.  Everything is seeded, so re-running produces
the same bytes on the same PyTorch build.  The C tests never need PyTorch.

Before writing anything, a few self-checks run (they raise on failure):
  * the loss on a random c equals a plain double loop over its entries;
  * for "tiny", float64 autograd gradients match central finite differences on
    a handful of parameter entries;
  * the LARS reference (torch optimiser) matches an independent numpy loop.
"""

import copy
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_ref as R  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")

MODEL_FIXTURES = [
    # name, config, batch N, seed
    ("tiny", {"in_channels": 1, "input_size": 16, "stem_width": 8,
              "stages": [[1, 8], [1, 16]], "projector": [32, 32],
              "lambda": 0.0051}, 8, 101),
    ("deep3ch", {"in_channels": 3, "input_size": 16, "stem_width": 8,
                 "stages": [[2, 8], [2, 16]], "projector": [32, 32, 32],
                 "lambda": 0.01}, 6, 202),
    ("odd", {"in_channels": 3, "input_size": 12, "stem_width": 12,
             "stages": [[1, 12], [2, 20], [1, 24]], "projector": [24, 40, 20],
             "lambda": 0.02}, 10, 303),
    # Widths in whole 16-channel blocks, as in the presets: activations stay blocked end to end,
    # and at this size oneDNN runs some 3x3 convolutions as Winograd.
    ("wide64", {"in_channels": 3, "input_size": 16, "stem_width": 64,
                "stages": [[1, 64], [1, 64]], "projector": [64, 48],
                "lambda": 0.0051}, 8, 404),
]

LARS_SEED = 404          # tiny model params for the LARS fixture (differs from 101)
LARS_STEPS = 10
LARS_ZERO_GRAD_STEP = 3
LARS_ZERO_GRAD_PARAM = "block0.conv2.weight"   # a 2-D (4-D) tensor
LARS_CFG = {"batch": 64, "warmup": 4, "total": 10, "schedule": "cosine",
            "momentum": R.LARS_MOMENTUM, "eta": R.LARS_ETA,
            "weight_decay": R.LARS_WEIGHT_DECAY,
            "lr_weights": R.LR_WEIGHTS, "lr_biases": R.LR_BIASES}


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------

def perturbed_model(config, seed):
    """float32 model: torchvision-style init from `seed`, then every BN weight
    := uniform(0.5, 1.5) and every BN bias := normal(0, 0.1).

    The perturbation is there so that every gradient is informative: with the
    plain init, the zero-initialised bn2 weights would make the gradients of
    most residual-branch parameters exactly zero, and BN biases of 0 / weights
    of 1 would hide mix-ups between weight and bias."""
    model = R.make_initialised_model(config, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for bn in model.batchnorms():
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5, generator=g)
                bn.bias.normal_(0.0, 0.1, generator=g)
    return model


def make_views(config, n, seed):
    g = torch.Generator().manual_seed(seed + 2000)
    shape = (n, config["in_channels"], config["input_size"], config["input_size"])
    va = torch.randn(shape, generator=g, dtype=torch.float32)
    vb = torch.randn(shape, generator=g, dtype=torch.float32)
    return va, vb


def reference_step(model32, va, vb):
    """float64 forward (A then B) + backward from fresh running stats.
    Returns (model64, loss, rep_a, grads)."""
    model64 = copy.deepcopy(model32).double().train()
    for bn in model64.batchnorms():
        bn.reset_running_stats()
    loss, rep_a, _ = model64(va.double(), vb.double())
    model64.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model64.parameters()]
    return model64, loss.detach(), rep_a.detach(), grads


def loss_at(model64, va64, vb64):
    with torch.no_grad():
        loss, _, _ = model64(va64, vb64)
    return float(loss)


# --------------------------------------------------------------------------
# Self-checks
# --------------------------------------------------------------------------

def check_loss_against_loop():
    g = torch.Generator().manual_seed(7)
    d = 5
    c = torch.randn(d, d, generator=g, dtype=torch.float64)
    lam = 0.0123
    expected = 0.0
    for i in range(d):
        for j in range(d):
            v = float(c[i, j])
            if i == j:
                expected += (1.0 - v) * (1.0 - v)
            else:
                expected += lam * v * v
    got = float(R.cross_correlation_loss(c, lam))
    assert abs(got - expected) <= 1e-12 * max(1.0, abs(expected)), (got, expected)

    # and through the embedding form: za^T zb / N
    n = 7
    za = torch.randn(n, d, generator=g, dtype=torch.float64)
    zb = torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = 0.0
    for i in range(d):
        for j in range(d):
            cij = sum(float(za[k, i]) * float(zb[k, j]) for k in range(n)) / n
            expected += (1.0 - cij) ** 2 if i == j else lam * cij * cij
    got = float(R.barlow_twins_loss(za, zb, lam))
    assert abs(got - expected) <= 1e-12 * max(1.0, abs(expected)), (got, expected)
    print("self-check: loss == explicit loop (%.12g)" % got)


def check_finite_differences(config, model32, va, vb, grads):
    """Central differences in float64 on a few entries of several tensors."""
    model64 = copy.deepcopy(model32).double().train()
    va64, vb64 = va.double(), vb.double()
    names = [n for n, _ in R.param_layout(config)]
    picks = ["stem.conv.weight", "stem.bn.weight", "block0.conv1.weight",
             "block0.bn2.weight", "block1.conv2.weight", "block1.shortcut.conv.weight",
             "block1.shortcut.bn.bias", "proj0.linear.weight", "proj0.bn.bias",
             "proj1.linear.weight"]
    params = list(model64.parameters())
    g = torch.Generator().manual_seed(11)
    h = 1e-6
    worst = 0.0
    for name in picks:
        k = names.index(name)
        p = params[k]
        idx = int(torch.randint(p.numel(), (1,), generator=g))
        flat = p.data.view(-1)
        orig = float(flat[idx])
        flat[idx] = orig + h
        lp = loss_at(model64, va64, vb64)
        flat[idx] = orig - h
        lm = loss_at(model64, va64, vb64)
        flat[idx] = orig
        fd = (lp - lm) / (2 * h)
        ag = float(grads[k].reshape(-1)[idx])
        err = abs(fd - ag)
        worst = max(worst, err / max(1e-3, abs(ag)))
        assert err <= 1e-6 + 1e-5 * abs(ag), (name, idx, fd, ag)
    print("self-check: autograd vs finite differences on %d entries, worst rel err %.2e"
          % (len(picks), worst))


def lars_numpy(params0, grads, cfg, shapes):
    """Independent float64 numpy implementation of LARS + schedule."""
    params = [np.array(p, dtype=np.float64) for p in params0]
    mus = [np.zeros_like(p) for p in params]
    history = []
    for s in range(len(grads)):
        f = R.lr_factor(s, cfg["warmup"], cfg["total"], cfg["schedule"])
        base = f * cfg["batch"] / 256.0
        for i, shape in enumerate(shapes):
            g = np.array(grads[s][i], dtype=np.float64)
            p = params[i]
            if len(shape) != 1:
                d = g + cfg["weight_decay"] * p
                pn = np.sqrt(np.sum(p * p))
                dn = np.sqrt(np.sum(d * d))
                q = cfg["eta"] * pn / dn if (pn > 0 and dn > 0) else 1.0
                d = d * q
                lr = base * cfg["lr_weights"]
            else:
                d = g
                lr = base * cfg["lr_biases"]
            mus[i] = cfg["momentum"] * mus[i] + d
            params[i] = p - lr * mus[i]
        history.append([p.copy() for p in params])
    return history


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------

def dir_size(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def write_model_fixture(name, config, n, seed, run_fd_check):
    out_dir = os.path.join(FIXTURES, name)
    os.makedirs(out_dir, exist_ok=True)
    model32 = perturbed_model(config, seed)
    va, vb = make_views(config, n, seed)
    model64, loss, rep_a, grads = reference_step(model32, va, vb)

    for (pname, _), gr in zip(R.param_layout(config), grads):
        assert gr.abs().max() > 0, "uninformative (all-zero) gradient for " + pname

    if run_fd_check:
        check_finite_differences(config, model32, va, vb, grads)

    # float32 PyTorch for comparison only (gives a feel for C-side tolerances)
    m32 = copy.deepcopy(model32).train()
    loss32, _, _ = m32(va, vb)
    loss32.backward()
    g32 = torch.cat([p.grad.reshape(-1) for p in m32.parameters()]).double()
    g64 = torch.cat([gr.reshape(-1) for gr in grads])
    gerr = float((g32 - g64).abs().max() / g64.abs().max())

    shapes = [list(s) for _, s in R.param_layout(config)]
    R.write_json(os.path.join(out_dir, "config.json"), config)
    R.write_json(os.path.join(out_dir, "shapes.json"), shapes)
    n_params = R.write_f32(os.path.join(out_dir, "params.bin"), R.flat_params(model32))
    R.write_f32(os.path.join(out_dir, "views.bin"), va, vb)
    R.write_f32(os.path.join(out_dir, "out.bin"), loss, *grads)
    R.write_f32(os.path.join(out_dir, "rep.bin"), rep_a)
    n_run = R.write_f32(os.path.join(out_dir, "running.bin"), R.running_stats_flat(model64))
    assert n_params == R.param_count(config)
    assert n_run == 2 * sum(c for _, c in R.bn_layout(config))

    print("%-8s N=%-3d params=%-6d BNs=%-3d loss=%.6f (float32 torch: %.6f, "
          "max grad err rel. to max |g| %.1e)  dir=%d bytes"
          % (name, n, n_params, len(R.bn_layout(config)), float(loss), float(loss32),
             gerr, dir_size(out_dir)))
    for f in sorted(os.listdir(out_dir)):
        print("    %-13s %7d bytes" % (f, os.path.getsize(os.path.join(out_dir, f))))


def write_lars_fixture():
    out_dir = os.path.join(FIXTURES, "lars")
    os.makedirs(out_dir, exist_ok=True)
    config = MODEL_FIXTURES[0][1]
    layout = R.param_layout(config)
    names = [n for n, _ in layout]
    shapes = [s for _, s in layout]
    model32 = perturbed_model(config, LARS_SEED)
    params0 = [p.detach().clone() for p in model32.parameters()]

    g = torch.Generator().manual_seed(LARS_SEED + 3000)
    grads = []
    for s in range(LARS_STEPS):
        step_grads = [0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
                      for shape in shapes]
        if s == LARS_ZERO_GRAD_STEP:
            k = names.index(LARS_ZERO_GRAD_PARAM)
            assert len(shapes[k]) != 1
            step_grads[k].zero_()
        grads.append(step_grads)

    # float64 reference with the torch optimiser
    params64 = [torch.nn.Parameter(p.double()) for p in params0]
    opt = R.make_lars(params64)
    history = []
    for s in range(LARS_STEPS):
        for p, gr in zip(params64, grads[s]):
            p.grad = gr.double()
        R.set_lars_lr(opt, s, LARS_CFG["batch"], LARS_CFG["warmup"], LARS_CFG["total"],
                      LARS_CFG["schedule"])
        opt.step()
        history.append([p.detach().clone() for p in params64])

    # cross-check against the independent numpy loop
    ref = lars_numpy([p.double().numpy() for p in params0],
                     [[gr.double().numpy() for gr in sg] for sg in grads], LARS_CFG, shapes)
    worst = 0.0
    for s in range(LARS_STEPS):
        for a, b in zip(history[s], ref[s]):
            worst = max(worst, float(np.max(np.abs(a.numpy() - b))))
    assert worst <= 1e-13, worst
    print("self-check: LARS torch optimiser == numpy loop (max diff %.1e)" % worst)

    R.write_json(os.path.join(out_dir, "lars.json"), LARS_CFG)
    R.write_json(os.path.join(out_dir, "shapes.json"), [list(s) for s in shapes])
    n_params = R.write_f32(os.path.join(out_dir, "params0.bin"), *params0)
    R.write_f32(os.path.join(out_dir, "grads.bin"), *[gr for sg in grads for gr in sg])
    R.write_f32(os.path.join(out_dir, "params_after.bin"), *[p for ps in history for p in ps])
    moved = float(torch.cat([(a - b.double()).reshape(-1)
                             for a, b in zip(history[-1], params0)]).abs().max())
    print("lars     params=%d steps=%d zero grad: step %d, %s; max |param change| %.3e  "
          "dir=%d bytes" % (n_params, LARS_STEPS, LARS_ZERO_GRAD_STEP, LARS_ZERO_GRAD_PARAM,
                            moved, dir_size(out_dir)))
    for f in sorted(os.listdir(out_dir)):
        print("    %-16s %7d bytes" % (f, os.path.getsize(os.path.join(out_dir, f))))


def main():
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    check_loss_against_loop()
    for i, (name, config, n, seed) in enumerate(MODEL_FIXTURES):
        write_model_fixture(name, config, n, seed, run_fd_check=(name == "tiny"))
    write_lars_fixture()
    print("fixtures written to", FIXTURES)


if __name__ == "__main__":
    main()
