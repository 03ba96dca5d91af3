"""buildgen publish against real registries: the tag policy end to end (backport, conflicting
release), --dry-run, and auth (htpasswd, token, config.json, credential helpers) and TLS, with
no secret ever in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.catalogs import REPO
from support.components import Registry
from support.registries import (
    RunningRegistry,
    start_registry,
    write_credential_helper,
    write_docker_config,
)
from support.synth import push_synthetic

from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan
from buildgen.registry import RegistryClient, RegistryOptions

pytestmark = pytest.mark.registry

CATALOG = """\
version: 1
registry: r.example/evals
platforms: [linux/amd64, linux/arm64]
agents:
  a: {{context: a, version: "{version}"}}
"""


def buildgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True, text=True,
                          env=env, cwd=REPO)  # fmt: skip


def _release(root: Path, prefix: str, version: str, content: str,
             options: RegistryOptions | None = None) -> Path:  # fmt: skip
    """Write a one-agent catalog at `version`, push its per-platform images, return results."""
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / "Dockerfile").write_text(f"FROM scratch\n# {content}\n")
    (root / "catalog.yaml").write_text(CATALOG.format(version=version))
    plan = make_plan(load_catalog(root / "catalog.yaml"), registry=prefix)
    with RegistryClient(options) as client:
        results = push_synthetic(client, plan, salt=content)
    path = root / f"results-{version}-{content}.json"
    results.write(path)
    return path


def _publish(root: Path, prefix: str, results: Path, *extra: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return buildgen("publish", "--catalog", str(root / "catalog.yaml"), "--registry", prefix,
                    "--from", str(results), *extra, env=env)  # fmt: skip


def _digest(client: RegistryClient, repository: str, tag: str) -> str | None:
    found = client.head_manifest(repository, tag)
    return found.digest if found else None


def test_backport_and_conflicting_release(registry: Registry, tmp_path: Path) -> None:
    prefix = f"{registry.host}/policy"
    repo = f"{prefix}/agents/a"
    assert _publish(tmp_path, prefix, _release(tmp_path, prefix, "2.0.0", "two")).returncode == 0
    with RegistryClient() as client:
        two = _digest(client, repo, "2.0.0")
        assert two and all(_digest(client, repo, t) == two for t in ("2.0", "2", "latest"))

    backport = _publish(tmp_path, prefix, _release(tmp_path, prefix, "1.4.3", "backport"))
    assert backport.returncode == 0, backport.stderr
    with RegistryClient() as client:
        old = _digest(client, repo, "1.4.3")
        assert old and old != two
        assert _digest(client, repo, "1.4") == old and _digest(client, repo, "1") == old
        assert _digest(client, repo, "latest") == two and _digest(client, repo, "2") == two

    # Same version, other content: release tags are immutable.
    conflict = _publish(tmp_path, prefix, _release(tmp_path, prefix, "2.0.0", "rebuilt"))
    assert conflict.returncode == 2
    assert f"{repo}:2.0.0 already exists" in conflict.stderr
    assert "bump the version of agents/a" in conflict.stderr
    with RegistryClient() as client:
        assert _digest(client, repo, "2.0.0") == two and _digest(client, repo, "latest") == two

    # Publishing the same release again is a no-op.
    again = _publish(tmp_path, prefix, _release(tmp_path, prefix, "2.0.0", "two"))
    assert again.returncode == 0 and "0 published, 1 unchanged, 0 failed" in again.stderr


def test_dry_run_pushes_nothing(registry: Registry, tmp_path: Path) -> None:
    prefix = f"{registry.host}/dry"
    result = _publish(tmp_path, prefix, _release(tmp_path, prefix, "1.0.0", "dry"), "--dry-run")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"push index {prefix}/agents/a@sha256:")
    assert line.endswith("tags: 1.0.0 1.0 1 latest inputs-" + line.split("inputs-")[1])
    with RegistryClient() as client:
        assert _digest(client, f"{prefix}/agents/a", "1.0.0") is None


def _assert_no_secret(reg: RunningRegistry, *outputs: str) -> None:
    secrets = [s for s in reg.secrets() if s]
    assert secrets
    for output in outputs:
        for secret in secrets:
            assert secret not in output


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_credentials_from_docker_config(auth: str, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "registry", auth=auth)  # type: ignore[arg-type]
    try:
        config = write_docker_config(
            tmp_path / "docker", auths={reg.host: (reg.username or "", reg.password or "")}
        )
        prefix = f"{reg.host}/private"
        results = _release(
            tmp_path, prefix, "1.0.0", auth, RegistryOptions(docker_config=str(config))
        )
        env = {**os.environ, "DOCKER_CONFIG": str(config)}
        ok = _publish(tmp_path, prefix, results, "-vv", env=env)
        assert ok.returncode == 0, ok.stderr
        assert "1 published" in ok.stderr

        empty = tmp_path / "no-credentials"
        empty.mkdir()
        denied = _publish(
            tmp_path, prefix, results, "-vv", env={**os.environ, "DOCKER_CONFIG": str(empty)}
        )
        assert denied.returncode == 3
        assert "docker login" in denied.stderr
        _assert_no_secret(reg, ok.stdout, ok.stderr, denied.stdout, denied.stderr, reg.log_text)
    finally:
        reg.stop()


def test_credential_helper_and_tls(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "registry", auth="token", tls=True)
    try:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        write_credential_helper(
            bin_dir, "buildgen-test", {reg.host: (reg.username or "", reg.password or "")}
        )
        config = write_docker_config(tmp_path / "docker", cred_helpers={reg.host: "buildgen-test"})
        env = {
            **os.environ,
            "DOCKER_CONFIG": str(config),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        }
        prefix = f"{reg.host}/secure"
        os.environ["PATH"] = env["PATH"]  # the synthetic push below runs the helper too
        try:
            options = RegistryOptions(docker_config=str(config), ca_bundle=str(reg.ca_file))
            results = _release(tmp_path, prefix, "1.0.0", "tls", options)
        finally:
            os.environ["PATH"] = env["PATH"].split(":", 1)[1]
        ok = _publish(tmp_path, prefix, results, "--ca-bundle", str(reg.ca_file), "-vv", env=env)
        assert ok.returncode == 0, ok.stderr
        untrusted = _publish(tmp_path, prefix, results, env=env)
        assert untrusted.returncode == 3
        assert "certificate" in untrusted.stderr and "--ca-bundle" in untrusted.stderr
        _assert_no_secret(reg, ok.stdout, ok.stderr, untrusted.stdout, untrusted.stderr)
    finally:
        reg.stop()
