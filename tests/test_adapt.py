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
    assert set(r) == {"whole", "skewed", "single", "adapted", "adapted-skewed"}  # 10 calm clips: no adapted-neutral
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


def test_adapted_neutral_protocol_adapts_on_the_calm_clips_only(monkeypatch):
    import smoothclap.adapt as A
    from smoothclap.experiments.protocols import score_protocols
    from smoothclap.tasks import get_task

    seen = []
    real = A.adapted_copy
    monkeypatch.setattr(A, "adapted_copy", lambda m, f, **kw: seen.append(np.array(f)) or real(m, f, **kw))
    task, m, n = get_task("turevdb"), _model(), 40  # turevdb has no "neutral": its "calm" clips
    table = pd.DataFrame({"file": [f"c{i}.wav" for i in range(n)], "label": [task.labels[i % 4] for i in range(n)],
                          "speaker": [f"s{i % 4}" for i in range(n)], "corpus": "turevdb"})
    feats = _new_setting(n) + np.random.default_rng(4).normal(size=(n, DIM)).astype(np.float32)
    r = score_protocols(task, m, table, feats, adapt_clips=8)
    assert r["adapted-neutral"]["n"] == n - 8 and len(seen) == 3
    assert "adapted-neutral-declared" not in r  # the model holds no neutral statistics
    calm = {tuple(feats[i]) for i in range(n) if table.label[i] == "calm"}
    assert {tuple(x) for x in seen[2]} <= calm and not {tuple(x) for x in seen[0]} <= calm
    x, neutral = _emotional(0.0, 1.0, 200, np.random.default_rng(7))
    assert m.fit_neutral_statistics(x, np.tile(["a", "b"], 100), neutral) == 2
    seen.clear()
    r = score_protocols(task, m, table, feats, adapt_clips=8)
    assert r["adapted-neutral-declared"]["n"] == n - 8 and np.array_equal(seen[3], seen[2])


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
    from smoothclap.adapt import reference_digest

    digest = reference_digest(wavs)  # the clips' content, whatever their order or names
    assert cfg["adapted"] == {"clips": 10, "statistics": "mean+std", "reference_sha1": digest}
    assert digest == reference_digest(wavs[::-1]) != reference_digest(wavs[1:])  # one clip fewer
    assert f"content sha1 `{digest}`" in (out / "README.md").read_text()
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
    assert json.loads((tmp_path / "skip" / "config.json").read_text())["adapted"]["reference_sha1"] == digest


def test_adapt_model_is_part_of_the_public_api():
    import smoothclap
    from smoothclap import adapt

    assert smoothclap.adapt_model is adapt.adapt_model and "adapt_model" in smoothclap.__all__


def test_benchmark_refuses_too_few_adapt_clips_before_training(tmp_path, capsys):
    from smoothclap.cli import main

    rc = main(["-q", "benchmark", "loco", "--data-root", str(tmp_path), "--config", "recommended",
               "--adapt-clips", "3", "--out", str(tmp_path / "out")])
    assert rc == 2 and "--adapt-clips: 3: adapting needs at least model.min_group_clips = 8" in capsys.readouterr().err


def _emotional(mean, std, n, rng, neutral_share=0.25):
    """Raw features ``[n, DIM]`` of a setting (``mean``, ``std`` per feature) whose clips show
    emotions: neutral clips sit at -0.8 group std with half the spread; the flag of each clip."""
    neutral = np.arange(n) < int(n * neutral_share)
    z = np.where(neutral[:, None], rng.normal(-0.8, 0.5, (n, DIM)), rng.normal(0.27, 1.0, (n, DIM)))
    return (mean + std * z).astype(np.float32), neutral


def test_neutral_statistics_are_where_neutral_clips_sit_within_their_group():
    from smoothclap.adapt import neutral_rows

    rng = np.random.default_rng(5)
    m = _model()
    parts = [_emotional(rng.normal(0, 3, DIM), rng.uniform(0.5, 2, DIM), 200, rng) for _ in range(2)]
    x = np.concatenate([p[0] for p in parts])
    groups = np.repeat(["a", "b"], 200)
    labels = np.where(np.concatenate([p[1] for p in parts]), "neutral", "angry")
    labels[:200][labels[:200] == "neutral"] = "calm"  # group a says "calm" (its unemotional label)
    neutral = neutral_rows(labels, groups)
    assert neutral.sum() == 100 and neutral_rows(np.array(["calm", "neutral"]), np.array(["g", "g"])).tolist() == [False, True]
    assert m.fit_neutral_statistics(x, groups, neutral) == 2
    want_off, want_scale = [], []
    for g in ("a", "b"):
        xs, ns = x[groups == g].astype(np.float64), neutral[groups == g]
        mu, sd = xs.mean(0), xs.std(0)
        want_off.append((xs[ns].mean(0) - mu) / sd)
        want_scale.append(xs[ns].std(0) / sd)
    off, scale = m.neutral_statistics()
    np.testing.assert_allclose(off, np.mean(want_off, 0), atol=1e-5)
    np.testing.assert_allclose(scale, np.mean(want_scale, 0), atol=1e-5)
    # too few neutral clips in every group: nothing fitted
    assert _model().fit_neutral_statistics(x, groups, neutral & (np.arange(400) % 50 == 0)) == 0


def test_adapting_on_neutral_clips_declared_recovers_the_setting():
    """Thirty neutral clips of a new setting, declared as such, give statistics near the setting's
    own (its usual mix of emotions); taken as the usual mix, they sit at the neutral offset."""
    from smoothclap.adapt import check_adaptable

    rng = np.random.default_rng(6)
    m = _model()
    parts = [_emotional(rng.normal(0, 3, DIM), rng.uniform(0.5, 2, DIM), 400, rng) for _ in range(3)]
    m.fit_neutral_statistics(np.concatenate([p[0] for p in parts]), np.repeat(["a", "b", "c"], 400),
                             np.concatenate([p[1] for p in parts]))
    mu, sd = rng.normal(0, 3, DIM), rng.uniform(0.5, 2, DIM)
    x, neutral = _emotional(mu, sd, 2000, rng)
    true_mean, true_std = x.astype(np.float64).mean(0), x.astype(np.float64).std(0)
    ref = x[np.flatnonzero(neutral)[:30]]
    plain = adapted_copy(m, ref)
    declared = adapted_copy(m, ref, reference="neutral")
    assert declared.config.adapted == {"clips": 30, "statistics": "mean+std", "reference": "neutral"}

    def err(a):
        return (np.abs(a.norm_mean.double().numpy() - true_mean) / true_std).mean()

    assert err(declared) < 0.3 * err(plain)
    ratio = declared.norm_std.double().numpy() / true_std
    assert 0.8 < np.median(ratio) < 1.25 and np.median(plain.norm_std.double().numpy() / true_std) < 0.7
    mean_only = adapted_copy(m, ref, "mean", reference="neutral")
    assert torch.equal(mean_only.norm_std, m.norm_std) and err(mean_only) < err(plain)
    with pytest.raises(BadInputError, match="no neutral statistics"):
        check_adaptable(_model(), 30, reference="neutral")
    with pytest.raises(ValueError, match="reference 'calm'"):
        check_adaptable(m, 30, reference="calm")


def test_a_model_saved_before_neutral_statistics_loads_without_them(tmp_path):
    from safetensors.torch import load_file, save_file

    m = _model()
    m.save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    state = {k: v for k, v in load_file(str(w)).items() if not k.startswith("neutral_")}
    save_file(state, str(w), metadata={"format": "pt"})
    b = SmoothClapModel.from_pretrained(tmp_path / "m")
    assert b.neutral_statistics() is None and torch.equal(b.norm_mean, m.norm_mean)
