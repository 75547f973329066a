"""``auggen export MODEL --onnx OUT.onnx`` (or ``--torchscript OUT.pt``): export a face model
and check the file against torch (see :mod:`auggen.recognition.export` for the convention)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from auggen.infra.files import LOAD_ERRORS
from auggen.recognition.export import (
    MAX_ABS,
    MIN_COS,
    OPSET,
    ExportGraph,
    OnnxEmbedder,
    check_images,
    compare,
    convention,
    export_onnx,
    export_torchscript,
    onnx_modules,
)
from auggen.recognition.pretrained import load_pretrained


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "auggen export",
        description="Export a face-recognition model to ONNX or TorchScript, then check it.",
    )
    p.add_argument("model", help="insightface .pth, AdaFace .ckpt, or an auggen FR run folder")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX model")
    p.add_argument("--torchscript", metavar="OUT.pt", help="write a TorchScript model")
    p.add_argument("--arch", help="expected architecture, e.g. ir50 / adaface_ir101 (checked)")
    p.add_argument(
        "--flip", action="store_true", help="fuse the mirrored image into the graph (sum, norm)"
    )
    p.add_argument("--input-bgr", action="store_true", help="the graph takes BGR, not RGB")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--check-images", metavar="PATH", help="real images for the check "
                   "(folder, .rec or .bin; default: the bundled ORL faces)")  # fmt: skip
    return p


def main(argv=None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not (args.onnx or args.torchscript):
        parser.error("nothing to write: give --onnx OUT.onnx and/or --torchscript OUT.pt")
    for out in filter(None, (args.onnx, args.torchscript)):
        if not Path(out).parent.is_dir():
            parser.error(f"{out}: its folder {Path(out).parent} does not exist")
    try:
        if args.onnx:
            onnx_modules()
        model = load_pretrained(args.model, args.arch, "cpu")
        images = check_images(model.input_size, args.check_images)
    except (*LOAD_ERRORS, ImportError) as e:
        parser.error(str(e))
    graph = ExportGraph(model, args.flip, args.input_bgr).eval()
    meta = convention(model, args.flip, args.input_bgr, args.model)
    # The check feeds both sides the exported convention (BGR when asked).
    reference = graph
    failed = False
    for kind, out in (("onnx", args.onnx), ("torchscript", args.torchscript)):
        if not out:
            continue
        try:
            if kind == "onnx":
                export_onnx(graph, out, meta, args.opset)
                exported = OnnxEmbedder(out)
                exported.input_bgr = False  # compare in the file's own convention
            else:
                export_torchscript(graph, out, meta)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    exported = torch.jit.load(out)
        except Exception as e:  # the exporters raise many types; name the file and cause
            parser.exit(1, f"{parser.prog}: error: {out}: export failed: {type(e).__name__}: "
                        f"{e}\n")  # fmt: skip
        rows = compare(reference, exported, images, args.input_bgr)
        print(f"{out}: {kind}, input {meta['input_color']} {meta['input_shape']} in [-1, 1], "
              f"{meta['embedding_size']}-d unit embeddings, flip fused: {args.flip}")  # fmt: skip
        for r in rows:
            print(f"  check {r['inputs']:>6} batch {r['batch']}: max |diff| {r['max_abs']:.2e}, "
                  f"min cosine {r['min_cos']:.7f}  {'ok' if r['ok'] else 'FAILED'}")  # fmt: skip
        failed |= not all(r["ok"] for r in rows)
    if failed:
        print(f"export check FAILED (tolerance {MAX_ABS:g}, cosine >= {MIN_COS})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
