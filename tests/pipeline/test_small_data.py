"""A 10-class folder under the default preset: the proportional split, said in the log, the
split file and the report; a request that cannot work names the --set line that would."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from auggen.cli.pipeline import main
from auggen.data.index import open_index
from auggen.data.split import available_pairs, choose_unseen, proportional_unseen
from auggen.pipeline.config import DataConfig
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stage import fingerprint, stage_config
from auggen.pipeline.stages import STAGES
from auggen.pipeline.stages.report import split_notes


def _digits(root, classes=10, per_class=6, size=12):
    """A folder of small generated 'digit' images: one sub-folder per class."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        d = root / f"digit{k}"
        d.mkdir(parents=True)
        base = rng.integers(0, 255, size=(size, size), dtype=np.uint8)
        for i in range(per_class):
            noise = rng.integers(-20, 20, size=(size, size))
            px = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(px, mode="L").save(d / f"{i}.png")
    return root


def test_proportional_split_rule():
    assert [proportional_unseen(n) for n in (2, 3, 4, 7, 8, 10, 12, 40)] == [
        0, 0, 2, 2, 2, 2, 3, 10
    ]  # fmt: skip
    for n in range(4, 60):
        u = proportional_unseen(n)
        assert u >= 2 and n - u >= 2
    d = DataConfig(unseen_identities=10)
    assert choose_unseen(40, d) == (10, "")  # ORL: the configured split stands
    assert choose_unseen(12, d) == (10, "")
    u, note = choose_unseen(10, d)
    assert u == 2 and "2 unseen, 8 trained" in note
    with pytest.raises(ValueError, match="--set data.unseen_identities=2 would work"):
        choose_unseen(10, replace(d, unseen_auto=False))


def test_available_pairs_brute_force():
    import torch

    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    n = len(labels)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    genuine = sum(int(labels[i] == labels[j]) for i, j in pairs)
    assert available_pairs(labels) == (genuine, len(pairs) - genuine)


def test_orl_fingerprints_do_not_see_the_new_setting():
    cfg = PRESETS["orl-tiny"]
    data = STAGES["data"]
    assert "unseen_auto" not in stage_config(data, cfg)["data"]
    strict = replace(cfg, data=replace(cfg.data, unseen_auto=False))
    assert fingerprint(data, strict, {}, external={}) != fingerprint(data, cfg, {}, external={})


def test_ten_class_folder_under_the_default_preset(tmp_path, capsys):
    root = _digits(tmp_path / "digits")
    out = tmp_path / "run"
    # The default preset (orl-tiny: 10 unseen identities) on 10 classes.
    assert main(["--data", str(root), "--out", str(out), "--stages", "data"]) == 0
    log = capsys.readouterr().out
    assert "small-data split instead: 2 unseen, 8 trained" in log
    split = json.loads((out / "data" / "split.json").read_text())
    assert split["train_identities"] == 8 and split["unseen_identities"] == 2
    assert split["unseen_split"] == "proportional"
    # 2 identities x 6 images: 30 genuine pairs, 36 impostor; 400 asked for, 61 used.
    pairs = split["verification_pairs"]
    assert (pairs["genuine_available"], pairs["impostor_available"]) == (30, 36)
    assert pairs["used"] == 61 and pairs["requested"] == 400
    unseen = open_index(out / "data" / "unseen.index.json")
    assert unseen.num_classes == 2 and len(unseen) == 12
    notes = "\n".join(split_notes(split))
    assert "small-data split" in notes and "61 used" in notes and "30 genuine" in notes
    # Asked for explicitly, the same value fails and names the line that works.
    args = ["--data", str(root), "--out", str(tmp_path / "r2"), "--stages", "data"]
    assert main([*args, "--set", "data.unseen_identities=10"]) == 1
    err = capsys.readouterr().err
    assert "--set data.unseen_identities=2 would work" in err


def test_micro_run_on_a_small_folder_reports_the_split(tmp_path):
    root = _digits(tmp_path / "digits", classes=6, per_class=5)
    m = PRESETS["micro"]
    cfg = replace(
        m,
        data=replace(
            m.data,
            source="folder",
            path=str(root),
            image_size=16,
            max_identities=0,
            unseen_identities=10,
            heldout_per_identity=1,
        ),  # fmt: skip
        threads=1,
        progress=False,
    )
    status = run_pipeline(cfg, tmp_path / "run", STAGES, log=lambda s: None)
    assert set(status.values()) == {"ran"}
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "small-data split instead: 2 unseen, 4 trained" in report
    assert "the verification protocol has few pairs" in report
