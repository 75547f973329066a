"""Bad input gives a clear error before or inside the data stage, and loses nothing finished."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from auggen.cli.pipeline import main
from auggen.data.index import open_index
from auggen.pipeline.config import DataConfig
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stage import DONE
from auggen.pipeline.stages import STAGES
from auggen.pipeline.store import load


def load_images(path):
    return open_index(path).to_images()


MICRO = replace(PRESETS["micro"], threads=1, progress=False)


def _folder(root, counts, corrupt=None):
    rng = np.random.default_rng(0)
    for k, n in enumerate(counts):
        d = root / f"id{k:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            px = rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
            Image.fromarray(px).save(d / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def _cfg(path, **data):
    d = DataConfig(
        source="folder",
        path=str(path),
        image_size=16,
        unseen_identities=0,
        heldout_per_identity=1,
        verification_pairs=10,
    )
    return replace(MICRO, data=replace(d, **data))


def _data_stage(cfg, out):
    return run_pipeline(cfg, out, STAGES, stages=["data"], log=lambda s: None)


def test_folder_data_is_split_and_relabelled(tmp_path):
    out = tmp_path / "run"
    _data_stage(_cfg(_folder(tmp_path / "f", [4, 5, 3, 6, 4]), unseen_identities=2), out)
    train = load_images(out / "data" / "train.index.json")
    assert train.num_classes == 3 and len(train) == 4 + 5 + 3 - 3
    assert train.images.shape[1:] == (3, 16, 16)
    verif = load(out / "data" / "bench_unseen_verif.safetensors")
    assert len(open_index(out / "data" / "unseen.index.json")) == 10  # the last two identities
    assert len(verif["issame"]) == 10 and int(verif["issame"].sum()) == 5


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        _data_stage(_cfg(tmp_path / "nope"), tmp_path / "run")


def test_missing_data_folder_cli(tmp_path, capsys):
    rc = main(
        [
            "--preset",
            "micro",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
            "--stages",
            "data",
            "--threads",
            "1",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "no such folder" in err and "finished stages" in err


def test_identity_with_one_image(tmp_path):
    root = _folder(tmp_path / "f", [4, 1, 4])
    with pytest.raises(ValueError, match=r"identity 1 \(id01\) has 1 image\(s\).*drop_small"):
        _data_stage(_cfg(root), tmp_path / "run")
    _data_stage(_cfg(root, drop_small_identities=True), tmp_path / "run")
    assert load_images(tmp_path / "run" / "data" / "train.index.json").num_classes == 2


def test_too_few_images_for_the_heldout_split(tmp_path):
    root = _folder(tmp_path / "f", [4, 2, 4])
    with pytest.raises(ValueError, match="heldout_per_identity=2 needs at least 3"):
        _data_stage(_cfg(root, heldout_per_identity=2), tmp_path / "run")


def test_corrupt_image(tmp_path):
    root = _folder(tmp_path / "f", [3, 3, 3], corrupt="id01/bad.png")
    with pytest.raises(ValueError, match="bad.png"):
        _data_stage(_cfg(root), tmp_path / "run")
    _data_stage(_cfg(root, on_error="skip"), tmp_path / "run2")
    assert len(load_images(tmp_path / "run2" / "data" / "train.index.json")) == 9 - 3


def test_fewer_than_two_classes(tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        _data_stage(_cfg(_folder(tmp_path / "f", [5])), tmp_path / "run")
    with pytest.raises(ValueError, match="at least two training identities"):
        _data_stage(
            _cfg(_folder(tmp_path / "g", [5, 5, 5]), unseen_identities=2, unseen_auto=False),
            tmp_path / "run2",
        )


@pytest.mark.parametrize(
    "setting,match",
    [
        ("grid.alphas=[0.5,2.5]", r"grid.alphas must be in \[0, 2\], got 2.5"),
        ("grid.betas=[-0.1]", r"grid.betas must be in \[0, 2\], got -0.1"),
        ("generate.alpha=3", r"generate.alpha must be in \[0, 2\]"),
        ("grid.samples_per_cell=1", "samples_per_cell must be >= 2"),
        ("fr.epochs=many", "fr.epochs: expected an int"),
        ("gen.stepz=3", "did you mean 'gen.steps'"),
        ("data.unseen_identities=1", "impostor pairs"),
    ],
)
def test_bad_settings_are_rejected_before_anything_runs(tmp_path, capsys, setting, match):
    out = tmp_path / "run"
    _data_stage(_cfg(_folder(tmp_path / "f", [3, 3, 3])), out)
    token = (out / "data" / DONE).read_text()
    args = ["--preset", "micro", "--out", str(out), "--set", setting]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    import re

    assert re.search(match, capsys.readouterr().err)
    assert (out / "data" / DONE).read_text() == token  # nothing finished is lost


def test_failing_stage_keeps_finished_ones(tmp_path):
    out = tmp_path / "run"
    good = _cfg(_folder(tmp_path / "f", [3, 3, 3]))
    _data_stage(good, out)
    token = (out / "data" / DONE).read_text()
    with pytest.raises(FileNotFoundError):
        _data_stage(replace(good, data=replace(good.data, path=str(tmp_path / "gone"))), out)
    assert _data_stage(good, out)["data"] == "skipped"  # the failed rerun never replaced it
    assert (out / "data" / DONE).read_text() == token


def test_unknown_preset_and_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "orl-tin"])
    assert "did you mean 'orl-tiny'" in capsys.readouterr().err
    assert main(["--preset", "micro", "--stages", "gird", "--out", "/nonexistent/x"]) == 1
    assert "did you mean 'grid'" in capsys.readouterr().err


def test_show_config(capsys):
    assert (
        main(["--preset", "micro", "--set", "grid.pairs=5", "--seeds", "3,4", "--show-config"]) == 0
    )
    out = capsys.readouterr().out
    assert '"pairs": 5' in out and '"seeds": [\n    3,\n    4\n  ]' in out


def test_config_file_and_flags(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(
        '{"grid": {"pairs": 7, "alphas": [0.3, 0.9]}, "fr": {"augment": {"flip": false}}}'
    )
    assert (
        main(
            [
                "--preset",
                "micro",
                "--config",
                str(path),
                "--device",
                "cuda:1",
                "--set",
                "grid.pairs=9",
                "--show-config",
            ]
        )
        == 0
    )
    import json

    cfg = json.loads(capsys.readouterr().out)
    assert cfg["grid"]["pairs"] == 9 and cfg["grid"]["alphas"] == [0.3, 0.9]
    assert cfg["fr"]["augment"]["flip"] is False and cfg["device"] == "cuda:1"
    path.write_text('{"grid": {"pairz": 7}}')
    with pytest.raises(SystemExit):
        main(["--preset", "micro", "--config", str(path), "--show-config"])
    assert "did you mean 'grid.pairs'" in capsys.readouterr().err


def test_data_flag_picks_the_reader(tmp_path, capsys):
    import json

    def source(path):
        assert main(["--preset", "micro", "--data", str(path), "--show-config"]) == 0
        return json.loads(capsys.readouterr().out)["data"]["source"]

    (tmp_path / "casia").mkdir()
    assert source(tmp_path / "casia") == "folder"
    (tmp_path / "casia" / "train.rec").write_bytes(b"")
    assert source(tmp_path / "casia") == "recordio"
    assert source(tmp_path / "casia" / "train") == "recordio"
    assert source(tmp_path / "x.rec") == "recordio"


def test_recordio_data(tmp_path):
    from auggen.data import LabeledImages, write_recordio

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (12, 3, 20, 20), generator=g, dtype=torch.uint8)
    write_recordio(tmp_path / "train", LabeledImages(images, torch.arange(12) % 3), fmt="png")
    cfg = _cfg(tmp_path / "train")
    cfg = replace(cfg, data=replace(cfg.data, source="recordio"))
    _data_stage(cfg, tmp_path / "run")
    train = load_images(tmp_path / "run" / "data" / "train.index.json")
    assert train.num_classes == 3 and len(train) == 12 - 3
    with pytest.raises(FileNotFoundError, match="no such RecordIO file"):
        bad = replace(cfg, data=replace(cfg.data, path=str(tmp_path / "missing")))
        _data_stage(bad, tmp_path / "run2")
