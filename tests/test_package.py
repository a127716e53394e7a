"""The package as a user installs it: a wheel built from the source tree holds every module of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_of_the_source_tree(tmp_path):
    """``packages = ["gaelp_bayes"]`` made a wheel of 29 files without ``gaelp_bayes/model/``: ``import
    gaelp_bayes.model`` failed after ``pip install``, while the editable install of the Makefile hid it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "gaelp_bayes", source / "gaelp_bayes", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "gaelp_bayes").rglob("*.py")}
    assert modules <= inside, sorted(modules - inside)
    assert "gaelp_bayes/model/laplace/engine.py" in inside
