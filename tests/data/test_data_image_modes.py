"""Every PIL mode decodes to the right uint8 RGB: 16-bit, float, palette, alpha, CMYK, EXIF."""

import io
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from auggen.data import decode_image, read_image_folder, read_recordio
from auggen.data.image_codec import image_to_rgb
from auggen.data.recordio import IRHeader, frame_record, pack_payload

H, W = 48, 32  # tall: the EXIF fixture is stored 32 x 48 and tagged to turn upright


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _grad16() -> np.ndarray:
    """A 16-bit gradient (mean about 137.9 * 257), not a multiple of 257 almost anywhere."""
    x = np.linspace(12000, 58900, H * W).reshape(H, W)
    return np.rint(x).astype(np.uint16)


def _rgb_blocks() -> np.ndarray:
    """(32, 48, 3) flat 16x16 colour blocks: JPEG-friendly, and every rotation differs."""
    colours = [
        [(230, 20, 20), (20, 200, 30), (30, 40, 220)],
        [(240, 240, 30), (20, 20, 20), (250, 250, 250)],
    ]
    out = np.zeros((32, 48, 3), np.uint8)
    for i, row in enumerate(colours):
        for j, c in enumerate(row):
            out[16 * i : 16 * i + 16, 16 * j : 16 * j + 16] = c
    return out


def _rgb(expected_grey: np.ndarray) -> np.ndarray:
    return np.repeat(expected_grey[:, :, None], 3, axis=2)


def _exif_jpeg(orientation: int) -> bytes:
    img = Image.fromarray(_rgb_blocks())
    exif = img.getexif()
    exif[274] = orientation  # 274 = Orientation
    return _save(img, "JPEG", quality=95, exif=exif.tobytes())


def _upright(orientation: int) -> np.ndarray:
    # 6: the camera was turned clockwise, the viewer turns it back 90 degrees clockwise;
    # 8: the other way. np.rot90 with k=1 is counterclockwise.
    return np.rot90(_rgb_blocks(), k=-1 if orientation == 6 else 1)


def test_16bit_png_scaled_not_white():
    src = _grad16()
    got = decode_image(_save(Image.fromarray(src), "PNG"), "g16.png")
    assert got.shape == (3, H, W) and got.dtype == torch.uint8
    assert abs(got.float().mean().item() - src.mean() / 257) < 1
    expect = np.rint(src / 257).astype(np.uint8)
    np.testing.assert_array_equal(got.numpy(), np.stack([expect] * 3))


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_16bit_tiff_variants(mode):
    src = _grad16()
    if mode == "I;16B":
        img = Image.frombytes("I;16B", (W, H), src.astype(">u2").tobytes())
    else:
        img = Image.fromarray(src.astype(np.int32))
    raw = _save(img, "TIFF")
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == mode  # the fixture really exercises that mode
    got = decode_image(raw)
    np.testing.assert_array_equal(got[0].numpy(), np.rint(src / 257).astype(np.uint8))


def test_32bit_int_outside_16bit_range_raises():
    img = Image.fromarray(np.full((4, 4), 70000, np.int32))
    with pytest.raises(ValueError, match=r"big\.tif.*outside the 16-bit range"):
        decode_image(_save(img, "TIFF"), "big.tif")


def test_float_modes():
    x = np.linspace(-20, 300, H * W, dtype=np.float32).reshape(H, W)
    got = decode_image(_save(Image.fromarray(x), "TIFF"))
    np.testing.assert_array_equal(got[1].numpy(), np.clip(np.rint(x), 0, 255).astype(np.uint8))
    unit = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    got = decode_image(_save(Image.fromarray(unit), "TIFF"))
    np.testing.assert_array_equal(got[2].numpy(), np.rint(unit * 255).astype(np.uint8))
    unit[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        decode_image(_save(Image.fromarray(unit), "TIFF"), "nan.tif")


def _palette_image():
    idx = (np.arange(H * W).reshape(H, W) // 7 % 4).astype(np.uint8)
    pal = [200, 10, 10, 10, 180, 10, 10, 10, 160, 90, 90, 90]
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette(pal + [0] * (768 - len(pal)))
    expect = np.array(pal, np.uint8).reshape(4, 3)[idx]
    return img, expect


def test_palette_with_and_without_transparency():
    img, expect = _palette_image()
    np.testing.assert_array_equal(decode_image(_save(img, "PNG")).permute(1, 2, 0).numpy(), expect)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns on a direct P-with-transparency -> RGB
        got = decode_image(_save(img, "PNG", transparency=bytes([255, 0, 255, 128])))
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), expect)  # alpha dropped


def test_alpha_modes_drop_alpha():
    rgb = _rgb_blocks()
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1))
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    got = decode_image(_save(rgba, "PNG")).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, rgb)
    grey = rgb[:, :, 0]
    la = Image.fromarray(np.dstack([grey, alpha]), "LA")
    np.testing.assert_array_equal(decode_image(_save(la, "PNG"))[2].numpy(), grey)
    img, expect = _palette_image()
    pa = img.convert("PA")
    raw = _save(pa, "TIFF")
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == "PA"
    np.testing.assert_array_equal(decode_image(raw).permute(1, 2, 0).numpy(), expect)


def test_bilevel_grey_and_cmyk():
    bits = np.arange(H * W).reshape(H, W) % 3 == 0
    got = decode_image(_save(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(got.numpy(), np.stack([bits * np.uint8(255)] * 3))
    grey = (np.arange(H * W).reshape(H, W) % 251).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(_save(Image.fromarray(grey), "PNG")), _chw(grey))
    # K = 0, so every CMYK -> RGB formula agrees: RGB = 255 - CMY.
    cmy = _rgb_blocks()
    cmyk = Image.fromarray(np.dstack([cmy, np.zeros((32, 48), np.uint8)]), "CMYK")
    got = decode_image(_save(cmyk, "JPEG", quality=95)).permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - (255 - cmy.astype(int))).mean() < 3


def _chw(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(_rgb(grey)).permute(2, 0, 1)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_applied(orientation):
    got = decode_image(_exif_jpeg(orientation)).permute(1, 2, 0).numpy().astype(int)
    assert got.shape == (H, W, 3)  # stored 32 x 48, shown 48 x 32
    assert np.abs(got - _upright(orientation)).mean() < 6  # JPEG chroma bleeds at edges
    wrong = _upright(8 if orientation == 6 else 6)
    assert np.abs(got - wrong).mean() > 50  # the turn goes the right way
    plain = Image.fromarray(_rgb_blocks())
    np.testing.assert_array_equal(image_to_rgb(plain), _rgb_blocks())  # no EXIF: untouched


def _fixtures() -> dict[str, tuple[bytes, np.ndarray, float]]:
    """name -> (encoded bytes, expected (H, W, 3), mean-abs tolerance); all decode to H x W."""
    src16 = _grad16()
    pal, pal_rgb = _palette_image()
    return {
        "g16.png": (_save(Image.fromarray(src16), "PNG"), _rgb(np.rint(src16 / 257)), 0),
        "pal.png": (_save(pal, "PNG", transparency=2), pal_rgb, 0),
        "exif.jpg": (_exif_jpeg(6), _upright(6), 6),
        "cmyk.jpg": (
            _save(
                Image.fromarray(np.dstack([_upright(6), np.zeros((H, W), np.uint8)]), "CMYK"),
                "JPEG",
                quality=95,
            ),
            255 - _upright(6).astype(int),
            6,
        ),
    }


def _check(images: torch.Tensor, names: list[str], fixtures) -> None:
    for img, name in zip(images, names):
        _, expect, tol = fixtures[name]
        err = np.abs(img.permute(1, 2, 0).numpy().astype(int) - expect.astype(int)).mean()
        assert err <= tol, (name, err)


def test_folder_reader_decodes_every_mode(tmp_path):
    fx = _fixtures()
    for k, (name, (raw, _, _)) in enumerate(fx.items()):
        (tmp_path / f"id{k}").mkdir()
        (tmp_path / f"id{k}" / name).write_bytes(raw)
    d = read_image_folder(tmp_path, workers=2)
    assert d.images.shape == (len(fx), 3, H, W)
    _check(d.images, [n.split("/")[1] for n in d.names], fx)


def test_recordio_reader_decodes_every_mode(tmp_path):
    fx = _fixtures()
    rec, lines, off = b"", [], 0
    for key, (raw, _, _) in enumerate(fx.values()):
        framed = frame_record(pack_payload(IRHeader(0, float(key), key, 0), raw))
        lines.append(f"{key}\t{off}\n")
        rec, off = rec + framed, off + len(framed)
    assert struct.unpack_from("<IfQQ", rec, 8)[0] == 0  # key 0 is an image, not a meta record
    (tmp_path / "m.rec").write_bytes(rec)
    (tmp_path / "m.idx").write_text("".join(lines))
    d = read_recordio(tmp_path / "m.rec")
    assert d.labels.tolist() == list(range(len(fx))) and d.images.shape[-2:] == (H, W)
    _check(d.images, [list(fx)[int(k)] for k in d.names], fx)


def test_folder_on_error_skip_lists_corrupt_and_unscalable(tmp_path):
    fx = _fixtures()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "g16.png").write_bytes(fx["g16.png"][0])
    (tmp_path / "a" / "cut.png").write_bytes(fx["g16.png"][0][:200])  # truncated 16-bit PNG
    (tmp_path / "a" / "cut.jpg").write_bytes(fx["exif.jpg"][0][:-300])
    big = Image.fromarray(np.full((H, W), 1 << 20, np.int32))
    (tmp_path / "a" / "big.tif").write_bytes(_save(big, "TIFF"))
    with pytest.raises(ValueError, match=r"big\.tif.*outside the 16-bit range"):
        read_image_folder(tmp_path)
    d = read_image_folder(tmp_path, on_error="skip")
    assert d.names == ["a/g16.png"]
    skipped = sorted(p.rsplit("/", 1)[1] for p, _ in d.report["skipped"])
    assert skipped == ["big.tif", "cut.jpg", "cut.png"]
