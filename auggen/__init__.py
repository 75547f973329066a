"""AugGen: generative data augmentation for face recognition.

Subpackages: ``ops`` (fused kernels), ``generator`` (EDM2), ``recognition`` (IR + AdaFace),
``data``, ``eval``, ``mixing`` and ``pipeline`` (``python -m auggen.pipeline``).
"""

__version__ = "0.1.0"
