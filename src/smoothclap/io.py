"""The one atomic writer: nothing half-written survives an interrupted run.

Every file the project writes (checkpoints, models, reports, embeddings) goes through
:func:`atomic_save`: the content is written to a temporary file in the same folder and moved into
place with ``os.replace``, so a reader sees the old file or the new one, never a torn one.

Files are created with mode ``0o666 & ~umask`` (like ``open()``; a shared run folder or model stays
readable to the group when the umask says so), folders with ``mkdir``'s default. A write that fails
for lack of space (or any other ``OSError``) names the destination file, never the temporary one.
Text is written as UTF-8; file names that are not valid UTF-8 (held as surrogate escapes, as
``os.fsdecode`` gives them) are written back as their original bytes.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import BadInputError


def _make_folder(folder: Path) -> None:
    """``folder`` and its parents (mode from the umask); an existing file in the way is bad input."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        for p in (folder, *folder.parents):
            if p.exists() and not p.is_dir():
                raise BadInputError(p, "exists and is not a folder (a folder is needed here)") from None
        raise


def temp_beside(path: str | Path) -> str:
    """A new empty file beside ``path`` (a hidden name), created with mode ``0o666 & ~umask``
    (``tempfile.mkstemp`` would make it 0600 whatever the umask)."""
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(path))  # pragma: no cover


def file_mode() -> int:
    """The mode new files get here: ``0o666 & ~umask`` (read without changing the umask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    import tempfile

    probe = temp_beside(Path(tempfile.gettempdir()) / "smoothclap-mode")
    try:
        return os.stat(probe).st_mode & 0o777
    finally:
        os.unlink(probe)


def honour_umask(folder: str | Path) -> None:
    """Give the files under ``folder`` the mode new files get (for writers that create their files
    0600, such as safetensors)."""
    mode = file_mode()
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            if not os.path.islink(p) and os.stat(p).st_mode & 0o777 != mode:
                os.chmod(p, mode)


def _disk_full(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has no space left (for writers such as
    ``torch.save`` that report a full disk as something other than an ``OSError``)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail == 0 or st.f_favail == 0


def atomic_save(path: str | Path, save_fn: Callable[[str], None]) -> Path:
    """Call ``save_fn(tmp_path)`` then move the finished file into place (same folder)."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(path, "is a folder (a file is written here)")
    _make_folder(path.parent)
    tmp = None
    try:
        tmp = temp_beside(path)
        mode = os.stat(tmp).st_mode & 0o777  # 0o666 & ~umask, as the kernel created it
        save_fn(tmp)
        if os.stat(tmp).st_mode & 0o777 != mode:  # a writer that replaced the file (safetensors: 0600)
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.errno is not None and (e.filename is None or (tmp is not None and str(e.filename) == tmp)):
            # name the destination: the temporary file is gone and means nothing to the user
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, Exception) and _disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A new, empty temporary folder beside ``path`` to write a folder's files into; when the block
    ends without an error it replaces ``path`` in one rename (the previous folder, if any, removed
    after), and on an error it is removed: ``path`` is the old folder or the complete new one."""
    out = Path(path)
    _make_folder(out.parent)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.old{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_save(path, lambda t: Path(t).write_text(text, encoding="utf-8", errors="surrogateescape"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str))
