"""The HTTP layer under every registry request: httpx clients, bounded, counted, retried.

- httpx's own transport (HTTP/1.1, keep-alive), which also routes through the environment's
  proxies (HTTP(S)_PROXY, ALL_PROXY, less NO_PROXY).
- One httpx.Client per connection, up to `max_connections`, each lent to one request at a time
  (`_Lender`): that is the bound on requests in flight, and further callers wait for a client
  rather than fail on a pool's timeout. A streamed response keeps its client until it is
  closed. Why not one client with a pool of `max_connections`: httpcore's pool walks all its
  connections, polling the socket of each idle one, on every request and every response, so
  its cost per request grows with its size; with dozens of requests in flight that walk cost
  more CPU than the rest of the request (docs/lockfile.md has the measurements).
- `retrying` applies the retry policy of retry.py to any one attempt.

No auth here: `Remote` (remote.py) adds it on top.
"""

from __future__ import annotations

import collections
import functools
import importlib.metadata
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

import httpx

from .errors import RegistryError, url_path
from .options import RegistryOptions
from .retry import RetryPolicy, is_transient_error

log = logging.getLogger(__name__)


@functools.cache
def user_agent() -> str:
    """The User-Agent, buildgen/VERSION: the version is read from the installed package's
    metadata (this package imports nothing of buildgen outside itself) when it is first asked."""
    try:
        return f"buildgen/{importlib.metadata.version('buildgen')}"
    except importlib.metadata.PackageNotFoundError:
        return "buildgen"


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying context: `ca_bundle`, else the system's store (certifi when it is empty)."""
    if ca_bundle is not None:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"cannot load the CA bundle {ca_bundle}: {exc}") from None
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    return context


class _Lender:
    """httpx clients of one connection each, lent to one request at a time: at most `size`,
    made as they are first needed; thread-safe."""

    def __init__(self, make: Callable[[], httpx.Client], size: int) -> None:
        self.first = make()
        self._make = make
        self._size = size
        self._idle = [self.first]
        self._made = [self.first]
        self._changed = threading.Condition(threading.Lock())

    def borrow(self) -> httpx.Client:
        """A client no other request is using, waiting while all `size` are lent."""
        with self._changed:
            while not self._idle and len(self._made) >= self._size:
                self._changed.wait()
            if self._idle:
                return self._idle.pop()  # the last given back: the likeliest to be connected
            client = self._make()
            self._made.append(client)
            return client

    def give_back(self, client: httpx.Client) -> None:
        with self._changed:
            self._idle.append(client)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            made = list(self._made)
        for client in made:
            client.close()


class _Lent(httpx.SyncByteStream):
    """A streamed response body that gives its client back when it is closed."""

    def __init__(self, stream: httpx.SyncByteStream, give_back: Callable[[], None]) -> None:
        self._stream = stream
        self._give_back: Callable[[], None] | None = give_back

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        give_back, self._give_back = self._give_back, None
        try:
            self._stream.close()
        finally:
            if give_back is not None:
                give_back()


class Session:
    """The client's connections, its bound on requests in flight, its counters and its retry
    policy; thread-safe. `stats` counts requests by kind, and "retry"."""

    def __init__(
        self,
        options: RegistryOptions,
        *,
        transport: httpx.BaseTransport | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.policy = RetryPolicy(
            retries=options.retries,
            backoff=options.backoff,
            max_backoff=options.max_backoff,
            max_retry_after=options.max_retry_after,
        )
        self.stats: collections.Counter[str] = collections.Counter()
        self._stats_lock = threading.Lock()
        self._sleep = sleep
        # A transport given (tests) brings its own TLS, if any.
        verify = ssl_context(options.ca_bundle) if transport is None else True

        def client() -> httpx.Client:
            return httpx.Client(
                transport=transport,
                verify=verify,
                timeout=httpx.Timeout(options.timeout),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                headers={"User-Agent": user_agent()},
                follow_redirects=False,
            )

        self._clients = _Lender(client, options.max_connections)

    def close(self) -> None:
        self._clients.close()

    def count(self, kind: str) -> None:
        with self._stats_lock:
            self.stats[kind] += 1

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
    ) -> httpx.Request:
        """A request built by the client, with its timeouts and User-Agent."""
        return self._clients.first.build_request(method, url, headers=headers, content=content)

    def send(
        self,
        request: httpx.Request,
        *,
        kind: str,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """One request on a client of its own; no auth, no retries.

        The response is read whole and the client given back, except that with `stream` a
        successful (2xx) one is returned unread, keeping its client until it is closed.
        """
        client = self._clients.borrow()
        try:
            self.count(kind)
            response = client.send(request, stream=True, follow_redirects=follow_redirects)
        except BaseException:
            self._clients.give_back(client)
            raise
        if stream and response.is_success and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _Lent(response.stream, lambda: self._clients.give_back(client))
        else:
            try:
                response.read()
            finally:
                response.close()
                self._clients.give_back(client)
        if log.isEnabledFor(logging.DEBUG):  # url_path parses the URL: not for nothing
            log.debug("%s %s -> %d", request.method, url_path(request.url), response.status_code)
        return response

    def retrying(
        self,
        attempt: Callable[[], httpx.Response],
        *,
        retries: int | None = None,
        transient: Callable[[Exception], bool] = is_transient_error,
    ) -> httpx.Response:
        """`attempt()`, again while it fails in a `transient` way or answers with a retryable
        status, at most `retries` times (default: the policy's). Its last failure is raised."""
        limit = self.policy.retries if retries is None else retries
        retry = 0
        while True:
            try:
                response = attempt()
            except Exception as exc:
                if retry >= limit or not transient(exc):
                    raise
                log.debug("%s; retrying", type(exc).__name__)
                self.pause(retry)
            else:
                if retry >= limit or not self.policy.retryable_status(response.status_code):
                    return response
                self.pause(retry, response)
            retry += 1

    def pause(self, retry: int, response: httpx.Response | None = None) -> None:
        """Count retry number `retry` (0-based) and wait before it, as the policy says."""
        self.count("retry")
        self._sleep(self.policy.delay(retry, response))
