"""A pull-through mirror serves crane mode's pulls: `buildgen materialize --mirror` fills it (a
second CNCF distribution registry in proxy mode in front of the origin), and once the origin is
stopped, materialize still succeeds from the mirror alone, by digest, with the same tree.

The images are small but real: gzip tar layers pushed with the registry client (tests/support/hostile.py),
a benchmark with a static busybox as /bin/sh (the crane runner's test runs the agent's
install.sh in it), an agent with /opt/agent/install.sh and a root-only gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.catalogs import REPO
from support.mirrors import Mirrored, start_mirrored
from support.trees import tree

from buildgen.registry import RegistryClient

pytestmark = pytest.mark.registry


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
