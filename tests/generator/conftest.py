import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small generator nets run faster single-threaded, and far faster on a busy 2-core box
    (intra-op thread barriers stall when the other core is taken)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
