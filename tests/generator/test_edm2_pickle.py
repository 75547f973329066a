"""edm2 network pickles: read without running them, weights mapped onto this project's Precond.

The fake snapshots below are built the way edm2's ``torch_utils.persistence`` pickles a
persistent module: a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` carries the
class's source (``module_src``), ``class_name`` and ``state`` (the module ``__dict__`` with
``_init_kwargs``), inside a ``dnnlib.util.EasyDict`` with the network under ``ema`` in fp16.
"""

import collections
import copy
import io
import os
import pickle
import sys
import types

import pytest
import torch

from auggen.generator import build_unet
from auggen.generator.edm2_pickle import load_edm2_pickle, read_edm2_pickle
from auggen.generator.export import precond_build_kwargs, save_generator_safetensors
from auggen.generator.layers import Block, MPConv, MPFourier
from auggen.generator.loading import load_generator
from auggen.generator.unet import Precond, UNet
from auggen.infra.files import UnsafeOrCorruptFile
from auggen.infra.inert_pickle import RefusedPickle

PERSISTENT_CLASSES = (Precond, UNet, Block, MPConv, MPFourier)
MODULE_KEYS = ("training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")


def _reconstruct_persistent_obj(meta):  # what edm2 would run; the loader must never get here
    raise AssertionError("the persistence hook was called")


class EasyDict(dict):
    pass


class StandardRGBEncoder:
    pass


@pytest.fixture
def edm2_modules(monkeypatch):
    """Importable stand-ins for edm2's modules, so pickle can write references to them."""
    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    EasyDict.__module__ = "dnnlib.util"
    util.EasyDict = EasyDict
    for name, mod in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)


class _Edm2Pickler(pickle.Pickler):
    """Pickles this project's modules as edm2's persistent classes (``__reduce__`` of its
    ``persistent_class`` decorator: ``(_reconstruct_persistent_obj, (meta,))``)."""

    def __init__(self, file, init_kwargs, module_src="# edm2 source would be here\n"):
        super().__init__(file, protocol=4)
        self.init_kwargs, self.module_src = init_kwargs, module_src

    def reducer_override(self, obj):
        if isinstance(obj, StandardRGBEncoder):
            meta = dict(type="class", version=6, module_src=self.module_src,
                        class_name="StandardRGBEncoder", state={})  # fmt: skip
            return _reconstruct_persistent_obj, (meta,)
        if type(obj) not in PERSISTENT_CLASSES:
            return NotImplemented
        state = {
            k: v
            for k, v in obj.__dict__.items()
            if k in MODULE_KEYS or isinstance(v, (int, float, str, bool, type(None)))
        }
        is_top = isinstance(obj, Precond)
        state["_init_args"] = ()
        state["_init_kwargs"] = dict(self.init_kwargs) if is_top else {}
        meta = dict(
            type="class",
            version=6,
            module_src=self.module_src,
            class_name=type(obj).__name__,
            state=state,
        )
        return _reconstruct_persistent_obj, (meta,)


EDM2_KWARGS = dict(
    img_resolution=16,
    img_channels=3,
    label_dim=5,
    model_channels=32,
    channel_mult=[1, 2, 2],
    num_blocks=1,
    attn_resolutions=[4],
    dropout=0.0,
    use_fp16=False,
    resample_filter=[1, 1],
)


def _fp16_exact_net(seed=0):
    """A small Precond whose weights are fp16-representable (edm2 snapshots store fp16)."""
    torch.manual_seed(seed)
    kw = {k: v for k, v in EDM2_KWARGS.items() if k != "resample_filter"}
    net = Precond(**kw).eval().requires_grad_(False)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float() + 0.0)
        net.unet.out_gain.fill_(0.75)  # edm2 initialises these gains to 0
        for m in net.modules():
            if isinstance(m, Block):
                m.emb_gain.fill_(0.5)
    return net


def _write_snapshot(path, net, init_kwargs=EDM2_KWARGS, **pickler_kw):
    data = EasyDict(
        dataset_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset", path="x.zip"),
        encoder=StandardRGBEncoder(),
        ema=copy.deepcopy(net).half(),
    )
    buf = io.BytesIO()
    _Edm2Pickler(buf, init_kwargs, **pickler_kw).dump(data)
    path.write_bytes(buf.getvalue())
    return path


def _outputs(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 16, 16, generator=g)
    sigma = torch.tensor([0.1, 1.0, 20.0])
    labels = torch.eye(5)[[0, 3, 4]]
    return net(x, sigma, labels, return_logvar=True)


def test_snapshot_loads_exactly_and_runs_no_code(edm2_modules, tmp_path):
    net = _fp16_exact_net()
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('edm2 source executed')\n"
    path = _write_snapshot(tmp_path / "network-snapshot-0001000-0.100.pkl", net, module_src=src)
    loaded = load_edm2_pickle(path)
    assert not marker.exists()  # module_src was carried, never executed
    assert isinstance(loaded, Precond) and not loaded.training
    assert list(loaded.state_dict()) == list(net.state_dict())
    for k, v in net.state_dict().items():
        assert loaded.state_dict()[k].dtype == v.dtype and torch.equal(loaded.state_dict()[k], v)
    want, got = _outputs(net), _outputs(loaded)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_read_gives_kwargs_and_tensors_by_module_path(edm2_modules, tmp_path):
    net = _fp16_exact_net()
    kwargs, tensors = read_edm2_pickle(_write_snapshot(tmp_path / "s.pkl", net))
    assert kwargs["channel_mult"] == (1, 2, 2) and "resample_filter" not in kwargs
    assert "unet.enc.16x16_conv.weight" in tensors
    assert tensors["unet.enc.16x16_conv.weight"].dtype == torch.float16
    assert set(tensors) == set(net.state_dict())


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsExec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_RunsShell, _RunsExec])
def test_pickle_that_would_run_code_is_refused_unrun(edm2_modules, tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"ema": payload(marker)}, protocol=4))
    with pytest.raises(RefusedPickle, match=r"evil\.pkl: refused.*(system|exec).*Nothing"):
        load_edm2_pickle(path)
    assert not marker.exists()


def test_code_hidden_inside_the_network_state_is_refused(edm2_modules, tmp_path):
    marker = tmp_path / "pwned"
    kw = dict(EDM2_KWARGS, dropout=_RunsShell(marker))
    path = _write_snapshot(tmp_path / "s.pkl", _fp16_exact_net(), init_kwargs=kw)
    with pytest.raises(RefusedPickle, match="system"):
        load_edm2_pickle(path)
    assert not marker.exists()


def test_wrong_content_errors_name_the_file(edm2_modules, tmp_path):
    p = tmp_path / "plain.pkl"
    p.write_bytes(pickle.dumps({"net": 3}))
    with pytest.raises(UnsafeOrCorruptFile, match=r"plain\.pkl: not an edm2 network snapshot"):
        load_edm2_pickle(p)
    bad = _write_snapshot(tmp_path / "b.pkl", _fp16_exact_net(), dict(EDM2_KWARGS, num_blocks=2))
    with pytest.raises(ValueError, match=r"b\.pkl.*does not match"):
        load_edm2_pickle(bad)
    odd = _write_snapshot(tmp_path / "o.pkl", _fp16_exact_net(), dict(EDM2_KWARGS, foo=1))
    with pytest.raises(ValueError, match=r"not supported \['foo'\]"):
        load_edm2_pickle(odd)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        load_edm2_pickle(tmp_path / "missing.pkl")


@pytest.mark.parametrize(
    "preset,over",
    [("tiny", {}), ("micro", dict(channel_mult_emb=3, dropout=0.1, concat_balance=0.4))],
)
def test_export_round_trips_through_load_generator(tmp_path, preset, over):
    torch.manual_seed(0)
    net = build_unet(preset, 16, 4, **over).eval()
    with torch.no_grad():
        net.unet.out_gain.fill_(0.5)
    kw = precond_build_kwargs(net)
    assert kw["dropout"] == over.get("dropout", 0.0)
    out = save_generator_safetensors(net, tmp_path / "gen", ema_std=0.1)
    back = load_generator(out)
    x = torch.randn(2, 3, 16, 16)
    labels = torch.eye(4)[[1, 2]]
    assert torch.equal(net(x, 1.5, labels), back(x, 1.5, labels))


class _OutOfBounds:
    """A tensor whose recorded size reaches past its storage."""

    def __reduce__(self):
        storage = torch.zeros(4).untyped_storage()
        typed = torch.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
        args = (typed, 0, (1000,), (1,), False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


def test_tensor_past_its_storage_is_refused(edm2_modules, tmp_path):
    path = tmp_path / "oob.pkl"
    path.write_bytes(pickle.dumps({"ema": _OutOfBounds()}, protocol=4))
    with pytest.raises(UnsafeOrCorruptFile, match=r"oob\.pkl: not a readable pickle"):
        load_edm2_pickle(path)
