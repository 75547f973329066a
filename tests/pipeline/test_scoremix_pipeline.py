"""ScoreMix and pair selection through the micro pipeline: the grid is skipped, D_aug records
its method, weights and distances, and 2 gloo processes write what 1 does."""

import json

from auggen.pipeline.store import read_csv
from tests.pipeline.test_torchrun import copy_stages, pipeline

MIX = ["--set", "generate.mix=score", "--set", "generate.pairs=far"]
MIX += ["--stages", "data,train_gen,train_fr,grid,generate"]


def test_score_mixing_with_far_pairs_on_one_and_two_processes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    rc, log = pipeline(one, extra=MIX)
    assert rc == 0, log
    assert json.loads((one / "grid/skipped.json").read_text())["skipped"]
    assert not (one / "grid/grid.csv").exists()
    mixing = json.loads((one / "generate/mixing.json").read_text())
    assert mixing["mix"] == "score" and mixing["weights"] == [0.5, 0.5]
    assert mixing["alpha"] is None and mixing["pairs"] == "far"
    rows = read_csv(one / "generate/manifest.csv")
    pairs = json.loads((one / "generate/pairs.json").read_text())
    per_id = {r["new_identity"]: float(r["embed_distance"]) for r in rows}
    assert abs(sum(per_id.values()) / len(per_id) - pairs["embed_distance"]["mean"]) < 1e-5
    cap = pairs["max_uses_per_identity"]
    uses = {}
    for r in {r["new_identity"]: r for r in rows}.values():
        for c in r["sources"].split(";"):
            uses[c] = uses.get(c, 0) + 1
    assert max(uses.values()) <= cap
    assert -1 <= pairs["embed_vs_cond"]["spearman_rho"] <= 1
    stats = json.loads((one / "generate/stats.json").read_text())
    assert stats["denoiser_evaluations"] == stats["images"] * (2 * 3 - 1) * 2  # micro: 3 steps

    copy_stages(one, two, ["data", "train_gen", "train_fr"])
    rc, log = pipeline(two, procs=2, extra=MIX)
    assert rc == 0, log
    assert (one / "generate/manifest.csv").read_bytes() == (
        two / "generate/manifest.csv"
    ).read_bytes()
    names = sorted(p.name for p in (one / "generate/shards").glob("*.rec"))
    assert names == sorted(p.name for p in (two / "generate/shards").glob("*.rec"))
    for n in names:
        assert (one / "generate/shards" / n).read_bytes() == (
            two / "generate/shards" / n
        ).read_bytes()
