"""Typed run configuration: pydantic models loaded from YAML, validated, dumped beside every run.

Every setting lives here, once, with its default and its meaning (``docs/configuration.md`` is
generated from these fields: :func:`reference_markdown`); nothing is read from environment
variables. :func:`load_config` reads a YAML file (or a shipped config by name: ``paper``,
``demo``, ``recommended``), ``section.key=value`` strings (``--set``, values in YAML syntax) and
typed ``{"section.key": value}`` values (the command line's own flags), and checks every value
before any work starts: unknown keys (with a "did you mean"), types and ranges. Errors are
:class:`ConfigError`, naming the file, the key and the value.

:class:`SmoothClapConfig`, what a saved model is (its ``config.json``), extends :class:`ModelConfig`,
so a model and the run that trained it share every default. Nothing here imports PyTorch.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .cache import DEFAULT_CACHE_DIR
from .errors import UserError

# Strict scalars: 5.0 is not an integer, "yes" is not true/false (YAML already typed the value).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a number too
Bool = Annotated[bool, Strict()]


class ConfigError(UserError):
    """A bad setting: ``where`` (file or "--set"), ``key`` (dotted) and the reason."""

    def __init__(self, key: str, reason: str, where: str | None = None):
        self.key, self.reason, self.where = key, reason, where
        super().__init__(f"{where + ': ' if where else ''}{key}: {reason}")


def _check(key: str, ok: bool, value, what: str) -> None:
    if not ok:
        raise ConfigError(key, f"{value!r}: must be {what}")


class Section(BaseModel):
    """A config section: unknown keys are errors, values keep their YAML types, assignments are checked."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_assignment=True)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML / JSON)."""
        return self.model_dump()


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

Group = Literal["corpus", "speaker"]
Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]


class TowersConfig(Section):
    """Encoders, by spec string (see ``smoothclap.towers``)."""

    audio: str = Field("whisper-tiny-en", description="audio tower spec (README, \"Towers\")")
    text: str = Field("minilm-l6", description="text tower spec")
    local: str | None = Field(None, description="encoder of the q_a2a source; null = the audio tower (the paper's "
                              "default)")
    batch_size: Int = Field(16, ge=1, description="clips per forward pass when embedding a corpus")
    device: Device = Field("auto", description="where frozen towers run (`auto`, `cpu`, `cuda`, `cuda:N`)")
    embed_workers: Int | None = Field(None, ge=1, description="forward worker threads of the extraction pipeline "
                                      "(null: automatic)")
    trim_every: Int = Field(1, ge=0, description="hand freed heap back to the OS after every this many batches "
                            "(0: never)")
    freeze_audio: Bool = Field(True, description="false: fine-tune the audio tower (`train.mode: e2e`, `hf:` towers)")
    freeze_text: Bool = Field(True, description="false: fine-tune the text tower (`train.mode: e2e`, `hf:` towers or "
                              "`minilm-l6`)")
    audio_lr: Float = Field(1e-5, gt=0, description="learning rate of a fine-tuned audio tower")
    text_lr: Float = Field(1e-5, gt=0, description="learning rate of a fine-tuned text tower")

    @model_validator(mode="after")
    def _specs(self):
        from .towers import check_spec

        for key, spec, kind in (("towers.audio", self.audio, "audio"), ("towers.text", self.text, "text"),
                                ("towers.local", self.local, "audio")):
            if spec is not None:
                try:
                    check_spec(spec, kind)
                except ValueError as e:
                    raise ConfigError(key, str(e)) from None
        return self


class ModelConfig(Section):
    """Projection heads and scale (ParaCLAP head) and what the model does before them."""

    embed_dim: Int = Field(768, ge=1, description="head output size d")
    dropout: Float = Field(0.5, description="head dropout, in [0, 1)")
    init_scale: Float = Field(1.0 / 0.07, gt=0, description="logit scale at the start of training")
    max_scale: Float = Field(100.0, description="clamp of the logit scale (>= init_scale)")
    standardize_audio: Bool = Field(True, description="standardise tower features with training mean / std before "
                                    "the head")
    feature_norm_group: Group | None = Field(
        None, description="`corpus` / `speaker`: z-score audio features within each group, in training and at test "
        "time (groups given by the caller; without groups the stored training statistics)")
    min_group_clips: Int = Field(8, ge=2, description="test groups with fewer clips use the training statistics")
    group_shrink: Int = Field(
        0, ge=0, description="at test time, z-score each group with its mean and variance shrunk toward those of all "
        "the clips scored with it (e.g. a speaker toward its corpus) by this many clips' worth: (n m_g + s m) / (n + s); "
        "training groups use their own statistics; 0: off")
    fallback_stats: Literal["pooled", "groups", "shrunk"] = Field(
        "pooled", description="the training statistics a clip without a group (a single clip) is z-scored with: "
        "`pooled` (mean / std of all training clips), `groups` (the average training group: mean of the group "
        "means, root mean of the within-group variances, the scale the heads trained at) or `shrunk` (`groups`, "
        "each feature shrunk by its within / (within + between-group) variance: the expected offset of an "
        "unseen group removed)")
    nuisance_dims: Int = Field(
        0, ge=0, description="remove this many principal directions of the training `model.nuisance_group` means "
        "from the normalised features before the head (nuisance attribute projection): directions learned on the "
        "training clips, so a clip of a new speaker or corpus loses its offset along them without test statistics; "
        "0: off")
    nuisance_group: Group = Field("speaker", description="the groups whose means span the directions "
                                  "`model.nuisance_dims` removes (speakers within their corpus, or corpora)")
    whiten: Literal["none", "within-class"] = Field(
        "none", description="`within-class`: multiply the normalised features (after `model.nuisance_dims`) by the "
        "inverse square root of the labelled training clips' covariance around their emotion's mean (Ledoit-Wolf "
        "shrunk; the clips taken as a single clip sees them, so the spread between speakers and corpora counts as "
        "within-class), learned on the training corpora and applied to whole corpora and single clips alike; "
        "`none`: off")
    loudness: str | None = Field(None, description="level waveforms before the tower: `peak` or `rms:<dBFS>`")

    @model_validator(mode="after")
    def _ranges(self):
        _check("model.dropout", 0.0 <= self.dropout < 1.0, self.dropout, "in [0, 1)")
        _check("model.max_scale", self.max_scale >= self.init_scale, self.max_scale, ">= model.init_scale")
        if self.loudness not in (None, "none", "peak") and not re.fullmatch(r"rms:-?\d+(\.\d+)?", str(self.loudness)):
            raise ConfigError("model.loudness", f"{self.loudness!r} is not null, peak or rms:<dBFS> (e.g. rms:-23)")
        return self


class LossConfig(Section):
    """SmoothCLAP soft targets. ``preset`` fills the fields it names unless they are set explicitly."""

    preset: str | None = Field(None, description="`clap`, `smoothclap`, `smoothclap-reconstructed`, `paper-main`, "
                               "`smoothclap-calibrated` (fills the fields it names unless set)")
    beta: Float = Field(0.1, description="target mix y = (1 - beta) I + beta [(1 - gamma) q_a2a + gamma q_t2t]; "
                        "in [0, 1]; 0 = CLAP")
    gamma: Float = Field(0.0, description="share of q_t2t in the soft targets, in [0, 1]")
    tau_a: Float = Field(0.07, gt=0, description="temperature of q_a2a")
    tau_t: Float = Field(0.07, gt=0, description="temperature of q_t2t")
    text_target: Literal["description", "description+label", "caption"] = Field(
        "description", description="text of q_t2t: binned eGeMAPS phrases, with the emotion word, or the caption")
    target_standardize: Literal["none", "center", "zscore", "whiten"] = Field(
        "none", description="standardise local / description embeddings with training statistics before the cosine")
    target_standardize_group: Group | None = Field(None, description="... per `corpus` / `speaker` (null: globally)")
    calibrate: Literal["none", "diag", "neighbours"] = Field(
        "none", description="`diag` / `neighbours`: choose tau_a, tau_t on training batches so q's mean diagonal mass "
        "(or effective neighbours) reaches `calibrate_value`")
    calibrate_value: Float = Field(0.5, gt=0, description="target of `calibrate`")
    topk: Int | None = Field(None, ge=1, description="keep each row's k largest similarities (itself included)")
    local_source: Literal["tower", "posteriors", "labels"] = Field(
        "labels", description="q_a2a from `tower` (local features: the paper), `posteriors` (an emotion classifier on "
        "them, cross-fitted by speaker on the training corpora) or `labels` (same-label clips as soft positives)")
    posterior_folds: Int = Field(5, ge=2, description="speaker folds of the cross-fitted classifier")
    posterior_kind: Literal["categorical", "dimensional"] = Field(
        "categorical", description="`dimensional`: predict arousal / valence / dominance where the corpora have them")
    divergence: Literal["kl", "jeffreys"] = Field(
        "jeffreys", description="the paper's \"symmetric KL\": `kl` = KL(y || p) per direction (soft cross-entropy), "
        "`jeffreys` = KL(y || p) + KL(p || y)")
    t2a_target: Literal["transpose", "renormalized"] = Field(
        "transpose", description="text-to-audio target: y^T, or y^T with its rows renormalised")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = data["preset"]
        if not isinstance(preset, str) or preset not in LOSS_PRESETS:
            raise ConfigError("loss.preset", f"unknown preset {preset!r}; known: {', '.join(sorted(LOSS_PRESETS))}")
        return {**LOSS_PRESETS[preset], **data}  # explicit values win

    @model_validator(mode="after")
    def _ranges(self):
        _check("loss.beta", 0.0 <= self.beta <= 1.0, self.beta, "in [0, 1]")
        _check("loss.gamma", 0.0 <= self.gamma <= 1.0, self.gamma, "in [0, 1]")
        return self


#: Placeholders a caption template may use (``captions.templates``; :mod:`smoothclap.captions`).
CAPTION_FIELDS = {"emotion", "phrases", "predicates", "gender", "arousal", "valence"}


def template_fields(t: str) -> set[str]:
    """The placeholders of caption template ``t``; ValueError for any outside :data:`CAPTION_FIELDS`."""
    import string

    names = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
    unknown = names - CAPTION_FIELDS
    if unknown or any(n == "" for n in names):
        raise ValueError(f"caption template {t!r} uses unknown placeholders {sorted(unknown) or ['{}']}; "
                         f"allowed: {sorted(CAPTION_FIELDS)}")
    return names


class CaptionConfig(Section):
    """How captions and descriptions are made (:mod:`smoothclap.captions`)."""

    variables: list[str] = Field(
        default_factory=lambda: ["pitch", "pitch_variation", "loudness", "jitter", "shimmer", "duration"],
        description="binned eGeMAPS variables (`rate` adds speaking rate; empty: captions from labels only, no "
        "openSMILE)")
    low_q: Float = Field(0.3, description="quantile at or below which a variable is \"low\"")
    high_q: Float = Field(0.7, description="quantile at or above which it is \"high\"")
    group_by: str | None = Field(None, description="fit bins per `corpus` / `speaker` (null: globally)")
    min_group_size: Int = Field(10, description="groups with fewer training clips use the global bins")
    templates: list[str] | None = Field(None, description="caption templates (null: the built-in pool)")
    include_gender: Bool = Field(True, description="the speaker's gender in captions when known")
    include_dimensions: Bool = Field(True, description="arousal / valence words in captions when given")
    phrases_per_caption: Int | None = Field(None, ge=1, description="null: all phrases; k: a random subset of k "
                                            "phrases per caption")
    phrase_dropout: Float = Field(0.0, description="drop each phrase with this probability (one kept), in [0, 1)")
    description_include_label: Bool = Field(False, description="prefix descriptions (q_t2t) with the emotion word")
    emotion_word: Bool = Field(True, description="false: generated captions never name the emotion, not even for "
                               "labelled clips (labels then reach training only through the soft targets; a study "
                               "setting). Unlabelled clips' captions never do")
    # Chosen on validation speakers of the training corpora (BENCHMARKS.md, soft-target study):
    # 4 scored as well as fresh captions every epoch, and the text tower runs on 4 per clip at most.
    pool_size: Int | None = Field(4, ge=1, description="K: a fixed pool of K caption variants per clip, embedded "
                                  "once, one drawn per epoch; null: a fresh caption per clip and epoch")

    @model_validator(mode="after")
    def _ranges(self):
        if not 0.0 <= self.low_q < self.high_q <= 1.0:
            raise ConfigError("captions.low_q", f"need 0 <= low_q < high_q <= 1, got {self.low_q}, {self.high_q}")
        _check("captions.phrase_dropout", 0.0 <= self.phrase_dropout < 1.0, self.phrase_dropout, "in [0, 1)")
        if self.templates is not None:
            if not self.templates:
                raise ConfigError("captions.templates", "must be null (built-in pool) or a non-empty list")
            for t in self.templates:
                try:
                    template_fields(t)
                except ValueError as e:
                    raise ConfigError("captions.templates", str(e)) from None
        return self


DatasetFormat = Literal["hf", "webdataset"]


def _check_dataset_options(key: str, dataset, options: dict) -> None:
    """``columns`` names known fields; the dataset options need a ``dataset``."""
    given = [k for k, v in options.items() if v not in (None, {})]
    if dataset is None and given:
        raise ConfigError(f"{key}.{given[0]}", "applies to a dataset only: set dataset too")
    if not options.get("columns"):
        return
    from .corpora.datasets import FIELDS

    for field in options["columns"]:
        if field not in FIELDS:
            raise ConfigError(f"{key}.columns", f"unknown field {field!r} (fields: {', '.join(FIELDS)})")


#: ``labelled`` of a source: every row labelled, some (``partial``), or none (labels ignored).
Labelled = Bool | Literal["partial"]

_LABELLED_DOC = ("`true`: every row needs a label (or a caption); `partial`: rows with an empty label train "
                 "unlabelled; `false`: an unlabelled source (its labels, if any, ignored; rows need only audio). "
                 "Unlabelled rows get captions without an emotion word (`docs/data.md`)")


def _check_labelled(key: str, value):
    if value is True or value is False or value == "partial":
        return value
    raise ConfigError(key, f"{value!r} is not one of true, false or partial")


class SourceConfig(Section):
    """One training corpus (``corpus`` + ``root``), manifest (``manifest``) or dataset (``dataset``)."""

    corpus: str | None = None
    root: str | None = None
    manifest: str | None = None
    dataset: str | None = Field(None, description="a Hugging Face dataset (save_to_disk folder, Parquet files, Hub "
                                "id) or WebDataset shards (`.tar` path, glob or brace pattern)")
    format: DatasetFormat | None = Field(None, description="format of `dataset`: `hf` or `webdataset` (null: detected)")
    dataset_split: str | None = Field(None, description="the split of a DatasetDict / Hub dataset to read (null: "
                                      "all; a row's `split` is its split's name)")
    columns: dict[str, str] = Field(default_factory=dict, description="field -> the dataset's column (or JSON field): "
                                    "audio, label, caption, speaker, gender, split, language, corpus")
    split: str | None = None  # rows of this split train (None: data.split)
    label_map: dict[str, str] = Field(default_factory=dict)  # label -> caption word for this source
    options: dict[str, Any] = Field(default_factory=dict)  # keyword options of the corpus loader
    labelled: Labelled = Field(True, description=_LABELLED_DOC)

    @field_validator("labelled", mode="before")
    @classmethod
    def _labelled(cls, v):
        return _check_labelled("data.sources.labelled", v)

    @model_validator(mode="after")
    def _one_kind(self):
        if sum(x is not None for x in (self.manifest, self.corpus, self.dataset)) != 1:
            raise ConfigError("data.sources", "each source needs exactly one of corpus (with root), manifest or "
                              "dataset")
        _check_dataset_options("data.sources", self.dataset, {"format": self.format,
                                                              "dataset_split": self.dataset_split,
                                                              "columns": self.columns})
        if self.corpus is not None:
            from .corpora import get_info

            try:
                get_info(self.corpus)
            except ValueError as e:
                raise ConfigError("data.sources.corpus", str(e)) from None
        return self


class DataConfig(Section):
    """Training data: one manifest or named corpus with its root, or several (``sources``)."""

    manifest: str | None = Field(None, description="one training manifest (`--manifest`)")
    dataset: str | None = Field(None, description="one training dataset (`--dataset`): a Hugging Face dataset "
                                "(save_to_disk folder, Parquet files, Hub id) or WebDataset `.tar` shards (glob, "
                                "brace pattern); `docs/data.md`")
    dataset_format: DatasetFormat | None = Field(None, description="`hf` or `webdataset` (`--dataset-format`; null: "
                                                 "detected)")
    dataset_split: str | None = Field(None, description="the split of a DatasetDict / Hub dataset to read "
                                      "(`--dataset-split`; null: all)")
    columns: dict[str, str] = Field(default_factory=dict, description="the dataset's column names: field -> column "
                                    "(`--column label=emotion`; fields audio, label, caption, speaker, gender, split, "
                                    "language, corpus)")
    corpus: str | None = Field(None, description="one training corpus in its official layout (`--corpus`)")
    root: str | None = Field(None, description="its folder (`--data-root`)")
    sources: list[SourceConfig] = Field(
        default_factory=list, description="several: a list of `{corpus, root}`, `{manifest}` or `{dataset}` entries "
        "(a dataset with optional `format`, `dataset_split`, `columns`), each with optional `split`, `label_map`, "
        "`options` (loader options), `labelled` (`true`, `partial`, `false`)")
    split: str | None = Field("train", description="rows of this split train; a table without split values trains "
                              "on all rows; null = all rows")
    labels: list[str] | None = Field(None, description="allowed labels (others are bad input)")
    caption_vocabulary: Bool = Field(True, description="map labels to the shared caption vocabulary (`docs/data.md`)")
    label_map: dict[str, str] = Field(default_factory=dict, description="label -> caption word, on top of it")
    skip_bad: Bool = Field(False, description="skip (and count) bad files instead of stopping")
    labelled: Labelled = Field(True, description="`labelled` of the single source (`manifest`, `dataset` or "
                               "`corpus`; each entry of `sources` sets its own): " + _LABELLED_DOC)

    @field_validator("labelled", mode="before")
    @classmethod
    def _labelled(cls, v):
        return _check_labelled("data.labelled", v)

    @model_validator(mode="after")
    def _labels(self):
        if self.labels is not None and (len(set(self.labels)) != len(self.labels)
                                        or any(not str(x).strip() for x in self.labels)):
            raise ConfigError("data.labels", f"{self.labels!r}: labels must be distinct and non-empty")
        if self.corpus is not None:  # checked here, not first when the sources are read
            from .corpora import get_info

            try:
                get_info(self.corpus)
            except ValueError as e:
                raise ConfigError("data.corpus", str(e)) from None
        _check_dataset_options("data", self.dataset, {"dataset_format": self.dataset_format,
                                                      "dataset_split": self.dataset_split, "columns": self.columns})
        return self

    def all_sources(self) -> list[SourceConfig]:
        """``sources`` plus the single-source shorthand (``manifest``, ``dataset`` or ``corpus`` + ``root``)."""
        out = list(self.sources)
        if self.manifest is not None:
            out.append(SourceConfig(manifest=self.manifest, labelled=self.labelled))
        if self.dataset is not None:
            out.append(SourceConfig(dataset=self.dataset, format=self.dataset_format,
                                    dataset_split=self.dataset_split, columns=self.columns, labelled=self.labelled))
        if self.corpus is not None:
            out.append(SourceConfig(corpus=self.corpus, root=self.root, labelled=self.labelled))
        return out


def _check_templates(key: str, templates) -> None:
    from .prompts import resolve_templates

    try:
        resolve_templates(templates)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None


class TrainConfig(Section):
    epochs: Int = Field(10, description=">= 1")
    batch_size: Int = Field(32, description="the global batch (split over processes under torchrun); >= 2")
    lr: Float = Field(1e-3, gt=0, description="Adam on heads and scale")
    weight_decay: Float = Field(0.0, ge=0, description="Adam weight decay")
    seed: Int = Field(0, description="everything is seeded from it")
    device: Device = Field("auto", description="training device")
    num_workers: Int = Field(2, ge=0, description="audio-reading workers (e2e) and eGeMAPS processes")
    mode: Literal["cached", "e2e"] = Field("cached", description="`cached`: heads + scale on cached frozen embeddings; "
                                           "`e2e`: towers in the loop (`smoothclap.trainer.steps`)")
    bundle: Literal["memory", "disk", "auto"] = Field(
        "memory", description="cached mode: where the training bundle's embeddings live. `memory`: read whole "
        "(`trainer.prepare`); `disk`: left in the embedding cache and read per batch, so memory does not grow with "
        "the corpus (`trainer.mapped.from_cache`; needs `captions.variables: []` and `loss.text_target: caption`); "
        "`auto`: on disk above 256 MiB of embedding rows when the settings allow it, else in memory")
    crop_seconds: Float | None = Field(None, gt=0, description="e2e: random crop length (the paper: 5.0); null = "
                                       "whole clips")
    accum_freq: Int = Field(1, ge=1, description="e2e: micro-batches per step, the contrastive batch kept whole")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="e2e on GPUs (CPU: fp32)")
    select_split: str | None = Field(None, description="model selection: zero-shot UAR on this split after every "
                                     "epoch; the best epoch goes to `<run>/best_model`")
    select_labels: list[str] | None = Field(None, description="classes scored in model selection (null: the split's)")
    select_templates: str | None = Field(None, description="templates of model selection (null: "
                                         "`inference.templates`)")
    dist_timeout_min: Float = Field(180.0, gt=0, description="minutes a process waits in a collective under torchrun")
    augment_views: Int = Field(0, ge=0, description="cached mode: altered copies of each training clip (speed, "
                               "room, noise, level: `smoothclap.augment`), each embedded once and cached, trained "
                               "on as extra rows beside the clip as recorded (feature statistics from the clips as "
                               "recorded); 0 = none")
    augment: list[Literal["speed", "reverb", "noise", "level"]] = Field(
        default_factory=lambda: ["speed", "reverb", "noise", "level"],
        description="the effects every augmented view applies (each with its own random strength per clip and view)")
    single_clip_rows: Bool = Field(
        False, description="cached mode, with `model.feature_norm_group`: every training row also appears z-scored "
        "as a single clip of a group the model never saw (the `model.fallback_stats` of the other groups), so the "
        "heads learn what a clip without a group (`classify FILE`) gives them; needs >= 2 groups")

    @model_validator(mode="after")
    def _ranges(self):
        _check("train.epochs", self.epochs >= 1, self.epochs, ">= 1")
        if self.augment_views:
            _check("train.augment", bool(self.augment), self.augment, "at least one effect when train.augment_views > 0")
            _check("train.mode", self.mode == "cached", self.mode,
                   "cached when train.augment_views > 0 (e2e training reads each clip anew every epoch)")
        _check("train.batch_size", self.batch_size >= 2, self.batch_size, ">= 2 (a contrastive batch needs negatives)")
        if self.select_templates is not None:
            _check_templates("train.select_templates", self.select_templates)
        return self


class InferenceConfig(Section):
    """How the trained model classifies: stored with it (its ``config.json``) and used by every entry
    point (``classify``, ``evaluate``, tasks, the web page, the Python API) unless overridden there."""

    templates: str | list[str] | None = Field(
        None, description="prompt templates the model is used with: a set (`bare`, `feeling`, `ensemble`), one "
        "template with `{label}`, or a list; null: bare label words (a task: its protocol's template)")
    prompt_language: str | None = Field(
        None, description="language of task prompts: a code, or `task` (the speech's own language where the task "
        "has prompts in it); null: English (the paper's protocol)")

    @model_validator(mode="after")
    def _templates(self):
        if self.templates is not None:
            _check_templates("inference.templates", self.templates)
        return self


class RunConfig(Section):
    towers: TowersConfig = Field(default_factory=TowersConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    captions: CaptionConfig = Field(default_factory=CaptionConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    cache_dir: str | None = Field(DEFAULT_CACHE_DIR, description="the embedding / eGeMAPS cache (null: no cache)")
    out_dir: str = Field("runs/smoothclap", description="the run folder (`--out`); a folder holding a run of other "
                         "settings is refused")

    @model_validator(mode="after")
    def _across_sections(self):
        lc, bs = self.loss, self.train.batch_size
        if lc.calibrate == "diag" and not 1.0 / bs < lc.calibrate_value < 1.0:
            raise ConfigError("loss.calibrate_value", f"{lc.calibrate_value!r}: a diagonal mass must lie in "
                              f"(1/train.batch_size, 1) = ({1 / bs:.3f}, 1)")
        if lc.calibrate == "neighbours" and not 1.0 < lc.calibrate_value < bs:
            raise ConfigError("loss.calibrate_value", f"{lc.calibrate_value!r}: effective neighbours must lie in "
                              f"(1, train.batch_size) = (1, {bs})")
        if lc.text_target != "caption" and lc.beta > 0 and lc.gamma > 0 and not self.captions.variables:
            raise ConfigError("loss.text_target", f"{lc.text_target!r} needs eGeMAPS variables "
                              "(captions.variables); use text_target: caption")
        if self.train.single_clip_rows:
            _check("train.single_clip_rows", self.train.mode == "cached" and bool(self.model.feature_norm_group),
                   True, "false unless train.mode is cached and model.feature_norm_group is set (the rows are "
                   "z-scored with the statistics of the other groups)")
        if self.train.mode == "cached":
            t, tw = self.train, self.towers
            bad = [name for name, on in (("train.crop_seconds", t.crop_seconds is not None),
                                         ("train.accum_freq > 1", t.accum_freq > 1),
                                         ("towers.freeze_audio: false", not tw.freeze_audio),
                                         ("towers.freeze_text: false", not tw.freeze_text)) if on]
            if bad:
                raise ConfigError("train.mode", f"{', '.join(bad)} need end-to-end training: set train.mode: e2e "
                                  "(cached training sees one fixed embedding per clip)")
        return self

    def dump(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def updated(self, values: dict[str, Any]) -> "RunConfig":
        """A checked copy with ``{"section.key": value}`` set (typed values, no parsing)."""
        data = self.to_dict()
        for key, value in values.items():
            _set(data, key, value.model_dump() if isinstance(value, BaseModel) else value, "values")
        return validate(RunConfig, data)


class SmoothClapConfig(ModelConfig):
    """What a saved model is (``config.json``): the model section it was trained with, its towers
    and their output sizes, how it classifies (``inference``), and provenance. Tower specs may be
    relative to the model folder (``hf:./audio_tower?...``: a fine-tuned tower saved inside it)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, validate_assignment=True)

    audio_tower: str
    text_tower: str
    audio_dim: Int = Field(ge=1)
    text_dim: Int = Field(ge=1)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    # Provenance, recorded so reports can say what trained the model (never used for inference).
    trained_on: list[str] | None = None
    loss: dict | None = None
    # Set by smoothclap.adapt: the single-clip statistics come from this many unlabelled clips of
    # one setting ({"clips": K, "statistics": "mean+std" | "mean"}), not from the training corpora.
    adapted: dict | None = None

    @model_validator(mode="after")
    def _towers(self):
        from .towers import check_spec

        for key, spec, kind in (("audio_tower", self.audio_tower, "audio"), ("text_tower", self.text_tower, "text")):
            try:
                check_spec(spec, kind)
            except ValueError as e:
                raise ConfigError(key, str(e)) from None
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "SmoothClapConfig":
        """Checked config of a saved model (keys of other versions ignored); ConfigError when wrong."""
        return validate(cls, d)


# -- reading ------------------------------------------------------------------------------------------
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "bool_type": "true/false",
             "bool_parsing": "true/false", "string_type": "a string", "list_type": "a list",
             "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _field_path(cls: type[BaseModel], loc: tuple, unknown_key: bool) -> tuple[list, type[BaseModel]]:
    """(the parts of a pydantic error location that are field names or list positions, the model
    the last field belongs to). Tags pydantic adds for the members of a union (``str``,
    ``list[str]``) are dropped; with ``unknown_key`` the last part is the unknown key itself."""
    out, owner, section = [], cls, cls
    for i, p in enumerate(loc):
        if isinstance(p, int):
            out.append(p)
        elif owner is not None and p in owner.model_fields:
            out.append(p)
            section = owner
            ann = owner.model_fields[p].annotation
            members = [a for a in (getattr(ann, "__args__", None) or (ann,)) if isinstance(a, type)]
            owner = next((a for a in members if issubclass(a, BaseModel)), None)
        elif unknown_key and i == len(loc) - 1:
            out.append(p)
            section = owner or section
    return out, section


def _config_error(e: ValidationError, cls: type[BaseModel]) -> ConfigError:
    """The first error of a pydantic ValidationError as today's one-line :class:`ConfigError`."""
    err = e.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    value, kind = err.get("input"), err["type"]
    loc, section = _field_path(cls, err["loc"], kind == "extra_forbidden")
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or cls.__name__
    if kind == "extra_forbidden":
        names = list(section.model_fields)
        near = difflib.get_close_matches(str(loc[-1]), names, n=1)
        return ConfigError(key, f"unknown key; did you mean {near[0]!r}?" if near else
                           f"unknown key; allowed: {', '.join(names)}")
    if kind == "literal_error":
        return ConfigError(key, f"{value!r} is not one of {err['ctx']['expected']}")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(err["ctx"].values()))
        return ConfigError(key, f"{value!r}: must be {op} {bound}")
    if kind in _EXPECTED:
        return ConfigError(key, f"expected {_EXPECTED[kind]}, got {value!r}")
    if kind == "missing":
        return ConfigError(key, "required")
    return ConfigError(key, f"{err['msg']} (got {value!r})")


def validate(cls: type[BaseModel], data: Any, where: str | None = None):
    """``cls`` built from ``data`` (nested dicts), every value checked; :class:`ConfigError` if not."""
    if not isinstance(data, dict):
        raise ConfigError(cls.__name__, f"expected a mapping, got {data!r}", where)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = _config_error(e, cls)
        raise ConfigError(err.key, err.reason, where) from None
    except ConfigError as e:  # raised outside pydantic's wrapping (a "before" validator's own check)
        raise ConfigError(e.key, e.reason, where) from None


def loss_preset(name: str, **overrides) -> LossConfig:
    """LossConfig from a named preset, e.g. ``loss_preset("clap")``."""
    return validate(LossConfig, {"preset": name, **overrides})


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


def _read_yaml(path: str | Path) -> tuple[dict, str]:
    p = config_path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError("yaml", f"not valid YAML{at}: {getattr(e, 'problem', e)}", str(p)) from None
    except OSError as e:
        raise ConfigError("--config", f"cannot read ({e.strerror})", str(p)) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("yaml", "the top level must be a mapping of sections", str(p))
    return data, str(p)


def _set(data: dict, key: str, value: Any, where: str) -> None:
    """``data[a][b][c] = value`` for ``key`` = ``"a.b.c"``."""
    node, parts = data, key.strip().split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(key, f"{part!r} is a value, not a section", where)
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` (``--set``; the value in YAML syntax) -> (key, typed value)."""
    if "=" not in text:
        raise ConfigError("--set", f"{text!r} must look like section.key=value")
    key, val = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(val)
    except yaml.YAMLError:
        return key.strip(), val


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig from YAML (a path or a shipped config's name; None = defaults), then ``overrides``
    (``"key.sub=value"`` strings, values in YAML syntax) and ``values`` (``{"key.sub": value}``,
    typed, as the command line's flags give them). Raises :class:`ConfigError`."""
    data, where = _read_yaml(path) if path is not None else ({}, None)
    for text in overrides or []:
        key, value = parse_override(text)
        _set(data, key, value, "--set")
        where = where or "--set"
    for key, value in (values or {}).items():
        _set(data, key, value, where or "arguments")
    return validate(RunConfig, data, where)


# -- documentation -----------------------------------------------------------------------------------------
def _shown(v) -> str:
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, (list, dict)):
        return ", ".join(map(str, v)) or ("[]" if isinstance(v, list) else "{}")
    return f"`{v}`" if isinstance(v, str) else f"{v:g}"


def reference_markdown() -> str:
    """The settings tables of ``docs/configuration.md`` (one per section), from the fields above."""
    out = []
    sections = [(name, f.annotation) for name, f in RunConfig.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]
    for name, cls in sections + [("top level", None)]:
        fields = cls.model_fields if cls is not None else {k: f for k, f in RunConfig.model_fields.items()
                                                             if k not in dict(sections)}
        out += [f"## `{name}`" if cls is not None else "## Top level", "", "| key | default | meaning |",
                "| --- | --- | --- |"]
        for key, f in fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default
            if isinstance(default, BaseModel):
                continue
            out.append(f"| `{key}` | {_shown(default)} | {(f.description or '').replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)
