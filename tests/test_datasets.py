"""Hugging Face datasets and WebDataset shards as inputs: the same clips through a manifest, a
save_to_disk folder, Parquet files and tar shards give identical tables, embeddings (one cache entry
per content, whatever the container) and training results. Also: brace patterns, damaged items (an
error naming shard and member, or a counted skip), the Hub-id path through datasets' cache offline."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

datasets = pytest.importorskip("datasets")

from smoothclap import corpora, sources  # noqa: E402
from smoothclap.audio import content_prefixes, file_hash, header_seconds, read_audio  # noqa: E402
from smoothclap.corpora.datasets import expand_braces  # noqa: E402
from smoothclap.errors import BadInputError, SkipLog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N = 12
COLS = ["label", "speaker", "gender", "split", "language", "corpus", "duration", "arousal", "manifest_row"]


def _rows(root: Path) -> list[dict]:
    """12 short voiced-sounding clips (WAV and FLAC, 16 and 22.05 kHz) with labels, speakers, ..."""
    from tiny_models import LABELS, clip

    rows = []
    for i in range(N):
        label = LABELS[i % 4]
        sr = 16000 if i % 3 else 22050
        wave = clip(label, 0.7 + 0.05 * i, seed=100 + i)
        if sr != 16000:
            import soxr

            wave = soxr.resample(wave, 16000, sr).astype(np.float32)
        f = root / "clips" / f"c{i:02d}.{'flac' if i % 2 else 'wav'}"
        f.parent.mkdir(parents=True, exist_ok=True)
        sf.write(f, wave, sr, subtype="PCM_16")
        rows.append({"file": str(f), "label": label.capitalize() if i == 5 else label, "speaker": f"s{i % 3}",
                     "gender": "f" if i % 2 else "m", "split": "train" if i < 9 else "test", "corpus": "tiny",
                     "arousal": round(0.1 * i, 2)})
    return rows


def _hf_dataset(rows: list[dict]):
    # the Audio column is cast from stored bytes (encoding through datasets would need torchcodec)
    blob = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    feats = datasets.Features({"audio": blob, "label": datasets.Value("string"),
                               "speaker": datasets.Value("string"), "gender": datasets.Value("string"),
                               "split": datasets.Value("string"), "corpus": datasets.Value("string"),
                               "arousal": datasets.Value("float64")})
    data = {k: [r[k] for r in rows] for k in feats if k != "audio"}
    data["audio"] = [{"bytes": Path(r["file"]).read_bytes(), "path": Path(r["file"]).name} for r in rows]
    return datasets.Dataset.from_dict(data, features=feats).cast_column("audio", datasets.Audio())


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def _sample(r: dict, cls: bool = False) -> list[tuple[str, bytes]]:
    f = Path(r["file"])
    meta = {k: v for k, v in r.items() if k != "file" and not (cls and k == "label")}
    out = [(f"{f.stem}{f.suffix}", f.read_bytes()), (f"{f.stem}.json", json.dumps(meta).encode())]
    return out + ([(f"{f.stem}.cls", r["label"].encode())] if cls else [])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    rows = _rows(root)
    man = pd.DataFrame(rows)
    man["file"] = [os.path.relpath(f, root) for f in man["file"]]
    man.to_csv(root / "tiny.csv", index=False)
    ds = _hf_dataset(rows)
    ds.save_to_disk(str(root / "hf"))
    (root / "pq").mkdir()
    for k in range(2):  # two Parquet files, read through a glob
        ds.select(range(6 * k, 6 * k + 6)).to_parquet(str(root / "pq" / f"part-{k}.parquet"))
    # two shards: the first gives labels in the JSON, the second in <key>.cls
    _tar(root / "tiny-000.tar", [m for r in rows[:6] for m in _sample(r)])
    _tar(root / "tiny-001.tar", [m for r in rows[6:] for m in _sample(r, cls=True)])
    specs = {"manifest": str(root / "tiny.csv"), "disk": str(root / "hf"), "parquet": str(root / "pq" / "*.parquet"),
             "wds": str(root / "tiny-{000..001}.tar")}
    hf_cache = root / "hf_cache"
    tables = {"manifest": corpora.manifest_table(specs["manifest"])}
    for k in ("disk", "parquet", "wds"):
        tables[k] = corpora.dataset_table(specs[k], cache_dir=str(hf_cache))
    return {"root": root, "rows": rows, "specs": specs, "tables": tables, "hf_cache": hf_cache}


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from tiny_models import tiny_bert, tiny_wav2vec2

    root = tmp_path_factory.mktemp("towers")
    return f"hf:{tiny_wav2vec2(root / 'w2v')}?pool=mean", f"hf:{tiny_bert(root / 'bert')}?pool=cls"


def test_tables_are_identical(data):
    """Same rows, labels (lower-cased), speakers, genders, splits, durations and extra columns; the
    files are references into the containers, and reading them gives the same samples and hashes."""
    t = data["tables"]
    ref = t["manifest"].rows
    assert len(ref) == N and ref["label"].iloc[5] == "happy"
    for kind in ("disk", "parquet", "wds"):
        got = t[kind].rows
        assert list(got.columns) == list(ref.columns), kind
        pd.testing.assert_frame_equal(got[COLS], ref[COLS], check_dtype=False, obj=kind)
        assert t[kind].n_rows == N and not t[kind].skipped.count
        prefix = "wds://" if kind == "wds" else "hf://"
        assert all(f.startswith(prefix) for f in got["file"]), got["file"].iloc[0]
        for a, b in zip(ref["file"], got["file"]):
            assert file_hash(a) == file_hash(b)
            assert header_seconds(a) == header_seconds(b)
            np.testing.assert_array_equal(read_audio(a), read_audio(b))
        np.testing.assert_array_equal(content_prefixes(ref["file"])[0], content_prefixes(got["file"])[0])
    assert t["wds"].rows["file"].iloc[0] == sources.wds_ref(data["root"] / "tiny-000.tar", "c00.wav")
    assert t["disk"].rows["file"].iloc[3] == sources.hf_ref(data["root"] / "hf" / "data-00000-of-00001.arrow", 3)


def test_dataset_dict_splits_and_columns(data, tmp_path):
    """A DatasetDict: every split (its name in ``split``) or one by option; other column names."""
    ds = _hf_dataset(data["rows"]).remove_columns(["split"]).rename_column("label", "emotion")
    dd = datasets.DatasetDict({"train": ds.select(range(9)), "test": ds.select(range(9, N))})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(BadInputError, match="no label"):
        corpora.dataset_table(tmp_path / "dd")
    t = corpora.dataset_table(tmp_path / "dd", columns={"label": "emotion"}).rows
    ref = data["tables"]["manifest"].rows
    pd.testing.assert_frame_equal(t[COLS[:-1]], ref[COLS[:-1]], check_dtype=False)
    only = corpora.dataset_table(tmp_path / "dd", split="test", columns={"label": "emotion"}).rows
    assert len(only) == 3 and set(only["split"]) == {"test"}
    with pytest.raises(BadInputError, match=r"no split 'dev' \(splits: train, test\)"):
        corpora.dataset_table(tmp_path / "dd", split="dev")


def test_embeddings_bit_identical_one_cache_entry(data, towers, tmp_path, monkeypatch):
    """Without a cache: bit-identical embeddings from every input. With one: the manifest's run fills
    it and the containers' runs are all hits (the tower does not run)."""
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    tower = build_tower(towers[0])
    files = {k: t.rows["file"].tolist() for k, t in data["tables"].items()}
    plain = {k: embed_audio_files(tower, f, cache_dir=None, progress=False) for k, f in files.items()}
    for k, (emb, ok) in plain.items():
        assert ok.all(), k
        np.testing.assert_array_equal(emb, plain["manifest"][0], err_msg=k)
    cache = tmp_path / "cache"
    first, _ = embed_audio_files(tower, files["manifest"], cache_dir=cache, progress=False)
    np.testing.assert_array_equal(first, plain["manifest"][0])

    def boom(*a, **k):
        raise AssertionError("the tower ran although the same audio is cached")

    monkeypatch.setattr(type(tower), "forward_waves", boom)
    monkeypatch.setattr(type(tower), "embed", boom)
    for k in ("disk", "parquet", "wds"):
        emb, ok = embed_audio_files(tower, files[k], cache_dir=cache, progress=False)
        assert ok.all()
        np.testing.assert_array_equal(emb, first, err_msg=k)


def test_egemaps_from_containers(data, tmp_path, monkeypatch):
    """openSMILE on the decoded waveform (worker processes resolve the references too); its cache is
    keyed by content, so the containers hit the manifest's entries."""
    pytest.importorskip("opensmile")
    from smoothclap import egemaps

    files = {k: t.rows["file"].tolist() for k, t in data["tables"].items()}
    fresh = egemaps.extract_egemaps(files["wds"], cache_dir=None, num_workers=2, progress=False)
    ref = egemaps.extract_egemaps(files["manifest"], cache_dir=tmp_path, num_workers=1, progress=False)
    np.testing.assert_array_equal(fresh.to_numpy(), ref.to_numpy())
    assert list(fresh.index) == files["wds"]

    def boom(*a, **k):
        raise AssertionError("openSMILE ran although the same audio is cached")

    monkeypatch.setattr(egemaps, "_extract_one", boom)
    for k in ("disk", "parquet"):
        np.testing.assert_array_equal(egemaps.extract_egemaps(files[k], cache_dir=tmp_path, progress=False)
                                      .to_numpy(), ref.to_numpy())


def test_training_identical(data, towers, tmp_path):
    """A cached training run of 2 epochs on each input (data.manifest / data.dataset): the same loss
    history and the same weights."""
    import torch

    from smoothclap.config import load_config
    from smoothclap.trainer import prepare, train
    from smoothclap.trainer.data import load_sources

    try:
        import opensmile  # noqa: F401
        variables = "[pitch, loudness]"
    except ImportError:
        variables = "[]"
    base = [f"towers.audio={towers[0]}", f"towers.text={towers[1]}", f"captions.variables={variables}",
            "model.embed_dim=16", "train.epochs=2", "train.batch_size=4", "train.num_workers=0",
            f"cache_dir={tmp_path / 'cache'}", "loss.preset=smoothclap-reconstructed"]
    data_of = {"manifest": {"data.manifest": data["specs"]["manifest"]},
               "disk": {"data.dataset": data["specs"]["disk"]},
               "wds": {"data.dataset": data["specs"]["wds"], "data.dataset_format": "webdataset"},
               "parquet": {"data.sources": [{"dataset": data["specs"]["parquet"], "format": "hf",
                                             "options": {"cache_dir": str(data["hf_cache"])}}]}}
    runs = {}
    for kind, values in data_of.items():
        cfg = load_config(None, base, values)
        table = load_sources(cfg.data, cfg.data.split)
        assert len(table) == 9
        prep = prepare(cfg, table, cache_dir=cfg.cache_dir, progress=False)
        runs[kind] = train(cfg, prep, run_dir=None, progress=False)
    ref = runs["manifest"]
    assert len(ref.history) == 2
    for kind, res in runs.items():
        assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history], kind
        for (k, x), (_, y) in zip(ref.model.state_dict().items(), res.model.state_dict().items()):
            assert torch.equal(x, y), (kind, k)


def test_crops_for_end_to_end_training(data):
    """End-to-end training's CropDataset reads references like files (also in a forked worker)."""
    import torch

    from smoothclap.trainer.steps import CropDataset, _collate

    a = CropDataset(data["tables"]["manifest"].rows["file"], 16000, 0.5, seed=3)
    b = CropDataset(data["tables"]["wds"].rows["file"], 16000, 0.5, seed=3)
    loader = torch.utils.data.DataLoader(b, batch_size=4, num_workers=1, collate_fn=_collate,
                                         sampler=[(1, i) for i in range(N)])
    got = [item for batch in loader for item in batch]
    for i, w in got:
        np.testing.assert_array_equal(w, a[(1, i)][1])


def test_brace_patterns(data):
    assert expand_braces("s-{000..003}.tar") == [f"s-{i:03d}.tar" for i in range(4)]
    assert expand_braces("{train,test}-{8..10}.tar") == ["train-8.tar", "train-9.tar", "train-10.tar",
                                                          "test-8.tar", "test-9.tar", "test-10.tar"]
    assert expand_braces("a-{08..10}") == ["a-08", "a-09", "a-10"]
    assert expand_braces("plain.tar") == ["plain.tar"] and expand_braces("{x}.tar") == ["{x}.tar"]
    root = data["root"]
    one = corpora.dataset_table(str(root / "tiny-{000..000}.tar")).rows
    assert len(one) == 6
    with pytest.raises(BadInputError, match=r"tiny-002\.tar: tar shard not found"):
        corpora.dataset_table(str(root / "tiny-{000..002}.tar"))
    skips = SkipLog(skip=True)
    t = corpora.dataset_table(str(root / "tiny-{000..002}.tar"), skips=skips)
    assert len(t.rows) == N and skips.count == 1


def test_damaged_items_error_or_counted_skip(data, tmp_path, towers):
    """A member that is not audio, a sample without a label, a shard cut short: an error naming the
    shard and member, or (skip_bad) a counted skip with the other samples kept."""
    rows = data["rows"]
    good = [m for r in rows[:3] for m in _sample(r)]
    nolabel = [("c90.wav", Path(rows[0]["file"]).read_bytes()), ("c90.json", b'{"speaker": "s9"}')]
    _tar(tmp_path / "bad.tar", good + [("c99.wav", b"RIFF not really audio" * 20), ("c99.json", b"{}")] + nolabel)
    with pytest.raises(BadInputError, match=r"bad\.tar#c99\.wav: unreadable audio header"):
        corpora.dataset_table(tmp_path / "bad.tar")
    skips = SkipLog(skip=True)
    t = corpora.dataset_table(tmp_path / "bad.tar", skips=skips)
    assert len(t.rows) == 3 and skips.count == 2 and t.n_rows == 5
    assert set(t.row_errors) == {4, 5} and "no label nor caption" in t.row_errors[5]
    # a shard cut in the middle of its 3rd sample: the samples before are kept
    blob = (tmp_path / "bad.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    (cut).write_bytes(blob[: len(blob) // 3])
    with pytest.raises(BadInputError, match=r"cut\.tar"):
        corpora.dataset_table(cut)
    skips = SkipLog(skip=True)
    t = corpora.dataset_table(cut, skips=skips)
    assert 0 < len(t.rows) < 3 and skips.count >= 1
    # a WAV whose header promises more than the member holds: found when the clip is read
    wav = Path(next(r["file"] for r in rows if r["file"].endswith(".wav"))).read_bytes()
    _tar(tmp_path / "trunc.tar", good + [("c98.wav", wav[: len(wav) // 2]), ("c98.cls", b"sad")])
    t = corpora.dataset_table(tmp_path / "trunc.tar")
    bad = t.rows["file"].iloc[-1]
    with pytest.raises(BadInputError, match=r"trunc\.tar#c98\.wav: truncated WAV"):
        read_audio(bad)
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    skips = SkipLog(skip=True)
    emb, ok = embed_audio_files(build_tower(towers[0]), t.rows["file"].tolist(), skip=skips, progress=False)
    assert ok.tolist() == [True, True, True, False] and skips.items[0][0] == bad


def test_cli_dataset_flag(data, towers, tmp_path, capsys):
    """``--dataset`` where ``--manifest`` is accepted: embed writes one row per dataset item."""
    from smoothclap.cli import main

    out = tmp_path / "emb"
    rc = main(["-q", "embed", "--dataset", data["specs"]["wds"], "--tower", towers[0], "--cache-dir",
               str(tmp_path / "c"), "--output", str(out), "--split", "test"])
    assert rc == 0, capsys.readouterr().err
    listing = pd.read_csv(f"{out}.files.csv")
    assert len(listing) == 3 and listing["file"].str.startswith("wds://").all()
    rc = main(["-q", "embed", "--dataset", data["specs"]["disk"], "--manifest", data["specs"]["manifest"],
               "--tower", towers[0]])
    assert rc == 2 and "give one of --manifest, --dataset or --corpus" in capsys.readouterr().err


def _hub_cache(data, cache: Path) -> None:
    """The dataset in ``datasets``' cache the way a Hub download leaves it (``tester/tiny``), built
    here from local Parquet files (no network)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = sorted(str(p) for p in (data["root"] / "pq").glob("*.parquet"))
    b = Parquet(cache_dir=str(cache / "tmp"), dataset_name="tiny", hash="0123abcd",
                data_files={"train": files})
    b.download_and_prepare()
    built = Path(b.cache_dir)
    dest = cache / "tester___tiny" / "default" / "0.0.0" / "0123abcd"
    dest.parent.mkdir(parents=True, exist_ok=True)
    built.rename(dest)
    info = json.loads((dest / "dataset_info.json").read_text())
    info["config_name"] = "default"
    (dest / "dataset_info.json").write_text(json.dumps(info))


def test_hub_id_offline(data, tmp_path):
    """``HF_DATASETS_OFFLINE=1``: a Hub id found in datasets' cache is read like the others; one that
    is not cached is a one-line error at once (no traceback, no network wait)."""
    cache = tmp_path / "hf"
    _hub_cache(data, cache)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home"),
           "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(REPO / "src")}
    code = ("import json, sys; from smoothclap import corpora\n"
            "t = corpora.dataset_table('tester/tiny', split='train').rows\n"
            "print(json.dumps(t.drop(columns=['file']).to_dict('list')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = pd.DataFrame(json.loads(run.stdout.strip().splitlines()[-1]))
    ref = data["tables"]["manifest"].rows
    cols = [c for c in COLS if c != "split"]  # the rows' own split column wins over the Hub split name
    pd.testing.assert_frame_equal(got[cols], ref[cols].reset_index(drop=True), check_dtype=False)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "smoothclap", "-q", "embed", "--dataset", "nobody/not-cached",
                          "--tower", "egemaps"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: nobody/not-cached: cannot open the dataset"), err
    assert "Traceback" not in err and time.perf_counter() - t0 < 60
