"""Registry authentication: Docker's stored credentials, WWW-Authenticate challenges, tokens.

The HTTP exchanges themselves are made by the client; this module holds the parts that need no
network: where credentials come from, how a challenge reads, what a token request looks like and
how long a token may be reused.

Credentials are read the way `docker login` stores them, through the docker SDK: the `auths`
entries of config.json (base64 `auth`, or `identitytoken`), a `credsStore`, and `credHelpers`
(each runs `docker-credential-<name>` from PATH). The config directory is the `docker_config`
option, else $DOCKER_CONFIG, else ~/.docker.

Nothing here logs or formats a secret: `Credentials` and `Token` keep theirs out of repr, and
error messages name where credentials came from, never what they are.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .errors import AuthError, redact
from .reference import DOCKER_HUB, credential_key, login_hint

log = logging.getLogger(__name__)

CLIENT_ID = "buildgen"
DEFAULT_TOKEN_LIFETIME = 60.0
# Tokens are dropped this long before they expire (at most half their lifetime), so a request
# never starts with a token that runs out on the way.
TOKEN_EXPIRY_MARGIN = 10.0

Scopes = tuple[str, ...]


def repository_scope(path: str, actions: str) -> str:
    """A token scope, e.g. "repository:evals/x:pull,push"."""
    return f"repository:{path}:{actions}"


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
        # The docker SDK costs ~80 ms to import: only when there is a config to read.
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


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: a lowercase scheme and its parameters."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> Scopes:
        return tuple(self.params.get("scope", "").split())


_TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'[\s,]*({_TOKEN_CHARS})\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_SCHEME = re.compile(rf"[\s,]*({_TOKEN_CHARS})(?=\s|,|$)")
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9._~+/-]+=*\s*(?=,|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header (RFC 7235; several challenges may share one header)."""
    challenges: list[Challenge] = []
    scheme: str | None = None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(header):
        param = _PARAM.match(header, pos) if scheme is not None else None
        if param:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
            continue
        start = _SCHEME.match(header, pos)
        if not start:
            break
        if scheme is not None:
            challenges.append(Challenge(scheme, params))
        scheme, params, pos = start.group(1).lower(), {}, start.end()
        token68 = _TOKEN68.match(header, pos)
        if token68 and not _PARAM.match(header, pos):
            pos = token68.end()
    if scheme is not None:
        challenges.append(Challenge(scheme, params))
    return challenges


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer (with a realm) before Basic; None for neither."""
    usable = [c for c in challenges if c.scheme == "basic" or (c.scheme == "bearer" and c.realm)]
    usable.sort(key=lambda c: c.scheme != "bearer")
    return usable[0] if usable else None


def merge_scopes(ours: Scopes, theirs: Iterable[str]) -> Scopes:
    """Our scopes plus any the registry asked for, each once, in a stable order."""
    return tuple(dict.fromkeys((*ours, *theirs)))


@dataclass(frozen=True)
class Token:
    """A bearer token and the monotonic time after which it is not reused."""

    value: str = field(repr=False)
    expires_at: float

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at


def token_request(
    challenge: Challenge, scopes: Scopes, credentials: Credentials | None
) -> httpx.Request:
    """The request that asks the challenge's realm for a token with `scopes`.

    With an identity token: the OAuth2 refresh-token grant (POST, form). Otherwise a GET with
    the scopes as repeated `scope` parameters, with Basic auth when we have a password.
    """
    realm = challenge.realm
    if not realm:
        raise ValueError("a bearer challenge without a realm")
    service = challenge.service
    if credentials is not None and credentials.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.identity_token,
            "client_id": CLIENT_ID,
            # The OAuth2 endpoint takes one space-delimited scope parameter.
            "scope": " ".join(scopes),
        }
        if service:
            form["service"] = service
        return httpx.Request("POST", realm, data=form)
    params: list[tuple[str, str | int | float | bool | None]] = []
    if service:
        params.append(("service", service))
    params.extend(("scope", scope) for scope in scopes)
    params.append(("client_id", CLIENT_ID))
    headers: dict[str, str] = {}
    basic = credentials.basic_header() if credentials is not None else None
    if basic is not None and credentials is not None and credentials.username is not None:
        params.append(("account", credentials.username))
        headers["Authorization"] = basic
    return httpx.Request("GET", realm, params=params, headers=headers)


def parse_token_response(body: bytes, now: float | None = None) -> Token:
    """The token (`token` or `access_token`) and its expiry from a token service's JSON reply."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError("the token service did not answer with a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("the token service's answer has no token")
    lifetime = data.get("expires_in")
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    margin = min(TOKEN_EXPIRY_MARGIN, lifetime / 2)
    start = time.monotonic() if now is None else now
    return Token(value=value, expires_at=start + float(lifetime) - margin)


class TokenCache:
    """Tokens per (registry, scopes), with one lock per key so one thread fetches; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, Scopes], Token] = {}
        self._locks: dict[tuple[str, Scopes], threading.Lock] = {}

    def lock(self, registry: str, scopes: Scopes) -> threading.Lock:
        """The lock to hold while fetching the token for this key."""
        with self._lock:
            return self._locks.setdefault((registry, scopes), threading.Lock())

    def get(self, registry: str, scopes: Scopes) -> Token | None:
        with self._lock:
            token = self._tokens.get((registry, scopes))
        return token if token is not None and token.fresh() else None

    def put(self, registry: str, scopes: Scopes, token: Token) -> None:
        with self._lock:
            self._tokens[(registry, scopes)] = token
