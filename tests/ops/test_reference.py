import math

import pytest
import torch

from auggen import ops


def test_pixel_norm_unit_rms():
    x = torch.randn(4, 16, 3, 5) * 7
    y = ops.pixel_norm(x)
    rms = y.pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)


def test_mp_sum_preserves_unit_variance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 200_000, generator=g)
    for t in (0.0, 0.3, 0.5, 1.0):
        assert math.isclose(ops.mp_sum(a, b, t).std().item(), 1.0, abs_tol=0.01)


def test_bad_arguments_name_the_argument():
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="x"):
        ops.pixel_norm(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="dim"):
        ops.pixel_norm(x, dim=2)
    with pytest.raises(ValueError, match="t must be in"):
        ops.mp_sum(x, x, t=1.5)
    with pytest.raises(ValueError, match="same shape"):
        ops.mp_sum(x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="backend"):
        ops.mp_silu(x, backend="fortran")
