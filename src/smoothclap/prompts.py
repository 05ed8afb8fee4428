"""Label prompts: template sets, label lists (no PyTorch here: the ONNX runtime uses it too)."""
from __future__ import annotations

from typing import Sequence

from .errors import BadInputError

# Prompt template sets; "{label}" is replaced by the label's prompt word(s).
TEMPLATE_SETS: dict[str, list[str]] = {
    "bare": ["{label}"],
    "feeling": ["this person is feeling {label}."],
    "ensemble": [
        "{label}",
        "this person is feeling {label}.",
        "a {label} voice",
        "the speaker sounds {label}.",
        "speaker is {label}",
    ],
}


def resolve_templates(templates: str | Sequence[str] | None) -> list[str]:
    """A template-set name, one template with ``{label}``, or a list of them -> list of templates."""
    if templates is None:
        return TEMPLATE_SETS["bare"]
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        if "{label}" in templates:
            return [templates]
        raise BadInputError("templates", f"unknown template set {templates!r}; known: {sorted(TEMPLATE_SETS)} "
                            "or a string containing {label}")
    out = list(templates)
    for t in out:
        if "{label}" not in t:
            raise BadInputError("templates", f"template {t!r} has no {{label}} placeholder")
    return out


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """``"angry, happy,sad"`` (or a list) -> ``["angry", "happy", "sad"]``; at least two, no
    empty or duplicated label (a duplicate would change the chance level)."""
    items = [x.strip() for x in (text.split(",") if isinstance(text, str) else text)]
    for x in items:
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 (a shell argument): no text to embed
            raise BadInputError("labels", f"{x!r} is not valid UTF-8 text") from None
    if any(not x for x in items):
        raise BadInputError("labels", f"empty label in {text!r}")
    dup = sorted({x for x in items if items.count(x) > 1})
    if dup:
        raise BadInputError("labels", f"duplicated label(s) {dup} in {text!r} (a duplicate changes the chance level)")
    if len(items) < 2:
        raise BadInputError("labels", f"need at least two labels, got {items}")
    return items
