"""Quantile bins of paralinguistic variables (smoothclap.bins)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smoothclap import bins as paraling
from smoothclap.bins import ParalingBinner
from smoothclap.errors import BadInputError

def _table(values, col="F0semitoneFrom27.5Hz_sma3nz_amean", **extra):
    return pd.DataFrame({col: values, **extra})


def test_bins_at_quantile_boundaries():
    b = ParalingBinner(["pitch"]).fit(_table(np.arange(11.0)))  # q.3 = 3.0, q.7 = 7.0 exactly
    assert b.thresholds_ == {"pitch": (3.0, 7.0)}
    test = _table([3.0, 3.0001, 5.0, 6.9999, 7.0, -5.0, 100.0, np.nan], )
    got = b.transform(test)["pitch"].tolist()
    assert got == ["low", "normal", "normal", "normal", "high", "low", "high", None]


def test_bins_interpolated_quantiles_and_ties():
    b = ParalingBinner(["pitch"]).fit(_table([0.0, 1.0, 2.0, 10.0]))  # q.3 at pos .9 -> 0.9; q.7 at 2.1 -> 2.8
    lo, hi = b.thresholds_["pitch"]
    assert lo == pytest.approx(0.9) and hi == pytest.approx(2.8)
    assert b.transform(_table([0.9, 1.0, 2.79, 2.8]))["pitch"].tolist() == ["low", "normal", "normal", "high"]
    tie = ParalingBinner(["pitch"]).fit(_table([1.0, 1.0, 1.0, 1.0, 2.0]))
    assert tie.thresholds_["pitch"] == (1.0, 1.0)
    assert tie.transform(_table([0.5, 1.0, 1.5]))["pitch"].tolist() == ["low", "normal", "high"]


def test_bins_all_default_variables_and_rate():
    rng = np.random.default_rng(0)
    cols = {c: rng.normal(size=50) for c in paraling.VARIABLES.values()}
    df = pd.DataFrame(cols, index=[f"f{i}.wav" for i in range(50)])
    bins = ParalingBinner().fit_transform(df)
    assert list(bins.columns) == paraling.DEFAULT_VARIABLES and "rate" not in bins
    assert list(bins.index) == list(df.index)
    for v in bins.columns:  # 30 % / 40 % / 30 % of the training clips
        assert bins[v].value_counts().to_dict() == {"low": 15, "normal": 20, "high": 15}
    with_rate = ParalingBinner(paraling.DEFAULT_VARIABLES + ["rate"]).fit_transform(df)
    assert "rate" in with_rate
    with pytest.raises(BadInputError, match="VoicedSegmentsPerSec"):
        ParalingBinner(["rate"]).fit(df.drop(columns="VoicedSegmentsPerSec"))
    with pytest.raises(RuntimeError, match="not fitted"):
        ParalingBinner().transform(df)


def _grouped():
    vals = list(np.arange(11.0)) + list(100.0 + np.arange(11.0)) + [50.0, 51.0]
    groups = ["A"] * 11 + ["B"] * 11 + ["C"] * 2
    return _table(vals, speaker=groups)


def test_bins_per_group_and_unseen_group_fallback():
    b = ParalingBinner(["pitch"], group_by="speaker", min_group_size=5).fit(_grouped())
    # global: 24 sorted values; q.3 at pos 6.9 -> 6.9, q.7 at pos 16.1 -> 103.1
    assert b.thresholds_["pitch"] == pytest.approx((6.9, 103.1))
    assert b.group_thresholds_["A"]["pitch"] == (3.0, 7.0)
    assert b.group_thresholds_["B"]["pitch"] == (103.0, 107.0)
    assert "C" not in b.group_thresholds_  # too small -> global thresholds
    test = _table([3.0, 7.0, 103.0, 107.0, 51.0, 6.9, 50.0, 103.1],
                  speaker=["A", "A", "B", "B", "C", "Z", "Z", "Z"])
    got = b.transform(test)["pitch"].tolist()
    assert got == ["low", "high", "low", "high", "normal", "low", "normal", "high"]
    # without grouping, speaker B's 103 is only "normal" (global q.7 = 103.1)
    flat = ParalingBinner(["pitch"]).fit(_grouped()).transform(test)["pitch"].tolist()
    assert flat[2:4] == ["normal", "high"]
    with pytest.raises(BadInputError, match="speaker"):
        b.transform(test.drop(columns="speaker"))


def test_binner_dict_round_trip():
    b = ParalingBinner(["pitch"], group_by="speaker", min_group_size=5, low_q=0.25, high_q=0.75).fit(_grouped())
    d = json.loads(json.dumps(b.to_dict()))  # JSON-serialisable
    b2 = ParalingBinner.from_dict(d)
    assert b2.to_dict() == b.to_dict()
    test = _table([3.0, 103.0, 51.0, 8.0], speaker=["A", "B", "C", "Z"])
    pd.testing.assert_frame_equal(b2.transform(test), b.transform(test))
    assert ParalingBinner.from_dict(ParalingBinner().to_dict()).is_fitted is False
    import yaml

    assert ParalingBinner.from_dict(yaml.safe_load(yaml.safe_dump(b.to_dict()))).to_dict() == b.to_dict()


def test_binner_numeric_group_keys_survive_json():
    df = _table(list(np.arange(11.0)) * 2, corpus=[1] * 11 + [2] * 11)
    b = ParalingBinner(["pitch"], group_by="corpus", min_group_size=5).fit(df)
    b2 = ParalingBinner.from_dict(json.loads(json.dumps(b.to_dict())))
    pd.testing.assert_frame_equal(b2.transform(df), b.transform(df))


# ------------------------------------------------------------------------------------------ captions
