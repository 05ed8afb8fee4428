"""A small reader of CTranslate2 ``model.bin`` files (binary version 6).

Layout (little endian)::

    uint32 version                      (6)
    string spec name                    (uint16 length incl. NUL, utf-8 bytes, NUL)
    uint32 spec revision
    uint32 n_variables
    n_variables x:
        string name
        uint8  ndim
        ndim x uint32 dims
        uint8  dtype id                 (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)
        uint32 nbytes
        nbytes raw bytes
    uint32 n_aliases
    n_aliases x: string alias, string target

The header is scanned once (variable data is skipped with ``seek``); only the variables asked for are
read, so e.g. ``read_ct2(path, prefix="encoder/")`` never materialises the decoder weights.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np

from smoothclap.errors import BadInputError

SUPPORTED_VERSIONS = (6,)

# dtype id -> (numpy dtype used to read the raw bytes, item size). bfloat16 is read as uint16 and
# widened to float32 (numpy has no bfloat16).
_DTYPES: dict[int, tuple[str, np.dtype, int]] = {
    0: ("float32", np.dtype("<f4"), 4),
    1: ("int8", np.dtype("i1"), 1),
    2: ("int16", np.dtype("<i2"), 2),
    3: ("int32", np.dtype("<i4"), 4),
    4: ("float16", np.dtype("<f2"), 2),
    5: ("bfloat16", np.dtype("<u2"), 2),
}


@dataclass(frozen=True)
class CT2Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "int8", "int16", "int32", "float16", "bfloat16"
    offset: int  # byte offset of the raw data in the file
    nbytes: int


@dataclass
class CT2Index:
    """What a ``model.bin`` holds, without the weights."""

    path: str
    version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> target variable

    def names(self) -> list[str]:
        return list(self.variables) + list(self.aliases)

    def resolve(self, name: str) -> CT2Variable:
        seen = set()
        while name in self.aliases and name not in self.variables:
            if name in seen:
                raise BadInputError(self.path, f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"{self.path}: no variable {name!r}") from None


class _Reader:
    def __init__(self, f: BinaryIO, path: str, size: int):
        self.f, self.path, self.size = f, path, size

    def take(self, n: int, what: str) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise BadInputError(self.path, f"truncated CTranslate2 file (while reading {what})")
        return b

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u16(what)
        if n == 0:
            raise BadInputError(self.path, f"corrupt CTranslate2 file (empty string for {what})")
        raw = self.take(n, what)
        if raw[-1] != 0:
            raise BadInputError(self.path, f"corrupt CTranslate2 file (string for {what} not NUL-terminated)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError(self.path, f"corrupt CTranslate2 file (bad utf-8 in {what})") from None


def scan_ct2(path: str | os.PathLike) -> CT2Index:
    """Read the header and variable directory of a CTranslate2 ``model.bin`` (no weights)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    spath = str(path)
    if not path.is_file():
        raise BadInputError(spath, "no such CTranslate2 model file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, spath, size)
        version = r.u32("version")
        if version not in SUPPORTED_VERSIONS:
            raise BadInputError(
                spath,
                f"unsupported CTranslate2 binary version {version} (supported: "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}); not a CTranslate2 model.bin?",
            )
        spec = r.string("spec name")
        revision = r.u32("spec revision")
        n_vars = r.u32("variable count")
        index = CT2Index(path=spath, version=version, spec=spec, revision=revision)
        for i in range(n_vars):
            name = r.string(f"name of variable {i}")
            ndim = r.u8(f"ndim of {name}")
            dims = struct.unpack(f"<{ndim}I", r.take(4 * ndim, f"dims of {name}")) if ndim else ()
            dtype_id = r.u8(f"dtype of {name}")
            if dtype_id not in _DTYPES:
                raise BadInputError(spath, f"unsupported dtype id {dtype_id} for variable {name!r}")
            dtype_name, _, itemsize = _DTYPES[dtype_id]
            nbytes = r.u32(f"size of {name}")
            expected = int(np.prod(dims, dtype=np.int64)) * itemsize if ndim else itemsize
            if nbytes != expected:
                raise BadInputError(
                    spath,
                    f"corrupt CTranslate2 file (variable {name!r}: {nbytes} bytes, expected {expected} "
                    f"for shape {tuple(dims)} {dtype_name})",
                )
            offset = f.tell()
            if offset + nbytes > size:
                raise BadInputError(spath, f"truncated CTranslate2 file (data of {name!r})")
            f.seek(nbytes, os.SEEK_CUR)
            index.variables[name] = CT2Variable(name, tuple(dims), dtype_name, offset, nbytes)
        n_aliases = r.u32("alias count")
        for _ in range(n_aliases):
            alias = r.string("alias name")
            target = r.string(f"target of alias {alias}")
            index.aliases[alias] = target
    return index


def _decode(raw: bytes, var: CT2Variable) -> np.ndarray:
    _, dt, _ = next(v for v in _DTYPES.values() if v[0] == var.dtype)
    arr = np.frombuffer(raw, dtype=dt)
    if var.dtype == "bfloat16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    else:
        arr = arr.astype(dt.newbyteorder("="), copy=True)  # writable, native byte order
    return arr.reshape(var.shape)


def read_ct2(
    path: str | os.PathLike,
    prefix: str | None = None,
    names: Iterable[str] | None = None,
    index: CT2Index | None = None,
) -> dict[str, np.ndarray]:
    """Read variables of a CTranslate2 ``model.bin`` as numpy arrays (original dtypes; bfloat16 as
    float32).

    ``prefix``: only variables (and aliases) whose name starts with it, e.g. ``"encoder/"``.
    ``names``: exactly these variables (aliases are resolved); a missing one raises ``KeyError``.
    Neither: all variables. Only the selected variables are read from disk.
    """
    index = index or scan_ct2(path)
    if names is not None:
        wanted = list(names)
    else:
        keep: Callable[[str], bool] = (lambda n: n.startswith(prefix)) if prefix else (lambda n: True)
        wanted = [n for n in index.names() if keep(n)]
    targets = {n: index.resolve(n) for n in wanted}
    out: dict[str, np.ndarray] = {}
    loaded: dict[str, np.ndarray] = {}
    with open(index.path, "rb") as f:
        for n, var in sorted(targets.items(), key=lambda kv: kv[1].offset):
            if var.name not in loaded:
                f.seek(var.offset)
                raw = f.read(var.nbytes)
                if len(raw) != var.nbytes:
                    raise BadInputError(index.path, f"truncated CTranslate2 file (data of {var.name!r})")
                loaded[var.name] = _decode(raw, var)
            out[n] = loaded[var.name]
    return {n: out[n] for n in wanted}


__all__ = ["CT2Index", "CT2Variable", "read_ct2", "scan_ct2", "SUPPORTED_VERSIONS"]
