import os

import pytest
import torch

# Triton kernels run on the CPU through the interpreter when there is no GPU; the
# variable must be set before triton is first imported. On a GPU machine it stays unset (it
# would interpret the GPU kernels too), so tests marked ``triton_cpu`` skip there unless the
# run sets TRITON_INTERPRET=1 itself; the GPU tests cover the Triton kernels on that machine.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

TRITON_ON_CPU = os.environ.get("TRITON_INTERPRET", "0") == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "triton_cpu: runs Triton kernels on CPU tensors (needs TRITON_INTERPRET=1)"
    )


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_interp = pytest.mark.skip(
        reason="Triton on CPU tensors needs TRITON_INTERPRET=1, left unset on a GPU machine "
        "(it would interpret the GPU kernels too); the gpu tests cover Triton here"
    )
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "triton_cpu" in item.keywords and not TRITON_ON_CPU:
            item.add_marker(skip_interp)


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: two intra-op threads mostly wait on each other
    (measured ~10x slower per step under load), so these tests run single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
