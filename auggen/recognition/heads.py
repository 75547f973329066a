"""Margin classification heads: AdaFace, ArcFace, CosFace.

Interface: ``head(embeddings, labels, classes=None) -> logits``. ``embeddings`` are the
backbone's *unnormalised* (B, D) outputs; the head L2-normalises them and (AdaFace) reads the
feature norms, detached. ``classes`` optionally restricts the logits to those kernel columns
(partial FC, see partial_fc.py); ``labels`` then index into ``classes``.

All three share one target-logit formula (FACE_RECOGNITION.md section 3, step 7):
    target:  s * [cos(clip(theta_y + m_arc, eps, pi - eps)) - m_add]
    others:  s * cos(theta_j),  cos clamped to [-1 + eps, 1 - eps]
with ArcFace m_arc = m, m_add = 0; CosFace m_arc = 0, m_add = m; AdaFace m_arc = -m*z,
m_add = m*(1 + z) where z is the per-sample norm-adaptive margin scaler in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    """Normalised-kernel classifier; subclasses supply the per-sample margins."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, eps: float = 1e-3):
        super().__init__()
        if embedding_size < 1 or num_classes < 1:
            raise ValueError(
                f"embedding_size and num_classes must be >= 1, got {embedding_size}, {num_classes}"
            )
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.s = s
        self.eps = eps
        # One column per class (D, C), as AdaFace stores it; columns are normalised in forward.
        self.kernel = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.kernel, 0.0, 0.01)

    def margins(self, norms: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(m_arc, m_add): angular and additive target margins, scalars or (B,) tensors."""
        raise NotImplementedError

    def cosine(self, embeddings: torch.Tensor, classes: torch.Tensor | None = None):
        kernel = self.kernel if classes is None else self.kernel[:, classes]
        cos = F.normalize(embeddings, dim=1) @ F.normalize(kernel, dim=0)
        return cos.clamp(-1 + self.eps, 1 - self.eps)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings must be (B, {self.embedding_size}), got {tuple(embeddings.shape)}"
            )
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
        embeddings = embeddings.float()
        cos = self.cosine(embeddings, classes)
        m_arc, m_add = self.margins(embeddings.detach().norm(dim=1))
        labels = labels.long().view(-1, 1)
        cos_y = cos.gather(1, labels).squeeze(1)
        theta = torch.acos(cos_y) + m_arc
        target = torch.cos(theta.clamp(self.eps, math.pi - self.eps)) - m_add
        return self.s * cos.scatter(1, labels, target.unsqueeze(1).to(cos.dtype))


class ArcFace(MarginHead):
    """Additive angular margin: s*cos(theta_y + m)."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        m: float = 0.5,
        s: float = 64.0,
        eps: float = 1e-3,
    ):
        super().__init__(embedding_size, num_classes, s, eps)
        self.m = m

    def margins(self, norms):
        return self.m, 0.0


class CosFace(MarginHead):
    """Additive cosine margin: s*(cos(theta_y) - m)."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        m: float = 0.35,
        s: float = 64.0,
        eps: float = 1e-3,
    ):
        super().__init__(embedding_size, num_classes, s, eps)
        self.m = m

    def margins(self, norms):
        return 0.0, self.m


class AdaFace(MarginHead):
    """Margin adapted to image quality through the feature norm (Kim et al., CVPR 2022).

    z = clip(h * (n - mu) / (sigma + eps), -1, 1) with n = clip(||f||, 0.001, 100) detached and
    (mu, sigma) EMAs of the batch mean and unbiased std of n, updated with weight ``t_alpha`` on
    every forward call *before* use. ``t_alpha`` defaults to 0.01, the value the released
    training scripts use (the class default in AdaFace's head.py is 1.0). A batch of one sample
    has no std; it leaves the statistics unchanged.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        m: float = 0.4,
        h: float = 0.333,
        s: float = 64.0,
        t_alpha: float = 0.01,
        eps: float = 1e-3,
    ):
        super().__init__(embedding_size, num_classes, s, eps)
        if not 0.0 <= t_alpha <= 1.0:
            raise ValueError(f"t_alpha must be in [0, 1], got {t_alpha}")
        self.m, self.h, self.t_alpha = m, h, t_alpha
        # Names, shapes and order as AdaFace's head.py, so its head state_dicts load (t is unused).
        self.register_buffer("t", torch.zeros(1))
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        n = norms.detach().float().clamp(0.001, 100.0)
        if n.numel() > 1:
            with torch.no_grad():
                a = self.t_alpha
                self.batch_mean.copy_(a * n.mean() + (1 - a) * self.batch_mean)
                self.batch_std.copy_(a * n.std(unbiased=True) + (1 - a) * self.batch_std)
        z = self.h * (n - self.batch_mean) / (self.batch_std + self.eps)
        return z.clamp(-1.0, 1.0)

    def margins(self, norms):
        z = self.margin_scaler(norms)
        return -self.m * z, self.m * (1.0 + z)


HEADS = {"adaface": AdaFace, "arcface": ArcFace, "cosface": CosFace}


def build_head(name: str, embedding_size: int, num_classes: int, **kw) -> MarginHead:
    """Build a margin head; ``kw`` are the head's constants (m, s, h, t_alpha, eps)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; expected one of {sorted(HEADS)}")
    return HEADS[name](embedding_size, num_classes, **kw)
