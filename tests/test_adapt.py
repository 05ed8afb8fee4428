"""Adapting a model to a recording setting (``smoothclap adapt``, :mod:`smoothclap.adapt`): clips
scored alone after adapting on K unlabelled clips are normalised exactly as the whole-corpus path
normalises a group of those K clips; nothing else changes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from smoothclap.adapt import adapted_copy
from smoothclap.config import SmoothClapConfig
from smoothclap.errors import BadInputError
from smoothclap.model import SmoothClapModel

DIM = 384  # whisper-tiny-en's size, so the CLI test can run the real tower


def _model(**kw) -> SmoothClapModel:
    kw = {"feature_norm_group": "corpus", "fallback_stats": "shrunk", "nuisance_dims": 2, **kw}
    cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM, text_dim=384,
                           embed_dim=8, **kw)
    m = SmoothClapModel(cfg)
    rng = np.random.default_rng(0)
    corpus = np.repeat(["a", "b"], 30).astype(object)
    x = (rng.normal(size=(60, DIM)) + 3 * (corpus == "b")[:, None]).astype(np.float32)
    speakers = np.array([f"{c}/{i % 3}" for i, c in enumerate(corpus)], dtype=object)
    m.fit_normalization(x, corpus if kw["feature_norm_group"] else None,
                        nuisance=speakers if kw["nuisance_dims"] else None)
    return m.eval()


def _new_setting(n: int = 20, seed: int = 1) -> np.ndarray:
    """Raw features of clips from a setting the model never saw: offset and rescaled."""
    rng = np.random.default_rng(seed)
    return (5.0 + 2.0 * rng.normal(size=(n, DIM))).astype(np.float32)


def test_adapted_single_clips_equal_the_group_path_of_the_reference_clips():
    m = _model()
    x = _new_setting()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    a = adapted_copy(m, x)
    with torch.no_grad():
        grouped = m.encode_audio_features(x, ["new"] * len(x))  # the whole-corpus rule
        alone = a.encode_audio_features(x)                     # each clip on its own, adapted
        unadapted = m.encode_audio_features(x)
    np.testing.assert_allclose(alone.numpy(), grouped.numpy(), atol=1e-5)
    assert (unadapted - grouped).abs().max() > 1e-2  # the adaptation changed what single clips get
    for k, v in m.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k
    changed = {k for k, v in a.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"norm_mean", "norm_std"}  # heads, standardiser, directions: as trained
    assert a.config.adapted == {"clips": 20, "statistics": "mean+std"} and m.config.adapted is None


def test_mean_only_keeps_the_stored_scale():
    m = _model()
    x = _new_setting()
    a = adapted_copy(m, x, statistics="mean")
    np.testing.assert_allclose(a.norm_mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(a.norm_std, m.norm_std)
    assert a.config.adapted["statistics"] == "mean"


@pytest.mark.parametrize("case, match", [
    ("few", "3 clip\\(s\\); adapting needs at least model.min_group_clips = 8"),
    ("nan", "1 clip\\(s\\) with non-finite features"),
    ("dim", "expected \\[clips, 384\\]"),
    ("no-norm", "no feature normalisation"),
])
def test_bad_reference_clips_are_clear_errors(case, match):
    m = _model(feature_norm_group=None, nuisance_dims=0) if case == "no-norm" else _model()
    x = _new_setting()
    if case == "few":
        x = x[:3]
    elif case == "nan":
        x[4, 7] = np.nan
    elif case == "dim":
        x = x[:, :10]
    with pytest.raises(BadInputError, match=match):
        adapted_copy(m, x, what="ref.csv")
    with pytest.raises(ValueError, match="statistics 'median'"):
        adapted_copy(_model(), _new_setting(), statistics="median")


def test_adapted_model_round_trips_and_says_so(tmp_path):
    a = adapted_copy(_model(), _new_setting())
    a.save_pretrained(tmp_path / "m")
    b = SmoothClapModel.from_pretrained(tmp_path / "m")
    assert b.config.adapted == {"clips": 20, "statistics": "mean+std"}
    for k in ("norm_mean", "norm_std", "nuisance_basis"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert "Adapted (`smoothclap adapt`)" in (tmp_path / "m" / "README.md").read_text()


def test_adapted_protocol_is_reported_but_not_in_the_robust_uar():
    from smoothclap.experiments.loco import summarise_protocols
    from smoothclap.experiments.protocols import adapt_rows, score_protocols, skewed_rows
    from smoothclap.tasks import get_task

    task = get_task("turevdb")
    m = _model()
    n = 40
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"file": [f"c{i}.wav" for i in range(n)], "label": [task.labels[i % 4] for i in range(n)],
                          "speaker": [f"s{i % 4}" for i in range(n)], "corpus": "turevdb"})
    feats = _new_setting(n) + rng.normal(size=(n, DIM)).astype(np.float32)
    r = score_protocols(task, m, table, feats, adapt_clips=12)
    assert set(r) == {"whole", "skewed", "single", "adapted", "adapted-skewed"}
    assert r["adapted"]["n"] == r["adapted-skewed"]["n"] == n - 12 and r["whole"]["n"] == n
    ref, rest = adapt_rows(n, 12)
    assert len(set(ref) | set(rest)) == n and not set(ref) & set(rest)
    pool = skewed_rows(table, 2)
    ref, rest = adapt_rows(n, 12, pool=pool)  # reference clips of the skewed speakers only
    assert set(ref) <= set(pool) and len(rest) == n - 12 and not set(ref) & set(rest)
    s = summarise_protocols({meth: [{"seed": 0, **r}] for meth in ("CLAP", "SmoothCLAP")})
    assert {"adapted", "adapted-skewed"} <= set(s["protocols"])
    assert s["robust"]["CLAP"]["mean"] == pytest.approx(np.mean([r[p]["uar"] for p in ("whole", "skewed", "single")]))
    assert "adapted" not in score_protocols(task, m, table, feats)  # off by default in the library
    assert not {"adapted", "adapted-skewed"} & set(score_protocols(task, m, table, feats, adapt_clips=n))  # skipped
    with pytest.raises(ValueError, match="needs 0 < k < n"):
        adapt_rows(10, 10)


def test_cli_adapt_writes_a_model_that_classifies(synth_root, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main

    m = _model()
    m.save_pretrained(tmp_path / "model")
    wavs = sorted(str(p) for p in (synth_root / "wav").rglob("*.wav"))[:10]
    out = tmp_path / "adapted"
    rc = main(["-q", "adapt", "--model", str(tmp_path / "model"), "--out", str(out), "--cache-dir",
               str(shared_cache), *wavs])
    assert rc == 0, capsys.readouterr().err
    assert "of 10 reference clip(s)" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["adapted"] == {"clips": 10, "statistics": "mean+std"}
    b = SmoothClapModel.from_pretrained(out)
    feats, _ = b.file_features(wavs, cache_dir=shared_cache)
    np.testing.assert_allclose(b.norm_mean.numpy(), feats.astype(np.float64).mean(0), rtol=1e-4, atol=1e-5)
    assert main(["-q", "classify", "--model", str(out), "--labels", "angry,happy,sad", wavs[0]]) == 0
    assert wavs[0] in capsys.readouterr().out
    # too few clips: a one-line error naming the files and the rule, nothing written
    rc = main(["-q", "adapt", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "few"), "--cache-dir",
               str(shared_cache), *wavs[:3]])
    assert rc == 2 and "adapting needs at least model.min_group_clips" in capsys.readouterr().err
    assert not (tmp_path / "few").exists()
    # a bad reference file stops it, naming the file; --skip-bad counts it and adapts on the rest
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    args = ["-q", "adapt", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "skip"), "--cache-dir",
            str(shared_cache), *wavs, str(silent)]
    assert main(args) == 2 and "silent.wav" in capsys.readouterr().err
    assert main(args[:2] + ["--skip-bad"] + args[2:]) == 0
    out = capsys.readouterr().out
    assert "of 10 reference clip(s)" in out and "skipped 1 file(s)" in out and "silent" in out


def test_adapt_model_is_part_of_the_public_api():
    import smoothclap
    from smoothclap import adapt

    assert smoothclap.adapt_model is adapt.adapt_model and "adapt_model" in smoothclap.__all__


def test_benchmark_refuses_too_few_adapt_clips_before_training(tmp_path, capsys):
    from smoothclap.cli import main

    rc = main(["-q", "benchmark", "loco", "--data-root", str(tmp_path), "--config", "recommended",
               "--adapt-clips", "3", "--out", str(tmp_path / "out")])
    assert rc == 2 and "--adapt-clips: 3: adapting needs at least model.min_group_clips = 8" in capsys.readouterr().err
