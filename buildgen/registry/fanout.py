"""Many small requests from one thread: the fast path of a manifest request per image.

    results = fetch_many(requests, concurrency=32, timeout=30.0, tls=lambda: context)

`buildgen lock` makes one request per image (a HEAD of each tag, or a GET of each index when
there is no lockfile yet), thousands in a row. Sent from a thread pool, each costs the client
a thread hand-off and a pass through an HTTP library, and on a fast registry the client's CPU
is what limits. Here one thread drives up to `concurrency` keep-alive connections with a
selector, one request in flight on each (so a latency of L serves `concurrency` requests per L),
and reads the answers with a parser that knows just what these answers look like.

The contract, which RegistryClient relies on:
- every result is `(status, headers, body)`, header names lower-case (repeated headers joined
  with ", "), or None: anything at all out of the plain (a connection that cannot be made or
  breaks, a timeout, chunked or oversized bodies, an interim 1xx, a malformed answer, bytes
  after the answer) gives None for that request, and the caller sends it again the full way,
  with its auth renewal, retries and errors. Requests are HEADs or GETs: safe to send again.
- a GET's body must come with a Content-Length of at most `max_body`; a HEAD has no body
  whatever its Content-Length says.
- a connection the server asks to close (`Connection: close`, HTTP/1.0) takes no more requests;
  when every connection is gone, the requests not yet sent are None.
- connections are made in parallel (connect and TLS handshakes wait on the network), used for
  this call only, and closed before it returns.
- `each(index, result)`, when given, is called with each answer as it arrives (never with
  None), after the next request is on its way on that connection: the caller's work on one
  answer overlaps the server's on others. What it raises ends the call (connections closed).
"""

from __future__ import annotations

import collections
import contextlib
import re
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

Answer = tuple[int, dict[str, str], bytes]  # status, headers (lower-case names), body
Result = Answer | None
Key = tuple[str, str, int]  # (scheme, host, port)

_RECV = 1 << 16
_MAX_HEAD = 1 << 16  # a response head larger than this is not a plain manifest answer
_NO_BODY_STATUS = (204, 304)
_UNSENDABLE = re.compile("[\r\n\0]")


@dataclass(frozen=True)
class Request:
    """One request: where to (scheme, host, port), the method, and its bytes on the wire."""

    key: Key
    method: str
    data: bytes

    @staticmethod
    def build(key: Key, method: str, target: str, headers: Sequence[tuple[str, str]]) -> Request:
        """The request `method target HTTP/1.1` with exactly `headers` (Host among them).

        ValueError for what cannot be sent as is: a CR, LF or NUL anywhere, non-ASCII target."""
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
        if _UNSENDABLE.search("".join(lines)):
            raise ValueError("a header or target holds a line break or NUL")
        text = "\r\n".join(lines)
        if not target.isascii() or not target.startswith("/"):
            raise ValueError(f"not an origin-form target: {target!r}")
        return Request(key, method, (text + "\r\n\r\n").encode("latin-1"))


def fetch_many(
    requests: Sequence[Request],
    *,
    concurrency: int,
    timeout: float,
    tls: Callable[[], ssl.SSLContext],
    max_body: int,
    each: Callable[[int, Answer], None] | None = None,
) -> list[Result]:
    """The answers to `requests`, in order (see the module docstring); `tls` gives the TLS
    context, called only when a request is for https; `each` sees each answer as it comes."""
    results: list[Result] = [None] * len(requests)
    queues: dict[Key, collections.deque[int]] = {}
    for index, request in enumerate(requests):
        queues.setdefault(request.key, collections.deque()).append(index)
    for key, queue in queues.items():
        _Loop(key, requests, queue, results, timeout, max_body, each).run(
            _connect_all(key, min(concurrency, len(queue)), timeout, tls)
        )
    return results


def _connect(key: Key, timeout: float, tls: Callable[[], ssl.SSLContext]) -> socket.socket | None:
    scheme, host, port = key
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            sock = tls().wrap_socket(sock, server_hostname=host)
        sock.setblocking(False)
    except OSError:  # ssl.SSLError is one
        sock.close()
        return None
    return sock


def _connect_all(
    key: Key, count: int, timeout: float, tls: Callable[[], ssl.SSLContext]
) -> list[socket.socket]:
    if count <= 0:
        return []
    first = _connect(key, timeout, tls)
    if first is None or count == 1:  # an unreachable host fails once, not `count` times
        return [first] if first is not None else []
    with ThreadPoolExecutor(min(count - 1, 32), thread_name_prefix="connect") as pool:
        others = pool.map(lambda _: _connect(key, timeout, tls), range(count - 1))
        return [first, *(sock for sock in others if sock is not None)]


class _Channel:
    """One connection and the request in flight on it."""

    __slots__ = ("buffer", "deadline", "head", "index", "method", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.index = -1
        self.method = ""
        self.buffer = bytearray()
        # Once the head is parsed: (body offset, status, headers, body length, keep-alive).
        self.head: tuple[int, int, dict[str, str], int, bool] | None = None
        self.deadline = 0.0


class _GiveUp(Exception):
    """The answer is not a plain one: its request goes the full way, the connection closes."""


class _Loop:
    def __init__(
        self,
        key: Key,
        requests: Sequence[Request],
        queue: collections.deque[int],
        results: list[Result],
        timeout: float,
        max_body: int,
        each: Callable[[int, Answer], None] | None,
    ) -> None:
        self.key = key
        self.each = each
        self.requests = requests
        self.queue = queue
        self.results = results
        self.timeout = timeout
        self.max_body = max_body
        self.selector = selectors.DefaultSelector()
        self.channels: set[_Channel] = set()

    def run(self, socks: list[socket.socket]) -> None:
        try:
            for sock in socks:
                channel = _Channel(sock)
                self.channels.add(channel)
                self.selector.register(sock, selectors.EVENT_READ, channel)
                self._send_next(channel)
            while self.channels:
                wait = min(c.deadline for c in self.channels) - time.monotonic()
                for selected, _ in self.selector.select(max(wait, 0.0)):
                    self._receive(selected.data)
                now = time.monotonic()
                for channel in [c for c in self.channels if c.deadline <= now]:
                    self._close(channel)  # timed out: its request goes the full way
        finally:
            for channel in list(self.channels):
                self._close(channel)
            self.selector.close()

    def _send_next(self, channel: _Channel) -> None:
        if not self.queue:
            self._close(channel)
            return
        index = self.queue.popleft()
        request = self.requests[index]
        channel.index, channel.method = index, request.method
        channel.buffer.clear()
        channel.head = None
        channel.deadline = time.monotonic() + self.timeout
        try:
            sent = channel.sock.send(request.data)
        except (OSError, ValueError):
            sent = -1
        if sent != len(request.data):  # a request head fits any send buffer: this is trouble
            self._close(channel)

    def _receive(self, channel: _Channel) -> None:
        sock = channel.sock
        try:
            data = sock.recv(_RECV)
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                data += sock.recv(sock.pending())
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(channel)
            return
        if not data or channel.index < 0:  # closed by the server, or talking out of turn
            self._close(channel)
            return
        channel.buffer += data
        try:
            done = self._parse(channel)
        except _GiveUp:
            self._close(channel)
            return
        if done is None:
            return
        answer, keep_alive = done
        index = channel.index
        self.results[index] = answer
        channel.index = -1
        if keep_alive:
            self._send_next(channel)
        else:
            self._close(channel)
        if self.each is not None:
            self.each(index, answer)

    def _parse(self, channel: _Channel) -> tuple[Answer, bool] | None:
        """The result and whether the connection stays open, or None while incomplete."""
        buffer = channel.buffer
        if channel.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise _GiveUp
                return None
            channel.head = self._head(bytes(buffer[:end]), end + 4, channel.method)
        offset, status, headers, length, keep_alive = channel.head
        if len(buffer) < offset + length:
            return None
        if len(buffer) > offset + length:  # more than one answer to one request
            raise _GiveUp
        return (status, headers, bytes(buffer[offset:])), keep_alive

    def _head(
        self, head: bytes, offset: int, method: str
    ) -> tuple[int, int, dict[str, str], int, bool]:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit():
            raise _GiveUp
        if rest[3:4] not in ("", " "):
            raise _GiveUp
        status = int(code)
        if status < 200:
            raise _GiveUp  # an interim answer (100, 103): not worth handling here
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or not name.isascii():
                raise _GiveUp  # folded or malformed
            name, value = name.lower(), value.strip(" \t")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "transfer-encoding" in headers:
            raise _GiveUp
        if method == "HEAD" or status in _NO_BODY_STATUS:
            length = 0
        else:
            declared = headers.get("content-length", "")
            if not declared.isdigit() or int(declared) > self.max_body:
                raise _GiveUp
            length = int(declared)
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        return offset, status, headers, length, keep_alive

    def _close(self, channel: _Channel) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(channel.sock)
        with contextlib.suppress(OSError):
            channel.sock.close()
