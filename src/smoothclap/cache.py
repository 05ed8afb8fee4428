"""The one on-disk cache: frozen-tower embeddings and eGeMAPS functionals, appended to shard files.

Layout under the cache root (default :data:`DEFAULT_CACHE_DIR`, ``cache_dir`` in every config and
``--cache-dir`` on every command)::

    <root>/emb/<tower slug>/shards/<name>.npy              tower embeddings (EmbeddingCache)
    <root>/emb/<tower slug>/shards/<name>.idx              ... and their index
    <root>/egemaps/<feature set>-<version>/shards/...       openSMILE functionals (smoothclap.egemaps)
    <folder>/<key[:2]>/<key>.npy                            the old layout: still read, see migrate()

An audio key hashes the file's bytes together with the preprocessing (sample rate, loudness
normalisation); a text key hashes the string; the tower folder is named from the tower's
``cache_key``, so changing the tower, the file or the preprocessing never reuses a stale entry.

**Format.** A cache folder holds shards. A shard is two files:

* ``<name>.npy``: a genuine NumPy ``.npy`` file (:mod:`numpy.lib.format`, version 1.0 header,
  little-endian float, C order) of shape ``[capacity, width]`` (capacity :data:`SHARD_ROWS` =
  65,536 rows unless configured), preallocated with ``ftruncate`` (sparse: only written rows take
  disk space). ``np.load(path, mmap_mode="r", allow_pickle=False)`` maps it.
* ``<name>.idx``: an append-only sequence of fixed 40-byte records, record ``i`` describing row
  ``i``: magic ``b"SCI1"``, the key (20 bytes: the sha1 digest), row, length, CRC-32 of the row's
  bytes, CRC-32 of the record's first 36 bytes. Nothing else: no header, no pickle, no code.

A ``put`` writes the row (``pwrite`` into the data file) and *then* its index record (``pwrite``
at ``row * 40``), both before it returns: an entry exists once its record exists, and the
record can only refer to bytes already handed to the kernel. Both files are fsync'ed (data
first) every 4,096 puts, at ``flush()`` / ``close()`` / interpreter exit, and by a background
thread once appended entries are :data:`FLUSH_AFTER_S` (1 s) old, also when the writer idles
(on NFS, the fsync is what makes them visible to other machines).

**What a crash loses.** ``kill -9`` of a writer: at most the entries whose ``put`` had not
returned (every returned put is in the kernel's page cache, which outlives the process). A
machine crash or power loss: at most the entries since the last fsync (about the last second). A torn tail (a partial
record) is ignored by readers and cut off by the next writer of that shard; a record whose
checksum fails, or whose row fails its CRC-32 (flipped or truncated bytes, stale NFS pages), is
a miss: the entry is recomputed and appended again, never returned wrong. A write that fails (a
full disk) raises an ``OSError`` naming the shard file being written (``.npy`` or ``.idx``), after
cutting off a partly written record; creating a shard leaves no temporary file behind.

**Writers and locking.** A writer process appends only to shards it holds exclusively: it takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on the ``.idx`` file of a shard with free rows (left by an
earlier run or a killed process), or creates a new shard under a fresh random name. A lock never
blocks and dies with its process, so there are no stale locks; a rerun after a crash reuses the
free capacity of the shards left behind. Several processes (``torchrun`` ranks, the eGeMAPS
pool, several machines) therefore write one tower concurrently without ever sharing a file for
writing, and readers need no lock at all: records are fixed-size, written after their rows, and
checksummed. In one process every :class:`ArrayCache` of the same folder shares one store (one
in-memory index, one writer per shard width); after ``fork`` the child starts afresh.

**Reading.** A process loads the ``.idx`` files once into a sorted in-memory index (numpy arrays:
32 bytes per entry, e.g. 32 MB for a million entries) and reads the new records of grown index
files when a key is missed (at most every few milliseconds). ``get`` is a binary search plus one
``pread`` of the row, checked against its CRC-32. ``locate(keys)`` returns a handle whose
``rows(idx)`` gathers only those rows from the memory-mapped shards (or, ``mapped=False``, with
``pread``: nothing mapped, so the pages read never count in the process's resident set), for
training on a corpus larger than memory. The old per-file layout is read when the shards miss
(:func:`migrate` moves it into shards). A process keeps at most 64 data files open for reading and 16 shards open for
writing, whatever the number of folders (the least recently used writer is finished: fsync'ed and
unlocked, its free rows reused by the next claim).

**Why not LMDB or SQLite.** Both update one database file in place under byte-range locks (LMDB
and SQLite's WAL mode also share a memory map between processes): the SQLite FAQ and LMDB's
documented caveats both warn against network file systems (locks are unreliable there, and
another machine can see pages torn across a writer's update), and one database with one writer
at a time would serialise the ranks of a distributed extraction. Per-process shards need one lock per file, held by one process, that may
fail safely (without ``flock`` support on NFS each writer simply creates its own shards), and
everything a reader trusts is checksummed. File count per tower folder: ``2 * ceil(N / 65,536)``
plus two per writer with a partly filled shard (about 32 files for a million entries).

Loading never unpickles (``allow_pickle=False`` everywhere; shard headers must describe a plain
float array). Files are created with mode ``0o666 & ~umask`` (directories ``0o777 & ~umask``).
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger("smoothclap")

#: Where caches live unless a config / command says otherwise (``cache_dir``, ``--cache-dir``).
DEFAULT_CACHE_DIR = "~/.cache/smoothclap"

#: Rows per shard (its capacity). 65,536 rows x 384 float32 = 96 MiB apparent size (sparse).
SHARD_ROWS = 1 << 16
#: fsync a writer's shard after this many puts (and at flush / close / exit).
SYNC_EVERY = 4096
SHARDS_DIR = "shards"

_MAGIC = 0x31494353  # b"SCI1" little-endian
_REC_SIZE = 40
_REC = np.dtype({"names": ["magic", "kp", "k2", "k3", "row", "length", "crc", "rcrc"],
                 "formats": ["<u4", ">u8", ">u8", ">u4", "<u4", "<u4", "<u4", "<u4"],
                 "offsets": [0, 4, 12, 20, 24, 28, 32, 36], "itemsize": _REC_SIZE})
_HEAD = struct.Struct("<I20sIII")  # the first 36 bytes of a record
_TAIL = struct.Struct("<I")
_KEY = struct.Struct(">QQI")  # a 20-byte key as (prefix, middle, end): the in-memory index
_KEY_DT = np.dtype([("p", ">u8"), ("k2", ">u8"), ("k3", ">u4")])
_REFRESH_MIN_S = 0.005  # a miss rereads grown index files at most this often
_MAX_READ_FDS = 64  # data files kept open for reading, per process (least recently used closed)
_MAX_WRITERS = 16  # shards held open for appending, per process (least recently used finished)
_PREAD_MAX_BYTES = 16 << 20  # the largest single read of Located(mapped=False)
_MERGE_MIN = 1 << 16  # new entries kept in a dict before they are merged into the sorted arrays
_LEGACY_DIR = re.compile(r"[0-9a-f]{2}")
_LEGACY_FILE = re.compile(r"([0-9a-f]{40})\.npy")


def cache_root(cache_dir: str | Path | None) -> Path | None:
    """``cache_dir`` as an expanded Path (``"~"`` never becomes a folder); None = caching off."""
    return None if cache_dir in (None, "") else Path(cache_dir).expanduser()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def audio_key(content_hash: str, preprocessing: str) -> str:
    return hashlib.sha1(f"{content_hash}|{preprocessing}".encode()).hexdigest()


def _slug(spec: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec)[-60:]
    return f"{readable}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _kb(key: str) -> bytes:
    """The 20 stored key bytes: the digest of a sha1 hex key, else the sha1 of the string."""
    if len(key) == 40:
        try:
            return bytes.fromhex(key)
        except ValueError:
            pass
    return hashlib.sha1(key.encode("utf-8")).digest()


def _naming(e: OSError, path: str) -> OSError:
    """``e`` naming ``path``, the file being written (``pwrite`` / ``fsync`` / ``write`` errors name no
    file, and a temporary file's name means nothing to the user): a full disk says where."""
    if e.errno is None or (e.filename is not None and not os.path.basename(os.fsdecode(e.filename)).startswith(".")):
        return e
    return type(e)(e.errno, e.strerror or str(e), path)


def _pwrite_all(fd: int, data, offset: int, path: str) -> None:
    """All of ``data`` at ``offset`` of ``fd`` (the file ``path``, named in any OSError)."""
    view = memoryview(data).cast("B")
    try:
        while len(view):
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(errno.EIO, "short write to the cache", path)
            view, offset = view[n:], offset + n
    except OSError as e:
        raise _naming(e, path) from None


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, n - len(out), offset + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_shard_header(path: str):
    """(dtype, capacity, width, data offset) of a shard's ``.npy``, or None when it is not a plain
    2-d C-order float array (a header is parsed as a literal, never unpickled)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            off = f.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError):
        return None
    if fortran or len(shape) != 2 or dtype.kind != "f" or dtype.hasobject or dtype.byteorder == ">":
        return None
    cap, width = int(shape[0]), int(shape[1])
    if cap < 1 or width < 1:
        return None
    return dtype, cap, width, off


def _load_legacy(path: Path) -> np.ndarray | None:
    try:  # one open() instead of exists() + open()
        arr = np.load(path, allow_pickle=False)
    except (FileNotFoundError, ValueError, OSError, EOFError):
        return None  # a missing or corrupt entry is recomputed, never trusted
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        return None
    return arr


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _new_data_file(data: str, tmp: str, dtype: np.dtype, cap: int, width: int) -> int:
    """A shard's ``.npy`` (header, then ``cap`` sparse rows), written as ``tmp`` and moved to ``data``;
    returns the rows' offset. Errors name ``data``; ``tmp`` never stays."""
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
        try:
            with os.fdopen(fd, "r+b") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (cap, width)})
                off = f.tell()
                f.flush()
                os.ftruncate(f.fileno(), off + cap * width * dtype.itemsize)  # sparse
                os.fsync(f.fileno())
            os.replace(tmp, data)
        except BaseException:
            _unlink(tmp)
            raise
    except OSError as e:
        raise _naming(e, data) from None
    return off


def _new_index_file(idx: str, tmp: str) -> int:
    """A shard's empty ``.idx``, locked before it has a name others can see; its descriptor. Errors
    name ``idx``; ``tmp`` never stays."""
    try:
        ifd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise _naming(e, idx) from None
    try:
        try:
            fcntl.flock(ifd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:  # e.g. NFS without lock support: a fresh name is ours alone anyway
            log.debug("cache: no flock on %s (%s); writing without reuse of its free rows", idx, e)
        os.replace(tmp, idx)
    except BaseException as e:
        os.close(ifd)
        _unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, idx) from None
        raise
    return ifd


class CacheCorruptError(ValueError):
    """A row located earlier no longer matches its checksum (the shard changed underneath)."""


# -- one folder's store: index + writers, shared by every ArrayCache of that folder in a process ----
class _Shard:
    __slots__ = ("no", "name", "idx", "data", "dtype", "cap", "width", "off", "consumed", "owned", "wfd")

    def __init__(self, no, name, sdir, header):
        self.no, self.name = no, name
        self.idx = os.path.join(sdir, name + ".idx")
        self.data = os.path.join(sdir, name + ".npy")
        self.dtype, self.cap, self.width, self.off = header
        self.consumed = 0  # bytes of the .idx already read into the index
        self.owned = False  # this process appends to it (holds its lock)
        self.wfd = None  # the writer's data fd while owned

    @property
    def rowbytes(self) -> int:
        return self.width * self.dtype.itemsize


class _Writer:
    __slots__ = ("shard", "ifd", "dfd", "row", "unsynced", "dirty_since")

    def __init__(self, shard, ifd, dfd, row):
        self.shard, self.ifd, self.dfd, self.row, self.unsynced = shard, ifd, dfd, row, 0
        self.dirty_since = 0.0

    def wrote(self, n: int) -> None:
        if not self.unsynced:
            self.dirty_since = time.monotonic()
        self.unsynced += n

    def sync(self) -> None:
        for fd, path in ((self.dfd, self.shard.data), (self.ifd, self.shard.idx)):  # rows first: a
            try:  # durable record never points at lost bytes
                os.fsync(fd)
            except OSError as e:
                raise _naming(e, path) from None
        self.unsynced = 0

    def cut_back(self) -> None:
        """After a failed append: drop the index bytes past the last complete record of this writer
        (a partly written record), so nothing half-written stays; its row is written again."""
        try:
            os.ftruncate(self.ifd, self.row * _REC_SIZE)
        except OSError:  # readers ignore a torn tail; the next writer of the shard cuts it
            pass


class _Store:
    def __init__(self, folder: str, shard_rows: int | None):
        self.dir = folder
        self.sdir = os.path.join(folder, SHARDS_DIR)
        self.lock = threading.RLock()
        self.shard_rows = int(shard_rows or SHARD_ROWS)
        self.sync_every = SYNC_EVERY
        self.shards: list[_Shard] = []
        self.by_name: dict[str, _Shard] = {}
        u32 = np.zeros(0, np.uint32)
        self.sp, self.k2, self.k3 = np.zeros(0, np.uint64), np.zeros(0, np.uint64), u32
        self.ss, self.sw, self.sc = u32, u32, u32
        self.delta: dict[bytes, tuple] = {}  # key -> ((shard, row, crc), ...), newest last
        self.loaded = False
        self.last_refresh = -1e18
        self.legacy = False
        self.writers: dict[tuple[str, int], _Writer] = {}
        self.fds: OrderedDict[int, int] = OrderedDict()

    # -- index ------------------------------------------------------------------------------------
    def _shard(self, name: str) -> _Shard | None:
        sh = self.by_name.get(name)
        if sh is None:
            header = _read_shard_header(os.path.join(self.sdir, name + ".npy"))
            if header is None:  # unreadable data header: its entries are missing (retried later)
                return None
            sh = _Shard(len(self.shards), name, self.sdir, header)
            self.shards.append(sh)
            self.by_name[name] = sh
        return sh

    def _names(self) -> list[str]:
        try:
            names = os.listdir(self.sdir)
        except OSError:
            return []
        return sorted(n[:-4] for n in names if n.endswith(".idx") and not n.startswith("."))

    def _ingest(self, sh: _Shard, upto: int | None = None, fd: int | None = None) -> int:
        """Read the complete records of ``sh`` after ``sh.consumed`` (up to ``upto`` bytes) into
        the index; records failing their checks are skipped. Returns the number added."""
        own = fd is None
        if own:
            try:
                fd = os.open(sh.idx, os.O_RDONLY)
            except OSError:
                return 0
        try:
            size = os.fstat(fd).st_size if upto is None else upto
            k = (size - sh.consumed) // _REC_SIZE
            if k <= 0:
                return 0
            buf = _pread_all(fd, k * _REC_SIZE, sh.consumed)
        finally:
            if own:
                os.close(fd)
        k = len(buf) // _REC_SIZE
        if k <= 0:
            return 0
        first = sh.consumed // _REC_SIZE
        sh.consumed += k * _REC_SIZE
        rec = np.frombuffer(buf, _REC, count=k)
        rows = np.arange(first, first + k, dtype=np.int64)
        ok = (rec["magic"] == _MAGIC) & (rec["row"] == rows) & (rows < sh.cap) & (rec["length"] == sh.width)
        cand = np.flatnonzero(ok)
        if len(cand):
            rc = rec["rcrc"][cand].tolist()
            mv = memoryview(buf)
            good = [i for i, c in zip(cand.tolist(), rc)
                    if zlib.crc32(mv[i * _REC_SIZE : i * _REC_SIZE + 36]) == c]
        else:
            good = []
        if not good:
            return 0
        g = rec[np.asarray(good, dtype=np.int64)]
        self._add(g["kp"], g["k2"], g["k3"], np.full(len(g), sh.no, np.uint32), g["row"], g["crc"])
        return len(g)

    def _add(self, p, k2, k3, s, w, c) -> None:
        if len(p) < 256:
            for i in range(len(p)):
                kb = _KEY.pack(int(p[i]), int(k2[i]), int(k3[i]))
                self.delta[kb] = self.delta.get(kb, ()) + ((int(s[i]), int(w[i]), int(c[i])),)
            self._maybe_merge()
        else:
            self._merge(p, k2, k3, s, w, c)

    def _maybe_merge(self) -> None:
        if len(self.delta) >= max(_MERGE_MIN, len(self.sp) >> 3):
            self._merge()

    def _merge(self, p=None, k2=None, k3=None, s=None, w=None, c=None) -> None:
        """Fold the dict of new entries (and the arrays given) into the sorted arrays."""
        parts = [(self.sp, self.k2, self.k3, self.ss, self.sw, self.sc)]
        if self.delta:
            items = [(kb, e) for kb, es in self.delta.items() for e in es]
            keys = np.frombuffer(b"".join(kb for kb, _ in items), _KEY_DT)
            loc = np.asarray([e for _, e in items], dtype=np.uint32).reshape(-1, 3)
            parts.append((keys["p"], keys["k2"], keys["k3"], loc[:, 0], loc[:, 1], loc[:, 2]))
            self.delta = {}
        if p is not None:
            parts.append((p, k2, k3, s, w, c))
        cols = [np.concatenate([np.asarray(part[j]) for part in parts]) for j in range(6)]
        cols = [cols[0].astype(np.uint64), cols[1].astype(np.uint64)] + [x.astype(np.uint32) for x in cols[2:]]
        order = np.argsort(cols[0], kind="stable")  # equal keys keep their age order: newest last
        self.sp, self.k2, self.k3, self.ss, self.sw, self.sc = (x[order] for x in cols)

    def refresh(self, force: bool = False) -> bool:
        """Read what other processes appended (new shards, grown index files). True if anything."""
        now = time.monotonic()
        if not force and now - self.last_refresh < _REFRESH_MIN_S:
            return False
        self.last_refresh = now
        added = 0
        for name in self._names():
            if name not in self.by_name:
                self._shard(name)
        for sh in self.shards:
            if not sh.owned:  # (what this process wrote is in the index already)
                # open + fstat, not stat: on NFS an open revalidates the attributes (close-to-open
                # consistency) where a stat may answer from a cache up to a minute old
                added += self._ingest(sh)
        try:
            with os.scandir(self.dir) as it:
                self.legacy = any(_LEGACY_DIR.fullmatch(e.name) and e.is_dir() for e in it)
        except OSError:
            self.legacy = False
        self.loaded = True
        return added > 0

    def _ensure_loaded(self) -> None:
        if not self.loaded:
            self.refresh(force=True)

    def _candidates(self, kb: bytes) -> list[tuple[int, int, int]]:
        """Where ``kb`` is stored, newest first."""
        out = list(reversed(self.delta.get(kb, ())))
        p, q2, q3 = _KEY.unpack(kb)
        sp = self.sp
        n = len(sp)
        if n:
            i = int(sp.searchsorted(p))
            hits = []
            while i < n and sp[i] == p:
                if self.k2[i] == q2 and self.k3[i] == q3:
                    hits.append((int(self.ss[i]), int(self.sw[i]), int(self.sc[i])))
                i += 1
            out.extend(reversed(hits))
        return out

    def _fd(self, sh: _Shard) -> int:
        if sh.owned and sh.wfd is not None:
            return sh.wfd
        fd = self.fds.get(sh.no)
        if fd is None:
            fd = self.fds[sh.no] = os.open(sh.data, os.O_RDONLY)
        _touch(_READ_LRU, (id(self), sh.no), self, _MAX_READ_FDS)
        return fd

    def _read(self, s: int, row: int, crc: int) -> np.ndarray | None:
        sh = self.shards[s]
        buf = np.empty(sh.width, sh.dtype)
        for attempt in range(2):
            try:
                n = os.preadv(self._fd(sh), [buf], sh.off + row * buf.nbytes)
            except OSError:
                n = -1
            if n == buf.nbytes and zlib.crc32(buf) == crc:
                return buf
            if sh.owned or attempt:
                break
            # Once more through a fresh descriptor: on NFS, pages cached by a descriptor opened
            # before another machine wrote the row are only revalidated by a new open.
            self._drop_reader_fd(sh.no)
        return None  # short (truncated) or changed bytes: a miss, recomputed

    def _find(self, kb: bytes) -> np.ndarray | None:
        for s, row, crc in self._candidates(kb):
            v = self._read(s, row, crc)
            if v is not None:
                return v
        return None

    def get(self, kb: bytes) -> np.ndarray | None:
        with self.lock:
            self._ensure_loaded()
            v = self._find(kb)
            if v is None and self.refresh():
                v = self._find(kb)
            return v

    def contains(self, kb: bytes) -> bool:
        with self.lock:
            self._ensure_loaded()
            if self._candidates(kb):
                return True
            return self.refresh() and bool(self._candidates(kb))

    def lookup_many(self, kbs: Sequence[bytes]):
        """Vectorised lookup of the newest record of each key: (shard [N] int64, -1 = missing,
        row [N], crc [N]). Rereads grown index files once when keys are missing."""
        n = len(kbs)
        sh = np.full(n, -1, np.int64)
        row = np.zeros(n, np.int64)
        crc = np.zeros(n, np.int64)
        if n == 0:
            return sh, row, crc
        q = np.frombuffer(b"".join(kbs), _KEY_DT)
        with self.lock:
            self._ensure_loaded()
            for attempt in range(2):
                todo = np.flatnonzero(sh < 0)
                if len(todo) == 0 or (attempt == 1 and not self.refresh(force=True)):
                    break
                if self.delta:  # the newest entries first
                    for i in todo.tolist():
                        d = self.delta.get(kbs[i])
                        if d:
                            sh[i], row[i], crc[i] = d[-1]
                    todo = todo[sh[todo] < 0]
                m = len(self.sp)
                if m == 0 or len(todo) == 0:
                    continue
                qp = q["p"][todo].astype(np.uint64)
                hi = self.sp.searchsorted(qp, side="right") - 1  # the last (newest) of a prefix
                hi_c = np.maximum(hi, 0)
                same_p = (hi >= 0) & (self.sp[hi_c] == qp)
                hit = same_p & (self.k2[hi_c] == q["k2"][todo].astype(np.uint64)) & (
                    self.k3[hi_c] == q["k3"][todo].astype(np.uint32))
                t = todo[hit]
                sh[t], row[t], crc[t] = self.ss[hi_c[hit]], self.sw[hi_c[hit]], self.sc[hi_c[hit]]
                for i in todo[same_p & ~hit].tolist():  # an 8-byte prefix shared by two keys
                    cands = self._candidates(kbs[i])
                    if cands:
                        sh[i], row[i], crc[i] = cands[0]
        return sh, row, crc

    # -- writing ----------------------------------------------------------------------------------
    def _writer(self, dtype: np.dtype, width: int) -> _Writer:
        key = (dtype.str, width)
        w = self.writers.get(key)
        if w is not None and w.row >= w.shard.cap:
            self._finish(w)
            w = None
        if w is None:
            w = self._claim(dtype, width) or self._create(dtype, width)
            self.writers[key] = w
        _touch(_WRITE_LRU, (id(self), key), self, _MAX_WRITERS)
        return w

    def _claim(self, dtype: np.dtype, width: int) -> _Writer | None:
        """Lock a shard of this shape with free rows (non-blocking); None when there is none."""
        for name in self._names():
            sh = self._shard(name)
            if sh is None or sh.owned or sh.dtype != dtype or sh.width != width:
                continue
            try:
                if os.stat(sh.idx).st_size // _REC_SIZE >= sh.cap:
                    continue
                ifd = os.open(sh.idx, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(ifd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process (or no lock support here): not ours
                os.close(ifd)
                continue
            dfd = None
            try:
                size = os.fstat(ifd).st_size
                n = size // _REC_SIZE
                if n >= sh.cap:
                    raise _Skip
                dfd = os.open(sh.data, os.O_RDWR)
                full = sh.off + sh.cap * sh.rowbytes
                if os.fstat(dfd).st_size < full:  # truncated: give the rows their place back
                    os.ftruncate(dfd, full)
                if size != n * _REC_SIZE:  # a torn tail record of a killed writer
                    os.ftruncate(ifd, n * _REC_SIZE)
                self._ingest(sh, upto=n * _REC_SIZE, fd=ifd)  # through our fd: see close()
            except (OSError, _Skip):
                if dfd is not None:
                    os.close(dfd)
                fcntl.flock(ifd, fcntl.LOCK_UN)
                os.close(ifd)
                continue
            sh.consumed = n * _REC_SIZE
            sh.owned, sh.wfd = True, dfd
            self._drop_reader_fd(sh.no)
            return _Writer(sh, ifd, dfd, n)
        return None

    def _create(self, dtype: np.dtype, width: int) -> _Writer:
        """A new shard under a fresh name, its index locked. Both files appear complete or not at all:
        an error (a full disk) removes the temporary files and names the shard file being written."""
        try:
            os.makedirs(self.sdir, exist_ok=True)
        except OSError as e:
            raise _naming(e, self.sdir) from None
        cap = self.shard_rows
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{os.urandom(4).hex()}"
        data = os.path.join(self.sdir, name + ".npy")
        idx = os.path.join(self.sdir, name + ".idx")
        off = _new_data_file(data, os.path.join(self.sdir, f".{name}.npy.tmp"), dtype, cap, width)
        try:
            ifd = _new_index_file(idx, os.path.join(self.sdir, f".{name}.idx.tmp"))
        except BaseException:
            _unlink(data)  # no index names it: nobody reads it
            raise
        _fsync_dir(Path(self.sdir))
        sh = _Shard(len(self.shards), name, self.sdir, (np.dtype(dtype), cap, width, off))
        self.shards.append(sh)
        self.by_name[name] = sh
        dfd = os.open(data, os.O_RDWR)
        sh.owned, sh.wfd = True, dfd
        return _Writer(sh, ifd, dfd, 0)

    def _drop_reader_fd(self, no: int) -> None:
        fd = self.fds.pop(no, None)
        if fd is not None:
            os.close(fd)
        with _LRU_LOCK:
            _READ_LRU.pop((id(self), no), None)

    def _evict(self, key) -> None:
        """Release one least-recently-used resource (called with this store's lock held)."""
        if isinstance(key, int):
            self._drop_reader_fd(key)
        else:
            w = self.writers.get(key)
            if w is not None:
                self._finish(w)
            with _LRU_LOCK:
                _WRITE_LRU.pop((id(self), key), None)

    def _finish(self, w: _Writer) -> None:
        """Durable, unlocked, closed; its entries stay in the index."""
        try:
            w.sync()
        finally:
            try:
                fcntl.flock(w.ifd, fcntl.LOCK_UN)
            except OSError:
                pass
            os.close(w.ifd)
            os.close(w.dfd)
            sh = w.shard
            sh.owned, sh.wfd = False, None
            sh.consumed = w.row * _REC_SIZE
            self.writers.pop((sh.dtype.str, sh.width), None)
            with _LRU_LOCK:
                _WRITE_LRU.pop((id(self), (sh.dtype.str, sh.width)), None)

    def put_many(self, kbs: Sequence[bytes], arr: np.ndarray) -> None:
        """Append rows ``arr[i]`` under ``kbs[i]`` (``arr`` 2-d C-contiguous, its dtype stored)."""
        n, width = arr.shape
        if n == 0:
            return
        _ensure_flusher()
        with self.lock:
            i = 0
            while i < n:
                w = self._writer(arr.dtype, width)
                sh = w.shard
                k = min(n - i, sh.cap - w.row)
                block = arr[i : i + k]
                crcs = [zlib.crc32(r) for r in block]
                rec = np.zeros(k, _REC)
                keys = np.frombuffer(b"".join(kbs[i : i + k]), _KEY_DT)
                rec["magic"] = _MAGIC
                rec["kp"], rec["k2"], rec["k3"] = keys["p"], keys["k2"], keys["k3"]
                rows = np.arange(w.row, w.row + k, dtype=np.uint32)
                rec["row"], rec["length"], rec["crc"] = rows, width, crcs
                raw = bytearray(rec.tobytes())
                mv = memoryview(raw)
                rc = [zlib.crc32(mv[j * _REC_SIZE : j * _REC_SIZE + 36]) for j in range(k)]
                rec["rcrc"] = rc
                try:  # the rows, then their records
                    _pwrite_all(w.dfd, block, sh.off + w.row * sh.rowbytes, sh.data)
                    _pwrite_all(w.ifd, rec.tobytes(), w.row * _REC_SIZE, sh.idx)
                except OSError:
                    w.cut_back()
                    raise
                w.row += k
                sh.consumed = w.row * _REC_SIZE
                w.wrote(k)
                if k == 1:
                    kb = kbs[i]
                    self.delta[kb] = self.delta.get(kb, ()) + ((sh.no, int(rows[0]), crcs[0]),)
                    self._maybe_merge()
                else:
                    self._add(keys["p"], keys["k2"], keys["k3"], np.full(k, sh.no, np.uint32), rows,
                              np.asarray(crcs, np.uint32))
                if w.unsynced >= self.sync_every:
                    w.sync()
                if w.row >= sh.cap:
                    self._finish(w)
                i += k

    def put(self, kb: bytes, vec: np.ndarray) -> None:
        """One entry: the row, then its record, both handed to the kernel before returning."""
        _ensure_flusher()
        with self.lock:
            w = self._writer(vec.dtype, vec.shape[0])
            sh = w.shard
            row = w.row
            crc = zlib.crc32(vec)
            head = _HEAD.pack(_MAGIC, kb, row, sh.width, crc)
            try:
                _pwrite_all(w.dfd, vec, sh.off + row * sh.rowbytes, sh.data)
                _pwrite_all(w.ifd, head + _TAIL.pack(zlib.crc32(head)), row * _REC_SIZE, sh.idx)
            except OSError:
                w.cut_back()
                raise
            w.row = row + 1
            sh.consumed = w.row * _REC_SIZE
            self.delta[kb] = self.delta.get(kb, ()) + ((sh.no, row, crc),)
            w.wrote(1)
            if w.unsynced >= self.sync_every:
                w.sync()
            if w.row >= sh.cap:
                self._finish(w)
            self._maybe_merge()

    def flush(self) -> None:
        with self.lock:
            for w in list(self.writers.values()):
                w.sync()

    def close(self) -> None:
        """Flush, unlock and close everything. The POSIX locks that emulate ``flock`` on NFS are
        released by closing *any* descriptor of the file, so an owned ``.idx`` is only ever opened
        through its writer's descriptor."""
        with self.lock:
            err = None
            for w in list(self.writers.values()):
                try:
                    self._finish(w)
                except OSError as e:
                    err = err or e
            for no in list(self.fds):
                self._drop_reader_fd(no)
            if err is not None:
                raise err

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors without unlocking (the lock belongs
        to the parent's open file description) or flushing."""
        for w in self.writers.values():
            for fd in (w.ifd, w.dfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.writers, self.fds = {}, OrderedDict()

    # -- whole-store views --------------------------------------------------------------------------
    def all_keys(self) -> np.ndarray:
        """Distinct stored keys (structured ``_KEY_DT`` array) with a valid index record."""
        with self.lock:
            self.refresh(force=True)
            parts = [np.rec.fromarrays([self.sp, self.k2, self.k3], dtype=_KEY_DT)]
            if self.delta:
                parts.append(np.frombuffer(b"".join(self.delta), _KEY_DT))
            return np.unique(np.concatenate(parts))

    def n_records(self) -> int:
        with self.lock:
            self.refresh(force=True)
            return int(len(self.sp) + sum(len(v) for v in self.delta.values()))


class _Skip(Exception):
    pass


_STORES: dict[str, _Store] = {}
_REG_LOCK = threading.Lock()
_REALPATHS: dict[str, str] = {}
# Open descriptors are bounded per process, whatever the number of folders used: the least recently
# used reader descriptors are closed and writers finished (their shards keep their free rows).
_LRU_LOCK = threading.Lock()
_READ_LRU: OrderedDict = OrderedDict()  # (id(store), shard no) -> store
_WRITE_LRU: OrderedDict = OrderedDict()  # (id(store), (dtype, width)) -> store


def _touch(lru: OrderedDict, key, store: _Store, cap: int) -> None:
    with _LRU_LOCK:
        lru[key] = store
        lru.move_to_end(key)
        if len(lru) <= cap:
            return
        victims = list(lru.items())[: len(lru) - cap]
    for (_, sub), st in victims:
        if st.lock.acquire(blocking=False):  # never wait for another folder's lock (no deadlock)
            try:
                st._evict(sub)
            except OSError as e:  # its entries stay readable; only durability waits for exit
                log.warning("cache: could not release %s: %s", st.dir, e)
            finally:
                st.lock.release()


def _store_for(folder: Path, shard_rows: int | None = None) -> _Store:
    a = str(folder)
    rp = _REALPATHS.get(a)
    if rp is None:
        rp = _REALPATHS[a] = os.path.realpath(a)
    st = _STORES.get(rp)
    if st is None:
        with _REG_LOCK:
            st = _STORES.get(rp)
            if st is None:
                st = _STORES[rp] = _Store(rp, shard_rows)
    if shard_rows:
        st.shard_rows = int(shard_rows)
    return st


# A daemon thread per writing process fsyncs what was appended once it is FLUSH_AFTER_S old, so
# entries reach the disk, and other machines sharing the folder over NFS, within about a second
# even when the writer then idles (e.g. at a barrier) without flush() or close().
FLUSH_AFTER_S = 1.0
_FLUSHER: list = [None, None]  # [thread, pid]
_FLUSH_STOP = threading.Event()


def _ensure_flusher() -> None:
    if _FLUSHER[1] == os.getpid() or _FLUSH_STOP.is_set():
        return
    with _REG_LOCK:
        if _FLUSHER[1] != os.getpid():
            t = threading.Thread(target=_flush_loop, name="cache-flush", daemon=True)
            _FLUSHER[:] = [t, os.getpid()]
            t.start()


def _flush_loop() -> None:
    pid = os.getpid()
    while not _FLUSH_STOP.wait(FLUSH_AFTER_S / 4):
        if os.getpid() != pid:  # pragma: no cover - threads do not survive fork
            return
        now = time.monotonic()
        for st in list(_STORES.values()):
            due = [w for w in list(st.writers.values()) if w.unsynced and now - w.dirty_since >= FLUSH_AFTER_S]
            if not due or not st.lock.acquire(timeout=1.0):
                continue
            try:
                for w in list(st.writers.values()):
                    if w.unsynced:
                        w.sync()
            except OSError as e:
                log.warning("cache: fsync in %s failed: %s", st.dir, e)
            finally:
                st.lock.release()


def _close_all() -> None:
    _FLUSH_STOP.set()
    for st in list(_STORES.values()):
        try:
            st.close()
        except OSError:
            pass


def _after_fork_in_child() -> None:
    global _REG_LOCK, _LRU_LOCK
    for st in list(_STORES.values()):
        st.forget_after_fork()
    _STORES.clear()
    _READ_LRU.clear()
    _WRITE_LRU.clear()
    _REG_LOCK, _LRU_LOCK = threading.Lock(), threading.Lock()
    _FLUSHER[:] = [None, None]  # the child starts its own on its first put


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the public classes --------------------------------------------------------------------------
class Located:
    """Rows of ``keys`` found by :meth:`ArrayCache.locate`, read on demand from the shards.

    ``found`` [N] bool; ``dim``; ``rows(idx)`` -> ``[len(idx), dim]`` (NaN rows for keys not found;
    :class:`CacheCorruptError` when a found row fails its checksum now). Holds 12 bytes per key
    plus the open maps (or descriptors); picklable (e.g. into DataLoader workers: the maps and
    descriptors are reopened there).

    ``mapped=True`` gathers rows from memory-mapped shards. ``mapped=False`` reads them with
    ``pread`` instead (runs of consecutive rows in one call): nothing is mapped, so the pages read
    stay in the kernel's page cache and never count in this process's resident set, which a
    memory map's pages do once touched (a training epoch touches every row). At most
    :data:`_MAX_READ_FDS` descriptors are kept open per handle (least recently used closed).
    """

    def __init__(self, shard_paths: list[str], shard: np.ndarray, row: np.ndarray, crc: np.ndarray,
                 legacy: dict[int, str], dim: int, dtype, mapped: bool = True):
        self._paths = shard_paths
        self._shard = shard.astype(np.int32)
        self._row = row.astype(np.uint32)
        self._crc = crc.astype(np.uint32)
        self._legacy = legacy
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.mapped = bool(mapped)
        self.found = self._shard >= 0
        for i in legacy:
            self.found[i] = True
        self._maps: dict[int, np.ndarray] = {}
        self._fds: OrderedDict[int, tuple] = OrderedDict()  # shard -> (fd, dtype, data offset)

    def __len__(self) -> int:
        return len(self._shard)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_maps"] = {}
        d["_fds"] = OrderedDict()
        return d

    def close(self) -> None:
        """Close the descriptors and maps this handle holds (reopened when rows are read again)."""
        for s in list(self._fds):
            self._drop(s)
        self._maps = {}

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _drop(self, s: int) -> None:
        self._maps.pop(s, None)
        fd = self._fds.pop(s, None)
        if fd is not None:
            try:
                os.close(fd[0])
            except OSError:
                pass

    def _reader(self, s: int) -> tuple:
        r = self._fds.get(s)
        if r is not None:
            self._fds.move_to_end(s)
            return r
        header = _read_shard_header(self._paths[s])
        if header is None or header[2] != self.dim:
            got = "unreadable header" if header is None else f"width {header[2]}"
            raise ValueError(f"{self._paths[s]}: {got}, not [rows, {self.dim}]")
        fd = os.open(self._paths[s], os.O_RDONLY)
        r = self._fds[s] = (fd, header[0], header[3])
        while len(self._fds) > _MAX_READ_FDS:
            self._drop(next(iter(self._fds)))
        return r

    def _map(self, s: int) -> np.ndarray:
        m = self._maps.get(s)
        if m is None:
            m = np.load(self._paths[s], mmap_mode="r", allow_pickle=False)
            if m.ndim != 2 or m.shape[1] != self.dim:
                raise ValueError(f"{self._paths[s]}: shape {m.shape} is not [rows, {self.dim}]")
            self._maps[s] = m
        return m

    def _gather_mapped(self, idx, s, out, ok, bad, strict) -> None:
        for u in np.unique(s[s >= 0]).tolist():
            sel = np.flatnonzero(s == u)
            pos = idx[sel]
            crcs = self._crc[pos].tolist()
            for attempt in range(2):
                try:
                    block = np.ascontiguousarray(self._map(u)[self._row[pos]])
                except (OSError, ValueError) as e:  # a shard that no longer maps (truncated...)
                    if strict:
                        raise CacheCorruptError(f"cache shard {self._paths[u]} unreadable: {e}") from e
                    block = None
                    break
                good = np.array([zlib.crc32(block[j]) == crcs[j] for j in range(len(sel))], dtype=bool)
                if good.all() or attempt:
                    break
                self._drop(u)  # once more through a new map (stale NFS pages)
            if block is None:
                continue
            out[sel[good]] = block[good]
            ok[sel[good]] = True
            bad.extend(pos[~good].tolist())

    def _pread_into(self, buf: np.ndarray, sh: list, rows: list, crcs: list, strict: bool) -> np.ndarray:
        """Read row ``rows[j]`` of shard ``sh[j]`` into ``buf[j]`` (the lists sorted by shard, then
        row), one ``pread`` per run of consecutive rows of a shard. Returns ``[len(buf)]`` bool:
        read whole and matching its checksum ``crcs[j]`` (rows short of the file, or of an
        unreadable shard, do not)."""
        n = len(buf)
        good = [False] * n
        crc32, preadv = zlib.crc32, os.preadv
        cur, j = -1, 0
        while j < n:
            u, r0 = sh[j], rows[j]
            k = j + 1
            while k < n and sh[k] == u and rows[k] == r0 + (k - j):
                k += 1
            if u != cur:
                try:
                    fd, dtype, off = self._reader(u)
                except (OSError, ValueError) as e:
                    if strict:
                        raise CacheCorruptError(f"cache shard {self._paths[u]} unreadable: {e}") from e
                    while k < n and sh[k] == u:
                        k += 1
                    j = k
                    continue
                cur, rb, same = u, self.dim * dtype.itemsize, dtype == buf.dtype
                step = max(1, _PREAD_MAX_BYTES // rb)
            if same and k - j <= step:  # the usual case: one read straight into place
                dest = buf[j:k]
                got = preadv(fd, [dest], off + r0 * rb)
                if got == dest.nbytes:
                    for i in range(j, k):
                        good[i] = crc32(buf[i]) == crcs[i]
                    j = k
                    continue
            for a in range(j, k, step):
                b = min(k, a + step)
                pos = off + (r0 + a - j) * rb
                # a shard of another float type: read its own bytes (what the checksums cover)
                dest = buf[a:b] if same else np.empty((b - a, self.dim), dtype)
                got = preadv(fd, [dest], pos)
                if 0 < got < dest.nbytes:  # a short read: the rest, if there is any
                    view = memoryview(dest).cast("B")[got:]
                    while len(view) and (m := preadv(fd, [view], pos + got)) > 0:
                        view, got = view[m:], got + m
                for i in range(max(0, got) // rb):
                    good[a + i] = crc32(dest[i]) == crcs[a + i]
                if not same:
                    buf[a:b] = dest
            j = k
        return np.asarray(good, dtype=bool)

    def _gather_pread(self, idx, s, out, ok, bad, strict) -> None:
        sel = np.flatnonzero(s >= 0)
        if not len(sel):
            return
        pos = idx[sel]
        key = (s[sel].astype(np.int64) << 32) | self._row[pos].astype(np.int64)
        order = np.argsort(key, kind="stable")
        pos, key = pos[order], key[order]
        sh, rows = (key >> 32).tolist(), (key & 0xFFFFFFFF).tolist()
        crcs = self._crc[pos].tolist()
        for attempt in range(2):
            buf = np.full((len(pos), self.dim), np.nan, dtype=self.dtype)
            good = self._pread_into(buf, sh, rows, crcs, strict)
            if good.all() or attempt:
                break
            for u in set(np.asarray(sh)[~good].tolist()):
                self._drop(u)  # once more through a fresh descriptor (stale NFS pages)
        dest = sel[order]
        if good.all():
            out[dest] = buf
            ok[dest] = True
        else:
            out[dest[good]] = buf[good]
            ok[dest[good]] = True
            bad.extend(pos[~good].tolist())

    def _gather(self, idx, strict: bool) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = np.full((len(idx), self.dim), np.nan, dtype=self.dtype)
        ok = np.zeros(len(idx), dtype=bool)
        s = self._shard[idx]
        bad: list[int] = []
        (self._gather_mapped if self.mapped else self._gather_pread)(idx, s, out, ok, bad, strict)
        for j in np.flatnonzero(s < 0).tolist():
            path = self._legacy.get(int(idx[j]))
            if path is not None:
                v = _load_legacy(Path(path))
                if v is not None and v.shape == (self.dim,):
                    out[j], ok[j] = v, True
                else:
                    bad.append(int(idx[j]))
        if bad and strict:
            raise CacheCorruptError(f"{len(bad)} cached row(s) changed since they were located "
                                    f"(positions {bad[:5]}); recompute them")
        return out, ok

    def rows(self, idx) -> np.ndarray:
        """``[len(idx), dim]``: the rows of the located keys at positions ``idx`` (only those rows
        are read). Keys not found give NaN rows."""
        return self._gather(idx, strict=True)[0]


class ArrayCache:
    """Key -> 1-d float array, appended to shards under ``<folder>/shards`` (see the module
    docstring). ``folder=None`` disables it. ``shard_rows``: capacity of shards it creates."""

    def __init__(self, folder: str | Path | None, dtype=np.float32, *, shard_rows: int | None = None):
        self.dir = Path(folder).expanduser() if folder is not None else None
        self.dtype = np.dtype(dtype)
        self._shard_rows = shard_rows

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def _store(self) -> _Store:
        return _store_for(self.dir, self._shard_rows)

    def _path(self, key: str) -> Path:
        """The old per-file location of ``key`` (read on a miss; see :func:`migrate`)."""
        return self.dir / key[:2] / f"{key}.npy"

    def _check(self, v: np.ndarray | None, length: int | None) -> np.ndarray | None:
        if v is None or v.ndim != 1 or (length is not None and v.shape[0] != length):
            return None
        return v.astype(self.dtype, copy=False)

    def get(self, key: str, length: int | None = None) -> np.ndarray | None:
        """The entry, or None when absent, unreadable, failing its checksum or not ``length`` long."""
        if not self.enabled:
            return None
        st = self._store()
        v = st.get(_kb(key))
        if v is None and st.legacy:
            v = _load_legacy(self._path(key))
        return self._check(v, length)

    def put(self, key: str, vec: np.ndarray) -> None:
        """Append one 1-d entry (visible to every reader and safe from a kill of this process when
        it returns; durable after :meth:`flush`, every ``SYNC_EVERY`` puts, or ``FLUSH_AFTER_S``)."""
        if not self.enabled:
            return
        vec = np.ascontiguousarray(vec, dtype=self.dtype)
        if vec.ndim != 1 or vec.shape[0] == 0:
            raise ValueError(f"cache entries are non-empty 1-d arrays, got shape {vec.shape}")
        self._store().put(_kb(key), vec)

    def __contains__(self, key: str) -> bool:
        if not self.enabled:
            return False
        st = self._store()
        return st.contains(_kb(key)) or (st.legacy and self._path(key).exists())

    # -- batches --------------------------------------------------------------------------------
    def put_many(self, keys: Sequence[str], array: np.ndarray) -> None:
        """Append ``array[i]`` under ``keys[i]`` (``array`` ``[N, d]``), in large writes."""
        if not self.enabled:
            return
        arr = np.ascontiguousarray(array, dtype=self.dtype)
        if arr.ndim != 2 or len(keys) != arr.shape[0] or arr.shape[1] == 0:
            raise ValueError(f"put_many needs [len(keys), d] rows, got {arr.shape} for {len(keys)} keys")
        self._store().put_many([_kb(k) for k in keys], arr)

    def locate(self, keys: Sequence[str], length: int | None = None, *, mapped: bool = True) -> Located:
        """A handle on the rows of ``keys`` (nothing read yet): ``.found``, ``.rows(idx)``.
        ``length``: the row width (default: the width of the entries found); ``mapped=False``:
        rows are read with ``pread`` rather than through memory maps (see :class:`Located`)."""
        if not self.enabled:
            return Located([], np.full(len(keys), -1), np.zeros(len(keys)), np.zeros(len(keys)), {},
                           length or 0, self.dtype, mapped)
        st = self._store()
        kbs = [_kb(k) for k in keys]
        sh, row, crc = st.lookup_many(kbs)
        with st.lock:
            paths = [s.data for s in st.shards]
            widths = np.asarray([s.width for s in st.shards] or [0], dtype=np.int64)
        if length is None:
            w = widths[sh[sh >= 0]]
            length = int(np.bincount(w).argmax()) if len(w) else 0
        sh = np.where((sh >= 0) & (widths[np.maximum(sh, 0)] == length), sh, -1)
        legacy: dict[int, str] = {}
        if st.legacy:
            for i in np.flatnonzero(sh < 0).tolist():
                p = self._path(keys[i])
                if p.exists():
                    legacy[i] = str(p)
        return Located(paths, sh, row, crc, legacy, length, self.dtype, mapped)

    def get_many(self, keys: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(array [N, d] with NaN rows for misses, found [N] bool)``; rows failing their checksum
        are misses. ``d``: ``length``, else the width of the entries found."""
        loc = self.locate(keys, length)
        if not self.enabled or len(keys) == 0:
            return np.full((len(keys), loc.dim), np.nan, self.dtype), np.zeros(len(keys), bool)
        out, ok = loc._gather(np.arange(len(keys)), strict=False)
        for i in np.flatnonzero(loc.found & ~ok).tolist():  # a changed row: an older/newer copy?
            v = self.get(keys[i], loc.dim)
            if v is not None:
                out[i], ok[i] = v, True
        return out, ok

    # -- lifetime -----------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read what other processes appended since (done by itself on a miss)."""
        return self.enabled and self._store().refresh(force=True)

    def flush(self) -> None:
        """Make this process's appended entries durable (fsync of rows, then records)."""
        if self.enabled:
            self._store().flush()

    def close(self) -> None:
        """Flush and release this process's shards of the folder (the next use reopens)."""
        if not self.enabled:
            return
        rp = _REALPATHS.get(str(self.dir)) or os.path.realpath(str(self.dir))
        with _REG_LOCK:
            st = _STORES.pop(rp, None)
        if st is not None:
            st.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inspection ----------------------------------------------------------------------------------
    def _legacy_keys(self) -> list[str]:
        out = []
        if not self.enabled:
            return out
        try:
            subs = [e for e in os.scandir(self.dir) if _LEGACY_DIR.fullmatch(e.name) and e.is_dir()]
        except OSError:
            return out
        for d in subs:
            try:
                out.extend(m.group(1) for n in os.listdir(d.path) if (m := _LEGACY_FILE.fullmatch(n))
                           and n.startswith(d.name))
            except OSError:
                pass
        return out

    def keys(self) -> list[str]:
        """Every key with an entry (hex; a valid index record, or an old per-file entry)."""
        if not self.enabled:
            return []
        ks = self._store().all_keys()
        out = [_KEY.pack(int(a), int(b), int(c)).hex() for a, b, c in ks.tolist()]
        have = set(out)
        out.extend(k for k in self._legacy_keys() if k not in have)
        return out

    def __len__(self) -> int:
        if not self.enabled:
            return 0
        n = len(self._store().all_keys())
        legacy = self._legacy_keys()
        if legacy:
            have = set(self.keys())
            return len(have)
        return n

    def stats(self) -> dict:
        """entries, records (index records incl. rewrites of a key), shards, legacy (old files),
        files and bytes under the folder (bytes: apparent size; disk_bytes: allocated)."""
        if not self.enabled:
            return {}
        st = self._store()
        entries, records = len(self), st.n_records()
        files = nbytes = disk = 0
        for dirpath, _, names in os.walk(self.dir):
            for n in names:
                try:
                    s = os.stat(os.path.join(dirpath, n))
                except OSError:
                    continue
                files += 1
                nbytes += s.st_size
                disk += s.st_blocks * 512
        return {"entries": entries, "records": records, "shards": len(st._names()),
                "legacy": len(self._legacy_keys()), "files": files, "bytes": nbytes, "disk_bytes": disk}


class EmbeddingCache(ArrayCache):
    """Embeddings of one tower under ``<root>/emb/<slug of tower_key>``. ``root=None``: disabled."""

    def __init__(self, root: str | Path | None, tower_key: str, **kw):
        super().__init__(Path(root).expanduser() / "emb" / _slug(tower_key) if root is not None else None, **kw)


# -- the old layout ---------------------------------------------------------------------------------
def _legacy_folders(root: Path) -> list[Path]:
    """Folders holding old per-file entries (``<folder>/<key[:2]>/<key>.npy``) under ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != SHARDS_DIR]
        base = os.path.basename(dirpath)
        if _LEGACY_DIR.fullmatch(base) and any(
                (m := _LEGACY_FILE.fullmatch(n)) and m.group(1).startswith(base) for n in filenames):
            parent = Path(dirpath).parent
            if parent not in found:
                found.append(parent)
    return found


def migrate(root: str | Path, *, batch: int = 4096) -> dict[str, int]:
    """Move every old per-file entry under ``root`` (a cache root, or one cache folder) into
    shards of its folder, in its own dtype. Each file is deleted only after its entry is durable
    (fsync'ed in the shards); files that do not load as a 1-d float array are left in place and
    counted (the cache ignores them: those entries are recomputed). Safe to rerun and to run
    while other processes use the cache. Returns counts: folders, migrated, already (an entry was
    in the shards already), unreadable, removed (files deleted)."""
    root = Path(root).expanduser()
    counts = {"folders": 0, "migrated": 0, "already": 0, "unreadable": 0, "removed": 0}
    for folder in _legacy_folders(root):
        counts["folders"] += 1
        cache = ArrayCache(folder)
        st = cache._store()
        done: list[Path] = []
        others = [False]  # entries found in shards written by other processes wait for them too

        def commit() -> None:
            st.flush()
            if others[0]:
                with st.lock:
                    for sh in st.shards:
                        if not sh.owned:  # (never open an owned .idx a second time: see close())
                            for path in (sh.data, sh.idx):
                                try:
                                    fd = os.open(path, os.O_RDONLY)
                                    try:
                                        os.fsync(fd)
                                    finally:
                                        os.close(fd)
                                except OSError:
                                    pass
                others[0] = False
            for p in done:
                try:
                    p.unlink()
                    counts["removed"] += 1
                except FileNotFoundError:
                    pass
            done.clear()

        for key in cache._legacy_keys():
            path = cache._path(key)
            kb = _kb(key)
            if st.get(kb) is not None:
                counts["already"] += 1
                others[0] = True
                done.append(path)
            else:
                arr = _load_legacy(path)
                if arr is None or arr.dtype.kind != "f" or arr.shape[0] == 0:
                    counts["unreadable"] += 1
                    continue
                st.put(kb, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")))
                counts["migrated"] += 1
                done.append(path)
            if len(done) >= batch:
                commit()
        commit()
        for d in folder.iterdir():
            if _LEGACY_DIR.fullmatch(d.name) and d.is_dir():
                try:
                    d.rmdir()  # only when empty (unreadable files stay)
                except OSError:
                    pass
        cache.close()
    return counts


__all__ = ["ArrayCache", "EmbeddingCache", "Located", "CacheCorruptError", "migrate", "cache_root",
           "text_key", "audio_key", "DEFAULT_CACHE_DIR", "SHARD_ROWS"]
