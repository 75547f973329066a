"""load_pretrained against reference nets written here from the published layouts
(FACE_RECOGNITION.md section 2): random weights and BN statistics, strict loads, equal outputs."""

import argparse
import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from auggen.infra.files import UnsafeOrCorruptFile, load_torch_weights
from auggen.infra.inert_pickle import RefusedPickle
from auggen.recognition import build_backbone, load_pretrained
from auggen.recognition.train import FRTrainConfig

# ---- references, written from the layout facts (not from this package's modules) ----------


def _bn(c):
    return nn.BatchNorm2d(c, eps=1e-5)


class RefInsightfaceBlock(nn.Module):
    def __init__(self, cin, cout, stride, downsample):
        super().__init__()
        self.bn1, self.conv1 = _bn(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2, self.prelu = _bn(cout), nn.PReLU(cout)
        self.conv2, self.bn3 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False), _bn(cout)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class RefInsightface(nn.Module):
    """insightface iresnet: conv1, bn1, prelu, layer1..4, bn2, dropout, fc, features."""

    def __init__(self, depths, width=8, size=32, emb=16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 1, 1, bias=False), _bn(width)
        self.prelu = nn.PReLU(width)
        cin = width
        for i, d in enumerate(depths):
            cout = width * 2**i
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), _bn(cout))
            blocks = [RefInsightfaceBlock(cin, cout, 2, down)]
            blocks += [RefInsightfaceBlock(cout, cout, 1, None) for _ in range(d - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.bn2, self.dropout = _bn(cin), nn.Dropout(0.0)
        self.fc = nn.Linear(cin * (size // 16) ** 2, emb)
        self.features = nn.BatchNorm1d(emb, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


class RefAdaFaceBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout)
            )
        self.res_layer = nn.Sequential(
            _bn(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            _bn(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            _bn(cout),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class RefAdaFace(nn.Module):
    """AdaFace Backbone: input_layer, output_layer, body; returns (x / |x|, |x|)."""

    def __init__(self, depths, width=8, size=32, emb=16):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), _bn(width), nn.PReLU(width)
        )
        self.output_layer = nn.Sequential(
            _bn(8 * width),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(8 * width * (size // 16) ** 2, emb),
            nn.BatchNorm1d(emb, affine=False),
        )
        blocks, cin = [], width
        for i, d in enumerate(depths):
            cout = width * 2**i
            blocks += [RefAdaFaceBlock(cin, cout, 2)] + [
                RefAdaFaceBlock(cout, cout, 1) for _ in range(d - 1)
            ]
            cin = cout
        self.body = nn.Sequential(*blocks)

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return torch.div(x, norm), norm


def _randomise(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
    return net.eval()


def _rgb(n=3, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---- AdaFace layout facts ------------------------------------------------------------------

ADAFACE_COUNTS = {  # FACE_RECOGNITION.md section 1: params, BN buffer elements, param tensors
    "adaface_ir18": (24_020_352, 14_592, 89),
    "adaface_ir34": (34_134_080, 25_728, 161),
    "adaface_ir50": (43_585_600, 38_016, 233),
    "adaface_ir101": (65_150_912, 69_504, 458),
}


@pytest.mark.parametrize("name", sorted(ADAFACE_COUNTS))
def test_adaface_parameter_counts(name):
    with torch.device("meta"):
        net = build_backbone(name)
    params = list(net.parameters())
    buffers = [b for k, b in net.named_buffers() if not k.endswith("num_batches_tracked")]
    got = (sum(p.numel() for p in params), sum(b.numel() for b in buffers), len(params))
    assert got == ADAFACE_COUNTS[name]


def test_adaface_state_dict_order_matches_reference():
    ours = build_backbone("adaface_ir18", input_size=32, embedding_size=16, width=8)
    ref = RefAdaFace((2, 2, 2, 2))
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    keys = list(ours.state_dict())
    assert keys.index("output_layer.0.weight") < keys.index("body.0.res_layer.0.weight")
    assert "body.0.shortcut_layer.0.weight" not in keys  # stage 1: max-pool subsampling
    assert keys.index("body.2.shortcut_layer.0.weight") < keys.index("body.2.res_layer.0.weight")


# ---- loaders -------------------------------------------------------------------------------


@pytest.mark.parametrize("depths,arch", [((2, 2, 2, 2), "ir18"), ((1, 2, 3, 1), None)])
def test_insightface_pth_loads_strictly_and_embeds_equal(tmp_path, depths, arch):
    ref = _randomise(RefInsightface(depths))
    torch.save(ref.state_dict(), tmp_path / "backbone.pth")
    model = load_pretrained(tmp_path / "backbone.pth", arch=arch)
    assert not model.training and not model.bgr and model.input_size == 32
    x = _rgb()
    with torch.no_grad():
        want = F.normalize(ref(x), dim=1)
        got = model(x)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_insightface_ddp_prefix_and_fp16_safetensors(tmp_path):
    ref = _randomise(RefInsightface((2, 2, 2, 2)))
    sd = {f"module.{k}": v.half() for k, v in ref.state_dict().items() if "num_batches" not in k}
    save_file(sd, tmp_path / "r18.safetensors")
    model = load_pretrained(tmp_path / "r18.safetensors", arch="r18")
    ref.load_state_dict({k[7:]: v.float() for k, v in sd.items()}, strict=False)
    x = _rgb()
    with torch.no_grad():
        torch.testing.assert_close(model(x), F.normalize(ref(x), dim=1), rtol=1e-5, atol=1e-6)


def _adaface_ckpt(path, ref, extra=None):
    sd = {f"model.{k}": v for k, v in ref.state_dict().items()}
    sd["head.kernel"] = torch.randn(16, 10)
    ckpt = {"epoch": 3, "state_dict": sd, **(extra or {})}
    torch.save(ckpt, path)
    return path


def test_adaface_ckpt_loads_strictly_and_flips_to_bgr(tmp_path):
    ref = _randomise(RefAdaFace((2, 2, 2, 2)))
    path = _adaface_ckpt(tmp_path / "adaface_ir18.ckpt", ref)
    model = load_pretrained(path)
    assert model.bgr and model.layout == "adaface"
    x = _rgb()
    with torch.no_grad():
        want = ref(x.flip(1))[0]  # AdaFace sees BGR
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, ref(x)[0], atol=1e-3)  # the flip matters
    with pytest.raises(ValueError, match=r"arch 'adaface_ir50' has stage depths"):
        load_pretrained(path, arch="adaface_ir50")


def test_lightning_extras_read_inertly(tmp_path):
    """weights_only refuses a hyper-parameter Namespace; the inert reader gets the weights."""
    ref = _randomise(RefAdaFace((1, 1, 1, 1)))
    hp = argparse.Namespace(arch="ir_18", lr=0.1)
    path = _adaface_ckpt(tmp_path / "a.ckpt", ref, {"hyper_parameters": hp})
    with pytest.raises(UnsafeOrCorruptFile, match="weights_only"):
        load_torch_weights(path)
    x = _rgb()
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(path)(x), ref(x.flip(1))[0])


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_ckpt_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ref = RefAdaFace((1, 1, 1, 1))
    path = _adaface_ckpt(tmp_path / "evil.ckpt", ref, {"hyper_parameters": _RunsShell(marker)})
    with pytest.raises(RefusedPickle, match=r"evil\.ckpt: refused.*system"):
        load_pretrained(path)
    assert not marker.exists()


def test_project_run_folder(tmp_path):
    cfg = FRTrainConfig(backbone="ir18", input_size=32, width=4, embedding_size=16)
    net = _randomise(build_backbone("ir18", input_size=32, embedding_size=16, width=4))
    run = tmp_path / "train_fr" / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file(net.state_dict(), run / "model.safetensors")
    x = _rgb()
    with torch.no_grad():
        want = F.normalize(net(x), dim=1)
        for where in (run, run / "model.safetensors", tmp_path / "train_fr"):
            torch.testing.assert_close(load_pretrained(where, arch="ir18")(x), want)
    (tmp_path / "train_fr" / "baseline" / "seed1").mkdir()
    (tmp_path / "train_fr" / "baseline" / "seed1" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="holds 2 FR runs"):
        load_pretrained(tmp_path / "train_fr")


def test_errors_name_the_file_and_what_was_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth: no such file"):
        load_pretrained(tmp_path / "nope.pth")
    torch.save({f"w{i}": torch.zeros(1) for i in range(143)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"x\.pth: a state dict with 143 keys that matches no"):
        load_pretrained(tmp_path / "x.pth")
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ValueError, match=r"t\.pth: found a Tensor; expected a state dict"):
        load_pretrained(tmp_path / "t.pth")
    ref = RefInsightface((2, 2, 2, 2))
    sd = ref.state_dict()
    del sd["layer2.0.conv1.weight"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut\.pth: weights do not fit.*layer2\.0\.conv1"):
        load_pretrained(tmp_path / "cut.pth")
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"arch 'ir50' has stage depths \(3, 4, 14, 3\)"):
        load_pretrained(tmp_path / "r18.pth", arch="ir50")
    with pytest.raises(ValueError, match="asks for AdaFace's layout"):
        load_pretrained(tmp_path / "r18.pth", arch="adaface_ir18")
    with pytest.raises(ValueError, match="arch must name an IR depth"):
        load_pretrained(tmp_path / "r18.pth", arch="resnet50")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: a folder without config\.json"):
        load_pretrained(tmp_path / "empty")
