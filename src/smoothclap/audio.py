"""Audio reading and validation: any format soundfile reads, any rate, any channel count.

Every clip becomes mono float32 at the requested rate. Bad clips raise
:class:`~smoothclap.errors.BadInputError` naming the file and the reason.

A "file" may also be a container reference (``wds://<shard>#<member>``, ``hf://<arrow file>#<row>``:
:mod:`smoothclap.sources`): :func:`read_audio`, :func:`header_seconds`, :func:`content_hash` and
:func:`file_hash` then read the clip's encoded bytes from the container and decode them from memory,
and the content hash is the sha1 of those bytes, as it is of a file's: the same audio has the same
cache key whatever it came in.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import BadInputError
from .sources import audio_bytes, is_ref, ref_hash, ref_seconds

SAMPLE_RATE = 16000
MIN_SECONDS = 0.25  # shorter clips carry no usable prosody (and break eGeMAPS functionals)
SILENCE_DBFS = -70.0  # peak below this counts as silent


def soundfile_path(path) -> str | bytes:
    """``path`` for soundfile: the file system's own bytes when the name is not valid UTF-8
    (soundfile encodes ``str`` names strictly and would refuse it)."""
    name = os.fspath(path)
    if isinstance(name, str):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(name)
    return name


def read_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = MIN_SECONDS,
    silence_dbfs: float = SILENCE_DBFS,
    start: float | None = None,
    end: float | None = None,
    loudness: str | None = None,
    augment=None,
) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    ``loudness``: None / "none" (as recorded), "peak" (peak at -1 dBFS) or "rms:<dBFS>" (e.g.
    "rms:-23"), applied after the checks: corpora differ by 20 dB or more in level (EmoDB is
    peak-normalised, RAVDESS about -40 dBFS RMS), which otherwise leaks the corpus into features.
    ``augment``: an :class:`~smoothclap.augment.Augmentation` (a training view of the clip, seeded by
    its content hash), applied after the checks and before ``loudness``.

    Returns: array of shape ``[num_samples]``.
    Raises BadInputError for missing, unreadable, empty, truncated, non-finite, silent or too-short
    audio.
    """
    if is_ref(path):  # a clip inside a container: its bytes, decoded from memory
        blob = audio_bytes(path)
        if not blob:
            raise BadInputError(path, "empty audio (0 bytes)")
        short = _wav_shortfall(io.BytesIO(blob), len(blob))
        source = lambda: io.BytesIO(blob)  # noqa: E731 - soundfile reads a fresh stream each time
    else:
        path = Path(path)
        if not path.exists():
            raise BadInputError(path, "file not found")
        if path.stat().st_size == 0:
            raise BadInputError(path, "empty file (0 bytes)")
        short = wav_shortfall(path)
        source = lambda: soundfile_path(path)  # noqa: E731
    if short is not None:
        declared, held = short
        raise BadInputError(path, f"truncated WAV (its header declares {declared} frames, the file holds {held})")
    try:
        info = sf.info(source())
        sr = info.samplerate
        a = int(round(start * sr)) if start else 0
        b = int(round(end * sr)) if end else -1
        data, sr = sf.read(source(), start=a, stop=None if b < 0 else b, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise BadInputError(path, f"unreadable audio ({e.__class__.__name__}: {e})") from None
    if data.size == 0:
        raise BadInputError(path, "no audio samples")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wav)):
        raise BadInputError(path, "audio contains NaN or infinite samples")
    if sr != sample_rate:
        import soxr

        wav = soxr.resample(wav, sr, sample_rate).astype(np.float32)
    dur = len(wav) / sample_rate
    if dur < min_seconds:
        raise BadInputError(path, f"too short ({dur:.3f} s < {min_seconds} s)")
    peak = float(np.max(np.abs(wav)))
    if peak <= 0 or 20 * np.log10(peak) < silence_dbfs:
        raise BadInputError(path, f"silent (peak below {silence_dbfs} dBFS)")
    if augment is not None:
        wav = augment(wav, sample_rate, file_hash(path))
    if loudness not in (None, "none"):
        wav = normalize_loudness(wav, loudness)
    return np.ascontiguousarray(wav, dtype=np.float32)


def wav_shortfall(path: str | Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose ``data`` chunk is cut short (the header declares more sample
    frames than the file holds; decoders then silently return the part that is there):
    ``(declared frames, frames present)``. None for complete files and other formats."""
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            return _wav_shortfall(f, size)
    except OSError:
        return None


def _wav_shortfall(f, size: int) -> tuple[int, int] | None:
    """:func:`wav_shortfall` of the ``size`` bytes readable from the binary stream ``f``."""
    import struct

    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block = None
    while True:
        ch = f.read(8)
        if len(ch) < 8:
            return None
        cid, n = ch[:4], struct.unpack("<I", ch[4:])[0]
        if cid == b"fmt ":
            fmt = f.read(min(n, 16))
            if len(fmt) >= 14:
                block = struct.unpack("<H", fmt[12:14])[0]
            f.seek(n - len(fmt) + (n & 1), 1)
        elif cid == b"data":
            if n in (0, 0xFFFFFFFF) or not block:  # streamed / unknown length: nothing to check
                return None
            present = size - f.tell()
            if present >= n:
                return None
            return n // block, max(present, 0) // block
        else:
            f.seek(n + (n & 1), 1)


def normalize_loudness(wav: np.ndarray, mode: str) -> np.ndarray:
    """``[T]`` -> ``[T]`` scaled to a peak of -1 dBFS ("peak") or an RMS level ("rms:-23")."""
    if mode == "peak":
        target = 10 ** (-1 / 20)
        return wav * (target / max(float(np.max(np.abs(wav))), 1e-12))
    if mode.startswith("rms:"):
        try:
            db = float(mode[4:])
        except ValueError:
            raise ValueError(f"loudness {mode!r}: expected rms:<dBFS>, e.g. rms:-23") from None
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
        out = wav * (10 ** (db / 20) / max(rms, 1e-12))
        return np.clip(out, -1.0, 1.0)  # loud targets on peaky clips: clip rather than overflow
    raise ValueError(f"unknown loudness normalisation {mode!r}: none, peak or rms:<dBFS>")


def header_seconds(path: str | Path) -> float:
    """Duration from the file header, no decoding (0 when unreadable: reading then says why). For a
    container reference: what listing learnt of it, else from its bytes' header."""
    if is_ref(path):
        try:
            return ref_seconds(path)
        except Exception:  # noqa: BLE001
            return 0.0
    try:
        info = sf.info(soundfile_path(path))
        return info.frames / float(info.samplerate)
    except Exception:  # noqa: BLE001
        return 0.0


def split_windows(wave: np.ndarray, max_samples: int, min_samples: int, what: str = "audio") -> list[np.ndarray]:
    """``[T]`` -> the clip itself (zero-padded to ``min_samples``) or, when longer than
    ``max_samples``, ``ceil(T / max_samples)`` near-equal windows; nothing is dropped."""
    import math

    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if wave.size == 0:
        raise ValueError(f"{what}: empty waveform")
    if wave.size < min_samples:
        wave = np.pad(wave, (0, min_samples - wave.size))
    if wave.size <= max_samples:
        return [wave]
    k = math.ceil(wave.size / max_samples)
    step = math.ceil(wave.size / k)
    return [wave[i : i + step] for i in range(0, wave.size, step)]


def pool_windows(sums: np.ndarray, counts: np.ndarray, owner, n: int) -> np.ndarray:
    """The other half of :func:`split_windows`: per-window sums over real frames ``[S, ...]``,
    their frame counts ``[S]`` and each window's clip ``owner`` ``[S]`` -> the mean over all real
    frames of each clip's windows ``[n, ...]`` (in the dtype of ``sums``)."""
    sums = np.asarray(sums)
    tot = np.zeros((n, *sums.shape[1:]), dtype=sums.dtype)
    cnt = np.zeros(n, dtype=sums.dtype)
    np.add.at(tot, np.asarray(owner, dtype=np.int64), sums)
    np.add.at(cnt, np.asarray(owner, dtype=np.int64), np.asarray(counts, dtype=sums.dtype))
    return tot / np.maximum(cnt, 1).reshape(n, *([1] * (sums.ndim - 1)))


def pool_moments(sums: np.ndarray, squares: np.ndarray, counts: np.ndarray, owner, n: int) -> np.ndarray:
    """:func:`pool_windows` for mean + standard deviation: per-window sums ``[S, ..., D]`` and sums
    of squares ``[S, ..., D]`` over real frames, frame counts ``[S]``, ``owner`` ``[S]`` -> float64
    ``[n, ..., 2 * D]``: along the last axis the mean over all real frames of each clip's windows,
    then their population standard deviation ``sqrt(max(E[h^2] - E[h]^2, 0))``. Computed in float64
    (pass float64 sums: float32 ones lose the variance of near-constant dimensions), so a clip's
    windows pool as one long clip would."""
    mean = pool_windows(np.asarray(sums, dtype=np.float64), counts, owner, n)
    sq = pool_windows(np.asarray(squares, dtype=np.float64), counts, owner, n)
    return np.concatenate([mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))], axis=-1)


def content_hash(path: str | Path, skip) -> str | None:
    """:func:`file_hash` of ``path``, or None after handing a missing / unreadable file to ``skip``
    (a :class:`~smoothclap.errors.SkipLog`: raises unless it skips). A container reference: the sha1
    of the clip's encoded bytes (an unreadable one goes to ``skip`` naming it)."""
    if is_ref(path):
        try:
            return ref_hash(path)
        except BadInputError as e:
            skip.handle(e)
            return None
    try:
        return file_hash(path)
    except FileNotFoundError:
        skip.handle(BadInputError(path, "file not found"))
    except OSError as e:
        skip.handle(BadInputError(path, f"unreadable file ({e.__class__.__name__}: {e})"))
    return None


#: file identity (device, inode, size, mtime, ctime) -> sha1 hex: a file is hashed once per process
#: (the embedding cache's keys, the eGeMAPS cache's keys and the training-clip record all need it).
_HASHES: "OrderedDict[tuple, str]" = OrderedDict()
_HASHES_MAX = 1 << 16
_HASHES_LOCK = threading.Lock()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha1 of the file's bytes: the content key of every cache. Remembered per process for a file
    whose device, inode, size and modification times are unchanged, so callers may ask again. A
    container reference: the sha1 of the clip's encoded bytes (:func:`smoothclap.sources.ref_hash`;
    :class:`~smoothclap.sources.ContainerError`, an ``OSError``, when unreadable)."""
    if is_ref(path):
        return ref_hash(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _HASHES_LOCK:
            known = _HASHES.get(ident)
            if known is not None:
                _HASHES.move_to_end(ident)
                return known
        h = hashlib.sha1()
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    digest = h.hexdigest()
    with _HASHES_LOCK:
        _HASHES[ident] = digest
        if len(_HASHES) > _HASHES_MAX:
            _HASHES.popitem(last=False)
    return digest


def hash_prefix(hexdigest: str) -> int:
    """The first 8 bytes of a sha1 hex digest as an unsigned 64-bit integer (what a model records of
    each training clip: :func:`content_prefixes`)."""
    return int(hexdigest[:16], 16)


def content_prefixes(files, *, missing_ok: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(prefixes [N] uint64, ok [N] bool)``: the 8-byte content-hash prefix (:func:`hash_prefix`
    of :func:`file_hash`) of each file; files that cannot be read are 0 with ``ok`` False (raised
    instead when not ``missing_ok``)."""
    files = list(files)
    out = np.zeros(len(files), dtype=np.uint64)
    ok = np.zeros(len(files), dtype=bool)
    for i, f in enumerate(files):
        try:
            out[i] = hash_prefix(file_hash(f))
            ok[i] = True
        except OSError:
            if not missing_ok:
                raise
    return out, ok
