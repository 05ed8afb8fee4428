"""Audio inside containers, by reference: WebDataset tar shards and Hugging Face (Arrow) datasets.

A clip of such a container is named in a corpus table's ``file`` column by a string reference:

* ``wds://<absolute shard path>#<member name>``: a member of a tar shard (e.g.
  ``wds:///data/shards/train-003.tar#spk01/clip_0042.flac``);
* ``hf://<absolute .arrow file>#<row>``: row ``<row>`` (0-based, within that file) of the
  ``audio`` column of an Arrow file of a Hugging Face dataset (a ``save_to_disk`` folder's
  ``data-0000k-of-0000n.arrow``, or a file of ``datasets``' own cache for Parquet files and Hub
  ids); ``hf://<file>#<row>/<column>`` when the Audio column has another name.

``%`` and ``#`` inside the path or member name are written ``%25`` and ``%23``. The audio is never
unpacked to files: :func:`audio_bytes` returns one clip's encoded bytes (a ``pread`` at the
member's offset in the shard, or a zero-copy slice of the memory-mapped Arrow file, copied once),
which :mod:`smoothclap.audio` decodes from memory with soundfile.

What a process holds: per shard, an index of its members (name -> offset, size), built once by
reading the tar headers (or while :mod:`smoothclap.corpora.datasets` lists the shard); per Arrow
file, the memory map and its record batches (no audio is read until a row is asked for); per clip
that was listed or hashed, the sha1 of its bytes and its duration from the header (so cache keys and
length sorting need no second read). No container's audio is ever held whole. An index is dropped
and rebuilt when its file's size or modification time changes.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from collections import OrderedDict

import numpy as np

from .errors import BadInputError

WDS = "wds://"
HF = "hf://"
PREFIXES = (WDS, HF)

#: Audio members of a WebDataset sample, by extension (what soundfile decodes).
WDS_AUDIO_EXTS = ("flac", "wav", "mp3", "ogg", "opus")


class ContainerError(BadInputError, OSError):
    """A clip (or its container) that cannot be read: bad input naming the reference (shard and
    member, or Arrow file and row) and the reason; an ``OSError`` for callers that treat unreadable
    files as such (:func:`smoothclap.audio.content_prefixes`)."""


def is_ref(x) -> bool:
    """Whether ``x`` is a container reference (``wds://...`` / ``hf://...``), not a file path."""
    return isinstance(x, str) and x.startswith(PREFIXES)


_ESC = re.compile(r"%(25|23)")


def _enc(s: str) -> str:
    return s.replace("%", "%25").replace("#", "%23")


def _dec(s: str) -> str:
    return _ESC.sub(lambda m: "%" if m.group(1) == "25" else "#", s)


def wds_ref(shard, member: str) -> str:
    """The reference of tar member ``member`` of ``shard`` (made absolute)."""
    return f"{WDS}{_enc(os.path.abspath(os.fspath(shard)))}#{_enc(member)}"


def hf_ref(arrow_file, row: int, column: str = "audio") -> str:
    """The reference of row ``row`` (0-based, within the file) of ``column`` in an Arrow file."""
    col = "" if column == "audio" else f"/{_enc(column)}"
    return f"{HF}{_enc(os.path.abspath(os.fspath(arrow_file)))}#{int(row)}{col}"


def parse_ref(ref: str) -> tuple[str, str, str | int, str | None]:
    """``(kind, container path, item, column)``: kind ``"wds"`` (item = member name, column None)
    or ``"hf"`` (item = row, column = the Audio column). ContainerError when malformed."""
    for prefix, kind in ((WDS, "wds"), (HF, "hf")):
        if ref.startswith(prefix):
            body = ref[len(prefix):]
            path, sep, item = body.rpartition("#")
            if not sep or not path or not item:
                break
            path = _dec(path)
            if kind == "wds":
                return kind, path, _dec(item), None
            row, _, col = item.partition("/")
            if not row.isdigit():
                break
            return kind, path, int(row), _dec(col) if col else "audio"
    raise ContainerError(ref, "malformed container reference (wds://<shard>#<member> or hf://<arrow file>#<row>)")


def _ident(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# -- per-process state ------------------------------------------------------------------------------
class _Shard:
    """A tar shard's member index: name -> (data offset, size)."""

    def __init__(self, path: str, ident: tuple, members: dict[str, tuple[int, int]]):
        self.path, self.ident, self.members = path, ident, members


class _Arrow:
    """A memory-mapped Arrow file of a Hugging Face dataset: its table (zero-copy over the map)."""

    def __init__(self, path: str, ident: tuple, table):
        self.path, self.ident, self.table = path, ident, table
        self._cols: dict[str, tuple] = {}
        self.lock = threading.Lock()

    def column(self, name: str):
        """(chunks, start row of each chunk) of ``name``."""
        got = self._cols.get(name)
        if got is None:
            if name not in self.table.column_names:
                raise ContainerError(self.path, f"no column {name!r} (columns: {', '.join(self.table.column_names)})")
            chunks = self.table.column(name).chunks
            starts = np.cumsum([0] + [len(c) for c in chunks])
            got = self._cols[name] = (chunks, starts)
        return got


_LOCK = threading.RLock()
_SHARDS: "OrderedDict[str, _Shard]" = OrderedDict()
_ARROWS: "OrderedDict[str, _Arrow]" = OrderedDict()
_MAX_SHARDS = 4096  # member indexes are small (a few dozen bytes per member)
_MAX_ARROWS = 256  # memory maps
#: reference -> (container identity, sha1 hex, seconds): what listing or hashing learnt of each clip.
_KNOWN: "OrderedDict[str, tuple]" = OrderedDict()
_MAX_KNOWN = 1 << 22


def _reinit_after_fork() -> None:  # a lock held by another thread at fork time would never be released
    global _LOCK
    _LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def clear() -> None:
    """Forget every index, memory map and remembered hash of this process."""
    with _LOCK:
        _SHARDS.clear()
        _ARROWS.clear()
        _KNOWN.clear()


def _stat(path: str, what: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise ContainerError(path, f"{what} not found") from None
    except OSError as e:
        raise ContainerError(path, f"unreadable {what} ({e.__class__.__name__}: {e})") from None


def _put(cache: OrderedDict, key: str, value, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def scan_tar(path: str, on_member=None) -> tuple[dict[str, tuple[int, int]], str | None]:
    """Read a tar shard's headers in order -> ``({member name: (data offset, size)}, problem)`` for its
    regular files. ``on_member(name, read)`` is called for every member while the shard is read
    sequentially; ``read()`` returns that member's bytes (ContainerError when truncated). ``problem``
    says why the members after the last one indexed cannot be read (a corrupted header, a cut
    shard), else None. ContainerError naming the shard when it is not a tar at all."""
    members: dict[str, tuple[int, int]] = {}
    problem = None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with tarfile.open(fileobj=f, mode="r:") as tf:
                while True:
                    try:
                        ti = tf.next()
                    except (tarfile.TarError, EOFError) as e:
                        problem = f"unreadable after byte {tf.offset} ({e.__class__.__name__}: {e})"
                        break
                    if ti is None:
                        problem = _tail_problem(f, tf.offset, size)
                        break
                    if ti.isreg():
                        members[ti.name] = (ti.offset_data, ti.size)
                        if on_member is not None:
                            def read(ti=ti):
                                if ti.offset_data + ti.size > size:
                                    raise ContainerError(wds_ref(path, ti.name), "truncated tar member (the shard "
                                                         f"ends {ti.offset_data + ti.size - size} bytes early)")
                                f.seek(ti.offset_data)
                                return f.read(ti.size)

                            on_member(ti.name, read)
                    tf.members.clear()  # keep no TarInfo list: memory stays flat with the shard's size
    except FileNotFoundError:
        raise ContainerError(path, "tar shard not found") from None
    except IsADirectoryError:
        raise ContainerError(path, "a folder, not a tar shard") from None
    except (tarfile.TarError, EOFError) as e:
        why = f"{e.__class__.__name__}: {e}"
        try:
            with open(path, "rb") as f:
                if f.read(2) == b"\x1f\x8b":
                    why = "gzip-compressed: shards are read in place, so they must be plain .tar files"
        except OSError:
            pass
        raise ContainerError(path, f"not a readable tar shard ({why})") from None
    except OSError as e:
        raise ContainerError(path, f"unreadable tar shard ({e.__class__.__name__}: {e})") from None
    return members, problem


def _tail_problem(f, offset: int, size: int) -> str | None:
    """Why the bytes after the last header tarfile accepted are not the end of the archive (only
    zero blocks belong there: tarfile stops quietly at a corrupted header), or None."""
    f.seek(offset)
    pos = offset
    while pos < size:
        block = f.read(1 << 20)
        if not block:
            break
        if block.strip(b"\0"):
            return f"corrupted tar header at byte {offset}: the {size - offset} bytes after it are not read"
        pos += len(block)
    return None


def register_shard(path: str, members: dict[str, tuple[int, int]], st: os.stat_result) -> None:
    """Keep ``members`` (from :func:`scan_tar`) as the index of ``path`` (stat taken before the scan)."""
    with _LOCK:
        _put(_SHARDS, path, _Shard(path, _ident(st), members), _MAX_SHARDS)


def _shard(path: str) -> _Shard:
    st = _stat(path, "tar shard")
    ident = _ident(st)
    with _LOCK:
        s = _SHARDS.get(path)
        if s is not None and s.ident == ident:
            _SHARDS.move_to_end(path)
            return s
    members, _ = scan_tar(path)  # what can be read of a damaged shard (listing names the damage)
    register_shard(path, members, st)
    return _SHARDS[path]


def open_arrow(path: str) -> _Arrow:
    """The memory-mapped Arrow file ``path`` (opened once per process; again when it changed)."""
    st = _stat(path, "Arrow file")
    ident = _ident(st)
    with _LOCK:
        a = _ARROWS.get(path)
        if a is not None and a.ident == ident:
            _ARROWS.move_to_end(path)
            return a
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            table = pa.ipc.open_stream(source).read_all()  # what datasets writes
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(source).read_all()
    except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError: a file that is not Arrow
        raise ContainerError(path, f"not a readable Arrow file ({e.__class__.__name__}: {e})") from None
    a = _Arrow(path, ident, table)
    with _LOCK:
        _put(_ARROWS, path, a, _MAX_ARROWS)
    return a


def arrow_cell(a: _Arrow, row: int, column: str):
    """The Audio struct ``{bytes, path}`` of ``row`` as ``(bytes or None, path or None)``."""
    chunks, starts = a.column(column)
    if not 0 <= row < starts[-1]:
        raise ContainerError(hf_ref(a.path, row, column), f"no row {row} (the file holds {int(starts[-1])})")
    k = int(np.searchsorted(starts, row, side="right")) - 1
    cell = chunks[k][row - int(starts[k])]
    if not cell.is_valid:
        return None, None
    import pyarrow as pa

    if not isinstance(cell, pa.StructScalar):  # a binary or string cell
        value = cell.as_py()
        return (value, None) if isinstance(value, (bytes, bytearray)) else (None, str(value))
    data, path = cell.get("bytes"), cell.get("path")
    data = data.as_py() if data is not None and data.is_valid else None
    path = path.as_py() if path is not None and path.is_valid else None
    return data, path


# -- what a clip is ---------------------------------------------------------------------------------
def audio_bytes(ref: str) -> bytes:
    """The encoded bytes of the clip ``ref`` names (never the whole container). ContainerError
    naming ``ref`` when the container or the item cannot be read."""
    try:
        return _audio_bytes(ref)
    except ContainerError as e:
        if e.path == ref:
            raise
        raise ContainerError(ref, e.reason) from None


def _audio_bytes(ref: str) -> bytes:
    kind, path, item, column = parse_ref(ref)
    if kind == "wds":
        s = _shard(path)
        loc = s.members.get(item)
        if loc is None:
            raise ContainerError(ref, "no such member in the tar shard")
        off, size = loc
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.pread(fd, size, off)
            finally:
                os.close(fd)
        except OSError as e:
            raise ContainerError(ref, f"unreadable tar shard ({e.__class__.__name__}: {e})") from None
        if len(data) < size:
            raise ContainerError(ref, f"truncated tar member (holds {len(data)} of {size} bytes)")
        return data
    a = open_arrow(path)
    data, where = arrow_cell(a, item, column)
    if data is None:
        raise ContainerError(ref, "no audio bytes in this row" + (f" (only a path: {where})" if where else ""))
    return data


def _container_ident(ref: str) -> tuple:
    kind, path, _, _ = parse_ref(ref)
    try:
        return _ident(os.stat(path))
    except OSError:
        return ()


def remember(ref: str, sha1: str, seconds: float, ident: tuple | None = None) -> None:
    """Record what reading ``ref``'s bytes gave (its sha1 and header duration) for this process."""
    ident = _container_ident(ref) if ident is None else ident
    with _LOCK:
        _put(_KNOWN, ref, (ident, sha1, float(seconds)), _MAX_KNOWN)


def known(ref: str, ident: tuple | None = None) -> tuple | None:
    """``(container identity, sha1, seconds)`` remembered for ``ref`` while its container (of
    identity ``ident``, else stat'ed now) is unchanged; None when not known."""
    with _LOCK:
        got = _KNOWN.get(ref)
    if got is None or got[0] != (_container_ident(ref) if ident is None else ident):
        return None
    return got


def header_info(data: bytes) -> tuple[float, int, int]:
    """(seconds, frames, sample rate) from the header of encoded audio ``data`` (soundfile; raises)."""
    import soundfile as sf

    info = sf.info(io.BytesIO(data))
    return (info.frames / float(info.samplerate) if info.samplerate else float("nan")), info.frames, info.samplerate


def _learn(ref: str) -> tuple:
    got = known(ref)
    if got is not None:
        return got
    ident = _container_ident(ref)
    data = audio_bytes(ref)
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        seconds = header_info(data)[0]
    except Exception:  # noqa: BLE001 - unreadable header: reading the audio says why
        seconds = 0.0
    remember(ref, sha1, seconds, ident)
    return ident, sha1, seconds


def ref_hash(ref: str) -> str:
    """sha1 of the clip's encoded bytes (the same as :func:`smoothclap.audio.file_hash` of the same
    audio as a file): the content key of every cache."""
    return _learn(ref)[1]


def ref_seconds(ref: str) -> float:
    """The clip's duration from its header (0 when unreadable)."""
    return _learn(ref)[2]


__all__ = ["ContainerError", "HF", "WDS", "audio_bytes", "clear", "hf_ref", "is_ref", "parse_ref", "ref_hash",
           "ref_seconds", "remember", "wds_ref"]
