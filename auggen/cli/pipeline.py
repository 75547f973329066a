"""Command line of ``python -m auggen.pipeline``: presets, JSON configs, ``--set`` overrides."""

from __future__ import annotations

import argparse
import difflib
import json
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from auggen.data.dataset import dataset_kind
from auggen.infra.runtime import check_device, launch_env
from auggen.pipeline.calibrate import calibrate
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.overrides import apply_set, merge_dict, to_dict
from auggen.pipeline.plan import DEFAULT_UTILISATION, GPU_PEAK, DataSize, data_size, format_plan
from auggen.pipeline.presets import DEFAULT_PRESET, PRESETS
from auggen.pipeline.stages import STAGES

EPILOG = """\
stages (run in this order): {stages}
presets: {presets}

examples:
  python -m auggen.pipeline                       # ORL demo, ~5 min on 2 CPU cores
  python -m auggen.pipeline --preset micro --out /tmp/micro
  python -m auggen.pipeline --set grid.pairs=8 --set fr.epochs=30 --seeds 0,1,2
  python -m auggen.pipeline --preset casia-ir50 --data /data/casia/train \\
      --set data.verification_bins=[/data/lfw.bin,/data/cfp_fp.bin] --device cuda
  python -m auggen.pipeline --stages grid,generate --force grid
A rerun skips finished stages (DONE + same config) and resumes an interrupted one.
"""


def build_parser(stages, presets) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m auggen.pipeline",
        description="AugGen end to end: generator, FR baseline, grid search, D_aug, "
        "FR on real+generated, evaluation, report.",
        epilog=EPILOG.format(stages=" -> ".join(stages), presets=", ".join(presets)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help="named config (default: orl-tiny)")
    p.add_argument("--config", metavar="FILE", help="JSON file of (partial, nested) settings")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting, dotted key, e.g. --set gen.steps=2000 "
        "(values parse as JSON when they can: 0.5, [0.1,0.5], null, true)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="dataset: an image folder (one sub-folder per identity) or a RecordIO "
        ".rec/.idx prefix",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<preset>)")
    p.add_argument("--stages", help="comma-separated subset of stages to run")
    p.add_argument("--seeds", help="comma-separated FR training seeds, e.g. 0,1,2")
    p.add_argument("--device", help="cpu | cuda | cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--force",
        metavar="STAGE",
        action="append",
        default=[],
        help="rerun this stage (and so every stage after it) even if finished",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--show-config", action="store_true", help="print the resolved config as JSON and exit"
    )
    p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    plan = p.add_argument_group("plan (print what the run costs; runs nothing)")
    plan.add_argument(
        "--plan",
        action="store_true",
        help="print each stage's images, optimizer steps, denoiser evaluations, FLOPs, disk, "
        "host RAM and GPU-hours, then exit",
    )
    plan.add_argument("--plan-gpus", default="1,8", help="GPU counts to price (default: 1,8)")
    plan.add_argument("--plan-gpu", default="h100", help="GPU kind: h100, h200, a100, l40s, v100")
    plan.add_argument(
        "--plan-device",
        default=None,
        help="where to measure minutes per stage (a few-second calibration): cpu, cuda, "
        "cuda:N (default: cuda if this machine has one, else cpu), or a GPU kind "
        "(h100, a100, ...) to price that GPU only, without measuring",
    )
    plan.add_argument(
        "--plan-utilisation", type=float, default=None, help="fraction of peak (default: 0.35)"
    )
    plan.add_argument(
        "--plan-data",
        metavar="IMAGES,CLASSES",
        help="plan for a training set of this size instead of counting --data "
        "(e.g. 490623,10572 for CASIA-WebFace)",
    )
    return p


def print_plan(args, cfg, out: Path) -> int:
    if args.plan_data:
        try:
            images, classes = (int(v) for v in args.plan_data.split(","))
        except ValueError:
            raise ValueError(
                f"--plan-data must be IMAGES,CLASSES, got {args.plan_data!r}"
            ) from None
        size = DataSize(images, classes, "--plan-data")
    else:
        size = data_size(cfg, out)
    try:
        gpus = tuple(int(v) for v in args.plan_gpus.split(","))
    except ValueError:
        raise ValueError(f"--plan-gpus must be counts like 1,8, got {args.plan_gpus!r}") from None
    util = args.plan_utilisation if args.plan_utilisation is not None else DEFAULT_UTILISATION
    kind, cal = args.plan_gpu, None
    device = args.plan_device or ("cuda" if torch_has_cuda() else "cpu")
    if device in GPU_PEAK:
        kind = device
    elif device == "cpu" or device.startswith("cuda"):
        check_device(device)
        print(f"[plan] calibrating on {device} ...", flush=True)
        cal = calibrate(cfg, size.classes, device, cfg.threads)
    else:
        raise ValueError(
            f"--plan-device must be cpu, cuda, cuda:N or a GPU kind ({', '.join(GPU_PEAK)}), "
            f"got {device!r}"
        )
    print(format_plan(cfg, size, gpus, kind, util, cal=cal))
    return 0


def torch_has_cuda() -> bool:
    return torch.cuda.is_available()


def _data_override(cfg, path: str):
    """``--data``: RecordIO or an image folder by ``auggen.data.dataset_kind``'s rule."""
    kind = dataset_kind(path)
    if kind == "verification_bin":
        raise ValueError(
            f"--data {path}: a verification .bin is a benchmark, not a training set "
            f"(--set data.verification_bins=[{path}] adds it)"
        )
    return replace(cfg, data=replace(cfg.data, source=kind, path=str(path)))


def resolve_config(args, presets: dict, default_preset: str):
    """The config that the arguments describe (preset < --config < flags < --set)."""
    name = args.preset or default_preset
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown preset {name!r}{hint}; valid: {', '.join(presets)}")
    cfg = presets[name]
    from_file = json.loads(Path(args.config).read_text()) if args.config else {}
    if args.config:
        cfg = merge_dict(cfg, from_file)
    if args.data:
        cfg = _data_override(cfg, args.data)
    if args.seeds:
        cfg = apply_set(cfg, f"seeds=[{args.seeds}]")
    if args.device:
        cfg = replace(cfg, device=args.device)
    if args.threads is not None:
        cfg = replace(cfg, threads=args.threads)
    if args.no_progress:
        cfg = replace(cfg, progress=False)
    for assignment in args.set:
        cfg = apply_set(cfg, assignment)
    return name, _strict_unseen(cfg, args, from_file)


def _strict_unseen(cfg, args, from_file: dict):
    """An unseen_identities the user asked for (``--set`` or the ``--config`` file's
    ``from_file``) is kept or refused, never replaced by the small-data split (that serves
    the preset's value)."""
    keys = {a.split("=", 1)[0].strip() for a in args.set}
    keys |= {f"data.{k}" for k in from_file.get("data", {})}
    if "data.unseen_identities" not in keys or "data.unseen_auto" in keys:
        return cfg
    return replace(cfg, data=replace(cfg.data, unseen_auto=False))


def _silent(msg: str) -> None:
    pass


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C. A subclass, not KeyboardInterrupt itself: CPython 3.11
    run with ``-m`` ends by SIGINT (status -2, not ours) a process in which a plain
    KeyboardInterrupt ever left an ``exec`` of a string (dataclasses and torch build code so),
    even one that was caught; it checks for that exact type."""


_SIGNALLED: list[int] = []  # the signals received: what failed after one was interrupted


def _raise_interrupt(signum, frame):
    _SIGNALLED.append(signum)
    raise Terminated(f"signal {signum}")


def _message(e: BaseException) -> str:
    # KeyError's str() adds quotes around the message.
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


def main(argv=None) -> int:
    parser = build_parser(list(STAGES), list(PRESETS))
    args = parser.parse_args(argv)
    try:
        name, cfg = resolve_config(args, PRESETS, DEFAULT_PRESET)
        if args.plan and args.plan_data and not cfg.data.path:  # no data needed to plan
            cfg = replace(cfg, data=replace(cfg.data, path="(sized by --plan-data)"))
        # a config may be shown or planned for another machine
        cfg.validate(device=not (args.show_config or args.plan))
    except (KeyError, TypeError, ValueError, FileNotFoundError, json.JSONDecodeError) as e:
        parser.error(_message(e))
    if args.show_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    out = Path(args.out or Path("runs") / name)
    if args.plan:
        try:
            return print_plan(args, cfg, out)
        except (ValueError, FileNotFoundError, OSError) as e:
            parser.error(str(e))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    force = [s.strip() for f in args.force for s in f.split(",") if s.strip()]
    # A polite kill (SIGTERM) unwinds like Ctrl-C, so the stage records it was interrupted
    # (torchrun sends it to the other ranks when one fails).
    _SIGNALLED.clear()  # this run's signals only (main may run again in one process)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    rank, world, _ = launch_env()
    who = f"[rank {rank}/{world}] " if world > 1 else ""
    log = print if rank == 0 else _silent
    t0 = time.perf_counter()
    try:
        status = run_pipeline(cfg, out, STAGES, stages=stages, force=force, log=log)
    except KeyboardInterrupt:
        print(f"\n{who}interrupted; rerun the same command to resume ({out})", file=sys.stderr)
        return 130
    except Exception as e:
        if _SIGNALLED:  # the interrupt landed inside torch, which raised something else
            print(f"\n{who}interrupted ({type(e).__name__} on the way out); rerun the same "
                  f"command to resume ({out})", file=sys.stderr)  # fmt: skip
            return 130
        if args.debug:
            traceback.print_exc()
        print(
            f"{who}error: {type(e).__name__}: {_message(e)}\n(finished stages in {out} are "
            "kept; fix the cause and rerun to continue; --debug shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if rank != 0:
        return 0
    wall = time.perf_counter() - t0
    ran = [s for s, v in status.items() if v == "ran"]
    print(f"done in {wall:.1f} s (ran: {', '.join(ran) or 'nothing, all finished'})")
    report = out / "report" / "report.md"
    if report.exists():
        print(f"report: {report.resolve()}")
    return 0
