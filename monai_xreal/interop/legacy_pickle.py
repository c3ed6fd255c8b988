# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The weights of a whole pickled ``nn.Module`` (``torch.save(model)``), read without running any of its code.

Some published models exist only as a pickled module, e.g. cheXwhatsApp's real-CXR lung U-Net in PyTorch's legacy
(pre-1.6, non-zip) format. ``torch.load(weights_only=True)`` refuses those (the legacy format stores module classes
as persistent ids), and ``weights_only=False`` would run whatever the file names. This reader is an allow-listed
unpickler: the module classes it is told about become inert records of their attributes, tensors are rebuilt from
their raw storages by this module's own code, and any other global the file names is refused. The result is a
plain state dict (``_parameters`` and ``_buffers`` of every sub-module, dotted names as ``state_dict()`` gives),
to load into a network defined here.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch

from monai_xreal.errors import XRealInputError

__all__ = ["PickledModule", "read_pickled_module"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip


class _ModuleRecord:
    """An allow-listed module class's instance: only its pickled attributes, no behaviour."""

    class_name = ""
    state: dict[str, Any] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)


@dataclass
class _Storage:
    dtype: torch.dtype
    numel: int
    data: torch.Tensor | None = None  # flat, filled once the raw bytes are read


@dataclass
class _TensorRecord:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> torch.Tensor:
        if self.storage.data is None:
            raise XRealInputError("input", "a tensor's storage is missing from the file")
        return torch.as_strided(self.storage.data, self.size, self.stride, self.offset).clone()


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_) -> _TensorRecord:
    return _TensorRecord(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRecord, *_) -> _TensorRecord:
    return data


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals a module pickle needs; everything else is refused by name."""

    def __init__(self, file: BinaryIO, modules: Collection[str], storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="latin1")
        self.modules = set(modules)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in self.modules:
            return type(name, (_ModuleRecord,), {"class_name": qualified})
        if qualified == "collections.OrderedDict":
            return collections.OrderedDict
        if qualified in ("builtins.set", "__builtin__.set", "builtins.frozenset", "__builtin__.frozenset"):
            return set if name == "set" else frozenset
        if qualified == "torch._utils._rebuild_tensor_v2":
            return _rebuild_tensor
        if qualified == "torch._utils._rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # the storage's type, read by persistent_load
        raise pickle.UnpicklingError(f"refused to load {qualified}: not allow-listed")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unknown persistent id {type(pid).__name__}")
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # the legacy format's reference to a module class (found by find_class); source unused
            if not (isinstance(pid[1], type) and issubclass(pid[1], _ModuleRecord)):
                raise pickle.UnpicklingError(f"refused module class {pid[1]!r}")
            return pid[1]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        type_name, key, numel = pid[1], str(pid[2]), int(pid[4])
        if type_name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"refused storage type {type_name!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views of the oldest format are not supported")
        return self.storages.setdefault(key, _Storage(_STORAGE_DTYPES[type_name], numel))


def _flatten(record: _ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (record.state.get(group) or {}).items():
            if isinstance(value, _TensorRecord):
                tensors[prefix + name] = value.materialise()
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, _ModuleRecord):
            tensors.update(_flatten(child, f"{prefix}{name}."))
        elif child is not None:
            raise XRealInputError("input", f"sub-module {prefix}{name} is not an allow-listed module class")
    return tensors


def _read_legacy(f: BinaryIO, modules: Collection[str]) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    # the header records (magic number, protocol version, system info) are plain values: read them with no class
    # allowed, so that a crafted header cannot run anything either
    if _AllowListUnpickler(f, (), storages).load() != _LEGACY_MAGIC:
        raise XRealInputError("input", "not a PyTorch checkpoint (bad magic number)")
    _AllowListUnpickler(f, (), storages).load()  # protocol version
    _AllowListUnpickler(f, (), storages).load()  # system info (endianness, type sizes; tensors are little-endian)
    root = _AllowListUnpickler(f, modules, storages).load()
    keys = _AllowListUnpickler(f, (), storages).load()
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        size = numel * torch.empty((), dtype=storage.dtype).element_size()
        raw = f.read(size)
        if numel != storage.numel or len(raw) != size:
            raise XRealInputError("input", f"storage {key} is truncated or inconsistent")
        storage.data = torch.frombuffer(bytearray(raw), dtype=storage.dtype)
    return root, storages


def _read_zip(path: Path, modules: Collection[str]) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise XRealInputError("input", f"{path}: not a PyTorch zip checkpoint (no single data.pkl)")
        folder = pickles[0][: -len("data.pkl")]
        root = _AllowListUnpickler(io.BytesIO(archive.read(pickles[0])), modules, storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{folder}data/{key}")
            data = torch.frombuffer(bytearray(raw), dtype=storage.dtype) if raw else torch.empty(0, dtype=storage.dtype)
            if data.numel() != storage.numel:
                raise XRealInputError("input", f"storage {key} is truncated or inconsistent")
            storage.data = data
    return root, storages


class PickledModule(NamedTuple):
    """What :func:`read_pickled_module` found: ``state`` (``{dotted name: tensor}``, in the order of the modules'
    attributes, like ``module.state_dict()``) and ``attributes``, the top module's plain settings (numbers,
    strings, booleans and tuples of them, e.g. ``{"upscale_mode": "bilinear"}``)."""

    state: dict[str, torch.Tensor]
    attributes: dict[str, Any]


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def read_pickled_module(path: str | Path, module_classes: Collection[str]) -> PickledModule:
    """The parameters, buffers and settings of a module saved whole with ``torch.save(model)``.

    Args:
        path: the file, in PyTorch's legacy format or its zip format.
        module_classes: the qualified names of the module classes the file may contain, as the pickle spells them
            (e.g. ``"lung_segmentation.PretrainedUNet"``, ``"torch.nn.modules.conv.Conv2d"``). Besides these only
            ``collections.OrderedDict``, ``set``, tensor and parameter rebuilding and torch storage types are accepted.


    Raises:
        XRealInputError: a missing or corrupt file, or one naming anything not allow-listed (the name is given).
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("input", f"no such file: {path}")
    try:
        if zipfile.is_zipfile(path):
            root, _ = _read_zip(path, module_classes)
        else:
            with open(path, "rb") as f:
                root, _ = _read_legacy(f, module_classes)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError, TypeError, AttributeError) as err:
        if isinstance(err, XRealInputError):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise XRealInputError("input", f"{path}: cannot read safely: {first}") from err
    if not isinstance(root, _ModuleRecord):
        raise XRealInputError("input", f"{path} does not hold a pickled module (found {type(root).__name__})")
    attributes = {k: v for k, v in root.state.items() if not k.startswith("_") and k != "training" and _plain(v)}
    return PickledModule(_flatten(root), attributes)
