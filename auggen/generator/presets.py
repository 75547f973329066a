"""Named generator sizes and ``build_unet``.

Attention resolutions are given relative to the image (``attn_divisors``: attention at
``img_resolution // d``), so EDM2's 16 and 8 at 64 px become 28 and 14 at 112 px. An explicit
``attn_resolutions=`` override wins.
"""

from __future__ import annotations

from auggen.generator.unet import Precond

_EDM2 = dict(channel_mult=(1, 2, 3, 4), num_blocks=3, attn_divisors=(4, 8))

PRESETS: dict[str, dict] = {
    # EDM2 ImageNet-64 sizes (train_edm2.py): only model_channels and dropout differ.
    "edm2-img64-xs": dict(_EDM2, model_channels=128, dropout=0.0),
    "edm2-img64-s": dict(_EDM2, model_channels=192, dropout=0.0),
    "edm2-img64-m": dict(_EDM2, model_channels=256, dropout=0.10),
    "edm2-img64-l": dict(_EDM2, model_channels=320, dropout=0.10),
    "edm2-img64-xl": dict(_EDM2, model_channels=384, dropout=0.10),
    # CPU sizes: ~1.2 M params at 32 px; attention (one 64-channel head) at the lowest level.
    "tiny": dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=1, attn_divisors=(4,)),
    # Pipeline tests: 16-32 channels, so attention is off (fewer than 64 channels per head).
    "micro": dict(model_channels=16, channel_mult=(1, 2, 2), num_blocks=1, attn_divisors=()),
}


def resolve_preset(preset: str, img_resolution: int, **overrides) -> dict:
    """The UNet/Precond keyword arguments a preset gives at ``img_resolution``."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    kw = dict(PRESETS[preset])
    kw.update(overrides)
    divisors = kw.pop("attn_divisors", ())
    if "attn_resolutions" not in kw:
        kw["attn_resolutions"] = tuple(img_resolution // d for d in divisors)
    kw["attn_resolutions"] = tuple(int(r) for r in kw["attn_resolutions"])
    kw["channel_mult"] = tuple(kw["channel_mult"])
    return kw


def build_unet(
    preset: str, img_resolution: int, label_dim: int, img_channels: int = 3, **overrides
) -> Precond:
    """Build a preconditioned EDM2 UNet; ``overrides`` replace preset / UNet / Precond kwargs."""
    if not isinstance(img_resolution, int) or img_resolution <= 0:
        raise ValueError(f"img_resolution must be a positive int, got {img_resolution!r}")
    if not isinstance(label_dim, int) or label_dim < 0:
        raise ValueError(f"label_dim must be an int >= 0, got {label_dim!r}")
    kw = resolve_preset(preset, img_resolution, **overrides)
    levels = len(kw["channel_mult"])
    if img_resolution % (1 << (levels - 1)):
        raise ValueError(
            f"img_resolution must be divisible by {1 << (levels - 1)} for {levels} levels "
            f"(preset {preset!r}), got {img_resolution}"
        )
    return Precond(img_resolution, img_channels, label_dim, **kw)
