#!/usr/bin/python3
"""PyTorch peer for the Barlow Twins training-step throughput benchmark.

    /usr/bin/python3 bench/train_step_torch.py --config small.json --batch 256 \
        --threads 2 --steps K --warmup-steps W

Builds the model described by the config JSON (same model as the C engine, see
tests/torch_ref.py) in float32, draws two random views (torch.randn, no
augmentation), and runs W untimed then K timed full training steps:
forward of view A, forward of view B, Barlow Twins loss, backward, LARS step
(with the Barlow Twins learning-rate schedule, "constant" by default).

The last line printed on stdout is exactly:

    torch images_per_s=<float> step_ms=<float> step_ms_min=<float> step_ms_max=<float>
          batch=<N> threads=<T> peak_rss_mb=<float>

(images/s from the median step; min and max show the machine's noise)

where one image is one sample of the batch (i.e. its two views).  Progress and
setup information go to stderr.  Plain eager PyTorch, nothing compiled.
"""

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch_ref as R  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="model config JSON")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps")
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--lr-warmup", type=int, default=0,
                    help="LR warmup steps of the schedule (not the untimed steps)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def main():
    args = parse_args()
    if args.steps < 1 or args.batch < 2 or args.threads < 1:
        sys.exit("need --steps >= 1, --batch >= 2, --threads >= 1")
    torch.set_num_threads(args.threads)

    config = R.load_config(args.config)
    model = R.make_initialised_model(config, args.seed).float().train()
    opt = R.make_lars(model.parameters())

    g = torch.Generator().manual_seed(args.seed + 1)
    shape = (args.batch, config["in_channels"], config["input_size"], config["input_size"])
    view_a = torch.randn(shape, generator=g)
    view_b = torch.randn(shape, generator=g)

    total = args.warmup_steps + args.steps
    print("torch %s, threads=%d, params=%d, batch=%d, input=%s, warmup=%d, steps=%d"
          % (torch.__version__, torch.get_num_threads(), R.param_count(config),
             args.batch, list(shape[1:]), args.warmup_steps, args.steps), file=sys.stderr)

    def train_step(step):
        R.set_lars_lr(opt, step, args.batch, args.lr_warmup, total, args.schedule)
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model(view_a, view_b)
        loss.backward()
        opt.step()
        return loss

    for step in range(args.warmup_steps):
        loss = train_step(step)
        print("warmup step %d loss %.4f" % (step, loss.item()), file=sys.stderr)

    times = []
    for k in range(args.steps):
        t0 = time.perf_counter()
        loss = train_step(args.warmup_steps + k)
        loss.item()  # eager CPU execution: the step is finished here
        times.append(1000.0 * (time.perf_counter() - t0))
    loss_value = loss.item()

    # The median step is the figure; min and max show the machine's noise.
    times.sort()
    n = len(times)
    step_ms = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    images_per_s = args.batch / (step_ms / 1000.0)
    print("final loss %.4f" % loss_value, file=sys.stderr)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("torch images_per_s=%.1f step_ms=%.1f step_ms_min=%.1f step_ms_max=%.1f batch=%d "
          "threads=%d peak_rss_mb=%.0f"
          % (images_per_s, step_ms, times[0], times[-1], args.batch, args.threads, peak_mb))


if __name__ == "__main__":
    main()
