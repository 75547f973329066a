"""``auggen export``: ONNX / TorchScript files of every loadable layout give torch's embeddings
(onnxruntime, batch 1 and 7, random and real images), carry their input convention, and load
in ``auggen embed``; errors name the file and the cause."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from auggen import cli
from auggen.cli import embed
from auggen.recognition import build_backbone, load_pretrained
from auggen.recognition.export import (
    MAX_ABS,
    MIN_COS,
    ExportGraph,
    OnnxEmbedder,
    check_images,
    compare,
)
from auggen.recognition.train import FRTrainConfig

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, EMB = 32, 16


def _randomise(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def _insightface_pth(tmp_path):
    net = _randomise(build_backbone("ir18", SIZE, EMB, width=8))
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    return tmp_path / "r18.pth"


def _adaface_ckpt(tmp_path):
    net = _randomise(build_backbone("adaface_ir18", SIZE, EMB, width=8))
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "ada.ckpt")
    return tmp_path / "ada.ckpt"


def _own_run(tmp_path):
    cfg = FRTrainConfig(backbone="ir18", input_size=SIZE, width=8, embedding_size=EMB)
    net = _randomise(build_backbone("ir18", SIZE, EMB, width=8))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file(net.state_dict(), run / "model.safetensors")
    return run


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {"input": x.numpy()})[0])


@pytest.mark.parametrize("make", [_insightface_pth, _adaface_ckpt, _own_run])
def test_onnx_matches_torch_for_every_layout(tmp_path, make, capsys):
    src = make(tmp_path)
    out = tmp_path / "m.onnx"
    assert cli.main(["export", str(src), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" ok") == 4 and "FAILED" not in printed
    model = load_pretrained(src)
    # Independent of the command's own check: onnxruntime vs the loaded model, here.
    faces = check_images(SIZE)
    for b in (1, 7, 3):
        x = torch.rand(b, 3, SIZE, SIZE) * 2 - 1
        real = (faces[:b].float() / 255 - 0.5) / 0.5
        for inp in (x, real):
            with torch.no_grad():
                want = model(inp)
            got = _ort(out, inp)
            assert got.shape == (b, EMB)
            assert (got - want).abs().max() <= MAX_ABS
            assert torch.nn.functional.cosine_similarity(got, want).min() >= MIN_COS
    meta = json.loads(onnx.load(str(out)).metadata_props[0].value)
    assert meta["input_color"] == "RGB" and meta["input_size"] == SIZE
    assert meta["input_range"] == [-1.0, 1.0] and meta["flip_fused"] is False
    assert meta["source_layout"] == model.layout


def test_flip_and_bgr_conventions_and_torchscript(tmp_path, capsys):
    src = _insightface_pth(tmp_path)
    out, ts = tmp_path / "f.onnx", tmp_path / "f.pt"
    argv = ["export", str(src), "--onnx", str(out), "--torchscript", str(ts), "--flip"]
    assert cli.main([*argv, "--input-bgr"]) == 0
    assert capsys.readouterr().out.count(" ok") == 8
    model = load_pretrained(src)
    rgb = torch.rand(7, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():  # the insightface protocol: sum of image and mirror, normalised
        want = torch.nn.functional.normalize(model(rgb) + model(rgb.flip(3)), dim=1)
    bgr = rgb.flip(1)
    assert (_ort(out, bgr) - want).abs().max() <= MAX_ABS
    extra = {"auggen.json": ""}
    scripted = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["auggen.json"])["input_color"] == "BGR"
    torch.testing.assert_close(scripted(bgr), want, atol=1e-5, rtol=0)
    # The embedder takes RGB and flips for the file; the mirror is in the graph.
    emb = OnnxEmbedder(out)
    assert emb.flip_fused and emb.input_bgr
    assert (emb(rgb) - want).abs().max() <= MAX_ABS


def test_embed_accepts_the_onnx_model(tmp_path):
    from PIL import Image

    src = _insightface_pth(tmp_path)
    rng = np.random.default_rng(0)
    for k in range(2):
        (tmp_path / "faces" / f"id{k}").mkdir(parents=True)
        for i in range(3):
            px = rng.integers(0, 255, size=(SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(px).save(tmp_path / "faces" / f"id{k}" / f"{i}.png")
    for flip in (False, True):
        out = tmp_path / f"m{flip}.onnx"
        assert cli.main(["export", str(src), "--onnx", str(out), *(["--flip"] * flip)]) == 0
        argv = [str(tmp_path / "faces"), "--no-progress", "--workers", "1"]
        assert embed.main([str(src), *argv, "-o", str(tmp_path / "pth.npy")]) == 0
        assert embed.main([str(out), *argv, "-o", str(tmp_path / "onnx.npy")]) == 0
        a, b = np.load(tmp_path / "pth.npy"), np.load(tmp_path / "onnx.npy")
        assert a.shape == (6, EMB) and np.abs(a - b).max() <= MAX_ABS
        meta = json.loads((tmp_path / "onnx.json").read_text())
        assert meta["flip_in_model"] is flip


def test_compare_flags_a_wrong_model():
    from auggen.recognition.pretrained import Embedder

    a = ExportGraph(Embedder(_randomise(build_backbone("ir18", SIZE, EMB, width=8))))
    b = ExportGraph(Embedder(_randomise(build_backbone("ir18", SIZE, EMB, width=8))))
    images = check_images(SIZE)
    assert all(r["ok"] for r in compare(a, a, images))
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.05)
    assert not any(r["ok"] for r in compare(a, b, images))


def test_clear_errors(tmp_path, capsys, monkeypatch):
    src = _insightface_pth(tmp_path)

    def fails(argv, *patterns, main=cli.main):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code != 0
        err = capsys.readouterr().err
        for p in patterns:
            assert p in err, err

    fails(["export", str(src)], "nothing to write")
    fails(["export", "nope.pth", "--onnx", str(tmp_path / "a.onnx")], "nope.pth: no such file")
    fails(["export", str(src), "--onnx", str(tmp_path / "no" / "a.onnx")], "does not exist")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    fails([str(bad), str(tmp_path), "-o", str(tmp_path / "x.npy")], "bad.onnx", "onnxruntime",
          main=embed.main)  # fmt: skip
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    fails(["export", str(src), "--onnx", str(tmp_path / "a.onnx")], "pip install 'auggen[onnx]'")
    fails([str(bad), str(tmp_path), "-o", str(tmp_path / "x.npy")], "auggen[onnx]",
          main=embed.main)  # fmt: skip
