"""``auggen embed`` / ``auggen evaluate`` (and the ``auggen`` dispatcher) end to end on tiny
fixtures: a 16 px IR18 saved as an insightface .pth, PNG folders, a RecordIO and .bin files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from auggen import cli
from auggen.cli import embed, evaluate
from auggen.data import write_image_folder, write_recordio, write_verification_bin
from auggen.data.types import LabeledImages
from auggen.eval import evaluate_bin, extract_embeddings
from auggen.recognition import build_backbone, load_pretrained

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def _faces(n_ids=3, per_id=4, seed=0) -> LabeledImages:
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(n_ids, 3, 4, 4, generator=g)
    imgs = torch.nn.functional.interpolate(protos, SIZE).repeat_interleave(per_id, 0)
    imgs = (imgs + 0.15 * torch.randn(imgs.shape, generator=g)).clamp(0, 1)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    return LabeledImages((imgs * 255).to(torch.uint8), labels)


@pytest.fixture
def model_path(tmp_path):
    torch.manual_seed(0)
    net = build_backbone("ir18", input_size=SIZE, embedding_size=8, width=4).eval()
    with torch.no_grad():
        for k, t in net.state_dict().items():
            if k.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif t.is_floating_point():
                t.normal_(0, 0.3)
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    return tmp_path / "backbone.pth"


def _bin(path, pairs=20, seed=0):
    data = _faces(n_ids=4, per_id=10, seed=seed)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, len(data), (pairs,), generator=g)
    b = torch.randint(0, len(data), (pairs,), generator=g)
    images = torch.stack([data.images[a], data.images[b]], 1).flatten(0, 1)
    issame = (data.labels[a] == data.labels[b]).numpy()
    write_verification_bin(path, images, issame, fmt="png")
    return path, images, issame


def test_embed_image_folder(tmp_path, model_path, capsys):
    data = _faces()
    write_image_folder(tmp_path / "faces", data)
    out = tmp_path / "out" / "faces.npy"
    argv = [str(model_path), str(tmp_path / "faces"), "--out", str(out), "--batch-size", "5"]
    assert embed.main([*argv, "--no-progress", "--workers", "2"]) == 0
    feats = np.load(out)
    want = extract_embeddings(load_pretrained(model_path), data.images).numpy()
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.load(tmp_path / "out" / "faces.labels.npy"), data.labels.numpy())
    names = (tmp_path / "out" / "faces.names.txt").read_text().splitlines()
    assert names[:2] == ["00000/000000.png", "00000/000001.png"] and len(names) == 12
    meta = json.loads((tmp_path / "out" / "faces.json").read_text())
    assert meta["input_kind"] == "image_folder" and meta["num_images"] == 12 and meta["flip"]
    assert "12 embeddings (8-d)" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_embed_recordio_and_bin(tmp_path, model_path):
    data = _faces(seed=3)
    rec = write_recordio(tmp_path / "rec" / "train.rec", data, fmt="png")
    model = load_pretrained(model_path)
    assert (
        embed.main([str(model_path), str(rec.parent), "-o", str(tmp_path / "r"), "--no-progress"])
        == 0
    )
    want = extract_embeddings(model, data.images, flip=True).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), want, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "r.names.txt").read_text().splitlines()[0] == "train.rec:1"

    path, images, issame = _bin(tmp_path / "lfw.bin")
    argv = [str(model_path), str(path), "-o", str(tmp_path / "lfw.npy"), "--no-flip"]
    assert embed.main([*argv, "--no-progress"]) == 0
    want = extract_embeddings(model, images, flip=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "lfw.npy"), want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.load(tmp_path / "lfw.issame.npy"), issame)
    assert not (tmp_path / "lfw.labels.npy").exists()


def test_evaluate_table_json_csv(tmp_path, model_path, capsys):
    lfw, _, _ = _bin(tmp_path / "lfw.bin", seed=1)
    cfp, _, _ = _bin(tmp_path / "cfp_fp.bin", seed=2)
    argv = [str(model_path), "--bins", str(lfw), str(cfp), "--json", str(tmp_path / "m.json")]
    assert evaluate.main([*argv, "--csv", str(tmp_path / "m.csv"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| set | pairs | accuracy (%) | std (%) |")
    assert "| lfw | 20 |" in table and "| cfp_fp | 20 |" in table
    direct = evaluate_bin(load_pretrained(model_path), lfw, input_size=SIZE)
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["results"]["lfw"]["accuracy"] == pytest.approx(direct["accuracy"])
    assert f"{100 * direct['accuracy']:.2f}" in table
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("model,set,path,num_pairs,accuracy,std") and len(rows) == 3


def test_auggen_dispatcher(tmp_path, model_path, capsys):
    lfw, _, _ = _bin(tmp_path / "lfw.bin")
    assert cli.main(["evaluate", str(model_path), "--bins", str(lfw), "--no-progress"]) == 0
    assert "| lfw |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["pipeline", "--help"])
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    assert cli.main(["embedd"]) == 2
    assert "unknown command 'embedd'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_python_m_entry_points():
    for mod in ("auggen.cli.embed", "auggen.cli.evaluate", "auggen"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


def test_clear_errors(tmp_path, model_path, capsys):
    def fails(main, argv, pattern):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert pattern in err, err

    fails(embed.main, ["nope.pth", str(tmp_path), "-o", "x.npy"], "nope.pth: no such file")
    fails(embed.main, [str(model_path), str(tmp_path / "none"), "-o", "x.npy"], "none: no such")
    fails(
        embed.main,
        [str(model_path), str(tmp_path), "-o", "x.npy", "--batch-size", "0"],
        "--batch-size",
    )
    fails(
        evaluate.main,
        [str(model_path), "--bins", str(tmp_path / "agedb_30.bin")],
        "agedb_30.bin: no such file",
    )
    (tmp_path / "bad.bin").write_bytes(b"not a pickle")
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(model_path), "--bins", str(tmp_path / "bad.bin"), "--no-progress"])
    assert e.value.code == 1 and "bad.bin: not a verification .bin" in capsys.readouterr().err
