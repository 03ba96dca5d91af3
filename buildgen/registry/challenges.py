"""WWW-Authenticate challenges (RFC 7235) and token scopes: what a registry asks for."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

Scopes = tuple[str, ...]


def repository_scope(path: str, actions: str) -> str:
    """A token scope, e.g. "repository:evals/x:pull,push"."""
    return f"repository:{path}:{actions}"


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


def challenge_of(response: httpx.Response) -> Challenge | None:
    """The challenge to answer of a 401 or 403 (all its WWW-Authenticate headers), if any."""
    header = ", ".join(response.headers.get_list("WWW-Authenticate"))
    return pick_challenge(parse_challenges(header)) if header else None


def without_scope(challenge: Challenge) -> Challenge:
    """The challenge as the host's: the scope it names belongs to one request."""
    return Challenge(challenge.scheme, {k: v for k, v in challenge.params.items() if k != "scope"})
