"""Image references and repository names: `name[:tag][@digest]` split (`parse_reference`),
which registry host a repository lives on and what the API calls it."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from buildgen.registry.media import check_digest, check_reference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# The key `docker login` stores Docker Hub credentials under.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API, "registry.hub.docker.com"})

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)


@dataclass(frozen=True)
class Repository:
    """A repository on a registry: `registry` is host[:port] ("docker.io" for Docker Hub)."""

    registry: str
    path: str

    @property
    def api_host(self) -> str:
        """The host[:port] its HTTP API answers on."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


def parse_repository(name: str) -> Repository:
    """Split "host[:port]/path/name"; a name without a host is on Docker Hub.

    Like docker, the first component is a host when it has a "." or ":" or is "localhost";
    a one-component Docker Hub name gets the "library/" prefix. ValueError when malformed
    (including a tag or digest left on the name).
    """
    return _parse_repository(name)


# A pure function of the name, asked again for every request: the last few thousand names are
# kept (errors are not cached, so a malformed name raises every time).
@functools.lru_cache(maxsize=4096)
def _parse_repository(name: str) -> Repository:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
        if not _HOST.match(host):
            raise ValueError(f"invalid registry host {host!r} in {name!r}")
        if host.lower() in _HUB_ALIASES:
            host = DOCKER_HUB
    else:
        host, path = DOCKER_HUB, name
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise ValueError(
            f"invalid repository name {name!r}: components must be lowercase letters, digits "
            "and separators (., _, __, -), with no tag or digest"
        )
    return Repository(host, path)


@dataclass(frozen=True)
class Reference:
    """`repository[:tag][@digest]`, split; the repository is the name as written."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def parse_reference(text: str) -> Reference:
    """Split `host[:port]/path[:tag][@sha256:...]` (a tag and a digest may both be there, as
    docker allows; the port's colon is never a tag's). ValueError for a malformed tag or
    digest, or no name."""
    name, at, digest = text.partition("@")
    if at:
        check_digest(digest)
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    if colon:
        check_reference(tag)
    if not last:
        raise ValueError(f"no repository name in {text!r}")
    return Reference(f"{head}{slash}{last}", tag if colon else None, digest if at else None)


def hostname(host: str) -> str:
    """host[:port] without the port (and without IPv6 brackets)."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    name = hostname(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allows_plain_http(host: str, insecure: Iterable[str]) -> bool:
    """Whether `host` may be spoken to over http: loopback, or listed (with or without port)."""
    if is_loopback(host):
        return True
    allowed = {h.lower() for h in insecure}
    return host.lower() in allowed or hostname(host).lower() in allowed


def credential_key(registry: str) -> str:
    """The name `docker login` uses for a registry (the Docker Hub URL for Docker Hub)."""
    return DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry


def login_hint(registry: str) -> str:
    """The command that stores credentials for `registry`."""
    return "docker login" if registry == DOCKER_HUB else f"docker login {registry}"
