"""ALC (Alcohol Language Corpus), INTERSPEECH 2011 Speaker State Challenge, intoxication
sub-challenge, German.

Layout (the root or one level down): audio in ``wav/<train|dev|test>/*.wav`` or flat ``wav/*.wav``
(``.flac`` accepted), plus one or more label tables with a file column (file / filename / name / id
/ instance) and a class column (class / label / alc) holding ``AL`` (alcoholised, BAC > 0.5 per mille)
or ``NAL`` (not alcoholised), optionally a partition column (partition / split / set), speaker and
gender. Tables may be CSV, TSV, ``;``- or space-separated text, or ARFF (e.g. the challenge's
per-partition ``.arff`` files; only the needed attributes are kept); the delimiter is detected.
They are looked for in the root and in ``labels/``, or given with ``labels=``.

Labels are the lower-cased official codes: ``al`` / ``nal`` (see :data:`LABELS`; override with
``label_map``, e.g. ``{"AL": "intoxicated", "NAL": "sober"}``). split: the table's partition column,
else the ``wav/<partition>/`` folder, else a ``train_`` / ``dev(el)_`` / ``test_`` file-name prefix,
else a partition word in the table's file name; ``devel`` becomes ``dev``. Rows whose class is
empty or ``?`` (unreleased test labels) and audio files without a label row are left out; their
number is logged (an info line). Extra columns: ``class_code`` and the table's other columns.
"""
from __future__ import annotations

import pandas as pd

from ..errors import SkipLog
from ._challenge import load_challenge

CORPUS = "alc"
LANGUAGE = "de"
LABELS = {"AL": "al", "NAL": "nal"}
CLASS_COLUMNS = ("class", "label", "alc", "intoxication", "alcohol")


def load(
    root,
    *,
    labels=None,
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """ALC table. ``labels``: a label table path (or a list of them) when auto-discovery is not
    wanted."""
    return load_challenge(
        root,
        corpus=CORPUS,
        language=LANGUAGE,
        codes=LABELS,
        class_cols=CLASS_COLUMNS,
        labels=labels,
        with_duration=with_duration,
        skip_bad=skip_bad,
        skips=skips,
        label_map=label_map,
    )
