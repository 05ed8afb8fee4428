"""Typed run configuration: nested dataclasses loaded from YAML and dumped beside every run.

Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .paraling import CaptionConfig

# Named loss presets (DESIGN.md section 2). "smoothclap" holds the reconstructed defaults;
# "paper-main" the setting of the paper's reported main run; "clap" the hard-target baseline.
LOSS_PRESETS: dict[str, dict] = {
    "clap": {"beta": 0.0},
    "smoothclap": {"beta": 0.1, "gamma": 0.5, "tau_a": 0.07, "tau_t": 0.07},
    "paper-main": {"beta": 0.5, "gamma": 0.1, "tau_a": 0.07, "tau_t": 0.07},
    # Informative targets (BENCHMARKS.md, soft-target ablation): per-corpus z-scored target
    # embeddings, temperatures calibrated to a mean diagonal mass of 0.5.
    "smoothclap-calibrated": {"beta": 0.1, "gamma": 0.5, "target_standardize": "zscore",
                              "target_standardize_group": "corpus", "calibrate": "diag", "calibrate_value": 0.5},
}


@dataclass
class TowersConfig:
    """Frozen encoders, by spec string (see ``smoothclap.towers.build_tower``)."""

    audio: str = "whisper-tiny-en"
    text: str = "minilm-l6"
    # Frozen "local feature" encoder for q_a2a; None = same as the audio tower (the paper's default).
    local: str | None = None
    batch_size: int = 16
    device: str = "auto"
    # End-to-end mode only (train.mode: e2e): fine-tune a tower (hf: towers) with its own learning
    # rate. A frozen tower never receives gradients (it runs under no_grad, in eval mode).
    freeze_audio: bool = True
    freeze_text: bool = True
    audio_lr: float = 1e-5
    text_lr: float = 1e-5


@dataclass
class ModelConfig:
    """Projection heads and scale (ParaCLAP head, DESIGN.md section 2)."""

    embed_dim: int = 768
    dropout: float = 0.5
    init_scale: float = 1.0 / 0.07
    max_scale: float = 100.0
    # Standardise tower embeddings with training mean / std before the heads (stored in the model).
    standardize_audio: bool = True
    # Cross-corpus normalisation: z-score audio-tower embeddings within each group ("corpus" or
    # "speaker" column) before everything else, in training and (without labels) at test time.
    feature_norm_group: str | None = None


@dataclass
class LossConfig:
    """SmoothCLAP soft targets. ``preset`` fills the fields it names unless they are set explicitly."""

    preset: str | None = None
    beta: float = 0.1
    gamma: float = 0.5
    tau_a: float = 0.07
    tau_t: float = 0.07
    # Text used for q_t2t: "description" (binned eGeMAPS phrases, no emotion word),
    # "description+label" (with the emotion word) or "caption" (the training caption itself).
    text_target: str = "description"
    # Target geometry (issue: make the soft targets informative rather than flat):
    # standardise local / description embeddings with training statistics before the cosine
    # ("none" | "center" | "zscore" | "whiten"), per group ("corpus" | "speaker") or globally (None).
    target_standardize: str = "none"
    target_standardize_group: str | None = None
    # Temperature calibration: pick tau_a / tau_t on training batches so that q's rows reach
    # ``calibrate_value`` of mean diagonal mass ("diag") or of effective neighbours ("neighbours").
    calibrate: str = "none"
    calibrate_value: float = 0.5
    # Keep each row's k largest similarities (the clip itself included) before the softmax.
    topk: int | None = None

    def __post_init__(self) -> None:
        if self.text_target not in ("description", "description+label", "caption"):
            raise ValueError(f"loss.text_target must be description, description+label or caption, "
                             f"got {self.text_target!r}")
        if self.target_standardize not in ("none", "center", "zscore", "whiten"):
            raise ValueError(f"loss.target_standardize must be none, center, zscore or whiten, "
                             f"got {self.target_standardize!r}")
        if self.calibrate not in ("none", "diag", "neighbours"):
            raise ValueError(f"loss.calibrate must be none, diag or neighbours, got {self.calibrate!r}")


@dataclass
class DataConfig:
    """Training data: a manifest (CSV/TSV/JSONL) or a named corpus with its root."""

    manifest: str | None = None
    corpus: str | None = None
    root: str | None = None
    split: str | None = "train"  # rows whose ``split`` equals this train; None = all rows
    labels: list[str] | None = None  # allowed labels; None = whatever the table has
    skip_bad: bool = False


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
    # gradient accumulation, mixed precision (see smoothclap.e2e).
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

    def __post_init__(self) -> None:
        if self.mode not in ("cached", "e2e"):
            raise ValueError(f"train.mode must be cached or e2e, got {self.mode!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.accum_freq < 1:
            raise ValueError(f"train.accum_freq must be >= 1, got {self.accum_freq}")
        if self.crop_seconds is not None and self.crop_seconds <= 0:
            raise ValueError(f"train.crop_seconds must be > 0 or null, got {self.crop_seconds}")


@dataclass
class RunConfig:
    towers: TowersConfig = field(default_factory=TowersConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: str = "~/.cache/smoothclap"
    out_dir: str = "runs/smoothclap"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {value!r} does not match {tp}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (a,) = typing.get_args(tp)
        return [_convert(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    if cls is LossConfig:
        kwargs = _apply_preset(kwargs, set(data))
    return cls(**kwargs)


def _apply_preset(kwargs: dict, explicit: set[str]) -> dict:
    preset = kwargs.get("preset")
    if preset is None:
        return kwargs
    if preset not in LOSS_PRESETS:
        raise ValueError(f"loss.preset: unknown preset {preset!r}; known: {sorted(LOSS_PRESETS)}")
    out = dict(kwargs)
    for k, v in LOSS_PRESETS[preset].items():
        if k not in explicit:
            out[k] = v
    return out


def loss_preset(name: str, **overrides) -> LossConfig:
    """LossConfig from a named preset, e.g. ``loss_preset("clap")``."""
    return from_dict(LossConfig, {"preset": name, **overrides}, "loss")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a RunConfig from YAML (or defaults) and apply ``key.sub=value`` overrides (YAML values)."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: top level must be a mapping")
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like section.key=value")
        key, val = ov.split("=", 1)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(val)
    return from_dict(RunConfig, data)
