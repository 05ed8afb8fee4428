"""Training on partly labelled data: unlabelled rows (an empty label, a source marked
``labelled: false``, rows masked by a study) train with captions that name no emotion and soft
targets that use no label of theirs; posteriors never see their own fold; the study regimes
(masked and noisy labels, captions without the emotion word) are exact and seeded."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import torch

from smoothclap.captions import CaptionBuilder
from smoothclap.config import CaptionConfig, ConfigError, load_config
from smoothclap.corpora import labelled_mask, training_table, unlabel
from smoothclap.errors import BadInputError
from smoothclap.experiments.regimes import drop_emotion_words, mask_labels, noisy_labels
from smoothclap.losses import UNLABELLED, label_targets, similarity_targets, soft_targets, target_diagnostics
from smoothclap.targets import crossfit_dimensions, crossfit_posteriors

from test_emotion_targets import spy_on_fits

#: every emotion word the synthetic corpus, the caption vocabulary or the corpora could put in a caption
EMOTION_WORDS = {"angry", "anger", "happy", "happiness", "sad", "sadness", "neutral", "fear", "fearful", "bored",
                 "boredom", "calm", "disgust", "disgusted", "surprised", "surprise", "joy"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# -- the table: one marker ---------------------------------------------------------------------------------
def _toy(n_spk=4, labels=("angry", "happy", "sad", "neutral", "fear", "bored"), reps=2, corpora=("a", "b")):
    rows = [{"file": f"/x/{c}{s}{lab}{r}.wav", "label": lab, "speaker": str(s), "corpus": c, "arousal": 0.5}
            for c in corpora for s in range(n_spk) for lab in labels for r in range(reps)]
    return pd.DataFrame(rows)


def test_training_table_marks_unlabelled_rows():
    a = _toy(corpora=("emodb",))
    a.loc[[0, 3], "label"] = [None, "  "]  # empty labels: unlabelled rows
    b = _toy(corpora=("mine",)).assign(labelled=False)  # a source marked unlabelled
    t = training_table({"emodb": a, "mine": b})
    assert t["labelled"].dtype == bool
    un = ~t["labelled"].to_numpy()
    assert un.sum() == 2 + len(b)
    assert t.loc[un, "label"].isna().all() and t.loc[un, "label_original"].isna().all()
    assert t.loc[un, "arousal"].isna().all() and t.loc[~un, "arousal"].notna().all()  # ratings are labels too
    assert all(x is None for x in t.loc[un, "label"]) and "None" not in set(t.loc[~un, "label"])
    assert set(t.loc[~un & (t["corpus"] == "emodb"), "label"]) == {"angry", "happy", "sad", "neutral", "fearful",
                                                                    "bored"}
    np.testing.assert_array_equal(labelled_mask(t), ~un)
    # a table's own `labelled` column (bools, or a manifest's text) is the marker too
    marks = pd.DataFrame({"label": ["a", "b", "c", "d", None, "e"], "labelled": [True, "False", "yes", 0, True, None]})
    assert labelled_mask(marks).tolist() == [True, False, True, False, False, False]
    assert not labelled_mask(pd.DataFrame({"file": ["x"]})).any()
    # unlabel: a pure function, rows given become unlabelled, the rest stay
    t2 = unlabel(t, np.arange(len(t)) == 5)
    assert not t2.loc[5, "labelled"] and t2.loc[5, "label"] is None and t.loc[5, "labelled"]
    assert (labelled_mask(t2) == (labelled_mask(t) & (np.arange(len(t)) != 5))).all()


def test_caption_builder_without_a_label_names_no_emotion():
    bins = pd.DataFrame({"pitch": ["high", "low", "normal"], "loudness": ["low", "high", "normal"]})
    b = CaptionBuilder(CaptionConfig(variables=["pitch", "loudness"]))
    for seed in range(20):
        caps = b.captions(bins, [None, "angry", None], rng=seed, gender=["female", None, "m"])
        assert "angry" in _words(caps[1])
        assert not _words(caps[0]) & EMOTION_WORDS and not _words(caps[2]) & EMOTION_WORDS
        assert "pitch" in caps[0] or "loud" in caps[0] or "quiet" in caps[0]
    assert all(not _words(c) & EMOTION_WORDS for c in b.all_captions(bins.iloc[0], None, gender="female"))
    with pytest.raises(ValueError, match="neither a label nor any binned variable"):
        CaptionBuilder(CaptionConfig(variables=[])).captions(pd.DataFrame(index=range(1)), [None], rng=0)


# -- soft targets -----------------------------------------------------------------------------------------
def test_label_targets_of_unlabelled_rows_use_no_label():
    g = torch.Generator().manual_seed(0)
    local = torch.randn(10, 6, generator=g)
    labels = torch.tensor([0, 1, UNLABELLED, 0, 2, UNLABELLED, 1, 2, 0, UNLABELLED])
    unl = labels < 0
    q = label_targets(labels, local, tau=0.2)
    torch.testing.assert_close(q.sum(1), torch.ones(10))
    # an unlabelled row is the tower's row (local-feature similarities over the whole batch)
    torch.testing.assert_close(q[unl], similarity_targets(local, 0.2)[unl])
    # a labelled row: uniform over the labelled clips of its label, nothing on unlabelled clips
    assert float(q[~unl][:, unl].abs().sum()) == 0.0
    torch.testing.assert_close(q[0], torch.tensor([1 / 3, 0, 0, 1 / 3, 0, 0, 0, 0, 1 / 3, 0]))
    # shuffling / flipping the labelled rows' labels never changes an unlabelled row
    for seed in range(5):
        perm = torch.randperm(int((~unl).sum()), generator=torch.Generator().manual_seed(seed))
        other = labels.clone()
        other[~unl] = labels[~unl][perm]
        torch.testing.assert_close(label_targets(other, local, tau=0.2)[unl], q[unl], rtol=0, atol=0)
        flipped = labels.clone()
        flipped[~unl] = (labels[~unl] + 1 + seed) % 3
        torch.testing.assert_close(label_targets(flipped, local, tau=0.2)[unl], q[unl], rtol=0, atol=0)
    # without local features an unlabelled row is one-hot: its pair's hard target, as in CLAP
    hard = label_targets(labels)
    torch.testing.assert_close(hard[unl], torch.eye(10)[unl])
    # through the loss's target builder, with top-k and beta
    t = soft_targets(local, None, beta=0.4, gamma=0.0, tau_a=0.2, topk=3, labels=labels)
    torch.testing.assert_close(t.q_a2a[unl], similarity_targets(local, 0.2, topk=3)[unl])
    # labelled-only batches: the same targets as before (local features are not read)
    full = torch.tensor([0, 1, 0, 2])
    torch.testing.assert_close(label_targets(full, torch.randn(4, 3)), label_targets(full))


def test_target_precision_skips_unlabelled_clips():
    labels = torch.tensor([0, 0, 1, 1, UNLABELLED, UNLABELLED])
    q = torch.full((6, 6), 1 / 6)
    d = target_diagnostics(dataclasses.replace(soft_targets(None, None, 0.0, 0.0, batch_size=6), q=q), labels)
    # pairs of two labelled clips only: 4 labelled clips, 12 ordered off-diagonal pairs, 4 same-label
    assert float(d["q_precision"]) == pytest.approx(4 / 12)
    assert float(d["q_precision_chance"]) == pytest.approx(4 / 12)
    none = target_diagnostics(dataclasses.replace(soft_targets(None, None, 0.0, 0.0, batch_size=2),
                                                  q=torch.eye(2)), torch.tensor([UNLABELLED, UNLABELLED]))
    # undefined without a labelled pair: NaN, which the trainer leaves out of its epoch means
    assert torch.isnan(none["q_precision"]) and torch.isnan(none["q_precision_chance"])


def _data(n=72, k=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.standard_normal((n, k)) + 2.0 * np.eye(3)[y] @ rng.standard_normal((3, k))
    spk = np.array([f"s{i % 6}" for i in range(n)])
    return x, y, spk


def test_posteriors_never_see_their_own_label(monkeypatch):
    x, y, spk = _data()
    labels = y.copy()
    labels[np.arange(len(y)) % 4 == 1] = UNLABELLED  # a quarter unlabelled
    unl = labels < 0
    with monkeypatch.context() as m:
        seen = spy_on_fits(m)
        post, fold = crossfit_posteriors(x, labels, spk, n_folds=3)
    unl_rows = {tuple(r) for r in np.round(x[unl], 8)}
    assert len(seen) == 4  # three speaker folds of the labelled clips + one fit on all of them
    assert all(not s & unl_rows for s in seen)  # no fit ever sees an unlabelled clip
    assert (fold[unl] == -1).all() and set(fold[~unl]) == {0, 1, 2}
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-5)
    assert (post.argmax(1)[unl] == y[unl]).mean() > 0.8  # the labelled clips inform the unlabelled ones
    # a row's posterior does not change when its own label is flipped (it is in no fit that sees it)
    for i in np.flatnonzero(~unl)[:12]:
        flipped = labels.copy()
        flipped[i] = (labels[i] + 1) % 3
        again, fold2 = crossfit_posteriors(x, flipped, spk, n_folds=3)
        np.testing.assert_array_equal(fold2, fold)
        np.testing.assert_allclose(again[i], post[i], rtol=0, atol=1e-7)
        assert not np.allclose(again, post)  # ... while the others' do: the label is used
    # the unlabelled rows' own (hidden) labels play no part: they are -1 whatever they were
    np.testing.assert_array_equal(crossfit_posteriors(x, labels, spk, n_folds=3)[0], post)
    # dimensional: ratings of unlabelled rows are ignored (NaN there is fine)
    dims = np.stack([y * 1.0, -y * 0.5 + 3], 1)
    hidden = dims.copy()
    hidden[unl] = np.nan
    pred, fold_d = crossfit_dimensions(x, hidden, spk, n_folds=3, labelled=~unl)
    assert np.isfinite(pred).all() and (fold_d[unl] == -1).all()
    other = dims.copy()
    other[unl] = 99.0
    np.testing.assert_array_equal(crossfit_dimensions(x, other, spk, n_folds=3, labelled=~unl)[0], pred)
    with pytest.raises(ValueError, match="labelled training clips"):
        crossfit_posteriors(x, np.full(len(y), UNLABELLED), spk)


# -- the study regimes ------------------------------------------------------------------------------------
def test_mask_labels_is_exact_seeded_stratified_and_pure():
    t = training_table({"t": _toy(n_spk=4, reps=2, corpora=("a", "b")).assign(caption=None)})
    t.loc[t.index[::7], "caption"] = "speaker is angry"
    before = t.copy(deep=True)
    m = mask_labels(t, 0.3, seed=1)
    pd.testing.assert_frame_equal(t, before)  # pure
    for c in ("a", "b"):
        rows = m[m["corpus"] == c]
        assert rows["labelled"].sum() == round(0.3 * 48)  # 14.4 -> 14 per corpus
        kept = rows[rows["labelled"]]
        # stratified: every label and every speaker as close to its share as whole rows allow
        assert kept["label"].value_counts().reindex(sorted(set(t["label"]))).fillna(0).between(2, 3).all()
        assert kept["speaker"].value_counts().between(3, 4).all()
    un = ~m["labelled"]
    assert m.loc[un, "label"].isna().all() and m.loc[un, "label_original"].isna().all()
    assert m.loc[un, "caption"].isna().all() and m.loc[un, "arousal"].isna().all()
    kept = m["labelled"]
    assert m.loc[kept, "label"].tolist() == t.loc[kept, "label"].tolist()
    # seeded: same seed same rows, another seed other rows
    assert mask_labels(t, 0.3, seed=1)["labelled"].equals(m["labelled"])
    assert not mask_labels(t, 0.3, seed=2)["labelled"].equals(m["labelled"])
    # the ends, halves rounded up, rows already unlabelled stay so and do not count
    assert mask_labels(t, 1.0)["labelled"].all() and not mask_labels(t, 0.0)["labelled"].any()
    part = unlabel(t, (t["corpus"] == "a").to_numpy() & (np.arange(len(t)) % 2 == 0))
    pm = mask_labels(part, 0.5, seed=0)
    assert pm[pm["corpus"] == "a"]["labelled"].sum() == 12 and pm[pm["corpus"] == "b"]["labelled"].sum() == 24
    assert not (pm["labelled"] & ~part["labelled"]).any()
    # each corpus draws its own stream: adding a corpus changes no other corpus' mask
    only_a = mask_labels(t[t["corpus"] == "a"].reset_index(drop=True), 0.3, seed=1)
    np.testing.assert_array_equal(only_a["labelled"].to_numpy(), m.loc[m["corpus"] == "a", "labelled"].to_numpy())
    # without a speaker column: stratified by label alone
    nospk = mask_labels(t.drop(columns=["speaker"]), 0.5, seed=0)
    assert (nospk[nospk["labelled"]].groupby(["corpus", "label"]).size() == 4).all()
    with pytest.raises(ValueError):
        mask_labels(t, 1.5)


def test_noisy_labels_share_is_exact_and_stays_in_the_corpus():
    a = _toy(n_spk=4, reps=2, corpora=("emodb",))
    b = _toy(n_spk=3, labels=("angry", "sad", "calm"), reps=2, corpora=("ravdess",))
    t = training_table({"emodb": a, "ravdess": b})
    t = unlabel(t, np.arange(len(t)) % 10 == 3)  # some unlabelled rows: never touched
    before = t.copy(deep=True)
    n = noisy_labels(t, 0.25, seed=3)
    pd.testing.assert_frame_equal(t, before)  # pure
    for c in ("emodb", "ravdess"):
        rows = t["corpus"] == c
        lab = rows & t["labelled"]
        changed = (n.loc[lab, "label"] != t.loc[lab, "label"])
        assert int(changed.sum()) == int(np.floor(0.25 * lab.sum() + 0.5))  # exact share of the labelled rows
        assert n.loc[rows, "label_flipped"].sum() == changed.sum()
        assert set(n.loc[lab, "label"]) <= set(t.loc[lab, "label"])  # another class of the same corpus
    un = ~t["labelled"]
    assert n.loc[un, "label"].isna().all() and not n.loc[un, "label_flipped"].any()
    # label_original follows the new class (the corpus' own word)
    emo = n[(n["corpus"] == "emodb") & n["label_flipped"]]
    words = dict(zip(t.loc[t["corpus"] == "emodb", "label"], t.loc[t["corpus"] == "emodb", "label_original"]))
    assert all(words[x] == o for x, o in zip(emo["label"], emo["label_original"]))
    assert noisy_labels(t, 0.25, seed=3).equals(n) and not noisy_labels(t, 0.25, seed=4).equals(n)
    assert not noisy_labels(t, 0.0)["label_flipped"].any()
    # uniform over the other classes: with share 1 every row changes, every other class is reached
    clean = training_table({"x": _toy(n_spk=8, reps=4, corpora=("x",))})
    full = noisy_labels(clean, 1.0, seed=0)
    assert full["label_flipped"].all() and (full["label"] != clean["label"]).all()
    pairs = pd.crosstab(clean["label"], full["label"])
    assert ((pairs > 0).sum(axis=1) == 5).all()  # 6 classes: each goes to all 5 others
    assert pairs.to_numpy()[pairs.to_numpy() > 0].min() >= 2  # 32 rows per class over 5 others, none starved
    with pytest.raises(ValueError, match="one class"):
        noisy_labels(training_table({"o": _toy(labels=("sad",), corpora=("o",))}), 0.5)


def test_settings_labelled_and_emotion_word():
    cfg = load_config(None, ["data.manifest=m.csv", "data.labelled=partial"])
    assert [s.labelled for s in cfg.data.all_sources()] == ["partial"]
    cfg = load_config(None, ["data.sources=[{manifest: a.csv, labelled: false}, {manifest: b.csv}]"])
    assert [s.labelled for s in cfg.data.all_sources()] == [False, True]
    with pytest.raises(ConfigError, match="true, false or partial"):
        load_config(None, ["data.sources=[{manifest: a.csv, labelled: some}]"])
    with pytest.raises(ConfigError, match="true, false or partial"):
        load_config(None, ["data.labelled=2"])
    base = load_config(None)
    off = drop_emotion_words(base)
    assert base.captions.emotion_word and not off.captions.emotion_word


# -- reading sources --------------------------------------------------------------------------------------
def _manifests(synth_root, tmp_path):
    m = pd.read_csv(synth_root / "manifest.csv")
    m["file"] = [str(synth_root / f) for f in m["file"]]
    half = len(m) // 2
    lab, rest = m.iloc[:half].copy(), m.iloc[half:].copy()
    paths = {}
    paths["labelled"] = tmp_path / "labelled.csv"
    lab.to_csv(paths["labelled"], index=False)
    paths["files_only"] = tmp_path / "files_only.csv"  # no label column at all
    rest[["file"]].to_csv(paths["files_only"], index=False)
    paths["with_labels"] = tmp_path / "with_labels.csv"  # labels there, but the source is marked unlabelled
    rest.assign(label="nonsense").to_csv(paths["with_labels"], index=False)
    partial = m.copy()
    partial.loc[partial.index % 3 == 0, "label"] = ""
    paths["partial"] = tmp_path / "partial.csv"
    partial.to_csv(paths["partial"], index=False)
    return m, paths


def test_load_sources_with_unlabelled_sources(synth_root, tmp_path):
    from smoothclap.trainer.data import load_sources

    m, p = _manifests(synth_root, tmp_path)
    labels = sorted(set(m["label"]))
    cfg = load_config(None, [f"data.sources=[{{manifest: {p['labelled']}}}, "
                             f"{{manifest: {p['files_only']}, labelled: false}}]", f"data.labels={labels}"])
    t = load_sources(cfg.data, cfg.data.split)
    assert len(t) == len(m) and t["labelled"].sum() == len(m) // 2
    un = ~t["labelled"]
    assert t.loc[un, "label"].isna().all() and t.loc[~un, "label"].notna().all()
    # a source marked unlabelled: its labels are ignored (not checked against data.labels either)
    cfg = load_config(None, [f"data.sources=[{{manifest: {p['labelled']}}}, "
                             f"{{manifest: {p['with_labels']}, labelled: false}}]", f"data.labels={labels}"])
    t = load_sources(cfg.data, cfg.data.split)
    assert "nonsense" not in set(t["label"].astype(str)) and (~t["labelled"]).sum() == len(m) - len(m) // 2
    assert len(load_sources(cfg.data, cfg.data.split, labelled_only=True)) == len(m) // 2  # model selection
    # empty label cells: bad input by default, unlabelled rows with labelled: partial
    cfg = load_config(None, [f"data.manifest={p['partial']}"])
    with pytest.raises(BadInputError, match="empty label"):
        load_sources(cfg.data, cfg.data.split)
    cfg = load_config(None, [f"data.manifest={p['partial']}", "data.labelled=partial"])
    t = load_sources(cfg.data, cfg.data.split)
    assert (~t["labelled"]).sum() == sum(m.index % 3 == 0) and t.loc[~t["labelled"], "label"].isna().all()
    # a label-less manifest needs to be marked: as a labelled source it is refused
    cfg = load_config(None, [f"data.manifest={p['files_only']}"])
    with pytest.raises(BadInputError, match="label"):
        load_sources(cfg.data, cfg.data.split)


# -- the bundle: captions and targets ---------------------------------------------------------------------
def _cfg(cache, *extra):
    return load_config(None, ["train.epochs=3", "train.batch_size=8", "model.embed_dim=16", f"cache_dir={cache}",
                              *extra])


def _masked(synth_table, fraction=0.3, seed=0):
    t = training_table({"synthetic": synth_table})
    return mask_labels(t, fraction, seed)


def _with_hidden_labels(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``table`` whose unlabelled rows carry (random) label strings again, still marked unlabelled:
    whatever they say must not reach a caption or a target."""
    out = table.copy()
    un = ~out["labelled"].to_numpy()
    rng = np.random.default_rng(seed)
    words = sorted(set(out.loc[~un, "label"]))
    out.loc[un, "label"] = rng.choice(words, size=int(un.sum()))
    out.loc[un, "label_original"] = out.loc[un, "label"]
    out.loc[un, "arousal"] = "high"
    return out


def _all_captions(prep):
    """[N, E] caption strings of every clip in every epoch."""
    return [[prep.caption_texts[ix[i]] for ix in prep.caption_index] for i in range(len(prep.table))]


def test_unlabelled_rows_never_get_a_label_into_a_caption(synth_table, shared_cache):
    pytest.importorskip("opensmile")
    from smoothclap.trainer import prepare

    table = _masked(synth_table)
    un = ~table["labelled"].to_numpy()
    assert un.sum() == len(table) - round(0.3 * len(table))
    labelled_caps = 0
    for pool in ("null", "2"):
        cfg = _cfg(shared_cache, f"captions.pool_size={pool}", "loss.text_target=description+label",
                   "loss.gamma=0.5")
        prep = prepare(cfg, table, cache_dir=shared_cache, progress=False)
        assert (prep.label_ids[un] == UNLABELLED).all() and (prep.label_ids[~un] >= 0).all()
        assert not prep.table.loc[un, "labelled"].any()
        for i, caps in enumerate(_all_captions(prep)):
            for c in caps:
                if un[i]:
                    assert not _words(c) & EMOTION_WORDS, c  # every epoch, every pool variant
                    assert _words(c) & {"pitch", "loud", "quiet", "loudness", "jitter", "shimmer", "short", "long",
                                        "length", "briefly", "time"}, c  # the voice's description instead
                else:
                    labelled_caps += table.loc[i, "label"] in _words(c)
        # descriptions with the label (q_t2t): none for unlabelled rows either
        assert all(not _words(d) & EMOTION_WORDS for d, u in zip(prep.desc_texts, un) if u)
        assert any(_words(d) & EMOTION_WORDS for d, u in zip(prep.desc_texts, un) if not u)
        # whatever label strings the unlabelled rows carry, nothing changes
        hidden = prepare(cfg, _with_hidden_labels(table, 1), cache_dir=shared_cache, progress=False)
        assert hidden.caption_texts == prep.caption_texts and hidden.desc_texts == prep.desc_texts
        for a, b in zip(hidden.caption_index, prep.caption_index):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(hidden.label_ids, prep.label_ids)
    assert labelled_caps > 0
    # captions.emotion_word: false: no caption names the emotion, labelled clips' neither
    off = prepare(drop_emotion_words(_cfg(shared_cache)), table, cache_dir=shared_cache, progress=False)
    assert all(not _words(c) & EMOTION_WORDS for caps in _all_captions(off) for c in caps)
    np.testing.assert_array_equal(off.label_ids[~un] >= 0, True)  # labels still reach the targets


def test_targets_of_unlabelled_rows_ignore_labels(synth_table, shared_cache):
    pytest.importorskip("opensmile")
    from smoothclap.losses import SmoothClapLoss
    from smoothclap.trainer import prepare
    from smoothclap.trainer.bundle import BatchBuilder

    table = _masked(synth_table)
    un = ~table["labelled"].to_numpy()
    # posteriors: hidden labels of unlabelled rows change nothing
    post_cfg = _cfg(shared_cache, "loss.local_source=posteriors", "loss.posterior_folds=2", "loss.gamma=0")
    post = prepare(post_cfg, table, cache_dir=shared_cache, progress=False)
    assert post.local.shape == (len(table), len(post.label_names))
    again = prepare(post_cfg, _with_hidden_labels(table, 2), cache_dir=shared_cache, progress=False)
    np.testing.assert_array_equal(again.local, post.local)
    # a labelled row's posterior does not move when its own label is flipped
    i = int(np.flatnonzero(~un)[0])
    flipped = table.copy()
    flipped.loc[i, "label"] = next(x for x in sorted(set(table.loc[~un, "label"])) if x != table.loc[i, "label"])
    fl = prepare(post_cfg, flipped, cache_dir=shared_cache, progress=False)
    np.testing.assert_allclose(fl.local[i], post.local[i], atol=1e-6)
    # label targets: unlabelled rows' q comes from local features (computed for them) and no label
    lab_cfg = _cfg(shared_cache, "loss.local_source=labels", "loss.gamma=0", "loss.beta=0.5")
    lab = prepare(lab_cfg, table, cache_dir=shared_cache, progress=False)
    assert lab.local is not None  # the audio tower's features, for the unlabelled rows
    loss = SmoothClapLoss(lab_cfg.loss)
    idx = torch.arange(len(table))
    src = BatchBuilder(lab_cfg, lab).sources(idx, 0, "cpu")
    q = loss.targets(src["local_audio"], None, len(idx), "cpu", True, src["labels"]).q_a2a
    shuffled = lab.label_ids.copy()
    rng = np.random.default_rng(0)
    shuffled[~un] = rng.permutation(shuffled[~un])
    src2 = BatchBuilder(lab_cfg, dataclasses.replace(lab, label_ids=shuffled)).sources(idx, 0, "cpu")
    q2 = loss.targets(src2["local_audio"], None, len(idx), "cpu", True, src2["labels"]).q_a2a
    torch.testing.assert_close(q2[torch.from_numpy(un)], q[torch.from_numpy(un)], rtol=0, atol=0)
    assert not torch.equal(q2, q)
    # a fully labelled table needs no local features for label targets (as before)
    full = training_table({"synthetic": synth_table})
    from smoothclap.trainer.bundle import needs_local

    assert not needs_local(lab_cfg, full) and needs_local(lab_cfg, table) and not needs_local(lab_cfg)


def test_unlabelled_rows_without_phrases_need_a_caption(synth_table, shared_cache, tmp_path):
    from smoothclap.trainer import prepare, train

    table = _masked(synth_table, 0.5, seed=1)
    cfg = _cfg(shared_cache, "captions.variables=[]", "train.epochs=1")
    with pytest.raises(BadInputError, match="cannot be captioned.*unlabelled.*captions.variables is empty"):
        prepare(cfg, table, cache_dir=shared_cache, progress=False)
    # captions from labels only, the unlabelled rows with captions of their own (no eGeMAPS needed)
    un = ~table["labelled"].to_numpy()
    table["caption"] = [f"a recording of {s}" if u else None for s, u in zip(table["speaker"], un)]
    prep = prepare(cfg, table, cache_dir=shared_cache, progress=False)
    caps = _all_captions(prep)
    assert all(caps[i][0].startswith("a recording") for i in np.flatnonzero(un))
    assert all(table.loc[i, "label"] in _words(caps[i][0]) for i in np.flatnonzero(~un))
    res = train(cfg, prep, run_dir=tmp_path / "r", progress=False)
    assert np.isfinite(res.history[-1]["loss"])


@pytest.mark.parametrize("source,fraction", [("labels", 0.3), ("posteriors", 0.3), ("labels", 0.0)])
def test_partly_labelled_training_end_to_end(synth_table, shared_cache, tmp_path, source, fraction):
    pytest.importorskip("opensmile")
    from smoothclap.model import SmoothClapModel
    from smoothclap.trainer import prepare, train

    table = _masked(synth_table, fraction, seed=0)
    assert table["labelled"].sum() == round(fraction * len(table))
    cfg = _cfg(shared_cache, "train.epochs=2", f"loss.local_source={source}", "loss.posterior_folds=2")
    prep = prepare(cfg, table, cache_dir=shared_cache, progress=False, need_local=True, need_desc=True)
    res = train(cfg, prep, run_dir=tmp_path / "run", progress=False)
    last = res.history[-1]
    assert all(np.isfinite(v) for v in last.values())
    assert np.isfinite(last["loss"]) and 0.0 <= last["q_precision"] <= 1.0
    if source == "labels" and fraction:
        assert last["q_precision"] == pytest.approx(1.0)  # labelled pairs: same-label mass only
    if not fraction:  # nothing labelled: no batch defines precision
        assert prep.label_names == [] and last["q_precision"] == 0.0
    model = SmoothClapModel.from_pretrained(tmp_path / "run" / "model")
    assert model.config.trained_on == ["synthetic"]
    assert set(res.example_targets.get("labels", [])) <= {*prep.label_names, "(unlabelled)"}
    # CLAP on the same rows with the same captions: the same bundle, beta = 0
    clap_cfg = cfg.updated({"loss.beta": 0.0})
    clap = prepare(clap_cfg, table, cache_dir=shared_cache, progress=False, need_local=True, need_desc=True)
    assert clap.caption_texts == prep.caption_texts
    for a, b in zip(clap.caption_index, prep.caption_index):
        np.testing.assert_array_equal(a, b)
    out = train(clap_cfg, clap, progress=False)
    assert np.isfinite(out.history[-1]["loss"])


def test_unlabelled_webdataset_shards(synth_root, tmp_path):
    """A dataset source: audio-only samples train when the source is marked unlabelled; samples
    without a label field train unlabelled with ``labelled: partial`` and are bad input otherwise."""
    import io
    import json
    import tarfile

    from smoothclap.trainer.data import load_sources

    m = pd.read_csv(synth_root / "manifest.csv").head(6)

    def shard(path, with_meta):
        with tarfile.open(path, "w") as tf:
            for i, r in m.iterrows():
                f = synth_root / r["file"]
                members = [(f"k{i:02d}.wav", f.read_bytes())]
                if with_meta:
                    meta = {"speaker": r["speaker"], **({"label": r["label"]} if i % 2 else {})}
                    members.append((f"k{i:02d}.json", json.dumps(meta).encode()))
                for name, data in members:
                    ti = tarfile.TarInfo(name)
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))

    shard(tmp_path / "bare.tar", with_meta=False)
    shard(tmp_path / "some.tar", with_meta=True)
    cfg = load_config(None, [f"data.dataset={tmp_path / 'bare.tar'}", "data.labelled=false"])
    t = load_sources(cfg.data, cfg.data.split)
    assert len(t) == 6 and not t["labelled"].any() and t["label"].isna().all()
    cfg = load_config(None, [f"data.dataset={tmp_path / 'some.tar'}"])
    with pytest.raises(BadInputError, match="no label"):
        load_sources(cfg.data, cfg.data.split)
    cfg = load_config(None, [f"data.dataset={tmp_path / 'some.tar'}", "data.labelled=partial"])
    t = load_sources(cfg.data, cfg.data.split)
    assert t["labelled"].tolist() == [False, True] * 3
    assert t.loc[t["labelled"], "label"].tolist() == [x for i, x in enumerate(m["label"]) if i % 2]


def test_run_training_with_an_unlabelled_source_and_model_selection(synth_root, shared_cache, tmp_path):
    """``smoothclap train`` on a labelled manifest (train / dev) plus an unlabelled one: the
    unlabelled rows train, model selection scores labelled dev rows only."""
    pytest.importorskip("opensmile")
    from smoothclap.cli import main

    m, p = _manifests(synth_root, tmp_path)
    lab = m.iloc[: len(m) // 2].copy()
    lab["split"] = ["dev" if i % 4 == 0 else "train" for i in range(len(lab))]
    lab.to_csv(p["labelled"], index=False)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data:\n  sources:\n    - {{manifest: {p['labelled']}}}\n"
                   f"    - {{manifest: {p['files_only']}, labelled: false}}\n"
                   "train: {epochs: 1, batch_size: 8, select_split: dev}\nmodel: {embed_dim: 16}\n"
                   f"cache_dir: {shared_cache}\n")
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(cfg), "--out", str(out)]) == 0
    import json

    sel = json.loads((out / "selection.json").read_text())
    assert sel["n"] == int((lab["split"] == "dev").sum())  # the unlabelled rows are not scored
    assert (out / "model").is_dir() and (out / "best_model").is_dir()


def test_checkpoint_fingerprint_follows_the_labels(synth_table, shared_cache):
    """With captions that never name the emotion, labels reach training only through the targets:
    a run must not resume from a checkpoint trained on other labels, or on other unlabelled rows."""
    pytest.importorskip("opensmile")
    from smoothclap.trainer import prepare
    from smoothclap.trainer.checkpoint import fingerprint

    cfg = _cfg(shared_cache, "captions.emotion_word=false")
    t = training_table({"synthetic": synth_table})
    flipped = noisy_labels(t, 0.3, seed=1).drop(columns="label_flipped")
    fps = [fingerprint(cfg, prepare(cfg, x, cache_dir=shared_cache, progress=False))
           for x in (t, t.copy(), flipped, mask_labels(t, 0.5, 0))]
    assert fps[0] == fps[1]  # the same data: resumable
    assert len({fps[0], fps[2], fps[3]}) == 3
