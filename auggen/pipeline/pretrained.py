"""Models brought from elsewhere: ``pretrained.gen`` (G) and ``pretrained.fr`` (M_orig).

The paper trains both from scratch, and so does the default. With a path set:

- ``pretrained.gen`` (this project's generator folder, or an NVlabs edm2 ``.pkl``, read
  without running it): ``gen_mode="use"`` makes it G (``train_gen`` only checks and copies
  it); ``"init"`` makes ``train_gen`` start from its weights.
- ``pretrained.fr`` (anything ``auggen.recognition.load_pretrained`` reads: insightface
  ``.pth``, AdaFace ``.ckpt``, this project's FR runs): ``fr_mode="use"`` makes it M_orig (the
  model that scores the grid and audits leakage; the D_orig baselines still train per seed,
  they are the comparison); ``"init"`` starts every FR training from its backbone weights.

The path, the mode and a fingerprint of the files (size, mtime, first bytes) enter the
fingerprint of the stages that read them, so replacing the checkpoint reruns what depends on
it; with nothing set, nothing enters and fingerprints are as before.
"""

from __future__ import annotations

from pathlib import Path

from auggen.generator.edm2_pickle import load_edm2_pickle
from auggen.generator.train import load_generator
from auggen.pipeline.inputs import file_fingerprint, folder_fingerprint
from auggen.recognition.pretrained import load_pretrained

MODES = ("use", "init")


def _inputs(path: str, mode: str) -> dict | None:
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "mode": mode, "missing": True}  # the stage names it
    files = folder_fingerprint(p) if p.is_dir() else file_fingerprint(p)
    return {"path": str(p.resolve()), "mode": mode, "files": files}


def gen_inputs(cfg) -> dict | None:
    return _inputs(cfg.pretrained.gen, cfg.pretrained.gen_mode)


def fr_inputs(cfg) -> dict | None:
    return _inputs(cfg.pretrained.fr, cfg.pretrained.fr_mode)


def fr_init_inputs(cfg) -> dict | None:
    """``train_mix`` reads the FR checkpoint only to start from it."""
    return fr_inputs(cfg) if cfg.pretrained.fr_mode == "init" else None


def load_any_generator(path, device="cpu"):
    """A generator from this project's model folder or an NVlabs edm2 network pickle."""
    p = Path(path)
    if p.suffix == ".pkl":
        return load_edm2_pickle(p, device=device)
    if p.is_dir():
        return load_generator(p, device=device)
    raise FileNotFoundError(
        f"pretrained.gen={path!r}: expected a generator folder (checkpoint.json) or an edm2 .pkl"
    )


def pretrained_generator(cfg, label_dim: int):
    """``pretrained.gen`` checked against this run: its classes and resolution must match."""
    net = load_any_generator(cfg.pretrained.gen)
    if net.label_dim != label_dim or net.img_resolution != cfg.gen.resolution:
        raise ValueError(
            f"pretrained.gen={cfg.pretrained.gen!r} is a {net.img_resolution} px generator of "
            f"{net.label_dim} classes; this run needs {cfg.gen.resolution} px (gen.resolution) "
            f"and {label_dim} classes (its training identities)"
        )
    return net


def fr_init(cfg):
    """The backbone weights every FR training starts from (``fr_mode="init"``), or None."""
    if not (cfg.pretrained.fr and cfg.pretrained.fr_mode == "init"):
        return None

    emb = load_pretrained(cfg.pretrained.fr)
    if emb.layout == "adaface":
        raise ValueError(
            f"pretrained.fr={cfg.pretrained.fr!r} is AdaFace's layout; fr_mode='init' needs an "
            "insightface-layout IResNet (the trainer's own): use fr_mode='use' to make it M_orig"
        )
    return emb.net.state_dict()
