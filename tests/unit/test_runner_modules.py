"""The runner image ships the modules its verbs import, as the import graph says
(scripts/runner-modules writes them into .dockerignore; this keeps the list current)."""

from __future__ import annotations

import subprocess
import sys

from support.catalogs import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts/runner-modules"), *args],
                          capture_output=True, text=True)  # fmt: skip


def test_the_dockerignore_lists_what_the_runner_imports() -> None:
    check = run("--check")
    assert check.returncode == 0, check.stderr
    files = run().stdout.split()
    assert "buildgen/crane/materialize.py" in files and "buildgen/registry/client.py" in files
    assert "buildgen/cli/materialize.py" in files and "buildgen/cli/resolve.py" in files
    # what only the build and release sides need stays out of the runner
    assert not [f for f in files if f.startswith(("buildgen/build/", "buildgen/release/"))]
    for module in ("catalog", "catalog_models", "plan", "combination", "yamlsource", "inputs"):
        assert f"buildgen/model/{module}.py" not in files
