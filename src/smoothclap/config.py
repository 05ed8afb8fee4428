"""Typed run configuration: nested dataclasses loaded from YAML, validated, dumped beside every run.

Every setting lives here (``docs/configuration.md`` lists them); nothing is read from environment
variables. :func:`load_config` reads a YAML file (or a shipped config by name: ``paper``,
``demo``) and ``section.key=value`` overrides, and checks every value before any work starts:
unknown keys (with a "did you mean"), types and ranges. Errors are :class:`ConfigError`, naming
the file, the key and the value.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cache import DEFAULT_CACHE_DIR
from .errors import UserError
from .captions import CaptionConfig


class ConfigError(UserError):
    """A bad setting: ``where`` (file or "--set"), ``key`` (dotted) and the reason."""

    def __init__(self, key: str, reason: str, where: str | None = None):
        self.key, self.reason, self.where = key, reason, where
        super().__init__(f"{where + ': ' if where else ''}{key}: {reason}")


# Named loss presets (docs/method.md). "smoothclap" holds what the soft-target study chose on
# validation speakers of the training corpora (BENCHMARKS.md): label targets (same-label clips as
# soft positives), no description term, the Jeffreys reading; "smoothclap-reconstructed" the
# defaults reconstructed from the paper's ablations; "paper-main" the paper's reported main run;
# "clap" the hard-target baseline. The LossConfig defaults equal "smoothclap".
_PAPER_TARGETS = {"local_source": "tower", "divergence": "kl", "t2a_target": "transpose"}
LOSS_PRESETS: dict[str, dict] = {
    "clap": {"beta": 0.0},
    "smoothclap": {"beta": 0.1, "gamma": 0.0, "tau_a": 0.07, "tau_t": 0.07, "local_source": "labels",
                   "divergence": "jeffreys", "t2a_target": "transpose"},
    "paper-main": {"beta": 0.5, "gamma": 0.1, "tau_a": 0.07, "tau_t": 0.07, **_PAPER_TARGETS},
    # The defaults reconstructed from the paper's ablations (its text could not be read in full).
    "smoothclap-reconstructed": {"beta": 0.1, "gamma": 0.5, "tau_a": 0.07, "tau_t": 0.07, **_PAPER_TARGETS},
    # Informative targets (BENCHMARKS.md, soft-target ablation): per-corpus z-scored target
    # embeddings, temperatures calibrated to a mean diagonal mass of 0.5.
    "smoothclap-calibrated": {"beta": 0.1, "gamma": 0.5, **_PAPER_TARGETS, "target_standardize": "zscore",
                              "target_standardize_group": "corpus", "calibrate": "diag", "calibrate_value": 0.5},
}

#: Shipped configs, reachable by name (``--config demo``).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(map(repr, allowed))}")


def _check(key: str, ok: bool, value, what: str) -> None:
    if not ok:
        raise ConfigError(key, f"{value!r}: must be {what}")


@dataclass
class TowersConfig:
    """Encoders, by spec string (see ``smoothclap.towers``)."""

    audio: str = "whisper-tiny-en"
    text: str = "minilm-l6"
    # Frozen "local feature" encoder for q_a2a; None = same as the audio tower (the paper's default).
    local: str | None = None
    batch_size: int = 16
    device: str = "auto"
    # Forward worker threads of the extraction pipeline (None: automatic, see smoothclap.embed).
    embed_workers: int | None = None
    # Trim the heap after every this many batches of a forward worker (0 = never).
    trim_every: int = 1
    # End-to-end mode only (train.mode: e2e): fine-tune a tower (hf: towers) with its own learning
    # rate. A frozen tower never receives gradients (it runs under no_grad, in eval mode).
    freeze_audio: bool = True
    freeze_text: bool = True
    audio_lr: float = 1e-5
    text_lr: float = 1e-5

    def __post_init__(self) -> None:
        from .towers import check_spec

        for key, spec, kind in (("towers.audio", self.audio, "audio"), ("towers.text", self.text, "text"),
                                ("towers.local", self.local, "audio")):
            if spec is None and key == "towers.local":
                continue
            try:
                check_spec(spec, kind)
            except ValueError as e:
                raise ConfigError(key, str(e)) from None
        _check("towers.batch_size", self.batch_size >= 1, self.batch_size, ">= 1")
        _check("towers.embed_workers", self.embed_workers is None or self.embed_workers >= 1, self.embed_workers,
               ">= 1 or null")
        _check("towers.trim_every", self.trim_every >= 0, self.trim_every, ">= 0")
        _check("towers.audio_lr", self.audio_lr > 0, self.audio_lr, "> 0")
        _check("towers.text_lr", self.text_lr > 0, self.text_lr, "> 0")
        _check_device("towers.device", self.device)


def _check_device(key: str, value: str) -> None:
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ConfigError(key, f"{value!r} is not auto, cpu, cuda, cuda:N or mps")


@dataclass
class ModelConfig:
    """Projection heads and scale (ParaCLAP head) and what the model does before them."""

    embed_dim: int = 768
    dropout: float = 0.5
    init_scale: float = 1.0 / 0.07
    max_scale: float = 100.0
    # Standardise tower embeddings with training mean / std before the heads (stored in the model).
    standardize_audio: bool = True
    # Cross-corpus normalisation: z-score audio-tower embeddings within each group ("corpus" or
    # "speaker" column) before everything else, in training and (without labels) at test time.
    feature_norm_group: str | None = None
    # Groups with fewer clips than this use the stored training statistics at test time.
    min_group_clips: int = 8
    # Waveform level before the audio tower: null (as recorded), "peak" or "rms:<dBFS>".
    loudness: str | None = None

    def __post_init__(self) -> None:
        _check("model.embed_dim", self.embed_dim >= 1, self.embed_dim, ">= 1")
        _check("model.dropout", 0.0 <= self.dropout < 1.0, self.dropout, "in [0, 1)")
        _check("model.init_scale", self.init_scale > 0, self.init_scale, "> 0")
        _check("model.max_scale", self.max_scale >= self.init_scale, self.max_scale, ">= model.init_scale")
        _check("model.min_group_clips", self.min_group_clips >= 2, self.min_group_clips, ">= 2")
        if self.feature_norm_group is not None:
            _choice("model.feature_norm_group", self.feature_norm_group, ("corpus", "speaker"))
        if self.loudness not in (None, "none", "peak"):
            import re

            if not re.fullmatch(r"rms:-?\d+(\.\d+)?", str(self.loudness)):
                raise ConfigError("model.loudness", f"{self.loudness!r} is not null, peak or rms:<dBFS> (e.g. rms:-23)")


@dataclass
class LossConfig:
    """SmoothCLAP soft targets. ``preset`` fills the fields it names unless they are set explicitly."""

    preset: str | None = None
    beta: float = 0.1
    gamma: float = 0.0
    tau_a: float = 0.07
    tau_t: float = 0.07
    # Text used for q_t2t: "description" (binned eGeMAPS phrases, no emotion word),
    # "description+label" (with the emotion word) or "caption" (the training caption itself).
    text_target: str = "description"
    # Target geometry: standardise local / description embeddings with training statistics before
    # the cosine ("none" | "center" | "zscore" | "whiten"), per group ("corpus" | "speaker") or
    # globally (None).
    target_standardize: str = "none"
    target_standardize_group: str | None = None
    # Temperature calibration: pick tau_a / tau_t on training batches so that q's rows reach
    # ``calibrate_value`` of mean diagonal mass ("diag") or of effective neighbours ("neighbours").
    calibrate: str = "none"
    calibrate_value: float = 0.5
    # Keep each row's k largest similarities (the clip itself included) before the softmax.
    topk: int | None = None
    # Where q_a2a comes from: "tower" (towers.local, else the audio tower: the paper), "posteriors"
    # (an emotion classifier on those features, cross-fitted out-of-fold by speaker on the training
    # corpora) or "labels" (the training labels: same-label clips as soft positives).
    local_source: str = "labels"
    posterior_folds: int = 5            # speaker folds of the cross-fitted classifier
    posterior_kind: str = "categorical"  # categorical (label posteriors) or dimensional (arousal/valence/dominance)
    # The paper's "symmetric KL": "kl" = KL(y || p) per direction (soft cross-entropy), "jeffreys" =
    # KL(y || p) + KL(p || y) per direction. The text-to-audio target: y^T ("transpose") or y^T with
    # rows renormalised ("renormalized").
    divergence: str = "jeffreys"
    t2a_target: str = "transpose"

    def __post_init__(self) -> None:
        _choice("loss.local_source", self.local_source, ("tower", "posteriors", "labels"))
        _check("loss.posterior_folds", self.posterior_folds >= 2, self.posterior_folds, ">= 2")
        _choice("loss.posterior_kind", self.posterior_kind, ("categorical", "dimensional"))
        _choice("loss.divergence", self.divergence, ("kl", "jeffreys"))
        _choice("loss.t2a_target", self.t2a_target, ("transpose", "renormalized"))
        if self.preset is not None:
            _choice("loss.preset", self.preset, tuple(LOSS_PRESETS))
        _check("loss.beta", 0.0 <= self.beta <= 1.0, self.beta, "in [0, 1]")
        _check("loss.gamma", 0.0 <= self.gamma <= 1.0, self.gamma, "in [0, 1]")
        _check("loss.tau_a", self.tau_a > 0, self.tau_a, "> 0")
        _check("loss.tau_t", self.tau_t > 0, self.tau_t, "> 0")
        _choice("loss.text_target", self.text_target, ("description", "description+label", "caption"))
        _choice("loss.target_standardize", self.target_standardize, ("none", "center", "zscore", "whiten"))
        if self.target_standardize_group is not None:
            _choice("loss.target_standardize_group", self.target_standardize_group, ("corpus", "speaker"))
        _choice("loss.calibrate", self.calibrate, ("none", "diag", "neighbours"))
        _check("loss.calibrate_value", self.calibrate_value > 0, self.calibrate_value, "> 0")
        _check("loss.topk", self.topk is None or self.topk >= 1, self.topk, ">= 1 or null")


@dataclass
class SourceConfig:
    """One training corpus (``corpus`` + ``root``) or manifest (``manifest``)."""

    corpus: str | None = None
    root: str | None = None
    manifest: str | None = None
    # Rows of this split train (None: data.split). A table without split values trains on all rows.
    split: str | None = None
    # Label -> caption word for this source (on top of the corpus' caption vocabulary).
    label_map: dict[str, str] = field(default_factory=dict)
    # Keyword options of the corpus loader (e.g. {classes: 5} for aibo).
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.corpus is None):
            raise ConfigError("data.sources", "each source needs exactly one of corpus (with root) or manifest")
        if self.corpus is not None:
            from .corpora import get_info

            try:
                get_info(self.corpus)
            except ValueError as e:
                raise ConfigError("data.sources.corpus", str(e)) from None


@dataclass
class DataConfig:
    """Training data: one manifest (CSV/TSV/JSONL) or named corpus with its root, or several
    (``sources``); rows of ``split`` train (a table without split values trains on all rows)."""

    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None
    sources: list[SourceConfig] = field(default_factory=list)
    split: str | None = "train"  # rows whose ``split`` equals this train; None = all rows
    labels: list[str] | None = None  # allowed labels; None = whatever the table has
    # Map each corpus' labels to the shared caption vocabulary (smoothclap.corpora.registry).
    caption_vocabulary: bool = True
    label_map: dict[str, str] = field(default_factory=dict)  # label -> caption word, every source
    skip_bad: bool = False

    def __post_init__(self) -> None:
        if self.labels is not None:
            if len(set(self.labels)) != len(self.labels) or any(not str(x).strip() for x in self.labels):
                raise ConfigError("data.labels", f"{self.labels!r}: labels must be distinct and non-empty")

    def all_sources(self) -> list[SourceConfig]:
        """``sources`` plus the single-source shorthand (``manifest`` or ``corpus`` + ``root``)."""
        out = list(self.sources)
        if self.manifest is not None:
            out.append(SourceConfig(manifest=self.manifest))
        if self.corpus is not None:
            out.append(SourceConfig(corpus=self.corpus, root=self.root))
        return out


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    # "cached": heads + scale on cached frozen-tower embeddings (fast; the default).
    # "e2e": towers run on the audio every step: random crops, optional unfrozen towers,
    # gradient accumulation, mixed precision (see smoothclap.trainer.steps).
    mode: str = "cached"
    crop_seconds: float | None = None  # e2e: random crop length (paper: 5.0); None = whole clips
    # e2e: micro-batches per optimizer step; the contrastive loss still sees the whole batch
    # (features of the other micro-batches are cached, as open_clip's accum_freq).
    accum_freq: int = 1
    precision: str = "auto"  # e2e: auto | fp32 | bf16 | fp16 (autocast on CUDA only; CPU: fp32)
    # Model selection: zero-shot UAR on the rows of this split after every epoch; the best epoch
    # is saved as <run>/best_model (scores in <run>/selection.json). None = no selection.
    select_split: str | None = None
    select_labels: list[str] | None = None  # classes scored (None = the split's labels)
    select_templates: str = "bare"
    # Minutes a process waits in a collective (e.g. while rank 0 prepares data) under torchrun.
    dist_timeout_min: float = 180.0

    def __post_init__(self) -> None:
        _check("train.epochs", self.epochs >= 1, self.epochs, ">= 1")
        _check("train.batch_size", self.batch_size >= 2, self.batch_size, ">= 2 (a contrastive batch needs negatives)")
        _check("train.lr", self.lr > 0, self.lr, "> 0")
        _check("train.weight_decay", self.weight_decay >= 0, self.weight_decay, ">= 0")
        _check("train.num_workers", self.num_workers >= 0, self.num_workers, ">= 0")
        _choice("train.mode", self.mode, ("cached", "e2e"))
        _choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _check("train.accum_freq", self.accum_freq >= 1, self.accum_freq, ">= 1")
        _check("train.crop_seconds", self.crop_seconds is None or self.crop_seconds > 0, self.crop_seconds,
               "> 0 or null")
        _check("train.dist_timeout_min", self.dist_timeout_min > 0, self.dist_timeout_min, "> 0")
        _check_device("train.device", self.device)
        from .prompts import resolve_templates

        try:
            resolve_templates(self.select_templates)
        except ValueError as e:
            raise ConfigError("train.select_templates", str(e)) from None


@dataclass
class RunConfig:
    towers: TowersConfig = field(default_factory=TowersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: str | None = DEFAULT_CACHE_DIR  # None: no cache
    out_dir: str = "runs/smoothclap"

    def __post_init__(self) -> None:
        lc, bs = self.loss, self.train.batch_size
        if lc.calibrate == "diag" and not 1.0 / bs < lc.calibrate_value < 1.0:
            raise ConfigError("loss.calibrate_value", f"{lc.calibrate_value!r}: a diagonal mass must lie in "
                              f"(1/train.batch_size, 1) = ({1 / bs:.3f}, 1)")
        if lc.calibrate == "neighbours" and not 1.0 < lc.calibrate_value < bs:
            raise ConfigError("loss.calibrate_value", f"{lc.calibrate_value!r}: effective neighbours must lie in "
                              f"(1, train.batch_size) = (1, {bs})")
        if self.loss.text_target != "caption" and self.loss.beta > 0 and self.loss.gamma > 0 \
                and not self.captions.variables:
            raise ConfigError("loss.text_target", f"{self.loss.text_target!r} needs eGeMAPS variables "
                              "(captions.variables); use text_target: caption")
        if self.train.mode == "cached":
            t, tw = self.train, self.towers
            bad = [name for name, on in (("train.crop_seconds", t.crop_seconds is not None),
                                         ("train.accum_freq > 1", t.accum_freq > 1),
                                         ("towers.freeze_audio: false", not tw.freeze_audio),
                                         ("towers.freeze_text: false", not tw.freeze_text)) if on]
            if bad:
                raise ConfigError("train.mode", f"{', '.join(bad)} need end-to-end training: set train.mode: e2e "
                                  "(cached training sees one fixed embedding per clip)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# -- reading ------------------------------------------------------------------------------------------
def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        reasons = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                reasons.append(e.reason)
        allowed = " or ".join(_type_name(a) for a in args)
        raise ConfigError(where, f"expected {allowed}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        (a,) = typing.get_args(tp)
        return [_convert(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {value!r}")
        ka, va = typing.get_args(tp)
        return {_convert(ka, k, where): (_convert(va, v, f"{where}.{k}") if va is not Any else v)
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(where, f"expected a string, got {value!r}")
        return str(value)
    return value


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys, types and ranges."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            key = f"{where}.{k}" if where else str(k)
            near = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {', '.join(names)}"
            raise ConfigError(key, f"unknown key{hint}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    if cls is LossConfig:
        kwargs = _apply_preset(kwargs, set(data))
    if cls is CaptionConfig:
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ConfigError(where or "captions", str(e)) from None
    return cls(**kwargs)


def _apply_preset(kwargs: dict, explicit: set[str]) -> dict:
    preset = kwargs.get("preset")
    if preset is None:
        return kwargs
    if preset not in LOSS_PRESETS:
        raise ConfigError("loss.preset", f"unknown preset {preset!r}; known: {', '.join(sorted(LOSS_PRESETS))}")
    out = dict(kwargs)
    for k, v in LOSS_PRESETS[preset].items():
        if k not in explicit:
            out[k] = v
    return out


def loss_preset(name: str, **overrides) -> LossConfig:
    """LossConfig from a named preset, e.g. ``loss_preset("clap")``."""
    return from_dict(LossConfig, {"preset": name, **overrides}, "loss")


def config_path(name_or_path: str | Path) -> Path:
    """A config file: a path, or the name of a shipped config (``paper``, ``demo``)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists() and str(name_or_path) == p.name.removesuffix(".yaml"):
        return shipped
    known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError("--config", f"{name_or_path}: no such file (shipped configs: {known})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a RunConfig from YAML (a path or a shipped config's name; None = defaults) and apply
    ``key.sub=value`` overrides (values in YAML syntax). Raises :class:`ConfigError`."""
    data: dict = {}
    where = None
    if path is not None:
        p = config_path(path)
        where = str(p)
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError("yaml", f"not valid YAML{at}: {getattr(e, 'problem', e)}", where) from None
        except OSError as e:
            raise ConfigError("--config", f"cannot read ({e.strerror})", where) from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError("yaml", "the top level must be a mapping of sections", where)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError("--set", f"{ov!r} must look like section.key=value")
        key, val = ov.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(key, f"{part!r} is a value, not a section", "--set")
            node = nxt
        try:
            node[parts[-1]] = yaml.safe_load(val)
        except yaml.YAMLError:
            node[parts[-1]] = val
        where = where or "--set"
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(e.key, e.reason, where) from None
