"""`buildgen materialize` never reads or writes outside its roots, refuses bad input without a
traceback, and makes the same rootfs in every way of making it (copy, overlay, direct).

Each test pushes small images to the real registry (tests/support/hostile.py layers) and runs the CLI
as the crane runner does (`materialize --from-env`, the EVAL_* variables of `resolve`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.catalogs import REPO
from support.components import Registry, require_overlay
from support.hostile import Layer, d, f, hard, layer, push_image, sym
from support.trees import hardlinks, snapshot, tree

from buildgen.registry import RegistryClient

pytestmark = pytest.mark.registry

BENCHMARK = [layer(d("testbed"), f("testbed/app.py", "print('hi')\n"), d("tasks", 0o700),
                   f("tasks/one.json", '{"answer": 42}\n', 0o600))]  # fmt: skip
AGENT = [layer(d("opt"), d("opt/agent"), f("opt/agent/install.sh", "#!/bin/sh\n", 0o755))]
GATEWAY = [layer(d("opt"), d("opt/gateway", 0o700), f("opt/gateway/key", "sk-1\n", 0o600))]


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[RegistryClient]:
    with RegistryClient() as c:
        yield c


def pushed(
    client: RegistryClient,
    registry: Registry,
    name: str,
    benchmark: list[Layer] = BENCHMARK,
    agent: list[Layer] = AGENT,
    gateway: list[Layer] = GATEWAY,
) -> dict[str, str]:
    """Push the three images under `name`; the EVAL_* variables `resolve` would print."""
    env = {"EVAL_PLATFORM": "linux/amd64"}
    images = {
        "benchmark": (benchmark, ""),
        "agent": (agent, "/opt/agent:0755:0:0"),
        "gateway": (gateway, "/opt/gateway:0700:0:0"),
    }
    for role, (layers, provides) in images.items():
        repository = f"{registry.host}/safety/{name}/{role}"
        manifest = push_image(client, repository, "1.0.0", layers)
        size = sum(len(x.blob) for x in layers) + 1000
        prefix = f"EVAL_{role.upper()}"
        env |= {f"{prefix}_IMAGE": f"{repository}@{manifest}",
                f"{prefix}_PLATFORM_DIGEST": manifest, f"{prefix}_SIZE": str(size),
                f"{prefix}_KEY": f"{role}s/{name}"}  # fmt: skip
        if provides:
            env[f"{prefix}_PROVIDES"] = provides
    return env


def materialize(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EVAL_")}
    return subprocess.run([sys.executable, "-m", "buildgen", "materialize", "--from-env", *args],
                          capture_output=True, text=True, cwd=REPO, env={**base, **env})  # fmt: skip


def host_secrets(top: Path) -> Path:
    """A host directory shaped like what an agent or gateway image provides."""
    host = top / "host"
    for sub in ("agent", "gateway"):
        (host / "opt" / sub).mkdir(parents=True)
        (host / "opt" / sub / "secret").write_text("host secret\n")
        (host / sub).mkdir()
        (host / sub / "secret").write_text("host secret\n")
    return host


@pytest.mark.parametrize("role", ["agent", "gateway"])
@pytest.mark.parametrize("shape", ["opt", "opt/agent", "opt/gateway"])
def test_an_image_symlinked_to_the_host_reads_nothing_of_it(
    client: RegistryClient, registry: Registry, tmp_path: Path, role: str, shape: str
) -> None:
    # Found: an agent image holding only `opt -> /some/host/dir` made materialize copy that
    # host directory's agent/... into rootfs/opt/agent (exit 0). Each such link now resolves
    # inside the image, where nothing is behind it.
    host = host_secrets(tmp_path)
    target = str(host) if shape == "opt" else str(host / shape.split("/")[1])
    parent = [d("opt")] if "/" in shape else []
    images = {role: [layer(*parent, sym(shape, target))]}
    env = pushed(client, registry, f"{role}-{shape.replace('/', '-')}", **images)  # type: ignore[arg-type]
    before = snapshot(host)
    rootfs = tmp_path / "rootfs"
    result = materialize(env, "--rootfs", str(rootfs), "--cache", str(tmp_path / "cache"))
    provided = "/opt/agent" if role == "agent" else "/opt/gateway"
    assert result.returncode == 3, result.stderr
    assert f"has no directory {provided}" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(host) == before
    found = [p for p in rootfs.rglob("*")] if rootfs.exists() else []
    assert not [p for p in found if p.name == "secret"]


def test_a_benchmark_symlink_to_the_host_is_followed_inside_the_rootfs(
    client: RegistryClient, registry: Registry, tmp_path: Path
) -> None:
    # The benchmark's /opt points at a host path: the agent's files land under that path
    # *inside the rootfs* (where Docker's COPY puts them), and the host is untouched.
    host = host_secrets(tmp_path)
    benchmark = [*BENCHMARK, layer(sym("opt", str(host / "opt")))]
    env = pushed(client, registry, "benchmark-opt-link", benchmark=benchmark)
    before = snapshot(host)
    rootfs = tmp_path / "rootfs"
    result = materialize(env, "--rootfs", str(rootfs), "--cache", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert snapshot(host) == before
    fused = tree(rootfs)
    inside = f"/{str(host).lstrip('/')}/opt"
    assert fused["/opt"].content == str(host / "opt")
    assert fused[f"{inside}/agent/install.sh"].mode == 0o755
    assert fused[f"{inside}/gateway"].mode == 0o700
    assert fused[f"{inside}/gateway/key"].mode == 0o600


def test_rootfs_that_is_a_file_is_bad_input(
    client: RegistryClient, registry: Registry, tmp_path: Path
) -> None:
    # Found: a traceback (NotADirectoryError from rootfs.iterdir()), exit 1.
    env = pushed(client, registry, "rootfs-file")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for name in ("file", "link"):
        result = materialize(env, "--rootfs", str(tmp_path / name), "--cache", str(tmp_path / "c"))
        assert result.returncode == 2, result.stderr
        assert "is not a directory" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "file").read_text() == "x"


def test_long_paths_in_every_way_of_making_the_rootfs(
    client: RegistryClient, registry: Registry, tmp_path: Path
) -> None:
    # Found: a legal 4.5 KB path extracted with --unpacked-limit 0 but failed when the unpacked
    # tree was copied ("File name too long").
    require_overlay(tmp_path)
    deep = "/".join(["p" * 40 + str(i) for i in range(110)])
    assert len(deep) > 4500
    benchmark = [
        *BENCHMARK,
        layer(f(f"{deep}/file", "deep", 0o600), hard(f"{deep}/link", f"{deep}/file", 0o600),
              d(f"{deep}/ro", 0o500), sym(f"{deep}/up", "../" * 110)),
    ]  # fmt: skip
    env = pushed(client, registry, "long-paths", benchmark=benchmark)
    ways = {
        "direct": ["--unpacked-limit", "0"],
        "copy-cold": [],
        "copy-warm": [],
        "overlay": ["--overlay"],
    }
    trees = {}
    cache = tmp_path / "cache"
    for way, flags in ways.items():
        rootfs = tmp_path / way
        result = materialize(env, "--rootfs", str(rootfs), "--cache", str(cache), *flags)
        assert result.returncode == 0, f"{way}: {result.stderr}"
        trees[way] = (tree(rootfs), hardlinks(rootfs))
        if way == "overlay":
            assert "copying the image instead" not in result.stderr
            subprocess.run([sys.executable, "-m", "buildgen", "materialize", "--unmount",
                            "--rootfs", str(rootfs)], check=True, cwd=REPO)  # fmt: skip
    assert trees["direct"][0][f"/{deep}/file"].mode == 0o600
    assert trees["direct"][1] == {frozenset({f"/{deep}/file", f"/{deep}/link"})}
    for way in ways:
        assert trees[way] == trees["direct"], way


@pytest.mark.parametrize("flags", [[], ["--unpacked-limit", "0"]])
def test_a_refused_layer_leaves_nothing_half_made(
    client: RegistryClient, registry: Registry, tmp_path: Path, flags: list[str]
) -> None:
    bad = layer(d("usr"), hard("usr/link", "usr/missing"))
    env = pushed(client, registry, "refused", benchmark=[*BENCHMARK, bad])
    rootfs, cache = tmp_path / "rootfs", tmp_path / "cache"
    result = materialize(env, "--rootfs", str(rootfs), "--cache", str(cache), *flags)
    assert result.returncode == 3, result.stderr
    message = [line for line in result.stderr.splitlines() if bad.digest in line]
    assert message and "entry 'usr/link'" in message[0] and "does not exist" in message[0]
    assert "Traceback" not in result.stderr
    assert not rootfs.exists()
    unpacked = cache / "unpacked"
    left = [p.name for p in unpacked.iterdir()] if unpacked.exists() else []
    assert [name for name in left if not name.endswith(".lock")] == []
    # an empty --rootfs given is left empty, not removed
    rootfs.mkdir()
    result = materialize(env, "--rootfs", str(rootfs), "--cache", str(cache), *flags)
    assert result.returncode == 3 and rootfs.is_dir() and not any(rootfs.iterdir())
