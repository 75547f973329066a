"""Every compiled backend against the fp64 plain-PyTorch reference, forward and backward."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from auggen import ops
from auggen.ops import _backend, _selftest
from auggen.ops._backend import cpu_ext
from tests.ops._cases import OPS, compare, make_inputs

CPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ODD_SHAPES = [(3, 13, 7, 5), (2, 1, 4, 3), (0, 8, 4, 4), (1, 300, 1, 2)]
LAYOUTS = ["contiguous", "channels_last", "strided", "transposed", "offset"]


@pytest.fixture(params=["auto", "base"])
def isa(request):
    """Both CPU kernel builds: AVX2+F16C (when the CPU has it) and the x86-64-v2 baseline."""
    cpu_ext.set_isa(request.param)
    yield request.param
    cpu_ext.set_isa("auto")


def needs_triton(test):
    """Triton kernels on CPU tensors, through the interpreter (conftest: ``triton_cpu``)."""
    no_triton = pytest.mark.skipif("triton" not in ops.backends(), reason="triton unavailable")
    return pytest.mark.triton_cpu(no_triton(test))


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_matches_reference(op, shape, dtype):
    compare(op, "cpu", shape, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_layouts(op, layout):
    outs = compare(op, "cpu", (2, 6, 5, 3), torch.float32, layout=layout)
    if layout == "channels_last":  # the output keeps the input's memory format
        assert outs[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("op", ["pixel_norm", "pixel_norm_silu"])
def test_cpu_all_zero_vector(op, dtype):
    compare(op, "cpu", (2, 5, 3, 3), dtype, zero_vector=True)


@pytest.mark.parametrize("dim", [0, 2, -1])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_pixel_norm_any_dim(dim, layout):
    x = make_inputs("pixel_norm", (3, 4, 5, 6))[0]
    xf = x.float().contiguous(
        memory_format=getattr(torch, layout.replace("contiguous", "contiguous_format"))
    )
    for fn in (ops.pixel_norm, lambda t, **kw: ops.pixel_norm_silu(t, **kw)[1]):
        xr = xf.double().requires_grad_()
        xc = xf.clone().requires_grad_()
        out, ref = fn(xc, dim=dim, backend="cpu"), fn(xr, dim=dim, backend="reference")
        torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
        (gc,) = torch.autograd.grad(out.square().sum(), xc)
        (gr,) = torch.autograd.grad(ref.square().sum(), xr)
        torch.testing.assert_close(gc.double(), gr, atol=1e-4, rtol=1e-4)


def test_cpu_large_tiles_and_rows():
    """Shapes past one CPU tile (256 columns) and one parallel chunk."""
    compare("pixel_norm_silu", "cpu", (2, 40, 30, 20), torch.float32)
    compare("pixel_norm", "cpu", (2, 40, 30, 20), torch.float32, layout="channels_last")
    compare("modulated_mp_silu", "cpu", (3, 70, 9, 9), torch.float32, layout="channels_last")
    compare("mp_silu", "cpu", (2, 64, 32, 32), torch.bfloat16)


def test_cpu_16bit_roundtrip_is_exact(isa):
    """fp16/bf16 <-> fp32 conversions in the kernels: every bit pattern survives (NaN stays NaN)."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        a = bits.view(dtype)
        y = ops.mp_sum(a, torch.zeros_like(a), t=0.0, backend="cpu")  # 1 * a + 0 * b
        nan = a.isnan()
        assert torch.equal(y.isnan(), nan)
        keep = ~nan & (a != 0)  # -0 + 0 is +0 in IEEE arithmetic
        assert torch.equal(y[keep].view(torch.int16), a[keep].view(torch.int16))


def test_cpu_16bit_rounding_matches_torch(isa):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * torch.logspace(-7, 4, 100_000)
    edges = [torch.arange(45000.0, 47000.0, 8.0), torch.arange(1.0, 64.0) * 2.0**-24]  # fp16
    x = torch.cat([x, *edges, -edges[0], torch.tensor([2.0e38, 3.0e38, -2.5e38])])
    for dtype in (torch.float16, torch.bfloat16):
        a = x.to(dtype)
        y = ops.mp_sum(a, a, t=0.5, backend="cpu")  # sqrt(2) a, rounded once from fp32
        ca = 0.5 / (0.5**0.5)
        expect = (a.float() * ca + a.float() * ca).to(dtype)
        ulp = (y.float() - expect.float()).abs() <= expect.float().abs() * 2**-7
        assert (ulp | (y == expect)).all()  # equality covers the infinities
        assert (y == expect).float().mean() > 0.99


@needs_triton
@pytest.mark.parametrize("op", list(OPS))
def test_triton_matches_reference(op):
    compare(op, "triton", (3, 13, 7, 5), torch.float32)
    compare(op, "triton", (2, 1, 4, 3), torch.float32)


@needs_triton
@pytest.mark.parametrize("op", ["pixel_norm_silu", "mp_sum_clamp", "modulated_mp_silu"])
def test_triton_layouts_and_16bit(op):
    compare(op, "triton", (2, 6, 5, 3), torch.float32, layout="channels_last")
    compare(op, "triton", (2, 6, 5, 3), torch.bfloat16, layout="strided")
    compare(op, "triton", (2, 6, 5, 3), torch.float16, zero_vector=op == "pixel_norm_silu")


@needs_triton
def test_triton_empty_and_other_dim():
    compare("pixel_norm", "triton", (0, 8, 4, 4), torch.float32)
    x = make_inputs("pixel_norm", (3, 4, 5, 6))[0].float()
    torch.testing.assert_close(
        ops.pixel_norm(x, dim=2, backend="triton"), ops.pixel_norm(x, dim=2, backend="reference")
    )


@pytest.fixture
def baseline_isa():
    """Runs the test on the baseline (non-AVX2) CPU kernels, then restores auto choice."""
    cpu_ext.set_isa("base")
    yield
    cpu_ext.set_isa("auto")


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("op", list(OPS))
def test_cpu_baseline_isa_matches_reference(baseline_isa, op, dtype):
    compare(op, "cpu", (3, 13, 7, 5), dtype)
    compare(op, "cpu", (2, 6, 5, 3), dtype, layout="channels_last")


@needs_triton
def test_triton_pixel_norm_sweeps_channel_chunks():
    """C larger than one block, along strided (inner > 1) and contiguous (inner == 1) rows."""
    compare("pixel_norm_silu", "triton", (1, 40, 16, 16), torch.float32)
    compare("pixel_norm", "triton", (2, 1100, 1, 1), torch.float32)


@needs_triton
@pytest.mark.parametrize("shape", [(2, 5, 14, 14), (3, 3, 6, 2), (2, 40, 1, 1)], ids=str)
def test_triton_pixel_norm_column_tiles(shape):
    """inner = 196 (two tiles, 196 % 16 != 0: 4-element alignment), inner = 12, inner = 1."""
    for op in ("pixel_norm", "pixel_norm_silu"):
        compare(op, "triton", shape, torch.float32)
        compare(op, "triton", shape, torch.bfloat16, layout="channels_last")


# ---- self-test before a backend serves, fallback, fault injection ---------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_verdicts():
    """This process forgets its self-test verdicts for the test, then gets them back."""
    saved = dict(_backend._VERDICTS)
    _backend._VERDICTS.clear()
    yield _backend._VERDICTS
    _backend._VERDICTS.clear()
    _backend._VERDICTS.update(saved)


def _counting(monkeypatch):
    calls = []
    real = _selftest.run_selftest

    def counted(*args):
        calls.append(args[:3])
        return real(*args)

    monkeypatch.setattr(_selftest, "run_selftest", counted)
    return calls


def test_selftest_runs_once_per_device_and_family(fresh_verdicts, monkeypatch):
    calls = _counting(monkeypatch)
    x = torch.randn(2, 4, 3, 3)
    for _ in range(3):
        ops.mp_silu(x)
        ops.pixel_norm(x.bfloat16())
        ops.mp_sum(x.half(), x.half())  # fp16 shares bf16's verdict
    ops.mp_silu(x.double())  # fp64 runs the reference: nothing to test
    assert [c[0] for c in calls] == ["cpu", "cpu"]
    assert {c[2] for c in calls} == {torch.float32, torch.bfloat16}
    report = ops.backend_report()
    assert "cpu on cpu (fp32): passed its self-test (6 ops passed" in report
    assert "cpu on cpu (fp16/bf16): passed" in report


def test_selftest_is_thread_safe(fresh_verdicts, monkeypatch):
    calls = _counting(monkeypatch)
    x = torch.randn(2, 4, 3, 3)
    want = ops.mp_silu(x, backend="reference")
    results, errors = [], []

    def work():
        try:
            results.append(ops.mp_silu(x))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    for y in results:
        torch.testing.assert_close(y, want)


def test_mismatching_backend_is_dropped_with_one_warning(fresh_verdicts, monkeypatch):
    """A CPU kernel that computes the wrong thing: the self-test catches it, the reference
    serves, and asking for the backend by name says why it cannot."""
    import auggen.ops.elementwise as ew

    real = ew._launch

    def broken(backend, name, *tensors, scalars=()):
        real(backend, name, *tensors, scalars=scalars)
        if backend == "cpu" and name == "mp_silu_fwd":
            tensors[-1].mul_(1.01)  # a 1 % error in the output

    monkeypatch.setattr(ew, "_launch", broken)
    x = torch.randn(2, 4, 3, 3)
    with pytest.warns(RuntimeWarning) as caught:
        y = ops.mp_silu(x)
        ops.mp_silu(x)
    drops = [w for w in caught if "dropped" in str(w.message)]
    assert len(drops) == 1
    msg = str(drops[0].message)
    assert "'cpu'" in msg and "mp_silu" in msg and "differs from the fp64 reference" in msg
    assert torch.equal(y, ops.mp_silu(x, backend="reference"))
    with pytest.raises(RuntimeError, match="'cpu' failed its self-test on cpu for fp32"):
        ops.mp_silu(x, backend="cpu")
    assert ops.pixel_norm(x.bfloat16()).dtype == torch.bfloat16  # the other family still runs
    report = ops.backend_report()
    assert "cpu on cpu (fp32): DROPPED: mp_silu failed its self-test" in report
    assert "cpu on cpu (fp16/bf16): passed" in report


def test_launch_error_is_named_in_the_verdict(fresh_verdicts, monkeypatch):
    import auggen.ops.modulate as mod

    def fails(backend, name, tensors, geom):
        raise RuntimeError("auggen CUDA kernel modulated_mp_silu_fwd failed: boom (700)")

    monkeypatch.setattr(mod, "_launch", fails)
    with pytest.warns(RuntimeWarning, match="modulated_mp_silu failed its self-test: Runtime"):
        ops.mp_silu(torch.randn(4))
    (v,) = {v for v in fresh_verdicts.values()}
    assert not v.ok and v.op == "modulated_mp_silu" and "boom (700)" in v.reason


def test_compile_tracing_runs_no_selftest(fresh_verdicts, monkeypatch):
    calls = _counting(monkeypatch)
    fn = torch.compile(lambda t: ops.mp_silu(ops.pixel_norm(t)), fullgraph=True, backend="eager")
    x = torch.randn(2, 4, 3, 3)
    y = fn(x)
    assert calls == [] and not fresh_verdicts
    torch.testing.assert_close(y, ops.mp_silu(ops.pixel_norm(x)))
    assert len(calls) == 1  # the first eager call tests


def test_cuda_error_35_names_both_versions():
    class FakeExt:
        @staticmethod
        def error_string(err):
            return "CUDA driver version is insufficient for CUDA runtime version"

        driver_version = staticmethod(lambda: 12040)
        runtime_version = staticmethod(lambda: 13000)

    with pytest.raises(RuntimeError) as info:
        _backend.check_cuda(35, "mp_silu_fwd", ext=FakeExt)
    msg = str(info.value)
    assert "CUDA kernel failed (mp_silu_fwd)" in msg and "(35)" in msg
    assert "driver supports CUDA 12.4" in msg and "CUDA 13.0 runtime" in msg and "580" in msg
    FakeExt.driver_version = staticmethod(lambda: 0)
    with pytest.raises(RuntimeError, match="none \\(no driver found\\)"):
        _backend.check_cuda(35, "mp_silu_fwd", ext=FakeExt)
    _backend.check_cuda(0, "mp_silu_fwd", ext=FakeExt)  # success raises nothing


def test_triton_sync_names_the_op(monkeypatch):
    from auggen.kernels.triton import launch

    def fault(device=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", fault)
    with pytest.raises(RuntimeError, match="Triton kernel pixel_norm_fwd failed on cuda:1: CUDA"):
        launch.sync("pixel_norm_fwd", torch.device("cuda:1"))
    with launch.on_device("mp_silu_fwd", torch.zeros(1)):  # CPU tensors: no guard, no sync
        pass


def test_triton_launches_run_on_their_tensors_device(monkeypatch):
    """The guard makes the tensor's GPU current around the launch (Triton launches on the
    current device), and AUGGEN_CUDA_SYNC waits for that device afterwards."""
    import contextlib
    import types

    from auggen.kernels.triton import launch

    events = []

    @contextlib.contextmanager
    def device(d):
        events.append(("enter", str(d)))
        yield
        events.append(("exit", str(d)))

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: events.append(("sync", str(d))))
    x = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda:1"))
    for sync in (False, True):
        monkeypatch.setattr(launch, "SYNC", sync)
        with launch.on_device("mp_silu_fwd", x):
            events.append(("launch", ""))
    assert events == [("enter", "cuda:1"), ("launch", ""), ("exit", "cuda:1"),
                      ("enter", "cuda:1"), ("launch", ""), ("sync", "cuda:1"),
                      ("exit", "cuda:1")]  # fmt: skip


_FAULT_SCRIPT = r"""
import json, warnings, torch
from auggen import ops
warnings.simplefilter("always")
x = torch.randn(2, 6, 5, 3, generator=torch.Generator().manual_seed(0))
c = torch.rand(2, 6, generator=torch.Generator().manual_seed(1))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = [ops.mp_silu(x), ops.pixel_norm_silu(x)[1], ops.modulated_mp_silu(x, c),
           ops.mp_sum_clamp(x, x.flip(0), 0.3, 1.0)]
want = [ops.mp_silu(x, backend="reference"), ops.pixel_norm_silu(x, backend="reference")[1],
        ops.modulated_mp_silu(x, c, backend="reference"),
        ops.mp_sum_clamp(x, x.flip(0), 0.3, 1.0, backend="reference")]
try:
    ops.pixel_norm(x, backend="cpu")
    explicit = "ran"
except RuntimeError as e:
    explicit = str(e)
print(json.dumps(dict(
    same=[bool(torch.equal(a, b)) for a, b in zip(got, want)],
    close=[bool(torch.allclose(a, b, atol=1e-5)) for a, b in zip(got, want)],
    warnings=[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    explicit=explicit, report=ops.backend_report())))
"""


def _run_fault_script(**env):
    full = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, "-c", _FAULT_SCRIPT], env=full, cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fault_injection_falls_back_to_reference_with_one_warning():
    out = _run_fault_script(AUGGEN_BACKEND_FAIL="cpu")
    assert all(out["same"])  # the reference served: bit-identical to asking for it
    (warning,) = out["warnings"]
    assert "backend 'cpu' dropped on cpu for fp32" in warning and "mp_silu" in warning
    assert "fault injection" in warning and "now use reference" in warning
    assert "failed its self-test" in out["explicit"]
    assert "cpu on cpu (fp32): DROPPED: mp_silu failed its self-test" in out["report"]
    assert "AUGGEN_BACKEND_FAIL=cpu" in out["report"]


def test_selftest_off_trusts_the_backend():
    out = _run_fault_script(AUGGEN_BACKEND_FAIL="cpu", AUGGEN_BACKEND_SELFTEST="0")
    assert all(out["close"]) and not out["warnings"] and out["explicit"] == "ran"
    assert "trusted untested (AUGGEN_BACKEND_SELFTEST=0)" in out["report"]
    assert "self-test: off" in out["report"]


def test_pipeline_log_names_the_backends(tmp_path, fresh_verdicts):
    from dataclasses import dataclass

    from auggen.pipeline.driver import run_pipeline
    from auggen.pipeline.stage import Stage

    @dataclass(frozen=True)
    class Cfg:
        device: str = "cpu"

    def uses_ops(cfg, in_dirs, out_dir, rt):
        ops.mp_silu(torch.randn(2, 3))

    def plain(cfg, in_dirs, out_dir, rt):
        pass

    reg = {"a": Stage("a", uses_ops, (), ()), "b": Stage("b", plain, ("a",), ())}
    lines = []
    run_pipeline(Cfg(), tmp_path, reg, log=lines.append)
    noted = [s for s in lines if "ops backends:" in s]
    assert noted == ["[a] ops backends: cpu@cpu fp32 ok"]  # once, after the stage that used them


@pytest.mark.parametrize("family", ["elementwise", "pixel_norm", "modulate"])
def test_every_triton_launch_sits_in_a_device_guard(family):
    """Read from the source: each ``<kernel>[grid](...)`` launch of these launchers is inside
    ``with on_device(...)``."""
    import ast

    path = ROOT / "kernels" / "triton" / f"{family}.py"
    tree = ast.parse(path.read_text())
    guarded, launches = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", "") ==
            "on_device" for i in node.items
        ):  # fmt: skip
            guarded |= {id(n) for n in ast.walk(node)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
            launches.append(node)
    assert launches, f"no launches found in {path}"
    assert all(id(n) in guarded for n in launches), [ast.unparse(n)[:60] for n in launches
                                                     if id(n) not in guarded]  # fmt: skip


def _fake_gpu(monkeypatch, available, op: str, why: str) -> set:
    """Backends ``available`` on a made-up GPU (order cuda, triton) whose self-test fails, with
    ``op``: ``why``, for the backends in the returned set (empty: add to it to break one)."""
    monkeypatch.setattr(_backend, "AVAILABLE", available)
    monkeypatch.setattr(_backend, "GPU_ORDER", ("cuda", "triton"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    broken = set()

    def fake_selftest(backend, device, dtype, fail):
        if backend in broken:
            raise _selftest.SelfTestError(op, why)
        return 6

    monkeypatch.setattr(_selftest, "run_selftest", fake_selftest)
    return broken


def test_gpu_order_falls_through_dropped_backends(fresh_verdicts, monkeypatch):
    """The CUDA-tensor order (cuda, then triton, then reference) with made-up verdicts: what
    resolve() only reads of a tensor is its device and dtype."""
    import types

    available = ("reference", "cpu", "triton", "cuda")
    why = "CUDA driver version is insufficient (35)"
    broken = _fake_gpu(monkeypatch, available, "mp_silu", why)
    broken.add("cuda")
    x = types.SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="'cuda' dropped on cuda:0.*now use triton then ref"):
        assert _backend.resolve(None, x) == "triton"
    with pytest.raises(RuntimeError, match="'cuda' failed its self-test on cuda:0"):
        _backend.resolve("cuda", x)
    assert _backend.resolve("triton", x) == "triton"
    broken.add("triton")
    y = types.SimpleNamespace(device=torch.device("cuda:1"), dtype=torch.float32)
    with pytest.warns(RuntimeWarning):
        assert _backend.resolve(None, y) == "reference"  # both dropped on cuda:1
    assert _backend.resolve(None, x) == "triton"  # cuda:0's verdicts stand
    report = ops.backend_report()
    assert "cuda on cuda:0 (fp16/bf16): DROPPED: mp_silu failed" in report
    assert "triton on cuda:1 (fp32): DROPPED" in report


def test_attention_uses_the_one_resolver(fresh_verdicts, monkeypatch):
    """mp_attention's table (a Triton kernel; "cuda" runs it; SDPA as "cpu" and fallback)
    through ``_backend.resolve``, on made-up CUDA tensors and verdicts, without _C_cuda."""
    import types

    from auggen.ops.attention import KERNELS, resolve_backend

    broken = _fake_gpu(monkeypatch, ("reference", "cpu", "triton"), "mp_attention", "wrong numbers")
    cuda0 = types.SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.bfloat16)
    assert resolve_backend(None, cuda0) == "triton"
    assert resolve_backend("cuda", cuda0) == "triton"  # no _C_cuda needed: no CUDA kernel
    assert resolve_backend("cpu", cuda0) == "cpu"  # SDPA runs on any device
    wide = types.SimpleNamespace(device=torch.device("cuda:0"), dtype=torch.float64)
    assert resolve_backend(None, wide) == "cpu" and resolve_backend("cuda", wide) == "reference"
    broken.add("triton")
    cuda1 = types.SimpleNamespace(device=torch.device("cuda:1"), dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="'triton' dropped on cuda:1"):
        assert resolve_backend(None, cuda1) == "cpu"
    assert resolve_backend("cuda", cuda1) == "cpu"  # the stand-in failed: the fallback runs
    with pytest.raises(RuntimeError, match="'triton' failed its self-test on cuda:1"):
        resolve_backend("triton", cuda1)
    cpu = torch.randn(1, 1, 4, 8)
    assert resolve_backend(None, cpu) == "cpu"
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors"):
        resolve_backend("cuda", cpu)
    # The fused ops' table on the same made-up CUDA device: no stand-in, so "cuda" is refused.
    assert KERNELS.fallback == "cpu" and _backend.FUSED.stand_in == ()
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available here"):
        _backend.resolve("cuda", cuda0)
