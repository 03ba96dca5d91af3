"""Crane mode == container mode: `buildgen materialize` gives the same tree as the pre-baked
combination image (docker create + export), root-only files included. Real buildx, Docker
daemon and registry, on the repo's own catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from support.catalogs import REPO
from support.components import Registry
from support.images import exported, image_tree
from support.trees import TreeEntry, hardlinks, tree

pytestmark = pytest.mark.docker


class Released(NamedTuple):
    prefix: str
    lock: Path
    env: dict[str, str]
    """The environment buildgen needs to trust the registry."""


def buildgen(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def released(
    base_image: str, docker_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Released:
    prefix, env = f"{docker_registry.host}/conformance", docker_registry.env()
    out = tmp_path_factory.mktemp("bake")
    bake = buildgen("bake", "--push", "--registry", prefix, "--out", str(out), env=env)  # fmt: skip
    assert bake.returncode == 0, bake.stderr[-3000:]
    lock = out / "images.lock.json"
    publish = buildgen("publish", "--registry", prefix, "--lock", str(lock),
                       "--from", str(out / "results.all.json"), env=env)  # fmt: skip
    assert publish.returncode == 0, publish.stderr[-3000:]
    return Released(prefix, lock, env)


@pytest.mark.parametrize(
    ("benchmark", "task", "agent", "image"),
    [
        ("terminal-bench", None, "echo-agent", "evals/terminal-bench--echo-agent:latest"),
        ("swe-mini", "django__django-11099", "shell-agent", "evals/swe-mini--shell-agent:django__django-11099"),
    ],
)  # fmt: skip
def test_crane_mode_equals_container_mode(
    released: Released,
    tmp_path: Path,
    benchmark: str,
    task: str | None,
    agent: str,
    image: str,
) -> None:
    prefix, lock, env = released
    rootfs, record = tmp_path / "rootfs", tmp_path / "record.json"
    args = ["materialize", "--lock", str(lock), "--benchmark", benchmark, "--agent", agent,
            "--gateway", "mock-gateway", "--platform", "linux/amd64", "--rootfs", str(rootfs),
            "--cache", str(tmp_path / "cache"), "--record", str(record),
            "--pipeline", str(REPO / "containers/core/eval-pipeline")]  # fmt: skip
    if task:
        args += ["--task", task]
    result = buildgen(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    crane = image_tree(rootfs)
    container = image_tree(exported(f"{prefix}/{image}", tmp_path / "container"))
    assert crane == container

    # The isolation invariant, explicitly: answers, tests and keys stay root-only.
    tasks = [p for p in crane if p.startswith("/tasks/")]
    assert tasks and all(crane[p].mode == 0o600 and crane[p].uid == 0 for p in tasks)
    assert crane["/tasks"].mode == 0o700 and crane["/tests"].mode == 0o700
    assert crane["/tests"].uid == 0
    assert crane["/opt/gateway"].mode == 0o700 and crane["/opt/gateway"].uid == 0
    assert crane["/opt/gateway/answers.json"].mode == 0o600
    assert crane["/opt/eval"] == TreeEntry("dir", 0o755, 0, 0, "")
    assert crane["/opt/eval/run"].mode == 0o755 and crane["/opt/eval/run"].uid == 0

    used = json.loads(record.read_text())
    assert used["platform"] == "linux/amd64"
    assert sorted(used["images"]) == ["agent", "benchmark", "gateway"]
    entries = json.loads(lock.read_text())["images"]
    key = f"benchmarks/{benchmark}" + (f":{task}" if task else "")
    assert (
        used["images"]["benchmark"]["manifest"]
        == entries[key]["platforms"]["linux/amd64"]["digest"]
    )


def test_second_run_downloads_nothing(released: Released, tmp_path: Path) -> None:
    _, lock, env = released
    args = ["materialize", "--lock", str(lock), "--benchmark", "terminal-bench", "--agent",
            "echo-agent", "--platform", "linux/amd64", "--cache", str(tmp_path / "cache")]  # fmt: skip
    first = buildgen(*args, "--rootfs", str(tmp_path / "one"), env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["unpacked"]["reused"] is False  # extracted, kept, copied
    blobs = sorted((tmp_path / "cache" / "blobs").rglob("sha256/*"))
    times = [b.stat().st_mtime_ns for b in blobs]
    second = buildgen(*args, "--rootfs", str(tmp_path / "two"), "-v", env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["unpacked"]["reused"] is True  # copied, not extracted
    assert [
        b.stat().st_mtime_ns for b in sorted((tmp_path / "cache" / "blobs").rglob("sha256/*"))
    ] == times
    # Without the unpacked cache the layers are extracted straight into the rootfs: same tree.
    third = buildgen(*args, "--rootfs", str(tmp_path / "three"), "--unpacked-limit", "0", env=env)
    assert third.returncode == 0, third.stderr
    assert "unpacked" not in json.loads(third.stdout)
    assert tree(tmp_path / "one") == tree(tmp_path / "two") == tree(tmp_path / "three")
    assert hardlinks(tmp_path / "one") == hardlinks(tmp_path / "two")


def overlay_problem() -> str | None:
    """None when this process can mount an overlay; else why not (CI must be able to)."""
    import tempfile

    from buildgen.crane.overlay import OverlayUnavailable, overlay_mount, unmount

    with tempfile.TemporaryDirectory() as scratch:
        lower = Path(scratch, "lower")
        lower.mkdir()
        try:
            overlay_mount(lower, Path(scratch, "merged"))
        except OverlayUnavailable as exc:
            return str(exc)
        unmount(Path(scratch, "merged"))
    return None


def test_overlay_rootfs(released: Released, tmp_path: Path) -> None:
    problem = overlay_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount an overlay: {problem}")
        pytest.skip(f"cannot mount an overlay here: {problem}")
    prefix, lock, env = released
    args = ["materialize", "--lock", str(lock), "--benchmark", "swe-mini", "--task",
            "django__django-11099", "--agent", "shell-agent", "--gateway", "mock-gateway",
            "--platform", "linux/amd64", "--cache", str(tmp_path / "cache"),
            "--pipeline", str(REPO / "containers/core/eval-pipeline")]  # fmt: skip
    copy = buildgen(*args, "--rootfs", str(tmp_path / "copy"), env=env)
    assert copy.returncode == 0, copy.stderr
    assert json.loads(copy.stdout)["unpacked"]["rootfs"] == "copy"
    mounted = tmp_path / "mounted"
    result = buildgen(*args, "--rootfs", str(mounted), "--overlay", env=env)
    assert result.returncode == 0, result.stderr
    try:
        assert json.loads(result.stdout)["unpacked"] == {
            "chainId": json.loads(copy.stdout)["unpacked"]["chainId"],
            "reused": True,
            "rootfs": "overlay",
        }
        assert os.path.ismount(mounted)
        assert tree(mounted) == tree(tmp_path / "copy")  # root-only paths included
        assert hardlinks(mounted) == hardlinks(tmp_path / "copy")
        image = f"{prefix}/evals/swe-mini--shell-agent:django__django-11099"
        container = image_tree(exported(image, tmp_path / "container"))
        assert image_tree(mounted) == container
        # What a run writes lands in its own layer: the cached image is untouched.
        [kept] = [p for p in (tmp_path / "cache" / "unpacked").iterdir() if p.is_dir()]
        before = tree(kept)
        (mounted / "tasks").chmod(0o755)
        next(p for p in (mounted / "tasks").rglob("*") if p.is_file()).write_text("changed")
        assert tree(kept) == before
        assert any((tmp_path / ".mounted.overlay" / "upper" / "tasks").iterdir())
    finally:
        done = buildgen("materialize", "--unmount", "--rootfs", str(mounted), env=env)
    assert done.returncode == 0, done.stderr
    assert not mounted.exists() and not (tmp_path / ".mounted.overlay").exists()
    again = buildgen("materialize", "--unmount", "--rootfs", str(mounted), env=env)
    assert again.returncode == 3 and "not a mount point" in again.stderr
