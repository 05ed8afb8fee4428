"""Run frozen towers over a corpus once, with caching, length batching and progress bars.

``embed_audio_files`` streams the corpus (never the whole corpus in memory), batches by length to
cut padding, and caches every clip's embedding by content hash. ``embed_texts`` embeds each
distinct string once. How they are fast (figures: ``BENCHMARKS.md``, section "Performance"):

* **Cache first.** Every file is hashed and looked up; only misses are computed, and files with
  identical content (one cache key) are computed once.
* **Batching by length over the whole corpus.** Clip durations come from the file headers (no
  decoding), so all misses are sorted by length before any audio is read, and each batch holds
  clips of nearly equal length.
* **A streaming pipeline.** A reader thread decodes, resamples and validates clips in that order
  into a queue of one batch per worker, forward workers run the tower, and the calling thread
  writes the cache entries (atomically, one per item, as before) as batches finish. At most
  ``2 x workers + 1`` batches of audio are in memory, whatever the corpus size. Decoding
  (libsndfile / soxr) and the tower (torch) release the GIL, so reading overlaps the forward pass.
  After each batch the workers hand freed heap memory back to the OS (glibc ``malloc_trim``), so
  resident memory creeps up far less with the number of differently shaped batches.
* **Inter-op instead of intra-op parallelism on CPU.** Towers known to be thread-safe run ``W``
  batches at once, in ``W`` threads with ``torch.get_num_threads() // W`` intra-op threads each
  (``W = min(torch threads, 4)``; ``workers=`` / ``towers.embed_workers`` overrides, 1 =
  one batch at a time over all threads). Why: with OpenMP's default (spinning) wait policy, a
  2-thread forward on a 2-core machine that other processes also use spends much of its time in
  barriers waiting for a descheduled sibling; independent batches per thread have none. Measured
  on whisper-tiny-en with 2 cores: 1.4-1.9x faster than torch's default when the cores are
  shared, about 0.9x of it when they are idle (``benchmarks/bench_extract.py``,
  ``bench_threads.py``). Each batch is computed whole by one thread, so results do not depend on
  the plan beyond float rounding (the intra-op thread count may change a kernel's summation
  order: bit-identical for whisper-tiny-en here, within 1e-7 for MiniLM). Towers on a GPU and
  towers not known to be thread-safe get one worker (the reading pipeline still overlaps).
* **Any backend.** A tower is anything with ``spec``, ``dim``, ``sample_rate``, ``cache_key`` and
  ``embed(waves) -> [B, dim]`` (a torch tensor or a numpy array). PyTorch is imported only for
  torch towers (their forward plan); a tower with its own ``forward_plan(workers)`` (the ONNX
  export's audio tower, whose sessions hold their threads) brings its plan, and the pipeline then
  needs no torch at all.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from .audio import SAMPLE_RATE, content_hash, header_seconds, read_audio
from .cache import EmbeddingCache, audio_key, text_key
from .errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")

#: Upper bound on forward worker threads (each holds one batch of activations).
MAX_WORKERS = 4
#: Trim the heap after every this many batches of a forward worker (``towers.trim_every``; 0 =
#: never). Every batch: about 6% slower than every 8th (the next batch page-faults its activations
#: back in), but the extraction peak stays flat with corpus size (+32 MiB from 128 to 512 clips,
#: against +221 MiB when trimming every 8th batch; ``benchmarks/bench_memory.py``).
TRIM_EVERY = 1


def preprocessing_key(sample_rate: int = SAMPLE_RATE, loudness: str | None = None, augment=None) -> str:
    """What was done to the waveform before the tower; part of every audio cache key (``augment``,
    an :class:`~smoothclap.augment.Augmentation`, only when given: the keys of clips as recorded
    are those of earlier versions)."""
    key = f"sr={sample_rate}|loud={loudness or 'none'}"
    return key if augment is None else f"{key}|aug={augment.key}"


# -- forward plan ----------------------------------------------------------------------------------
def _thread_safe(tower) -> bool:
    return bool(getattr(tower, "thread_safe", False))


def _on_cpu(tower) -> bool:
    import torch

    try:
        p = next(tower.parameters(), None)
    except (AttributeError, TypeError):
        p = None
    if p is not None:
        return p.device.type == "cpu"
    dev = getattr(tower, "_device", None) or getattr(tower, "device", None)
    try:
        return dev is None or torch.device(dev).type == "cpu"
    except (TypeError, RuntimeError):
        return True


class ForwardPlan(NamedTuple):
    """How the forward passes of one extraction run are spread over threads."""

    workers: int  # forward worker threads, each running whole batches
    threads: int | None  # torch intra-op threads per worker (None: leave torch's setting as is)


def forward_plan(tower, workers: int | None = None) -> ForwardPlan:
    """The :class:`ForwardPlan` for ``tower``.

    Default: a CPU tower known to be thread-safe, with at least 2 torch threads, gets
    ``W = min(torch threads, MAX_WORKERS)`` workers with ``torch threads // W`` threads each (W
    batches at once, no OpenMP barriers between them); other towers one worker with torch's
    threads as they are. ``workers`` (``towers.embed_workers`` in a run config) fixes the count:
    1 = one batch at a time over all of torch's threads (intra-op only). A tower with its own
    ``forward_plan(workers)`` method (no torch module: e.g. an ONNX export's) decides itself.
    """
    own = getattr(tower, "forward_plan", None)
    if own is not None:
        return own(workers)
    import torch

    total = max(1, torch.get_num_threads())
    if workers is None:
        if not (_thread_safe(tower) and _on_cpu(tower)):
            return ForwardPlan(1, None)
        workers = min(total, MAX_WORKERS)
    workers = max(1, int(workers))
    return ForwardPlan(1, None) if workers == 1 else ForwardPlan(workers, max(1, total // workers))


# -- the pipeline ------------------------------------------------------------------------------------
_DONE = object()


def _malloc_trim():
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere): hand freed heap pages back to the OS.

    Each batch allocates activations of a new shape; glibc keeps the freed blocks (its mmap
    threshold adapts upwards), the heaps of the worker threads fragment, and resident memory
    creeps up with the number of distinct batch shapes, i.e. with corpus size. A trim costs well
    under a millisecond here, against hundreds of milliseconds per batch (see :data:`TRIM_EVERY`).

    Flatter still, at more cost: start Python with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc maps
    every activation buffer afresh): figures in ``BENCHMARKS.md``, section "Performance". How
    often: :data:`TRIM_EVERY`.
    """
    try:
        import ctypes

        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


_trim = _malloc_trim()


def release_memory(tables: bool = False) -> None:
    """Hand freed heap back to the OS: glibc's (:func:`_malloc_trim`) and, with ``tables``, the
    Arrow memory pool that holds pandas' string columns (when pyarrow is loaded). Arrow's pool
    (mimalloc) keeps a dropped table's buffers for reuse: at 1M clips, 60 MiB of a table that the
    caller has already let go (``benchmarks/bench_scale.py``)."""
    _trim()
    if tables and "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


#: What the last extraction run did (for benchmarks and debugging): its forward plan.
last_run: dict = {}


class _Pipeline:
    """producer (one thread) -> bounded queue -> forward worker threads -> results to the caller.

    ``produce(emit_batch, emit_msg, stopped)`` runs in the reader thread: it calls
    ``emit_batch(payload, inputs)`` for each batch and ``emit_msg(msg)`` for anything the caller must
    see in order (e.g. a bad file). ``forward(inputs)`` runs in a worker and returns an array.
    Iterating :meth:`run` yields ``("batch", payload, array)`` and ``("msg", msg, None)``; any
    exception in a thread is re-raised in the caller, and closing it stops and joins all threads.
    """

    def __init__(self, produce, forward, plan: ForwardPlan, prefetch: int, trim_every: int = TRIM_EVERY):
        self.produce, self.forward, self.plan = produce, forward, plan
        self.trim_every = int(trim_every)
        self.workers = plan.workers
        self.work: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self.results: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.warm = threading.Event()
        self.init_lock = threading.Lock()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _reader(self) -> None:
        try:
            self.produce(lambda payload, inputs: self._put(self.work, (payload, inputs)),
                         lambda msg: self.results.put(("msg", msg, None)), self.stop.is_set)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.results.put(("error", e, None))
        finally:
            for _ in range(self.workers):
                if not self._put(self.work, _DONE):
                    break

    def _worker(self) -> None:
        done_here = 0
        try:
            if self.plan.threads is not None:
                import torch

                # torch sets a thread's OpenMP / MKL thread count lazily, from a process-wide value,
                # at its first parallel op; trigger that first, so the per-thread setting sticks.
                torch.get_num_threads()
                torch.set_num_threads(self.plan.threads)
            while not self.stop.is_set():
                try:
                    item = self.work.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                payload, inputs = item
                if not self.warm.is_set():  # first call alone: towers load lazily
                    with self.init_lock:
                        out = self.forward(inputs)
                        self.warm.set()
                else:
                    out = self.forward(inputs)
                done_here += 1
                if self.trim_every > 0 and done_here % self.trim_every == 0:
                    release_memory()
                self.results.put(("batch", payload, out))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.results.put(("error", e, None))
        finally:
            self.results.put(("done", None, None))

    def run(self):
        torch = None
        if self.plan.threads is not None:  # per-thread torch settings: only torch towers have threads
            import torch
        restore = torch.get_num_threads() if torch is not None else None
        threads = [threading.Thread(target=self._reader, name="smoothclap-read", daemon=True)]
        threads += [threading.Thread(target=self._worker, name=f"smoothclap-forward-{k}", daemon=True)
                    for k in range(self.workers)]
        for t in threads:
            t.start()
        try:
            done = 0
            while done < self.workers:
                kind, a, b = self.results.get()
                if kind == "done":
                    done += 1
                elif kind == "error":
                    raise a
                else:
                    yield kind, a, b
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            if torch is not None:
                # A worker's set_num_threads also sets the default that new threads start with.
                torch.set_num_threads(restore)
            last_run.clear()
            last_run.update(plan=self.plan._asdict())


# -- audio -------------------------------------------------------------------------------------------
class _Work(NamedTuple):
    """What an extraction run computes: one item per distinct content (or path, uncached)."""

    todo: list[int]  # the first file of each item, in length order once sorted
    members: dict[int, list[int]]  # item (its first file) -> every file with that content
    keys: list[str | None]  # cache key per file (None: caching off, or the file could not be hashed)


def _lookup(files: list[str], cache: EmbeddingCache, pre: str, out: np.ndarray, ok: np.ndarray,
            skip: SkipLog) -> _Work:
    """Stage 1: fill ``out`` / ``ok`` from the cache and group the misses by content (files with
    identical audio are computed once, and named in a warning)."""
    dim = out.shape[1]
    keys: list[str | None] = [None] * len(files)
    groups: dict[str, list[int]] = {}  # one computation per distinct content (or path, uncached)
    for i, f in enumerate(files):
        if cache.enabled:
            h = content_hash(f, skip)
            if h is None:
                continue
            keys[i] = audio_key(h, pre)
            v = cache.get(keys[i])
            if v is not None and v.shape == (dim,):
                out[i], ok[i] = v, True
                continue
        groups.setdefault(keys[i] if keys[i] is not None else f, []).append(i)
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            by_key.setdefault(k, []).append(i)
    same = [g for g in by_key.values() if len({files[i] for i in g}) > 1]
    if same:  # suspicious input (e.g. one take copied under two names): embedded once, named here
        shown = "; ".join(" = ".join(files[i] for i in g[:3]) for g in same[:3])
        log.warning("%d group(s) of files with identical audio (embedded once each): %s%s", len(same), shown,
                    " ..." if len(same) > 3 else "")
    return _Work([g[0] for g in groups.values()], {g[0]: g for g in groups.values()}, keys)


def _reader(files: list[str], todo: list[int], batch_size: int, sample_rate: int, loudness: str | None,
            augment=None):
    """Stage 2 (the reader thread's ``produce``): decode ``todo`` in order into batches of
    ``batch_size`` clips; a bad file becomes a message (handled in order by the caller)."""

    def produce(emit_batch, emit_msg, stopped):
        idx: list[int] = []
        waves: list[np.ndarray] = []
        for i in todo:
            if stopped():
                return
            try:
                waves.append(read_audio(files[i], sample_rate=sample_rate, loudness=loudness, augment=augment))
                idx.append(i)
            except BadInputError as e:
                emit_msg((i, e))
                continue
            if len(idx) == batch_size:
                if not emit_batch(idx, waves):
                    return
                idx, waves = [], []
        if idx:
            emit_batch(idx, waves)

    return produce


def _collect(results, work: _Work, files: list[str], out: np.ndarray, ok: np.ndarray, cache: EmbeddingCache,
             skip: SkipLog, bar, spec: str) -> None:
    """Stage 3 (the calling thread): hand bad files to ``skip`` in order, store every item's
    embedding for all its files and in the cache, advance the progress bar; close the pipeline
    (stopping and joining its threads) at the end, also when an error leaves the loop."""
    members, keys = work.members, work.keys
    try:
        for kind, payload, emb in results:
            if kind == "msg":
                i, err = payload
                for j in members[i]:
                    skip.handle(err if j == i else BadInputError(files[j], err.reason))
                bar.update(len(members[i]))
                continue
            for i, v in zip(payload, emb):
                if not np.all(np.isfinite(v)):
                    for j in members[i]:
                        skip.handle(BadInputError(files[j], f"{spec} produced non-finite features"))
                    continue
                for j in members[i]:
                    out[j], ok[j] = v, True
                if keys[i] is not None:
                    cache.put(keys[i], v)
            bar.update(sum(len(members[i]) for i in payload))
    finally:
        results.close()
        bar.close()


def embed_audio_files(
    tower,
    files: Sequence[str],
    *,
    cache_dir=None,
    batch_size: int = 16,
    chunk_size: int = 256,
    skip: SkipLog | None = None,
    progress: bool = True,
    desc: str | None = None,
    workers: int | None = None,
    loudness: str | None = None,
    trim_every: int = TRIM_EVERY,
    augment=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed audio files with ``tower``.

    Returns ``(emb, ok)``: emb ``[N, tower.dim]`` float32 (rows of skipped files are NaN) and
    ok ``[N]`` bool. Bad files raise BadInputError unless ``skip.skip`` (finished items stay cached).
    ``chunk_size`` bounds the clips decoded ahead of the tower; ``workers`` forces the number of
    forward threads (see :func:`forward_plan`); ``loudness`` levels every waveform before the tower
    (:func:`smoothclap.audio.normalize_loudness`, part of the cache key); ``trim_every``: see
    :data:`TRIM_EVERY`; ``augment``: embed a training view of each clip instead
    (:class:`smoothclap.augment.Augmentation`, part of the cache key).
    """
    skip = skip if skip is not None else SkipLog(skip=False)
    if hasattr(tower, "embed_files") and loudness in (None, "none") and augment is None:
        # e.g. openSMILE: its own parallel, cached extractor (on the waveforms as recorded)
        return tower.embed_files(files, cache_dir=cache_dir, skip=skip, progress=progress)
    files = [str(f) for f in files]
    cache = EmbeddingCache(cache_dir, tower.cache_key if cache_dir is not None else "")
    out = np.full((len(files), tower.dim), np.nan, dtype=np.float32)
    ok = np.zeros(len(files), dtype=bool)
    work = _lookup(files, cache, preprocessing_key(tower.sample_rate, loudness, augment), out, ok, skip)
    if not work.todo:
        return out, ok
    # Global length order from the headers: batches of near-equal length, no decoding needed.
    work.todo.sort(key=lambda i: header_seconds(files[i]))
    plan = forward_plan(tower, workers)
    batch_size = max(1, int(batch_size))
    produce = _reader(files, work.todo, batch_size, tower.sample_rate, loudness, augment)
    # Clips decoded ahead: a queue of one batch per worker (reading is ~10x faster than the forward),
    # so at most (2 x workers + 1) batches of audio are in memory, whatever the corpus size.
    prefetch = min(max(1, chunk_size // batch_size), plan.workers)
    bar = tqdm(total=sum(len(work.members[i]) for i in work.todo), desc=desc or f"embed {tower.spec}", unit="clip",
               disable=not progress)
    pipe = _Pipeline(produce, lambda waves: np.asarray(tower.embed(waves)), plan, prefetch, trim_every)
    _collect(pipe.run(), work, files, out, ok, cache, skip, bar, tower.spec)
    return out, ok


# -- text --------------------------------------------------------------------------------------------
def embed_texts(tower, texts: Sequence[str], *, cache_dir=None, batch_size: int = 64,
                progress: bool = True, desc: str | None = None,
                workers: int | None = None, trim_every: int = TRIM_EVERY) -> np.ndarray:
    """Embed strings (each distinct string once). Returns ``[N, tower.dim]`` float32 in input order."""
    cache = EmbeddingCache(cache_dir, tower.cache_key)
    uniq = list(dict.fromkeys(texts))
    table: dict[str, np.ndarray] = {}
    todo = []
    for t in uniq:
        v = cache.get(text_key(t))
        if v is not None and v.shape == (tower.dim,):
            table[t] = v
        else:
            todo.append(t)
    # Sorting by length cuts padding inside each batch.
    todo.sort(key=len)
    if todo:
        batch_size = max(1, int(batch_size))
        batches = [todo[b0 : b0 + batch_size] for b0 in range(0, len(todo), batch_size)]
        plan = forward_plan(tower, workers)

        def produce(emit_batch, emit_msg, stopped):
            for b in batches:
                if stopped() or not emit_batch(b, b):
                    return

        bar = tqdm(total=len(todo), desc=desc or f"embed {tower.spec}", unit="text", disable=not progress)
        pipe = _Pipeline(produce, lambda b: np.asarray(tower.embed(b)), plan, 2 * plan.workers, trim_every).run()
        try:
            for _, batch, emb in pipe:
                for t, v in zip(batch, emb):
                    table[t] = v
                    cache.put(text_key(t), v)
                bar.update(len(batch))
        finally:
            pipe.close()
            bar.close()
    if not texts:
        return np.zeros((0, tower.dim), dtype=np.float32)
    return np.stack([table[t] for t in texts]).astype(np.float32)


__all__ = ["embed_audio_files", "embed_texts", "forward_plan", "ForwardPlan", "preprocessing_key",
           "MAX_WORKERS", "TRIM_EVERY"]
