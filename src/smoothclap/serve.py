"""``smoothclap serve``: a local web page to try emotion models by speaking to them (Gradio).

Upload a clip or record one from the microphone, edit the free-text labels and choose a template
set; the page shows the ranked labels with their probabilities (a bar chart), the clip's
paralinguistic description as the model's training captions would phrase it ("high pitch, loud,
short ...") and, for several files at once, a table with one row per file. Bad audio is reported
with the command line's messages (``x.wav: silent (peak below -70.0 dBFS)``), never a traceback.

* The page classifies through :func:`smoothclap.classification.classify_files`, the function behind
  ``smoothclap classify``: the same clip gets the same probabilities (tested).
* Everything stays on this machine: the server listens on 127.0.0.1 by default, Gradio's
  analytics and version check are off (``GRADIO_ANALYTICS_ENABLED=False``, ``analytics_enabled=False``),
  no share link, no MCP server, no run history, server-side rendering off, and the theme uses the
  system fonts (no web-font download). Uploads go to Gradio's temporary folder and are deleted
  after an hour.
* Gradio is an optional dependency (``pip install 'smoothclap[serve]'``, Apache-2.0); it is
  imported only when a page is built, so ``import smoothclap.serve`` works without it.
* Licences: the descriptions use openSMILE (audEERING, ``smoothclap[egemaps]``), which is licensed
  for research and non-commercial use only; the page says so too. Without openSMILE, or for a
  model without caption bins (a ``hf-clap:`` baseline), the page classifies but does not describe.

``build_app(models)`` returns the Gradio ``Blocks``; ``launch(specs)`` loads the models and
serves them; ``classify_for_page(model, files, labels, template_set)`` is what the page calls
(plain Python, tested without a browser).
"""
from __future__ import annotations

import html
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")

#: The emotions the label box starts with (free text: the user may type any labels).
DEFAULT_LABELS = "angry, happy, sad, neutral, fearful, disgusted, surprised, calm"
#: What ``smoothclap demo`` writes; served when no model is given.
DEMO_MODELS = ("smoothclap_demo/models/smoothclap", "smoothclap_demo/models/clap")
DEFAULT_TEMPLATES = "bare"  # as ``smoothclap classify``
TABLE_COLUMNS = ["file", "top label", "probability", "ranking", "description"]
LICENCE_NOTE = ("Descriptions are computed with openSMILE (audEERING), licensed for research and "
                "non-commercial use only. Audio stays on this machine; uploads are deleted after an hour.")
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue",
                "Arial", "sans-serif")
SYSTEM_MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace")
CSS = """
#message .sc-error { color: #b91c1c; font-weight: 600; white-space: pre-wrap; }
#message .sc-info { white-space: pre-wrap; }
.sc-small { font-size: 0.8em; opacity: 0.75; }
"""


def _gradio():
    """Import Gradio with its analytics off (the env var must be set before any Blocks exists:
    ``launch`` reads it, not the Blocks' ``analytics_enabled``)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError as e:
        if (e.name or "").split(".")[0] == "gradio":
            raise BadInputError("gradio", "not installed: pip install 'smoothclap[serve]'") from None
        raise BadInputError("gradio", f"cannot be imported ({e}): pip install 'smoothclap[serve]'") from None
    return gr


# -- what the page computes ---------------------------------------------------------------------------
def _as_paths(files) -> list[str]:
    """What Gradio hands over (None, a path, a list of paths or of file objects) -> paths."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for f in files:
        if f is None:
            continue
        path = f if isinstance(f, (str, os.PathLike)) else (getattr(f, "path", None) or getattr(f, "name", None))
        if path:
            out.append(str(path))
    return out


def _name(path: str) -> str:
    """A file as the user knows it: Gradio keeps an upload's name inside a temporary folder."""
    return Path(path).name or str(path)


def _empty_table():
    import pandas as pd

    return pd.DataFrame(columns=TABLE_COLUMNS)


def describe_unavailable(model) -> str | None:
    """Why ``model`` cannot describe clips here (None when it can)."""
    from .describe import can_describe

    if can_describe(model):
        return None
    if getattr(model, "caption_bins", None) is None:
        return "the model has no caption bins: trained without eGeMAPS captions, or a hf-clap baseline"
    return "openSMILE is not installed: pip install 'smoothclap[egemaps]' (research / non-commercial licence)"


def _error_text(e: BaseException) -> str:
    """The command line's one line for a user's mistake; a short generic line (and the traceback
    in the server log) for anything else."""
    if isinstance(e, BadInputError):
        return f"error: {e}"
    from .errors import user_message

    msg = user_message(e)
    if msg is not None:
        return f"error: {msg}"
    log.exception("smoothclap serve: classification failed")
    return (f"error: something went wrong while classifying ({type(e).__name__}); "
            "the details are in the server's log")


def classify_for_page(model, files, labels_text: str, template_set: str = DEFAULT_TEMPLATES, *,
                      cache_dir=None) -> tuple[dict[str, float] | None, Any, str, str]:
    """What the page shows for ``files`` (one path, a list of paths, or None).

    Returns ``(label_probs, table, description, message)``: the first classified file's
    ``{label: probability}`` (the bar chart; None when nothing was classified), a DataFrame with
    one row per file (``file``, ``top label``, ``probability``, ``ranking``, ``description``;
    skipped files name their reason), the description text (one line per file when several), and
    a message: ``"error: <file or key>: <reason>"`` (the command line's text) for bad labels, a bad
    template set or bad audio, a summary otherwise. Never raises for a user's mistake; unexpected
    errors give a short message and are logged. Probabilities are those of
    :func:`smoothclap.classification.classify_files` (``skip_bad=True``: one bad file does not stop the
    others)."""
    from .prompts import TEMPLATE_SETS, parse_labels
    from .classification import classify_files

    empty = _empty_table()
    try:
        labels = parse_labels(labels_text if labels_text is not None else "")
        if template_set not in TEMPLATE_SETS:
            raise BadInputError("template set", f"unknown {template_set!r}; known: {', '.join(TEMPLATE_SETS)}")
        paths = _as_paths(files)
        if not paths:
            return None, empty, "", "upload a clip (or record one), then press Classify"
        res = classify_files(model, paths, labels, templates=template_set, cache_dir=cache_dir, skip_bad=True)
    except Exception as e:  # noqa: BLE001 - the page shows one line, never a traceback
        return None, empty, "", _error_text(e)

    ranked = dict(res.ranked(top=len(labels)))
    reasons = {p: r for p, r in res.skipped.items}
    ok_paths = [p for p in paths if p in ranked]
    descs: dict[str, str | None] = {}
    desc_note = describe_unavailable(model)
    if desc_note is None and ok_paths:
        try:
            from .describe import describe_files

            descs = dict(zip(ok_paths, describe_files(model, ok_paths, cache_dir=cache_dir, skip=SkipLog(skip=True))))
        except Exception as e:  # noqa: BLE001 - the ranking stands without its description
            log.exception("smoothclap serve: description failed")
            desc_note = f"openSMILE failed ({type(e).__name__}: {e})"

    rows, desc_lines = [], []
    for p in paths:
        if p in ranked:
            order = ranked[p]
            d = descs.get(p)
            if desc_note is None and d is None:
                d = "(openSMILE could not describe this clip)"
            rows.append({"file": _name(p), "top label": order[0][0], "probability": round(order[0][1], 4),
                         "ranking": ", ".join(f"{lab} {prob:.3f}" for lab, prob in order),
                         "description": d or ""})
            if d:
                desc_lines.append(d if len(paths) == 1 else f"{_name(p)}: {d}")
        else:
            rows.append({"file": _name(p), "top label": "", "probability": float("nan"),
                         "ranking": f"skipped: {reasons.get(p, 'not classified')}", "description": ""})
    import pandas as pd

    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    description = "\n".join(desc_lines) if desc_note is None else f"(no description: {desc_note})"
    if not ok_paths:
        description = ""

    first = next((p for p in paths if p in ranked), None)
    label_probs = {lab: float(prob) for lab, prob in ranked[first]} if first is not None else None
    bad = [f"{_name(p)}: {r}" for p, r in res.skipped.items]
    if not ok_paths:
        message = "\n".join(f"error: {b}" for b in bad) or "error: no file could be classified"
    elif bad:
        message = (f"classified {len(ok_paths)} of {len(paths)} files; skipped {len(bad)}:\n"
                   + "\n".join(f"error: {b}" for b in bad))
    elif len(paths) == 1:
        top_label, top_p = ranked[first][0]
        message = f"{_name(first)}: {top_label} ({top_p:.3f}), templates: {template_set}"
    else:
        message = f"classified {len(paths)} files (the chart shows {_name(first)}), templates: {template_set}"
    return label_probs, table, description, message


def message_html(message: str) -> str:
    """The message as the page shows it (errors in red; text escaped)."""
    if not message:
        return ""
    lines = []
    for line in message.splitlines():
        cls = "sc-error" if line.startswith("error:") else "sc-info"
        lines.append(f'<div class="{cls}">{html.escape(line)}</div>')
    return "\n".join(lines)


def model_summary(name: str, model) -> str:
    """One line about a model for the page (what trained it, whether it can describe clips)."""
    cfg = getattr(model, "config", None)
    trained = ", ".join(map(str, getattr(cfg, "trained_on", None) or [])) or "unknown"
    norm = getattr(cfg, "feature_norm_group", None)
    why = describe_unavailable(model)
    parts = [f"**{name}**: training data: {trained}"]
    if norm:
        parts.append(f"feature normalisation per {norm} (single clips use its training statistics)")
    parts.append("describes clips" if why is None else f"no descriptions ({why})")
    return "; ".join(parts)


def recipe_templates(model) -> str:
    """The template set a model was trained to be used with (its stored recipe), for the page's
    default; :data:`DEFAULT_TEMPLATES` when it has none (or a custom list the page cannot show)."""
    from .prompts import TEMPLATE_SETS
    from .zeroshot import recipe

    t = recipe(model, "templates")
    return t if isinstance(t, str) and t in TEMPLATE_SETS else DEFAULT_TEMPLATES


# -- the page -----------------------------------------------------------------------------------------
def build_app(models: dict[str, Any], *, default_labels: str = DEFAULT_LABELS, cache_dir=None,
              title: str = "smoothclap: speak to an emotion model"):
    """The Gradio page for ``models`` ({name: loaded model}; a model choice when several)."""
    if not models:
        raise BadInputError("models", "no model to serve")
    gr = _gradio()
    from .prompts import TEMPLATE_SETS

    names = list(models)

    def run(model_name, files, labels_text, template_set):
        try:
            model = models[model_name]
        except KeyError:
            return None, _empty_table(), "", message_html(f"error: model: unknown {model_name!r}")
        label, table, desc, msg = classify_for_page(model, files, labels_text, template_set, cache_dir=cache_dir)
        return label, table, desc, message_html(msg)

    template_info = " · ".join(f"{k}: " + (f"“{v[0]}”" if len(v) == 1 else f"{len(v)} templates averaged")
                               for k, v in TEMPLATE_SETS.items())
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}\nRecord or upload speech; the model ranks the labels by how well they describe "
                    "the voice (zero-shot: type any labels).")
        with gr.Row():
            with gr.Column(scale=1):
                model_choice = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1,
                                           elem_id="model", interactive=True)
                info = gr.Markdown(model_summary(names[0], models[names[0]]), elem_id="model-info")
                with gr.Tabs():
                    with gr.Tab("One clip", id="one"):
                        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech",
                                         buttons=["download"], elem_id="audio")
                        classify_one = gr.Button("Classify", variant="primary", elem_id="classify")
                    with gr.Tab("Several files", id="many"):
                        many = gr.File(file_count="multiple", type="filepath", label="Audio files",
                                       elem_id="files")
                        classify_many = gr.Button("Classify files", variant="primary", elem_id="classify-files")
                labels = gr.Textbox(default_labels, label="Labels (comma-separated)", elem_id="labels-text")
                templates = gr.Radio(list(TEMPLATE_SETS), value=recipe_templates(models[names[0]]),
                                     label="Prompt templates", info=template_info, elem_id="templates")
            with gr.Column(scale=1):
                message = gr.HTML("", elem_id="message", js_on_load=None)
                label_out = gr.Label(label="Ranked labels", elem_id="ranked")
                desc_out = gr.Textbox(label="Paralinguistic description (as the model's captions phrase it)",
                                      interactive=False, lines=2, elem_id="description")
        table_out = gr.Dataframe(_empty_table(), label="Per file", interactive=False, wrap=True, elem_id="table",
                                 column_widths=["22%", "10%", "9%", "32%", "27%"])
        gr.Markdown(LICENCE_NOTE, elem_classes=["sc-small"], elem_id="licence")

        outputs = [label_out, table_out, desc_out, message]
        common = dict(fn=run, outputs=outputs, concurrency_id="classify", concurrency_limit=1,
                      show_progress_on=[label_out], api_visibility="private")
        classify_one.click(inputs=[model_choice, audio, labels, templates], **common)
        classify_many.click(inputs=[model_choice, many, labels, templates], **common)
        model_choice.change(lambda n: (model_summary(n, models[n]), recipe_templates(models[n])), inputs=model_choice,
                            outputs=[info, templates], api_visibility="private")
    return app


def _theme(gr):
    """Gradio's default look with the system's fonts (nothing fetched from the web)."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO_FONTS))


@dataclass
class Served:
    """A running page: ``url``, the model names, :meth:`wait` (until Ctrl+C) and :meth:`close`."""

    app: Any
    url: str
    models: list[str] = field(default_factory=list)

    def wait(self) -> None:
        try:
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:  # noqa: BLE001 - already closed
            pass

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def model_names(specs: Sequence[str]) -> list[str]:
    """Short names for model specs: the folder's name (``run/model`` for a training run's ``model``
    or ``best_model``), a ``hf-clap:`` spec as given; the whole spec when names collide."""
    def short(spec: str) -> str:
        if spec.startswith("hf-clap:"):
            return spec
        p = Path(spec)
        if p.name in ("model", "best_model") and p.parent.name:
            return f"{p.parent.name}/{p.name}"
        return p.name or spec

    names = [short(str(s)) for s in specs]
    return [n if names.count(n) == 1 else str(s) for n, s in zip(names, specs)]


def load_models(model_specs: Sequence[str] | None) -> dict[str, Any]:
    """{name: model} for ``model_specs`` (model folders, ONNX export folders, Hub ids or
    ``hf-clap:...``: :func:`smoothclap.models.load_model`); the demo's two models when none is
    given (BadInputError naming what is missing)."""
    from .models import load_model

    specs = [str(s) for s in (model_specs or [])]
    if not specs:
        missing = [s for s in DEMO_MODELS if not Path(s).is_dir()]
        if missing:
            raise BadInputError(", ".join(missing), "not found (no --model given: run `smoothclap demo` here first, "
                                "or give --model DIR|hf-clap:<id or folder>)")
        specs = list(DEMO_MODELS)
    if len(set(specs)) != len(specs):
        dup = sorted({s for s in specs if specs.count(s) > 1})
        raise BadInputError("--model", f"given more than once: {', '.join(dup)}")
    return {name: load_model(spec) for name, spec in zip(model_names(specs), specs)}


def launch(model_specs: Sequence[str] | None = None, *, host: str = "127.0.0.1", port: int | None = 7860,
           open_browser: bool = False, cache_dir=None, quiet: bool = False, block: bool = True) -> Served:
    """Load the models and serve the page on ``host:port`` (``port=None``: the first free one from
    7860). ``block``: serve until Ctrl+C, then close; else return at once (``Served.url``;
    ``Served.wait()`` / ``close()``). No share link, no analytics, nothing fetched from the web."""
    gr = _gradio()
    models = load_models(model_specs)
    app = build_app(models, cache_dir=cache_dir)
    try:
        app.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser, quiet=quiet,
                   prevent_thread_lock=True, show_error=False, ssr_mode=False, mcp_server=False,
                   run_history=False, footer_links=["api", "settings"], theme=_theme(gr), css=CSS)
    except OSError as e:
        where = f"{host}:{port}" if port else host
        log.debug("gradio could not listen on %s: %s", where, e)
        raise BadInputError(where, "cannot listen there (the port is in use, or the host is not an address of "
                            "this machine): choose another --port or --host") from None
    url = app.local_url or f"http://{host}:{app.server_port}/"
    served = Served(app=app, url=url, models=list(models))
    if block:
        served.wait()
    return served
