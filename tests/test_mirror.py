"""A pull-through mirror serves crane mode's pulls: `buildgen materialize --mirror` fills it (a
second CNCF distribution registry in proxy mode in front of the origin), and once the origin is
stopped, materialize still succeeds from the mirror alone, by digest, with the same tree.

The images are small but real: gzip tar layers pushed with the registry client (tests/hostile.py),
a benchmark with a static busybox as /bin/sh (the crane runner's test runs the agent's
install.sh in it), an agent with /opt/agent/install.sh and a root-only gateway."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import REPO, missing
from hostile import d, f, layer, push_image, sym
from registries import RunningRegistry, start_registry
from trees import tree

from buildgen.registry import RegistryClient

pytestmark = pytest.mark.registry

INSTALL_SH = """#!/bin/sh
# links the agent into place, as a real agent's install.sh does
set -e
/bin/busybox mkdir -p /usr/local/bin
/bin/busybox ln -s /opt/agent/bin/agent /usr/local/bin/agent
echo "installed in $(/bin/busybox pwd)" > /opt/agent/installed
"""


@dataclass
class Mirrored:
    """Three images on `origin`, a pull-through `mirror` of it and the EVAL_* variables that
    `buildgen resolve --format env` would print for them."""

    origin: RunningRegistry
    mirror: RunningRegistry
    env: dict[str, str]
    blobs: list[str]
    """Every config and layer digest materialize needs."""

    def mirror_has_blobs(self) -> bool:
        root = self.mirror.workdir / "storage/docker/registry/v2/blobs/sha256"
        return all((root / b[7:9] / b[7:] / "data").is_file() for b in self.blobs)

    def wait_until_mirrored(self, timeout: float = 20) -> None:
        """distribution stores a proxied blob in the background, after serving it."""
        deadline = time.monotonic() + timeout
        while not self.mirror_has_blobs():
            assert time.monotonic() < deadline, "the mirror did not store the blobs it served"
            time.sleep(0.1)

    def stop_origin(self) -> None:
        self.origin.stop()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", self.origin.port), 1):
            pass


def busybox() -> Path:
    path = Path(shutil.which("busybox") or "/bin/busybox")
    if not path.is_file():
        missing("busybox is not installed (apt-get install busybox-static)")
    return path


def start_mirrored(workdir: Path) -> Mirrored:
    """Start an origin and its mirror, push the images to the origin."""
    if shutil.which("docker-registry") is None:
        missing("docker-registry is not installed (apt-get install docker-registry)")
    box = busybox().read_bytes()
    origin = start_registry(workdir / "origin")
    try:
        mirror = start_registry(workdir / "mirror", proxy_remote=origin.url)
    except BaseException:
        origin.stop()
        raise
    images = {
        "benchmark": ("benchmarks/bench", [
            layer(d("bin"), f("bin/busybox", box, 0o755), sym("bin/sh", "busybox"), d("etc"),
                  f("etc/os-release", "ID=mirror-test\n"), d("testbed"),
                  f("testbed/app.py", "print('hi')\n")),
            layer(d("tasks", 0o700), f("tasks/one.json", '{"answer": 42}\n', 0o600),
                  d("tests", 0o700), f("tests/run.sh", "#!/bin/sh\nexit 0\n", 0o700)),
        ], ""),
        "agent": ("agents/agent", [
            layer(d("opt"), d("opt/agent"), f("opt/agent/install.sh", INSTALL_SH, 0o755),
                  d("opt/agent/bin"), f("opt/agent/bin/agent", "#!/bin/sh\necho agent\n", 0o755)),
        ], "/opt/agent:0755:0:0"),
        "gateway": ("models/gateway", [
            layer(d("opt"), d("opt/gateway", 0o700), f("opt/gateway/config.yaml", "key: s3cret\n", 0o600)),
        ], "/opt/gateway:0700:0:0"),
    }  # fmt: skip
    env = {"EVAL_PLATFORM": "linux/amd64"}
    blobs = []
    with RegistryClient() as client:
        for role, (name, layers, provides) in images.items():
            repository = f"{origin.host}/mirror-test/{name}"
            manifest = push_image(client, repository, "1.0.0", layers)
            data = client.get_manifest(repository, manifest).json()
            blobs += [data["config"]["digest"], *(x["digest"] for x in data["layers"])]
            size = data["config"]["size"] + sum(x["size"] for x in data["layers"])
            prefix = f"EVAL_{role.upper()}"
            # as `buildgen resolve --format env` prints them: REPOSITORY@DIGEST (no tag)
            env |= {f"{prefix}_IMAGE": f"{repository}@{manifest}",
                    f"{prefix}_PLATFORM_DIGEST": manifest, f"{prefix}_SIZE": str(size),
                    f"{prefix}_KEY": name}  # fmt: skip
            if provides:
                env[f"{prefix}_PROVIDES"] = provides
    return Mirrored(origin, mirror, env, blobs)


@pytest.fixture()
def mirrored(tmp_path: Path) -> Iterator[Mirrored]:
    setup = start_mirrored(tmp_path / "registries")
    try:
        yield setup
    finally:
        setup.mirror.stop()
        setup.origin.stop()


def materialize(
    env: dict[str, str], *args: str, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EVAL_")}
    return subprocess.run([sys.executable, "-m", "buildgen", "materialize", "--from-env", *args],
                          capture_output=True, text=True, cwd=cwd, env={**base, **env})  # fmt: skip


def test_materialize_from_mirror_with_origin_stopped(mirrored: Mirrored, tmp_path: Path) -> None:
    first = materialize(mirrored.env, "--mirror", mirrored.mirror.host, "--rootfs",
                        str(tmp_path / "one"), "--cache", str(tmp_path / "cache-one"),
                        "--record", str(tmp_path / "one.json"))  # fmt: skip
    assert first.returncode == 0, first.stderr
    mirrored.wait_until_mirrored()

    mirrored.stop_origin()
    second = materialize(mirrored.env, "--mirror", mirrored.mirror.host, "--rootfs",
                         str(tmp_path / "two"), "--cache", str(tmp_path / "cache-two"),
                         "--record", str(tmp_path / "two.json"), "-v")  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    assert json.loads((tmp_path / "two.json").read_text()) == json.loads(
        (tmp_path / "one.json").read_text()
    )
    fused = tree(tmp_path / "two")
    assert fused["/bin/sh"].content == "busybox"
    assert fused["/tasks/one.json"].mode == 0o600 and fused["/tasks"].mode == 0o700
    assert fused["/opt/agent/install.sh"].mode == 0o755
    assert fused["/opt/gateway"].mode == 0o700 and fused["/opt/gateway/config.yaml"].mode == 0o600

    # and without the mirror the origin really is gone
    third = materialize(mirrored.env, "--rootfs", str(tmp_path / "three"), "--cache",
                        str(tmp_path / "cache-three"))  # fmt: skip
    assert third.returncode == 3, third.stderr


def test_a_blob_missing_mid_run_fails_cleanly(mirrored: Mirrored, tmp_path: Path) -> None:
    # The benchmark's second layer is gone from the registry: its first layer is unpacked while
    # the blobs download, then the run fails, naming the blob, with no unpacked image kept and
    # no partial blob in the cache.
    repository = "mirror-test/benchmarks/bench"
    with RegistryClient() as client:
        manifest = client.get_manifest(f"{mirrored.origin.host}/{repository}", "1.0.0").json()
    gone = manifest["layers"][1]["digest"]
    deleted = httpx.delete(f"{mirrored.origin.url}/v2/{repository}/blobs/{gone}")
    assert deleted.status_code == 202, deleted.text
    cache = tmp_path / "cache"
    result = materialize(mirrored.env, "--rootfs", str(tmp_path / "rootfs"), "--cache", str(cache))
    assert result.returncode == 3, result.stderr
    assert gone in result.stderr and "Traceback" not in result.stderr
    left = [p.name for p in (cache / "unpacked").iterdir()]
    assert [name for name in left if not name.endswith(".lock")] == []  # no tree, no work dir
    assert not [p for p in (cache / "tmp").iterdir()]  # no partial download left
    assert not (cache / "blobs" / "sha256" / gone.split(":")[1]).exists()
