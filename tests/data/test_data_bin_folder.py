import pickle

import numpy as np
import pytest
import torch

from auggen.data import (
    LabeledImages,
    encode_image,
    read_image_folder,
    read_verification_bin,
    write_image_folder,
    write_verification_bin,
)


def _images(n, h=10, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def test_bin_roundtrip_png_and_array_items(tmp_path):
    imgs, issame = _images(6), [True, False, True]
    path = write_verification_bin(tmp_path / "lfw.bin", imgs, issame, fmt="png")
    got, same = read_verification_bin(path)
    assert torch.equal(got, imgs) and same.tolist() == issame
    # Newer builders store cv2.imencode uint8 arrays; a python-2 style pickle (protocol 2).
    arrays = [np.frombuffer(encode_image(x, "png"), np.uint8) for x in imgs]
    with open(tmp_path / "new.bin", "wb") as f:
        pickle.dump((arrays, np.array(issame)), f, protocol=2)
    got, same = read_verification_bin(tmp_path / "new.bin", size=5)
    assert got.shape == (6, 3, 5, 5) and same.tolist() == issame


def test_bin_rejects_code_and_bad_layout(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([Evil()], [True])))
    with pytest.raises(ValueError, match="builtins.print"):
        read_verification_bin(tmp_path / "evil.bin")
    (tmp_path / "odd.bin").write_bytes(pickle.dumps(([b"x"] * 3, [True])))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        read_verification_bin(tmp_path / "odd.bin")
    with pytest.raises(ValueError, match="N=2"):
        write_verification_bin(tmp_path / "w.bin", _images(3), [True, False])


def test_image_folder_roundtrip(tmp_path):
    data = LabeledImages(_images(12), torch.tensor([0, 1, 2, 10] * 3), num_classes=11)
    root = write_image_folder(tmp_path / "ds", data)
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001", "00002", "00010"]
    back = read_image_folder(root)
    order = torch.argsort(data.labels, stable=True)
    assert torch.equal(back.images, data.images[order])
    assert back.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3  # no gap on read
    assert back.report["class_names"][3] == "00010"


def test_image_folder_labels_errors_and_skip(tmp_path):
    data = LabeledImages(_images(6), torch.tensor([0, 0, 1, 1, 2, 2]))
    write_image_folder(tmp_path, data, names=["bob", "alice", "carol"])
    back = read_image_folder(tmp_path)
    assert back.report["class_names"] == ["alice", "bob", "carol"]
    assert back.labels.tolist() == [0, 0, 1, 1, 2, 2]  # alice (old 1) first
    assert torch.equal(back.images[:2], data.images[2:4])
    assert back.names[0] == "alice/000000.png"
    (tmp_path / "bob" / "broken.jpg").write_bytes(b"garbage")
    (tmp_path / "dave").mkdir()
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image_folder(tmp_path)
    (tmp_path / "bob" / "broken.jpg").unlink()
    with pytest.raises(ValueError, match="dave: identity has no readable images"):
        read_image_folder(tmp_path)
    (tmp_path / "bob" / "broken.jpg").write_bytes(b"garbage")
    d = read_image_folder(tmp_path, on_error="skip")
    assert len(d) == 6 and d.num_classes == 3
    assert d.report["empty_identities"] == ["dave"]
    assert [p.endswith("broken.jpg") for p, _ in d.report["skipped"]] == [True]
    (tmp_path / "dave" / "big.png").write_bytes(encode_image(_images(1, 14, 14)[0], "png"))
    with pytest.raises(ValueError, match="different sizes"):
        read_image_folder(tmp_path, on_error="skip")


def _py2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: str items as BINSTRING opcodes."""
    out = b"\x80\x02(]q\x00("
    for b in bins:
        out += b"T" + len(b).to_bytes(4, "little") + b
    out += b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"et."
    return out


def test_bin_reads_python2_pickle(tmp_path):
    imgs, issame = _images(4), [False, True]
    raw = _py2_pickle([encode_image(x, "png") for x in imgs], issame)
    (tmp_path / "py2.bin").write_bytes(raw)
    got, same = read_verification_bin(tmp_path / "py2.bin")
    assert torch.equal(got, imgs) and same.tolist() == issame


def test_tinyface_layout(tmp_path):
    from auggen.data import read_tinyface

    imgs = _images(7)
    files = {
        "Probe": ["3_1.jpg", "5_1.jpg"],
        "Gallery_Match": ["3_2.jpg", "5_2.jpg", "5_3.jpg"],
        "Gallery_Distractor": ["x/1.jpg", "x/2.jpg"],
    }
    k = 0
    for split, names in files.items():
        for name in names:
            (tmp_path / split / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / split / name).write_bytes(encode_image(imgs[k], "png"))
            k += 1
    d = read_tinyface(tmp_path, size=None)
    assert d["probe"].labels.tolist() == [3, 5] and d["gallery"].labels.tolist() == [3, 5, 5]
    assert d["distractor"].labels.tolist() == [-1, -1] and torch.equal(d["probe"].images, imgs[:2])
    assert read_tinyface(tmp_path, size=4)["gallery"].images.shape == (3, 3, 4, 4)
    (tmp_path / "Probe" / "bad_1.jpg").write_bytes(encode_image(imgs[0], "png"))
    with pytest.raises(ValueError, match="bad_1.jpg"):
        read_tinyface(tmp_path)
