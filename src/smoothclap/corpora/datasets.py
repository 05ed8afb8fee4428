"""Corpus tables from Hugging Face datasets and WebDataset tar shards, without unpacking any audio.

:func:`dataset_table` reads

* a **Hugging Face dataset**: a folder written by ``Dataset.save_to_disk`` /
  ``DatasetDict.save_to_disk``, Parquet files (a path, a glob or a folder; ``datasets`` converts
  them once into Arrow files in its own cache, as it always does), or a Hub id (``org/name``,
  through ``datasets``' cache; offline with ``HF_DATASETS_OFFLINE=1``). The Audio column is read
  as stored bytes (``Audio(decode=False)``: nothing is decoded by ``datasets``), from the
  memory-mapped Arrow files;
* **WebDataset shards**: ``.tar`` files (a path, a glob, a brace pattern ``shards-{000..009}.tar``
  or a folder of them) whose members ``<key>.flac|wav|mp3|ogg|opus`` hold the audio and
  ``<key>.json`` (an object: fields like a manifest row), ``<key>.cls`` (the label) and
  ``<key>.txt`` (the caption) the rest; each shard is read once, sequentially.

The table's ``file`` column holds container references (``wds://<shard>#<member>``,
``hf://<arrow file>#<row>``: :mod:`smoothclap.sources`), which :mod:`smoothclap.audio` reads, so
embedding, eGeMAPS, training and scoring take these tables like any other. Listing reads every
clip's bytes once, for its header duration and its content hash (the same sha1 a file of the same
bytes has: one cache entry whatever the container), and keeps neither.

Columns (``columns={field: name}``, defaults as in manifests): ``audio``, ``label``, ``caption``,
``speaker``, ``gender``, ``split``, ``language``, ``corpus``; other scalar columns (JSON fields) are
kept. A Hugging Face ``ClassLabel`` gives its names. A ``DatasetDict``'s rows get their split's
name in ``split`` unless the data has a split column. Bad items (unreadable audio, no audio, no
label nor caption, a label outside ``label_set``, a damaged shard) are errors naming the shard and
member (or Arrow file and row), or counted skips with ``skip_bad``.
"""
from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import re
from pathlib import Path

import pandas as pd

from .. import sources
from ..errors import BadInputError, SkipLog
from ..values import is_missing, normalize_gender
from ._common import STANDARD_COLUMNS, log
from .table import MANIFEST_ROW, Table

#: The fields a dataset's columns (or a shard's JSON fields) are read into, and their default names.
FIELDS = ("audio", "label", "caption", "speaker", "gender", "split", "language", "corpus")
FORMATS = ("hf", "webdataset")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_INSTALL_HINT = "reading Hugging Face datasets needs the datasets package: pip install 'smoothclap[datasets]'"


# -- where a dataset is -------------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """``shards-{000..009}.tar`` / ``{train,test}-{0..3}.tar`` -> every name, in order. A numeric
    range keeps the zero padding of its bounds; several groups expand left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[: m.start()], m.group(1), pattern[m.end():]
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        a, b = rng.group(1), rng.group(2)
        lo, hi = int(a), int(b)
        width = len(a) if a.startswith("0") or len(a) == len(b) else 0
        step = 1 if hi >= lo else -1
        parts = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    elif "," in body:
        parts = body.split(",")
    else:
        parts = ["{" + body + "}"]  # not a pattern: literal braces
        return [head + parts[0] + t for t in expand_braces(tail)]
    return [head + p + t for p in parts for t in expand_braces(tail)]


def _local_files(spec: str) -> list[str] | None:
    """The local files ``spec`` names (brace pattern and glob expanded, sorted within each glob);
    None when it names no local file (it may be a Hub id or a folder)."""
    names = expand_braces(spec)
    out: list[str] = []
    for name in names:
        name = os.path.expanduser(name)
        if any(c in name for c in "*?["):
            out += sorted(_glob.glob(name, recursive=True))
        elif os.path.isfile(name) or len(names) > 1:
            out.append(name)  # a name of a pattern that is missing: an error naming it, later
    return out or None


def detect(spec: str, fmt: str | None = None) -> tuple[str, str, list[str]]:
    """``(format, kind, paths)`` of a dataset spec: format ``hf`` (kind ``disk``, ``parquet`` or
    ``hub``) or ``webdataset`` (kind ``shards``). ``fmt`` forces the format."""
    if fmt is not None and fmt not in FORMATS:
        raise BadInputError(spec, f"unknown dataset format {fmt!r} (hf or webdataset)")
    p = Path(os.path.expanduser(spec))
    if p.is_dir():
        if any((p / n).exists() for n in ("dataset_dict.json", "state.json")):
            kind = ("hf", "disk", [str(p.resolve())])
        else:
            tars = sorted(str(x) for x in p.rglob("*.tar"))
            parquet = sorted(str(x) for x in p.rglob("*.parquet"))
            if tars and (fmt == "webdataset" or not parquet):
                kind = ("webdataset", "shards", tars)
            elif parquet and fmt != "webdataset":
                kind = ("hf", "parquet", [str(p.resolve())])
            else:
                raise BadInputError(spec, "not a dataset folder: no save_to_disk files (state.json / "
                                    "dataset_dict.json), .tar shards or .parquet files")
    else:
        files = _local_files(spec)
        if files:
            exts = {Path(f).suffix.lower() for f in files}
            if fmt == "webdataset" or exts == {".tar"}:
                kind = ("webdataset", "shards", files)
            elif exts == {".parquet"}:
                kind = ("hf", "parquet", files)
            elif fmt == "hf":
                raise BadInputError(spec, "a Hugging Face dataset is a save_to_disk folder, Parquet files or a Hub id")
            else:
                raise BadInputError(spec, f"not a dataset: {', '.join(sorted(exts))} files (.tar shards, .parquet "
                                    "files, a save_to_disk folder or a Hub id)")
        elif fmt != "webdataset" and _HUB_ID.match(spec) and not spec.endswith((".tar", ".parquet")):
            kind = ("hf", "hub", [spec])
        else:
            raise BadInputError(spec, "dataset not found (no such file or folder, and not a Hub id)")
    if fmt is not None and kind[0] != fmt:
        raise BadInputError(spec, f"is a {kind[0]} dataset here, not {fmt}")
    return kind


def _default_corpus(kind: str, paths: list[str]) -> str:
    if kind == "hub":
        return paths[0].rstrip("/").split("/")[-1]
    if kind == "disk" or (len(paths) == 1 and os.path.isdir(paths[0])):
        return Path(paths[0]).name
    stems = [Path(x).stem for x in paths]
    common = os.path.commonprefix(stems).rstrip("-_.0123456789") if len(stems) > 1 else stems[0]
    return common or Path(paths[0]).parent.name


# -- reading items -----------------------------------------------------------------------------------
class _Item:
    """One clip of a dataset: its reference, where errors point, its fields, its other columns."""

    __slots__ = ("file", "where", "fields", "extras", "seconds", "error")

    def __init__(self, file=None, where="", fields=None, extras=None, seconds=None, error=None):
        self.file, self.where, self.fields, self.extras = file, where, fields or {}, extras or {}
        self.seconds, self.error = seconds, error


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _split_fields(record: dict, names: dict[str, str], skip: set) -> tuple[dict, dict]:
    """``record`` -> (the named fields, the other scalar values in their order; the caption is
    one of them, as in a manifest's table)."""
    by_name = {v: k for k, v in names.items()}
    fields, extras = {}, {}
    for k, v in record.items():
        k = str(k)
        if k in by_name:
            fields[by_name[k]] = v
            if by_name[k] == "caption":
                extras["caption"] = v
        elif k not in skip and k not in FIELDS and _scalar(v):
            extras[k] = v
    return fields, extras


def _audio_info(ref: str, data, ident: tuple) -> float:
    """Header duration of ``data`` (the clip ``ref`` names); remembers its sha1 for the caches."""
    try:
        seconds = sources.header_info(data)[0]
    except Exception as e:  # noqa: BLE001 - LibsndfileError, RuntimeError
        raise BadInputError(ref, f"unreadable audio header ({e.__class__.__name__}: {e})") from None
    sources.remember(ref, hashlib.sha1(data).hexdigest(), seconds, ident)
    return seconds


def _wds_items(shards: list[str], names: dict[str, str], skips: SkipLog):
    """The samples of every shard, in order (each shard read once, sequentially)."""
    audio_ext = names["audio"] if names["audio"] in sources.WDS_AUDIO_EXTS else None
    for shard in shards:
        shard = os.path.abspath(os.path.expanduser(shard))
        try:
            st = os.stat(shard)
        except OSError as e:
            skips.handle(sources.ContainerError(shard, "tar shard not found" if isinstance(e, FileNotFoundError)
                                                else f"unreadable tar shard ({e})"))
            continue
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        samples: dict[str, dict] = {}

        def on_member(name: str, read, shard=shard, samples=samples):
            d, _, base = name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot or not stem or base.startswith("._"):
                return
            key, ext = (f"{d}/{stem}" if d else stem), ext.lower()
            is_audio = ext in sources.WDS_AUDIO_EXTS and (audio_ext is None or ext == audio_ext)
            if not is_audio and ext not in ("json", "cls", "txt"):
                return
            s = samples.setdefault(key, {"audio": [], "errors": []})
            try:
                if is_audio:
                    ref = sources.wds_ref(shard, name)
                    got = sources.known(ref, ident)  # listed before in this process: not read again
                    s["audio"].append((ref, got[2] if got else _audio_info(ref, read(), ident)))
                    return
                if ext in s:
                    s["errors"].append(f"two .{ext} members")
                else:
                    s[ext] = read()
            except BadInputError as e:
                s["errors"].append(e)

        try:
            members, problem = sources.scan_tar(shard, on_member)
        except BadInputError as e:
            skips.handle(e)
            continue
        sources.register_shard(shard, members, st)
        for key, s in samples.items():
            yield _wds_item(shard, key, s, names)
        if problem:
            skips.handle(sources.ContainerError(shard, problem))


def _wds_item(shard: str, key: str, s: dict, names: dict[str, str]) -> _Item:
    where = f"{sources.wds_ref(shard, key)}"
    errs = [e for e in s["errors"] if isinstance(e, BadInputError)]
    if errs:
        return _Item(where=where, error=errs[0])
    if s["errors"]:
        return _Item(where=where, error=BadInputError(where, s["errors"][0]))
    if not s["audio"]:
        return _Item(where=where, error=BadInputError(where, "no audio member (." + " / .".join(
            sources.WDS_AUDIO_EXTS) + ")"))
    if len(s["audio"]) > 1:
        shown = ", ".join(r.rsplit("#", 1)[1] for r, _ in s["audio"])
        return _Item(where=where, error=BadInputError(where, f"several audio members ({shown})"))
    ref, seconds = s["audio"][0]
    record = {}
    if "json" in s:
        try:
            record = json.loads(s["json"].decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return _Item(where=where, error=BadInputError(where, f"invalid JSON in {key}.json ({e})"))
        if not isinstance(record, dict):
            return _Item(where=where, error=BadInputError(where, f"{key}.json is not an object"))
    fields, extras = _split_fields(record, names, {"file", "path", "duration", MANIFEST_ROW, "__key__"})
    for ext, field in (("cls", "label"), ("txt", "caption")):
        if ext in s and is_missing(fields.get(field)):
            try:
                fields[field] = s[ext].decode("utf-8-sig").strip()
                if field == "caption":
                    extras["caption"] = fields[field]
            except UnicodeDecodeError:
                return _Item(where=where, error=BadInputError(where, f"{key}.{ext} is not UTF-8 text"))
    return _Item(ref, ref, fields, extras, seconds)


def _open_hf(spec: str, kind: str, paths: list[str], split: str | None, cache_dir):
    """``[(split name or None, Dataset)]`` of a Hugging Face dataset, as ``datasets`` opens it."""
    try:
        import datasets
    except ImportError:
        raise BadInputError(spec, _INSTALL_HINT) from None
    try:
        if kind == "disk":
            obj = datasets.load_from_disk(paths[0])
        elif kind == "parquet":
            if len(paths) == 1 and os.path.isdir(paths[0]):
                obj = datasets.load_dataset("parquet", data_dir=paths[0], cache_dir=cache_dir)
            else:
                obj = datasets.load_dataset("parquet", data_files={"train": [os.path.abspath(x) for x in paths]},
                                            split="train", cache_dir=cache_dir)
        else:
            obj = datasets.load_dataset(spec, split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError, ConnectionError, FileNotFoundError, ...
        why = " ".join(str(e).split()) or e.__class__.__name__
        if len(why) > 300:
            why = why[:300] + " ..."
        offline = getattr(datasets.config, "HF_HUB_OFFLINE", getattr(datasets.config, "HF_DATASETS_OFFLINE", False))
        hint = " (offline: HF_DATASETS_OFFLINE is set and it is not in the datasets cache)" if (
            kind == "hub" and offline) else ""
        raise BadInputError(spec, f"cannot open the dataset{hint}: {e.__class__.__name__}: {why}") from None
    if isinstance(obj, (datasets.DatasetDict, dict)):
        if split is not None:
            if split not in obj:
                raise BadInputError(spec, f"no split {split!r} (splits: {', '.join(obj)})")
            return [(split, obj[split])], datasets
        return list(obj.items()), datasets
    if split is not None and kind != "hub":
        raise BadInputError(spec, f"dataset_split {split!r}: this dataset is a single split (no DatasetDict)")
    return [(split, obj)], datasets


def _hf_items(spec: str, kind: str, paths: list[str], split: str | None, names: dict[str, str], cache_dir):
    """The rows of every split of a Hugging Face dataset, from its memory-mapped Arrow files."""
    import pyarrow as pa

    parts, datasets = _open_hf(spec, kind, paths, split, cache_dir)
    base = Path(paths[0]) if kind == "disk" else Path(paths[0]).parent
    col = names["audio"]
    for split_name, ds in parts:
        if col not in ds.column_names:
            raise BadInputError(spec, f"no audio column {col!r} (columns: {', '.join(ds.column_names)}; "
                                "name it with columns: {audio: NAME})")
        if ds._indices is not None:  # a selection of rows: write it out as a plain table first
            ds = ds.flatten_indices()
        files = [c["filename"] for c in ds.cache_files]
        if not files:
            raise BadInputError(spec, "this dataset lives in memory, not in Arrow files: save it with save_to_disk")
        features = ds.features
        labels = {c: f for c, f in features.items() if isinstance(f, datasets.ClassLabel)}
        arrows = [sources.open_arrow(f) for f in files]
        if sum(a.table.num_rows for a in arrows) != len(ds):
            raise BadInputError(spec, "its Arrow files do not hold its rows in order (save it with save_to_disk)")
        for a in arrows:
            st = os.stat(a.path)
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            others = [c for c in a.table.column_names if c != col]
            row = 0
            for batch in a.table.to_batches(max_chunksize=256):
                audio = batch.column(col)
                is_struct = pa.types.is_struct(audio.type)
                blobs = audio.field("bytes") if is_struct else audio
                where_col = audio.field("path") if is_struct else None
                if not (pa.types.is_binary(blobs.type) or pa.types.is_large_binary(blobs.type)):
                    blobs, where_col = None, (blobs if where_col is None else where_col)  # paths only
                records = batch.select(others).to_pylist()
                for i, rec in enumerate(records):
                    ref = sources.hf_ref(a.path, row + i, col)
                    for c, feat in labels.items():
                        v = rec.get(c)
                        if isinstance(v, int):
                            rec[c] = feat.int2str(v) if v >= 0 else None
                    fields, extras = _split_fields(rec, names, {"file", "path", "duration", MANIFEST_ROW})
                    if split_name is not None and is_missing(fields.get("split")):
                        fields["split"] = split_name
                    yield _hf_item(ref, blobs, where_col, i, base, fields, extras, ident)
                row += len(records)


def _hf_item(ref, blobs, where_col, i, base: Path, fields, extras, ident) -> _Item:
    got = sources.known(ref, ident) if blobs is not None else None
    if got is not None:  # listed before in this process: not read again
        return _Item(ref, ref, fields, extras, got[2])
    if blobs is not None:
        cell = blobs[i]
        data = cell.as_buffer() if cell.is_valid else None
        if data is not None and data.size:
            try:
                return _Item(ref, ref, fields, extras, _audio_info(ref, memoryview(data), ident))
            except BadInputError as e:
                return _Item(where=ref, error=e)
    # no bytes: a path to an audio file (absolute, or relative to the dataset)
    path = where_col[i].as_py() if where_col is not None else None
    if is_missing(path):
        return _Item(where=ref, error=BadInputError(ref, "no audio (neither bytes nor a path)"))
    f = Path(str(path)).expanduser()
    f = f if f.is_absolute() else base / f
    if not f.is_file():
        return _Item(where=ref, error=BadInputError(ref, f"no audio bytes, and its path is not a file ({path})"))
    from ..audio import header_seconds

    seconds = header_seconds(f)
    if not seconds:
        return _Item(where=ref, error=BadInputError(f, "unreadable audio header"))
    return _Item(str(f.resolve()), ref, fields, extras, seconds)


# -- the table ---------------------------------------------------------------------------------------
def _label(item: _Item, allowed, lowercase: bool, allow_unlabelled: bool = False) -> str | None:
    lab = item.fields.get("label")
    if is_missing(lab) or (isinstance(lab, str) and not lab.strip()):
        if allow_unlabelled:
            return None
        if is_missing(item.fields.get("caption")) or allowed is not None:
            raise BadInputError(item.where, "no label" + ("" if allowed is not None else " nor caption"))
        return None
    lab = str(lab).strip()
    lab = lab.lower() if lowercase else lab
    if allowed is not None and lab not in allowed:
        raise BadInputError(item.where, f"unknown label {lab!r} (allowed: {', '.join(sorted(allowed))})")
    return lab


def _text(v) -> str | None:
    return None if is_missing(v) else str(v).strip()


def dataset_table(
    spec,
    *,
    format: str | None = None,  # noqa: A002 - the option's name in configs
    split: str | None = None,
    columns: dict[str, str] | None = None,
    label_set=None,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    lowercase_labels: bool = True,
    corpus: str | None = None,
    language: str | None = None,
    cache_dir=None,
    allow_unlabelled: bool = False,
) -> Table:
    """A Hugging Face dataset or WebDataset shards (see the module) as a
    :class:`~smoothclap.corpora.Table`: the standard columns (``file`` = container references),
    ``duration`` from each clip's header, the other columns, and ``manifest_row`` = the item's
    number in the dataset (1 = first); ``n_rows`` = the number of items, ``row_errors`` = why each
    left-out item was left out.

    spec: a ``save_to_disk`` folder, Parquet file(s) (path, glob or folder), a Hub id, or tar
        shard(s) (path, glob, brace pattern, folder). ``format``: ``hf`` / ``webdataset`` (None:
        detected). ``split``: the split of a ``DatasetDict`` / Hub dataset to read (None: all).
    columns: ``{field: column}`` for the fields :data:`FIELDS` (default: the field's own name; for
        shards, ``audio`` may name the audio extension to take, e.g. ``flac``).
    label_set, skip_bad, skips, lowercase_labels, corpus, language: as :func:`manifest_table`.
    cache_dir: ``datasets``' cache (Parquet conversion, Hub downloads); None: its default.
    allow_unlabelled: keep items with neither label nor caption as unlabelled rows (label None)
        instead of bad input (training data that is partly or not labelled).
    """
    spec = os.fspath(spec)
    names = {f: f for f in FIELDS}
    for k, v in (columns or {}).items():
        if k not in FIELDS:
            raise BadInputError(spec, f"columns: unknown field {k!r} (fields: {', '.join(FIELDS)})")
        names[k] = str(v)
    fmt, kind, paths = detect(spec, format)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    n0 = skips.count
    allowed = None
    if label_set is not None:
        allowed = {str(x).strip().lower() if lowercase_labels else str(x).strip() for x in label_set}
    if fmt == "webdataset":
        if split is not None:
            raise BadInputError(spec, f"dataset_split {split!r}: WebDataset shards have no splits (use a split "
                                "field in their JSON, and --split / data.split)")
        items = _wds_items(paths, names, skips)
    else:
        items = _hf_items(spec, kind, paths, split, names, cache_dir)
    corpus = corpus or _default_corpus(kind, paths)
    rows, row_errors, n = [], {}, 0
    for n, item in enumerate(items, 1):
        try:
            if item.error is not None:
                raise item.error
            label = _label(item, allowed, lowercase_labels, allow_unlabelled)
        except BadInputError as err:
            skips.handle(err)
            row_errors[n] = f"{err.path}: {err.reason}"
            continue
        f = item.fields
        rows.append({"file": item.file, "label": label, "speaker": _text(f.get("speaker")),
                     "gender": normalize_gender(f.get("gender")), "split": _text(f.get("split")),
                     "language": language if is_missing(f.get("language")) else str(f["language"]).strip(),
                     "corpus": corpus if is_missing(f.get("corpus")) else str(f["corpus"]).strip(),
                     "duration": item.seconds, **item.extras, MANIFEST_ROW: n})
    if not rows:
        why = f" ({skips.by_reason()})" if skips.count > n0 else ""
        raise BadInputError(spec, f"no usable items: {n} read{why}")
    extras = list(dict.fromkeys(k for r in rows for k in r if k not in (*STANDARD_COLUMNS, "duration", MANIFEST_ROW)))
    out = pd.DataFrame(rows, columns=[*STANDARD_COLUMNS, "duration", *extras, MANIFEST_ROW])
    out["duration"] = out["duration"].astype("float64")
    if "caption" in out.columns:
        out["caption"] = [None if is_missing(c) else str(c) for c in out["caption"]]
    for c in STANDARD_COLUMNS:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    if skips.count > n0:
        log.warning("%s: skipped %d bad item(s): %s", spec, skips.count - n0, skips.by_reason())
    return Table(rows=out, skipped=skips, source=spec, n_rows=n, row_errors=row_errors)


def read_dataset(spec, **opts) -> pd.DataFrame:
    """:func:`dataset_table` (the same options), its rows only."""
    return dataset_table(spec, **opts).rows


def load(root, **opts) -> pd.DataFrame:
    """Registry-style entry: ``read_dataset(root, **opts)``."""
    return read_dataset(root, **opts)


__all__ = ["FIELDS", "dataset_table", "detect", "expand_braces", "read_dataset"]
