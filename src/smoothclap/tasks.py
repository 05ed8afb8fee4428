"""Evaluation tasks as data: corpus + label prompts + protocol + metrics, and one loop for all.

A :class:`Task` names a corpus loader, which rows it scores (a split, e.g. FAU Aibo's test school
Mont), how results average (one pool of clips, or per fold such as IEMOCAP's five sessions,
averaged), the prompt word(s) of every class and the prompt template. :func:`run_task` is the
single generic evaluation loop; ``smoothclap evaluate --task NAME`` and the LOCO benchmark use it.

The paper's eight tasks follow its protocol (bare label words; IEMOCAP uses ``"this person is
feeling {label}."``; ``docs/protocols.md``). Where the paper leaves prompt words open they are taken
from the ParaCLAP evaluation code (KeiKinn/ParaCLAP, ``Data/*.py``), the protocol SmoothCLAP reports:

=============  ==========================================================================
task           prompt words (data label -> prompt)
=============  ==========================================================================
iemocap        neutral, happy, angry -> "anger", sad -> "sadness"; template
               "this person is feeling {label}."; sessions 1-5 scored separately, averaged
ravdess        neutral calm happy sad angry fearful disgust surprised (all speech files)
crema-d        sad angry disgust fear happy neutral (all clips)
tess           neutral happy sad -> "sadness" angry fear disgust "pleasant surprise"
aibo-2         idl -> "non-negative", neg -> "negative" (test school Mont)
aibo-5         angry emphatic neutral motherese rest (test school Mont)
alc            al -> "intoxicated with alcohol", nal -> "not intoxicated with alcohol" (test)
sld            l -> "likeable", nl -> "not likeable" (test partition)
emodb          anger boredom disgust fear happiness sadness neutral (all 535 clips)
savee          anger disgust fear happiness neutral sadness surprise (all clips)
emovo          disgust, joy -> "happiness", neutral fear anger surprise sadness (all 588 clips;
               Italian prompts: disgusto gioia neutro paura rabbia sorpresa tristezza)
turevdb        angry calm happy sad (all 1735 single-word clips; Turkish prompts: kızgın sakin
               mutlu hüzünlü)
=============  ==========================================================================

Corpora are found under a data root by folder name (the corpus' name, aliases and release folder
names in :data:`smoothclap.corpora.CORPORA`, matched case-insensitively, ignoring
``-``/``_``/``.``/spaces): ``emodb``, ``ravdess``, ``tess``, ``iemocap``, ``crema-d``, ``aibo``,
``alc``, ``sld``, ``savee``, ``emovo``, ``turevdb`` (or ``Sound Source``), ``msp-podcast``. When the
data root itself is the corpus root, that works too. To add a task: one :class:`Task` row in ``_TASK_LIST``.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import corpora
from .errors import BadInputError, SkipLog
from .evaluate import (TrainedCorpusError, check_clips_not_trained_on, check_not_trained_on,  # noqa: F401
                       trained_clip_mask, zero_shot_evaluate)

log = logging.getLogger("smoothclap")

#: Column names of the paper's UAR table (docs/protocols.md).
PAPER_METHODS = ("CLAP", "Pengi", "ParaCLAP", "SmoothCLAP")


class CorpusNotFound(FileNotFoundError):
    """No folder for the task's corpus under the data root."""


@dataclass(frozen=True)
class Task:
    """One zero-shot evaluation task.

    Attributes:
        name: registry key (``smoothclap evaluate --task NAME``).
        corpus: corpus loader name (``smoothclap.corpora.load``).
        labels: class labels as the loader writes them, in report order.
        prompts: label -> English prompt word(s) (``{label}`` in the template is replaced by these);
            labels not named here are their own prompt.
        template: prompt template (one string with ``{label}``).
        prompts_by_language: language -> (label -> prompt word(s)) for prompts in other languages
            (every label named), e.g. German words for German corpora (``--prompt-language de``).
        templates_by_language: language -> template, where it differs from ``template``.
        split: only rows whose ``split`` column equals this (None = all rows).
        fold_by: None = one pool; a column name = score each value separately and average.
        fold_label: what a fold is called in reports (default: the column name).
        loader_options: keyword options for the loader (e.g. ``{"classes": 5}``).
        language: of the speech.
        metrics: what the report shows (UAR first: the paper's metric).
        paper: the paper's reported UAR per method (``PAPER_METHODS``), or empty.
        description: one line for reports.
    """

    name: str
    corpus: str
    labels: tuple[str, ...]
    prompts: dict = field(default_factory=dict)
    template: str = "{label}"
    split: str | None = None
    fold_by: str | None = None
    fold_label: str | None = None
    loader_options: dict = field(default_factory=dict)
    language: str = "en"
    metrics: tuple[str, ...] = ("uar", "wa", "macro_f1")
    paper: dict = field(default_factory=dict)
    description: str = ""
    prompts_by_language: dict = field(default_factory=dict)
    templates_by_language: dict = field(default_factory=dict)

    def __hash__(self) -> int:  # dict fields: hash by name (tasks are registry singletons)
        return hash(self.name)

    @property
    def protocol(self) -> str:
        rows = f"split == {self.split!r}" if self.split else "all clips"
        how = f"per {self.fold_label or self.fold_by}, averaged" if self.fold_by else "one pool"
        return f"{rows}; {how}"

    @property
    def prompt_languages(self) -> tuple[str, ...]:
        return ("en", *sorted(k for k in self.prompts_by_language if k != "en"))

    def resolve_language(self, language: str | None) -> str:
        """``None`` / ``"en"``: English; ``"task"``: the speech's language where the task has prompts
        in it (else English); another code: that language (BadInputError if the task has none)."""
        if language in (None, "en"):
            return "en"
        if language == "task":
            return self.language if self.language in self.prompt_languages else "en"
        if language not in self.prompt_languages:
            raise BadInputError(f"task {self.name}", f"no prompts in language {language!r} (has: "
                                f"{', '.join(self.prompt_languages)})")
        return language

    def prompt_map(self, language: str | None = None) -> dict[str, str]:
        """label -> prompt word(s) in ``language`` (default English), every label present."""
        lang = self.resolve_language(language)
        words = self.prompts if lang == "en" else self.prompts_by_language[lang]
        return {lab: words.get(lab, lab) for lab in self.labels}

    def template_for(self, language: str | None = None) -> str:
        return self.templates_by_language.get(self.resolve_language(language), self.template)

    def prompt_texts(self, language: str | None = None) -> dict[str, str]:
        """label -> the exact text that is embedded."""
        t = self.template_for(language)
        return {lab: t.format(label=p) for lab, p in self.prompt_map(language).items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["protocol"] = self.protocol
        d["prompt_texts"] = self.prompt_texts()
        return d


def _paper(clap, pengi, paraclap, smooth) -> dict:
    return dict(zip(PAPER_METHODS, (clap, pengi, paraclap, smooth)))


_TASK_LIST = [
    Task("iemocap", "iemocap", ("neutral", "happy", "angry", "sad"),
         prompts={"angry": "anger", "sad": "sadness"}, template="this person is feeling {label}.",
         fold_by="split", fold_label="session",
         paper=_paper(.353, .345, .600, .606),
         description="IEMOCAP 4 classes (excited merged into happy), each of 5 sessions, averaged"),
    Task("ravdess", "ravdess",
         ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
         paper=_paper(.199, .148, .228, .175),
         description="RAVDESS speech, 8 classes, all 1440 speech files"),
    Task("crema-d", "crema-d", ("sad", "angry", "disgust", "fear", "happy", "neutral"),
         paper=_paper(.230, .245, .177, .266),
         description="CREMA-D, 6 classes, all clips"),
    Task("tess", "tess", ("neutral", "happy", "sad", "angry", "fear", "disgust", "pleasant surprise"),
         prompts={"sad": "sadness"}, paper=_paper(.232, .177, .170, .275),
         description="TESS, 7 classes, all 2800 clips"),
    Task("aibo-2", "aibo", ("idl", "neg"), prompts={"idl": "non-negative", "neg": "negative"},
         split="test", loader_options={"classes": 2},
         language="de", paper=_paper(.500, .470, .526, .555),
         prompts_by_language={"de": {"idl": "nicht negativ", "neg": "negativ"}},
         description="FAU Aibo (IS2009) 2 classes IDL vs NEG, test school Mont"),
    Task("aibo-5", "aibo", ("angry", "emphatic", "neutral", "motherese", "rest"),
         split="test", loader_options={"classes": 5},
         language="de", paper=_paper(.211, .185, .197, .204),
         prompts_by_language={"de": {"angry": "wütend", "emphatic": "nachdrücklich", "neutral": "neutral",
                                     "motherese": "Ammensprache", "rest": "sonstiges"}},
         description="FAU Aibo (IS2009) 5 classes A E N P R, test school Mont"),
    Task("alc", "alc", ("al", "nal"),
         prompts={"al": "intoxicated with alcohol", "nal": "not intoxicated with alcohol"},
         split="test", language="de", paper=_paper(.511, .473, .537, .541),
         prompts_by_language={"de": {"al": "alkoholisiert", "nal": "nicht alkoholisiert"}},
         description="ALC (IS2011 intoxication), AL vs NAL, test partition"),
    Task("sld", "sld", ("l", "nl"), prompts={"l": "likeable", "nl": "not likeable"},
         split="test", language="de", paper=_paper(.472, .485, .507, .496),
         prompts_by_language={"de": {"l": "sympathisch", "nl": "nicht sympathisch"}},
         description="SLD (IS2012 likability), L vs NL, test partition"),
    Task("emodb", "emodb", ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
         language="de",
         prompts_by_language={"de": {"anger": "Wut", "boredom": "Langeweile", "disgust": "Ekel", "fear": "Angst",
                                     "happiness": "Freude", "sadness": "Trauer", "neutral": "neutral"}},
         description="EmoDB, 7 classes, all 535 clips (German speech, English label words)"),
    Task("savee", "savee", ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
         description="SAVEE, 7 classes, all clips"),
    Task("emovo", "emovo", ("disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness"),
         prompts={"joy": "happiness"}, language="it",
         prompts_by_language={"it": {"disgust": "disgusto", "joy": "gioia", "neutral": "neutro", "fear": "paura",
                                     "anger": "rabbia", "surprise": "sorpresa", "sadness": "tristezza"}},
         description="EMOVO, 7 classes, all 588 clips (Italian speech, English label words)"),
    Task("turevdb", "turevdb", ("angry", "calm", "happy", "sad"), language="tr",
         prompts_by_language={"tr": {"angry": "kızgın", "calm": "sakin", "happy": "mutlu", "sad": "hüzünlü"}},
         description="TurEV-DB, 4 classes, all 1735 clips (Turkish single words, English label words)"),
]

#: Task name -> Task. The paper's eight tasks first, then EmoDB and SAVEE.
TASKS: dict[str, Task] = {t.name: t for t in _TASK_LIST}
#: The paper's eight tasks (docs/protocols.md), in its order.
PAPER_TASKS = ("iemocap", "ravdess", "crema-d", "tess", "aibo-2", "aibo-5", "alc", "sld")

#: Other names of tasks (keys as :func:`smoothclap.corpora.key` makes them).
_TASK_ALIASES = {"aibo": "aibo-2", "fauaibo": "aibo-2", "aibo2cl": "aibo-2", "aibo2class": "aibo-2"}


def get_task(name: str) -> Task:
    """Task by name (case-insensitive; ``-``/``_``/``.`` ignored; ``aibo`` = ``aibo-2``)."""
    k = corpora.key(name)
    for t in TASKS.values():
        if corpora.key(t.name) == k:
            return t
    if k in _TASK_ALIASES:
        return TASKS[_TASK_ALIASES[k]]
    raise BadInputError(name, f"unknown task; known: {', '.join(TASKS)}")


def canonical_corpus(name: str) -> str:
    """Canonical corpus name (see :func:`smoothclap.corpora.canonical`)."""
    return corpora.canonical(name)


def find_corpus_root(task: Task, data_root) -> Path:
    """The task's corpus folder under ``data_root`` (:func:`smoothclap.corpora.find_root`)."""
    try:
        return corpora.find_root(task.corpus, data_root)
    except FileNotFoundError as e:
        raise CorpusNotFound(str(e)) from None


def load_task_table(task: Task, data_root, *, skip_bad: bool = False, skips: SkipLog | None = None) -> pd.DataFrame:
    """The rows the task scores: loader table, filtered by split, labels checked. ``skips``: the
    :class:`SkipLog` that collects the files left out while reading (``skip_bad``)."""
    root = find_corpus_root(task, data_root)
    df = corpora.load(task.corpus, root, skip_bad=skip_bad, skips=skips, **task.loader_options)
    if task.split is not None:
        if "split" not in df.columns:
            raise BadInputError(root, f"task {task.name} needs a split column (split == {task.split!r})")
        df = df[df["split"].astype(str) == task.split]
    df = df.reset_index(drop=True)
    if df.empty:
        raise BadInputError(root, f"task {task.name}: no clips left (protocol: {task.protocol})")
    unknown = sorted(set(df["label"].astype(str)) - set(task.labels))
    if unknown:
        raise BadInputError(root, f"task {task.name}: labels {unknown} are not among the task's {list(task.labels)}")
    return df


def score_table(task: Task, model, table: pd.DataFrame, *, features: np.ndarray | None = None,
                templates=None, cache_dir=None, skip: SkipLog | None = None, progress: bool = False,
                prompt_language: str | None = None, use_groups: bool = True) -> dict:
    """Score ``table`` (already the task's rows) with the task's prompts (in ``prompt_language``:
    None = English, ``"task"`` = the speech's language) and protocol.

    ``features``: the model's raw audio-tower features of ``table`` rows (``[N, audio_dim]``);
    computed (and cached) through the model when None. Returns the result dict of :func:`run_task`
    (without corpus lookup).
    """
    from .cache import cache_root

    t0 = time.perf_counter()
    skip = skip if skip is not None else SkipLog()
    table = table.reset_index(drop=True)
    if features is None:
        features, _ = model.file_features(table["file"].astype(str).tolist(), cache_dir=cache_root(cache_dir),
                                          skip=skip, progress=progress, desc="audio (eval)")
    features = np.asarray(features, dtype=np.float32)
    if len(features) != len(table):
        raise ValueError(f"features have {len(features)} rows, table {len(table)}")
    labels = list(task.labels)
    from .zeroshot import recipe

    # None: the model's stored recipe (smoothclap.config.InferenceConfig), else the task's protocol
    lang = task.resolve_language(prompt_language if prompt_language is not None else recipe(model, "prompt_language"))
    tmpl = next(t for t in (templates, recipe(model, "templates"), task.template_for(lang)) if t is not None)
    prompts = task.prompt_map(lang)
    if task.fold_by:
        if task.fold_by not in table.columns:
            raise ValueError(f"task {task.name}: fold column {task.fold_by!r} missing from the table")
        fold_values = sorted(table[task.fold_by].astype(str).unique())
        folds = [(v, np.flatnonzero(table[task.fold_by].astype(str).to_numpy() == v)) for v in fold_values]
    else:
        folds = [("all", np.arange(len(table)))]
    per_fold, preds = [], []
    for fname, idx in folds:
        ev = zero_shot_evaluate(model, table.iloc[idx].reset_index(drop=True), labels, prompts=prompts,
                                templates=tmpl, features=features[idx], progress=False, use_groups=use_groups)
        m = ev.metrics
        per_fold.append({"fold": fname, "n": m["n"], "uar": m["uar"], "wa": m["wa"], "macro_f1": m["macro_f1"],
                         "chance_uar": m["chance_uar"], "confusion": m["confusion"]})
        preds.append(ev.predictions.assign(fold=fname))
    conf = np.sum([np.asarray(f["confusion"]) for f in per_fold], axis=0)

    def avg(k):
        return float(np.mean([f[k] for f in per_fold]))

    def sd(k):
        return float(np.std([f[k] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0

    n_missing = int((~np.isfinite(features).all(1)).sum())
    return {
        "task": task.name, "corpus": canonical_corpus(task.corpus), "description": task.description,
        "protocol": task.protocol, "n": int(sum(f["n"] for f in per_fold)), "n_folds": len(per_fold),
        "uar": avg("uar"), "wa": avg("wa"), "macro_f1": avg("macro_f1"), "chance_uar": avg("chance_uar"),
        "uar_sd_folds": sd("uar"), "labels": labels, "prompt_texts": {lab: [tm.format(label=p) for tm in _tmpls(tmpl)]
                                                                      for lab, p in prompts.items()},
        "prompt_language": lang,
        "confusion": conf.tolist(), "folds": per_fold, "paper": dict(task.paper),
        "trained_on": list(getattr(model.config, "trained_on", None) or []),
        "skipped": n_missing, "seconds": time.perf_counter() - t0,  # clips without features (bad files)
        "predictions": pd.concat(preds, ignore_index=True),
    }


def _tmpls(t) -> list[str]:
    from .prompts import resolve_templates

    return resolve_templates(t)


def run_task(task: Task | str, model, data_root, *, cache_dir=None, allow_trained_corpus: bool = False,
             templates=None, skip_bad: bool = False, progress: bool = False, prompt_language: str | None = None) -> dict:
    """Evaluate ``model`` zero-shot on ``task`` with the corpus found under ``data_root``.

    Loads the corpus table (the task's loader options), keeps the task's rows, embeds the audio
    once (cached under ``cache_dir``), scores each fold with :func:`~smoothclap.evaluate.zero_shot_evaluate`
    and averages over folds (IEMOCAP: 5 sessions; others: one pool).

    Refuses (:class:`TrainedCorpusError`) a corpus listed in ``model.config.trained_on``, and clips
    whose audio trained the model (by content, :func:`~smoothclap.evaluate.check_clips_not_trained_on`),
    unless ``allow_trained_corpus``; then the result carries a ``"warning"`` (with the count of
    such clips, also in ``"trained_clips_scored"``).

    Returns a dict: task, corpus, protocol, n, n_folds, uar / wa / macro_f1 / chance_uar (fold
    means), uar_sd_folds, labels, prompt_texts, confusion (summed over folds), folds (per-fold
    metrics), paper (reported UARs), trained_on, skipped, seconds, warning, and predictions (a
    DataFrame; :func:`result_json` drops it for JSON).
    """
    task = get_task(task) if isinstance(task, str) else task
    warning = check_not_trained_on(model, [task.corpus], allow=allow_trained_corpus, what=f"task {task.name}")
    read = SkipLog(skip=skip_bad)  # files left out while reading the corpus
    table = load_task_table(task, data_root, skips=read)
    root = str(find_corpus_root(task, data_root))
    files = table["file"].astype(str).tolist()
    mask = trained_clip_mask(model, files)
    clips = check_clips_not_trained_on(model, files, allow=allow_trained_corpus, what=f"task {task.name}: {root}")
    skip = SkipLog(skip=skip_bad)
    res = score_table(task, model, table, templates=templates, cache_dir=cache_dir, skip=skip, progress=progress,
                      prompt_language=prompt_language)
    res["warning"] = "; ".join(w for w in (warning, clips) if w) or None
    res["trained_clips_scored"] = int(mask.sum()) if mask is not None else None
    res["skipped_files"] = list(read.items) + list(skip.items)
    res["skipped"] = len(res["skipped_files"])
    return res


def result_json(res: dict) -> dict:
    """``res`` without its DataFrame (for JSON files)."""
    return {k: v for k, v in res.items() if k != "predictions"}


def tasks_present(data_root, names: Sequence[str] | None = None) -> tuple[list[Task], dict[str, str]]:
    """Tasks (default: all) whose corpus folder exists under ``data_root``, and name -> reason
    for those skipped."""
    found, missing = [], {}
    for name in names or list(TASKS):
        t = get_task(name)
        try:
            find_corpus_root(t, data_root)
            found.append(t)
        except CorpusNotFound as e:
            missing[t.name] = str(e)
    return found, missing


@dataclass
class TaskRun:
    """What :func:`evaluate_tasks` returns: results (one dict per scored task), tasks skipped
    because their corpus is missing, and tasks refused or failed (name -> reason)."""

    results: list
    missing: dict
    errors: dict
    report: Path | None = None


def evaluate_tasks(model, names: str | Sequence[str], data_root, *, cache_dir=None, templates=None,
                   allow_trained_corpus: bool = False, skip_bad: bool = False, out_dir=None,
                   model_name: str = "", progress: bool = False, baselines: dict | None = None,
                   prompt_language: str | None = None) -> TaskRun:
    """``smoothclap evaluate --task NAME[,NAME]|all``: run each task; with several tasks a task
    whose corpus is missing, refused (trained on it) or in a wrong layout is reported and the
    others are scored; a single named task raises instead. ``baselines`` (name -> model, e.g. a
    ``hf-clap:`` model) are scored on the same tasks with the same prompts: extra rows of the
    report. Writes the report to ``out_dir``."""
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    missing: dict[str, str] = {}
    if names == ["all"]:
        tasks, missing = tasks_present(data_root)
        if not tasks:
            raise CorpusNotFound(f"no task corpus found under {data_root} (known tasks: {', '.join(TASKS)})")
    else:
        tasks = [get_task(n) for n in names]
    results, errors = [], {}
    models = {model_name or "model": model, **(baselines or {})}
    for task in tasks:
        for name, m in models.items():
            try:
                res = run_task(task, m, data_root, cache_dir=cache_dir, allow_trained_corpus=allow_trained_corpus,
                               templates=templates, skip_bad=skip_bad, progress=progress,
                               prompt_language=prompt_language)
            except (TrainedCorpusError, CorpusNotFound, BadInputError) as e:
                if len(tasks) == 1 and len(models) == 1:
                    raise
                key = task.name if len(models) == 1 else f"{task.name} ({name})"
                (missing if isinstance(e, CorpusNotFound) else errors)[key] = str(e)
                continue
            res["model"] = name
            results.append(res)
    run = TaskRun(results, missing, errors)
    if out_dir is not None:
        run.report = write_task_report(results, out_dir, model_path=model_name,
                                       trained_on=getattr(model.config, "trained_on", None),
                                       missing=missing, errors=errors)
    return run


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (float, np.floating)) else ("–" if v is None else str(v))


def results_markdown(results: Sequence[dict]) -> str:
    """Table: task, (model, when several), n, folds, UAR, WA, macro-F1, chance, paper UARs (CLAP /
    Pengi / ParaCLAP / SmoothCLAP)."""
    several = len({r.get("model") for r in results}) > 1
    head = ["task", *(["model"] if several else []), "n", "folds", "UAR", "WA", "macro-F1", "chance",
            *(f"paper {m}" for m in PAPER_METHODS)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in results:
        uar = _fmt(r["uar"]) + (f" ± {r['uar_sd_folds']:.3f}" if r["n_folds"] > 1 else "")
        cells = [r["task"] + (" (!)" if r.get("warning") else ""), *([str(r.get("model"))] if several else []),
                 str(r["n"]), str(r["n_folds"]), uar,
                 _fmt(r["wa"]), _fmt(r["macro_f1"]), _fmt(r["chance_uar"]),
                 *(_fmt(r["paper"].get(m)) for m in PAPER_METHODS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_task_report(results: Sequence[dict], out_dir, *, model_path: str = "", trained_on=None,
                      missing: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Path:
    """``out_dir``: report.md (table + figures), results.json, per task predictions CSV and a
    confusion-matrix PNG (pooled over folds)."""
    from .io import atomic_write_json, atomic_write_text
    from .plots import plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    first = results[0].get("model") if results else None
    for r in results:
        # the model's results keep the plain names; a baseline's get its name appended
        stem = r["task"] if r.get("model") == first else f"{r['task']}_{re.sub(r'[^A-Za-z0-9._-]+', '_', r['model'])[-40:]}"
        png = out / f"confusion_{stem}.png"
        who = "" if r.get("model") == first else f" [{r['model']}]"
        plot_confusion(r["confusion"], r["labels"], f"{r['task']}{who}: UAR {r['uar']:.3f} (n={r['n']})", png)
        figs.append(png.name)
        if "predictions" in r:
            atomic_write_text(out / f"predictions_{stem}.csv", r["predictions"].to_csv(index=False))
    lines = ["# Zero-shot evaluation", "",
             f"Model: `{model_path}`", f"Trained on: {', '.join(trained_on or []) or 'unknown'}", "",
             "Metric: UAR (unweighted average recall; for per-fold tasks the mean over folds ± sd); "
             "WA = accuracy; chance = 1 / classes present. Paper columns: UARs reported by SmoothCLAP "
             "(Jing et al. 2026) for context; they used other encoders and MSP-Podcast training.", "",
             results_markdown(results), ""]
    warns = [r["warning"] for r in results if r.get("warning")]
    if warns:
        lines += ["## WARNING: corpora that trained the model", "", *[f"- {w}" for w in warns], ""]
    if missing:
        lines += ["## Skipped (corpus not found)", "", *[f"- {k}: {v}" for k, v in missing.items()], ""]
    if errors:
        lines += ["## Refused or failed", "", *[f"- {k}: {v}" for k, v in errors.items()], ""]
    lines += ["## Prompts and protocols", ""]
    for r in results:
        prompts = "; ".join(f"{lab} -> " + " / ".join(f'"{p}"' for p in ps) for lab, ps in r["prompt_texts"].items())
        lines.append(f"- **{r['task']}** ({r['protocol']}): {prompts}")
    lines += ["", "## Confusion matrices (pooled over folds)", "", *[f"![{f}]({f})" for f in figs], ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_json(out / "results.json", {"model": model_path, "trained_on": list(trained_on or []),
                                             "results": [result_json(r) for r in results],
                                             "missing": missing or {}, "errors": errors or {}})
    return out / "report.md"
