"""A pickle reader that runs nothing from the file: snapshots of EDM and PFGM++ as records.

EDM (Karras et al., arXiv 2206.00364) and PFGM++ (Xu et al., arXiv 2302.04265) save their
networks as pickles (``network-snapshot-*.pkl``; PFGM++ also ``training-state-*.pt``, a
``torch.save`` zip of the same objects).  Their network classes are decorated by EDM's
``torch_utils.persistence``, which pickles each instance as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with

    meta = {"type": "class", "version": 6, "module_src": <the Python source of the class's module>,
            "class_name": <the class's name>, "state": <the instance's __dict__>}

and, when loaded the usual way, *executes* ``module_src`` to rebuild the class: loading a
snapshot runs whatever source the file carries.  One record per decorated module (the
preconditioner, the U-Net, every block, convolution, linear layer, group norm, embedding);
the state of each is a ``torch.nn.Module.__dict__``: ``_parameters`` and ``_buffers``
(name -> tensor, rebuilt by ``torch._utils._rebuild_parameter`` / ``_rebuild_tensor_v2``
from storages that a plain pickle nests as bytes of a legacy ``torch.save``,
``torch.storage._load_from_bytes``), ``_modules`` (name -> record, or a plain
``torch.nn.ModuleDict``), ``_non_persistent_buffers_set``, the hook dictionaries
(``collections.OrderedDict``), ``training``, the plain attributes the constructor set, and
``_init_args`` / ``_init_kwargs`` (the constructor's arguments, NumPy scalars included).

:func:`read_snapshot` reads such a file with a restricted unpickler (the "restricting
globals" recipe of Python's :mod:`pickle` documentation): ``find_class`` resolves only the
names of :data:`ALLOWED` (plain builtins, ``collections.OrderedDict``, torch's tensor and
storage rebuild functions and dtypes, numeric NumPy scalars, ``dnnlib.util.EasyDict`` as a
dict) and maps EDM's reconstructor to :class:`Recorded`, which keeps the class name, the
state and the source *text* without executing it or importing anything the file names;
``torch.nn`` containers (``ModuleDict``, ``ModuleList``, ``Sequential``) become
:class:`Recorded` too.  Any other global is :class:`RefusedGlobal`, one line naming it.
The same unpickler is ``torch.load``'s ``pickle_module`` for zip files and reads the
nested storage pickles, so a payload hidden in a nested pickle is refused the same way.
"""
from __future__ import annotations

import codecs
import collections
import hashlib
import io
import pickle
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from ..errors import UserError

__all__ = ["Recorded", "RefusedGlobal", "ALLOWED", "read_snapshot", "load_pickle", "find_records", "ZIP_MAGIC"]

ZIP_MAGIC = b"PK\x03\x04"
PERSISTENCE = "torch_utils.persistence._reconstruct_persistent_obj"
"""EDM's reconstructor: the global every persistence record calls."""
CONTAINERS = ("torch.nn.modules.container.ModuleDict", "torch.nn.modules.container.ModuleList",
              "torch.nn.modules.container.Sequential")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asks for a global outside :data:`ALLOWED` (``name``: ``module.qualname``)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass
class Recorded:
    """An object a snapshot describes but that is never built: its class name and state.

    ``source`` is the module source text an EDM persistence record carries (kept as text,
    never executed: :attr:`source_sha256` identifies it); ``None`` for torch containers.
    """

    class_name: str
    state: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None
    version: Optional[int] = None

    def __setstate__(self, state) -> None:  # BUILD of a torch container (NEWOBJ then BUILD)
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"the state of a {self.class_name} is a {type(state).__name__}, not a dict")
        self.state = state

    @property
    def source_sha256(self) -> Optional[str]:
        return None if self.source is None else hashlib.sha256(self.source.encode("utf-8", "replace")).hexdigest()

    @property
    def init_kwargs(self) -> dict:
        """The constructor's keyword arguments EDM's persistence recorded (``{}`` if none)."""
        kw = self.state.get("_init_kwargs")
        return dict(kw) if isinstance(kw, dict) else {}

    def modules(self) -> Dict[str, "Recorded"]:
        """Sub-modules by name (``_modules``; ``None`` entries skipped)."""
        mods = self.state.get("_modules") or {}
        return {k: v for k, v in mods.items() if v is not None}

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def tensors(self, prefix: str = "") -> Dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this module and its sub-modules, named as
        ``torch.nn.Module.state_dict`` names them (``None`` entries skipped)."""
        out: Dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is None or (group == "_buffers" and name in skip):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise UserError(f"{prefix}{name} of a {self.class_name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        for name, child in self.modules().items():
            if not isinstance(child, Recorded):
                raise UserError(f"module {prefix}{name} of a {self.class_name} is a {type(child).__name__}, not a module")
            out.update(child.tensors(f"{prefix}{name}."))
        return out


def _reconstruct_persistent(meta) -> Recorded:
    """EDM's persistence record, as data: class name, state and source text, nothing executed."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("a persistence record without type 'class' and a class name")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"the persistence record of {meta['class_name']!r} has no state dict")
    src = meta.get("module_src")
    return Recorded(meta["class_name"], dict(state), src if isinstance(src, str) else None, meta.get("version"))


def _container(qualname: str) -> type:
    """A class that the unpickler's NEWOBJ + BUILD turn into a :class:`Recorded` of ``qualname``."""

    class Container(Recorded):
        def __new__(cls, *args):
            obj = object.__new__(cls)
            obj.class_name, obj.state, obj.source, obj.version = qualname.rsplit(".", 1)[-1], {}, None, None
            return obj

        def __init__(self, *args):  # NEWOBJ does not call it; keeps dataclass __init__ away
            pass

    Container.__name__ = Container.__qualname__ = qualname.rsplit(".", 1)[-1]
    return Container


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` (a dict with attribute access) read as a plain dict."""

    def __setstate__(self, state) -> None:
        if isinstance(state, dict):
            self.update(state)


def _encode(text, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("iso8859-1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin-1 is read)")
    return text.encode("latin-1", errors)


_NUMERIC = "biufc"


def _numpy_dtype(spec, align=False, copy=False) -> np.dtype:
    """``numpy.dtype(spec)`` for a numeric type code only (no object or structured dtypes)."""
    dt = np.dtype(spec) if isinstance(spec, str) and len(spec) <= 8 else None
    if dt is None or dt.kind not in _NUMERIC or dt.fields is not None:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}): only numeric dtypes are read")
    return dt


def _numpy_scalar(dtype, data=None):
    """A NumPy scalar (``numpy.core.multiarray.scalar``) of a numeric dtype, as a Python number."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a NumPy scalar that is not a number")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


def _reconstructor(cls, base, state=None):
    """``copyreg._reconstructor`` (protocol 0/1 objects), for torch containers only."""
    if not (isinstance(cls, type) and issubclass(cls, Recorded)) or base is not object:
        raise pickle.UnpicklingError("copyreg._reconstructor of a class that is not a torch container")
    obj = cls.__new__(cls)
    if state is not None:
        obj.__setstate__(state)
    return obj


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` for a storage and no hooks (torch's own, after the checks)."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) or backward_hooks:
        raise pickle.UnpicklingError("a tensor with hooks or without a storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    """``torch._utils._rebuild_parameter[_with_state]`` without hooks or extra state: a tensor."""
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise pickle.UnpicklingError("a parameter with hooks or without tensor data")
    return data


def _load_from_bytes(data: bytes):
    """``torch.storage._load_from_bytes``: the legacy ``torch.save`` a plain pickle nests per
    storage, read with this same restricted unpickler (a nested pickle gets no more)."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("torch.storage._load_from_bytes of something that is not bytes")
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=False, pickle_module=SAFE_PICKLE)


def _allowed() -> Dict[str, Any]:
    table: Dict[str, Any] = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes,
                                                                    bytearray)}
    table.update({
        "collections.OrderedDict": collections.OrderedDict,
        "_codecs.encode": _encode,
        "copyreg._reconstructor": _reconstructor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch.storage._load_from_bytes": _load_from_bytes,
        "torch.Size": torch.Size,
        PERSISTENCE: _reconstruct_persistent,
        "dnnlib.util.EasyDict": EasyDict,
        "numpy.dtype": _numpy_dtype,
        "numpy.core.multiarray.scalar": _numpy_scalar,
        "numpy._core.multiarray.scalar": _numpy_scalar,
    })
    table.update({name: _container(name) for name in CONTAINERS})
    table.update({f"torch.{name}": getattr(torch, name) for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)})
    return table


ALLOWED: Dict[str, Any] = _allowed()
"""``module.qualname`` -> what the restricted unpickler returns for it; nothing else resolves."""
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class SafeUnpickler(pickle.Unpickler):
    """:class:`pickle.Unpickler` whose ``find_class`` resolves only :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        key = f"{_PY2_MODULES.get(module, module)}.{name}"
        try:
            return ALLOWED[key]
        except (KeyError, TypeError):
            raise RefusedGlobal(f"{module}.{name}") from None

    # no persistent_load here: torch.load sets its own (a method would shadow it), and a plain
    # pickle with a persistent id is refused by pickle itself


def load_pickle(file, **kwargs) -> Any:
    """``pickle.load`` with :class:`SafeUnpickler`."""
    return SafeUnpickler(file, **kwargs).load()


SAFE_PICKLE = types.ModuleType("physgen_safe_pickle")
"""The ``pickle_module`` handed to ``torch.load``: this reader's unpickler and ``load``."""
SAFE_PICKLE.Unpickler = SafeUnpickler
SAFE_PICKLE.load = load_pickle
SAFE_PICKLE.UnpicklingError = pickle.UnpicklingError
SAFE_PICKLE.__version__ = "1"


def read_snapshot(path) -> Any:
    """The object a ``.pkl`` snapshot or a ``torch.save`` zip holds, with persistence records
    and torch containers as :class:`Recorded`; nothing in the file runs.

    :class:`UserError` (one line naming the file) for a global outside :data:`ALLOWED` (named),
    a damaged file, or a file that is not a pickle."""
    path = Path(path)
    where = f"{str(path)!r}"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == ZIP_MAGIC:
                return torch.load(f, map_location="cpu", weights_only=False, pickle_module=SAFE_PICKLE)
            if not head.startswith(b"\x80"):
                raise UserError(f"{where} is neither a pickle nor a torch.save zip (it starts with {head!r})")
            return load_pickle(f)
    except RefusedGlobal as exc:
        raise UserError(f"{where} is refused: it asks for the Python global {exc.name!r}, which could run code; physgen reads "
                        f"only tensors, plain containers and EDM persistence records (as data)") from None
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"cannot read {where}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated or malformed pickles raise many types
        text = str(exc).strip().splitlines()
        raise UserError(f"{where} is damaged or not a snapshot ({type(exc).__name__}: {text[0] if text else ''})") from None


def find_records(obj: Any, depth: int = 0) -> Iterator[tuple[str, Recorded]]:
    """``(key path, record)`` of the top-level records in a loaded snapshot (dicts and lists walked)."""
    if depth > 4:
        return
    if isinstance(obj, Recorded):
        yield "", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            for sub, rec in find_records(value, depth + 1):
                yield (f"{key}.{sub}" if sub else str(key)), rec

