"""An httpx transport on the standard library's http.client, for less CPU per request.

Why: a registry client makes small requests by the thousand (a HEAD of a manifest per image),
and most of the client's CPU for one went into httpcore: h11's pure-Python HTTP/1.1 parsing and
the bookkeeping of its connection pool. http.client does the same work in far fewer Python steps,
and is in the standard library (no new dependency). httpx stays in front of it (request building,
redirects, the Response API, content decoding); only the transport changes.

The contract, which RegistryClient and the retry policy of retry.py rely on:

- HTTP/1.1 over `http.client.HTTPConnection` / `HTTPSConnection`. Idle keep-alive connections are
  pooled per (scheme, host, port), at most `max_idle` per key, for at most `keepalive_expiry`
  seconds (as httpx's default pool); thread-safe. The pool does not limit the connections in use:
  the caller does (RegistryClient's semaphore).
- TLS with the one `ssl_context` given (RegistryClient's, with its CA bundle), shared by every
  connection. Timeouts are httpx's per-request ones (connect, read, write), else `timeout`.
- Exactly the request's headers are sent, in order (httpx adds Host, Accept, Accept-Encoding,
  User-Agent, ... when it builds the request). The body is bytes, or streamed from
  `request.stream`: as is under Content-Length (the size is checked), chunk-encoded under
  Transfer-Encoding: chunked.
- Responses stream: the connection goes back to the pool when the body was read to its end and
  the server did not ask to close it; otherwise it is closed. Bodies known to be empty (HEAD, 204,
  Content-Length: 0) are finished at once, so the connection is free before the caller looks.
  Headers keep their order and duplicates (Link, WWW-Authenticate). A Content-Encoding is left to
  httpx.Response, which decodes it.
- A pooled connection the server closed while idle reads as readable: it is dropped before use.
  When a race hides that, the request is sent once more on a new connection, but only when it
  cannot have been acted on: sending it failed (and its body can be sent again), or a GET, HEAD
  or OPTIONS got no byte of response. Every other failure is raised for the caller's retry
  policy, which counts and paces retries (and knows, e.g., that an upload session is spent).
- Errors are httpx's, as httpcore maps them, with the original exception as `__cause__` (which
  retry.certificate_error / tls_error look at):
  - connecting: refused, unreachable, DNS, TLS (`ssl.SSLError`, `ssl.SSLCertVerificationError`)
    -> httpx.ConnectError; a timeout -> httpx.ConnectTimeout;
  - sending: a timeout -> httpx.WriteTimeout; a reset or broken pipe -> httpx.WriteError, unless
    the server answered before it stopped reading (e.g. 413 to a large upload): that answer is
    returned, as httpcore does, and its connection is not reused;
  - receiving: a timeout -> httpx.ReadTimeout; a reset -> httpx.ReadError; a server that closes
    without answering or in the middle of the body, or answers what is not HTTP/1.x ->
    httpx.RemoteProtocolError.
  A body of another size than its Content-Length is httpx.LocalProtocolError. Exceptions of the
  request's body iterator itself pass through unchanged.
- Environment proxies are not this transport's business: `ProxyRouter` sends the requests a
  proxy applies to through httpx's own transport.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import httpx

CHUNK_SIZE = 1 << 16
# Safe methods (RFC 9110 9.2.1): sent again when a reused connection closed without a byte of
# response, though the request may have reached the server.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_RESPONSE = "Server disconnected without sending a response."

_Key = tuple[str, str, int]


class _Failure(Exception):
    """A request failed on its connection: the httpx error, and whether to send it again."""

    def __init__(self, error: httpx.TransportError, cause: BaseException, resend: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.cause = cause
        self.resend = resend


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read: EOF (or stray bytes), so it is unusable."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _set_timeout(sock: socket.socket | None, timeout: float | None) -> None:
    if sock is not None and sock.gettimeout() != timeout:
        sock.settimeout(timeout)


def _closed_before_response(exc: BaseException) -> bool:
    """Whether a failure to read a status line means the server closed without answering."""
    return isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError))


def endpoint(url: str) -> tuple[_Key, str] | None:
    """Where an http(s) URL goes, (scheme, host, port) as the pool keys its connections, and
    its origin-form target (path and query); None for any other URL."""
    try:
        split = urllib.parse.urlsplit(url)
        port = split.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if split.scheme not in DEFAULT_PORTS or not split.hostname:
        return None
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    return (split.scheme, split.hostname, port or DEFAULT_PORTS[split.scheme]), target


def connect_error(exc: OSError, request: httpx.Request | None = None) -> httpx.TransportError:
    """What a failure to connect (refused, unreachable, DNS, TLS, a timeout) is raised as."""
    if isinstance(exc, TimeoutError):
        error: httpx.TransportError = httpx.ConnectTimeout(str(exc) or "timed out", request=request)
    else:
        error = httpx.ConnectError(str(exc) or type(exc).__name__, request=request)
    error.__cause__ = exc
    return error


def _read_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for a failure while receiving a response."""
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out", request=request)
    if isinstance(exc, http.client.RemoteDisconnected):
        return httpx.RemoteProtocolError(_NO_RESPONSE, request=request)
    if isinstance(exc, http.client.IncompleteRead):
        what = "incomplete chunked read" if exc.expected is None else f"{exc.expected} more bytes"
        return httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({what})",
            request=request,
        )
    if isinstance(exc, (http.client.HTTPException, ValueError)):
        detail = str(exc) or type(exc).__name__
        return httpx.RemoteProtocolError(f"invalid HTTP response: {detail}", request=request)
    return httpx.ReadError(str(exc) or type(exc).__name__, request=request)


def _write_error(exc: OSError, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for a failure while sending a request."""
    if isinstance(exc, TimeoutError):
        return httpx.WriteTimeout(str(exc) or "timed out", request=request)
    return httpx.WriteError(str(exc) or type(exc).__name__, request=request)


class _SendError(Exception):
    """Sending part of a request body failed (unlike a failure of the body's own iterator)."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Conn:
    """A pooled connection: the http.client connection, when it went idle, and whether it is
    spent (its request was not sent whole: it must not carry another)."""

    __slots__ = ("http", "idle_since", "spent")

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        self.http = connection
        self.idle_since = 0.0
        self.spent = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.http.close()


class _ResponseStream(httpx.SyncByteStream):
    """A response body read in chunks; its connection goes back to the pool once it is read."""

    def __init__(
        self,
        transport: StdlibTransport,
        key: _Key,
        conn: _Conn,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Conn | None = conn
        self._response = response
        self._request = request
        self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        read = response.read
        try:
            while True:
                chunk = read(CHUNK_SIZE)
                if not chunk:
                    break
                yield chunk
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise _read_error(exc, self._request) from exc
        missing = response.length
        if missing:  # http.client returns b"" at an early EOF of a sized body
            self.close()
            error = http.client.IncompleteRead(b"", missing)
            raise _read_error(error, self._request) from error
        self._complete = True

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete:
            self._transport._release(self._key, conn, self._response)
        else:
            self._response.close()
            conn.close()


class StdlibTransport(httpx.BaseTransport):
    """An httpx transport on http.client with a keep-alive pool; see the module docstring.

    `opened` counts the connections made, `resent` the requests sent again on a new connection
    after a pooled one turned out closed (for tests and diagnostics).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        timeout: float | None = 30.0,
        max_idle: int = 16,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        if max_idle < 0:
            raise ValueError("max_idle must not be negative")
        # A callable is called at the first TLS connection (loading a CA store takes tens of
        # milliseconds, which a plain-http registry never needs), once.
        self._ssl_source = ssl_context if ssl_context is not None else ssl.create_default_context
        self._ssl_lock = threading.Lock()
        self._timeout = timeout
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._lock = threading.Lock()
        self._idle: dict[_Key, list[_Conn]] = {}
        self._closed = False
        self.opened = 0
        self.resent = 0

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The context of every TLS connection (made now if it was given as a callable)."""
        with self._ssl_lock:
            if not isinstance(self._ssl_source, ssl.SSLContext):
                self._ssl_source = self._ssl_source()
            return self._ssl_source

    # -- httpx.BaseTransport -------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"the URL scheme {scheme!r} is not http or https", request=request
            )
        host = url.raw_host.decode("ascii")
        if not host:
            raise httpx.UnsupportedProtocol(f"no host in the URL {url}", request=request)
        key: _Key = (scheme, host, url.port or DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        conn, reused = self._checkout(key, timeouts, request)
        try:
            response = self._exchange(conn, request, timeouts)
        except _Failure as failure:
            conn.close()
            if not (reused and failure.resend):
                raise failure.error from failure.cause
            with self._lock:
                self.resent += 1
            conn = self._connect(key, timeouts, request)  # the server closed an idle connection
            try:
                response = self._exchange(conn, request, timeouts)
            except _Failure as again:
                conn.close()
                raise again.error from again.cause
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return self._response(key, conn, response, request)

    def quick(
        self, method: str, url: str, headers: list[tuple[str, str]], *, max_body: int = 0
    ) -> tuple[int, dict[str, str], bytes] | None:
        """A HEAD or a small GET without httpx's request and response objects, for the hot
        path of `lock` (one manifest request per image): status, headers (lower-case names)
        and body, or None when anything at all goes wrong or the body would be larger than
        `max_body`, for the caller to send the request again the full way (both methods are
        safe to repeat). Only an idle pooled connection is used: None when there is none."""
        where = endpoint(url)
        if where is None:
            return None
        key, target = where
        conn = self._idle_connection(key)
        if conn is None:
            return None
        try:
            connection = conn.http
            connection.putrequest(method, target, True, True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            length = response.length
            if method != "HEAD" and (length is None or length > max_body):
                conn.close()  # unread: the connection cannot carry another request
                return None
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None
        found = {name.lower(): value for name, value in response.getheaders()}
        self._release(key, conn, response)
        return response.status, found, body

    def tls_refusal(self, host: str, port: int) -> httpx.TransportError | None:
        """How an https connection to host:port fails before any certificate is looked at
        (a plain-http server answers the TLS hello with an HTTP error, a proxy may hang up,
        nobody may listen), or None when the server gets as far as showing its certificate.

        For hosts allowed plain http, which are asked over https first and over http when that
        fails: this needs no CA store (loading one takes ~50 ms, which a plain-http registry
        never needs). The context has no CA at all, so no handshake can complete; a server
        that speaks TLS is then connected to the full way, certificate checked."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifying, hostname checked
        try:
            with (
                socket.create_connection((host, port), timeout=self._timeout) as sock,
                context.wrap_socket(sock, server_hostname=host),
            ):
                return None
        except ssl.SSLCertVerificationError:
            return None
        except OSError as exc:
            return connect_error(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    # -- the pool ------------------------------------------------------------------------------

    def _checkout(
        self, key: _Key, timeouts: dict[str, float | None], request: httpx.Request
    ) -> tuple[_Conn, bool]:
        """An idle connection that is still open (True), else a new one (False)."""
        conn = self._idle_connection(key)
        if conn is None:
            return self._connect(key, timeouts, request), False
        return conn, True

    def _idle_connection(self, key: _Key) -> _Conn | None:
        """A pooled connection to `key` that is still open (closing the stale ones), or None."""
        expiry = self._keepalive_expiry
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return None
            sock = conn.http.sock
            if (
                sock is None
                or (expiry is not None and time.monotonic() - conn.idle_since > expiry)
                or _readable(sock)
            ):
                conn.close()
                continue
            return conn

    def _release(self, key: _Key, conn: _Conn, response: http.client.HTTPResponse) -> None:
        """Pool a connection whose response was read to its end, if the server keeps it open."""
        if conn.spent or conn.http.sock is None or response.will_close or not response.isclosed():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self._max_idle:
                    idle.append(conn)
                    return
        conn.close()

    def _connect(
        self, key: _Key, timeouts: dict[str, float | None], request: httpx.Request
    ) -> _Conn:
        scheme, host, port = key
        timeout = timeouts.get("connect", self._timeout)
        with self._lock:
            self.opened += 1
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self.ssl_context
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.connect()
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (ssl.SSLError)
            connection.close()
            raise connect_error(exc, request) from exc
        return _Conn(connection)

    # -- one exchange --------------------------------------------------------------------------

    def _exchange(
        self, conn: _Conn, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> http.client.HTTPResponse:
        """Send the request and read the response head; _Failure on a connection failure."""
        connection = conn.http
        method = request.method
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a stream, read as it is sent (once)
        try:
            _set_timeout(connection.sock, timeouts.get("write", self._timeout))
            # skip_host, skip_accept_encoding: httpx's headers are sent as they are, no others
            connection.putrequest(method, request.url.raw_path.decode("ascii"), True, True)
            for name, value in request.headers.raw:
                connection.putheader(name, value)
            if body:
                self._check_length(request, len(body), final=True)
                connection.endheaders(body, encode_chunked=self._chunked(request))
            else:
                connection.endheaders()
        except OSError as exc:  # nothing the server could act on was sent: safe to resend
            return self._early_response(conn, request, timeouts, exc, resend=True)
        if body is None:
            try:
                self._send_stream(connection, request)
            except _SendError as failed:  # a stream cannot be sent again
                return self._early_response(conn, request, timeouts, failed.cause, resend=False)
        try:
            _set_timeout(connection.sock, timeouts.get("read", self._timeout))
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            resend = method in _SAFE_METHODS and body is not None and _closed_before_response(exc)
            raise _Failure(_read_error(exc, request), exc, resend) from exc

    def _early_response(
        self,
        conn: _Conn,
        request: httpx.Request,
        timeouts: dict[str, float | None],
        exc: OSError,
        resend: bool,
    ) -> http.client.HTTPResponse:
        """After a failure to send: the answer the server gave before it stopped reading (e.g.
        413, 401 to a large upload, as httpcore reads it too), else _Failure (WriteError)."""
        if not isinstance(exc, TimeoutError):
            try:
                _set_timeout(conn.http.sock, timeouts.get("read", self._timeout))
                response = conn.http.getresponse()
            except (OSError, http.client.HTTPException):
                pass
            else:
                conn.spent = True
                return response
        raise _Failure(_write_error(exc, request), exc, resend) from exc

    @staticmethod
    def _chunked(request: httpx.Request) -> bool:
        return "chunked" in request.headers.get("Transfer-Encoding", "").lower()

    @staticmethod
    def _check_length(request: httpx.Request, size: int, *, final: bool) -> None:
        """LocalProtocolError when `size` bytes of body do not fit the declared Content-Length."""
        if StdlibTransport._chunked(request):
            return
        declared = request.headers.get("Content-Length")
        limit = int(declared) if declared is not None and declared.isdigit() else 0
        if size > limit:
            raise httpx.LocalProtocolError(
                "Too much data for declared Content-Length", request=request
            )
        if final and size < limit:
            raise httpx.LocalProtocolError(
                "Too little data for declared Content-Length", request=request
            )

    def _send_stream(self, connection: http.client.HTTPConnection, request: httpx.Request) -> None:
        """Send the body as `request.stream` yields it: _SendError when sending fails; the
        stream's own exceptions pass through as they are."""
        stream = request.stream
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("StdlibTransport needs a synchronous request stream")
        chunked = self._chunked(request)
        sent = 0
        for chunk in stream:
            if not chunk:
                continue
            sent += len(chunk)
            if chunked:
                data = b"%X\r\n%b\r\n" % (len(chunk), chunk)
            else:
                self._check_length(request, sent, final=False)
                data = chunk
            try:
                connection.send(data)
            except OSError as exc:
                raise _SendError(exc) from exc
        if chunked:
            try:
                connection.send(b"0\r\n\r\n")
            except OSError as exc:
                raise _SendError(exc) from exc
        else:
            self._check_length(request, sent, final=True)

    def _response(
        self,
        key: _Key,
        conn: _Conn,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> httpx.Response:
        # http.client decoded the head as latin-1: encoding back gives the bytes sent.
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.getheaders()
        ]
        extensions = {
            "http_version": b"HTTP/1.1" if response.version == 11 else b"HTTP/1.0",
            "reason_phrase": response.reason.encode("latin-1", "replace"),
        }
        stream: httpx.SyncByteStream
        if response.length == 0 or request.method == "HEAD":
            # No body: finish now, so the connection is free at once.
            try:
                response.read()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                raise _read_error(exc, request) from exc
            self._release(key, conn, response)
            stream = httpx.ByteStream(b"")
        else:
            stream = _ResponseStream(self, key, conn, response, request)
        return httpx.Response(
            response.status, headers=headers, stream=stream, extensions=extensions
        )


class ProxyRouter(httpx.BaseTransport):
    """Requests an environment proxy applies to go through httpx's own transport; others direct.

    `proxies` are as `urllib.request.getproxies_environment()` reads them (HTTP_PROXY,
    HTTPS_PROXY, ALL_PROXY, NO_PROXY, any case); whether one applies to a host is decided by
    `urllib.request.proxy_bypass_environment` (NO_PROXY), once per (scheme, host, port).
    `proxied(url)` makes the transport for a proxy URL (made when first needed).
    """

    def __init__(
        self,
        direct: httpx.BaseTransport,
        proxies: dict[str, str],
        proxied: Callable[[str], httpx.BaseTransport],
    ) -> None:
        self.direct = direct
        self._proxies = proxies
        self._make = proxied
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str, int | None], httpx.BaseTransport] = {}
        self._proxied: dict[str, httpx.BaseTransport] = {}

    def route(self, url: httpx.URL) -> httpx.BaseTransport:
        key = (url.scheme, url.host, url.port)
        transport = self._routes.get(key)
        if transport is None:
            transport = self.direct
            proxy = proxy_for(url, self._proxies)
            if proxy is not None:
                with self._lock:
                    transport = self._proxied.get(proxy)
                    if transport is None:
                        transport = self._proxied[proxy] = self._make(proxy)
            self._routes[key] = transport
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.route(request.url).handle_request(request)

    def close(self) -> None:
        self.direct.close()
        with self._lock:
            proxied = list(self._proxied.values())
        for transport in proxied:
            transport.close()


def environment_proxies() -> dict[str, str]:
    """The proxy settings of the environment that concern http(s) requests; {} for none."""
    proxies = urllib.request.getproxies_environment()
    if not any(proxies.get(s) for s in ("http", "https", "all")):
        return {}
    if proxies.get("no", "").strip() == "*":
        return {}
    return proxies


def proxy_for(url: httpx.URL, proxies: dict[str, str]) -> str | None:
    """The proxy URL the environment's settings route `url` through, or None."""
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    if _bypassed(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"  # "proxy:3128" means http, as in httpx


def _bypassed(host: str, proxies: dict[str, str]) -> bool:
    """Whether NO_PROXY (proxies["no"]) exempts host[:port], as urllib reads it."""
    check = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    return bool(check(host, proxies))
