"""Installable like a library: the wheel carries the package and its shipped configs, and an
installed (not editable) copy finds them by name."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked and new, not ignored), copied to ``dest``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, out):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_installs_with_shipped_configs(tmp_path):
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, capture_output=True, text=True, timeout=300)
    (whl,) = dist.glob("smoothclap-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ("smoothclap/configs/paper.yaml", "smoothclap/configs/demo.yaml", "smoothclap/trainer/loop.py",
              "smoothclap/experiments/loco.py", "smoothclap/corpora/registry.py"):
        assert f in names, f
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)],
                   check=True, capture_output=True, text=True, timeout=300)
    code = ("import smoothclap, smoothclap.config as c; from pathlib import Path\n"
            f"assert Path(smoothclap.__file__).is_relative_to({str(site)!r}), smoothclap.__file__\n"
            "p = c.load_config('paper'); d = c.load_config('demo')\n"
            "print(p.train.mode, p.model.embed_dim, d.train.epochs)\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["e2e", "768", "20"]
    cli = subprocess.run([sys.executable, "-m", "smoothclap", "train", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert cli.returncode == 0 and "--config" in cli.stdout, cli.stderr[-2000:]


def test_every_top_level_import_is_a_declared_dependency():
    """What a module imports when it is imported (not inside a function) must be installed by a
    plain ``pip install smoothclap``: the standard library or ``[project] dependencies``
    (optional extras are imported inside the functions that need them)."""
    import ast
    import importlib.metadata as md
    import re
    import tomllib

    declared = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    dists = md.packages_distributions()
    missing = []
    for f in sorted((REPO / "src" / "smoothclap").rglob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "smoothclap":
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not owners & declared:
                    missing.append(f"{f.relative_to(REPO)}: {top} ({', '.join(sorted(owners))})")
    assert not missing, "imported at module level but not in [project] dependencies:\n" + "\n".join(missing)
