"""MXNet / insightface RecordIO (.rec + .idx) without mxnet.

Framing (dmlc): each record is uint32 magic 0xCED7230A, uint32 lrec = cflag << 29 | length,
the payload, zero padding to 4 bytes. A payload containing the magic word at a 4-aligned
offset is split there into parts with cflag 1 (first), 2 (middle), 3 (last); the reader puts
the magic back between parts. Payload = IRHeader 'IfQQ' (flag, label, id, id2) + body; with
flag = k > 0 the header's label is 0 and k float32 labels follow. The .idx file holds lines
"key<TAB>offset". insightface layout: key 0 is a meta record with labels (a, b): image keys
1..a-1, then one record per identity (keys a..b-1) whose labels are its [start, end) keys.
"""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from auggen.data.image_codec import decode_image, encode_image, stack_images
from auggen.data.types import LabeledImages
from auggen.infra.files import atomic_path, atomic_write_bytes

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
# Labels are stored as float32, which holds every integer exactly only below 2**24; a larger
# label cannot be told from its neighbours, and is far beyond any face set (WebFace260M has
# ~4M identities). Anything at or above it is a corrupt or foreign record, caught here rather
# than as a huge one-hot / classifier allocation or a bincount error much later.
MAX_LABEL = 1 << 24
READ_CHUNK = 1 << 16  # bytes read per record first (face JPEGs are ~4-10 KB)
SCAN_RELEASE_EVERY = 4096  # header scan: drop the mapped pages after this many records


class IRHeader(NamedTuple):
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack_payload(header: IRHeader, body: bytes = b"") -> bytes:
    """IRHeader + body as insightface's ``pack`` writes it."""
    if header.flag == 0:
        return _HEADER.pack(0, float(header.label), header.id, header.id2) + body
    labels = np.asarray(header.label, dtype="<f4").reshape(-1)
    return _HEADER.pack(len(labels), 0.0, header.id, header.id2) + labels.tobytes() + body


def unpack_payload(payload: bytes, what: str = "record") -> tuple[IRHeader, bytes]:
    if len(payload) < _HEADER.size:
        raise ValueError(f"{what}: payload of {len(payload)} bytes is shorter than its header")
    flag, label, id_, id2 = _HEADER.unpack_from(payload)
    body = payload[_HEADER.size :]
    if flag > 0:
        if len(body) < 4 * flag:
            raise ValueError(f"{what}: header declares {flag} labels, payload holds fewer")
        labels = tuple(float(v) for v in np.frombuffer(body[: 4 * flag], dtype="<f4"))
        return IRHeader(flag, labels, id_, id2), body[4 * flag :]
    return IRHeader(0, label, id_, id2), body


def frame_record(payload: bytes) -> bytes:
    """Payload -> framed bytes, split at every 4-aligned occurrence of the magic word."""
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == _MAGIC_BYTES]
    parts, start = [], 0
    for c in cuts:
        parts.append(payload[start:c])
        start = c + 4
    parts.append(payload[start:])
    out = bytearray()
    for k, part in enumerate(parts):
        if len(parts) == 1:
            cflag = 0
        else:
            cflag = 1 if k == 0 else (3 if k == len(parts) - 1 else 2)
        out += struct.pack("<II", MAGIC, cflag << 29 | len(part)) + part
        out += b"\0" * (-len(part) % 4)
    return bytes(out)


def read_record(buf: bytes | memoryview, offset: int, what: str = "<rec>") -> tuple[bytes, int]:
    """Payload of the record starting at ``offset`` -> (payload, offset of the next record).

    ``what`` names the record in errors (file and key): a wrong offset, a truncated file.
    """
    if not 0 <= offset < len(buf):
        # struct would read a negative offset from the end: refuse it as well.
        raise ValueError(f"{what}: offset {offset} is outside the file ({len(buf)} bytes)")
    parts = []
    while True:
        if offset + 8 > len(buf):
            raise ValueError(f"{what}: truncated record header at byte {offset}")
        magic, lrec = struct.unpack_from("<II", buf, offset)
        if magic != MAGIC:
            hint = " (does the .idx offset point at a record?)" if not parts else ""
            raise ValueError(f"{what}: bad magic {magic:#x} at byte {offset}{hint}")
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        start = offset + 8
        if start + length > len(buf):
            raise ValueError(f"{what}: record at byte {offset} runs past the end of the file")
        parts.append(bytes(buf[start : start + length]))
        offset = start + length + (-length % 4)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts), offset
        if cflag not in (1, 2) or (cflag == 1 and len(parts) > 1):
            raise ValueError(f"{what}: unexpected cflag {cflag} at byte {offset}")


def read_record_at(f, offset: int, what: str = "<rec>") -> bytes:
    """Payload of the record at ``offset`` of the open file ``f``, read with ``pread``."""
    size = os.fstat(f.fileno()).st_size
    if not 0 <= offset < size:
        raise ValueError(f"{what}: offset {offset} is outside the file ({size} bytes)")
    n = READ_CHUNK
    while True:
        chunk = os.pread(f.fileno(), n, offset)
        try:
            return read_record(chunk, 0, what)[0]
        except ValueError as e:
            if len(chunk) == n:  # the record is longer than the chunk: read more
                n *= 4
                continue
            raise ValueError(f"{e} (record at byte {offset})") from None


def release_pages(buf) -> None:
    """Drop a read-only file map's pages from this process (they stay in the page cache):
    a map keeps every page it touched resident and counted in the process's RSS."""
    if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        buf.madvise(mmap.MADV_DONTNEED)


def recordio_paths(prefix_or_path) -> tuple[Path, Path]:
    """(``.rec``, ``.idx``) of a ``.rec``/``.idx`` path, a prefix, or a folder holding
    ``train.rec`` (insightface's layout) or exactly one ``.rec``."""
    p = Path(prefix_or_path)
    if p.is_dir():
        recs = sorted(p.glob("*.rec"))
        p = recs[0] if len(recs) == 1 and not (p / "train.rec").exists() else p / "train.rec"
    if p.suffix in (".rec", ".idx"):
        rec = p.with_suffix(".rec")
    else:
        rec = p.with_name(p.name + ".rec")
    return rec, rec.with_suffix(".idx")


def read_index(idx_path: Path) -> dict[int, int]:
    index = {}
    for n, line in enumerate(idx_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            key, off = line.split("\t") if "\t" in line else line.split()
            index[int(key)] = int(off)
        except ValueError:
            raise ValueError(f"{idx_path}:{n}: expected 'key<TAB>offset', got {line!r}") from None
    return index


class IndexTable:
    """An ``.idx`` as two sorted int64 arrays (keys, offsets): what ``read_index`` gives as a
    dict, at 16 B per record instead of ~150 B of Python objects (the line strings, the dict
    and its ints), which at millions of images is most of a reader's memory."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray):
        if len(keys) > 1 and np.any(keys[1:] < keys[:-1]):  # insightface writes them sorted
            order = np.argsort(keys, kind="stable")
            keys, offsets = keys[order], offsets[order]
        self.keys, self.offsets = keys, offsets

    @classmethod
    def read(cls, idx_path: Path) -> IndexTable:
        text = Path(idx_path).read_bytes()
        lines = text.count(b"\n") + (not text.endswith(b"\n") and len(text) > 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warns (not raises) on a bad token
                flat = np.fromstring(text, dtype=np.int64, sep=" ") if text.strip() else None
        except (ValueError, DeprecationWarning):
            flat = None
        del text  # peak: the file's bytes or the parsed pairs, not both with the table
        if flat is not None and len(flat) == 2 * lines:
            keys, offsets = np.ascontiguousarray(flat[0::2]), np.ascontiguousarray(flat[1::2])
            del flat
            table = cls(keys, offsets)
            if not np.any(table.keys[1:] == table.keys[:-1]):
                return table
        # Blank or malformed lines, duplicate keys: the line-by-line reader (its semantics,
        # its error naming the line).
        index = read_index(Path(idx_path))
        keys = np.fromiter(index.keys(), np.int64, len(index))
        return cls(keys, np.fromiter(index.values(), np.int64, len(index)))

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) of ``keys`` (array-like) in the table."""
        keys = np.asarray(keys, np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        found = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), bool)
        return pos, found

    def __contains__(self, key: int) -> bool:
        return bool(self.find([key])[1][0])

    def __getitem__(self, key: int) -> int:
        pos, found = self.find([key])
        if not found[0]:
            raise KeyError(key)
        return int(self.offsets[pos[0]])


def check_label(value: float, what: str) -> int:
    """A stored float label -> int; ValueError naming ``what`` unless an integer in
    [0, MAX_LABEL) (NaN, negative, fractional or huge labels mean a corrupt record)."""
    v = float(value)
    if not (v.is_integer() and 0 <= v < MAX_LABEL):  # NaN / inf fail is_integer
        raise ValueError(f"{what}: label {value!r} is not an integer in [0, {MAX_LABEL})")
    return int(v)


def _meta_keys(head: IRHeader, n_index: int, what: str) -> tuple[list[int], int]:
    """Record-0 labels (a, b) -> (image keys 1..a-1, identity count b - a), checked first:
    a corrupt a would otherwise build a range of billions of keys."""
    if len(head.label) < 2:
        raise ValueError(f"{what}: meta record has {len(head.label)} label(s), expected (a, b)")
    a, b = head.label[:2]
    ok = all(float(v).is_integer() for v in (a, b)) and 1 <= a <= min(b, n_index)
    if not ok or b - a > MAX_LABEL:
        raise ValueError(
            f"{what}: meta record labels ({a!r}, {b!r}) are not 1 <= a <= b with a <= "
            f"{n_index} (.idx entries) and b - a <= {MAX_LABEL}"
        )
    return list(range(1, int(a))), int(b) - int(a)


class RecordIOScan(NamedTuple):
    """What one pass over the record headers finds: image keys, their labels, class count."""

    rec: Path
    keys: list[int]
    labels: list[int]
    num_classes: int


def scan_recordio(prefix_or_path, max_classes: int | None = None) -> RecordIOScan:
    """Keys and labels of every image record, from the headers alone (no image is decoded).

    Labels come from each image header (label[0] when it holds several); ``max_classes``
    keeps only labels below it. ``num_classes`` = max label + 1, or the identity count of the
    meta record when larger (capped at ``max_classes``). A broken file (bad .idx offset,
    truncated record, label not an integer in [0, ``MAX_LABEL``)) raises ValueError naming
    the file and key. The file is memory-mapped: only the header pages are touched.
    """
    rec, idx = recordio_paths(prefix_or_path)
    if not rec.is_file():
        raise FileNotFoundError(f"{rec}: no such RecordIO file")
    if not idx.is_file():
        raise FileNotFoundError(f"{rec}: no .idx beside it ({idx.name})")
    index = IndexTable.read(idx)
    if rec.stat().st_size == 0:
        raise ValueError(f"{rec}: empty RecordIO file")
    with open(rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        keys = index.keys.tolist()
        num_ids = 0
        if 0 in index:
            what = f"{rec} key 0"
            head, _ = unpack_payload(read_record(buf, index[0], what)[0], what)
            if head.flag > 0:
                keys, num_ids = _meta_keys(head, len(index), what)
        pos, found = index.find(keys)
        if not found.all():
            first = keys[int(np.argmin(found))]
            raise ValueError(f"{idx}: image key {first} missing from the index")
        kept, labels = [], []
        for key, offset in zip(keys, index.offsets[pos].tolist()):
            what = f"{rec} key {key}"
            header, _ = unpack_payload(read_record(buf, offset, what)[0], what)
            if len(kept) % SCAN_RELEASE_EVERY == 0:
                release_pages(buf)
            label = check_label(header.label[0] if header.flag > 0 else header.label, what)
            if max_classes is not None and label >= max_classes:
                continue
            kept.append(key)
            labels.append(label)
    k = max(max(labels) + 1 if labels else 0, num_ids)
    if max_classes is not None:
        k = min(k, max_classes)
    return RecordIOScan(rec, kept, labels, k)


def read_recordio(
    prefix_or_path,
    size: int | None = None,
    on_error: str = "raise",
    max_classes: int | None = None,
) -> LabeledImages:
    """Read an insightface train.rec/.idx (a folder, a prefix, or the .rec path) into memory.

    Small sets only (tests, exports): the pipeline streams through ``RecordIOSource``. Keys,
    labels and classes as ``scan_recordio`` finds them; images decoded to RGB (see
    ``decode_image``) and resized to ``size``. ``on_error="skip"`` skips undecodable images
    and lists them in ``report["skipped"]``; a broken file raises either way.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    scan = scan_recordio(prefix_or_path, max_classes)
    index = read_index(scan.rec.with_suffix(".idx"))
    images, labels, names, skipped = [], [], [], []
    with open(scan.rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for key, label in zip(scan.keys, scan.labels):
            what = f"{scan.rec} key {key}"
            _, body = unpack_payload(read_record(buf, index[key], what)[0], what)
            try:
                images.append(decode_image(body, what, size))
            except ValueError as e:
                if on_error == "raise":
                    raise
                skipped.append((f"{scan.rec}:{key}", str(e)))
                continue
            labels.append(label)
            names.append(str(key))
    x = stack_images(images, size, str(scan.rec))
    y = torch.tensor(labels, dtype=torch.long)
    return LabeledImages(x, y, names, scan.num_classes, {"skipped": skipped})


def _write_insightface(rec: Path, labels: list[int], k: int, bodies, all_ids=True) -> None:
    """Frame the insightface layout: meta record 0 = (a, b), image keys 1..n (``bodies``
    yields each image's (flag, label, body) in label-grouped order), identity records a..b-1,
    each the [start, end) image keys of one identity: of every class 0..k-1 (``all_ids``), or
    only of the classes present (a shard of a larger set: its size then follows its images,
    not the set's class count). The .rec is streamed to a temporary file and renamed into
    place once complete."""
    n = len(labels)
    classes = np.arange(k) if all_ids else np.unique(np.asarray(labels, dtype=np.int64))
    a, b = n + 1, n + 1 + len(classes)
    starts = np.searchsorted(labels, classes) + 1  # image keys are 1-based
    ends = np.searchsorted(labels, classes, side="right") + 1

    def payloads():
        yield 0, pack_payload(IRHeader(2, (a, b), 0, 1))
        for key, (flag, label, body) in enumerate(bodies, start=1):
            yield key, pack_payload(IRHeader(flag, label, key, 0), body)
        for c in range(len(classes)):
            yield (
                a + c,
                pack_payload(IRHeader(2, (float(starts[c]), float(ends[c])), a + c, 0)),
            )

    offset, lines = 0, []
    with atomic_path(rec) as tmp, open(tmp, "wb") as f:  # the .rec last: its .idx is ready
        for key, payload in payloads():
            framed = frame_record(payload)
            f.write(framed)
            lines.append(f"{key}\t{offset}\n")
            offset += len(framed)
        atomic_write_bytes(rec.with_suffix(".idx"), "".join(lines).encode())


def write_recordio(
    prefix_or_path,
    data: LabeledImages,
    fmt: str = "jpeg",
    quality: int = 95,
    write_property: bool = True,
    all_identities: bool = True,
) -> Path:
    """Write ``data`` as insightface train.rec/.idx + ``property``; returns the .rec path.

    Images are written grouped by label (stable), as JPEG quality 95 by default (what
    insightface writes; ``fmt="png"`` for lossless), under the record-0 meta layout, with one
    identity record per class of ``data.num_classes`` or (``all_identities=False``, a shard)
    per class present.
    """
    rec, _ = recordio_paths(prefix_or_path)
    order = torch.argsort(data.labels, stable=True)
    labels = data.labels[order].tolist()
    k = int(data.num_classes)
    bodies = (
        (0, float(y), encode_image(data.images[i], fmt, quality))
        for i, y in zip(order.tolist(), labels)
    )
    _write_insightface(rec, labels, k, bodies, all_identities)
    h, w = data.images.shape[-2:]
    if write_property:
        (rec.parent / "property").write_text(f"{k},{h},{w}")
    return rec


def merge_recordio(parts, prefix_or_path, num_classes: int | None = None) -> Path:
    """One insightface RecordIO from several (records copied, never decoded): e.g. the
    shards of a generated set, for loaders that want one ``train.rec``. Labels must be
    grouped across the parts (non-decreasing in part order), as the pipeline writes them."""
    scans = [scan_recordio(p) for p in parts]
    labels = [y for s in scans for y in s.labels]
    if any(x > y for x, y in zip(labels, labels[1:])):
        raise ValueError("merge_recordio: labels must be non-decreasing across the parts")
    k = int(num_classes or max((s.num_classes for s in scans), default=0))

    def bodies():
        for s in scans:
            index = read_index(s.rec.with_suffix(".idx"))
            with open(s.rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                for key in s.keys:
                    what = f"{s.rec} key {key}"
                    head, body = unpack_payload(read_record(buf, index[key], what)[0], what)
                    yield head.flag, head.label, body

    rec, _ = recordio_paths(prefix_or_path)
    _write_insightface(rec, labels, k, bodies())
    return rec
