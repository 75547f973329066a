"""``python -m auggen evaluate MODEL --bins lfw.bin cfp_fp.bin ...``: the verification table.

MODEL is anything :func:`auggen.recognition.load_pretrained` reads. Each ``.bin`` is scored with
insightface's protocol (:func:`auggen.eval.evaluate_bin`: image + mirror embeddings, 10-fold
accuracy on its distance grid, mean and std over folds) plus TAR@FAR where the number of
impostor pairs allows it. The table is printed as markdown; ``--json`` / ``--csv`` also write it.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from tqdm.auto import tqdm

from auggen.eval.metrics_io import write_metrics
from auggen.eval.pair_eval import evaluate_bin
from auggen.infra.files import LOAD_ERRORS, atomic_write_bytes
from auggen.recognition.pretrained import load_pretrained

FAR_COLUMNS = ("TAR@FAR=1e-3", "TAR@FAR=1e-2", "TAR@FAR=1e-1")


def evaluate_bins(model, bins, batch_size=128, device="cpu", nfolds=10, progress=True) -> dict:
    """{set name: evaluate_bin result + "path"} for every .bin, in the order given."""

    results = {}
    for path in tqdm(bins, desc="evaluate", unit="set", disable=not progress):
        name = _set_name(Path(path), results)
        res = evaluate_bin(model, path, batch_size, device, model.input_size, nfolds)
        results[name] = {"path": str(path), **res}
    return results


def _set_name(path: Path, taken: dict) -> str:
    name, k = path.stem, 2
    while name in taken:
        name, k = f"{path.stem}#{k}", k + 1
    return name


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def markdown_table(results: dict) -> str:
    head = ["set", "pairs", "accuracy (%)", "std (%)", *FAR_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, str(r["num_pairs"]), _pct(r["accuracy"]), _pct(r["std"])]
        row += [_pct(r.get(c)) for c in FAR_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def csv_text(results: dict, model: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "set", "path", "num_pairs", "accuracy", "std", *FAR_COLUMNS])
    for name, r in results.items():
        row = [model, name, r["path"], r["num_pairs"], r["accuracy"], r["std"]]
        w.writerow(row + [r.get(c, "") for c in FAR_COLUMNS])
    return buf.getvalue()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m auggen evaluate",
        description="insightface-style verification accuracy of a face model on .bin sets.",
    )
    p.add_argument("model", help="insightface .pth, AdaFace .ckpt, or an auggen FR run folder")
    p.add_argument("--bins", nargs="+", required=True, help="verification .bin files")
    p.add_argument("--arch", help="expected architecture, e.g. ir50 / adaface_ir101 (checked)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--nfolds", type=int, default=10)
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--csv", help="also write the table as CSV here")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.nfolds < 2:
        parser.error(f"--nfolds must be >= 2, got {args.nfolds}")
    missing = [b for b in args.bins if not Path(b).is_file()]
    if missing:
        parser.error(f"--bins: {', '.join(missing)}: no such file")

    try:
        model = load_pretrained(args.model, args.arch, args.device)
    except LOAD_ERRORS as e:
        parser.error(str(e))
    try:
        results = evaluate_bins(
            model, args.bins, args.batch_size, args.device, args.nfolds, not args.no_progress
        )
    except LOAD_ERRORS as e:  # an unreadable .bin or image in it, named in the message
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    print(markdown_table(results))
    if args.json:
        meta = {"model": str(args.model), "model_layout": model.layout, "nfolds": args.nfolds}
        write_metrics(args.json, {**meta, "results": results})
    if args.csv:
        atomic_write_bytes(Path(args.csv), csv_text(results, str(args.model)).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
