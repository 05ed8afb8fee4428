"""The one rule for a missing cell and the one gender normaliser (corpus tables, manifests,
captions, grouping).

* :func:`is_missing`: None, a float / NumPy NaN, ``pd.NA``, ``pd.NaT``, and an empty or
  whitespace-only string. Nothing else: the strings ``"nan"``, ``"none"``, ``"NA"`` or ``"?"`` are
  values (a label ``"none"`` stays a label). Readers that know a placeholder word of their format
  (a challenge table's ``?`` class, MSP-Podcast's ``Unknown``) check it on top of this.
* :func:`normalize_gender`: ``"male"``, ``"female"`` or None.
* :data:`MISSING_GROUP`: the one group of rows whose grouping value is missing
  (:func:`smoothclap.normalize.group_ids`).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

#: Group id of rows whose grouping value (speaker, corpus, ...) is missing.
MISSING_GROUP = "?"

#: Spellings (lower case, stripped) of each gender; anything else is no gender (None).
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "male": ("m", "male", "man", "men", "boy", "männlich", "mann"),
    "female": ("f", "w", "female", "woman", "women", "girl", "weiblich", "frau"),
}
_GENDER = {w: g for g, words in GENDER_WORDS.items() for w in words}


def is_missing(v: Any) -> bool:
    """True for None, NaN (float or NumPy), ``pd.NA``, ``pd.NaT`` and empty / whitespace-only
    strings; False for anything else (other strings, numbers, lists, arrays)."""
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    missing = pd.isna(v)
    return missing if isinstance(missing, bool) else False  # list-likes: pd.isna gives an array


def normalize_gender(value: Any) -> str | None:
    """``"m"`` / ``"male"`` / ``"man"`` / ``"boy"`` / ``"Mann"`` ... -> ``"male"``; ``"f"`` / ``"w"`` /
    ``"female"`` / ``"woman"`` / ``"girl"`` / ``"Frau"`` ... -> ``"female"`` (:data:`GENDER_WORDS`,
    case and surrounding spaces ignored); missing values and any other word (``"unknown"``,
    ``"?"``, ``"child"``) -> None."""
    if is_missing(value):
        return None
    return _GENDER.get(str(value).strip().lower())
