"""One missing-value rule and one gender normaliser, shared by corpus tables, captions and grouping."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smoothclap import corpora
from smoothclap.captions import CaptionBuilder, CaptionConfig
from smoothclap.normalize import group_ids
from smoothclap.values import MISSING_GROUP, is_missing, normalize_gender

SPELLINGS = {
    "m": "male", "M": "male", " Male ": "male", "man": "male", "men": "male", "boy": "male", "Mann": "male",
    "männlich": "male",
    "f": "female", "W": "female", "female": "female", "Woman": "female", "women": "female", "girl": "female",
    "Frau": "female", "weiblich": "female",
    "unknown": None, "?": None, "x": None, "child": None, "": None, "  ": None,
}


@pytest.mark.parametrize("v", [None, float("nan"), np.float32("nan"), np.nan, pd.NA, pd.NaT, "", "  \t"])
def test_missing(v):
    assert is_missing(v)


@pytest.mark.parametrize("v", ["nan", "None", "NA", "?", "none", 0, 0.0, False, "x", [None], np.array([np.nan])])
def test_not_missing(v):
    assert not is_missing(v)  # placeholder words are values: a label "none" stays a label


def test_gender_rule():
    for word, want in SPELLINGS.items():
        assert normalize_gender(word) == want, word
    for v in (None, float("nan"), pd.NA):
        assert normalize_gender(v) is None


def test_corpora_and_captions_agree_on_gender(tmp_path):
    """The manifest reader (corpus tables) and the caption builder use the same rule."""
    values = [*SPELLINGS, None]
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"file": f"{i}.wav", "label": "sad", "gender": g}) + "\n"
                         for i, g in enumerate(values)))
    table = corpora.read_manifest(m, check_files=False, with_duration=False)
    builder = CaptionBuilder(CaptionConfig(templates=["a {gender} speaker sounding {emotion}"]))
    for g, from_table in zip(values, table["gender"]):
        caption = builder.caption({}, "sad", rng=0, gender=g)
        from_caption = caption.split()[1] if caption.split()[1] != "speaker" else None
        assert from_table == from_caption == normalize_gender(g), (g, from_table, caption)


def test_missing_speakers_form_one_group():
    """None, NaN and empty speakers are one group "?" (not groups named "None" and "nan")."""
    table = pd.DataFrame({"speaker": ["a", None, np.nan, "", "b", "a"]})
    g = group_ids(table, "speaker")
    assert g.tolist() == ["a", MISSING_GROUP, MISSING_GROUP, MISSING_GROUP, "b", "a"]
    assert set(g) == {"a", "b", "?"}
    assert group_ids(table, None) is None and group_ids(table, "corpus") is None
    floats = pd.DataFrame({"speaker": [1.0, np.nan]})  # a numeric column with a gap
    assert group_ids(floats, "speaker").tolist() == ["1.0", "?"]
