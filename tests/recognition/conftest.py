import pytest
import torch

from auggen.data.types import LabeledImages


def toy_faces(num_classes=4, per_class=16, size=32, seed=0) -> LabeledImages:
    """Separable toy set: each class a random 8x8 colour pattern (upsampled) plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, 8, 8, generator=g)
    protos = torch.nn.functional.interpolate(protos, size, mode="nearest")
    imgs = protos.repeat_interleave(per_class, 0)
    imgs = imgs + 0.1 * torch.randn(imgs.shape, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return LabeledImages((imgs.clamp(0, 1) * 255).to(torch.uint8), labels)


@pytest.fixture
def toy():
    return toy_faces()


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every recognition test runs single-threaded (tests/conftest.py)."""
