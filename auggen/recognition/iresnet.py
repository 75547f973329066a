"""IResNet backbones (IR18/34/50/100/101) in insightface's ``iresnet`` layout.

Module names and registration order are insightface's, so its state_dicts load as they are:
stem conv1 -> bn1 -> prelu, stages layer1..4 (each with a conv1x1+BN ``downsample`` in its first
block, stride 2), then the head bn2 (BN2d) -> flatten -> dropout -> fc -> features (BN1d whose
weight is frozen at 1). The output is the *unnormalised* embedding.

Two knobs for small CPU models: ``width`` (stem channels; stages use width x [1, 2, 4, 8]) and
``input_size`` (a multiple of 16; four stride-2 stages leave input_size/16 pixels per side).
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-5

# Blocks per stage; insightface calls the 101-layer net "iresnet100" ([3, 13, 30, 3]).
STAGE_DEPTHS = {
    "ir18": (2, 2, 2, 2),
    "ir34": (3, 4, 6, 3),
    "ir50": (3, 4, 14, 3),
    "ir100": (3, 13, 30, 3),
    "ir101": (3, 13, 30, 3),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN, conv3x3, BN, PReLU, conv3x3(stride), BN.

    The stride sits on the second conv; nothing follows the addition.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    def __init__(
        self,
        depths: tuple[int, int, int, int],
        input_size: int = 112,
        embedding_size: int = 512,
        width: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.input_size = input_size
        self.embedding_size = embedding_size
        self.conv1 = _conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.prelu = nn.PReLU(width)
        cin = width
        for i, (depth, cout) in enumerate(zip(depths, channels)):
            self.add_module(f"layer{i + 1}", self._make_stage(cin, cout, depth))
            cin = cout
        self.bn2 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(cin * (input_size // 16) ** 2, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self.reset_parameters()

    @staticmethod
    def _make_stage(cin: int, cout: int, depth: int) -> nn.Sequential:
        # Every stage halves the resolution, stage 1 included, so each has a projection shortcut.
        downsample = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS),
        )
        blocks = [IBasicBlock(cin, cout, stride=2, downsample=downsample)]
        blocks += [IBasicBlock(cout, cout) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        # insightface init: convs N(0, 0.1), BN affine (1, 0); the embedding BN's scale is fixed.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        # fc and the embedding BN run in fp32 even under autocast (as insightface's fp16 mode).
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.features(self.fc(x.float()))


# oneDNN (torch 2.13 CPU) crashes the process (SIGSEGV or abort, no Python error) computing
# the weight gradient of a 1x1 stride-2 convolution on channels-last fp32 input with fewer
# than 16 input channels, from ~56 px (seen at 56, 64, 112; not at <= 55): the projection
# shortcuts of a width-8 iResNet at 112 px. Stride 1, 3x3 kernels, 16+ channels and NCHW all
# train. Measured in subprocesses; tests/recognition/test_memory_format.py keeps it honest.
MIN_CL_SHORTCUT_CHANNELS_CPU = 16


def memory_format_for(
    model: nn.Module, device: torch.device | str, channels_last: bool
) -> tuple[torch.memory_format, str]:
    """The activation layout to train ``model`` in on ``device`` when ``channels_last`` is asked
    for, and why: channels-last unless the device has a known failure for one of the model's
    convolutions (on the CPU: a 1x1 stride-2 conv reading < 16 channels), then NCHW."""
    if not channels_last:
        return torch.contiguous_format, "NCHW (fr.channels_last=false)"
    if torch.device(device).type == "cpu":
        narrow = sorted(
            {
                m.in_channels
                for m in model.modules()
                if isinstance(m, nn.Conv2d)
                and tuple(m.kernel_size) == (1, 1)
                and max(m.stride) > 1
                and m.in_channels < MIN_CL_SHORTCUT_CHANNELS_CPU
            }
        )
        if narrow:
            return torch.contiguous_format, (
                f"NCHW instead of channels-last: on the CPU, oneDNN's weight gradient of a "
                f"1x1 stride-2 conv with {narrow} < {MIN_CL_SHORTCUT_CHANNELS_CPU} input "
                "channels crashes the process in channels-last (use fr.width >= 16 for it)"
            )
    return torch.channels_last, "channels-last (fr.channels_last=true)"
