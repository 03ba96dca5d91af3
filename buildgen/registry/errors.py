"""Errors from talking to a registry, and the redaction every error message goes through.

A message may quote a registry's reply or a URL, never a credential: every error is built from
text passed through `redact` (patterns) and, inside the client, `Redactor` (the exact secrets it
holds), so a password or token cannot leak into a log line or a CI transcript.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

_MASK = "***"

# Each pattern keeps its first group (the label) and masks what follows it.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer abc", "authorization=Basic abc"
    (re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"), r"\1" + _MASK),
    # a bare scheme + credential, e.g. quoted from a header dump
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!realm\b)[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + _MASK),
    # JSON fields or form/query parameters that carry secrets
    (
        re.compile(
            r"(?i)([\"']?\b(?:token|access_token|refresh_token|id_token|password|passwd|secret|"
            r"identitytoken|identity_token|registrytoken|auth|x-amz-signature|signature|sig)\b"
            r"[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,&}\"']+)"
        ),
        r"\1" + _MASK,
    ),
    # user:password@ in a URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@"), r"\1" + _MASK + "@"),
)

# Shorter "secrets" would mask ordinary words; real passwords and tokens are longer.
_MIN_SECRET_LENGTH = 4


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials masked: the given secret values, and anything shaped like one."""
    for secret in sorted(
        {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
    ):
        text = text.replace(secret, _MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redactor:
    """The secrets one client has seen (passwords, identity tokens, bearer tokens); thread-safe."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = tuple(self._secrets)
        return redact(text, secrets)


class RegistryError(Exception):
    """A registry request failed (exit code 3, as every external failure: `exit_code`).

    `status` is the HTTP status (None for a connection failure or a bad reply), `code` the first
    error code of the registry's error body (e.g. "MANIFEST_BLOB_UNKNOWN"), `codes` all of them.
    `retryable` says the failure was transient (the retry policy gave up on it) rather than fatal.
    The message is always redacted.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        codes: tuple[str, ...] = (),
        method: str | None = None,
        path: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(redact(message))
        self.status = status
        self.code = code
        self.codes = codes or ((code,) if code else ())
        self.method = method
        self.path = path
        self.retryable = retryable


class NotFound(RegistryError):
    """The registry does not have it (404, or a *_UNKNOWN error code)."""


class AuthError(RegistryError):
    """The registry refused us (401/403) after we tried every credential we have."""
