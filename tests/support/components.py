"""Real components for tests: a CNCF distribution registry on loopback.

`start_registry(..., tls=True)` serves https with the test CA of `registries.write_tls_files`.
Every registry the Docker daemon pushes to or pulls from must be such a one: Docker Engine 26.1
(the engine CI installs) embeds BuildKit 0.13, whose fallback from https to http for an insecure
registry (every 127.0.0.0/8 host is one) writes a field that concurrent requests read without a
lock. Pushing many images to a plain-http loopback registry sometimes crashes dockerd with a nil
pointer dereference in `httpFallback.RoundTrip` (seen in CI; fixed upstream in BuildKit by
"util/resolver: Make httpFallback concurrent safe"). Over https the fallback is never taken.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildgen.crane.overlay import (
    OverlayUnavailable,
    overlay_mount,
    unmount,
)
from buildgen.registry import RegistryOptions


def components_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("BUILDGEN_REQUIRE_COMPONENTS") == "1"


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere: a missing component must never pass silently in CI."""
    if components_required():
        pytest.fail(f"required component missing: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    """A running `docker-registry serve` on 127.0.0.1 (https when `ca_file` is set)."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path
    ca_file: Path | None = None
    """The CA that signed the server certificate (SAN 127.0.0.1), when the registry is TLS."""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{self.host}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a buildgen process that trusts this registry: the CA as
        SSL_CERT_FILE, which Python's default TLS context reads."""
        env = dict(os.environ if base is None else base)
        if self.ca_file:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env

    def options(self) -> RegistryOptions:
        """RegistryOptions for an in-process client of this registry."""
        return RegistryOptions(ca_bundle=str(self.ca_file) if self.ca_file else None)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_registry(workdir: Path, port: int | None = None, tls: bool = False) -> Registry:
    port = port or free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    ca_file: Path | None = None
    tls_config = ""
    context: ssl.SSLContext | None = None
    if tls:
        from .registries import write_tls_files

        files = write_tls_files(workdir / "tls")
        ca_file = files.ca_file
        tls_config = f", tls: {{certificate: '{files.cert_file}', key: '{files.key_file}'}}"
        context = ssl.create_default_context(cafile=str(ca_file))
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        # The blob descriptor cache is on in the config the registry is packaged with.
        f"storage: {{cache: {{blobdescriptor: inmemory}}, filesystem: {{rootdirectory: {storage}}}, "
        "delete: {enabled: true}}\n"
        f"http: {{addr: '127.0.0.1:{port}'{tls_config}}}\n"
    )
    log = (workdir / "registry.log").open("wb")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    registry = Registry(process, port, workdir, ca_file)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(workdir / 'registry.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{registry.url}/v2/", timeout=1, context=context):
                return registry
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("docker-registry did not answer within 20 s")


def require_overlay(tmp_path: Path) -> None:
    """Skip where no overlay can be mounted (saying why); in CI, fail."""
    problem = mount_problem(tmp_path)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount an overlay: {problem}")
        pytest.skip(f"cannot mount an overlay here: {problem}")


def mount_problem(tmp_path: Path) -> str | None:
    lower, merged = tmp_path / "probe-lower", tmp_path / "probe"
    lower.mkdir()
    try:
        overlay_mount(lower, merged)
    except OverlayUnavailable as exc:
        return str(exc)
    unmount(merged)
    return None
