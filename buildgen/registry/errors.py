"""Errors from talking to a registry: the exceptions, the messages a failed request makes, and
the redaction every message goes through.

A message may quote a registry's reply or a URL, never a credential: every error is built from
text passed through `redact` (patterns) and, inside the client, `Redactor` (the exact secrets it
holds), so a password or token cannot leak into a log line or a CI transcript.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterable
from typing import NoReturn

import httpx

from .retry import RETRYABLE_STATUSES, certificate_error, is_transient_error, tls_error

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


# -- the error for a reply, or for a request that got none -------------------------------------


def url_path(url: str | httpx.URL) -> str:
    """The path of a URL, for messages: no query (upload state, signatures), no userinfo."""
    return httpx.URL(str(url)).path


def error_details(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    """The error codes of a registry's error body, and a short text of codes and messages."""
    codes: list[str] = []
    parts: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        for item in errors:
            if not isinstance(item, dict):
                continue
            code = str(item.get("code") or "")
            message = str(item.get("message") or "")
            detail = item.get("detail")
            if code:
                codes.append(code)
            text = ": ".join(p for p in (code, message) if p)
            if detail not in (None, "", {}, []):
                text += f" ({str(detail)[:200]})"
            parts.append(text)
    elif response.content and "json" not in response.headers.get("Content-Type", ""):
        parts.append(response.text[:200].strip())
    return tuple(codes), "; ".join(p for p in parts if p)


def status_error(
    response: httpx.Response, method: str, url: str, redactor: Callable[[str], str] = redact
) -> RegistryError:
    """The error for an unexpected reply: NotFound for 404 and *_UNKNOWN codes."""
    codes, text = error_details(response)
    status = response.status_code
    message = redactor(
        f"{method} {url_path(url)} on {response.url.netloc.decode('ascii')} answered "
        f"HTTP {status}{': ' + text if text else ''}"
    )
    unknown = status == 404 or any(c.endswith("_UNKNOWN") for c in codes)
    kind = NotFound if unknown else RegistryError
    return kind(
        message,
        status=status,
        code=codes[0] if codes else None,
        codes=codes,
        method=method,
        path=url_path(url),
        retryable=status in RETRYABLE_STATUSES,
    )


def not_found(
    response: httpx.Response,
    method: str,
    url: str,
    what: str,
    redactor: Callable[[str], str] = redact,
) -> NotFound:
    """NotFound for a 404, its message saying `what` was not found first."""
    error = status_error(response, method, url, redactor)
    return NotFound(
        f"{what}: {error}",
        status=error.status,
        code=error.code,
        codes=error.codes,
        method=method,
        path=error.path,
    )


def expect(
    response: httpx.Response,
    statuses: Collection[int],
    method: str,
    url: str,
    redactor: Callable[[str], str] = redact,
) -> None:
    """Nothing when the reply has one of `statuses`; else its `status_error`."""
    if response.status_code not in statuses:
        raise status_error(response, method, url, redactor)


def not_tls(exc: BaseException) -> bool:
    """Whether a failed https attempt means the server speaks plain http."""
    if certificate_error(exc) is not None:
        return False
    return isinstance(exc, httpx.RemoteProtocolError) or tls_error(exc) is not None


def raise_transport(
    exc: Exception,
    method: str,
    url: str,
    registry: str,
    *,
    plain_ok: bool,
    redactor: Callable[[str], str] = redact,
) -> NoReturn:
    """Raise the RegistryError for a request that got no reply (`plain_ok`: whether the host
    may be spoken to over http, which decides the hint for a server that does not speak TLS)."""
    path = url_path(url)
    cert = certificate_error(exc)
    if cert is not None:
        raise RegistryError(
            f"{method} {path} on {registry}: the TLS certificate does not verify "
            f"({cert.verify_message or cert}). Pass its CA with --ca-bundle PEM, or add it to "
            "the system's trust store.",
            method=method,
            path=path,
        ) from None
    detail = redactor(str(exc)) or type(exc).__name__
    hint = ""
    if not plain_ok and not_tls(exc):
        hint = (
            ". It does not answer https; plain http is used only for loopback hosts and "
            "hosts listed in the insecure option"
        )
    transient = is_transient_error(exc)
    raise RegistryError(
        f"{method} {path} on {registry} failed{' after retries' if transient else ''}: "
        f"{type(exc).__name__}: {detail}{hint}",
        method=method,
        path=path,
        retryable=transient,
    ) from exc
