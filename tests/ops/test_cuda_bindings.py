"""The CUDA module built here (nvcc, one architecture, cudart linked statically as the real
build does) and loaded without a GPU: every launch returns error 35, and the message names
the driver found (none) and the runtime the module was built with."""

import importlib.util
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from auggen.ops import _backend

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,  # ~30-60 s of nvcc
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: launches succeed"),
]


def _build(tmp: Path):
    cuda_home = Path(shutil.which("nvcc")).resolve().parents[1]
    static = next(cuda_home.glob("**/libcudart_static.a"), None)
    if static is None:
        pytest.skip("no libcudart_static.a next to nvcc")
    srcs = sorted((ROOT / "kernels" / "cuda").glob("*.cu"))

    def nvcc(src):
        obj = tmp / f"{src.stem}.o"
        cmd = ["nvcc", "-std=c++17", "-O1", "-arch=sm_90", "-Xcompiler", "-fPIC",
               f"-I{ROOT / 'csrc' / 'include'}", "-c", str(src), "-o", str(obj)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        return obj

    with ThreadPoolExecutor(2) as pool:
        objs = list(pool.map(nvcc, srcs))
    import pybind11

    out = tmp / f"_C_cuda{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = ["g++", "-std=c++17", "-O1", "-fPIC", "-shared", f"-I{pybind11.get_include()}",
           f"-I{sysconfig.get_paths()['include']}", f"-I{cuda_home / 'include'}",
           str(ROOT / "kernels" / "cuda" / "bindings.cpp"), *map(str, objs), str(static),
           "-ldl", "-lpthread", "-lrt", "-o", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("_C_cuda", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_launch_without_driver_reports_both_versions(tmp_path):
    ext = _build(tmp_path)
    driver, built = _backend.cuda_versions(ext)
    assert driver == 0 and built >= 12000
    assert ext.sync_enabled() is False
    err = ext.mp_silu_fwd(0, 0, 0, 16, 0)
    assert err == _backend.CUDA_ERROR_INSUFFICIENT_DRIVER
    with pytest.raises(RuntimeError) as info:
        _backend.check_cuda(err, "mp_silu_fwd", ext=ext)
    msg = str(info.value)
    assert "CUDA kernel failed (mp_silu_fwd)" in msg and "(35)" in msg
    assert "driver supports CUDA none (no driver found)" in msg
    assert f"CUDA {built // 1000}.{built % 1000 // 10} runtime" in msg
    for name, args in (("pixel_norm_fwd", (0, 0, 0, 0, 2, 8, 1, 1e-4, 0)),
                       ("modulated_mp_silu_bwd", (0, 0, 0, 0, 0, 0, 2, 1, 8, 4, 0))):  # fmt: skip
        assert getattr(ext, name)(*args) == 35, name
