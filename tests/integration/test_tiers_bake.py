"""A tiered per-task benchmark (1 base, 3 environments, 9 tasks, two platforms) built by real
`docker buildx bake` in one run, published and locked in a real registry: each image's layers
are its parent's plus its own, a changed environment rebuilds exactly itself and its tasks (the
base taken by digest), a release with nothing changed builds nothing, and `bake --print`
resolves the files to the plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.bakeprint import assert_files_match_plan
from support.components import Registry

from buildgen.build.bake import BakeOptions, prepare
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan
from buildgen.registry import RegistryClient

pytestmark = pytest.mark.docker

ENVS = ("py39", "py310", "py311")
TASKS = [(f"t-{i}", ENVS[i % 3]) for i in range(9)]
CATALOG = """\
version: 1
registry: r.example/unused
platforms: [linux/amd64, linux/arm64]
benchmarks:
  swe:
    tasks: tasks.tsv
    tiers:
      base: {context: base}
      env: {from: base, key: env, context: "env/{env}"}
    from: env
    context: "tasks/{task}"
    args: {ENV: "{env}"}
"""


def _write(root: Path) -> Path:
    def put(directory: str, dockerfile: str, content: str) -> None:
        (root / directory).mkdir(parents=True)
        (root / directory / "Dockerfile").write_text(dockerfile)
        (root / directory / "content.txt").write_text(content)

    put("base", "FROM scratch\nCOPY content.txt /base.txt\n", "base\n")
    for env in ENVS:
        put(f"env/{env}", "FROM base\nCOPY content.txt /env.txt\n", f"{env}\n")
    for task, _env in TASKS:
        put(f"tasks/{task}", "FROM env\nARG ENV\nCOPY content.txt /task.txt\n", f"{task}\n")
    rows = "".join(f"{task}\t{env}\n" for task, env in TASKS)
    (root / "tasks.tsv").write_text(f"id\tenv\n{rows}")
    (root / "catalog.yaml").write_text(CATALOG)
    return root / "catalog.yaml"


def _buildgen(registry: Registry, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True,
                          text=True, cwd=cwd, env=registry.env())  # fmt: skip


def _release(registry: Registry, root: Path, prefix: str) -> str:
    """bake --push, then publish: what a release runs; bake's log."""
    baked = _buildgen(registry, root, "bake", "--push", "--registry", prefix)
    assert baked.returncode == 0, baked.stderr[-3000:]
    published = _buildgen(registry, root, "publish", "--registry", prefix,
                          "--from", str(root / "build/bake/results.all.json"))  # fmt: skip
    assert published.returncode == 0, published.stderr[-3000:]
    return baked.stderr


@pytest.fixture(scope="module")
def released(
    docker_daemon: None, docker_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("tiers")
    _write(root)
    prefix = f"{docker_registry.host}/tiers"
    log = _release(docker_registry, root, prefix)
    assert "13 image(s) to build in 1 bake file(s)" in log, log[-2000:]
    return root, prefix


def test_each_image_is_its_parents_layers_plus_its_own(
    released: tuple[Path, str], docker_registry: Registry
) -> None:
    root, prefix = released
    lock = json.loads((root / "images.lock.json").read_text())["images"]
    assert len(lock) == 13 and "benchmarks/swe/env:py310" in lock

    def layers(key: str, platform: str) -> list[str]:
        repository = f"{prefix}/{key.split(':')[0]}"
        manifest = client.get_manifest(repository, lock[key]["platforms"][platform]["digest"])
        return [layer["digest"] for layer in manifest.json()["layers"]]

    with RegistryClient(docker_registry.options()) as client:
        for platform in ("linux/amd64", "linux/arm64"):
            base = layers("benchmarks/swe/base", platform)
            assert len(base) == 1
            for env in ENVS:
                env_layers = layers(f"benchmarks/swe/env:{env}", platform)
                assert env_layers[:-1] == base and len(env_layers) == 2
            for task, env in TASKS:
                task_layers = layers(f"benchmarks/swe:{task}", platform)
                assert task_layers[:-1] == layers(f"benchmarks/swe/env:{env}", platform)


def test_a_changed_environment_rebuilds_itself_and_its_tasks_only(
    released: tuple[Path, str], docker_registry: Registry
) -> None:
    root, prefix = released
    (root / "env/py310/content.txt").write_text("py310, patched\n")
    status = _buildgen(docker_registry, root, "plan", "--status", "--json", "--registry", prefix)
    assert status.returncode == 0, status.stderr
    changed = sorted(r["key"] for r in json.loads(status.stdout) if r["status"] == "changed")
    assert changed == ["benchmarks/swe/env:py310", "benchmarks/swe:t-1", "benchmarks/swe:t-4",
                       "benchmarks/swe:t-7"]  # fmt: skip
    log = _release(docker_registry, root, prefix)
    assert "4 image(s) to build in 1 bake file(s) under build/bake, 9 unchanged" in log
    hcl = "".join(path.read_text() for path in (root / "build/bake").glob("*.hcl"))
    assert f'"base" = "docker-image://{prefix}/benchmarks/swe/base@sha256:' in hcl
    # Released once more with nothing changed: nothing is built.
    log = _release(docker_registry, root, prefix)
    assert "0 image(s) to build in 0 bake file(s) under build/bake, 13 unchanged" in log


def test_bake_print_resolves_the_tiers_to_the_plan(buildx: None, tmp_path: Path) -> None:
    plan = make_plan(load_catalog(_write(tmp_path)))
    for shard_size in (500, 3):  # one file; and files that borrow their tiers from each other
        bake = prepare(plan, BakeOptions(out=tmp_path / f"out{shard_size}", shard_size=shard_size))
        assert assert_files_match_plan(bake.files, plan, bake.cwd) == len(bake.files)
