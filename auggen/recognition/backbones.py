"""The backbone registry: every recogniser the project builds by name, above the two
layouts it builds from (``iresnet``: insightface's; ``adaface_net``: AdaFace's)."""

from __future__ import annotations

from auggen.recognition.adaface_net import ADAFACE_DEPTHS, build_adaface_backbone
from auggen.recognition.iresnet import STAGE_DEPTHS, IResNet


def _builder(name: str):
    def build(input_size: int = 112, embedding_size: int = 512, **kw) -> IResNet:
        return IResNet(STAGE_DEPTHS[name], input_size, embedding_size, **kw)

    build.__name__ = f"build_{name}"
    return build


BACKBONES = {name: _builder(name) for name in STAGE_DEPTHS}


def build_backbone(name: str, input_size: int = 112, embedding_size: int = 512, **kw) -> IResNet:
    """Build ``name`` (one of BACKBONES) for (N, 3, input_size, input_size) inputs in [-1, 1].

    Keyword arguments: ``width`` (stem channels, default 64), ``dropout`` (before fc, default 0).
    ``adaface_ir18/34/50/101`` build AdaFace's layout instead (:mod:`.adaface_net`: BGR input,
    returns ``(unit embedding, norm)``); they load AdaFace weights and are not in BACKBONES.
    """
    if name in ADAFACE_DEPTHS:
        return build_adaface_backbone(name, input_size, embedding_size, **kw)
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)} "
            f"or AdaFace's layout {list(ADAFACE_DEPTHS)}"
        )
    if not isinstance(input_size, int) or input_size < 16 or input_size % 16:
        raise ValueError(f"input_size must be a positive multiple of 16, got {input_size!r}")
    if embedding_size < 1:
        raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
    width = kw.get("width", 64)
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    unknown = set(kw) - {"width", "dropout"}
    if unknown:
        raise TypeError(
            f"build_backbone got unexpected keywords {sorted(unknown)}; expected width, dropout"
        )
    return BACKBONES[name](input_size=input_size, embedding_size=embedding_size, **kw)
