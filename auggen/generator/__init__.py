"""EDM2 class-conditional generator: magnitude-preserving UNet, training, Heun sampling.

``build_unet(preset, img_resolution, label_dim)`` -> ``Precond``; training in
:mod:`auggen.generator.train` (``GenTrainConfig``, ``train_generator``, ``load_generator``);
sampling in :mod:`auggen.generator.sample` (``sample``, ``sigma_steps``, ``to_uint8``).
"""

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
