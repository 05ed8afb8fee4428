"""Test helpers for the command line's bad-input contract: exit status 2 and one ``error: ...``
line naming the file or key and the reason, never a traceback (docs/bad-input.md)."""
from __future__ import annotations

from smoothclap.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    """``smoothclap <argv>`` in this process: (exit status, stdout, stderr)."""
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_clean_error(rc, err, *needles, only_line: bool = False) -> str:
    """Exit status 2 and a last stderr line ``error: ...`` holding every needle; with
    ``only_line`` it must be stderr's only line (no warning before it). Returns the line."""
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert not only_line or len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]
