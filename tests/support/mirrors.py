"""Two registries for crane mode's mirror path: an origin and a pull-through mirror of it,
holding a small synthetic eval (benchmark, agent with an install.sh, gateway)."""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildgen.registry import RegistryClient

from .components import missing
from .hostile import d, f, layer, push_image, sym
from .registries import RunningRegistry, start_registry

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
