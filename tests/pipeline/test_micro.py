"""The micro preset end to end: every stage, a skip-everything rerun, crash + resume."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from auggen.data.index import open_index
from auggen.infra.faults import ENV, SimulatedCrash
from auggen.pipeline.driver import run_pipeline
from auggen.pipeline.presets import PRESETS
from auggen.pipeline.stage import DONE
from auggen.pipeline.stages import STAGES
from auggen.pipeline.store import load, read_csv


def load_images(path):
    return open_index(path).to_images()


# One thread: the CI machine is small and shared; OpenMP spinning on a busy second core
# costs far more than it gains on these tiny tensors.
MICRO = replace(PRESETS["micro"], threads=1, progress=False)
MICRO = replace(MICRO, generate=replace(MICRO.generate, write_recordio=True))


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("micro")
    status = run_pipeline(MICRO, out, STAGES, log=_quiet)
    yield out, status
    torch.set_num_threads(threads)


def test_every_stage_runs_and_writes_its_outputs(micro_run):
    out, status = micro_run
    assert status == {name: "ran" for name in STAGES}
    for name in STAGES:
        assert (out / name / DONE).exists()
        cfg = json.loads((out / name / "config.json").read_text())
        assert cfg["stage"] == name and len(cfg["fingerprint"]) == 16
        assert json.loads((out / name / "timing.json").read_text())["wall_s"] > 0
    grid = read_csv(out / "grid" / "grid.csv")
    assert len(grid) == len(MICRO.grid.alphas) * len(MICRO.grid.betas)
    best = json.loads((out / "grid" / "best.json").read_text())
    assert best["m_total"] == pytest.approx(max(float(r["m_total"]) for r in grid))
    for png in ("grid/heatmap.png", "report/mixes.png", "report/curves.png", "report/leakage.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # D_aug: labels after the original ones, K images per new identity, manifest matches.
    real = load_images(out / "data" / "train.index.json")
    aug = load_images(out / "generate" / "aug.index.json")
    g = MICRO.generate
    assert len(aug) == g.new_identities * g.images_per_identity
    assert aug.labels.min() == real.num_classes
    assert aug.num_classes == real.num_classes + g.new_identities
    assert torch.bincount(aug.labels - real.num_classes).tolist() == [g.images_per_identity] * (
        g.new_identities
    )
    manifest = read_csv(out / "generate" / "manifest.csv")
    assert [int(r["label"]) for r in manifest] == aug.labels.tolist()
    assert all(r["source_i"] != r["source_j"] for r in manifest)
    assert {float(r["alpha"]) for r in manifest} == {best["alpha"]}
    # The exported copies read back to the same images and labels.
    from auggen.data import read_image_folder, read_recordio

    folder = read_image_folder(out / "generate" / "images")
    assert torch.equal(folder.images, aug.images)
    assert torch.equal(folder.labels + real.num_classes, aug.labels)
    assert all((out / "generate" / r["file"]).exists() for r in manifest)
    rec = read_recordio(out / "generate" / "aug")
    assert torch.equal(rec.labels, aug.labels) and rec.images.shape == aug.images.shape
    leak = json.loads((out / "generate" / "leakage.json").read_text())
    assert leak["generated"]["count"] == len(aug)
    # One metric row per model x seed x benchmark metric; report has the table.
    rows = read_csv(out / "evaluate" / "metrics.csv")
    assert {r["model"] for r in rows} == {"baseline", "repro", "aug"}
    report = (out / "report" / "report.md").read_text()
    for needle in ("| D_orig |", "| D_orig + D_repro |", "| D_orig + D_aug |", "alpha* ="):
        assert needle in report
    # Verdicts are paired over seeds and say how many; every trained model gets a health line.
    verdicts = [ln for ln in report.splitlines() if ln.startswith("- D_orig + D_aug vs D_orig")]
    assert verdicts and all(f"{len(MICRO.seeds)} paired seed" in ln for ln in verdicts)
    health = report.split("## Training health")[1].split("##")[0]
    assert health.count("\n- ") == 1 + len(MICRO.seeds) * (1 + len(MICRO.train_mix.variants))


def test_second_run_skips_everything(micro_run):
    out, _ = micro_run
    before = {n: (out / n / DONE).read_text() for n in STAGES}
    status = run_pipeline(MICRO, out, STAGES, log=_quiet)
    assert set(status.values()) == {"skipped"}
    assert before == {n: (out / n / DONE).read_text() for n in STAGES}


def _copy_run(src, dst, stages):
    for name in stages:
        shutil.copytree(src / name, dst / name)


@pytest.mark.parametrize("stage,step", [("generate", 0), ("grid", 0)])
def test_crash_inside_a_stage_resumes_to_the_same_result(
    micro_run, tmp_path, monkeypatch, stage, step
):
    out, _ = micro_run
    _copy_run(
        out,
        tmp_path,
        ["data", "train_gen", "train_fr", "grid"]
        if stage == "generate"
        else ["data", "train_gen", "train_fr"],
    )
    monkeypatch.setenv(ENV, f"{stage}:{step}")
    with pytest.raises(SimulatedCrash):
        run_pipeline(MICRO, tmp_path, STAGES, stages=[stage], log=_quiet)
    assert not (tmp_path / stage / DONE).exists()
    partial = sorted(p.name for p in (tmp_path / stage).rglob("*.json") if p.name != "config.json")
    assert partial  # some work was saved before the crash
    monkeypatch.delenv(ENV)
    status = run_pipeline(MICRO, tmp_path, STAGES, stages=[stage], log=_quiet)
    assert status[stage] == "ran"
    assert json.loads((tmp_path / stage / "timing.json").read_text())["resumed"] is True
    if stage == "generate":
        a, b = (
            load_images(out / stage / "aug.index.json"),
            load_images(tmp_path / stage / "aug.index.json"),
        )
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert read_csv(out / stage / "manifest.csv") == read_csv(tmp_path / stage / "manifest.csv")
    else:
        assert read_csv(out / stage / "grid.csv") == read_csv(tmp_path / stage / "grid.csv")
        assert (out / stage / "best.json").read_text() == (
            tmp_path / stage / "best.json"
        ).read_text()


def test_changed_config_reruns_that_stage_and_later_ones(micro_run, tmp_path):
    out, _ = micro_run
    _copy_run(out, tmp_path, list(STAGES))
    cfg = replace(MICRO, generate=replace(MICRO.generate, alpha=0.7, beta=0.4))
    status = run_pipeline(cfg, tmp_path, STAGES, stages=["generate", "train_mix"], log=_quiet)
    assert status["generate"] == "ran" and status["train_mix"] == "ran"
    assert status["grid"] == "not selected"
    manifest = read_csv(tmp_path / "generate" / "manifest.csv")
    assert {(float(r["alpha"]), float(r["beta"])) for r in manifest} == {(0.7, 0.4)}
    # evaluate is now older than train_mix: it is not current and cannot be used as is.
    with pytest.raises(RuntimeError, match="evaluate"):
        run_pipeline(cfg, tmp_path, STAGES, stages=["report"], log=_quiet)


def test_evaluate_matches_a_direct_computation(micro_run):
    """metrics.csv agrees with embedding + scoring the benchmark files by hand (numpy)."""
    import numpy as np

    from auggen.recognition.train import load_backbone

    out, _ = micro_run
    rows = {
        (r["model"], r["benchmark"], r["metric"]): float(r["value"])
        for r in read_csv(out / "evaluate" / "metrics.csv")
        if r["seed"] == "0"
    }
    model = load_backbone(out / "train_mix" / "aug" / "seed0")

    def embed(images):
        x = torch.nn.functional.interpolate(
            images.float(), size=MICRO.fr.input_size, mode="bilinear", antialias=True
        )
        x = (x.round().clamp(0, 255) / 255 - 0.5) / 0.5
        with torch.no_grad():
            e = model(x) + model(x.flip(-1))
        return torch.nn.functional.normalize(e, dim=1).numpy()

    gallery = load_images(out / "data" / "train.index.json")
    probe = load_images(out / "data" / "heldout.index.json")
    g, p = embed(gallery.images), embed(probe.images)
    pred = gallery.labels.numpy()[np.argmax(p @ g.T, axis=1)]
    rank1 = float(np.mean(pred == probe.labels.numpy()))
    assert rows[("aug", "heldout_ident", "rank1")] == pytest.approx(rank1, abs=1e-6)
    verif = load(out / "data" / "bench_unseen_verif.safetensors")
    f = embed(load_images(out / "data" / "unseen.index.json").images)
    scores = (f[verif["idx_a"]] * f[verif["idx_b"]]).sum(1)
    same = verif["issame"].numpy()
    # Best-threshold accuracy over all pairs bounds the 10-fold accuracy from above.
    best = max(np.mean((scores > t) == same) for t in np.concatenate([[-2.0], scores]))
    assert rows[("aug", "unseen_verif", "accuracy")] <= best + 1e-9
