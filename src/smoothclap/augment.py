"""Waveform augmentation for cached training (``train.augment_views``).

In cached mode the frozen tower sees each training clip once, so augmenting per batch is not
possible. Instead a few altered copies ("views") of each clip are made, each embedded once and
cached like the clip itself (the view is part of the cache key), and trained on as extra rows
beside the clip as recorded. The heads then see the same emotion under other speeds, rooms, noise
and levels: acoustic differences of the kind that separate one corpus from another.

A view is deterministic: its random draws are seeded by the clip's content hash and the view
number, so a clip's view 1 is the same in every run, seed and process (and its cache entry is
reused). Effects, applied in this order, each with parameters drawn uniformly per clip and view:

* ``speed``: played 0.9-1.1x as fast (tempo and pitch together, as tape or ``sox speed``);
* ``reverb``: convolved with a synthetic room (exponentially decaying noise, RT60 0.2-0.7 s,
  direct-to-reverberant mix 0-6 dB), level kept;
* ``noise``: white noise at 10-30 dB SNR;
* ``level``: gain -12 to +6 dB (clipped to [-1, 1]).

The model's own loudness levelling (``model.loudness``) is applied after the effects, as at
inference.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: The effects a view may apply, in the order they are applied.
KINDS = ("speed", "reverb", "noise", "level")
SPEED = (0.9, 1.1)
RT60_SECONDS = (0.2, 0.7)
DRY_OVER_WET_DB = (0.0, 6.0)
SNR_DB = (10.0, 30.0)
GAIN_DB = (-12.0, 6.0)


@dataclass(frozen=True)
class Augmentation:
    """View ``view`` (1, 2, ...) of a clip under the effects ``kinds`` (a subset of :data:`KINDS`)."""

    kinds: tuple[str, ...]
    view: int

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"augmentation effects {list(self.kinds)!r}: each must be one of {list(KINDS)}")
        if self.view < 1:
            raise ValueError(f"augmentation view {self.view}: views are numbered from 1")

    @property
    def key(self) -> str:
        """What the view did to the waveform: part of its cache key."""
        return f"{'+'.join(k for k in KINDS if k in self.kinds)}#{self.view}"

    def rng(self, content: str) -> np.random.Generator:
        """The view's random draws for the clip whose content hash is ``content``."""
        digest = hashlib.sha1(f"{content}|{self.key}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def __call__(self, wave: np.ndarray, sample_rate: int, content: str) -> np.ndarray:
        """``[T]`` float32 -> the view ``[T']`` float32 (``T' = T / speed``; the other effects keep T)."""
        rng = self.rng(content)
        x = np.asarray(wave, dtype=np.float64)
        # every draw is made, used or not, so a clip's speed does not depend on which effects follow
        speed, rt60, dry_db = rng.uniform(*SPEED), rng.uniform(*RT60_SECONDS), rng.uniform(*DRY_OVER_WET_DB)
        snr_db, gain_db = rng.uniform(*SNR_DB), rng.uniform(*GAIN_DB)
        if "speed" in self.kinds:
            import soxr

            x = soxr.resample(x, sample_rate * speed, sample_rate)
        if "reverb" in self.kinds:
            x = _reverb(x, sample_rate, rt60, dry_db, rng)
        if "noise" in self.kinds:
            rms = float(np.sqrt(np.mean(x * x)))
            x = x + rng.standard_normal(len(x)) * rms * 10 ** (-snr_db / 20)
        if "level" in self.kinds:
            x = np.clip(x * 10 ** (gain_db / 20), -1.0, 1.0)
        return np.ascontiguousarray(x, dtype=np.float32)


def _reverb(x: np.ndarray, sample_rate: int, rt60: float, dry_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` ``[T]`` in a synthetic room: the dry signal plus its convolution with decaying noise
    (-60 dB after ``rt60`` seconds), the reverberant part ``dry_db`` below the dry; RMS kept."""
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3 * t / rt60)
    size = 1 << int(np.ceil(np.log2(len(x) + n - 1)))
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(tail, size), size)[: len(x)]
    wet *= np.sqrt(np.mean(x * x) / max(float(np.mean(wet * wet)), 1e-20)) * 10 ** (-dry_db / 20)
    y = x + wet
    return y * np.sqrt(np.mean(x * x) / max(float(np.mean(y * y)), 1e-20))


def views(kinds, count: int) -> list[Augmentation]:
    """The ``count`` views ``1..count`` under ``kinds``."""
    return [Augmentation(tuple(kinds), v) for v in range(1, int(count) + 1)]


__all__ = ["Augmentation", "KINDS", "views"]
