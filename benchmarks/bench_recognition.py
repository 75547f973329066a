"""Benchmark FR backbones: forward (inference) and training-step throughput, images/s.

- ``forward``: backbone in eval mode under no_grad.
- ``train``: one SGD step of backbone + AdaFace head (forward, cross-entropy, backward, step),
  on already-augmented batches (augmentation is timed separately as ``augment``).
- ``train_fr``: the whole ``train_fr`` loop (augmentation, checkpoints, history included) on an
  ORL-sized random set (400 images, 40 classes), the number a demo plan needs.

    python benchmarks/bench_recognition.py                      # CUDA when present: ir50, bf16
    python benchmarks/bench_recognition.py --quick --device cpu \\
        --out benchmarks/results/recognition_cpu.csv            # CPU: small batches

Writes CSV rows: task, model, input_size, width, batch, dtype, channels_last, device,
ms_p20, ms_p50, ms_p80, img_per_s (from the median).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from auggen.data.types import LabeledImages
from auggen.recognition import AugmentConfig, augment_batch, build_backbone, build_head
from auggen.recognition.train import FRTrainConfig, train_fr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import append_csv, device_name, time_fn  # noqa: E402

FIELDS = [
    "task",
    "model",
    "input_size",
    "width",
    "batch",
    "dtype",
    "channels_last",
    "device",
    "ms_p20",
    "ms_p50",
    "ms_p80",
    "img_per_s",
]
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def time_ms(fn, device, warmup: int, reps: int) -> tuple[float, float, float]:
    t = time_fn(fn, device, warmup, reps)
    return t.p20, t.p50, t.p80


def row(task, model, size, width, batch, dtype, cl, device, ms):
    return dict(
        task=task,
        model=model,
        input_size=size,
        width=width,
        batch=batch,
        dtype=dtype,
        channels_last=cl,
        device=device_name(device),
        ms_p20=f"{ms[0]:.2f}",
        ms_p50=f"{ms[1]:.2f}",
        ms_p80=f"{ms[2]:.2f}",
        img_per_s=f"{batch / ms[1] * 1e3:.1f}",
    )


def bench_model(model, size, width, emb, batch, dtype, cl, device, classes, warmup, reps):
    torch.manual_seed(0)
    net = build_backbone(model, size, emb, width=width).to(device)
    head = build_head("adaface", emb, classes).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    amp = DTYPES[dtype]
    ctx = lambda: torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)  # noqa: E731
    params = [p for p in list(net.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def forward():
        with torch.no_grad(), ctx():
            net(x)

    def train_step():
        with ctx():
            e = net(x)
        loss = F.cross_entropy(head(e.float(), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = []
    for task, fn, train in (("forward", forward, False), ("train", train_step, True)):
        net.train(train)
        ms = time_ms(fn, device, warmup, reps)
        rows.append(row(task, model, size, width, batch, dtype, cl, device, ms))
    return rows


def bench_augment(size, batch, device, warmup, reps):
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    g = torch.Generator().manual_seed(0)
    ms = time_ms(lambda: augment_batch(x, AugmentConfig(), g), device, warmup, reps)
    return row("augment", "-", size, 0, batch, "fp32", False, device, ms)


def bench_train_fr(model, size, width, emb, batch, epochs, device):
    """Whole-loop img/s on 400 random 112x112 images of 40 classes (ORL-sized)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (400, 3, 112, 112), dtype=torch.uint8, generator=g)
    data = LabeledImages(images, torch.arange(40).repeat_interleave(10))
    cfg = FRTrainConfig(
        backbone=model,
        width=width,
        input_size=size,
        embedding_size=emb,
        batch_size=batch,
        epochs=epochs,
        milestones=(),
        checkpoint_every=epochs,
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        train_fr(cfg, data, out, device=device, progress=False)
        wall = time.perf_counter() - t0
        history = json.load(open(os.path.join(out, "history.json")))
    rate = float(np.median([h["img_per_s"] for h in history]))
    ms = 1e3 * batch / rate
    r = row("train_fr", model, size, width, batch, "fp32", False, device, (ms, ms, ms))
    print(
        f"  train_fr {model} w{width} {size}px: {rate:.1f} img/s in-loop, "
        f"{epochs * (400 // batch) * batch / wall:.1f} img/s incl. setup ({wall:.1f} s)"
    )
    return r


class _Rows(list):
    """A list that prints each CSV row as it arrives."""

    def append(self, r):
        print(",".join(str(r[k]) for k in FIELDS), flush=True)
        super().append(r)

    def __iadd__(self, rs):
        for r in rs:
            self.append(r)
        return self


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="few repetitions")
    p.add_argument("--skip-ir50", action="store_true", help="only the small demo configs")
    p.add_argument("--out", default=None, help="CSV path (appends rows)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    warmup, reps = (1, 3) if args.quick else (3, 10)
    rows = _Rows()
    if cuda:
        for dtype in ("fp32", "bf16"):
            for cl in (False, True):
                rows += bench_model(
                    "ir50", 112, 64, 512, 256, dtype, cl, device, 10_572, warmup, reps
                )
        rows.append(bench_augment(112, 256, device, warmup, reps))
    elif not args.skip_ir50:
        rows += bench_model("ir50", 112, 64, 512, 8, "fp32", False, device, 1000, warmup, reps)
        rows.append(bench_augment(112, 32, device, warmup, reps))
    # Small CPU configs for the ORL demo (40 classes); input sizes are multiples of 16.
    for size, width, emb in ((48, 16, 512), (64, 16, 512), (32, 16, 128)):
        rows += bench_model("ir18", size, width, emb, 32, "fp32", False, device, 40, warmup, reps)
        rows.append(bench_train_fr("ir18", size, width, emb, 32, 2, device))
    if args.out:
        append_csv(args.out, FIELDS, rows)


if __name__ == "__main__":
    main()
