"""Shared fixtures. Tests that need a real component (buildx, a Docker daemon, a registry) FAIL
when it is missing in CI (CI=true or BUILDGEN_REQUIRE_COMPONENTS=1) and skip elsewhere, saying why."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.catalogs import BASE_IMAGE, REPO
from support.components import Registry, missing, start_registry


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
