"""ParaCLAP-style captions and the paralinguistic descriptions of SmoothCLAP's text-side target.

:class:`CaptionBuilder` turns a clip's bins (:mod:`smoothclap.bins`) plus its emotion label,
gender, arousal and valence into training captions drawn from a pool of templates ("speaker is
angry and has a high pitch and is loud"); :func:`description` gives the fixed description ("high
pitch, low pitch variation, loud, ...") embedded for q_t2t. :class:`CaptionConfig` holds the
settings (the ``captions:`` section of a run config, :mod:`smoothclap.config`).
"""
from __future__ import annotations

import functools
import itertools
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .bins import BINS, VARIABLES
from .values import is_missing, normalize_gender  # the rules the corpus tables use too
from .config import CaptionConfig, template_fields as _template_fields  # noqa: F401 - CaptionConfig: the captions section of a run config

log = logging.getLogger("smoothclap")

#: Phrase per variable and bin, as used in descriptions and in ``{phrases}``.
PHRASES: dict[str, dict[str, str]] = {
    "pitch": {"high": "high pitch", "normal": "normal pitch", "low": "low pitch"},
    "pitch_variation": {
        "high": "high pitch variation",
        "normal": "normal pitch variation",
        "low": "low pitch variation",
    },
    "loudness": {"high": "loud", "normal": "normal loudness", "low": "quiet"},
    "jitter": {"high": "high jitter", "normal": "normal jitter", "low": "low jitter"},
    "shimmer": {"high": "high shimmer", "normal": "normal shimmer", "low": "low shimmer"},
    "duration": {"high": "long", "normal": "medium length", "low": "short"},
    "rate": {"high": "fast", "normal": "normal speed", "low": "slow"},
}

#: The same as verb phrases about the speaker, used in ``{predicates}``
#: ("speaker is angry and has a high pitch and is loud").
PREDICATES: dict[str, dict[str, str]] = {
    "pitch": {"high": "has a high pitch", "normal": "has a normal pitch", "low": "has a low pitch"},
    "pitch_variation": {
        "high": "has high pitch variation",
        "normal": "has normal pitch variation",
        "low": "has low pitch variation",
    },
    "loudness": {"high": "is loud", "normal": "has normal loudness", "low": "is quiet"},
    "jitter": {"high": "has high jitter", "normal": "has normal jitter", "low": "has low jitter"},
    "shimmer": {"high": "has high shimmer", "normal": "has normal shimmer", "low": "has low shimmer"},
    "duration": {"high": "speaks for a long time", "normal": "speaks for a medium time", "low": "speaks briefly"},
    "rate": {"high": "speaks fast", "normal": "speaks at a normal speed", "low": "speaks slowly"},
}

#: Built-in template pool. Placeholders: ``{emotion}`` (the label), ``{phrases}`` ("high pitch,
#: loud and short"), ``{predicates}`` ("has a high pitch, is loud and speaks briefly"),
#: ``{gender}`` ("female"/"male"/"" -- an empty gender collapses away: "a speaker"),
#: ``{arousal}`` / ``{valence}`` (the given words). A clip with a label uses the templates with
#: ``{emotion}``, one without uses those without it; likewise a clip with phrases uses templates with
#: ``{phrases}`` or ``{predicates}``. Gender never blocks a template; ``{arousal}``/``{valence}`` do
#: when not given. When no template fits, the caption is a plain list ("angry, low pitch, loud").
DEFAULT_TEMPLATES: list[str] = [
    "speaker is {emotion} and {predicates}",
    "a {gender} speaker sounding {emotion}, with {phrases}",
    "this person is feeling {emotion}; {phrases}.",
    "{emotion} {gender} speech with {phrases}",
    "the {gender} speaker sounds {emotion}: {phrases}",
    "a {gender} speaker who {predicates} and sounds {emotion}",
    "{phrases}; the speaker is {emotion}",
    "a {gender} voice, {emotion}, with {phrases}",
    # without emotion label
    "a {gender} speaker who {predicates}",
    "{gender} speech with {phrases}",
    # without phrases
    "this person is feeling {emotion}.",
    "a {gender} speaker sounding {emotion}",
]

_warned_numeric: set[str] = set()


def _dimension_word(v: Any, dim: str) -> str | None:
    """Arousal / valence as a word ("high", "negative"). Numeric ratings cannot be phrased without
    thresholds: they are left out (bin them first, e.g. ``ParalingBinner(variables=[..., "arousal"])``
    on a table holding the ratings, and pass the resulting "low"/"normal"/"high")."""
    if is_missing(v):
        return None
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        if dim not in _warned_numeric:
            _warned_numeric.add(dim)
            log.warning("numeric %s ratings are left out of captions; bin them into words first", dim)
        return None
    s = str(v).strip()
    return s or None


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _ordered_items(row_bins: Mapping[str, Any] | pd.Series, variables: Sequence[str] | None):
    """(variable, bin) pairs in a fixed order: ``variables`` if given, else known variables in
    :data:`VARIABLES` order followed by other keys in row order. Missing bins are dropped."""
    row = dict(row_bins.items()) if isinstance(row_bins, pd.Series) else dict(row_bins)
    if variables is None:
        keys = [k for k in VARIABLES if k in row] + [k for k in row if k not in VARIABLES]
    else:
        keys = list(variables)
    out = []
    for k in keys:
        b = row.get(k)
        if is_missing(b):
            continue
        b = str(b)
        if b not in BINS:
            raise ValueError(f"bin of {k!r} must be one of {BINS}, got {b!r}")
        out.append((k, b))
    return out


def phrase(variable: str, bin: str) -> str:
    """Phrase for one variable and bin ("pitch", "high" -> "high pitch"; unknown variables
    -> "high <variable>")."""
    table = PHRASES.get(variable)
    return table[bin] if table else f"{bin} {variable.replace('_', ' ')}"


def predicate(variable: str, bin: str) -> str:
    table = PREDICATES.get(variable)
    return table[bin] if table else f"has {bin} {variable.replace('_', ' ')}"


def description(
    row_bins: Mapping[str, Any] | pd.Series,
    label: str | None = None,
    include_label: bool = False,
    variables: Sequence[str] | None = None,
) -> str:
    """The paralinguistic description of one clip (text for SmoothCLAP's q^{t2t} target).

    Deterministic: phrases in a fixed variable order (``variables``, else :data:`VARIABLES` order),
    joined by ", ", e.g. ``"high pitch, low pitch variation, loud, normal jitter, low shimmer, short"``.
    With ``include_label`` (and a label) the emotion word comes first: ``"angry, high pitch, ..."``.
    """
    parts = [phrase(k, b) for k, b in _ordered_items(row_bins, variables)]
    if include_label and not is_missing(label):
        parts.insert(0, str(label))
    return ", ".join(parts)


class CaptionBuilder:
    """Captions from binned paralinguistic variables, in the manner of ParaCLAP.

    ``caption()`` picks a phrase subset (per ``phrases_per_caption`` / ``phrase_dropout``) and a
    template at random with the numpy Generator it is given, so a trainer that seeds it per epoch
    gets deterministic captions. ``all_captions()`` lists every string ``caption()`` can return for
    a clip (for pre-embedding each distinct caption once).
    """

    def __init__(self, config: CaptionConfig | None = None):
        self.config = config or CaptionConfig()
        self.templates = list(self.config.templates or DEFAULT_TEMPLATES)
        self._fields = [_template_fields(t) for t in self.templates]
        self._usable_memo: dict[tuple, list[str]] = {}  # (label, has phrases, gender, ...) -> templates

    # -- pieces ---------------------------------------------------------------------------
    def _items(self, row_bins, arousal, valence) -> list[tuple[str, str]]:
        """[(phrase, predicate)] in fixed order, arousal / valence appended."""
        items = [(phrase(k, b), predicate(k, b)) for k, b in _ordered_items(row_bins, self.config.variables)]
        if self.config.include_dimensions:
            for word, dim in ((arousal, "arousal"), (valence, "valence")):
                if not is_missing(word):
                    w = str(word)
                    p = w if dim in w else f"{w} {dim}"
                    items.append((p, f"has {p}"))
        return items

    def phrases(self, row_bins, *, arousal=None, valence=None) -> list[str]:
        """All phrases of one clip, in fixed order."""
        return [p for p, _ in self._items(row_bins, arousal, valence)]

    def description(self, row_bins, label: str | None = None) -> str:
        """:func:`description` with this config's variables and ``description_include_label``."""
        return description(row_bins, label, self.config.description_include_label, self.config.variables)

    def _usable(self, label, has_phrases: bool, gender, arousal, valence) -> list[str]:
        key = (label, has_phrases, gender, arousal, valence)
        if key not in self._usable_memo:
            self._usable_memo[key] = self._find_usable(label, has_phrases, gender, arousal, valence)
        return self._usable_memo[key]

    def _find_usable(self, label, has_phrases: bool, gender, arousal, valence) -> list[str]:
        avail = {"gender"}
        if label is not None:
            avail.add("emotion")
        if has_phrases:
            avail |= {"phrases", "predicates"}
        if arousal is not None:
            avail.add("arousal")
        if valence is not None:
            avail.add("valence")
        # A template must use the label iff there is one and the phrases iff there are any;
        # gender / arousal / valence are optional extras.
        usable = [
            t for t, f in zip(self.templates, self._fields)
            if f <= avail and ("emotion" in f) == (label is not None)
            and bool(f & {"phrases", "predicates"}) == has_phrases
        ]
        if not usable:
            # Nothing in the pool fits: fall back to a plain list ("angry, high pitch, loud").
            usable = ["{emotion}, {phrases}" if label is not None and has_phrases
                      else "{emotion}" if label is not None else "{phrases}"]
        return usable

    @staticmethod
    @functools.lru_cache(maxsize=1 << 16)  # captions repeat: each distinct one is formatted once
    def _render(t: str, label, items: tuple, gender, arousal, valence) -> str:
        s = t.format(
            emotion=label or "",
            phrases=_join([p for p, _ in items]),
            predicates=_join([q for _, q in items]),
            gender=gender or "",
            arousal=arousal or "",
            valence=valence or "",
        )
        s = " ".join(s.split())
        return s.replace(" ,", ",").replace(" ;", ";").replace(" :", ":").replace(" .", ".")

    def _prepare(self, label, gender, arousal, valence):
        label = None if is_missing(label) else str(label)
        gender = normalize_gender(gender) if self.config.include_gender else None
        arousal = _dimension_word(arousal, "arousal")
        valence = _dimension_word(valence, "valence")
        return label, gender, arousal, valence

    # -- captions -------------------------------------------------------------------------
    def caption(
        self,
        row_bins: Mapping[str, Any] | pd.Series,
        label: str | None = None,
        *,
        rng: np.random.Generator | int | None,
        gender: str | None = None,
        arousal: str | None = None,
        valence: str | None = None,
    ) -> str:
        """One caption for one clip, e.g. ``"speaker is angry and has a high pitch and is loud"``.

        Args:
            row_bins: ``{variable: "low"|"normal"|"high"}`` (a row of :meth:`ParalingBinner.transform`).
            label: emotion word (optional).
            rng: numpy Generator (or a seed) -- draws the phrase subset, then the template.
            gender: "female"/"male"/"f"/"m"/... (optional; ignored unless ``include_gender``).
            arousal, valence: words such as "high" / "negative" (optional) -> "high arousal";
                numeric ratings are left out (bin them into words first).
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return self._draw(self._clip(row_bins, label, gender, arousal, valence), rng)

    def _clip(self, row_bins, label, gender, arousal, valence) -> tuple:
        """The deterministic part of a caption: (label, gender, arousal, valence, items)."""
        label, gender, arousal, valence = self._prepare(label, gender, arousal, valence)
        return label, gender, arousal, valence, self._items(row_bins, arousal, valence)

    def _draw(self, clip: tuple, rng: np.random.Generator) -> str:
        """The random part of a caption (phrase subset, then template) for a :meth:`_clip`."""
        label, gender, arousal, valence, items = clip
        n = len(items)
        cfg = self.config
        if n:
            keep = np.arange(n)
            if cfg.phrase_dropout > 0:
                mask = rng.random(n) >= cfg.phrase_dropout
                keep = np.flatnonzero(mask) if mask.any() else np.array([rng.integers(n)])
            if cfg.phrases_per_caption is not None and len(keep) > cfg.phrases_per_caption:
                keep = np.sort(rng.choice(keep, size=cfg.phrases_per_caption, replace=False))
            items = [items[i] for i in keep]
        if label is None and not items:
            raise ValueError("cannot caption a clip with neither a label nor any binned variable")
        usable = self._usable(label, bool(items), gender, arousal, valence)
        t = usable[int(rng.integers(len(usable)))]
        return self._render(t, label, tuple(items), gender, arousal, valence)

    def _subsets(self, n: int) -> list[tuple[int, ...]]:
        cfg = self.config
        if n == 0:
            return [()]
        k = n if cfg.phrases_per_caption is None else min(cfg.phrases_per_caption, n)
        if cfg.phrase_dropout > 0:
            return [c for r in range(1, k + 1) for c in itertools.combinations(range(n), r)]
        return list(itertools.combinations(range(n), k))

    def all_captions(
        self,
        row_bins: Mapping[str, Any] | pd.Series,
        label: str | None = None,
        *,
        gender: str | None = None,
        arousal: str | None = None,
        valence: str | None = None,
    ) -> list[str]:
        """Every distinct caption :meth:`caption` can return for this clip (sorted). With phrase
        subsets this grows combinatorially (all subsets x templates)."""
        label, gender, arousal, valence = self._prepare(label, gender, arousal, valence)
        items = self._items(row_bins, arousal, valence)
        if label is None and not items:
            raise ValueError("cannot caption a clip with neither a label nor any binned variable")
        out = set()
        for sub in self._subsets(len(items)):
            chosen = [items[i] for i in sub]
            for t in self._usable(label, bool(chosen), gender, arousal, valence):
                out.add(self._render(t, label, tuple(chosen), gender, arousal, valence))
        return sorted(out)

    def captions(
        self,
        bins: pd.DataFrame,
        labels: Sequence[Any] | None = None,
        *,
        rng: np.random.Generator | int | None,
        gender: Sequence[Any] | None = None,
        arousal: Sequence[Any] | None = None,
        valence: Sequence[Any] | None = None,
    ) -> list[str]:
        """:meth:`caption` for every row of ``bins`` (aligned sequences for the other arguments)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        n = len(bins)
        for name, seq in (("labels", labels), ("gender", gender), ("arousal", arousal), ("valence", valence)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} rows of bins")

        cols = [[None] * n if s is None else list(s) for s in (labels, gender, arousal, valence)]
        names = list(bins.columns)
        values = [bins[c].tolist() for c in names]
        # Rows repeat (augmented views, clips of one speaker and emotion): the deterministic part
        # of each distinct row is built once; the draws stay one per row, in order.
        clips: dict = {}
        out = []
        for i in range(n):
            cells = tuple(v[i] for v in values) + tuple(c[i] for c in cols)
            key = cells + tuple(map(type, cells))  # 1 and 1.0 are equal keys but caption apart
            try:
                clip = clips.get(key)
            except TypeError:  # an unhashable cell: no memo for this row
                key, clip = None, None
            if clip is None:
                clip = self._clip(dict(zip(names, cells)), *cells[len(names):])
                if key is not None:
                    clips[key] = clip
            out.append(self._draw(clip, rng))
        return out

    def descriptions(self, bins: pd.DataFrame, labels: Sequence[Any] | None = None) -> list[str]:
        """:meth:`description` for every row of ``bins``."""
        labels_ = None if labels is None else list(labels)
        rows = bins.to_dict(orient="records")
        return [self.description(r, None if labels_ is None else labels_[i]) for i, r in enumerate(rows)]
