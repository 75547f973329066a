"""The FR memory-format policy: on the CPU it never picks a layout known to crash the process
(oneDNN's channels-last weight gradient of a narrow 1x1 stride-2 conv), and what it picks
trains. Each training run is a subprocess, so a native crash fails the test instead of
killing the test session."""

import subprocess
import sys
import textwrap

import pytest
import torch

from auggen.recognition.backbones import build_backbone
from auggen.recognition.iresnet import MIN_CL_SHORTCUT_CHANNELS_CPU, memory_format_for

TRAIN_ONE_STEP = """
import torch
from auggen.recognition.backbones import build_backbone
from auggen.recognition.iresnet import memory_format_for
torch.manual_seed(0)
torch.set_num_threads(1)
model = build_backbone("ir18", embedding_size=64, width={width})
fmt, why = memory_format_for(model, "cpu", channels_last=True)
model = model.to(memory_format=fmt)
x = torch.randn(2, 3, 112, 112).contiguous(memory_format=fmt)
model(x).sum().backward()
grads = [p.grad for p in model.parameters() if p.requires_grad]
assert all(g is not None and bool(g.isfinite().all()) for g in grads)
print("trained", fmt == torch.channels_last)
"""


def _train_in_subprocess(width: int) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN_ONE_STEP.format(width=width))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"width {width}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout.strip()


@pytest.mark.parametrize("width, expect_cl", [(8, False), (16, True)])
def test_the_policys_choice_trains_at_112_px(width, expect_cl):
    assert _train_in_subprocess(width) == f"trained {expect_cl}"


def test_policy_per_device_and_width():
    narrow = build_backbone("ir18", embedding_size=8, width=8, input_size=16)
    wide = build_backbone(
        "ir18", embedding_size=8, width=MIN_CL_SHORTCUT_CHANNELS_CPU, input_size=16
    )
    fmt, why = memory_format_for(narrow, "cpu", channels_last=True)
    assert fmt == torch.contiguous_format and "1x1 stride-2" in why and "[8]" in why
    assert memory_format_for(wide, "cpu", True)[0] == torch.channels_last
    assert memory_format_for(narrow, "cuda", True)[0] == torch.channels_last
    assert memory_format_for(wide, "cpu", False)[0] == torch.contiguous_format
    # AdaFace's layout: its projection shortcuts are 1x1 stride-2 convs too
    ada = build_backbone("adaface_ir18", embedding_size=8, width=8, input_size=16)
    assert memory_format_for(ada, "cpu", True)[0] == torch.contiguous_format
