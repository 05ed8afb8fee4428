"""Errors for bad input and a counted, logged skip list (``--skip-bad``)."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("smoothclap")


class UserError(ValueError):
    """A user's mistake (bad input, a bad setting, a refused request): shown as one line, never as a
    traceback (:func:`user_message`)."""


class BadInputError(UserError):
    """Input that cannot be used. Always names the offending file (or table) and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelFilesError(BadInputError, OSError):
    """A model's files cannot be used: a missing folder, weights only in pickle files (never
    loaded: unpickling can run code), a hub id that cannot be reached. Bad input (one line), and an
    ``OSError`` for callers that catch loading failures as such."""


def user_message(e: BaseException) -> str | None:
    """The one line (``<file or key>: <reason>``) for a user's mistake: bad input, a bad setting, a
    refused corpus, a full disk, a missing file. None for anything else (a bug: show the traceback).
    Line breaks inside (a parser's multi-line message quoted in the reason) become spaces."""
    msg = _user_message(e)
    if msg is None:
        return None
    return " ".join(part.strip() for part in msg.splitlines() if part.strip()).replace(" )", ")")


def _user_message(e: BaseException) -> str | None:
    import errno

    if isinstance(e, UserError):
        return str(e)
    user_errnos = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
                   errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ELOOP)
    if isinstance(e, OSError) and e.errno in user_errnos:
        import os

        where = os.fsdecode(e.filename) if e.filename is not None else "disk"
        return f"{where}: {e.strerror or e}"
    if isinstance(e, FileNotFoundError):  # e.g. a task corpus folder that is not there
        return str(e)
    return None


@dataclass
class SkipLog:
    """Collects skipped inputs when the user asked to skip bad files.

    With ``skip=False`` (the default) :meth:`handle` re-raises, so errors stay loud.
    """

    skip: bool = False
    items: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, err: BadInputError) -> None:
        if not self.skip:
            raise err
        log.warning("skipping %s", err)
        self.items.append((err.path, err.reason))

    @property
    def count(self) -> int:
        return len(self.items)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(reason.split(" (")[0] for _, reason in self.items))
