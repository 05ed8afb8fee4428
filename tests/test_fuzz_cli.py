"""Property-based bad input through the command line, in-process (``smoothclap.cli.main``): random
manifests (columns, values, paths, formats), random YAML configs and ``--set`` values, random flag
values. Whatever the input, ``main`` returns 0 or 2, no exception escapes it and stderr holds at
most the one line ``error: <file or key>: <reason>`` (docs/bad-input.md). Bounded in time: about
40 s on two CPU cores (the ``max_examples`` below)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("opensmile")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smoothclap.cli import main  # noqa: E402

# Fixed examples (CI stays reproducible); SMOOTHCLAP_FUZZ=<factor> explores: random examples, factor x as
# many; SMOOTHCLAP_FUZZ_LOG=<file> writes every command's outcome there.
_EXPLORE = float(os.environ.get("SMOOTHCLAP_FUZZ", "0") or 0)
FUZZ = dict(deadline=None, database=None, derandomize=not _EXPLORE, suppress_health_check=list(HealthCheck))
OUTCOMES: Counter = Counter()  # exit code -> how many commands ended so
LABELS = ["angry", "happy", "sad", "neutral", "fear", "bored"]


def examples(n: int) -> int:
    return int(n * _EXPLORE) if _EXPLORE else n


@pytest.fixture(scope="module")
def world(synth_root, tmp_path_factory):
    """Clips (6 good ones, one that "trained" the model, a silent one, a missing path), a header-only
    manifest, a tiny untrained model that records that one clip as its training data, a warm cache;
    the working folder is a scratch folder."""
    from smoothclap.audio import content_prefixes
    from smoothclap.config import SmoothClapConfig
    from smoothclap.model import SmoothClapModel

    root = tmp_path_factory.mktemp("fuzz")
    m = pd.read_csv(synth_root / "manifest.csv")
    picks = m.groupby("label").head(1).head(6)  # one clip of each of six labels
    good = [str(synth_root / f) for f in picks["file"]]
    seen = str(synth_root / m.loc[~m["file"].isin(picks["file"]), "file"].iloc[0])  # "trained" the model
    silent = root / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    empty = root / "empty.csv"
    empty.write_text("file,label\n")
    model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=384,
                                             text_dim=384, embed_dim=8, trained_on=["fuzz"]))
    model.trained_clips = np.unique(content_prefixes([seen])[0])
    model.save_pretrained(root / "model")
    cache = root / "cache"
    warm = root / "warm.csv"
    pd.DataFrame({"file": [*good, seen], "label": [*picks["label"], "sad"]}).to_csv(warm, index=False)
    assert main(["-q", "evaluate", "--model", str(root / "model"), "--manifest", str(warm), "--cache-dir", str(cache),
                 "--allow-trained-corpus"]) == 0
    scratch = root / "cwd"
    scratch.mkdir()
    before = os.getcwd()
    os.chdir(scratch)  # relative paths that random input names land here
    try:
        yield {"good": good, "seen": seen, "silent": str(silent), "missing": str(root / "missing.wav"),
               "empty": str(empty), "model": str(root / "model"), "cache": str(cache), "root": root}
    finally:
        os.chdir(before)


def check(argv: list[str]) -> int:
    """Run the command line; exit code 0 or 2, nothing escapes, at most the one error line."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as e:  # noqa: BLE001 - the property under test
            _log(f"ESCAPED {argv!r} {type(e).__name__}: {e}")
            raise AssertionError(f"{argv}: {type(e).__name__} escaped main: {e}") from e
    text = err.getvalue()
    if rc not in (0, 2) or "Traceback" in text or len(text.strip().splitlines()) > 1:
        _log(f"BAD {argv!r} {rc} {text!r}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc in (0, 2), (argv, rc, text)
    assert "Traceback" not in text, (argv, text)
    assert len(lines) <= 1 and all(ln.startswith("error: ") for ln in lines), (argv, text)
    assert (rc == 2) == bool(lines), (argv, rc, text)
    OUTCOMES[rc] += 1
    _log(f"{argv[1]} {rc} {lines[0][:160] if lines else ''}")
    return rc


def _log(line: str) -> None:
    """SMOOTHCLAP_FUZZ_LOG=<file>: every command's outcome, one line each (to see what the fuzz reached)."""
    if os.environ.get("SMOOTHCLAP_FUZZ_LOG"):
        with open(os.environ["SMOOTHCLAP_FUZZ_LOG"], "a", errors="backslashreplace") as f:
            f.write(line + "\n")


def scratch_dir(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["root"]))


# -- strategies ---------------------------------------------------------------------------------------
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
_WORDS = st.text("abcdefgh ._-/,;'\"é😀\t\\", max_size=16)
COLUMNS = ["file", "path", "label", "caption", "speaker", "split", "start", "end", "corpus", "gender", "language",
           "duration", "Label", "FILE", "manifest_row", "label_original"]


def cells(world):
    return st.one_of(
        st.sampled_from(world["good"]), st.sampled_from(world["good"]),
        st.sampled_from([world["seen"], world["silent"], world["missing"], "", "nan", "NA", "..", "/", "~", "a.wav",
                         "../" + Path(world["good"][0]).name, world["good"][0] + "\x00x"]),
        st.sampled_from(LABELS), st.sampled_from(["train", "test", "dev", "TRAIN", "m", "f", "x"]),
        st.integers(-3, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
        _WORDS, _TEXT)


def manifests(world):
    anything = st.lists(st.one_of(st.sampled_from(COLUMNS), _WORDS), min_size=0, max_size=6)
    benign = st.lists(st.sampled_from(["speaker", "split", "gender", "language", "corpus", "duration", "notes",
                                       "start", "end", "caption"]), max_size=4, unique=True)

    @st.composite
    def build(draw):
        core = draw(st.integers(0, 3)) < 3  # mostly a usable core: file, label, then other columns
        header = ["file", "label", *draw(benign)] if core else draw(anything)
        if core and draw(st.integers(0, 4)) == 4:
            header.insert(draw(st.integers(0, len(header))), draw(st.one_of(st.sampled_from(COLUMNS), _WORDS)))
        rows = []
        for _ in range(draw(st.integers(2 if core else 0, 7))):
            row = draw(st.lists(cells(world), min_size=len(header), max_size=len(header) + (not core)))
            if core and draw(st.integers(0, 3)) < 3:  # mostly a good clip with a known label
                row[:2] = [draw(st.sampled_from(world["good"])), draw(st.sampled_from(LABELS))]
            rows.append(row)
        if rows and header and draw(st.integers(0, 5)) == 5:  # now and then a cell that is not UTF-8 (raw
            r = draw(st.integers(0, len(rows) - 1))  # bytes in a CSV, a JSON escape)
            rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(st.sampled_from(["sad\udcff", "caf\udce9.wav"]))
        fmt = draw(st.sampled_from(["csv", "csv", "csv", "tsv", "raw", "jsonl", "json"]))
        return header, rows, fmt

    return build()


def write_manifest(folder: Path, header, rows, fmt) -> Path:
    if fmt in ("jsonl", "json"):
        recs = []
        for r in rows:
            rec = {}
            for k, v in zip(header, r):
                try:  # numbers as JSON numbers
                    rec[k] = None if v == "nan" else (float(v) if v.strip() and v.strip()[0] in "-0123456789" else v)
                except ValueError:
                    rec[k] = v
            recs.append(rec)
        p = folder / f"m.{fmt}"
        text = "\n".join(json.dumps(r) for r in recs) if fmt == "jsonl" else json.dumps(recs)
        p.write_text(text + "\n")
        return p
    p = folder / ("m.tsv" if fmt == "tsv" else "m.csv")
    if fmt == "raw":  # no quoting: commas inside values break rows
        p.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", errors="surrogateescape")
    else:
        with open(p, "w", newline="", errors="surrogateescape") as f:
            csv.writer(f, delimiter="\t" if fmt == "tsv" else ",").writerows([header, *rows])
    return p


# -- manifests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "embed", "classify"])
def test_random_manifests(world, command):
    usable = (["file", "label"], [[world["good"][0], "angry"], [world["good"][1], "sad"]], "csv")

    @settings(max_examples=examples({"evaluate": 30, "embed": 15, "classify": 15}[command]), **FUZZ)
    @example(usable, set())  # the success path, whatever the random examples reach
    @given(manifests(world), st.sets(st.sampled_from(["--skip-bad", "--allow-trained-corpus", "--split", "--labels",
                                                      "--out"]), max_size=3))
    def prop(man, flags):
        folder = scratch_dir(world)
        path = write_manifest(folder, *man)
        if command == "evaluate":
            argv = ["-q", "evaluate", "--model", world["model"], "--manifest", str(path), "--cache-dir", world["cache"]]
            argv += [a for f in sorted(flags) for a in {"--split": ["--split", "train"], "--labels": ["--labels",
                     "angry,sad,neutral"], "--out": ["--out", str(folder / "ev")]}.get(f, [f])]
        elif command == "embed":
            argv = ["-q", "embed", "--manifest", str(path), "--cache-dir", world["cache"], "--output",
                    str(folder / "e.npy")] + (["--skip-bad"] if "--skip-bad" in flags else [])
        else:
            argv = ["-q", "classify", "--model", world["model"], "--labels", "angry,sad", "--manifest", str(path)]
            argv += ["--skip-bad"] if "--skip-bad" in flags else []
        check(argv)

    before = OUTCOMES[0]
    prop()
    assert OUTCOMES[0] > before  # the usable manifest ran through


def test_random_manifests_train(world):
    """Training on random manifests (label captions, one epoch: cheap); a run that trains writes a model."""
    @settings(max_examples=examples(8), **FUZZ)
    @given(manifests(world), st.booleans())
    def prop(man, skip_bad):
        folder = scratch_dir(world)
        path = write_manifest(folder, *man)
        out = folder / "run"
        rc = check(["-q", "train", "--config", "demo", "--manifest", str(path), "--out", str(out),
                    "--set", "train.epochs=1", "--set", "model.embed_dim=8", "--set", f"cache_dir={world['cache']}",
                    "--set", "captions.variables=[]", "--set", "data.split=null",
                    "--set", f"data.skip_bad={str(skip_bad).lower()}"])
        assert rc == 2 or (out / "model" / "model.safetensors").exists()

    prop()


# -- configs and --set values ------------------------------------------------------------------------------
def _fields() -> dict[str, list[str]]:
    from pydantic import BaseModel

    from smoothclap.config import RunConfig

    out = {}
    for name, f in RunConfig.model_fields.items():
        ann = f.annotation
        out[name] = list(ann.model_fields) if isinstance(ann, type) and issubclass(ann, BaseModel) else []
    return out


FIELDS = _fields()
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**9), st.floats(allow_nan=True), _WORDS,
                     st.sampled_from(["e2e", "cached", "speaker", "corpus", "clap", "smoothclap", "rms:-23", "peak",
                                      "whisper-tiny-en", "minilm-l6", "egemaps", "hf:./nope", "emodb", "train"]))
_VALUES = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(_WORDS, c, max_size=3),
                       max_leaves=6)


@st.composite
def configs(draw):
    out = {}
    for section in draw(st.lists(st.sampled_from([*FIELDS, "bogus"]), max_size=4, unique=True)):
        keys = FIELDS.get(section) or []
        if keys and draw(st.booleans()):
            out[section] = draw(st.dictionaries(st.sampled_from([*keys, "bogus"]), _VALUES, max_size=4))
        else:
            out[section] = draw(_VALUES)
    return out


def test_random_configs(world):
    @settings(max_examples=examples(60), **FUZZ)
    @given(st.one_of(configs(), configs().map(lambda c: c or {"train": {"epochs": 1}}), _TEXT))
    def prop(cfg):
        folder = scratch_dir(world)
        p = folder / "c.yaml"
        p.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, allow_unicode=True))
        check(["-q", "train", "--config", str(p), "--manifest", world["empty"], "--out", str(folder / "r")])
        assert not (folder / "r" / "model").exists()

    prop()


def test_random_set_values(world):
    keys = st.one_of(st.sampled_from([f"{s}.{k}" if k else s for s, ks in FIELDS.items() for k in (ks or [""])]),
                     _WORDS)
    values = st.one_of(_WORDS, _VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))

    @settings(max_examples=examples(60), **FUZZ)
    @given(st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}") | _WORDS, min_size=1, max_size=3))
    def prop(sets):
        folder = scratch_dir(world)
        argv = ["-q", "train", "--config", "demo", "--manifest", world["empty"], "--out", str(folder / "r")]
        for s in sets:
            argv += ["--set", s]
        check(argv)

    prop()


def test_random_flag_values(world):
    """Numbers and names where flags take them: checked where they are parsed."""
    model = world["model"]
    clip = world["good"][0]

    @settings(max_examples=examples(40), **FUZZ)
    @given(st.sampled_from(["top", "batch", "port", "labels", "templates", "groups", "tower", "model"]),
           st.one_of(st.integers(-10**6, 10**6).map(str), _WORDS, _TEXT.filter(lambda t: not t.startswith("-"))))
    def prop(flag, value):
        argv = {"top": ["classify", "--model", model, "--labels", "angry,sad", "--top", value, clip],
                "batch": ["embed", "--manifest", world["empty"], "--batch-size", value],
                "port": ["serve", "--model", world["missing"], "--port", value],
                "labels": ["classify", "--model", model, "--labels", value, clip],
                "templates": ["classify", "--model", model, "--labels", "angry,sad", "--templates", value, clip],
                "groups": ["classify", "--model", model, "--labels", "angry,sad", "--groups", value, clip],
                "tower": ["embed", "--manifest", world["empty"], "--tower", value],
                "model": ["classify", "--model", value.replace("/", "_") or ".", "--labels", "angry,sad", clip]}[flag]
        check(["-q", *argv])

    prop()
