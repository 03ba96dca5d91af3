"""The one retry policy for registry requests: what is transient, and how long to wait.

Transient, so retried:
- connection failures: refused/reset connections, connect/read/write timeouts and errors, a
  server that closed the connection mid-reply (httpx.RemoteProtocolError);
- HTTP 408, 429, 500, 502, 503 and 504.

Fatal, so raised at once: every other 4xx (a retry would get the same answer), TLS failures
(a certificate that does not verify, a server that does not speak TLS), and errors in our own
request (httpx.LocalProtocolError, ...).

Waiting: exponential backoff with full jitter, uniform(0, min(max_backoff, backoff * 2**n)) before
retry n (0-based), so concurrent clients do not retry in step. A `Retry-After` header (seconds or
an HTTP date) on a retried response is honoured instead, capped at `max_retry_after`.

One exception on top of this policy lives in manifests.py: a manifest PUT answered with
MANIFEST_BLOB_UNKNOWN is retried a few times (`BLOB_UNKNOWN_RETRIES`), because distribution 2.8
briefly reports blobs pushed by concurrent writers as unknown.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Retries of a manifest PUT that names a blob as unknown (see the module docstring).
BLOB_UNKNOWN_RETRIES = 4

_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.RemoteProtocolError,
)


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The TLS certificate verification failure behind `exc`, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind `exc` (a bad certificate, or a server not speaking TLS), if any.

    A TLS connection cut short (EOF during the handshake) is not one: that is a dropped
    connection, worth retrying.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
        ):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_transient_error(exc: BaseException) -> bool:
    """True for a connection failure worth retrying (not a TLS failure, which would recur)."""
    return isinstance(exc, _TRANSIENT_ERRORS) and tls_error(exc) is None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))  # delta-seconds (fractions tolerated)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a transient failure, and how long to wait before each retry."""

    retries: int = 6
    backoff: float = 0.2
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def retryable_status(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES

    def delay(self, retry: int, response: httpx.Response | None = None) -> float:
        """Seconds to sleep before retry number `retry` (0-based)."""
        if response is not None:
            after = parse_retry_after(response.headers.get("Retry-After"))
            if after is not None:
                return min(after, self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * (2 ** min(retry, 62)))
        return float(ceiling * self.random())
