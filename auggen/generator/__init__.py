"""EDM2 class-conditional generator: magnitude-preserving UNet, training, Heun sampling.

``build_unet(preset, img_resolution, label_dim)`` -> ``Precond``; training in
:mod:`auggen.generator.train` (``GenTrainConfig``, ``train_generator``, ``load_generator``);
sampling in :mod:`auggen.generator.sample` (``sample``, ``sigma_steps``, ``to_uint8``);
``load_edm2_pickle`` reads an NVlabs edm2 snapshot without running it and
``save_generator_safetensors`` writes any generator as a folder ``load_generator`` reads.
"""

from auggen.generator.edm2_pickle import load_edm2_pickle
from auggen.generator.export import save_generator_safetensors
from auggen.generator.layers import Block, MPConv, MPFourier, mp_cat, set_backend
from auggen.generator.presets import PRESETS, build_unet, resolve_preset
from auggen.generator.unet import Precond, UNet, set_memory_format

__all__ = [
    "PRESETS",
    "Block",
    "MPConv",
    "MPFourier",
    "Precond",
    "UNet",
    "build_unet",
    "load_edm2_pickle",
    "mp_cat",
    "resolve_preset",
    "save_generator_safetensors",
    "set_backend",
    "set_memory_format",
]
