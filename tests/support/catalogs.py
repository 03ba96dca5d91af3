"""Catalogs and build contexts for the tests, and the repo's own catalog copied as a fresh
checkout has it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

BASE_DOCKERFILE = "FROM scratch\nCOPY . /x/\n"


def make_tree(root: Path, *dirs: str, files: dict[str, str] | None = None) -> None:
    """Create build contexts (each with a Dockerfile) and other files under `root`."""
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "Dockerfile").write_text(BASE_DOCKERFILE)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def write_catalog(root: Path, text: str, *dirs: str, files: dict[str, str] | None = None) -> Path:
    make_tree(root, *dirs, files=files)
    path = root / "catalog.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


BASE_IMAGE = "local/crane-base:latest"  # the repo catalog's BASE_IMAGE for the crane runner


REPO_CATALOG_FILES = ("catalog.yaml", "tasks", "containers", "buildgen",
                      "pyproject.toml", ".dockerignore")  # fmt: skip


def copy_repo_catalog(dest: Path) -> Path:
    """The repo's catalog and everything its images are built from, as a fresh checkout has
    them (file times kept); returns the catalog's path."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_CATALOG_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            shutil.copy2(source, dest / name)
    return dest / "catalog.yaml"
