"""Corpus loaders on fixture trees in each corpus' official layout (+ real data when present)."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from smoothclap import corpora
from smoothclap.corpora import read_manifest
from smoothclap.errors import BadInputError, SkipLog

SR = 16000
_RNG = np.random.default_rng(0)
_NOISE = (0.1 * _RNG.standard_normal(int(0.3 * SR))).astype(np.float32)


def wav(path: Path, seconds: float = 0.3) -> Path:
    """A tiny noise clip; the format follows the extension (.wav PCM16 or .flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = _NOISE if seconds == 0.3 else (0.1 * _RNG.standard_normal(int(seconds * SR))).astype(np.float32)
    sf.write(str(path), x, SR, subtype="PCM_16")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def counts(series) -> dict:
    return dict(series.value_counts())


def load_skipping(name: str, root, **opts) -> tuple[pd.DataFrame, SkipLog]:
    """``corpora.load`` skipping bad input into a SkipLog of our own: (table, what it left out)."""
    sk = SkipLog(skip=True)
    return corpora.load(name, root, skips=sk, **opts), sk


def unlabelled(caplog) -> int:
    """The number of unlabelled audio files the challenge loaders log (0 when none is logged)."""
    found = [re.search(r"(\d+) audio file\(s\) have no label", r.getMessage()) for r in caplog.records]
    return sum(int(m.group(1)) for m in found if m)


STANDARD = ["file", "label", "speaker", "gender", "split", "language", "corpus"]


def check_standard(df, corpus, language):
    assert list(df.columns[:8]) == STANDARD + ["duration"]
    assert (df["corpus"] == corpus).all() and (df["language"] == language).all()
    assert all(os.path.isabs(f) and os.path.isfile(f) for f in df["file"])
    assert df["file"].is_monotonic_increasing
    assert np.allclose(df["duration"], 0.3, atol=1e-3)
    assert not df.attrs  # what reading left out goes to the caller's SkipLog, not into the table


# --------------------------------------------------------------------------- registry


def test_registry_names_and_case():
    names = corpora.available()
    for n in ["emodb", "ravdess", "tess", "crema-d", "iemocap", "msp-podcast", "aibo", "alc", "sld", "savee", "manifest"]:
        assert n in names
    assert corpora.get_loader("EmoDB") is corpora.get_loader("emodb")
    assert corpora.get_loader("CREMA-D") is corpora.get_loader("crema_d") is corpora.get_loader("cremad")
    assert corpora.get_loader("MSP-Podcast") is corpora.get_loader("msp_podcast")
    with pytest.raises(ValueError, match="unknown corpus"):
        corpora.load("nope", ".")


CORPUS_NAMES = ["emodb", "ravdess", "tess", "crema-d", "iemocap", "msp-podcast", "aibo", "alc", "sld", "savee"]


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_missing_root(name, tmp_path):
    root = tmp_path / "does-not-exist"
    with pytest.raises(BadInputError, match="does not exist") as ei:
        corpora.load(name, root)
    assert ei.value.path == str(root)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_root_without_layout(name, tmp_path):
    wav(tmp_path / "somewhere" / "x.wav")
    with pytest.raises(BadInputError, match="not found") as ei:
        corpora.load(name, tmp_path)
    assert ei.value.path == str(tmp_path.resolve())


# --------------------------------------------------------------------------- EmoDB


def make_emodb(root: Path) -> Path:
    for name in ["03a01Wa.wav", "03a01Fa.wav", "08a02Lb.wav", "08b01Ec.flac", "16a05Tb.wav", "11b10Nc.wav", "13a04Ad.wav"]:
        wav(root / "wav" / name)
    write(root / "erklaerung.txt", "Sprecher ...\n")
    return root


def test_emodb(tmp_path):
    root = make_emodb(tmp_path / "emodb")
    df = corpora.load("emodb", root)
    check_standard(df, "emodb", "de")
    assert len(df) == 7
    row = df.set_index(df["file"].map(lambda f: Path(f).name))
    assert row.loc["03a01Wa.wav", "label"] == "anger" and row.loc["03a01Wa.wav", "gender"] == "male"
    assert row.loc["08b01Ec.flac", "label"] == "disgust" and row.loc["08b01Ec.flac", "gender"] == "female"
    assert counts(df["label"]) == {l: 1 for l in ["anger", "happiness", "boredom", "disgust", "sadness", "neutral", "fear"]}
    assert set(df["speaker"]) == {"03", "08", "16", "11", "13"}
    assert df["split"].isna().all()
    assert row.loc["08a02Lb.wav", "text"] == "a02" and row.loc["08a02Lb.wav", "emotion_code"] == "L"
    # one level down, no durations
    df2 = corpora.load("emodb", tmp_path, with_duration=False)
    assert len(df2) == 7 and "duration" not in df2.columns


def test_emodb_bad_names(tmp_path):
    root = make_emodb(tmp_path)
    wav(root / "wav" / "03a01Xa.wav")  # unknown emotion letter
    wav(root / "wav" / "99a01Wa.wav")  # unknown speaker
    wav(root / "wav" / "notes.wav")  # malformed
    (root / "wav" / "readme.txt").write_text("not audio, ignored")
    with pytest.raises(BadInputError) as ei:
        corpora.load("emodb", root)
    assert ei.value.path.endswith(".wav")
    df, sk = load_skipping("emodb", root)
    assert len(df) == 7
    assert sk.count == 3
    assert {Path(p).name for p, _ in sk.items} == {"03a01Xa.wav", "99a01Wa.wav", "notes.wav"}


def test_emodb_empty_wav_folder_and_duplicate(tmp_path):
    (tmp_path / "wav").mkdir()
    with pytest.raises(BadInputError, match="no .wav or .flac"):
        corpora.load("emodb", tmp_path)
    wav(tmp_path / "wav" / "03a01Wa.wav")
    wav(tmp_path / "wav" / "03a01Wa.flac")
    with pytest.raises(BadInputError, match="duplicate"):
        corpora.load("emodb", tmp_path)
    df = corpora.load("emodb", tmp_path, skip_bad=True)
    assert len(df) == 1 and df["file"][0].endswith(".wav")


def test_unreadable_audio_header(tmp_path):
    make_emodb(tmp_path)
    (tmp_path / "wav" / "03a02Wa.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(BadInputError, match="unreadable"):
        corpora.load("emodb", tmp_path)
    df, sk = load_skipping("emodb", tmp_path)
    assert len(df) == 7 and sk.count == 1
    assert len(corpora.load("emodb", tmp_path, with_duration=False)) == 8  # header not read


# --------------------------------------------------------------------------- RAVDESS


def make_ravdess(root: Path) -> Path:
    speech = root / "Audio_Speech_Actors_01-24"
    for emo in ["01", "02", "08"]:
        wav(speech / "Actor_01" / f"03-01-{emo}-01-01-01-01.wav")
    wav(speech / "Actor_01" / "03-01-05-02-02-02-01.flac")
    wav(speech / "Actor_02" / "03-01-07-01-01-01-02.flac")
    wav(speech / "Actor_02" / "03-01-04-02-01-02-02.flac")
    song = root / "Audio_Song_Actors_01-24"
    wav(song / "Actor_01" / "03-02-03-01-01-01-01.wav")
    return root


def test_ravdess(tmp_path):
    root = make_ravdess(tmp_path / "ravdess")
    df = corpora.load("ravdess", root)
    check_standard(df, "ravdess", "en")
    assert len(df) == 6  # the song file is left out
    assert counts(df["label"]) == {"neutral": 1, "calm": 1, "surprised": 1, "angry": 1, "disgust": 1, "sad": 1}
    assert counts(df["speaker"]) == {"01": 4, "02": 2}
    assert dict(zip(df["speaker"], df["gender"])) == {"01": "male", "02": "female"}
    angry = df[df["label"] == "angry"].iloc[0]
    assert angry["intensity"] == "strong" and angry["statement"] == "dogs are sitting by the door"
    assert angry["repetition"] == 2 and angry["emotion_code"] == "05" and angry["file"].endswith(".flac")
    songs = corpora.load("ravdess", root, include_song=True, with_duration=False)
    assert len(songs) == 7 and counts(songs["vocal_channel"]) == {"speech": 6, "song": 1}


def test_ravdess_bad_names(tmp_path):
    root = make_ravdess(tmp_path)
    actor = root / "Audio_Speech_Actors_01-24" / "Actor_02"
    wav(actor / "03-01-09-01-01-01-02.wav")  # emotion 09
    wav(actor / "03-01-01-01-01-01-05.wav")  # actor field != folder
    wav(actor / "03-01-01-01.wav")  # too few fields
    with pytest.raises(BadInputError):
        corpora.load("ravdess", root)
    df, sk = load_skipping("ravdess", root)
    assert len(df) == 6 and sk.count == 3
    reasons = " | ".join(r for _, r in sk.items)
    assert "unknown emotion code" in reasons and "does not match folder" in reasons and "malformed" in reasons


# --------------------------------------------------------------------------- TESS


def make_tess(root: Path) -> Path:
    top = root / "TESS Toronto emotional speech set data"
    for spk, folder, emo in [
        ("OAF", "OAF_angry", "angry"),
        ("OAF", "OAF_Fear", "fear"),
        ("OAF", "OAF_Pleasant_surprise", "ps"),
        ("OAF", "OAF_neutral", "neutral"),
        ("YAF", "YAF_pleasant_surprised", "ps"),
        ("YAF", "YAF_sad", "sad"),
        ("YAF", "yaf_disgust", "disgust"),
        ("YAF", "YAF_happy", "happy"),
    ]:
        for word in ["back", "bar"]:
            wav(top / folder / f"{spk}_{word}_{emo}.flac")
    wav(top / "OAF_neutral" / "OA_bite_neutral.wav")  # the release's typo
    return root


def test_tess(tmp_path):
    root = make_tess(tmp_path / "tess")
    df = corpora.load("tess", root)
    check_standard(df, "tess", "en")
    assert len(df) == 17
    assert counts(df["label"]) == {
        "angry": 2, "fear": 2, "pleasant surprise": 4, "neutral": 3, "sad": 2, "disgust": 2, "happy": 2
    }
    assert counts(df["speaker"]) == {"OAF": 9, "YAF": 8}
    assert (df["gender"] == "female").all()
    typo = df[df["file"].str.endswith("OA_bite_neutral.wav")].iloc[0]
    assert typo["speaker"] == "OAF" and typo["label"] == "neutral" and typo["word"] == "bite"
    assert set(df.loc[df["label"] == "pleasant surprise", "emotion_code"]) == {"ps"}
    df2 = corpora.load("tess", root, label_map={"ps": "surprised"}, with_duration=False)
    assert counts(df2["label"])["surprised"] == 4


def test_tess_bad(tmp_path):
    root = make_tess(tmp_path)
    top = root / "TESS Toronto emotional speech set data"
    wav(top / "OAF_angry" / "OAF_bean_sad.wav")  # emotion disagrees with folder
    wav(top / "OAF_angry" / "YAF_bean_angry.wav")  # speaker disagrees with folder
    wav(top / "OAF_angry" / "OAFbeanangry.wav")  # malformed
    with pytest.raises(BadInputError):
        corpora.load("tess", root)
    df, sk = load_skipping("tess", root)
    assert len(df) == 17 and sk.count == 3
    # two copies side by side one level down: refuse to double count
    two = tmp_path / "two"
    wav(two / "copy1" / "OAF_angry" / "OAF_back_angry.wav")
    wav(two / "copy2" / "OAF_angry" / "OAF_back_angry.wav")
    with pytest.raises(BadInputError, match="second folder"):
        corpora.load("tess", two)
    # root-level folders win over copies one level down
    wav(two / "OAF_angry" / "OAF_bar_angry.wav")
    assert len(corpora.load("tess", two, with_duration=False)) == 1


# --------------------------------------------------------------------------- CREMA-D


def make_cremad(root: Path, demographics: bool = True) -> Path:
    for name in ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_TIE_SAD_LO.flac", "1002_IWW_NEU_XX.wav",
                 "1091_WSI_FEA_MD.wav", "1091_TSI_DIS_XX.wav"]:
        wav(root / "AudioWAV" / name)
    if demographics:
        write(root / "VideoDemographics.csv",
              "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
              "1002,21,Female,Caucasian,Not Hispanic\n1091,29,Female,Asian,Not Hispanic\n")
    return root


def test_cremad(tmp_path):
    root = make_cremad(tmp_path / "CREMA-D")
    df = corpora.load("crema-d", root)
    check_standard(df, "crema-d", "en")
    assert len(df) == 6
    assert counts(df["label"]) == {l: 1 for l in ["angry", "happy", "sad", "neutral", "fear", "disgust"]}
    assert dict(zip(df["speaker"], df["gender"])) == {"1001": "male", "1002": "female", "1091": "female"}
    assert set(df["emotion_code"]) == {"ANG", "HAP", "SAD", "NEU", "FEA", "DIS"}
    assert df.loc[df["emotion_code"] == "HAP", "level"].item() == "high"
    nodemo = corpora.load("crema-d", make_cremad(tmp_path / "c2", demographics=False), with_duration=False)
    assert nodemo["gender"].isna().all() and len(nodemo) == 6


def test_cremad_bad(tmp_path):
    root = make_cremad(tmp_path)
    wav(root / "AudioWAV" / "1001_DFA_XYZ_XX.wav")
    wav(root / "AudioWAV" / "1001-DFA-ANG-XX.wav")
    with pytest.raises(BadInputError, match="unknown emotion code|malformed"):
        corpora.load("crema-d", root)
    assert load_skipping("crema-d", root)[1].count == 2
    write(root / "VideoDemographics.csv", "ActorID,Age\n1001,51\n")
    with pytest.raises(BadInputError, match="missing column.*Sex") as ei:
        corpora.load("crema-d", root, skip_bad=True)
    assert ei.value.path.endswith("VideoDemographics.csv")


# --------------------------------------------------------------------------- IEMOCAP

_EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _eval_block(start, end, utt, code, vad):
    v, a, d = vad
    return (
        f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n"
        f"C-E1:\tNeutral;\t()\nC-E2:\tNeutral;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n\n"
    )


def make_iemocap(root: Path) -> Path:
    rel = root / "IEMOCAP_full_release"
    spec = {
        "Session1": {
            "Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "fru"), ("Ses01F_impro01_M001", "exc")],
            "Ses01M_script01_1": [("Ses01M_script01_1_F000", "hap"), ("Ses01M_script01_1_M002", "ang")],
        },
        "Session2": {
            "Ses02F_impro02": [("Ses02F_impro02_F000", "sad"), ("Ses02F_impro02_M000", "xxx"), ("Ses02F_impro02_F001", "neu")],
        },
    }
    for ses, dialogs in spec.items():
        for dialog, utts in dialogs.items():
            text = _EVAL_HEADER
            for k, (utt, code) in enumerate(utts):
                text += _eval_block(6.2901 + k, 8.2357 + k, utt, code, (2.5 + k, 3.0, 3.5))
                ext = ".flac" if utt.endswith("F001") else ".wav"
                wav(rel / ses / "sentences" / "wav" / dialog / f"{utt}{ext}")
            write(rel / ses / "dialog" / "EmoEvaluation" / f"{dialog}.txt", text)
        (rel / ses / "dialog" / "EmoEvaluation" / "Categorical").mkdir(exist_ok=True)
    return root


def test_iemocap(tmp_path):
    root = make_iemocap(tmp_path)
    df = corpora.load("iemocap", root)
    check_standard(df, "iemocap", "en")
    assert len(df) == 6  # fru and xxx dropped
    assert counts(df["label"]) == {"happy": 2, "neutral": 2, "angry": 1, "sad": 1}
    assert counts(df["split"]) == {"Session1": 4, "Session2": 2}
    r = df.set_index("utterance")
    assert r.loc["Ses01F_impro01_M001", "speaker"] == "Ses01_M" and r.loc["Ses01F_impro01_M001", "gender"] == "male"
    assert r.loc["Ses01F_impro01_M001", "label"] == "happy" and r.loc["Ses01F_impro01_M001", "emotion_code"] == "exc"
    assert r.loc["Ses01M_script01_1_F000", "speaker"] == "Ses01_F" and r.loc["Ses01M_script01_1_F000", "gender"] == "female"
    assert r.loc["Ses01M_script01_1_F000", "dialog"] == "Ses01M_script01_1"
    assert r.loc["Ses01F_impro01_F000", ["valence", "arousal", "dominance"]].tolist() == [2.5, 3.0, 3.5]
    assert r.loc["Ses02F_impro02_F001", "file"].endswith(".flac")
    full = corpora.load("iemocap", root, classes="all", with_duration=False)
    assert len(full) == 8
    assert counts(full["label"])["excited"] == 1 and counts(full["label"])["frustrated"] == 1
    assert counts(full["label"])["no agreement"] == 1
    with pytest.raises(ValueError):
        corpora.load("iemocap", root, classes=3)


def test_iemocap_bad(tmp_path):
    root = make_iemocap(tmp_path)
    rel = root / "IEMOCAP_full_release"
    (rel / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav").unlink()
    with open(rel / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt", "a") as fh:
        fh.write("[1.0 - 2.0]\tSes02F_impro02_F009\tneu\n")  # no VAD bracket
    with pytest.raises(BadInputError) as ei:
        corpora.load("iemocap", root)
    assert "not found" in ei.value.reason or "malformed line" in ei.value.reason
    df, sk = load_skipping("iemocap", root)
    assert len(df) == 5 and sk.count == 2
    assert set(sk.by_reason()) == {"audio file not found", "malformed evaluation line"}
    import shutil

    shutil.rmtree(rel / "Session2" / "dialog")
    with pytest.raises(BadInputError, match="EmoEvaluation") as ei:
        corpora.load("iemocap", root)
    assert "Session2" in ei.value.path


# --------------------------------------------------------------------------- MSP-Podcast

_MSP_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n"


def make_msp(root: Path) -> Path:
    rows = [
        ("MSP-PODCAST_0001_0008.wav", "N", 4.2, 4.0, 4.4, "127", "Female", "Train"),
        ("MSP-PODCAST_0001_0019.wav", "A", 5.6, 2.2, 5.0, "127", "Female", "Train"),
        ("MSP-PODCAST_0002_0033.wav", "H", 4.0, 5.8, 4.0, "Unknown", "Unknown", "Development"),
        ("MSP-PODCAST_0003_0001.wav", "X", 4.0, 4.0, 4.0, "15", "Male", "Test1"),
        ("MSP-PODCAST_0004_0002.wav", "S", 2.8, 2.4, 3.1, "16", "Male", "Test2"),
        ("MSP-PODCAST_0004_0003.wav", "C", 3.8, 3.0, 4.5, "16", "Male", "Test1"),
    ]
    text = _MSP_HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows)
    write(root / "Labels" / "labels_consensus.csv", text)
    for r in rows:
        wav(root / "Audios" / r[0])
    return root


def test_msp_podcast(tmp_path):
    root = make_msp(tmp_path)
    df = corpora.load("msp-podcast", root)
    check_standard(df, "msp-podcast", "en")
    assert len(df) == 5  # X excluded
    assert counts(df["label"]) == {"neutral": 1, "angry": 1, "happy": 1, "sad": 1, "contempt": 1}
    assert counts(df["split"]) == {"train": 2, "development": 1, "test2": 1, "test1": 1}
    happy = df[df["label"] == "happy"].iloc[0]
    assert happy["speaker"] is None and happy["gender"] is None
    assert happy[["arousal", "valence", "dominance"]].tolist() == [4.0, 5.8, 4.0]
    assert set(df.loc[df["speaker"] == "16", "gender"]) == {"male"}
    keep = corpora.load("msp-podcast", root, keep_no_agreement=True, with_duration=False)
    assert len(keep) == 6 and counts(keep["label"])["no agreement"] == 1


def test_msp_podcast_bad(tmp_path):
    root = make_msp(tmp_path)
    with open(root / "Labels" / "labels_consensus.csv", "a") as fh:
        fh.write("MSP-PODCAST_0009_0001.wav,Q,1,1,1,3,Male,Train\n")  # unknown class
        fh.write("MSP-PODCAST_0009_0002.wav,N,1,1,1,3,Male,Train\n")  # no audio
    with pytest.raises(BadInputError, match="unknown EmoClass"):
        corpora.load("msp-podcast", root)
    df, sk = load_skipping("msp-podcast", root)
    assert len(df) == 5 and sk.by_reason() == {"unknown EmoClass": 1, "audio file not found": 1}
    # older releases spell it "concensus"
    (root / "Labels" / "labels_consensus.csv").rename(root / "Labels" / "labels_concensus.csv")
    assert len(corpora.load("msp-podcast", root, skip_bad=True, with_duration=False)) == 5
    (root / "Labels" / "labels_concensus.csv").unlink()
    with pytest.raises(BadInputError, match="label file not found") as ei:
        corpora.load("msp-podcast", root)
    assert ei.value.path.endswith("labels_consensus.csv")
    write(root / "Labels" / "labels_consensus.csv", "FileName,EmoClass\nx.wav,N\n")
    with pytest.raises(BadInputError, match="missing column"):
        corpora.load("msp-podcast", root)


# --------------------------------------------------------------------------- FAU Aibo


def make_aibo(root: Path) -> Path:
    chunks = [
        ("Ohm_01_001_00", "NEG", "A"),
        ("Ohm_01_002_01", "IDL", "N"),
        ("Ohm_02_010_00", "NEG", "E"),
        ("Mont_01_000_00", "IDL", "P"),
        ("Mont_03_044_02", "IDL", "R"),
        ("Mont_03_045_00", "NEG", "A"),
    ]
    lab = root / "labels" / "IS2009EmotionChallenge"
    write(lab / "chunk_labels_2cl_corpus.txt", "".join(f"{c} {l2} 1.000000\n" for c, l2, _ in chunks))
    write(lab / "chunk_labels_5cl_corpus.txt", "".join(f"{c} {l5} 0.{6 + k}00000\n" for k, (c, _, l5) in enumerate(chunks)))
    for k, (c, _, _) in enumerate(chunks):
        wav(root / "wav" / f"{c}{'.flac' if k == 4 else '.wav'}")
    return root


def test_aibo(tmp_path):
    root = make_aibo(tmp_path / "AIBO")
    df = corpora.load("aibo", root)
    check_standard(df, "aibo", "de")
    assert len(df) == 6
    assert counts(df["label"]) == {"neg": 3, "idl": 3}
    assert counts(df["split"]) == {"train": 3, "test": 3}
    assert counts(df["speaker"]) == {"Ohm_01": 2, "Ohm_02": 1, "Mont_01": 1, "Mont_03": 2}
    assert df["gender"].isna().all()
    assert counts(df["school"]) == {"Ohm": 3, "Mont": 3}
    five = corpora.load("aibo", tmp_path, classes=5, with_duration=False)  # one level down
    assert counts(five["label"]) == {"angry": 2, "neutral": 1, "emphatic": 1, "motherese": 1, "rest": 1}
    assert five.set_index("file").loc[str(root.resolve() / "wav" / "Ohm_01_002_01.wav"), "confidence"] == pytest.approx(0.7)
    with pytest.raises(ValueError):
        corpora.load("aibo", root, classes=3)


def test_aibo_bad(tmp_path):
    root = make_aibo(tmp_path)
    lab = root / "labels" / "IS2009EmotionChallenge" / "chunk_labels_2cl_corpus.txt"
    with open(lab, "a") as fh:
        fh.write("Ohm_05_001_00 XYZ 1.0\n")  # unknown class
        fh.write("Ohm_05_001_01 NEG\tnot-a-number\n")  # malformed confidence
        fh.write("Ohm_05_001_02 NEG 1.0\n")  # audio missing
        fh.write("Kid_05_001_03 NEG 1.0\n")  # not Ohm/Mont
    with pytest.raises(BadInputError, match="unknown class code"):
        corpora.load("aibo", root)
    df, sk = load_skipping("aibo", root)
    assert len(df) == 6 and sk.count == 4
    (root / "labels" / "IS2009EmotionChallenge" / "chunk_labels_5cl_corpus.txt").unlink()
    with pytest.raises(BadInputError, match="5-class label file not found") as ei:
        corpora.load("aibo", root, classes=5)
    assert ei.value.path.endswith(os.path.join("labels", "IS2009EmotionChallenge", "chunk_labels_5cl_corpus.txt"))


# --------------------------------------------------------------------------- ALC


def make_alc(root: Path) -> Path:
    rows = [("train", "ALC_train_0001", "AL"), ("train", "ALC_train_0002", "NAL"), ("dev", "ALC_dev_0001", "NAL"),
            ("test", "ALC_test_0001", "AL"), ("test", "ALC_test_0002", "NAL")]
    for part, fid, _ in rows:
        wav(root / "wav" / part / f"{fid}.wav")
    write(root / "labels" / "alc_labels.csv",
          "file,partition,class,speaker\n" + "".join(f"{fid}.wav,{part},{c},spk{k % 2}\n" for k, (part, fid, c) in enumerate(rows)))
    return root


def test_alc_csv(tmp_path):
    root = make_alc(tmp_path)
    df = corpora.load("alc", root)
    check_standard(df, "alc", "de")
    assert len(df) == 5
    assert counts(df["label"]) == {"nal": 3, "al": 2}
    assert counts(df["split"]) == {"train": 2, "test": 2, "dev": 1}
    assert counts(df["speaker"]) == {"spk0": 3, "spk1": 2}
    assert set(df["class_code"]) == {"AL", "NAL"}
    df2 = corpora.load("alc", root, label_map={"AL": "intoxicated", "NAL": "sober"}, with_duration=False)
    assert set(df2["label"]) == {"intoxicated", "sober"}


def test_alc_flat_arff_and_tsv(tmp_path, caplog):
    for fid in ["train_0001", "train_0002", "devel_0001", "test_0001"]:
        wav(tmp_path / "wav" / f"{fid}.flac")
    arff = ("@relation ALC\n\n@attribute name string\n@attribute pcm_loudness numeric\n"
            "@attribute class {AL,NAL}\n\n@data\n\n"
            "'train_0001',0.5,AL\n'train_0002',0.4,NAL\n'devel_0001',0.1,AL\n'test_0001',0.3,?\n")
    write(tmp_path / "ALC.arff", arff)
    caplog.set_level(logging.INFO, logger="smoothclap.corpora")
    df = corpora.load("alc", tmp_path)
    assert len(df) == 3 and counts(df["split"]) == {"train": 2, "dev": 1}
    assert "pcm_loudness" not in df.columns and unlabelled(caplog) == 1  # test_0001: "?"
    (tmp_path / "ALC.arff").unlink()
    caplog.clear()
    tsv = write(tmp_path / "elsewhere" / "alc.tsv", "file_name\tlabel\ntrain_0001\tAL\ntrain_0002\tnal\n")
    df = corpora.load("alc", tmp_path, labels=tsv, with_duration=False)
    assert counts(df["label"]) == {"al": 1, "nal": 1} and unlabelled(caplog) == 2


def test_alc_bad(tmp_path):
    root = make_alc(tmp_path)
    with open(root / "labels" / "alc_labels.csv", "a") as fh:
        fh.write("ALC_train_0009.wav,train,DRUNK,spk0\n")
        fh.write("ALC_train_0010.wav,train,AL,spk0\n")  # no audio
    with pytest.raises(BadInputError, match="unknown class"):
        corpora.load("alc", root)
    df, sk = load_skipping("alc", root)
    assert len(df) == 5 and sk.count == 2
    (root / "labels" / "alc_labels.csv").unlink()
    with pytest.raises(BadInputError, match="no alc label table"):
        corpora.load("alc", root)
    bad = write(tmp_path / "x.csv", "file,whatever\na,b\n")
    with pytest.raises(BadInputError, match="missing column"):
        corpora.load("alc", root, labels=bad)


# --------------------------------------------------------------------------- SLD


def make_sld(root: Path) -> Path:
    rows = [("train_0001", "L", 0.7), ("train_0002", "NL", -0.3), ("devel_0001", "L", 0.2),
            ("test_0001", "NL", -0.5), ("test_0002", "L", 0.9)]
    for fid, _, _ in rows:
        wav(root / "wav" / f"{fid}.wav")
    write(root / "lab" / "sld_labels.csv",
          "file;likability;score\n" + "".join(f"{fid}.wav;{c};{s}\n" for fid, c, s in rows))
    return root


def test_sld(tmp_path):
    root = make_sld(tmp_path)
    df = corpora.load("sld", root)
    check_standard(df, "sld", "de")
    assert len(df) == 5
    assert counts(df["label"]) == {"l": 3, "nl": 2}
    assert counts(df["split"]) == {"train": 2, "test": 2, "dev": 1}
    assert df["speaker"].isna().all()
    assert "score" in df.columns


def test_sld_bad(tmp_path, caplog):
    root = make_sld(tmp_path)
    wav(root / "wav" / "train_0003.wav")  # no label row: left out, counted
    with open(root / "lab" / "sld_labels.csv", "a") as fh:
        fh.write("train_0004.wav;maybe;0\n")
    with pytest.raises(BadInputError, match="unknown class"):
        corpora.load("sld", root)
    caplog.set_level(logging.INFO, logger="smoothclap.corpora")
    caplog.clear()
    df, sk = load_skipping("sld", root)
    assert len(df) == 5 and sk.count == 1 and unlabelled(caplog) == 1  # train_0003: no label row
    (root / "lab" / "sld_labels.csv").unlink()
    with pytest.raises(BadInputError, match="no sld label table"):
        corpora.load("sld", root)


# --------------------------------------------------------------------------- SAVEE


def test_savee_official(tmp_path):
    ad = tmp_path / "SAVEE" / "AudioData"
    for spk in ["DC", "JE", "JK", "KL"]:
        for code in ["a01", "sa02", "su15", "n30"]:
            wav(ad / spk / f"{code}.wav")
    wav(ad / "KL" / "h03.flac")
    df = corpora.load("savee", tmp_path / "SAVEE")
    check_standard(df, "savee", "en")
    assert len(df) == 17
    assert counts(df["label"]) == {"anger": 4, "sadness": 4, "surprise": 4, "neutral": 4, "happiness": 1}
    assert counts(df["speaker"]) == {"KL": 5, "DC": 4, "JE": 4, "JK": 4}
    assert (df["gender"] == "male").all()
    wav(ad / "DC" / "x01.wav")
    with pytest.raises(BadInputError, match="malformed SAVEE"):
        corpora.load("savee", tmp_path / "SAVEE")
    assert load_skipping("savee", tmp_path / "SAVEE")[1].count == 1


def test_savee_flat(tmp_path):
    for name in ["DC_a01", "JE_d02", "JK_f03", "KL_sa04", "KL_su05"]:
        wav(tmp_path / "ALL" / f"{name}.wav")
    df = corpora.load("savee", tmp_path)
    assert len(df) == 5
    assert counts(df["label"]) == {l: 1 for l in ["anger", "disgust", "fear", "sadness", "surprise"]}
    assert counts(df["speaker"]) == {"KL": 2, "DC": 1, "JE": 1, "JK": 1}
    wav(tmp_path / "ALL" / "XX_a01.wav")
    with pytest.raises(BadInputError):
        corpora.load("savee", tmp_path)


# --------------------------------------------------------------------------- manifest


def test_manifest_csv(tmp_path):
    wav(tmp_path / "audio" / "a.wav")
    wav(tmp_path / "audio" / "b.flac")
    wav(tmp_path / "audio" / "c.wav", seconds=1.0)
    m = write(tmp_path / "meta" / "train.csv",
              "path,label,speaker,gender,split,start,end,extra\n"
              "../audio/a.wav,Angry,007,F,train,,,x\n"
              f"{tmp_path / 'audio' / 'b.flac'},sad,8,male,dev,,,y\n"
              "../audio/c.wav,neutral,007,,test,0.25,0.75,z\n")
    df = read_manifest(m)
    assert list(df.columns[:8]) == STANDARD + ["duration"]
    assert len(df) == 3
    assert df["label"].tolist() == ["angry", "sad", "neutral"]
    assert df["speaker"].tolist() == ["007", "8", "007"]  # speaker ids stay strings
    assert df["gender"].tolist() == ["female", "male", None]
    assert df["split"].tolist() == ["train", "dev", "test"]
    assert df["file"].tolist() == [str((tmp_path / "audio" / n).resolve()) for n in ["a.wav", "b.flac", "c.wav"]]
    assert df["duration"].tolist() == pytest.approx([0.3, 0.3, 0.5])
    assert df["corpus"].unique().tolist() == ["train"] and df["extra"].tolist() == ["x", "y", "z"]
    assert df["start"].isna().tolist() == [True, True, False]
    # the registry entry, with a base folder for relative paths
    m2 = write(tmp_path / "m2.tsv", "file\tlabel\naudio/a.wav\thappy\n")
    df2 = corpora.load("manifest", m2, with_duration=False, language="en")
    assert df2["file"][0] == str((tmp_path / "audio" / "a.wav").resolve()) and df2["language"][0] == "en"
    m3 = write(tmp_path / "elsewhere" / "m3.csv", "file;label\na.wav;happy\n")
    assert len(read_manifest(m3, root=tmp_path / "audio")) == 1


def test_manifest_jsonl_caption(tmp_path):
    wav(tmp_path / "a.wav")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"file": "a.wav", "caption": "a woman speaks loudly", "speaker": 3}) + "\n\n"
                 + json.dumps({"file": "a.wav", "caption": "again", "language": "de"}) + "\n")
    df = read_manifest(m)
    assert df["caption"].tolist() == ["a woman speaks loudly", "again"]
    assert df["label"].isna().all() and df["speaker"].tolist() == ["3", None]
    assert df["language"].tolist() == [None, "de"]
    with pytest.raises(BadInputError, match="missing column.*label"):
        read_manifest(m, required=("file", "label"))


def test_manifest_errors(tmp_path):
    wav(tmp_path / "a.wav")
    with pytest.raises(BadInputError, match="manifest file not found"):
        read_manifest(tmp_path / "none.csv")
    m = write(tmp_path / "m.csv", "audio,label\na.wav,happy\n")
    with pytest.raises(BadInputError, match=r"missing column\(s\): file") as ei:
        read_manifest(m)
    assert ei.value.path == str(m.resolve())
    m = write(tmp_path / "m.csv", "file,speaker\na.wav,1\n")
    with pytest.raises(BadInputError, match="missing column.*label"):
        read_manifest(m)
    m = write(tmp_path / "m.csv", "file,path,label\na.wav,a.wav,x\n")
    with pytest.raises(BadInputError, match="both"):
        read_manifest(m)
    m = write(tmp_path / "m.csv", "file,label,start,end\na.wav,happy,,\na.wav,joy,,\nmissing.wav,sad,,\n"
                                  "a.wav,,,\na.wav,sad,0.5,0.2\n")
    with pytest.raises(BadInputError, match="unknown label.*joy"):
        read_manifest(m, label_set={"happy", "sad"})
    with pytest.raises(BadInputError, match="audio file not found") as ei:
        read_manifest(m)
    assert ei.value.path.endswith("missing.wav")
    sk = SkipLog(skip=True)
    df = read_manifest(m, label_set=["Happy", "SAD"], skips=sk)
    assert len(df) == 1
    assert sk.by_reason() == {
        "unknown label": 1, "audio file not found": 1, "empty label": 1, "bad segment": 1
    }
    assert len(read_manifest(m, check_files=False, with_duration=False, skip_bad=True)) == 3
    # as a Table: every manifest row is kept (numbered in manifest_row) or has its reason
    t = corpora.manifest_table(m, label_set=["Happy", "SAD"], skip_bad=True)
    assert t.source == str(m.resolve()) and t.n_rows == 5 and t.skipped.count == 4
    assert t.rows["manifest_row"].tolist() == [1] and sorted(t.row_errors) == [2, 3, 4, 5]
    assert "unknown label" in t.row_errors[2] and t.row_errors[3].startswith(str(tmp_path / "missing.wav"))
    assert t.manifest_rows().tolist() == [1] and t.with_rows(t.rows.iloc[:0]).manifest_rows() is None


# --------------------------------------------------------------------------- real data


def _data_dir() -> Path | None:
    env = os.environ.get("SMOOTHCLAP_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return d.resolve() if d.is_dir() else None  # the loaders resolve links (../shared may be one)


DATA = _data_dir()


def _real(name: str) -> Path:
    if DATA is None or not (DATA / name).is_dir():
        pytest.skip(f"real corpus {name} not available (set SMOOTHCLAP_DATA or provide ../shared/data)")
    return DATA / name


def _compare_source_manifest(df: pd.DataFrame, name: str):
    src = DATA / f"{name}_source_manifest.tsv"
    if not src.is_file():
        return
    ref = pd.read_csv(src, sep="\t", dtype=str)
    ref["key"] = ref["path"].str.rsplit(".", n=1).str[0]
    ours = df.assign(key=df["file"].map(lambda f: Path(f).relative_to(DATA).with_suffix("").as_posix()))
    merged = ours.merge(ref, on="key", how="outer", suffixes=("", "_ref"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", "key"].tolist()[:5]
    assert (merged["label"] == merged["label_ref"].str.replace("_", " ")).all()
    assert (merged["speaker"] == merged["speaker_ref"]).all()
    assert np.allclose(merged["duration"], merged["duration_s"].astype(float), atol=0.01)


@pytest.mark.realdata
def test_real_emodb():
    df = corpora.load("emodb", _real("emodb"))
    assert len(df) == 535 and df["speaker"].nunique() == 10
    assert counts(df["label"]) == {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71,
                                   "sadness": 62, "neutral": 79}
    assert counts(df["gender"]) == {"female": 302, "male": 233}
    _compare_source_manifest(df, "emodb")


@pytest.mark.realdata
def test_real_ravdess():
    df = corpora.load("ravdess", _real("ravdess"))
    assert len(df) == 1440 and df["speaker"].nunique() == 24
    assert set(counts(df["speaker"]).values()) == {60}
    lab = counts(df["label"])
    assert len(lab) == 8 and lab.pop("neutral") == 96 and set(lab.values()) == {192}
    assert counts(df["gender"]) == {"male": 720, "female": 720}
    _compare_source_manifest(df, "ravdess")


@pytest.mark.realdata
def test_real_tess():
    df = corpora.load("tess", _real("tess"))
    assert len(df) == 2800
    assert set(counts(df["label"]).values()) == {400} and len(counts(df["label"])) == 7
    assert counts(df["speaker"]) == {"OAF": 1400, "YAF": 1400}
    _compare_source_manifest(df, "tess")
