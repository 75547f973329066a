"""IR backbones in AdaFace's ``net.py`` layout (``Backbone``, mode "ir"), so its ``.ckpt`` weights
load as they are (FACE_RECOGNITION.md section 2).

The residual branch equals insightface's (BN, conv3x3, BN, PReLU, conv3x3 with the stride, BN),
but the layout differs:

- modules are ``input_layer`` (conv, BN, PReLU), then ``output_layer``, then ``body`` (one flat
  Sequential of blocks), registered in that order so the state_dict order matches;
- a block registers ``shortcut_layer`` before ``res_layer``; where in == out channels the
  shortcut is ``MaxPool2d(1, stride)`` (plain subsampling, no parameters), so stage 1 has no
  projection;
- the head is BN2d, Dropout(0.4), flatten, Linear, BatchNorm1d(affine=False), and the forward
  returns ``(x / ||x||, ||x||)`` with the norm shaped (N, 1);
- AdaFace models were trained on **BGR** input in [-1, 1] (``load_pretrained`` flips RGB).

Names: ``adaface_ir18/34/50/101`` (``build_backbone`` accepts them too). ``width`` and
``input_size`` are the same small-model knobs as in :mod:`auggen.recognition.iresnet`.
"""

from __future__ import annotations

import torch
from torch import nn

from auggen.recognition.iresnet import BN_EPS, STAGE_DEPTHS


class BasicBlockIR(nn.Module):
    """AdaFace ``BasicBlockIR``: shortcut (max-pool subsampling or conv1x1+BN), then residual."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin, eps=BN_EPS),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """(N, 3, S, S) BGR in [-1, 1] -> (unit embeddings (N, D), norms (N, 1))."""

    def __init__(
        self,
        depths: tuple[int, int, int, int],
        input_size: int = 112,
        embedding_size: int = 512,
        width: int = 64,
        dropout: float = 0.4,
    ):
        super().__init__()
        self.depths = tuple(depths)
        self.input_size = input_size
        self.embedding_size = embedding_size
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width, eps=BN_EPS),
            nn.PReLU(width),
        )
        # Registered before body, as in AdaFace, so state_dict keys come in its order.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(channels[-1], eps=BN_EPS),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(channels[-1] * (input_size // 16) ** 2, embedding_size),
            nn.BatchNorm1d(embedding_size, eps=BN_EPS, affine=False),
        )
        blocks, cin = [], width
        for depth, cout in zip(depths, channels):
            blocks.append(BasicBlockIR(cin, cout, 2))
            blocks += [BasicBlockIR(cout, cout, 1) for _ in range(depth - 1)]
            cin = cout
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        return x / norm, norm


ADAFACE_DEPTHS = {
    "adaface_ir18": STAGE_DEPTHS["ir18"],
    "adaface_ir34": STAGE_DEPTHS["ir34"],
    "adaface_ir50": STAGE_DEPTHS["ir50"],
    "adaface_ir101": STAGE_DEPTHS["ir101"],
}


def build_adaface_backbone(
    name: str, input_size: int = 112, embedding_size: int = 512, width: int = 64, dropout=0.4
) -> AdaFaceIR:
    """Build ``name`` (one of ADAFACE_DEPTHS) in AdaFace's layout."""
    if name not in ADAFACE_DEPTHS:
        raise ValueError(
            f"unknown AdaFace backbone {name!r}; expected one of {list(ADAFACE_DEPTHS)}"
        )
    if not isinstance(input_size, int) or input_size < 16 or input_size % 16:
        raise ValueError(f"input_size must be a positive multiple of 16, got {input_size!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return AdaFaceIR(ADAFACE_DEPTHS[name], input_size, embedding_size, width, dropout)
