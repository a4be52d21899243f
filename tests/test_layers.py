"""The layer contract of pyproject.toml ([tool.importlinter]) holds: no module imports a layer above
its own, inside functions included, and every subpackage of ttds has its place in the order.

import-linter (the dev extra) reads the installed package, so what is checked is what runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), f"{exe} is missing: install the dev extra (pip install -e '.[dev]'), which brings import-linter"
    r = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the layer contract is broken (pyproject.toml [tool.importlinter]):\n{r.stdout}\n{r.stderr}"
    assert "0 broken" in r.stdout, r.stdout
