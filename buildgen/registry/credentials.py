"""Registry credentials, read the way `docker login` stores them.

Through the docker SDK: the `auths` entries of config.json (base64 `auth`, or `identitytoken`), a
`credsStore`, and `credHelpers` (each runs `docker-credential-<name>` from PATH). The config
directory is the `docker_config` option, else $DOCKER_CONFIG, else ~/.docker.

Nothing here logs or formats a secret: `Credentials` keeps them out of repr, and error messages
name where credentials came from, never what they are.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuthError, redact
from .reference import DOCKER_HUB, credential_key, login_hint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """A username/password or an identity (refresh) token, and where they were found."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.identity_token) if s)

    def basic_header(self) -> str | None:
        """The Basic Authorization header value, or None without a username and password."""
        if self.username is None or self.password is None:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def docker_config_dir(override: str | None = None) -> Path:
    """The directory holding config.json: `override`, else $DOCKER_CONFIG, else ~/.docker."""
    chosen = override or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(chosen).expanduser()


def _helper_keys(key: str) -> tuple[str, ...]:
    """The names a credential-helper entry for `key` should answer to."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return (credential_key(DOCKER_HUB),)
    return (host, f"https://{host}", f"http://{host}")


def _from_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    """Credentials from what the SDK resolved ("username"/"Username", "IdentityToken", ...)."""
    fields = {k.lower(): v for k, v in entry.items() if isinstance(v, str)}
    token = fields.get("identitytoken")
    if token:
        return Credentials(username=fields.get("username"), identity_token=token, source=source)
    username, password = fields.get("username"), fields.get("password")
    if username is not None and password is not None:
        return Credentials(username=username, password=password, source=source)
    return None


class DockerCredentials:
    """Credentials from Docker's config.json, loaded lazily and once per registry; thread-safe."""

    def __init__(self, config_dir: str | None = None) -> None:
        self.config_file = docker_config_dir(config_dir) / "config.json"
        self._lock = threading.Lock()
        self._config: Any = None
        self._loaded = False
        self._resolved: dict[str, Credentials | None] = {}

    def get(self, registry: str) -> Credentials | None:
        """The credentials stored for `registry` (host[:port], or "docker.io"), or None."""
        with self._lock:
            if registry not in self._resolved:
                self._resolved[registry] = self._resolve(registry)
            return self._resolved[registry]

    def _load(self) -> Any:
        if self._loaded:
            return self._config
        self._loaded = True
        # Read only our file: the SDK would fall back to other places when it is missing.
        if not self.config_file.is_file():
            log.debug("no Docker config at %s: anonymous access only", self.config_file)
            return None
        # The docker SDK is slow to import: only when there is a config to read.
        from docker import auth as docker_auth  # type: ignore[import-untyped, unused-ignore]
        from docker import errors as docker_errors  # type: ignore[import-untyped, unused-ignore]

        try:
            config = docker_auth.load_config(config_path=str(self.config_file), credstore_env=None)
        except (docker_errors.DockerException, OSError, ValueError) as exc:
            raise AuthError(
                f"cannot read registry credentials from {self.config_file}: "
                f"{type(exc).__name__}: {redact(str(exc))}"
            ) from None
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            # Docker writes helper keys as bare hosts; accept URLs and Docker Hub aliases too.
            config["credHelpers"] = {
                name: helper for key, helper in helpers.items() for name in _helper_keys(str(key))
            }
        self._config = config
        return config

    def _resolve(self, registry: str) -> Credentials | None:
        config = self._load()
        if config is None:
            return None
        from docker import errors as docker_errors  # type: ignore[import-untyped, unused-ignore]

        candidates = [registry]
        if registry != DOCKER_HUB and (config.get("credsStore") or config.get("credHelpers")):
            # Older logins stored "https://host" in the credential store.
            candidates.append(f"https://{registry}")
        for candidate in candidates:
            try:
                with warnings.catch_warnings():
                    # The SDK warns about a missing helper, then raises; we report the raise.
                    warnings.simplefilter("ignore")
                    entry = config.resolve_authconfig(candidate)
            except docker_errors.DockerException as exc:
                raise AuthError(
                    f"the Docker credential helper for {registry} failed "
                    f"(configured in {self.config_file}): {redact(str(exc))}. "
                    f"Check that the docker-credential-* program it names is on PATH, or log in "
                    f"again with `{login_hint(registry)}`."
                ) from None
            if isinstance(entry, Mapping):
                found = _from_entry(entry, str(self.config_file))
                if found is not None:
                    log.debug("using credentials for %s from %s", registry, self.config_file)
                    return found
        return None
