"""The sharded embedding cache (smoothclap.cache): interface, file count, crash safety (kill -9,
torn tails, flipped / truncated bytes), concurrent writers and readers, stale locks, resume, the
old per-file layout and migrate(), no pickle, umask.

This file is also the worker script of the subprocess tests:
``python tests/test_sharded_cache.py worker <mode> <folder> [args]``.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
WIDTH = 16


def key(i: int) -> str:
    return hashlib.sha1(f"entry {i}".encode()).hexdigest()


def value(i: int, width: int = WIDTH) -> np.ndarray:
    """A deterministic entry: every writer of key i writes exactly these floats."""
    return (np.arange(width, dtype=np.float32) * 0.5 + i).astype(np.float32)


def _fresh(folder, **kw):
    """A cache of ``folder`` as a new process would see it (this process's store dropped)."""
    from smoothclap.cache import ArrayCache

    ArrayCache(folder).close()
    return ArrayCache(folder, **kw)


def _spawn(mode: str, folder, *args, stdout=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE), "worker", mode, str(folder), *map(str, args)],
                            cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


def _read_line(p: subprocess.Popen, timeout: float = 60) -> str:
    t = time.monotonic()
    line = p.stdout.readline()
    if not line:
        err = p.stderr.read() if p.poll() is not None else ""
        raise AssertionError(f"worker ended early (rc {p.poll()}): {err[-2000:]}")
    assert time.monotonic() - t < timeout
    return line.strip()


# -- the interface ------------------------------------------------------------------------------
def test_interface_roundtrip(tmp_path):
    from smoothclap.cache import ArrayCache, EmbeddingCache

    c = EmbeddingCache(tmp_path, "tower-x")
    assert c.enabled and c.get(key(0)) is None and key(0) not in c and len(c) == 0
    assert not list(tmp_path.rglob("*.npy"))  # reading creates nothing
    c.put(key(0), value(0))
    np.testing.assert_array_equal(c.get(key(0)), value(0))
    assert c.get(key(0)).dtype == np.float32 and c.get(key(0)).flags.writeable
    assert key(0) in c and c.get(key(0), length=WIDTH) is not None and c.get(key(0), length=3) is None
    keys = [key(i) for i in range(1, 301)]
    c.put_many(keys, np.stack([value(i) for i in range(1, 301)]))
    assert len(c) == 301 and sorted(c.keys()) == sorted([key(0)] + keys)
    arr, found = c.get_many([key(5), "ff" * 20, key(0)])
    assert found.tolist() == [True, False, True] and arr.shape == (3, WIDTH) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[0], value(5))
    assert np.isnan(arr[1]).all()
    loc = c.locate([key(i) for i in range(301)] + ["ee" * 20])
    assert loc.found[:301].all() and not loc.found[301] and loc.dim == WIDTH and len(loc) == 302
    np.testing.assert_array_equal(loc.rows([7, 3, 300]), np.stack([value(7), value(3), value(300)]))
    assert np.isnan(loc.rows([301])).all()
    assert all(isinstance(m, np.memmap) for m in loc._maps.values())  # rows come from mapped shards
    import pickle

    loc2 = pickle.loads(pickle.dumps(loc))  # e.g. into DataLoader workers
    np.testing.assert_array_equal(loc2.rows([9]), value(9)[None])
    with pytest.raises(ValueError):
        c.put(key(1), np.zeros((2, 2)))
    # a second object of the folder in the same process shares the store; a fresh one reloads it
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, "tower-x").get(key(300)), value(300))
    with _fresh(c.dir) as again:
        assert len(again) == 301
        np.testing.assert_array_equal(again.get(key(42)), value(42))
    # another dtype and width in its own folder
    g = ArrayCache(tmp_path / "eg", dtype=np.float64)
    g.put(key(1), np.linspace(0, 1, 89))
    assert g.get(key(1)).dtype == np.float64 and g.get(key(1), 89) is not None
    # disabled
    off = EmbeddingCache(None, "t")
    off.put(key(0), value(0))
    assert not off.enabled and off.get(key(0)) is None and key(0) not in off and len(off) == 0
    arr, found = off.get_many([key(0)])
    assert not found.any()


def test_file_count_at_a_million_entries(tmp_path):
    """Requirement: about 1,000 files per tower at 1,000,000 entries at most. Real number: 2 files
    per 65,536-row shard, 2 * ceil(1e6 / 65536) = 32."""
    from smoothclap.cache import SHARD_ROWS, ArrayCache

    c = ArrayCache(tmp_path / "t")
    n = 1_000_000
    keys = [hashlib.sha1(i.to_bytes(4, "little")).hexdigest() for i in range(n)]
    c.put_many(keys, np.arange(2 * n, dtype=np.float32).reshape(n, 2))
    c.close()
    files = [p for p in (tmp_path / "t").rglob("*") if p.is_file()]
    assert len(files) == 2 * math.ceil(n / SHARD_ROWS) == 32
    c = _fresh(tmp_path / "t")
    assert len(c) == n
    got, found = c.get_many(keys[::9973])
    assert found.all()
    np.testing.assert_array_equal(got[:, 0], np.arange(0, n, 9973) * 2.0)


def test_open_files_bounded_across_many_folders(tmp_path):
    """A long-lived process touching many folders keeps a bounded number of descriptors open
    (the least recently used writers are finished: their entries stay, their shards are reused)."""
    from smoothclap.cache import _MAX_READ_FDS, _MAX_WRITERS, ArrayCache

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for f in range(3 * _MAX_WRITERS):
        c = ArrayCache(tmp_path / f"f{f}")
        c.put(key(f), value(f))
        np.testing.assert_array_equal(c.get(key(f)), value(f))
    assert open_fds() - before <= 2 * _MAX_WRITERS + _MAX_READ_FDS
    for f in range(3 * _MAX_WRITERS):  # everything still reads, and writes go on in the old shards
        c = ArrayCache(tmp_path / f"f{f}")
        np.testing.assert_array_equal(c.get(key(f)), value(f))
        c.put(key(100 + f), value(100 + f))
        assert len(list((tmp_path / f"f{f}" / "shards").glob("*.idx"))) == 1
    assert open_fds() - before <= 2 * _MAX_WRITERS + _MAX_READ_FDS
    for f in range(3 * _MAX_WRITERS):
        ArrayCache(tmp_path / f"f{f}").close()


# -- crash safety ---------------------------------------------------------------------------------
def test_kill9_loses_only_in_flight_and_resume_computes_the_rest(tmp_path):
    folder = tmp_path / "c"
    total = 1_000_000  # more than it can write before the kill
    p = _spawn("write", folder, 0, total)
    try:
        last = -1
        while last < 400:
            last = int(_read_line(p))
    finally:
        os.kill(p.pid, signal.SIGKILL)
        _kill(p)
    assert p.returncode == -signal.SIGKILL
    c = _fresh(folder)
    n = len(c)
    assert n >= last + 1  # every put that returned survived
    got, found = c.get_many([key(i) for i in range(n + 5)])
    assert found[:n].all() and not found[n:].any()  # nothing beyond the one in flight
    np.testing.assert_array_equal(got[:n], np.stack([value(i) for i in range(n)]))
    # resume: a rerun computes only the missing entries
    m = n + 500
    p = _spawn("resume", folder, m)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert json.loads(out) == {"computed": m - n, "wrong": 0}
    c = _fresh(folder)
    assert len(c) == m == c.stats()["records"]  # each entry written once
    got, found = c.get_many([key(i) for i in range(m)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(m)]))


def test_torn_tail_and_corruption_are_misses_never_wrong(tmp_path):
    from smoothclap.cache import CacheCorruptError

    folder = tmp_path / "c"
    with _fresh(folder) as c:
        c.put_many([key(i) for i in range(100)], np.stack([value(i) for i in range(100)]))
    (idx,) = (folder / "shards").glob("*.idx")
    data = idx.with_suffix(".npy")
    hdr = _header_len(data)
    rowbytes = WIDTH * 4

    # a torn tail (a partial record) is ignored...
    with open(idx, "ab") as f:
        f.write(b"SCI1" + b"\x07" * 13)
    c = _fresh(folder)
    assert len(c) == 100
    got, found = c.get_many([key(i) for i in range(100)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(100)]))
    # ... and cut off by the next writer of the shard, whose entries follow it
    c.put(key(100), value(100))
    c.close()
    assert idx.stat().st_size == 101 * 40 and len(list(folder.glob("shards/*.idx"))) == 1
    c = _fresh(folder)
    np.testing.assert_array_equal(c.get(key(100)), value(100))

    # flipped bytes: in a row (its CRC fails) and in an index record (its own CRC fails)
    with open(data, "r+b") as f:
        f.seek(hdr + 5 * rowbytes + 3)
        f.write(b"\xff")
    with open(idx, "r+b") as f:
        f.seek(7 * 40 + 10)
        b = f.read(1)
        f.seek(7 * 40 + 10)
        f.write(bytes([b[0] ^ 0x01]))
    c = _fresh(folder)
    assert c.get(key(5)) is None and c.get(key(7)) is None and key(7) not in c
    np.testing.assert_array_equal(c.get(key(6)), value(6))
    got, found = c.get_many([key(i) for i in range(101)])
    assert found.sum() == 99 and not found[5] and not found[7]
    np.testing.assert_array_equal(got[found], np.stack([value(i) for i in range(101) if i not in (5, 7)]))
    loc = c.locate([key(i) for i in range(10)])
    assert loc.found.sum() == 9  # key 5 is located (its record is fine) ...
    np.testing.assert_array_equal(loc.rows([4, 6]), np.stack([value(4), value(6)]))
    with pytest.raises(CacheCorruptError):  # ... but its row is never returned
        loc.rows([5])
    # recomputed entries are found again, the new copy wins
    c.put(key(5), value(5))
    c.put(key(7), value(7))
    np.testing.assert_array_equal(c.get(key(5)), value(5))
    np.testing.assert_array_equal(c.locate([key(5)]).rows([0]), value(5)[None])
    c.close()

    # truncated index: the entries cut off are missing (the recomputed copies of 5 and 7 too:
    # they went to free rows of the same shard, rows 101 and 102)
    os.truncate(idx, 50 * 40 + 17)
    c = _fresh(folder)
    assert c.get(key(49)) is not None and c.get(key(50)) is None and c.get(key(100)) is None
    assert c.get(key(5)) is None and c.get(key(7)) is None
    # truncated data: the rows past the end are missing, the others still read
    os.truncate(data, hdr + 30 * rowbytes + 5)
    c = _fresh(folder)
    np.testing.assert_array_equal(c.get(key(29)), value(29))
    assert c.get(key(30)) is None and c.get(key(49)) is None
    got, found = c.get_many([key(i) for i in range(50)])
    assert found.tolist() == [i < 30 and i not in (5, 7) for i in range(50)]
    np.testing.assert_array_equal(got[found], np.stack([value(i) for i in range(50) if found[i]]))
    with pytest.raises(CacheCorruptError):
        c.locate([key(1)]).rows([0])  # a shard that no longer maps
    # recompute the missing ones: everything reads back exactly
    missing = [i for i in range(101) if c.get(key(i)) is None]
    c.put_many([key(i) for i in missing], np.stack([value(i) for i in missing]))
    c.close()
    c = _fresh(folder)
    got, found = c.get_many([key(i) for i in range(101)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(101)]))


def _header_len(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_writers_and_readers(tmp_path):
    """3 writers (overlapping and distinct keys, small shards so they fill, close and claim shards
    all the time) and a reader checking every value it finds while they run."""
    folder = tmp_path / "c"
    reader = _spawn("read", folder, 0, 1200)
    # keys 0..599 in 3 orders (forward, reversed, shuffled), then 3 x 200 distinct; 1 ms per put,
    # so that the writers and the reader overlap
    writers = [_spawn("write", folder, 0, 600, 64, w, 0.001) for w in range(3)]
    writers += [_spawn("write", folder, 600 + 200 * w, 800 + 200 * w, 64, 0, 0.001) for w in range(3)]
    for p in writers:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    out, err = reader.communicate(timeout=180)
    assert reader.returncode == 0, err[-3000:]
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["wrong"] == 0 and seen["rounds"] >= 2
    c = _fresh(folder)
    assert len(c) == 1200
    got, found = c.get_many([key(i) for i in range(1200)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(1200)]))
    st = c.stats()
    assert st["records"] >= 1200 and st["shards"] >= math.ceil(st["records"] / 64)


def test_killed_lock_holder_never_blocks_and_its_shard_is_reused(tmp_path):
    folder = tmp_path / "c"
    p = _spawn("hold", folder, 0, 10)  # writes 10 entries, does not close, sleeps holding its shard
    try:
        assert _read_line(p) == "ready"
        c = _fresh(folder)
        # visible while the writer lives, without flush or close
        got, found = c.get_many([key(i) for i in range(10)])
        assert found.all()
        np.testing.assert_array_equal(got, np.stack([value(i) for i in range(10)]))
        t = time.monotonic()
        c.put(key(10), value(10))  # the held shard is skipped at once: a new one
        assert time.monotonic() - t < 5
        assert len(list(folder.glob("shards/*.idx"))) == 2
        c.close()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        _kill(p)
    c = _fresh(folder)
    c.put(key(11), value(11))  # the killed process's lock died with it: its shard is reused
    c.put(key(12), value(12))
    c.close()
    assert len(list(folder.glob("shards/*.idx"))) == 2
    c = _fresh(folder)
    got, found = c.get_many([key(i) for i in range(13)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(13)]))


def test_idle_writer_is_fsynced_within_seconds(tmp_path):
    """Without flush or close, appended entries are fsync'ed about FLUSH_AFTER_S after the put,
    also when no further put comes (what shows them to other machines on NFS)."""
    from smoothclap.cache import FLUSH_AFTER_S

    c = _fresh(tmp_path / "c")
    c.put(key(0), value(0))
    (w,) = c._store().writers.values()
    assert w.unsynced == 1
    deadline = time.monotonic() + FLUSH_AFTER_S + 10
    while w.unsynced and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.unsynced == 0
    c.close()


def _fork_child(folder: str) -> None:
    from smoothclap.cache import ArrayCache

    c = ArrayCache(folder)
    for i in range(20, 30):
        c.put(key(i), value(i))


def test_forked_child_writes_its_own_shard(tmp_path):
    from smoothclap.cache import ArrayCache

    folder = tmp_path / "c"
    c = _fresh(folder)
    for i in range(10):
        c.put(key(i), value(i))  # the parent holds a shard ...
    p = mp.get_context("fork").Process(target=_fork_child, args=(str(folder),))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    for i in range(10, 20):
        c.put(key(i), value(i))  # ... and keeps writing it
    got, found = ArrayCache(folder).get_many([key(i) for i in range(30)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(30)]))
    c.close()
    assert len(list(folder.glob("shards/*.idx"))) == 2
    assert _fresh(folder).stats()["records"] == 30


# -- the old layout --------------------------------------------------------------------------------
def _old_entry(folder: Path, k: str, arr: np.ndarray) -> Path:
    p = folder / k[:2] / f"{k}.npy"
    p.parent.mkdir(parents=True, exist_ok=True)
    np.save(p, arr, allow_pickle=False)
    return p


def test_legacy_layout_read_and_migrated(tmp_path, monkeypatch):
    from smoothclap import cache as C
    from smoothclap.cache import ArrayCache, EmbeddingCache, migrate

    root = tmp_path / "cache"
    emb = EmbeddingCache(root, "tower-x")
    eg = ArrayCache(root / "egemaps" / "eGeMAPSv02-v1", dtype=np.float64)
    for i in range(40):
        _old_entry(emb.dir, key(i), value(i))
    for i in range(5):
        _old_entry(eg.dir, key(i), np.linspace(0, 1, 89) + i)
    (emb.dir / "zz").mkdir()
    bad = emb.dir / key(99)[:2] / f"{key(99)}.npy"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\x93NUMPY torn")
    emb.put(key(40), value(40))  # a new entry beside the old ones
    emb.put(key(41), value(41))  # ... and one in both layouts
    _old_entry(emb.dir, key(41), value(41))
    emb = _fresh(emb.dir)
    # the old entries are read as a fallback
    np.testing.assert_array_equal(emb.get(key(3)), value(3))
    assert key(3) in emb and emb.get(key(99)) is None
    assert len(emb) == 43  # old files are counted by name (the torn one too: it reads as a miss)
    got, found = emb.get_many([key(i) for i in range(41)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(41)]))
    np.testing.assert_array_equal(emb.locate([key(2), key(40)]).rows([0, 1]), np.stack([value(2), value(40)]))
    # migrate: old files deleted only after their entries are durable
    events = []
    sync, unlink = C._Writer.sync, Path.unlink
    monkeypatch.setattr(C._Writer, "sync", lambda self: (events.append("sync"), sync(self))[1])
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: (events.append("unlink"), unlink(self, *a, **k))[1])
    counts = migrate(root, batch=16)
    assert counts == {"folders": 2, "migrated": 45, "already": 1, "unreadable": 1, "removed": 46}
    assert events.count("unlink") == 46 and events.index("unlink") > events.index("sync")
    # every run of unlinks follows a sync, and no more than a batch of puts ever waits for one
    runs = "".join("s" if e == "sync" else "u" for e in events).split("s")
    assert max(len(r) for r in runs) <= 16 and not runs[0]
    monkeypatch.undo()
    assert sorted(p.name for p in emb.dir.iterdir()) == [key(99)[:2], "shards", "zz"]  # the bad file stays
    emb = _fresh(emb.dir)
    assert len(emb) == 43 and emb.stats()["legacy"] == 1 and emb.stats()["records"] == 42
    got, found = emb.get_many([key(i) for i in range(42)])
    assert found.all()
    np.testing.assert_array_equal(got, np.stack([value(i) for i in range(42)]))
    eg = _fresh(eg.dir, dtype=np.float64)
    np.testing.assert_array_equal(eg.get(key(4)), np.linspace(0, 1, 89) + 4)
    assert not list((eg.dir).glob("??/*.npy"))
    assert migrate(root) == {"folders": 1, "migrated": 0, "already": 0, "unreadable": 1, "removed": 0}


# -- no pickle, permissions ------------------------------------------------------------------------
def test_loading_never_unpickles(tmp_path, monkeypatch):
    from smoothclap import cache as C

    folder = tmp_path / "c"
    c = _fresh(folder)
    c.put(key(0), value(0))
    c.close()
    # an old entry holding a pickled object array is a miss, never loaded
    p = folder / key(1)[:2] / f"{key(1)}.npy"
    p.parent.mkdir(parents=True)
    np.save(p, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    # a "shard" whose header claims an object array is ignored
    (folder / "shards" / "evil.npy").write_bytes(_npy_header("|O", (4, WIDTH)) + b"\0" * 64)
    (folder / "shards" / "evil.idx").write_bytes(b"")
    loads = []
    real = np.load

    def checked_load(*a, **k):
        loads.append(k.get("allow_pickle"))
        return real(*a, **k)

    monkeypatch.setattr(C.np, "load", checked_load)
    c = _fresh(folder)
    assert c.get(key(1)) is None
    c.put(key(2), value(2))  # never claims the evil shard
    np.testing.assert_array_equal(c.locate([key(0), key(2)]).rows([0, 1]), np.stack([value(0), value(2)]))
    assert loads and all(a is False for a in loads)
    c.close()
    assert len(list(folder.glob("shards/*.idx"))) == 2


def _npy_header(descr: str, shape) -> bytes:
    import io

    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_honour_the_umask(tmp_path, umask):
    folder = tmp_path / "c"
    old = os.umask(umask)
    try:
        with _fresh(folder) as c:
            c.put(key(0), value(0))
    finally:
        os.umask(old)
    files = list((folder / "shards").iterdir())
    assert len(files) == 2
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    assert (folder / "shards").stat().st_mode & 0o777 == 0o777 & ~umask


# -- worker side -------------------------------------------------------------------------------------
def _worker(mode: str, folder: str, args: list[str]) -> None:
    from smoothclap.cache import ArrayCache

    if mode == "write":  # put keys lo..hi-1 (order: forward, reversed or shuffled), print each
        lo, hi = int(args[0]), int(args[1])
        shard_rows = int(args[2]) if len(args) > 2 else None
        order = list(range(lo, hi))
        if len(args) > 3:
            w = int(args[3])
            if w == 1:
                order.reverse()
            elif w == 2:
                np.random.default_rng(0).shuffle(order)
        delay = float(args[4]) if len(args) > 4 else 0.0
        c = ArrayCache(folder, shard_rows=shard_rows)
        for i in order:
            c.put(key(i), value(i))
            if delay:
                time.sleep(delay)
            if shard_rows is None:
                print(i, flush=True)
    elif mode == "resume":  # what a rerun does: compute what is missing
        n = int(args[0])
        c = ArrayCache(folder)
        computed = wrong = 0
        for i in range(n):
            v = c.get(key(i))
            if v is None:
                c.put(key(i), value(i))
                computed += 1
            elif not np.array_equal(v, value(i)):
                wrong += 1
        print(json.dumps({"computed": computed, "wrong": wrong}))
    elif mode == "read":  # read every key over and over while writers run; no value may be wrong
        lo, hi = int(args[0]), int(args[1])
        c = ArrayCache(folder)
        wrong = rounds = 0
        t = time.monotonic()
        while time.monotonic() - t < 120:
            found = 0
            for i in range(lo, hi):
                v = c.get(key(i))
                if v is not None:
                    found += 1
                    wrong += not np.array_equal(v, value(i))
            got, ok = c.get_many([key(i) for i in range(lo, hi)])
            wrong += int(sum(not np.array_equal(got[j], value(lo + j)) for j in np.flatnonzero(ok)))
            rounds += 1
            if found == hi - lo and ok.all():
                break
        print(json.dumps({"wrong": wrong, "rounds": rounds, "found": found}))
    elif mode == "hold":  # write, then keep the shard (and its lock) until killed
        lo, hi = int(args[0]), int(args[1])
        c = ArrayCache(folder)
        for i in range(lo, hi):
            c.put(key(i), value(i))
        print("ready", flush=True)
        time.sleep(600)
    else:
        raise SystemExit(f"unknown worker mode {mode}")


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "worker":
    _worker(sys.argv[2], sys.argv[3], sys.argv[4:])
