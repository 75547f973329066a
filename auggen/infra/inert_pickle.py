"""Read a pickle without running any of it: tensors are rebuilt, every other object is a record.

Some files the project must read are general pickles: NVlabs edm2 network snapshots (persistent
classes whose source code travels inside the pickle) and Lightning ``.ckpt`` files whose
hyper-parameters are objects that ``torch.load(weights_only=True)`` refuses. ``inert_load``
reads them with a ``pickle.Unpickler`` whose ``find_class`` never imports anything:

- tensor rebuild functions, storages, dtypes, ``OrderedDict`` and a few builtin containers map
  to this module's own checked versions (storage bytes go through ``weights_only=True``);
- any other global, within the ``modules`` the caller expects, becomes an inert ``Record``
  subclass that only stores what it is given (call arguments, items, ``__setstate__`` state);
- a global outside ``modules`` (``os.system``, ``builtins.eval``, ...) stops the read with
  :class:`RefusedPickle` naming it, before anything could call it.

Nothing from the file is ever executed, so a malicious file can make a read fail, never run.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import torch

from auggen.infra.files import UnsafeOrCorruptFile


class RefusedPickle(UnsafeOrCorruptFile):
    """The pickle refers to a global no expected file refers to; nothing in it was run."""


class Record(dict):
    """What the pickle would have built from global ``qualname``: args, items, state.

    A dict subclass so that dict-like classes (``dnnlib.EasyDict``) keep their items.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.list_items = args, kwargs, None, []
        return obj

    def __init__(self, *args, **kwargs):  # the arguments are kept by __new__, not used
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.list_items.append(item)

    def extend(self, items):
        self.list_items.extend(items)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def describe(obj) -> str:
    """A short phrase naming what ``obj`` is, for error messages."""
    if isinstance(obj, Record):
        return f"an object of {obj.qualname}"
    if isinstance(obj, dict):
        keys = list(obj)[:5]
        return f"a dict with {len(obj)} keys (e.g. {keys})"
    return f"a {type(obj).__name__}"


# Rebuilders: the only callables a pickle can reach. Each checks its arguments' types.


def _check_layout(size, stride, offset) -> None:
    ok = isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))
    if not ok or len(size) != len(stride):
        raise pickle.UnpicklingError(f"bad tensor layout size={size} stride={stride}")


def _flat(storage) -> torch.Tensor:
    if isinstance(storage, torch.Tensor) and storage.ndim == 1:
        return storage
    if isinstance(storage, torch.TypedStorage):
        raw = storage._untyped_storage
        n = raw.nbytes() // storage.dtype.itemsize
        return torch.empty(0, dtype=storage.dtype).set_(raw, 0, (n,), (1,))
    raise pickle.UnpicklingError(f"a tensor refers to {describe(storage)}, not a storage")


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    _check_layout(size, stride, storage_offset)
    # as_strided checks the view against the storage's bounds.
    return _flat(storage).as_strided(tuple(size), tuple(stride), storage_offset)


def _rebuild_parameter(data, requires_grad=False, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter holds {describe(data)}, not a tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _rebuild_from_type(func, new_type, args, _state):
    if func not in (_rebuild_tensor, _rebuild_parameter) or not isinstance(args, tuple):
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2 with {describe(func)}")
    out = func(*args)
    return torch.nn.Parameter(out, requires_grad=False) if new_type is torch.nn.Parameter else out


def _load_storage_bytes(data):
    # How a storage pickles outside torch.save: a legacy torch.save of the storage alone.
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"storage bytes expected, got {describe(data)}")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return _flat(storage)


def _reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {describe(cls)}")
    return cls()


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

_KNOWN = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
}
_KNOWN.update({("torch", n): _StorageType(d) for n, d in _STORAGE_DTYPES.items()})


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, file, modules: tuple[str, ...], source: str, zip_file=None, prefix=""):
        super().__init__(file)
        self.modules, self.source = modules, source
        self.zip_file, self.prefix = zip_file, prefix
        self.records: dict[str, type] = {}

    def find_class(self, module, name):
        if (module, name) in _KNOWN:
            return _KNOWN[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if not any(module == m or module.startswith(m + ".") for m in self.modules):
            raise RefusedPickle(
                f"{self.source}: refused: the pickle refers to {module}.{name}, which a "
                "normal unpickler would import and may call; expected only globals of "
                f"{', '.join(self.modules)}. Nothing in it was run"
            )
        key = f"{module}.{name}"
        if key not in self.records:
            self.records[key] = type(name, (Record,), {"qualname": key})
        return self.records[key]

    def persistent_load(self, pid):
        # torch.save's zip format: ('storage', storage_type, key, location, numel).
        if self.zip_file is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError(f"bad storage reference {str(pid)[:80]}")
        raw = self.zip_file.read(f"{self.prefix}data/{key}")
        if not raw:
            return torch.empty(0, dtype=storage_type.dtype)
        return torch.frombuffer(bytearray(raw), dtype=storage_type.dtype)


def inert_load(path, modules: tuple[str, ...]):
    """Unpickle ``path`` (a plain pickle or a torch.save zip) with nothing run; see module doc.

    ``modules``: the module prefixes whose globals may appear (as inert records).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not pkl:
                    raise UnsafeOrCorruptFile(f"{path}: a zip file without data.pkl")
                prefix = pkl[0][: -len("data.pkl")]
                up = _InertUnpickler(io.BytesIO(zf.read(pkl[0])), modules, str(path), zf, prefix)
                return up.load()
        with open(path, "rb") as f:
            return _InertUnpickler(f, modules, str(path)).load()
    except UnsafeOrCorruptFile:
        raise
    except Exception as e:
        raise UnsafeOrCorruptFile(
            f"{path}: not a readable pickle ({type(e).__name__}: {e}); nothing in it was run"
        ) from e
