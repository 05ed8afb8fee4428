"""SLD (Speaker Likability Database), INTERSPEECH 2012 Speaker Trait Challenge, likability
sub-challenge, German.

Layout (the root or one level down): ``wav/*.wav`` (``.flac`` accepted; ``wav/<partition>/`` also
works) plus a ``;``-separated label table (other delimiters and ARFF are detected too) with the
columns ``file;likability`` (values ``L`` likable / ``NL`` not likable), possibly more columns
(kept). The table is looked for in the root and in ``labels/`` / ``lab/``, or given with ``labels=``.
split from the file-name prefix ``train_`` / ``devel_`` / ``test_`` (``devel`` -> ``dev``), or a
partition column when the table has one.

Labels are the lower-cased official codes ``l`` / ``nl`` (see :data:`LABELS`; override with
``label_map``). Rows with an empty or ``?`` class are left out (their number is logged, an info line).
Extra columns: ``class_code`` and the table's other columns.
"""
from __future__ import annotations

import pandas as pd

from ..errors import SkipLog
from ._challenge import load_challenge

CORPUS = "sld"
LANGUAGE = "de"
LABELS = {"L": "l", "NL": "nl"}
CLASS_COLUMNS = ("likability", "likeability", "class", "label")


def load(
    root,
    *,
    labels=None,
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """SLD table. ``labels``: a label table path (or a list of them) when auto-discovery is not
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
