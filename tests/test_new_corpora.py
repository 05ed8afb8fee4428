"""EMOVO (Italian) and TurEV-DB (Turkish) loaders and tasks: fixture trees in the official layouts,
bad names, registry / task rows, and the real corpora when ``../shared/data`` holds them."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from smoothclap import corpora
from smoothclap.errors import BadInputError, SkipLog
from smoothclap.tasks import TASKS, get_task, load_task_table

SR = 16000
SECONDS = 0.5
_SINE = (0.1 * np.sin(2 * np.pi * 200 * np.arange(int(SECONDS * SR)) / SR)).astype(np.float32)
STANDARD = ["file", "label", "speaker", "gender", "split", "language", "corpus", "duration"]


def audio(path: Path) -> Path:
    """0.5 s of a 200 Hz sine at 16 kHz; the format follows the extension (.wav or .flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _SINE, SR, subtype="PCM_16")
    return path


def task_rows(table) -> pd.DataFrame:
    """The rows of what ``load_task_table`` returns (a DataFrame, or a Table with ``.rows``)."""
    return getattr(table, "rows", table)


def by_name(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index(df["file"].map(lambda f: Path(f).name))


def check_standard(df: pd.DataFrame, corpus: str, language: str, n: int):
    assert list(df.columns[:8]) == STANDARD
    assert len(df) == n
    assert (df["corpus"] == corpus).all() and (df["language"] == language).all()
    assert all(os.path.isabs(f) and os.path.isfile(f) for f in df["file"])
    assert df["file"].is_monotonic_increasing
    assert np.allclose(df["duration"], SECONDS, atol=1e-3)
    assert df["split"].isna().all()


# --------------------------------------------------------------------------- EMOVO

EMOVO_FILES = {  # actor folder/file name -> (label, speaker, gender, sentence, code)
    "f1/dis-f1-b1.wav": ("disgust", "f1", "female", "b1", "dis"),
    "f1/gio-f1-d2.flac": ("joy", "f1", "female", "d2", "gio"),
    "f1/neu-f1-n5.wav": ("neutral", "f1", "female", "n5", "neu"),
    "f2/pau-f2-l4.flac": ("fear", "f2", "female", "l4", "pau"),
    "m1/rab-m1-b2.wav": ("anger", "m1", "male", "b2", "rab"),
    "m3/sor-m3-n1.flac": ("surprise", "m3", "male", "n1", "sor"),
    "m3/tri-m3-l1.wav": ("sadness", "m3", "male", "l1", "tri"),
}


def make_emovo(corpus_dir: Path) -> Path:
    """``corpus_dir/EMOVO/<actor>/<emo>-<spk>-<sentence>.{wav,flac}`` (+ a documents folder)."""
    for rel in EMOVO_FILES:
        audio(corpus_dir / "EMOVO" / rel)
    (corpus_dir / "EMOVO" / "documents").mkdir(parents=True)
    (corpus_dir / "EMOVO" / "documents" / "readme.txt").write_text("not audio")
    (corpus_dir / "EMOVO" / "f1" / "notes.txt").write_text("not audio, ignored")
    return corpus_dir


@pytest.mark.parametrize("level", ["corpus folder", "one level above"])
def test_emovo(tmp_path, level):
    top = make_emovo(tmp_path / "emovo")
    root = top / "EMOVO" if level == "corpus folder" else top
    df = corpora.load("emovo", root)
    check_standard(df, "emovo", "it", 7)
    assert list(df.columns[8:]) == ["sentence", "emotion_code"]
    rows = by_name(df)
    for rel, (label, spk, gender, sentence, code) in EMOVO_FILES.items():
        r = rows.loc[Path(rel).name]
        assert (r["label"], r["speaker"], r["gender"], r["sentence"], r["emotion_code"]) == (
            label, spk, gender, sentence, code), rel
        assert Path(r["file"]).parent.name == spk
    assert set(df["label"]) == {"disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness"}
    df2 = corpora.load("EMOVO", root, with_duration=False)
    assert "duration" not in df2.columns and df2["file"].tolist() == df["file"].tolist()


def test_emovo_label_map(tmp_path):
    df = corpora.load("emovo", make_emovo(tmp_path), label_map={"gio": "happiness"}, with_duration=False)
    assert by_name(df).loc["gio-f1-d2.flac", "label"] == "happiness"
    assert "joy" not in set(df["label"])


@pytest.mark.parametrize(
    "rel,reason",
    [
        ("f1/xyz-f1-b1.wav", "unknown emotion code"),
        ("f1/dis_f1_b3.wav", "malformed EMOVO file name"),
        ("f1/dis-f1.wav", "malformed EMOVO file name"),
        ("f1/dis-f1-z9.flac", "unknown sentence"),
        ("f1/dis-f1-n6.wav", "unknown sentence"),
        ("f1/dis-x1-b1.flac", "unknown speaker"),
        ("f1/dis-m1-b3.wav", "speaker does not match folder"),
        ("f1/dis-f1-b1.flac", "duplicate recording"),  # beside dis-f1-b1.wav: the .wav wins
    ],
)
def test_emovo_bad_names(tmp_path, rel, reason):
    root = make_emovo(tmp_path)
    bad = audio(root / "EMOVO" / rel)
    with pytest.raises(BadInputError, match=reason) as ei:
        corpora.load("emovo", root)
    assert Path(ei.value.path).resolve() == bad.resolve()
    skips = SkipLog(skip=True)
    df = corpora.load("emovo", root, skips=skips)
    assert len(df) == 7 and skips.count == 1
    assert Path(skips.items[0][0]).name == bad.name and skips.items[0][1].startswith(reason)
    assert str(bad.resolve()) not in set(df["file"])
    if reason == "duplicate recording":
        assert by_name(df).loc["dis-f1-b1.wav", "label"] == "disgust"
    # skip_bad=True without a SkipLog skips as well
    assert len(corpora.load("emovo", root, skip_bad=True, with_duration=False)) == 7


def test_emovo_empty_and_duplicate_folder(tmp_path):
    (tmp_path / "EMOVO" / "f1").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no .wav or .flac"):
        corpora.load("emovo", tmp_path)
    root = make_emovo(tmp_path / "two")
    try:
        (root / "EMOVO" / "F1").mkdir()
    except FileExistsError:
        pytest.skip("case-insensitive file system")
    with pytest.raises(BadInputError, match="second folder for speaker f1"):
        corpora.load("emovo", root)


# --------------------------------------------------------------------------- TurEV-DB

TUREV_FILES = {  # emotion folder/file name -> (label, speaker, word, code)
    "Angry/1157_kz_acik.wav": ("angry", "1157", "acik", "kz"),
    "Angry/1234_kz_algi.flac": ("angry", "1234", "algi", "kz"),
    "Calm/1358_sk_beste.wav": ("calm", "1358", "beste", "sk"),
    "Happy/1984_mt_bugu.flac": ("happy", "1984", "bugu", "mt"),
    "Sad/6783_hl_cay.wav": ("sad", "6783", "cay", "hl"),
    "Sad/7895_hl_ogul1.flac": ("sad", "7895", "ogul1", "hl"),  # the release's word with a digit
}


def make_turevdb(corpus_dir: Path) -> Path:
    """``corpus_dir/Sound Source/<Emotion>/<speaker>_<code>_<word>.{wav,flac}``."""
    for rel in TUREV_FILES:
        audio(corpus_dir / "Sound Source" / rel)
    (corpus_dir / "README.md").write_text("TurEV-DB\n")
    return corpus_dir


@pytest.mark.parametrize("level", ["Sound Source", "one level above"])
def test_turevdb(tmp_path, level):
    top = make_turevdb(tmp_path / "TurEV-DB")
    root = top / "Sound Source" if level == "Sound Source" else top
    df = corpora.load("turevdb", root)
    check_standard(df, "turevdb", "tr", 6)
    assert list(df.columns[8:]) == ["word", "emotion_code"]
    rows = by_name(df)
    for rel, (label, spk, word, code) in TUREV_FILES.items():
        r = rows.loc[Path(rel).name]
        assert (r["label"], r["speaker"], r["word"], r["emotion_code"]) == (label, spk, word, code), rel
        assert Path(r["file"]).parent.name == Path(rel).parent.name
    assert df["gender"].isna().all()  # the release gives no genders
    assert " " in Path(df["file"][0]).parent.parent.name  # the folder with the space
    assert dict(df["label"].value_counts()) == {"angry": 2, "sad": 2, "calm": 1, "happy": 1}


def test_turevdb_lowercase_folders(tmp_path):
    for rel in ["angry/1157_kz_acik.wav", "SAD/1157_hl_acik.flac"]:
        audio(tmp_path / "sound source" / rel)
    df = corpora.load("tur-ev-db", tmp_path, with_duration=False)
    assert sorted(df["label"]) == ["angry", "sad"] and set(df["speaker"]) == {"1157"}


@pytest.mark.parametrize(
    "rel,reason",
    [
        ("Calm/1157_kz_deve.wav", "emotion code disagrees with folder"),
        ("Happy/1234_hl_deve.flac", "emotion code disagrees with folder"),
        ("Angry/1157_xx_deve.wav", "unknown emotion code"),
        ("Angry/kz_deve.wav", "malformed TurEV-DB file name"),
        ("Angry/1157-kz-deve.wav", "malformed TurEV-DB file name"),
        ("Angry/1157_kz_.flac", "malformed TurEV-DB file name"),
        ("Angry/9999_kz_deve.wav", "unknown speaker"),
        ("Angry/1157_kz_acik.flac", "duplicate recording"),  # beside 1157_kz_acik.wav
    ],
)
def test_turevdb_bad_names(tmp_path, rel, reason):
    root = make_turevdb(tmp_path / "turevdb")
    bad = audio(root / "Sound Source" / rel)
    with pytest.raises(BadInputError, match=reason) as ei:
        corpora.load("turevdb", root)
    assert Path(ei.value.path).resolve() == bad.resolve()
    skips = SkipLog(skip=True)
    df = corpora.load("turevdb", root, skips=skips)
    assert len(df) == 6 and skips.count == 1
    assert Path(skips.items[0][0]).resolve() == bad.resolve() and skips.items[0][1].startswith(reason)
    assert str(bad.resolve()) not in set(df["file"])


def test_turevdb_other_and_second_folders(tmp_path):
    root = make_turevdb(tmp_path)
    audio(root / "Sound Source" / "Surprised" / "1157_sr_acik.wav")  # not an emotion folder: ignored
    assert len(corpora.load("turevdb", root, with_duration=False)) == 6
    if (root / "Sound Source" / "angry").exists():
        pytest.skip("case-insensitive file system")
    audio(root / "Sound Source" / "angry" / "1234_kz_beste.wav")
    with pytest.raises(BadInputError, match="second folder for angry"):
        corpora.load("turevdb", root)


# --------------------------------------------------------------------------- both: roots, registry, tasks


@pytest.mark.parametrize("name", ["emovo", "turevdb"])
def test_missing_root(name, tmp_path):
    root = tmp_path / "does-not-exist"
    with pytest.raises(BadInputError, match="does not exist") as ei:
        corpora.load(name, root)
    assert ei.value.path == str(root)


@pytest.mark.parametrize("name", ["emovo", "turevdb"])
def test_root_without_layout(name, tmp_path):
    audio(tmp_path / "somewhere" / "x.wav")
    with pytest.raises(BadInputError, match="not found") as ei:
        corpora.load(name, tmp_path)
    assert ei.value.path == str(tmp_path.resolve())


def test_registry_rows():
    assert {"emovo", "turevdb"} <= set(corpora.available())
    assert corpora.canonical("TurEV-DB") == "turevdb"
    assert corpora.canonical("turev") == corpora.canonical("tur_ev_db") == "turevdb"
    assert corpora.canonical("EMOVO") == "emovo"
    assert corpora.get_info("emovo").language == "it" and corpora.get_info("TurEV-DB").language == "tr"
    assert corpora.get_loader("Tur-EV-DB") is corpora.get_loader("turevdb")
    cw = corpora.caption_words("emovo")
    assert cw == {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "joy": "happy", "sadness": "sad",
                  "surprise": "surprised"}
    # every EMOVO / TurEV-DB label maps into the vocabulary the other corpora use
    vocab = {w for n in ("emodb", "savee", "ravdess") for w in corpora.caption_words(n).values()} | \
        set(TASKS["ravdess"].labels)
    for name in ("emovo", "turevdb"):
        words = corpora.caption_words(name)
        assert {words.get(lab, lab) for lab in TASKS[name].labels} <= vocab, name


def test_find_root(tmp_path):
    data = tmp_path / "data"
    make_emovo(data / "EMOVO-dir-unrelated")  # not a corpus name: never picked
    make_emovo(data / "emovo")
    make_turevdb(data / "TurEV-DB")
    assert corpora.find_root("emovo", data) == data / "emovo"
    assert corpora.find_root("TurEV-DB", data) == data / "TurEV-DB"
    # a data root holding the release's 'Sound Source' folder directly
    other = make_turevdb(tmp_path / "other")
    assert corpora.find_root("turevdb", other) == other / "Sound Source"
    assert len(corpora.load("turevdb", corpora.find_root("turevdb", other), with_duration=False)) == 6
    with pytest.raises(FileNotFoundError, match="turevdb"):
        corpora.find_root("turevdb", data / "emovo")


def test_tasks_rows_and_prompts(tmp_path):
    emovo, turev = get_task("emovo"), get_task("TurEV-DB")
    assert emovo is TASKS["emovo"] and turev is TASKS["turevdb"]
    assert emovo.corpus == "emovo" and len(emovo.labels) == 7 and emovo.language == "it"
    assert turev.corpus == "turevdb" and turev.labels == ("angry", "calm", "happy", "sad") and turev.language == "tr"
    assert emovo.split is None and turev.split is None and emovo.fold_by is None and turev.fold_by is None
    assert emovo.prompt_texts() == {"disgust": "disgust", "joy": "happiness", "neutral": "neutral", "fear": "fear",
                                    "anger": "anger", "surprise": "surprise", "sadness": "sadness"}
    assert turev.prompt_texts() == {"angry": "angry", "calm": "calm", "happy": "happy", "sad": "sad"}
    it = emovo.prompt_texts("it")
    assert it == {"disgust": "disgusto", "joy": "gioia", "neutral": "neutro", "fear": "paura", "anger": "rabbia",
                  "surprise": "sorpresa", "sadness": "tristezza"}
    assert emovo.prompt_texts("task") == it and emovo.prompt_languages == ("en", "it")
    tr = turev.prompt_texts("tr")
    assert tr == {"angry": "kızgın", "calm": "sakin", "happy": "mutlu", "sad": "hüzünlü"}
    assert turev.prompt_texts("task") == tr and turev.resolve_language("task") == "tr"
    for t in (emovo, turev):
        assert set(t.prompts_by_language[t.language]) == set(t.labels)
    with pytest.raises(BadInputError, match="no prompts in language 'tr'"):
        emovo.prompt_map("tr")
    with pytest.raises(BadInputError, match="no prompts in language 'it'"):
        turev.prompt_map("it")
    # the task tables on fixture trees under one data root
    data = tmp_path / "data"
    make_emovo(data / "emovo")
    make_turevdb(data / "turevdb")
    t1 = task_rows(load_task_table(emovo, data))
    assert len(t1) == 7 and set(t1["label"]) == set(emovo.labels)
    t2 = task_rows(load_task_table(turev, data))
    assert len(t2) == 6 and set(t2["label"]) == set(turev.labels)


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
    """Same files (matched by folder and stem: the EMOVO listing has an extra ``data/`` folder),
    labels, speakers and durations as the release's reference listing."""
    src = DATA / f"{name}_source_manifest.tsv"
    if not src.is_file():
        return
    ref = pd.read_csv(src, sep="\t", dtype=str)
    ref["key"] = ref["path"].map(lambda p: f"{Path(p).parent.name}/{Path(p).stem}")
    ours = df.assign(key=df["file"].map(lambda f: f"{Path(f).parent.name}/{Path(f).stem}"))
    assert ours["key"].is_unique and ref["key"].is_unique
    merged = ours.merge(ref, on="key", how="outer", suffixes=("", "_ref"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", "key"].tolist()[:5]
    assert (merged["label"] == merged["label_ref"]).all()
    assert (merged["speaker"] == merged["speaker_ref"]).all()
    assert np.allclose(merged["duration"], merged["duration_s"].astype(float), atol=0.01)


@pytest.mark.realdata
def test_real_emovo():
    root = _real("emovo")
    skips = SkipLog()
    df = corpora.load("emovo", root, skips=skips)
    assert skips.count == 0
    assert len(df) == 588 and df["speaker"].nunique() == 6
    assert dict(df["label"].value_counts()) == {lab: 84 for lab in
                                                ("disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness")}
    assert dict(df["speaker"].value_counts()) == {s: 98 for s in ("f1", "f2", "f3", "m1", "m2", "m3")}
    assert dict(df["gender"].value_counts()) == {"female": 294, "male": 294}
    assert df["sentence"].nunique() == 14 and set(df.groupby("sentence").size()) == {42}
    assert all(os.path.isfile(f) for f in df["file"])
    assert df["file"].is_unique and df["file"].is_monotonic_increasing
    _compare_source_manifest(df, "emovo")
    assert corpora.find_root("emovo", DATA) == root
    table = task_rows(load_task_table(get_task("emovo"), DATA))
    assert len(table) == 588 and set(table["label"]) == set(TASKS["emovo"].labels)


@pytest.mark.realdata
def test_real_turevdb():
    root = _real("turevdb")
    skips = SkipLog()
    df = corpora.load("turevdb", root, skips=skips)
    assert skips.count == 0
    assert len(df) == 1735 and df["speaker"].nunique() == 6
    assert dict(df["label"].value_counts()) == {"angry": 487, "sad": 483, "calm": 408, "happy": 357}
    assert dict(df["speaker"].value_counts()) == {"1234": 328, "1358": 328, "1984": 328, "6783": 328,
                                                  "7895": 273, "1157": 150}
    assert set(df.loc[df["speaker"] == "1157", "label"]) == {"angry", "sad"}  # as released
    assert df["gender"].isna().all()
    assert (df["emotion_code"].map({"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}) == df["label"]).all()
    assert all(os.path.isfile(f) for f in df["file"])
    assert df["file"].is_unique and df["file"].is_monotonic_increasing
    _compare_source_manifest(df, "turevdb")
    assert corpora.find_root("TurEV-DB", DATA) == root
    table = task_rows(load_task_table(get_task("turevdb"), DATA))
    assert len(table) == 1735 and set(table["label"]) == set(TASKS["turevdb"].labels)
