import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auggen.eval import extract_embeddings, make_verification_pairs, pair_scores


class TinyNet(nn.Module):
    def __init__(self, as_tuple=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 6)
        self.as_tuple = as_tuple

    def forward(self, x):
        y = self.fc(self.bn(self.conv(x)).flatten(1))
        return (F.normalize(y), y.norm(dim=1, keepdim=True)) if self.as_tuple else y


def reference(model, images, flip):
    x = (images.double() / 255 - 0.5) / 0.5
    m = model.double().eval()
    e = m(x) + (m(x.flip(-1)) if flip else 0)
    model.float()
    return F.normalize(e, dim=1).float()


@pytest.mark.parametrize("flip", [True, False])
def test_extract_embeddings_matches_reference(flip):
    torch.manual_seed(0)
    model = TinyNet()
    model.bn.running_mean.uniform_(-1, 1)  # eval mode must use these, not batch statistics
    images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8)
    model.train()
    got = extract_embeddings(model, images, batch_size=4, flip=flip)
    assert model.training  # mode restored
    with torch.no_grad():
        want = reference(model, images, flip)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.shape == (11, 6) and torch.allclose(got.norm(dim=1), torch.ones(11))


def test_extract_embeddings_tuple_output_and_resize():
    torch.manual_seed(1)
    model = TinyNet(as_tuple=True).eval()
    images = torch.randint(0, 256, (5, 3, 20, 16), dtype=torch.uint8)
    got = extract_embeddings(model, images, input_size=8)
    from auggen.data import resize_images

    small = resize_images(images, 8)
    x = (small.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        want = F.normalize(model(x)[0] + model(x.flip(-1))[0], dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        extract_embeddings(model, images.float())


def test_pair_scores_are_cosines():
    feats = F.normalize(torch.randn(10, 5), dim=1)
    a, b, _ = make_verification_pairs(torch.arange(5).repeat(2), 6, seed=0)
    want = torch.stack([feats[i] @ feats[j] for i, j in zip(a.tolist(), b.tolist())])
    torch.testing.assert_close(pair_scores(feats, a, b), want)


@pytest.mark.gpu
def test_cuda_embeddings_and_search_match_cpu():
    from auggen.eval import nearest_neighbor

    torch.manual_seed(0)
    model = TinyNet()
    images = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8)
    cpu = extract_embeddings(model, images, batch_size=4)
    gpu = extract_embeddings(model, images, batch_size=4, device="cuda")
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
    q, db = torch.randn(50, 16), torch.randn(300, 16)
    assert torch.equal(nearest_neighbor(q.cuda(), db.cuda()), nearest_neighbor(q, db, "torch"))


def test_embed_source_matches_one_call_per_batch():
    """The one whole-set embedder: same rows as embedding each batch by hand, in order, with
    or without decode threads, into a given array, and at chosen indices."""
    from auggen.data.source import TensorSource
    from auggen.data.types import LabeledImages
    from auggen.eval.embeddings import embed_source

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (23, 3, 8, 8), generator=g, dtype=torch.uint8)
    src = TensorSource(LabeledImages(images, torch.zeros(23, dtype=torch.long), []))
    w = torch.randn(3 * 8 * 8, 5, generator=g)
    calls = []

    def embed(x):
        calls.append(len(x))
        return torch.nn.functional.normalize(x.float().flatten(1) @ w, dim=1)

    ref = torch.cat([embed(images[lo : lo + 4]) for lo in range(0, 23, 4)])
    calls.clear()
    assert torch.equal(embed_source(embed, src, 4), ref) and calls == [4] * 5 + [3]
    assert torch.equal(embed_source(embed, src, 4, workers=2), ref)
    out = np.zeros((23, 5), np.float32)
    assert embed_source(embed, src, 4, out=out) is out and np.array_equal(out, ref.numpy())
    pick = np.array([22, 0, 5, 5, 9])
    assert torch.equal(embed_source(embed, src, 2, pick), ref[pick])
    empty = TensorSource(LabeledImages(images[:0], torch.zeros(0, dtype=torch.long), []))
    assert embed_source(embed, empty, 4).numel() == 0
