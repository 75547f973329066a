import math

import numpy as np
import pytest
import torch

from auggen.recognition import AdaFace, ArcFace, CosFace, build_head, sample_classes

EPS = 1e-3


def adaface_numpy(emb, kernel, labels, mean0, std0, m=0.4, h=0.333, s=64.0, t_alpha=1.0):
    """Direct fp64 transcription of FACE_RECOGNITION.md section 3, steps 1-7 (whole matrix)."""
    emb, kernel = emb.astype(np.float64), kernel.astype(np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    f = emb / norms
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    cos = np.clip(f @ w, -1 + EPS, 1 - EPS)
    n = np.clip(norms, 0.001, 100)
    mean = t_alpha * n.mean() + (1 - t_alpha) * mean0
    std = t_alpha * n.std(ddof=1) + (1 - t_alpha) * std0
    z = np.clip(h * (n - mean) / (std + EPS), -1, 1)
    onehot = np.zeros_like(cos)
    onehot[np.arange(len(labels)), labels] = 1
    theta = np.clip(np.arccos(cos) + onehot * (-m * z), EPS, math.pi - EPS)
    logits = s * (np.cos(theta) - onehot * (m + m * z))
    return logits, mean, std


def make_batch(b=6, d=8, c=5, seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g)
    if scale is not None:
        emb = emb / emb.norm(dim=1, keepdim=True) * scale.view(-1, 1)
    labels = torch.randint(0, c, (b,), generator=g)
    return emb, labels


@pytest.mark.parametrize("t_alpha", [1.0, 0.01])
def test_adaface_matches_direct_formula(t_alpha):
    torch.manual_seed(0)
    head = AdaFace(8, 5, t_alpha=t_alpha)
    emb, labels = make_batch(scale=torch.tensor([0.5, 3.0, 10.0, 20.0, 40.0, 150.0]))
    ref, mean, std = adaface_numpy(
        emb.numpy(), head.kernel.detach().numpy(), labels.numpy(), 20.0, 100.0, t_alpha=t_alpha
    )
    got = head(emb, labels)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=2e-4)
    np.testing.assert_allclose(head.batch_mean.item(), mean, rtol=1e-6)
    np.testing.assert_allclose(head.batch_std.item(), std, rtol=1e-6)
    # A second call uses the updated statistics.
    emb2, labels2 = make_batch(seed=1)
    ref2, _, _ = adaface_numpy(
        emb2.numpy(), head.kernel.detach().numpy(), labels2.numpy(), mean, std, t_alpha=t_alpha
    )
    np.testing.assert_allclose(head(emb2, labels2).detach().numpy(), ref2, rtol=1e-5, atol=2e-4)


def _adaface_at(z_sign, m=0.4):
    """AdaFace with statistics frozen (t_alpha=0) so every sample has z = z_sign."""
    head = AdaFace(8, 5, m=m, h=1.0 if z_sign else 0.0, t_alpha=0.0)
    head.batch_mean.fill_(10.0)
    head.batch_std.fill_(0.0)  # |n - 10| / eps = 5000 saturates the clip at +-1; h=0 gives 0
    scale = torch.full((6,), 10.0 + 5.0 * z_sign)
    emb, labels = make_batch(scale=scale)
    return head, emb, labels


def test_adaface_special_cases_equal_arcface_cosface():
    torch.manual_seed(0)
    head, emb, labels = _adaface_at(-1)  # z = -1: s*cos(theta + m), ArcFace
    arc = ArcFace(8, 5, m=0.4)
    arc.kernel.data.copy_(head.kernel.data)
    torch.testing.assert_close(head(emb, labels), arc(emb, labels))

    head, emb, labels = _adaface_at(0)  # z = 0: s*(cos - m), CosFace
    cosf = CosFace(8, 5, m=0.4)
    cosf.kernel.data.copy_(head.kernel.data)
    torch.testing.assert_close(head(emb, labels), cosf(emb, labels), rtol=1e-5, atol=1e-4)

    head, emb, labels = _adaface_at(+1)  # z = +1: s*(cos(theta - m) - 2m)
    cos = head.cosine(emb).double()
    theta = torch.acos(cos.gather(1, labels.view(-1, 1))).squeeze(1)
    want = cos.clone() * 64
    want[torch.arange(6), labels] = 64 * (torch.cos((theta - 0.4).clamp(EPS, math.pi - EPS)) - 0.8)
    torch.testing.assert_close(head(emb, labels).double(), want, rtol=1e-5, atol=1e-4)


def test_arcface_cosface_formulas_and_non_target_columns():
    torch.manual_seed(0)
    emb, labels = make_batch()
    for head, target in [
        (ArcFace(8, 5), lambda c: torch.cos(torch.acos(c) + 0.5)),
        (CosFace(8, 5), lambda c: c - 0.35),
    ]:
        cos = head.cosine(emb)
        logits = head(emb, labels)
        onehot = torch.nn.functional.one_hot(labels, 5).bool()
        torch.testing.assert_close(logits[~onehot], 64 * cos[~onehot])
        torch.testing.assert_close(logits[onehot], 64 * target(cos[onehot]), rtol=1e-5, atol=1e-4)


def test_gradients_do_not_flow_through_adaface_norms():
    torch.manual_seed(0)
    head = AdaFace(8, 5, t_alpha=1.0)
    emb, labels = make_batch()
    emb = emb.requires_grad_()
    head(emb, labels).sum().backward()
    # Only the direction enters with gradient: d/d(scale) of the logits vanishes along emb.
    radial = (emb.grad * emb).sum(1)
    torch.testing.assert_close(radial, torch.zeros(6), atol=1e-4, rtol=0)


def test_state_dict_layout_matches_adaface():
    sd = AdaFace(8, 5).state_dict()
    assert list(sd) == ["kernel", "t", "batch_mean", "batch_std"]
    assert sd["kernel"].shape == (8, 5) and sd["batch_mean"].shape == (1,)


def test_batch_of_one_keeps_statistics():
    head = AdaFace(8, 5)
    emb, labels = make_batch(b=1)
    assert torch.isfinite(head(emb, labels)).all()
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0


@pytest.mark.parametrize("name", ["arcface", "cosface", "adaface"])
def test_partial_fc_logits_equal_full_columns(name):
    torch.manual_seed(0)
    head = build_head(name, 8, 50, **({"t_alpha": 0.0} if name == "adaface" else {}))
    emb, labels = make_batch(b=6, c=50)
    classes, local = sample_classes(labels, 50, 0.2, torch.Generator().manual_seed(3))
    assert len(classes) == 10 and torch.equal(classes[local], labels)
    assert set(labels.tolist()) <= set(classes.tolist())
    full = head(emb, labels)
    part = head(emb, local, classes)
    torch.testing.assert_close(part, full[:, classes])


def test_sample_classes_edge_cases():
    labels = torch.tensor([3, 3, 7])
    classes, local = sample_classes(labels, 10, 1.0)
    assert torch.equal(classes, torch.arange(10)) and torch.equal(local, labels)
    classes, local = sample_classes(labels, 10, 0.1)  # more positives than the rate asks
    assert torch.equal(classes, torch.tensor([3, 7])) and torch.equal(
        local, torch.tensor([0, 0, 1])
    )
    with pytest.raises(ValueError, match="rate"):
        sample_classes(labels, 10, 0.0)
    with pytest.raises(ValueError, match="labels"):
        sample_classes(labels, 5, 0.5)


def test_build_head_errors():
    with pytest.raises(ValueError, match="adaface"):
        build_head("sphereface", 8, 5)
    with pytest.raises(ValueError, match="embeddings"):
        build_head("arcface", 8, 5)(torch.randn(2, 7), torch.tensor([0, 1]))
