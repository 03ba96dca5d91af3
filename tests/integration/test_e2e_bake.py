"""End to end: `buildgen bake --push` builds the repo's catalog with a real Docker daemon and
buildx and pushes to a real registry, `buildgen publish` tags it, and the images hold the right
files, modes and owners (read back with skopeo and umoci)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.catalogs import REPO
from support.components import Registry
from support.oci import inspect_raw, tree, unpack

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def pushed(
    base_image: str,
    docker_registry: Registry,
    oracles: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    prefix = f"{docker_registry.host}/e2e"
    out = tmp_path_factory.mktemp("bake")
    result = subprocess.run(
        [sys.executable, "-m", "buildgen", "bake", "--catalog", str(REPO / "catalog.yaml"),
         "--push", "--registry", prefix, "--out", str(out), "--", "--progress", "plain"],
        capture_output=True, text=True, env=docker_registry.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    published = subprocess.run(
        [sys.executable, "-m", "buildgen", "publish", "--catalog", str(REPO / "catalog.yaml"),
         "--registry", prefix, "--lock", str(out / "images.lock.json"),
         "--from", str(out / "results.all.json")],
        capture_output=True, text=True, env=docker_registry.env(),
    )  # fmt: skip
    assert published.returncode == 0, published.stderr[-4000:]
    return prefix


def test_multi_platform_index(pushed: str) -> None:
    index = inspect_raw(f"{pushed}/agents/echo-agent:2.0.14")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in index["manifests"]
        if m["platform"]["architecture"] != "unknown"
    }
    assert platforms == {"linux/amd64", "linux/arm64"}


def test_amd64_only_task_image(pushed: str) -> None:
    index = inspect_raw(f"{pushed}/benchmarks/swe-mini:django__django-11099")
    archs = {m["platform"]["architecture"] for m in index.get("manifests", [])} - {"unknown"}
    assert archs == {"amd64"}


def ours(entries: dict[str, str]) -> dict[str, str]:
    """What the catalog's images add to their base (Debian: scripts/make-base-image)."""
    mine = ("/testbed", "/tasks", "/tests", "/opt/agent", "/opt/gateway", "/opt/eval")
    return {p: e for p, e in entries.items() if p == "/opt" or p.startswith(mine)}


SHARED_BENCHMARK = {
    "/testbed": "d 0755 0:0",
    "/testbed/README.md": "f 0644 0:0",
    "/testbed/app.py": "f 0644 0:0",
    "/testbed/run.sh": "f 0644 0:0",
    "/tasks": "d 0700 0:0",
    "/tasks/hello-world.json": "f 0600 0:0",
    "/tasks/fix-permissions.json": "f 0600 0:0",
    "/tests": "d 0700 0:0",
    "/tests/run.sh": "f 0700 0:0",
}
AGENT = {
    "/opt": "d 0755 0:0",
    "/opt/agent": "d 0755 0:0",
    "/opt/agent/install.sh": "f 0755 0:0",
    "/opt/agent/bin": "d 0755 0:0",
    "/opt/agent/bin/agent": "f 0755 0:0",
}
PIPELINE = {"/opt": "d 0755 0:0", "/opt/eval": "d 0755 0:0", "/opt/eval/run": "f 0755 0:0"}
GATEWAY = {
    "/opt": "d 0755 0:0",
    "/opt/gateway": "d 0700 0:0",
    "/opt/gateway/bin": "d 0700 0:0",
    "/opt/gateway/bin/gateway": "f 0700 0:0",
    "/opt/gateway/answers.json": "f 0600 0:0",
}


def test_shared_benchmark_files(pushed: str, tmp_path: Path) -> None:
    rootfs = unpack(f"{pushed}/benchmarks/terminal-bench:1.0.0", "amd64", tmp_path)
    entries = tree(rootfs)
    assert ours(entries) == {**SHARED_BENCHMARK, "/opt": "d 0755 0:0"}
    assert "/usr/bin/python3" in entries and "/bin" in entries  # its grader's interpreter


def test_gateway_is_root_only(pushed: str, tmp_path: Path) -> None:
    assert tree(unpack(f"{pushed}/models/mock-gateway:1.74.0", "arm64", tmp_path)) == GATEWAY


def test_combination_keeps_root_only_modes(pushed: str, tmp_path: Path) -> None:
    rootfs = unpack(f"{pushed}/evals/terminal-bench--echo-agent:latest", "amd64", tmp_path)
    assert ours(tree(rootfs)) == {**SHARED_BENCHMARK, **AGENT, **GATEWAY, **PIPELINE}


def test_per_task_combination(pushed: str, tmp_path: Path) -> None:
    ref = f"{pushed}/evals/swe-mini--shell-agent:sympy__sympy-20590"
    rootfs = unpack(ref, "amd64", tmp_path)
    assert ours(tree(rootfs)) == {
        "/testbed": "d 0755 0:0",
        "/testbed/README.md": "f 0644 0:0",
        "/testbed/symbols.py": "f 0644 0:0",
        "/tasks": "d 0700 0:0",
        "/tasks/task.json": "f 0600 0:0",
        "/tests": "d 0700 0:0",
        "/tests/run.sh": "f 0700 0:0",
        "/tests/test_symbols.py": "f 0700 0:0",
        **AGENT,
        **GATEWAY,
        **PIPELINE,
    }
    assert "sympy__sympy-20590" in (rootfs / "tasks/task.json").read_text()


def test_crane_runner_carries_buildgen(pushed: str, tmp_path: Path) -> None:
    rootfs = unpack(f"{pushed}/core/crane-runner:0.2.1", "amd64", tmp_path)
    assert (rootfs / "opt/buildgen/buildgen/cli/__init__.py").is_file()
    assert (rootfs / "usr/bin/bwrap").is_file()  # the locally made base image, with bubblewrap
    assert (rootfs / "opt/buildgen/pipeline/opt/eval/run").is_file()  # the eval pipeline
    assert not (rootfs / "opt/buildgen/.git").exists()  # .dockerignore keeps the context small
