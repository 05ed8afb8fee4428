"""Settings of the experiments, as typed dataclasses (no PyTorch: the command line reads their
defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..cache import DEFAULT_CACHE_DIR
from ..config import RunConfig

#: Corpora of the LOCO benchmark (each is also a task in :mod:`smoothclap.tasks`): five corpora in
#: four languages. ``--corpora emodb,ravdess,tess`` gives the earlier three-corpus table.
LOCO_CORPORA = ("emodb", "ravdess", "tess", "emovo", "turevdb")

#: What the benchmark trains when no recipe (``--config``) is given: the settings of the
#: three-corpus table in BENCHMARKS.md, kept fixed so it stays reproducible.
BENCHMARK_BASE = {"towers.audio": "whisper-tiny-en", "towers.text": "minilm-l6", "model.embed_dim": 256,
                  "train.epochs": 15, "train.batch_size": 32, "train.lr": 1e-3, "loss.preset": "smoothclap"}


#: The settings the recipe grids vary. A candidate whose name does not mention one has it at the
#: run config's default, so it means what its name says on top of any ``--config`` (a recipe that
#: removes directions or adds views does not leak them into the candidates that say "no").
_VARIED = ("model.fallback_stats", "model.nuisance_dims", "model.whiten", "model.group_shrink", "model.loudness",
           "train.augment_views", "train.single_clip_rows", "towers.text", "inference.prompt_language")


def _candidate(*overrides: str) -> list[str]:
    """Dotted overrides of one candidate, the :data:`_VARIED` settings it does not name at their default."""
    defaults = RunConfig()
    named = {o.split("=", 1)[0] for o in overrides}

    def default(key: str) -> str:
        section, field_ = key.split(".")
        v = getattr(getattr(defaults, section), field_)
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return [f"{k}={default(k)}" for k in _VARIED if k not in named] + list(overrides)


_L1, _LA = "towers.audio=whisper-tiny-en", "towers.audio=whisper-tiny-en?layers=all"
_LAMS = "towers.audio=whisper-tiny-en?layers=all&pool=meanstd"
_WE = "towers.audio=whisper-tiny-en+egemaps"
_CN, _NN = "model.feature_norm_group=corpus", "model.feature_norm_group=null"
_RMS = "model.loudness=rms:-23"
_GF, _SF = "model.fallback_stats=groups", "model.fallback_stats=shrunk"
_AUG2, _SINGLE = "train.augment_views=2", "train.single_clip_rows=true"
_E5, _NATIVE = "towers.text=e5-small", "inference.prompt_language=task"
_NAP8, _NAP24 = "model.nuisance_dims=8", "model.nuisance_dims=24"
_WCW = "model.whiten=within-class"
_SN, _SHRINK16 = "model.feature_norm_group=speaker", "model.group_shrink=16"
_REC = "whisper all layers, corpus-norm, shrunk fallback, 2 augmented views, 8 speaker directions removed"

#: What :func:`validate` compares by default (``--grid recipe``): the recommended recipe against
#: its neighbours, one decision changed at a time, sized so that the whole five-corpus run with
#: validation fits in 90 minutes on 2 CPU cores with a warm cache. 1. the recipe; without the
#: speakers' directions; without the augmented views; without any test statistics (no feature
#: normalisation: the directions do the normalising, and a whole corpus is scored exactly as its
#: single clips); 2. training length, on top of the best. Entries: name -> dotted ``RunConfig``
#: overrides on top of the benchmark's recipe (``--config``); the objective is the robust UAR of
#: the validation clips (whole, skewed speakers, single clips).
RECIPE_GRID: list[dict[str, list[str]]] = [
    {
        _REC: _candidate(_LA, _CN, _SF, _AUG2, _NAP8),
        "whisper all layers, corpus-norm, shrunk fallback, 2 augmented views": _candidate(_LA, _CN, _SF, _AUG2),
        "whisper all layers, corpus-norm, shrunk fallback, 8 speaker directions removed":
            _candidate(_LA, _CN, _SF, _NAP8),
        "whisper all layers, no norm, 2 augmented views, 8 speaker directions removed":
            _candidate(_LA, _NN, _AUG2, _NAP8),
    },
    {
        "4 epochs": ["train.epochs=4"],
    },
]
#: The wider search the recipe was chosen by (``--grid explore``; an estimated 4 hours per
#: validation seed on 2 cores), in three stages (a coordinate search, each stage on top of the best so far, which
#: stays in the running): 1. the audio features (Whisper's last layer or all its layers, their
#: pooling (mean, or mean and std), the loudness they see, how they are normalised, the statistics
#: a single clip gets, the training speakers' directions removed, within-class whitening, augmented
#: views or single-clip copies in training) and the text tower (MiniLM with English prompts, or
#: multilingual e5-small with English or the speech's own language's prompts), 2. training length,
#: 3. the prompts the model stores for inference.
EXPLORE_GRID: list[dict[str, list[str]]] = [
    {
        "whisper, corpus-norm": _candidate(_L1, _CN),
        "whisper, no norm": _candidate(_L1, _NN),
        "whisper+egemaps, corpus-norm": _candidate(_WE, _CN),
        "whisper all layers, corpus-norm": _candidate(_LA, _CN),
        "whisper all layers, corpus-norm, group fallback": _candidate(_LA, _CN, _GF),
        "whisper all layers, corpus-norm, shrunk fallback": _candidate(_LA, _CN, _SF),
        "whisper all layers, corpus-norm, shrunk fallback, 2 augmented views": _candidate(_LA, _CN, _SF, _AUG2),
        _REC: _candidate(_LA, _CN, _SF, _AUG2, _NAP8),
        "whisper all layers, corpus-norm, shrunk fallback, 2 augmented views, 24 speaker directions removed":
            _candidate(_LA, _CN, _SF, _AUG2, _NAP24),
        _REC + ", within-class whitening": _candidate(_LA, _CN, _SF, _AUG2, _NAP8, _WCW),
        "whisper all layers, no norm, 2 augmented views, 8 speaker directions removed, within-class whitening":
            _candidate(_LA, _NN, _AUG2, _NAP8, _WCW),
        "whisper all layers, speaker-norm shrunk toward the corpus (16 clips), shrunk fallback, 2 augmented views, "
        "8 speaker directions removed": _candidate(_LA, _SN, _SHRINK16, _SF, _AUG2, _NAP8),
        "whisper all layers, corpus-norm, shrunk fallback, 8 speaker directions removed":
            _candidate(_LA, _CN, _SF, _NAP8),
        "whisper all layers mean+std, corpus-norm, shrunk fallback, 8 speaker directions removed":
            _candidate(_LAMS, _CN, _SF, _NAP8),
        "whisper all layers, corpus-norm, shrunk fallback, single-clip rows": _candidate(_LA, _CN, _SF, _SINGLE),
        "whisper all layers, corpus-norm, shrunk fallback, e5-small text": _candidate(_LA, _CN, _SF, _E5),
        "whisper all layers, corpus-norm, shrunk fallback, e5-small text, native prompts":
            _candidate(_LA, _CN, _SF, _E5, _NATIVE),
        "whisper all layers, no norm": _candidate(_LA, _NN),
        "whisper all layers, rms -23 dBFS, no norm": _candidate(_LA, _NN, _RMS),
        "whisper all layers, rms -23 dBFS, corpus-norm": _candidate(_LA, _CN, _RMS),
    },
    {
        "2 epochs": ["train.epochs=2"],
        "10 epochs": ["train.epochs=10"],
    },
    {
        "template ensemble at inference": ["inference.templates=ensemble"],
    },
]
#: Soft-target sources compared by ``--grid targets`` (the regimes study: which q_a2a source to use
#: when labels are few, noisy or absent from the captions), chosen per held-out corpus on
#: validation speakers of the training corpora.
TARGET_GRID: list[dict[str, list[str]]] = [
    {
        "q from labels": ["loss.local_source=labels"],
        "q from the audio tower": ["loss.local_source=tower"],
        "q from cross-fitted posteriors": ["loss.local_source=posteriors"],
    },
]

#: Grids by name (``smoothclap benchmark loco --validate --grid NAME``).
GRIDS = {"recipe": RECIPE_GRID, "explore": EXPLORE_GRID, "targets": TARGET_GRID}

# Not in the default grid: per-speaker normalisation (it needs each test speaker's clips and
# collapses when speakers show few emotions: the skewed and single-clip protocols punish it),
# and per-corpus caption bins ("captions.group_by=corpus": each inner fold trains on one corpus,
# so they equal global bins). 30 epochs and d=768 lost to the defaults in earlier validation runs.


@dataclass
class LocoConfig:
    """Settings of :func:`run_loco`. ``config``: the recipe both methods train with (a shipped
    config's name, e.g. ``recommended``, or a YAML file; None = :data:`BENCHMARK_BASE`); the
    training fields below override it where set (None = the recipe's). ``overrides``: dotted
    ``RunConfig`` keys applied to both methods (e.g. ``"model.embed_dim=512"``); per held-out
    corpus, a validated choice from :func:`validate` is added on top when ``validate`` is on."""

    data_root: str = "../shared/data"
    corpora: tuple[str, ...] = LOCO_CORPORA
    heldout: tuple[str, ...] | None = None     # default: every corpus in turn
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    config: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    embed_dim: int | None = None
    audio_tower: str | None = None
    text_tower: str | None = None
    smoothclap_preset: str | None = None
    overrides: tuple[str, ...] = ()
    # Protocols (smoothclap.experiments.protocols): skewed speakers keep this many emotions each
    skew_emotions: int = 2
    skew_seed: int = 0
    # Reported, not in the robust UAR: single clips after adapting the model on this many unlabelled
    # clips of the held-out corpus (drawn with skew_seed; smoothclap.adapt), the rest scored alone. 0: off
    adapt_clips: int = 30
    templates: str | None = None               # None: the model's recipe (inference.templates) or the task's
    probe: bool = True
    validate: bool = False
    validation_scheme: str = "corpus"           # "corpus" (inner LOCO) or "speakers"
    validation_seeds: tuple[int, ...] = (0,)
    grid: dict | list | None = None             # candidates or stages; default: RECIPE_GRID
    cache_dir: str | None = DEFAULT_CACHE_DIR
    out_dir: str | None = "runs/loco"
    num_workers: int = 2
    save_models: bool = True
    progress: bool = False
    # Models scored on each held-out corpus beside CLAP and SmoothCLAP (e.g. "hf-clap:laion/clap-htsat-unfused")
    baselines: tuple[str, ...] = ()
    # Languages of the held-out corpora's label prompts ("en" always; e.g. "de" for EmoDB in German)
    prompt_languages: tuple[str, ...] = ("en",)
    # Label regimes of the training corpora (a study, not training settings; experiments.regimes):
    # the share of each training corpus kept labelled (the rest trains unlabelled), the share of
    # its labels replaced by another class, and the seed of both draws (the same for every seed).
    labelled_fraction: float = 1.0
    label_noise: float = 0.0
    regime_seed: int = 0

    def __post_init__(self):
        from ..errors import BadInputError

        if not 0.0 < self.labelled_fraction <= 1.0:
            raise BadInputError("--labelled-fraction", f"{self.labelled_fraction}: must be in (0, 1]")
        if not 0.0 <= self.label_noise < 1.0:
            raise BadInputError("--label-noise", f"{self.label_noise}: must be in [0, 1)")


@dataclass
class DemoConfig:
    out_dir: str = "smoothclap_demo"
    cache_dir: str | None = None          # default: <out_dir>/cache
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 20
    corpus_seed: int = 0
    sentences_per_voice: int = 10         # per English voice
    de_sentences_per_voice: int = 4       # per German voice
    num_workers: int = 2
    smoothclap_preset: str = "smoothclap"
    progress: bool = True


@dataclass
class AblationConfig:
    """Settings of :func:`smoothclap.experiments.ablation.run_ablation`."""

    loco: LocoConfig = field(default_factory=LocoConfig)
    val_seeds: tuple[int, ...] = (0, 1)
    stages: list | None = None        # (kind, stage, {candidate: overrides}); None: DEFAULT_STAGES
    skew_emotions: int = 2            # emotions each held-out speaker keeps in the skewed condition
    skew_seed: int = 0
    # Where the search starts (fixed, so the study does not move when the library's defaults do):
    # fresh captions every epoch, and the paper's reconstructed soft targets.
    base_shared: tuple[str, ...] = ("captions.pool_size=null",)
    base_target: tuple[str, ...] = ("loss.preset=smoothclap-reconstructed",)
