import math

import pytest
import torch

from auggen.recognition.augment import AugmentConfig, augment_batch, crop_boxes

ALL_ON = AugmentConfig(crop_prob=1.0, lowres_prob=1.0, photometric_prob=1.0)
ALL_OFF = AugmentConfig(flip=False, crop_prob=0.0, lowres_prob=0.0, photometric_prob=0.0)


def batch(n=6, size=24, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", ["resize", "paste"])
def test_shapes_range_and_determinism(mode):
    cfg = AugmentConfig(crop_prob=1.0, lowres_prob=1.0, photometric_prob=1.0, crop_mode=mode)
    x = batch()
    a, b = augment_batch(x, cfg, gen(1)), augment_batch(x, cfg, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, cfg, gen(2)))
    assert not torch.equal(a, x)
    assert torch.equal(x, batch())  # input untouched


def test_all_off_is_identity_and_draw_count_is_fixed():
    x = batch()
    assert torch.equal(augment_batch(x, ALL_OFF, gen(0)), x)
    g1, g2 = gen(5), gen(5)
    augment_batch(x, ALL_OFF, g1)
    augment_batch(x, ALL_ON, g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_flip_only_flips_about_half():
    x = batch(n=200, size=8)
    y = augment_batch(x, AugmentConfig(crop_prob=0, lowres_prob=0, photometric_prob=0), gen(0))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert torch.all(flipped ^ same)
    assert 70 < flipped.sum() < 130


def test_full_box_crop_is_identity():
    cfg = AugmentConfig(
        flip=False,
        crop_prob=1.0,
        crop_scale=(1, 1),
        crop_ratio=(1, 1),
        lowres_prob=0,
        photometric_prob=0,
    )
    x = batch()
    torch.testing.assert_close(augment_batch(x, cfg, gen(0)), x, atol=1e-5, rtol=0)


def test_resized_crop_matches_integer_crop_upsampling():
    # A box of half size at an integer offset equals bilinear (align_corners=False) upsampling
    # of the cropped pixels.
    from auggen.recognition.augment import _resized_crop

    x = batch(n=1, size=16)
    box = torch.tensor([[4.0, 2.0, 8.0, 8.0]], dtype=torch.float64)
    ref = torch.nn.functional.interpolate(
        x[:, :, 4:12, 2:10], size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(_resized_crop(x, box), ref, atol=1e-5, rtol=0)


def test_crop_boxes_follow_scale_and_ratio():
    cfg = AugmentConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3))
    boxes = crop_boxes(500, 40, 40, cfg, gen(0))
    top, left, h, w = boxes.T
    assert torch.all(top >= 0) and torch.all(left >= 0)
    assert torch.all(top + h <= 40) and torch.all(left + w <= 40)
    assert torch.all(h >= 1) and torch.all(w >= 1)
    area = h * w / 1600
    full = (h == 40) & (w == 40)
    # Rounding moves area and ratio by at most one pixel per side.
    assert torch.all(full | ((area > 0.2 - 0.06) & (area < 1.0 + 1e-9)))
    ratio = w / h
    assert torch.all(full | ((ratio > 0.75 * 0.85) & (ratio < 4 / 3 / 0.85)))


def test_paste_mode_blackens_outside_the_box():
    cfg = AugmentConfig(
        flip=False,
        crop_prob=1.0,
        crop_mode="paste",
        lowres_prob=0,
        photometric_prob=0,
        crop_scale=(0.3, 0.3),
        crop_ratio=(1, 1),
    )
    x = batch(n=4, size=20)
    y = augment_batch(x, cfg, gen(0))
    kept = y == x
    black = y == -1
    assert torch.all(kept | black)
    side = round(math.sqrt(0.3 * 400))
    assert torch.all(kept[:, 0].flatten(1).sum(1) == side * side)


def test_lowres_loses_detail_and_keeps_means():
    cfg = AugmentConfig(
        flip=False, crop_prob=0, lowres_prob=1.0, lowres_scale=(0.25, 0.25), photometric_prob=0
    )
    x = batch(n=4, size=32)
    y = augment_batch(x, cfg, gen(0))
    assert y.std() < 0.5 * x.std()  # uniform noise averaged over 4x4 blocks
    torch.testing.assert_close(y.mean((2, 3)), x.mean((2, 3)), atol=0.03, rtol=0)
    same = AugmentConfig(
        flip=False, crop_prob=0, lowres_prob=1.0, lowres_scale=(1, 1), photometric_prob=0
    )
    torch.testing.assert_close(augment_batch(x, same, gen(0)), x, atol=1e-5, rtol=0)


def test_photometric_matches_per_image_reference():
    from auggen.recognition.augment import _photometric

    x = (batch(n=3) + 1) / 2
    b, c, s = (
        torch.tensor([0.6, 1.0, 1.4]),
        torch.tensor([1.3, 0.7, 1.0]),
        torch.tensor([1.0, 1.5, 0.5]),
    )
    got = _photometric(x, b, c, s)
    for i in range(3):
        img = (x[i] * b[i]).clamp(0, 1)
        gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        img = ((img - gray.mean()) * c[i] + gray.mean()).clamp(0, 1)
        gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        img = ((img - gray) * s[i] + gray).clamp(0, 1)
        torch.testing.assert_close(got[i], img, atol=1e-6, rtol=0)
    ones = torch.ones(3)
    torch.testing.assert_close(_photometric(x, ones, ones, ones), x, atol=1e-6, rtol=0)


def test_config_errors():
    with pytest.raises(ValueError, match="crop_prob"):
        AugmentConfig(crop_prob=1.5)
    with pytest.raises(ValueError, match="crop_mode"):
        AugmentConfig(crop_mode="zoom")
    with pytest.raises(ValueError, match="lowres_scale"):
        AugmentConfig(lowres_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="x must be"):
        augment_batch(torch.zeros(2, 1, 8, 8), AugmentConfig(), gen(0))
