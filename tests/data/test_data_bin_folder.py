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
