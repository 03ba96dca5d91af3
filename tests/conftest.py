"""Shared fixtures. Tests that need a real component (buildx, a Docker daemon, a registry) FAIL
when it is missing in CI (CI=true or BUILDGEN_REQUIRE_COMPONENTS=1) and skip elsewhere, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from components import Registry, start_registry  # noqa: E402


def components_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("BUILDGEN_REQUIRE_COMPONENTS") == "1"


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere: a missing component must never pass silently in CI."""
    if components_required():
        pytest.fail(f"required component missing: {reason}", pytrace=False)
    pytest.skip(reason)


def _buildx_ok() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    result = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True)
    if result.returncode != 0:
        return f"docker buildx is not installed: {result.stderr.strip()}"
    return None


def _docker_ok() -> str | None:
    problem = _buildx_ok()
    if problem:
        return problem
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True
    )
    if result.returncode != 0:
        return f"no Docker daemon answers (set DOCKER_HOST?): {result.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def buildx() -> None:
    problem = _buildx_ok()
    if problem:
        missing(problem)


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    problem = _docker_ok()
    if problem:
        missing(problem)


def _serve_registry(workdir: Path, tls: bool) -> Iterator[Registry]:
    if shutil.which("docker-registry") is None:
        missing("docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry(workdir, tls=tls)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-http registry on loopback, for buildgen's own clients (never the Docker daemon's:
    see `docker_registry`)."""
    yield from _serve_registry(tmp_path_factory.mktemp("registry"), tls=False)


@pytest.fixture(scope="session")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An https registry on loopback (the test CA: `Registry.env()`, `Registry.options()`) for
    tests where the Docker daemon pushes or pulls: dockerd 26.1 can crash on plain-http loopback
    registries (components.py says why)."""
    yield from _serve_registry(tmp_path_factory.mktemp("docker-registry"), tls=True)


@pytest.fixture(scope="session")
def oracles() -> None:
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (apt-get install {tool})")


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


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str:
    """The local base image the repo's catalog builds on (Debian bookworm with python3 and
    bubblewrap; nothing can be pulled on these machines), made as scripts/dev-setup makes it.

    Also vendors the crane runner's Python dependencies into its build context, which every
    bake of the repo's catalog needs."""
    subprocess.run(["bash", str(REPO / "scripts" / "prepare-crane-runner")], check=True,
                   capture_output=True)  # fmt: skip
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "make-base-image")],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.fail(f"scripts/make-base-image failed:\n{made.stderr[-3000:]}")
    return BASE_IMAGE


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
