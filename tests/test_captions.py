"""Captions and descriptions (smoothclap.captions)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smoothclap.bins import ParalingBinner
from smoothclap.captions import DEFAULT_TEMPLATES, CaptionBuilder, CaptionConfig, description

ROW = {"pitch": "high", "pitch_variation": "low", "loudness": "high", "jitter": "normal", "shimmer": "low",
       "duration": "low"}


def test_description_exact():
    assert description(ROW) == "high pitch, low pitch variation, loud, normal jitter, low shimmer, short"
    shuffled = dict(reversed(list(ROW.items())))
    assert description(shuffled) == description(ROW)  # fixed variable order
    assert description(ROW, "angry", include_label=True).startswith("angry, high pitch, ")
    assert description(ROW, "angry") == description(ROW)  # label only when asked
    assert description({**ROW, "rate": "low", "jitter": None}) == (
        "high pitch, low pitch variation, loud, low shimmer, short, slow")
    assert description(pd.Series(ROW)) == description(ROW)
    b = CaptionBuilder(CaptionConfig(description_include_label=True))
    assert b.description(ROW, "sad") == "sad, " + description(ROW)
    with pytest.raises(ValueError, match="bin of 'pitch'"):
        description({"pitch": "very high"})


def test_caption_design_example():
    b = CaptionBuilder(CaptionConfig(templates=["speaker is {emotion} and {predicates}"]))
    got = b.caption({"pitch": "high", "loudness": "high"}, "angry", rng=np.random.default_rng(0))
    assert got == "speaker is angry and has a high pitch and is loud"


def test_caption_gender_and_dimensions():
    t = ["a {gender} speaker sounding {emotion}, with {phrases}"]
    b = CaptionBuilder(CaptionConfig(templates=t))
    row = {"pitch": "low", "duration": "high"}
    rng = np.random.default_rng(0)
    assert b.caption(row, "sad", rng=rng) == "a speaker sounding sad, with low pitch and long"
    assert b.caption(row, "sad", rng=rng, gender="F") == "a female speaker sounding sad, with low pitch and long"
    assert b.caption(row, "sad", rng=rng, gender=np.nan) == "a speaker sounding sad, with low pitch and long"
    assert b.caption(row, "sad", rng=rng, gender="m", arousal="low", valence="negative") == (
        "a male speaker sounding sad, with low pitch, long, low arousal and negative valence")
    assert b.caption(row, "sad", rng=rng, arousal=3.7, valence=np.float32(2.0)) == (  # ratings: left out
        "a speaker sounding sad, with low pitch and long")
    no_gender = CaptionBuilder(CaptionConfig(templates=t, include_gender=False, include_dimensions=False))
    assert no_gender.caption(row, "sad", rng=rng, gender="m", arousal="low") == (
        "a speaker sounding sad, with low pitch and long")


def test_caption_deterministic_and_varied():
    b = CaptionBuilder()
    assert len(b.templates) >= 6
    rows = [ROW, {**ROW, "pitch": "low"}, {**ROW, "loudness": "normal"}] * 10
    labels = ["angry", "sad", "happy"] * 10

    def run(seed):
        rng = np.random.default_rng(seed)
        return [b.caption(r, lab, rng=rng, gender="female") for r, lab in zip(rows, labels)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert len(set(run(3))) > 10  # templates vary
    df = pd.DataFrame(rows)
    assert b.captions(df, labels, rng=np.random.default_rng(1), gender=["female"] * 30) == run(1)
    assert b.captions(df, labels, rng=5) == b.captions(df, labels, rng=5)


def test_captions_of_repeated_rows_equal_one_caption_per_row():
    """captions() builds each distinct row's phrases once (augmented views repeat rows): the
    captions and the draws must stay those of caption() called row by row with one generator."""
    cfg = CaptionConfig(include_gender=True, include_dimensions=True, phrase_dropout=0.3, phrases_per_caption=3)
    b = CaptionBuilder(cfg)
    rows = [ROW, {**ROW, "pitch": None}, {**ROW, "loudness": float("nan")}, {**ROW, "pitch": "low"}] * 6
    labels = ["angry", None, "sad", "angry"] * 6
    labels[3] = 1  # equal to 1.0 but not the same word
    labels[7] = 1.0
    gender = ["f", "male", None, "w"] * 6
    arousal = ["high", None, "low", "high"] * 6
    rng = np.random.default_rng(4)
    one_by_one = [b.caption(r, lab, rng=rng, gender=g, arousal=a)
                  for r, lab, g, a in zip(rows, labels, gender, arousal)]
    together = b.captions(pd.DataFrame(rows), labels, rng=np.random.default_rng(4), gender=gender, arousal=arousal)
    assert together == one_by_one
    assert together[3].count("1") and together[7].count("1.0")
    assert len(set(together)) > 8  # the draws still vary across repeats of a row
    # an unhashable cell is captioned without the memo
    odd = pd.DataFrame({"pitch": ["high", "low"]})
    assert len(b.captions(odd, [["x"], "sad"], rng=0)) == 2


def test_all_captions_cover_caption():
    for cfg in (CaptionConfig(), CaptionConfig(phrases_per_caption=2), CaptionConfig(phrase_dropout=0.5),
                CaptionConfig(phrase_dropout=0.3, phrases_per_caption=3)):
        b = CaptionBuilder(cfg)
        every = set(b.all_captions(ROW, "angry", gender="m"))
        rng = np.random.default_rng(0)
        seen = {b.caption(ROW, "angry", rng=rng, gender="m") for _ in range(300)}
        assert seen <= every
        if cfg.phrases_per_caption is None and cfg.phrase_dropout == 0:
            # every built-in template that uses an emotion and phrases, once each
            assert len(every) == 8 and seen == every
    full = CaptionBuilder().all_captions(ROW, "angry")
    assert "speaker is angry and has a high pitch, has low pitch variation, is loud, has normal jitter, " \
           "has low shimmer and speaks briefly" in full
    assert "this person is feeling angry; high pitch, low pitch variation, loud, normal jitter, " \
           "low shimmer and short." in full


def test_phrase_subsets():
    b = CaptionBuilder(CaptionConfig(templates=["{phrases}"], phrases_per_caption=2))
    rng = np.random.default_rng(0)
    caps = {b.caption(ROW, None, rng=rng) for _ in range(200)}
    assert all(c.count(" and ") == 1 and "," not in c for c in caps)
    assert len(caps) == len(b.all_captions(ROW)) == 15  # C(6, 2)
    d = CaptionBuilder(CaptionConfig(templates=["{phrases}"], phrase_dropout=0.99))
    assert all(d.caption(ROW, None, rng=rng) for _ in range(20))  # at least one phrase kept


def test_caption_without_label_or_phrases():
    b = CaptionBuilder()
    for c in b.all_captions(ROW, None, gender="f"):
        assert "None" not in c and "  " not in c
    assert b.all_captions(ROW, None) == sorted(["a speaker who has a high pitch, has low pitch variation, is loud, "
                                                "has normal jitter, has low shimmer and speaks briefly",
                                                "speech with high pitch, low pitch variation, loud, normal jitter, "
                                                "low shimmer and short"])
    assert b.all_captions({}, "calm") == ["a speaker sounding calm", "this person is feeling calm."]
    with pytest.raises(ValueError, match="neither a label"):
        b.caption({}, None, rng=np.random.default_rng(0))
    # a pool without a fitting template falls back to a plain list
    only_emotion = CaptionBuilder(CaptionConfig(templates=["speaker is {emotion} and {predicates}"]))
    assert only_emotion.caption({"pitch": "low"}, None, rng=np.random.default_rng(0)) == "low pitch"


def test_caption_config_from_dict():
    from smoothclap.config import validate

    cfg = validate(CaptionConfig, {"variables": ["pitch", "rate"], "group_by": "speaker", "phrases_per_caption": 3})
    assert cfg.variables == ["pitch", "rate"] and cfg.low_q == 0.3 and cfg.high_q == 0.7
    assert validate(CaptionConfig, cfg.to_dict()) == cfg
    assert validate(CaptionConfig, {}) == CaptionConfig()
    b = ParalingBinner.from_config(cfg)
    assert b.group_by == "speaker" and b.variables == ["pitch", "rate"]
    with pytest.raises(ValueError, match="variabels: unknown key; did you mean 'variables'"):
        validate(CaptionConfig, {"variabels": ["pitch"]})
    with pytest.raises(ValueError, match="placeholders"):
        CaptionConfig(templates=["a {mood} speaker"])
    with pytest.raises(ValueError, match="low_q"):
        CaptionConfig(low_q=0.8, high_q=0.7)
    assert all(t in DEFAULT_TEMPLATES for t in CaptionBuilder().templates)
