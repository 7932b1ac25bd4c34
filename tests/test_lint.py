"""Static checks on the project's own Python: no undefined names, unused imports or variables."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import PROJECT_ROOT


def test_pyflakes_rules_pass():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache",
                             "--exclude", ".venv,node_modules,build", "."],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
