"""Broken RecordIO files fail at read time with the file, the key and the bad value named."""

import re
import struct

import pytest
import torch

from auggen.data import encode_image, read_recordio
from auggen.data.recordio import MAGIC, MAX_LABEL, IRHeader, frame_record, pack_payload

BODY = encode_image(torch.full((3, 4, 4), 77, dtype=torch.uint8), "png")


def _write(tmp_path, headers, name="t"):
    """Frame IRHeaders (+ a PNG body unless the header has flag > 0) into name.rec/.idx by hand.

    Returns (rec path, byte offset of every key)."""
    rec, lines, offsets = b"", [], []
    for key, h in enumerate(headers):
        offsets.append(len(rec))
        lines.append(f"{key}\t{len(rec)}\n")
        rec += frame_record(pack_payload(h, b"" if h.flag > 0 and key == 0 else BODY))
    (tmp_path / f"{name}.rec").write_bytes(rec)
    (tmp_path / f"{name}.idx").write_text("".join(lines))
    return tmp_path / f"{name}.rec", offsets


def _images(labels):
    """A meta record (a, b) then one image record per label, keys 1..n."""
    n = len(labels)
    meta = IRHeader(2, (float(n + 1), float(n + 2)), 0, 1)
    return [meta] + [IRHeader(0, y, k + 1, 0) for k, y in enumerate(labels)]


@pytest.mark.parametrize(
    "bad, shown",
    [(-3.0, "-3.0"), (float("nan"), "nan"), (2.5, "2.5"), (3e12, "3000000053248.0")],  # float32
)
def test_bad_scalar_label_names_key_file_and_value(tmp_path, bad, shown):
    rec, _ = _write(tmp_path, _images([0.0, 1.0, bad, 0.0]))
    pattern = rf"t\.rec key 3: label {re.escape(shown)} is not an integer in \[0, {MAX_LABEL}\)"
    with pytest.raises(ValueError, match=pattern):
        read_recordio(rec)
    with pytest.raises(ValueError, match="key 3"):  # not an image problem: skip does not hide it
        read_recordio(rec, on_error="skip")


def test_bad_label_in_multi_label_header_and_boundaries(tmp_path):
    headers = _images([0.0, 1.0])
    headers[2] = IRHeader(2, (-1.0, 5.0), 2, 0)  # loaders take label[0]
    rec, _ = _write(tmp_path, headers)
    with pytest.raises(ValueError, match=r"key 2: label -1\.0 "):
        read_recordio(rec)
    top = float(MAX_LABEL - 1)
    d = read_recordio(_write(tmp_path, _images([0.0, top]), "ok")[0], max_classes=5)
    assert d.labels.tolist() == [0]  # the largest allowed label passes, then max_classes cuts
    with pytest.raises(ValueError, match=f"key 2: label {float(MAX_LABEL)!r}"):
        read_recordio(_write(tmp_path, _images([0.0, float(MAX_LABEL)]), "edge")[0])


def test_flag_declares_more_labels_than_stored(tmp_path):
    rec, offsets = _write(tmp_path, _images([0.0]))
    # Replace key 1 by a payload whose flag says 3 float labels but which holds only one.
    payload = struct.pack("<IfQQ", 3, 0.0, 1, 0) + struct.pack("<f", 1.0)
    framed = struct.pack("<II", MAGIC, len(payload)) + payload
    rec.write_bytes(rec.read_bytes()[: offsets[1]] + framed)
    with pytest.raises(ValueError, match=r"t\.rec key 1: header declares 3 labels"):
        read_recordio(rec)


@pytest.mark.parametrize("meta", [(3e12, 3e12 + 5), (2.5, 4.0), (5.0, 3.0), (1000.0, 1001.0)])
def test_bad_meta_record_is_refused_before_allocating(tmp_path, meta):
    headers = _images([0.0, 1.0])
    headers[0] = IRHeader(2, meta, 0, 1)
    rec, _ = _write(tmp_path, headers)
    with pytest.raises(ValueError, match=r"t\.rec key 0: meta record labels"):
        read_recordio(rec)


@pytest.mark.parametrize("offset", [10**9, -8, 4])
def test_bad_idx_offset_names_record_and_file(tmp_path, offset):
    rec, offsets = _write(tmp_path, _images([0.0, 1.0, 0.0]))
    idx = rec.with_suffix(".idx")
    lines = idx.read_text().splitlines()
    lines[2] = f"2\t{offset}"
    idx.write_text("\n".join(lines) + "\n")
    msg = "outside the file" if offset != 4 else "bad magic .*does the .idx offset point"
    with pytest.raises(ValueError, match=rf"t\.rec key 2: .*{msg}"):
        read_recordio(rec)


def test_truncated_record_names_record_and_file(tmp_path):
    rec, offsets = _write(tmp_path, _images([0.0, 1.0, 0.0]))
    raw = rec.read_bytes()
    # Cut inside the last image's body, then right after its 8-byte frame header's first half.
    rec.write_bytes(raw[: offsets[3] + 20])
    with pytest.raises(ValueError, match=r"t\.rec key 3: record at byte \d+ runs past the end"):
        read_recordio(rec)
    rec.write_bytes(raw[: offsets[3] + 4])
    with pytest.raises(ValueError, match=r"t\.rec key 3: truncated record header"):
        read_recordio(rec)
    # A short payload (framed correctly, but smaller than the 24-byte IRHeader).
    rec.write_bytes(raw[: offsets[3]] + struct.pack("<II", MAGIC, 4) + b"abcd")
    with pytest.raises(ValueError, match=r"t\.rec key 3: payload of 4 bytes is shorter"):
        read_recordio(rec)


def test_good_file_still_reads(tmp_path):
    d = read_recordio(_write(tmp_path, _images([1.0, 0.0, 1.0]))[0])
    assert d.labels.tolist() == [1, 0, 1] and d.num_classes == 2
    assert d.images.shape == (3, 3, 4, 4) and int(d.images.float().mean()) == 77
