"""House rules as tests: layers import only downward, ruff is clean, no pickle, no torch."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_layers_import_only_downward():
    """import-linter's layers contract from pyproject.toml (DESIGN.md's layering)."""
    exe = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_is_clean():
    exe = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which(
        "ruff"
    )
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    dirs = [d for d in ("ember", "tests", "benchmarks", "examples") if (ROOT / d).exists()]
    res = subprocess.run([exe, "check", *dirs], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [exe, "format", "--check", *dirs], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, "ruff format would change:\n" + res.stdout + res.stderr


def _sources():
    return sorted((ROOT / "ember").rglob("*.py"))


def test_no_pickle_and_no_torch_in_ember():
    bad = re.compile(
        r"^\s*(import (pickle|cloudpickle|dill|torch)\b|from (pickle|torch)\b)|"
        r"allow_pickle=True|torch\.load",
        re.M,
    )
    hits = [
        f"{p.relative_to(ROOT)}: {m.group(0).strip()}"
        for p in _sources()
        for m in bad.finditer(p.read_text())
    ]
    assert not hits, "\n".join(hits)


def test_import_ember_does_not_import_heavy_optional_modules():
    code = (
        "import sys, ember; bad = [m for m in ('torch', 'cupy', 'tensorboardX', 'hydra', "
        "'mpi4py', 'tqdm') if m in sys.modules]; print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
