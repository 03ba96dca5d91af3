"""buildgen.registry.transport: the http.client transport, against real servers.

- the CNCF distribution registry of the `registry` fixture (and a TLS one from registries.py),
  directly through httpx and through RegistryClient;
- FaultProxy (registries.py) in front of it, for connections reset before any response;
- `Scripted`, a raw HTTP/1.1 server in this file whose answers are picked by path: it checks
  what goes on the wire (headers, chunked bodies) and fails in the ways the error mapping covers;
- `Truncator`, a forwarding server in front of the registry that cuts responses short.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from components import Registry, free_port
from registries import FaultProxy, RunningRegistry, start_registry

from buildgen.registry import (
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    sha256_digest,
)
from buildgen.registry.retry import certificate_error, is_transient_error, tls_error
from buildgen.registry.transport import ProxyRouter, StdlibTransport, environment_proxies

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine has, these tests decide which proxy variables are set."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def options(**extra: object) -> RegistryOptions:
    return RegistryOptions(docker_config="/nonexistent", **extra)  # type: ignore[arg-type]


def http_client(transport: StdlibTransport, timeout: float = 10) -> httpx.Client:
    return httpx.Client(transport=transport, timeout=timeout)


def rst(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


# -- test servers ----------------------------------------------------------------------------


def read_head(reader: object) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Request line and headers (in order, as sent); None at EOF."""
    line = reader.readline()  # type: ignore[attr-defined]
    if not line:
        return None
    method, target, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = []
    while True:
        line = reader.readline()  # type: ignore[attr-defined]
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name, value.strip()))
    return method, target, headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def read_body(reader: object, headers: list[tuple[str, str]]) -> bytes:
    if "chunked" in (header(headers, "transfer-encoding") or "").lower():
        parts = []
        while True:
            size = int(reader.readline().split(b";")[0], 16)  # type: ignore[attr-defined]
            if size == 0:
                while reader.readline() not in (b"\r\n", b""):  # type: ignore[attr-defined]
                    pass
                return b"".join(parts)
            parts.append(reader.read(size))  # type: ignore[attr-defined]
            reader.readline()  # type: ignore[attr-defined]
    return reader.read(int(header(headers, "content-length") or 0))  # type: ignore[attr-defined, no-any-return]


class Server:
    """A TCP server on 127.0.0.1 serving each connection with `serve(sock, reader)` in a thread."""

    def __init__(self, serve: Callable[[socket.socket, object], None], backlog: int = 64) -> None:
        self._serve = serve
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.stopping = threading.Event()
        self.connections = 0
        self.closed = 0
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            if reader.peek(1)[:1] == b"\x16":
                return  # a TLS ClientHello (RegistryClient tries https first): not spoken here
            self._serve(sock, reader)
        except (OSError, ValueError):
            pass  # the client went away in the middle of a request
        finally:
            with contextlib.suppress(OSError):
                reader.close()
            with contextlib.suppress(OSError):
                sock.close()
            self.closed += 1

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def response(
    status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = (), head: bool = False
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{k}: {v}" for k, v in headers]
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


class Scripted(Server):
    """Answers by path; records (method, path, headers, body) of every request it reads.

    /echo: the request as JSON; /dup: two Link and two WWW-Authenticate headers; /gzip: a
    gzip-encoded body; /close: `Connection: close`; /oneshot: an answer, then the connection is
    closed (no `Connection: close`: the close comes while it is idle); /then-drop: an answer, and
    the next request on the connection is read and left unanswered (the connection closed);
    /hangup: closed without an answer; /garbage: not HTTP; /truncate, /truncate-rst,
    /truncate-chunked: a body cut short (FIN, RST, chunked); /slow: never answers; /sink: never
    reads the body; /rst-on-body: RST once the head is read; /early-413: 413 once the head is
    read, then the connection closed; anything else: 200 "ok".
    """

    BIG = b"x" * 1000

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        super().__init__(self.serve)

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    def serve(self, sock: socket.socket, reader: object) -> None:
        drop_next = False
        while True:
            head = read_head(reader)
            if head is None:
                return
            method, path, headers = head
            if path == "/slow" or path == "/sink":
                self.requests.append((method, path, headers, b""))
                self.stopping.wait(20)
                return
            if path == "/rst-on-body":
                self.requests.append((method, path, headers, b""))
                rst(sock)
                return
            if path == "/early-413":  # as nginx does with a body over client_max_body_size
                self.requests.append((method, path, headers, b""))
                sock.sendall(response(413, b"too large", (("Connection", "close"),)))
                sock.shutdown(socket.SHUT_WR)
                time.sleep(0.3)
                return  # closed with the body unread: a reset
            body = read_body(reader, headers)
            self.requests.append((method, path, headers, body))
            if drop_next:
                return
            is_head = method == "HEAD"
            if path == "/echo":
                echo = {"method": method, "headers": headers, "body": len(body)}
                sock.sendall(response(200, json.dumps(echo).encode(), head=is_head))
            elif path == "/dup":
                dup = (
                    ("Link", '</a?n=1>; rel="next"'),
                    ("WWW-Authenticate", 'Bearer realm="https://a.test/token"'),
                    ("Link", '</b>; rel="other"'),
                    ("WWW-Authenticate", 'Basic realm="b"'),
                )
                sock.sendall(response(200, b"{}", dup, head=is_head))
            elif path == "/gzip":
                data = gzip.compress(self.BIG)
                sock.sendall(response(200, data, (("Content-Encoding", "gzip"),), head=is_head))
            elif path == "/close":
                sock.sendall(response(200, b"bye", (("Connection", "close"),), head=is_head))
                return
            elif path == "/oneshot":
                sock.sendall(response(200, b"once", head=is_head))
                return
            elif path == "/then-drop":
                sock.sendall(response(200, b"ok", head=is_head))
                drop_next = True
            elif path == "/hangup":
                return
            elif path == "/garbage":
                sock.sendall(b"this is not http\r\n\r\n")
                return
            elif path in ("/truncate", "/truncate-rst"):
                sock.sendall(response(200, self.BIG)[:-900])
                if path == "/truncate-rst":
                    time.sleep(0.2)  # let the head and first bytes be read first
                    rst(sock)
                return
            elif path == "/truncate-chunked":
                chunked = (("Transfer-Encoding", "chunked"),)
                sock.sendall(response(200, b"", chunked) + b"5\r\nhello\r\n")
                return
            else:
                sock.sendall(response(200, b"ok", head=is_head))


class Truncator(Server):
    """Forwards to `upstream`; the next `arm(n, how)` GET answers with a body are cut in half.

    `how` is "rst" (a TCP reset) or "fin" (the connection closed, the body short of its
    Content-Length). The upstream sees a fresh connection per request.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._armed: list[str] = []
        self._lock = threading.Lock()
        self.cut = 0
        super().__init__(self.serve)

    def arm(self, count: int, how: str) -> None:
        with self._lock:
            self._armed += [how] * count

    def serve(self, sock: socket.socket, reader: object) -> None:
        import http.client

        while True:
            head = read_head(reader)
            if head is None:
                return
            method, path, headers = head
            body = read_body(reader, headers)
            upstream = http.client.HTTPConnection(self.upstream, timeout=20)
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    upstream.putheader(name, value)
            if body or method in ("PUT", "POST", "PATCH"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            answer = upstream.getresponse()
            data = answer.read()
            upstream.close()
            kept = tuple(
                (k, v)
                for k, v in answer.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")
            )
            if method == "HEAD":
                length = answer.getheader("Content-Length") or "0"
                sock.sendall(response(answer.status, b"", (*kept, ("Content-Length", length))))
                continue
            whole = response(answer.status, data, kept)
            how = None
            with self._lock:
                if self._armed and method == "GET" and len(data) > 1 and path != "/v2/":
                    how = self._armed.pop(0)
                    self.cut += 1
            if how is None:
                sock.sendall(whole)
                continue
            sock.sendall(whole[: len(whole) - len(data) // 2])
            if how == "rst":
                time.sleep(0.2)  # let the head and first bytes be read first
                rst(sock)
            return


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    try:
        yield server
    finally:
        server.stop()


def with_digest(location: str, digest: str) -> httpx.URL:
    """An upload Location with ?digest= added (httpx's params= would drop its _state)."""
    return httpx.URL(location).copy_merge_params({"digest": digest})


def unique(host: str, name: str) -> str:
    return f"{host}/test-transport/{name}-{uuid.uuid4().hex[:8]}"


def push_manifest(client: RegistryClient, repository: str, tag: str, layer: bytes) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    for blob in (config, layer):
        client.upload_blob(repository, sha256_digest(blob), blob, len(blob))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    return manifest


# -- against the real registry ---------------------------------------------------------------


def test_requests_on_one_kept_alive_connection(registry: Registry) -> None:
    transport = StdlibTransport()
    base = f"http://{registry.host}/v2/test-transport/direct-{uuid.uuid4().hex[:8]}"
    blob = bytes(range(256)) * 40
    digest = sha256_digest(blob)
    with http_client(transport) as http:
        assert http.get(f"http://{registry.host}/v2/").status_code == 200
        start = http.post(f"{base}/blobs/uploads/")
        assert start.status_code == 202
        put = http.put(with_digest(start.headers["Location"], digest), content=blob)
        assert put.status_code == 201, put.text
        head = http.head(f"{base}/blobs/{digest}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(blob))
        assert head.headers["Docker-Content-Digest"] == digest
        assert http.get(f"{base}/blobs/{digest}").content == blob
        # Error bodies are read whole: the connection stays.
        missing = http.get(f"{base}/manifests/absent", headers={"Accept": OCI_MANIFEST})
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert http.head(f"{base}/manifests/absent").status_code == 404
        assert http.get(f"{base}/tags/list").status_code == 404
    assert transport.opened == 1 and transport.resent == 0


def test_streamed_upload_and_download(registry: Registry) -> None:
    transport = StdlibTransport()
    blob = hashlib.sha256(b"seed").digest() * (3 * 2**20 // 32)  # 3 MiB
    digest = sha256_digest(blob)
    base = f"http://{registry.host}/v2/test-transport/stream-{uuid.uuid4().hex[:8]}"

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    with http_client(transport) as http:
        # Chunked transfer-encoding (no length given), then Content-Length with a stream.
        location = http.post(f"{base}/blobs/uploads/").headers["Location"]
        put = http.put(with_digest(location, digest), content=chunks())
        assert put.request.headers["Transfer-Encoding"] == "chunked"
        assert put.status_code == 201, put.text
        other = f"{base}-2"
        location = http.post(f"{other}/blobs/uploads/").headers["Location"]
        put = http.put(
            with_digest(location, digest),
            content=chunks(),
            headers={"Content-Length": str(len(blob))},
        )
        assert put.status_code == 201, put.text
        assert "Transfer-Encoding" not in put.request.headers

        for repo in (base, other):
            h = hashlib.sha256()
            with http.stream("GET", f"{repo}/blobs/{digest}") as stream:
                sizes = [len(chunk) for chunk in stream.iter_raw()]
                assert len(sizes) > 1  # read in chunks, not whole
            with http.stream("GET", f"{repo}/blobs/{digest}") as stream:
                for chunk in stream.iter_bytes():
                    h.update(chunk)
            assert "sha256:" + h.hexdigest() == digest
        assert transport.opened == 1  # every body read to its end: one connection throughout

        # A body left half read: its connection is closed, not pooled.
        with http.stream("GET", f"{base}/blobs/{digest}") as stream:
            next(stream.iter_raw())
        assert http.head(f"{base}/blobs/{digest}").status_code == 200
        assert transport.opened == 2


def test_registry_client_uses_it(registry: Registry) -> None:
    with RegistryClient(options()) as client:
        assert isinstance(client._http._transport, StdlibTransport)
        repo = unique(registry.host, "client")
        layer = b"\x01" * (2 * 2**20 + 17)
        chunks = [layer[i : i + 65536] for i in range(0, len(layer), 65536)]
        client.upload_blob(repo, sha256_digest(layer), lambda: iter(chunks), len(layer))
        client.upload_blob(repo, sha256_digest(b"bytes"), b"bytes", 5)
        manifest = push_manifest(client, repo, "v1", layer)
        head = client.head_manifest(repo, "v1")
        assert head is not None and head.digest == sha256_digest(manifest)
        assert client.get_manifest(repo, "v1").data == manifest
        got = b"".join(client.get_blob(repo, sha256_digest(layer), size=len(layer)))
        assert got == layer
        assert client.list_tags(repo) == ["v1"]
        assert client.stats["retry"] == 0


def test_many_threads_share_the_pool(registry: Registry) -> None:
    with RegistryClient(options(max_connections=8)) as client:
        repo = unique(registry.host, "threads")
        push_manifest(client, repo, "v1", b"threads")
        transport = client._http._transport
        assert isinstance(transport, StdlibTransport)
        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(lambda _: client.head_manifest(repo, "v1"), range(400)))
        assert all(found) and len({d.digest for d in found if d}) == 1
        assert transport.opened <= 8 + 2  # at most 8 in flight; + the pings
        assert client.stats["retry"] == 0


# -- connections the server closed -----------------------------------------------------------


def test_reused_connection_reset_is_sent_again_for_safe_methods(registry: Registry) -> None:
    with FaultProxy(registry.host, rate=0.0) as proxy:
        transport = StdlibTransport()
        with http_client(transport) as http:
            assert http.get(f"{proxy.url}/v2/").status_code == 200
            proxy.inject("reset")  # the next request: its head is read, then a TCP RST
            assert http.head(f"{proxy.url}/v2/").status_code == 200
            assert transport.resent == 1 and transport.opened == 2
            assert proxy.stats["reset"] == 1

            # A PUT is not sent again by the transport: the caller decides.
            proxy.inject("reset-after")  # forwarded and done upstream, then the client is reset
            repo = f"{proxy.url}/v2/test-transport/put-{uuid.uuid4().hex[:8]}"
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
                http.put(f"{repo}/manifests/v1", content=b"{}")
            assert is_transient_error(caught.value)
            assert transport.resent == 1
            assert proxy.stats["reset-after"] == 1


def test_reset_then_reset_again_is_left_to_the_client_retry(registry: Registry) -> None:
    with (
        FaultProxy(registry.host, rate=0.0) as proxy,
        RegistryClient(options(backoff=0.01)) as client,
    ):
        client._quick = None  # the full path (the fast one falls back to it: see below)
        repo = unique(proxy.host, "resets")
        manifest = push_manifest(client, repo, "v1", b"resets")
        transport = client._http._transport
        assert isinstance(transport, StdlibTransport)
        # Once on the pooled connection (sent again), once on the new one (raised).
        proxy.inject("reset", 2)
        assert client.get_manifest(repo, "v1").data == manifest
        assert transport.resent == 1 and client.stats["retry"] == 1
        # A PUT reset after the registry did it: the client retries, the transport not.
        proxy.inject("reset-after")
        client.put_manifest(repo, "v2", manifest, OCI_MANIFEST)
        assert transport.resent == 1 and client.stats["retry"] == 2
        assert client.head_manifest(repo, "v2") is not None


def test_idle_connection_closed_by_the_server_is_replaced(scripted: Scripted) -> None:
    transport = StdlibTransport()
    with http_client(transport) as http:
        assert http.get(f"{scripted.url}/oneshot").text == "once"
        time.sleep(0.2)  # the server's close arrives while the connection is pooled
        assert http.get(f"{scripted.url}/oneshot").text == "once"
        assert (transport.opened, transport.resent) == (2, 0)
        assert scripted.paths() == ["/oneshot", "/oneshot"]  # nothing sent on the dead one


def test_race_with_a_closing_server(scripted: Scripted) -> None:
    transport = StdlibTransport()
    with http_client(transport) as http:
        assert http.get(f"{scripted.url}/then-drop").text == "ok"
        assert http.head(f"{scripted.url}/x").status_code == 200  # dropped, then sent again
        assert transport.resent == 1
        assert scripted.paths() == ["/then-drop", "/x", "/x"]

        assert http.get(f"{scripted.url}/then-drop").text == "ok"
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            http.post(f"{scripted.url}/y", content=b"once only")
        assert scripted.paths().count("/y") == 1  # a POST is not sent twice
        assert transport.resent == 1


def test_connection_close_and_keepalive_expiry(scripted: Scripted) -> None:
    transport = StdlibTransport(keepalive_expiry=0.2)
    with http_client(transport) as http:
        assert http.get(f"{scripted.url}/close").text == "bye"
        assert http.get(f"{scripted.url}/a").text == "ok"
        assert transport.opened == 2  # the server said Connection: close
        assert http.get(f"{scripted.url}/b").text == "ok"
        assert transport.opened == 2
        time.sleep(0.3)
        assert http.get(f"{scripted.url}/c").text == "ok"
        assert transport.opened == 3 and transport.resent == 0


def test_pool_keeps_at_most_max_idle(scripted: Scripted) -> None:
    transport = StdlibTransport(max_idle=2)
    with http_client(transport) as http:
        for opened in (4, 4 + 2):  # 4 at once, of which 2 are kept
            with contextlib.ExitStack() as stack:
                streams = [stack.enter_context(http.stream("GET", scripted.url)) for _ in range(4)]
                for stream in streams:
                    assert stream.read() == b"ok"
            assert transport.opened == opened


# -- what goes on the wire -------------------------------------------------------------------


def test_exactly_the_request_headers_are_sent(scripted: Scripted) -> None:
    with http_client(StdlibTransport()) as http:
        for method, content in (("GET", None), ("HEAD", None), ("PUT", b"12345"), ("POST", None)):
            sent = http.request(method, f"{scripted.url}/echo", content=content,
                                headers={"Accept": "a/b, c/d", "X-Two": "2"})  # fmt: skip
            received = scripted.requests[-1][2]
            assert [(k.encode(), v.encode()) for k, v in received] == sent.request.headers.raw
            names = [k.lower() for k, _ in received]
            assert names.count("host") == 1 and names.count("accept-encoding") <= 1
            assert "identity" not in (header(received, "accept-encoding") or "")
        assert header(scripted.requests[-2][2], "content-length") == "5"
        assert scripted.requests[-2][3] == b"12345"
        assert header(scripted.requests[-1][2], "content-length") == "0"  # httpx's, for POST


def test_response_headers_keep_duplicates(scripted: Scripted) -> None:
    with http_client(StdlibTransport()) as http:
        for method in ("GET", "HEAD"):
            answer = http.request(method, f"{scripted.url}/dup")
            assert answer.headers.get_list("Link") == ['</a?n=1>; rel="next"', '</b>; rel="other"']
            assert answer.headers.get_list("WWW-Authenticate") == [
                'Bearer realm="https://a.test/token"',
                'Basic realm="b"',
            ]
            assert answer.links["next"]["url"] == "/a?n=1"
            assert answer.http_version == "HTTP/1.1"


def test_gzip_bodies_are_decoded_by_httpx(scripted: Scripted) -> None:
    with http_client(StdlibTransport()) as http:
        answer = http.get(f"{scripted.url}/gzip")
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.content == Scripted.BIG
        with http.stream("GET", f"{scripted.url}/gzip") as stream:
            assert b"".join(stream.iter_bytes()) == Scripted.BIG


def test_body_errors_of_our_own(scripted: Scripted) -> None:
    transport = StdlibTransport()
    with http_client(transport) as http:

        def failing() -> Iterator[bytes]:
            yield b"part"
            raise RuntimeError("the source broke")

        with pytest.raises(RuntimeError, match="the source broke"):
            http.put(f"{scripted.url}/echo", content=failing())
        with pytest.raises(httpx.LocalProtocolError, match="Too much"):
            http.put(
                f"{scripted.url}/echo", content=iter([b"123456"]), headers={"Content-Length": "5"}
            )
        with pytest.raises(httpx.LocalProtocolError, match="Too little"):
            http.put(
                f"{scripted.url}/echo", content=iter([b"1234"]), headers={"Content-Length": "5"}
            )
        assert http.get(f"{scripted.url}/ok").text == "ok"
        assert transport.opened == 4  # a half-sent request spoils its connection


def test_an_answer_before_the_upload_is_sent(scripted: Scripted) -> None:
    transport = StdlibTransport()
    big = b"\0" * (64 << 20)
    with http_client(transport) as http:
        for content in (big, iter([big[: 32 << 20], big[32 << 20 :]])):
            answer = http.put(
                f"{scripted.url}/early-413",
                content=content,
                headers={"Content-Length": str(len(big))},
            )
            assert (answer.status_code, answer.text) == (413, "too large")
        assert http.get(f"{scripted.url}/ok").text == "ok"
        assert transport.opened == 3 and transport.resent == 0


# -- error mapping ---------------------------------------------------------------------------


def test_connect_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused_port = sock.getsockname()[1]
    with http_client(StdlibTransport()) as http:
        with pytest.raises(httpx.ConnectError) as refused:
            http.get(f"http://127.0.0.1:{refused_port}/")
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
        assert is_transient_error(refused.value)
        with pytest.raises(httpx.ConnectError) as dns:
            http.get("http://nonexistent.invalid/")
        assert isinstance(dns.value.__cause__, socket.gaierror)

    # A listener whose backlog is full: further connections are not answered.
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = full.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)
        http = http_client(StdlibTransport(), timeout=0.3)
        with http, pytest.raises(httpx.ConnectTimeout) as timed_out:
            http.get(f"http://127.0.0.1:{port}/")
        assert is_transient_error(timed_out.value)
    finally:
        for filler in fillers:
            filler.close()
        full.close()


def test_read_and_write_errors(scripted: Scripted) -> None:
    cases: list[tuple[str, str, bytes | None, type[httpx.TransportError], str | None]] = [
        ("GET", "/slow", None, httpx.ReadTimeout, None),
        ("PUT", "/sink", b"\0" * (64 << 20), httpx.WriteTimeout, None),
        ("PUT", "/rst-on-body", b"\0" * (64 << 20), httpx.WriteError, None),
        ("GET", "/hangup", None, httpx.RemoteProtocolError, "without sending a response"),
        ("GET", "/garbage", None, httpx.RemoteProtocolError, "invalid HTTP response"),
        ("GET", "/truncate", None, httpx.RemoteProtocolError, "900 more bytes"),
        ("GET", "/truncate-rst", None, httpx.ReadError, None),
        ("GET", "/truncate-chunked", None, httpx.RemoteProtocolError, None),
    ]
    for method, path, content, error, message in cases:
        transport = StdlibTransport()
        with http_client(transport, timeout=0.5) as http:
            with pytest.raises(error, match=message) as caught:
                http.request(method, f"{scripted.url}{path}", content=content)
            assert is_transient_error(caught.value), path
            assert caught.value.__cause__ is not None, path
            assert transport.resent == 0, path
            assert http.get(f"{scripted.url}/ok").text == "ok"
            assert transport.opened == 2, path  # the failed connection was not pooled


def test_a_reset_mid_response_is_retried_by_the_client(registry: Registry) -> None:
    truncator = Truncator(registry.host)
    try:
        with RegistryClient(options(backoff=0.01)) as client:
            client._quick = None  # the full path's retries (the fast path has its own test)
            repo = unique(truncator.host, "cut")
            layer = b"\x02" * 300_000
            manifest = push_manifest(client, repo, "v1", layer)
            truncator.arm(1, "rst")
            truncator.arm(1, "fin")
            assert client.get_manifest(repo, "v1").data == manifest
            assert truncator.cut == 2 and client.stats["retry"] == 2

            # A blob stream broken half way: a retryable error, after the bytes that came.
            truncator.arm(1, "rst")
            with pytest.raises(RegistryError, match="connection failed after") as caught:
                b"".join(client.get_blob(repo, sha256_digest(layer)))
            assert caught.value.retryable
            assert isinstance(caught.value.__cause__, (httpx.ReadError, httpx.RemoteProtocolError))
            # ensure_blob copies through the spool, fetching again on a broken stream.
            truncator.arm(1, "fin")
            target = unique(registry.host, "copy")
            client.ensure_blob(target, sha256_digest(layer), len(layer), source_repository=repo)
            assert client.blob_exists(target, sha256_digest(layer))
    finally:
        truncator.stop()


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    import shutil

    if shutil.which("docker-registry") is None:
        from conftest import missing

        missing("docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry(tmp_path_factory.mktemp("tls"), tls=True)
    try:
        yield reg
    finally:
        reg.stop()


def test_tls_with_the_ca(tls_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_registry.ca_file is not None
    context = ssl.create_default_context(cafile=str(tls_registry.ca_file))
    made: list[object] = []
    original = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    transport = StdlibTransport(ssl_context=context)
    monkeypatch.setattr(ssl, "create_default_context", counting)
    with http_client(transport) as http:
        for host in (tls_registry.host, tls_registry.localhost):  # IP and DNS SANs
            for _ in range(3):
                assert http.get(f"https://{host}/v2/").status_code == 200
    assert transport.opened == 2 and made == []  # one context for every connection
    monkeypatch.undo()

    with RegistryClient(options(ca_bundle=str(tls_registry.ca_file))) as client:
        repo = unique(tls_registry.host, "tls")
        manifest = push_manifest(client, repo, "v1", b"over tls")
        head = client.head_manifest(repo, "v1")
        assert head is not None and head.digest == sha256_digest(manifest)
        assert client._http._transport.opened <= 2  # type: ignore[attr-defined]


def test_tls_without_the_ca(tls_registry: RunningRegistry) -> None:
    with http_client(StdlibTransport()) as http, pytest.raises(httpx.ConnectError) as caught:
        http.get(f"https://{tls_registry.host}/v2/")
    cert = certificate_error(caught.value)
    assert cert is not None and "certificate verify failed" in str(caught.value)
    assert not is_transient_error(caught.value)

    with RegistryClient(options()) as client:
        with pytest.raises(RegistryError, match="--ca-bundle") as refused:
            client.head_manifest(f"{tls_registry.host}/tls/x", "v1")
        assert "does not verify" in str(refused.value)
        assert client.stats["retry"] == 0 and client.stats["ping"] == 1


def test_tls_to_a_plain_http_server(registry: Registry) -> None:
    with http_client(StdlibTransport()) as http, pytest.raises(httpx.ConnectError) as caught:
        http.get(f"https://{registry.host}/v2/")
    assert tls_error(caught.value) is not None and certificate_error(caught.value) is None
    with RegistryClient(options()) as client:  # loopback: falls back to http
        assert client.list_tags(unique(registry.host, "fallback")) == []


def test_a_plain_http_server_is_told_apart_without_a_ca_store(
    registry: Registry, tls_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = StdlibTransport()
    plain_host, plain_port = registry.host.rsplit(":", 1)
    refusal = transport.tls_refusal(plain_host, int(plain_port))  # answers with an HTTP error
    assert isinstance(refusal, httpx.ConnectError) and tls_error(refusal) is not None
    assert certificate_error(refusal) is None
    tls_host, tls_port = tls_registry.host.rsplit(":", 1)
    assert transport.tls_refusal(tls_host, int(tls_port)) is None  # TLS: checked the full way
    nobody = transport.tls_refusal("127.0.0.1", free_port())
    assert isinstance(nobody, httpx.ConnectError) and is_transient_error(nobody)

    made: list[object] = []
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(a))
    with FaultProxy(registry.host, rate=0.0) as proxy:  # hangs up on a TLS hello
        for host in (registry.host, proxy.host):
            with RegistryClient(options()) as client:
                assert client.list_tags(unique(host, "no-ca-store")) == []
                assert client.stats["ping"] == 1  # over http only: no https request was sent
    assert made == []


# -- proxies from the environment ------------------------------------------------------------


def test_no_proxy_variables_means_the_stdlib_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    assert environment_proxies() == {}
    with RegistryClient(options()) as client:
        assert isinstance(client._http._transport, StdlibTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "*")
    with RegistryClient(options()) as client:
        assert isinstance(client._http._transport, StdlibTransport)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
def test_proxy_variables_route_through_httpx(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://proxy.test:3128")
    monkeypatch.setenv("no_proxy", "registry.internal,.corp.test")
    with RegistryClient(options()) as client:
        router = client._http._transport
        assert isinstance(router, ProxyRouter)
        proxied = router.route(httpx.URL("https://ghcr.io/v2/"))
        assert isinstance(proxied, httpx.HTTPTransport)  # httpx's own, which speaks to proxies
        assert router.route(httpx.URL("https://quay.io:443/v2/")) is proxied
        for exempt in ("https://registry.internal/v2/", "https://r.corp.test:5000/v2/"):
            assert router.route(httpx.URL(exempt)) is router.direct
        assert isinstance(router.direct, StdlibTransport)
        plain = router.route(httpx.URL("http://127.0.0.1:5000/v2/"))
        assert (plain is proxied) == variable.lower().startswith("all")


def test_proxy_for() -> None:
    from buildgen.registry.transport import proxy_for

    proxies = {"http": "proxy.test:3128", "https": "https://p.test", "no": "localhost,10.0.0.1"}
    assert proxy_for(httpx.URL("http://r.test/v2/"), proxies) == "http://proxy.test:3128"
    assert proxy_for(httpx.URL("https://r.test:5000/v2/"), proxies) == "https://p.test"
    assert proxy_for(httpx.URL("https://localhost:5000/v2/"), proxies) is None
    assert proxy_for(httpx.URL("http://10.0.0.1/v2/"), proxies) is None
    assert proxy_for(httpx.URL("http://r.test/"), {"https": "p:1"}) is None


def test_requests_go_through_an_http_proxy(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultProxy(registry.host, rate=0.0) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        repo = unique(registry.host, "proxied")
        with RegistryClient(options()) as client:
            assert client.list_tags(repo) == []
        assert proxy.stats["forwarded"] >= 2  # the http ping and the tag listing
        proxy.reset_stats()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with RegistryClient(options()) as client:
            assert client.list_tags(repo) == []
        assert proxy.stats["requests"] == 0


def test_unsupported_urls() -> None:
    with http_client(StdlibTransport()) as http, pytest.raises(httpx.UnsupportedProtocol):
        http.get("ftp://127.0.0.1/x")


def test_transport_closes_idle_connections(scripted: Scripted) -> None:
    transport = StdlibTransport()
    with http_client(transport) as http:
        assert http.get(scripted.url).text == "ok"
    # httpx.Client.close closed the transport: the server sees the pooled connection end.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and scripted.closed == 0:
        time.sleep(0.01)
    assert scripted.closed == 1


def test_manifest_fast_path_falls_back_to_the_full_one(registry: Registry) -> None:
    # HEAD and GET of manifests skip httpx on an idle pooled connection; any trouble there
    # (here a reset) sends the request again the full way, which retries as usual.
    with (
        FaultProxy(registry.host, rate=0.0) as proxy,
        RegistryClient(options(backoff=0.01)) as client,
    ):
        repo = unique(proxy.host, "fast")
        manifest = push_manifest(client, repo, "v1", b"fast")
        digest = sha256_digest(manifest)
        before = dict(client.stats)
        head = client.head_manifest(repo, "v1")
        assert head is not None and head.digest == digest and head.size == len(manifest)
        assert client.get_manifest(repo, "v1").data == manifest
        assert client.head_manifest(repo, "nope") is None
        assert client.stats["HEAD manifest"] - before.get("HEAD manifest", 0) == 2
        assert client.stats["retry"] == before.get("retry", 0)
        for fault in ("reset", "reset", "503"):
            proxy.inject(fault, 1)
            assert client.get_manifest(repo, "v1").data == manifest
            head = client.head_manifest(repo, "v1")
            assert head is not None and head.digest == digest
        with pytest.raises(RegistryError, match="not found"):
            client.get_manifest(repo, "nope")  # a 404 to a GET: the full path says so
