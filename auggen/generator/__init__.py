"""EDM2 class-conditional generator: magnitude-preserving UNet, training, Heun sampling."""

from auggen.generator.layers import Block, MPConv, MPFourier, mp_cat, set_backend
from auggen.generator.presets import PRESETS, build_unet, resolve_preset
from auggen.generator.unet import Precond, UNet

__all__ = [
    "PRESETS",
    "Block",
    "MPConv",
    "MPFourier",
    "Precond",
    "UNet",
    "build_unet",
    "mp_cat",
    "resolve_preset",
    "set_backend",
]
