"""Device kernels of AugGen (installed as ``auggen.kernels``).

``triton/`` holds ``@triton.jit`` kernels and their launchers; ``cuda/`` holds the
CUDA sources compiled into ``auggen._C_cuda`` when CMake finds nvcc. No autograd here:
``auggen.ops`` wraps these into differentiable custom ops.
"""
