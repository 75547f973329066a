import pytest
import torch

from auggen.recognition import BACKBONES, build_backbone
from auggen.recognition.iresnet import STAGE_DEPTHS

# FACE_RECOGNITION.md section 1 (insightface iresnet, 112 px, 512-d).
EXPECTED = {
    # name: (all params, trainable, BN buffer elements w/o num_batches_tracked, param tensors)
    "ir18": (24_025_600, 24_025_088, 14_720, 94),
    "ir34": (34_139_328, 34_138_816, 25_856, 166),
    "ir50": (43_590_848, 43_590_336, 38_144, 238),
    "ir101": (65_156_160, 65_155_648, 69_632, 463),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_match_insightface(name):
    with torch.device("meta"):
        net = build_backbone(name)
    params = list(net.parameters())
    buffers = [b for k, b in net.named_buffers() if not k.endswith("num_batches_tracked")]
    got = (
        sum(p.numel() for p in params),
        sum(p.numel() for p in params if p.requires_grad),
        sum(b.numel() for b in buffers),
        len(params),
    )
    assert got == EXPECTED[name]


def insightface_keys(depths, with_buffers=True):
    """The state_dict key order of insightface's IResNet, written out from its layout."""
    bn = ["weight", "bias"] + (
        ["running_mean", "running_var", "num_batches_tracked"] * with_buffers
    )
    keys = ["conv1.weight", *(f"bn1.{k}" for k in bn), "prelu.weight"]
    for s, depth in enumerate(depths, 1):
        for b in range(depth):
            p = f"layer{s}.{b}."
            keys += [f"{p}bn1.{k}" for k in bn] + [f"{p}conv1.weight"]
            keys += [f"{p}bn2.{k}" for k in bn] + [f"{p}prelu.weight", f"{p}conv2.weight"]
            keys += [f"{p}bn3.{k}" for k in bn]
            if b == 0:
                keys += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{k}" for k in bn]
    keys += [f"bn2.{k}" for k in bn] + ["fc.weight", "fc.bias"] + [f"features.{k}" for k in bn]
    return keys


@pytest.mark.parametrize("name", ["ir18", "ir50"])
def test_state_dict_keys_in_insightface_order(name):
    with torch.device("meta"):
        net = build_backbone(name)
    assert list(net.state_dict()) == insightface_keys(STAGE_DEPTHS[name])


def test_small_model_shapes_and_frozen_embedding_scale():
    torch.manual_seed(0)
    net = build_backbone("ir18", input_size=48, embedding_size=24, width=8)
    assert net.fc.in_features == 8 * 8 * (48 // 16) ** 2
    assert net.layer4[0].conv2.out_channels == 64
    assert not net.features.weight.requires_grad
    assert torch.all(net.features.weight == 1)
    x = torch.rand(3, 3, 48, 48) * 2 - 1
    net.train()
    y = net(x)
    assert y.shape == (3, 24) and y.dtype == torch.float32
    y.sum().backward()
    assert net.features.weight.grad is None and net.conv1.weight.grad is not None


def test_forward_matches_manual_composition():
    torch.manual_seed(1)
    net = build_backbone("ir18", input_size=32, embedding_size=16, width=4).eval()
    x = torch.randn(2, 3, 32, 32)

    def block(m, h):
        r = m.bn3(m.conv2(m.prelu(m.bn2(m.conv1(m.bn1(h))))))
        return r + (m.downsample(h) if m.downsample is not None else h)

    h = net.prelu(net.bn1(net.conv1(x)))
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for m in stage:
            h = block(m, h)
    assert h.shape[-1] == 2  # four stride-2 stages: 32 -> 2
    ref = net.features(net.fc(net.bn2(h).flatten(1)))
    torch.testing.assert_close(net(x), ref)


def test_errors_name_the_bad_argument():
    with pytest.raises(ValueError, match="ir18"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="multiple of 16"):
        build_backbone("ir18", input_size=100)
    with pytest.raises(ValueError, match="width"):
        build_backbone("ir18", width=0)
    with pytest.raises(TypeError, match="unexpected"):
        build_backbone("ir18", widht=8)
    assert {"ir18", "ir34", "ir50", "ir101"} <= set(BACKBONES)
