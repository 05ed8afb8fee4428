"""Audio reading and validation: any format soundfile reads, any rate, any channel count.

Every clip becomes mono float32 at the requested rate. Bad clips raise
:class:`~smoothclap.errors.BadInputError` naming the file and the reason.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import BadInputError

SAMPLE_RATE = 16000
MIN_SECONDS = 0.25  # shorter clips carry no usable prosody (and break eGeMAPS functionals)
SILENCE_DBFS = -70.0  # peak below this counts as silent


def read_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = MIN_SECONDS,
    silence_dbfs: float = SILENCE_DBFS,
    start: float | None = None,
    end: float | None = None,
    loudness: str | None = None,
) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    ``loudness``: None / "none" (as recorded), "peak" (peak at -1 dBFS) or "rms:<dBFS>" (e.g.
    "rms:-23"), applied after the checks: corpora differ by 20 dB or more in level (EmoDB is
    peak-normalised, RAVDESS about -40 dBFS RMS), which otherwise leaks the corpus into features.

    Returns: array of shape ``[num_samples]``.
    Raises BadInputError for missing, unreadable, empty, truncated, non-finite, silent or too-short
    audio.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    short = wav_shortfall(path)
    if short is not None:
        declared, held = short
        raise BadInputError(path, f"truncated WAV (its header declares {declared} frames, the file holds {held})")
    try:
        info = sf.info(str(path))
        sr = info.samplerate
        a = int(round(start * sr)) if start else 0
        b = int(round(end * sr)) if end else -1
        data, sr = sf.read(str(path), start=a, stop=None if b < 0 else b, dtype="float32", always_2d=True)
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
    if loudness not in (None, "none"):
        wav = normalize_loudness(wav, loudness)
    return np.ascontiguousarray(wav, dtype=np.float32)


def wav_shortfall(path: str | Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file whose ``data`` chunk is cut short (the header declares more sample
    frames than the file holds; decoders then silently return the part that is there):
    ``(declared frames, frames present)``. None for complete files and other formats."""
    import struct

    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
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
    except OSError:
        return None


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
    """Duration from the file header, no decoding (0 when unreadable: reading then says why)."""
    try:
        info = sf.info(str(path))
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


def content_hash(path: str | Path, skip) -> str | None:
    """:func:`file_hash` of ``path``, or None after handing a missing / unreadable file to ``skip``
    (a :class:`~smoothclap.errors.SkipLog`: raises unless it skips)."""
    try:
        return file_hash(path)
    except FileNotFoundError:
        skip.handle(BadInputError(path, "file not found"))
    except OSError as e:
        skip.handle(BadInputError(path, f"unreadable file ({e.__class__.__name__}: {e})"))
    return None


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha1 of the file's bytes: the content key of every cache."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
