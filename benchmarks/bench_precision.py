"""bf16 against fp32 for the demo's generator: does the method stay the same?

Trains the ``orl-tiny`` generator (tiny UNet, 32 px, batch 32, its lr schedule) on the demo's
training identities for ``--steps`` steps twice from one seed, in fp32 and in bf16 (autocast:
bf16 convolutions and matmuls, fp32 master weights, normalisations and loss), and compares
the per-step losses. Then samples one generator (the fp32 one, or ``--model``) with the demo's
sampler (Heun, 12 steps) in both precisions, from the same seeds and mixed conditions, and
compares the uint8 images. Rows go to a CSV naming the device and the machine's load.

    python benchmarks/bench_precision.py --steps 150 --threads 1 \\
        --csv benchmarks/results/precision_cpu.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import append_csv, device_name  # noqa: E402

from auggen.data.orl import load_orl  # noqa: E402
from auggen.data.types import LabeledImages  # noqa: E402
from auggen.generator.sample import sample, to_uint8  # noqa: E402
from auggen.generator.train import load_generator, train_generator  # noqa: E402
from auggen.pipeline.presets import PRESETS  # noqa: E402

FIELDS = ["item", "value", "unit", "steps", "threads", "device", "load_avg", "note"]


def _train_ids(cfg) -> LabeledImages:
    """The demo's training identities (all but the last ``unseen_identities``), all images."""
    orl = load_orl(cfg.data.image_size)
    keep = orl.labels < int(orl.labels.max()) + 1 - cfg.data.unseen_identities
    return LabeledImages(orl.images[keep], orl.labels[keep])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=64, help="sampled images to compare")
    ap.add_argument("--model", default=None, help="a generator folder to sample from")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PRESETS["orl-tiny"]
    data = _train_ids(cfg)
    gen = replace(cfg.gen, steps=args.steps, log_every=1, checkpoint_every=10**9)
    dev, rows = torch.device("cpu"), []

    def row(item, value, unit, note=""):
        rows.append({
            "item": item, "value": round(float(value), 6), "unit": unit, "steps": args.steps,
            "threads": args.threads, "device": device_name(dev),
            "load_avg": round(os.getloadavg()[0], 2), "note": note,
        })  # fmt: skip
        print(f"{item:<34} {value:>12.6g} {unit:<10} {note}", flush=True)

    # Train twice from one seed.
    with tempfile.TemporaryDirectory() as tmp:
        losses = {}
        for precision in ("fp32", "bf16"):
            out = Path(tmp) / precision
            t0 = time.perf_counter()
            train_generator(replace(gen, precision=precision), data, out, progress=False)
            row(f"train_s_per_step_{precision}", (time.perf_counter() - t0) / args.steps, "s")
            history = json.loads((out / "history.json").read_text())
            losses[precision] = torch.tensor([h["loss"] for h in history], dtype=torch.float64)
        a, b = losses["fp32"], losses["bf16"]
        # The uncertainty-weighted loss crosses zero (its log-variance term), so differences
        # are taken against the loss's scale over the run, not step by step.
        scale = a.abs().mean()
        rel = (b - a).abs() / a.abs()
        row("loss_rel_diff_mean", rel.mean(), "ratio", "per step, |bf16 - fp32| / |fp32|")
        row("loss_rel_diff_max", rel.max(), "ratio", "per step")
        row("loss_abs_diff_mean_rel", (b - a).abs().mean() / scale, "ratio",
            "mean over steps of |bf16 - fp32|, over mean |fp32|")  # fmt: skip
        row("loss_abs_diff_max_rel", (b - a).abs().max() / scale, "ratio", "worst step, same")
        np.savetxt(  # the per-step losses, beside the CSV
            Path(args.csv or "precision").with_suffix(".losses.csv"),
            torch.stack([a, b], 1).numpy(), delimiter=",", header="fp32,bf16", comments="",
        )  # fmt: skip
        tail = min(50, len(a))
        row("loss_last50_fp32", a[-tail:].mean(), "loss")
        row("loss_last50_bf16", b[-tail:].mean(), "loss")
        net = load_generator(Path(args.model) if args.model else Path(tmp) / "fp32", device=dev)

    # Sample one generator in both precisions: same seeds, mixed conditions.
    g = torch.Generator().manual_seed(0)
    k = net.label_dim
    i, j = torch.randint(k, (2, args.images), generator=g)
    cond = 0.8 * torch.eye(k)[i] + 0.5 * torch.eye(k)[j]
    s = cfg.sample
    kw = dict(num_steps=s.num_steps, sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho)
    imgs = {
        p: to_uint8(sample(net, cond, range(args.images), autocast=p == "bf16", **kw)).float()
        for p in ("fp32", "bf16")
    }
    diff = (imgs["bf16"] - imgs["fp32"]).abs()
    note = "uint8 levels, Heun 12 steps, mixed conditions"
    row("sample_abs_diff_mean", diff.mean(), "levels", note)
    row("sample_within_4_levels", (diff <= 4).float().mean(), "fraction", note)
    row("sample_abs_diff_max", diff.max(), "levels", note)
    if args.csv:
        append_csv(args.csv, FIELDS, rows)


if __name__ == "__main__":
    main()
