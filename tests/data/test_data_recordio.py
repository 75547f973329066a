import struct

import numpy as np
import pytest
import torch

from auggen.data import LabeledImages, read_recordio, write_recordio
from auggen.data.recordio import (
    MAGIC,
    IRHeader,
    frame_record,
    pack_payload,
    read_record,
    unpack_payload,
)


def _data(n=7, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 12, 10), dtype=torch.uint8, generator=g)
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1][:n])
    return LabeledImages(images, labels, num_classes=k)


def test_header_roundtrip_and_multi_label():
    h = IRHeader(0, 3.0, 5, 0)
    assert unpack_payload(pack_payload(h, b"body")) == (h, b"body")
    h2, body = unpack_payload(pack_payload(IRHeader(2, (4.0, 9.0), 0, 1)))
    assert h2 == IRHeader(2, (4.0, 9.0), 0, 1) and body == b""
    raw = pack_payload(IRHeader(2, (4.0, 9.0), 0, 1))
    assert struct.unpack_from("<IfQQ", raw) == (2, 0.0, 0, 1)  # label field written as 0


def test_split_record_hand_assembled():
    magic = struct.pack("<I", MAGIC)
    # Magic at aligned offsets 4 and 16 (split there) and at offset 9 (not aligned: kept).
    payload = b"abcd" + magic + b"e" + magic + b"fgh" + magic + b"xyz"
    assert payload[9:13] == magic and payload[16:20] == magic
    parts = [b"abcd", b"e" + magic + b"fgh", b"xyz"]
    hand = b""
    for cflag, part in zip((1, 2, 3), parts):
        hand += struct.pack("<II", MAGIC, cflag << 29 | len(part)) + part
        hand += b"\0" * (-len(part) % 4)
    whole = struct.pack("<II", MAGIC, 5) + b"hello" + b"\0\0\0"
    stream = hand + whole
    got, nxt = read_record(stream, 0)
    assert got == payload and nxt == len(hand)
    assert read_record(stream, nxt) == (b"hello", len(stream))
    assert frame_record(payload) == hand  # our writer frames it the same way
    with pytest.raises(ValueError, match="magic"):
        read_record(b"\0" * 16, 0)
    with pytest.raises(ValueError, match="past the end"):
        read_record(whole[:10], 0)


@pytest.mark.parametrize("as_prefix", [True, False])
def test_write_read_png_exact_and_layout(tmp_path, as_prefix):
    data = _data()
    target = tmp_path / "train" if as_prefix else tmp_path
    rec = write_recordio(target, data, fmt="png")
    assert rec.name == "train.rec" and (tmp_path / "property").read_text() == "3,12,10"
    back = read_recordio(target)
    order = torch.argsort(data.labels, stable=True)
    assert torch.equal(back.images, data.images[order])
    assert torch.equal(back.labels, data.labels[order]) and back.num_classes == 3
    # insightface layout: meta record, image keys 1..7, identity records 8..10.
    buf = rec.read_bytes()
    idx = dict(
        tuple(map(int, line.split("\t")))
        for line in rec.with_suffix(".idx").read_text().split("\n")
        if line
    )
    head, _ = unpack_payload(read_record(buf, idx[0])[0])
    assert head == IRHeader(2, (8.0, 11.0), 0, 1)
    ranges = [unpack_payload(read_record(buf, idx[k])[0])[0].label for k in (8, 9, 10)]
    assert ranges == [(1.0, 3.0), (3.0, 5.0), (5.0, 8.0)]
    first_two = read_recordio(target, max_classes=2)
    assert first_two.labels.tolist() == [0, 0, 1, 1] and first_two.num_classes == 2


def test_jpeg_roundtrip_and_resize(tmp_path):
    x = torch.linspace(0, 255, 16).round().to(torch.uint8)
    smooth = (x[None, :, None] + x[None, None, :] * 0).expand(4, 3, 16, 16).contiguous()
    data = LabeledImages(smooth, torch.tensor([0, 0, 1, 1]))
    write_recordio(tmp_path / "train.rec", data)
    back = read_recordio(tmp_path / "train.rec")
    assert (back.images.float() - smooth.float()).abs().mean() < 2.0
    assert read_recordio(tmp_path, size=8).images.shape == (4, 3, 8, 8)


def test_no_meta_record_corrupt_image_and_missing_idx(tmp_path):
    # A bare .rec without the record-0 convention: every key in .idx is an image.
    from auggen.data import encode_image

    img = torch.full((3, 4, 4), 9, dtype=torch.uint8)
    payloads = [
        # id = MAGIC puts the magic word at aligned offset 8 -> a split record.
        pack_payload(IRHeader(0, 4.0, MAGIC, 0), encode_image(img, "png")),
        pack_payload(IRHeader(2, (1.0, 7.0), 1, 0), encode_image(img, "png")),
        pack_payload(IRHeader(0, 0.0, 2, 0), b"not an image"),
    ]
    rec, lines, off = b"", [], 0
    for k, p in enumerate(payloads):
        lines.append(f"{k}\t{off}\n")
        framed = frame_record(p)
        rec += framed
        off += len(framed)
    assert struct.unpack_from("<I", rec, 4)[0] >> 29 == 1
    (tmp_path / "x.rec").write_bytes(rec)
    (tmp_path / "x.idx").write_text("".join(lines))
    with pytest.raises(ValueError, match="key 2"):
        read_recordio(tmp_path / "x")
    d = read_recordio(tmp_path / "x.rec", on_error="skip")
    assert d.labels.tolist() == [4, 1] and len(d.report["skipped"]) == 1
    (tmp_path / "x.idx").unlink()
    with pytest.raises(FileNotFoundError, match="no .idx"):
        read_recordio(tmp_path / "x.rec")
    np.testing.assert_array_equal(d.images[0].numpy(), img.numpy())
