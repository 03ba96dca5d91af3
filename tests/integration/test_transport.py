"""RegistryClient on the wire: connections, resets, TLS and proxies, against real servers.

- the CNCF distribution registry of the `registry` fixture (and a TLS one from registries.py);
- FaultProxy (registries.py) in front of it, for resets, 503s and counting connections;
- `Scripted`, a raw HTTP/1.1 server in this file whose answers are picked by path, failing in
  every way a server can mid-request: each must be a failure the retry policy retries;
- `Truncator`, a forwarding server in front of the registry that cuts responses short.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support.components import Registry
from support.registries import FaultProxy, RunningRegistry, push_manifest, start_registry, unique

from buildgen.registry import (
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    sha256_digest,
)
from buildgen.registry.retry import certificate_error, is_transient_error, tls_error

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine has, these tests decide which proxy variables are set."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def options(**extra: object) -> RegistryOptions:
    return RegistryOptions(docker_config="/nonexistent", **extra)  # type: ignore[arg-type]


def http_client(timeout: float = 10) -> httpx.Client:
    """httpx's own client, as the registry client uses it: to see what its failures look like."""
    return httpx.Client(timeout=timeout)


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
    """Answers by path; records (method, path) of every request it reads.

    /hangup: closed without an answer; /garbage: not HTTP; /truncate, /truncate-rst,
    /truncate-chunked: a body cut short (FIN, RST, chunked); /slow: never answers; /sink: never
    reads the body; /rst-on-body: RST once the head is read; anything else: 200 "ok".
    """

    BIG = b"x" * 1000

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        super().__init__(self.serve)

    def serve(self, sock: socket.socket, reader: object) -> None:
        while True:
            head = read_head(reader)
            if head is None:
                return
            method, path, headers = head
            self.requests.append((method, path))
            if path in ("/slow", "/sink"):
                self.stopping.wait(20)
                return
            if path == "/rst-on-body":
                rst(sock)
                return
            read_body(reader, headers)
            if path == "/hangup":
                return
            if path == "/garbage":
                sock.sendall(b"this is not http\r\n\r\n")
                return
            if path in ("/truncate", "/truncate-rst"):
                sock.sendall(response(200, self.BIG)[:-900])
                if path == "/truncate-rst":
                    time.sleep(0.2)  # let the head and first bytes be read first
                    rst(sock)
                return
            if path == "/truncate-chunked":
                chunked = (("Transfer-Encoding", "chunked"),)
                sock.sendall(response(200, b"", chunked) + b"5\r\nhello\r\n")
                return
            sock.sendall(response(200, b"ok", head=method == "HEAD"))


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


# -- against the real registry ---------------------------------------------------------------


def test_streamed_blobs_round_trip(registry: Registry) -> None:
    with RegistryClient(options()) as client:
        repo = unique(registry.host, "client")
        layer = b"\x01" * (2 * 2**20 + 17)
        chunks = [layer[i : i + 65536] for i in range(0, len(layer), 65536)]
        client.upload_blob(repo, sha256_digest(layer), lambda: iter(chunks), len(layer))
        client.upload_blob(repo, sha256_digest(b"bytes"), b"bytes", 5)
        manifest = push_manifest(client, repo, "v1", layer)
        head = client.head_manifest(repo, "v1")
        assert head is not None and head.digest == sha256_digest(manifest)
        assert client.get_manifest(repo, "v1").data == manifest
        got = list(client.get_blob(repo, sha256_digest(layer), size=len(layer)))
        assert b"".join(got) == layer and len(got) > 1  # read in chunks, not whole
        # A stream left half read gives its connection back when closed.
        stream = client.get_blob(repo, sha256_digest(layer))
        next(stream)
        stream.close()
        assert client.list_tags(repo) == ["v1"]
        assert client.stats["retry"] == 0


def test_many_threads_share_max_connections(registry: Registry) -> None:
    with (
        FaultProxy(registry.host, rate=0.0) as proxy,
        RegistryClient(options(max_connections=8)) as client,
    ):
        repo = unique(proxy.host, "threads")
        push_manifest(client, repo, "v1", b"threads")
        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(lambda _: client.head_manifest(repo, "v1"), range(400)))
        assert all(found) and len({d.digest for d in found if d}) == 1
        # At most 8 in flight, kept alive; + the https ping, which the proxy hangs up on.
        assert proxy.stats["connections"] <= 8 + 1
        assert client.stats["retry"] == 0


# -- connections reset, responses cut short ---------------------------------------------------


def test_resets_are_retried(registry: Registry) -> None:
    with (
        FaultProxy(registry.host, rate=0.0) as proxy,
        RegistryClient(options(backoff=0.01)) as client,
    ):
        repo = unique(proxy.host, "resets")
        manifest = push_manifest(client, repo, "v1", b"resets")
        digest = sha256_digest(manifest)
        before = dict(client.stats)
        head = client.head_manifest(repo, "v1")
        assert head is not None and head.digest == digest and head.size == len(manifest)
        assert client.head_manifest(repo, "nope") is None
        assert client.stats["HEAD manifest"] - before.get("HEAD manifest", 0) == 2
        assert client.stats["retry"] == before.get("retry", 0)
        for fault in ("reset", "reset", "503"):
            proxy.inject(fault, 1)
            assert client.get_manifest(repo, "v1").data == manifest
            head = client.head_manifest(repo, "v1")
            assert head is not None and head.digest == digest
        assert client.stats["retry"] - before.get("retry", 0) == 3
        with pytest.raises(RegistryError, match="not found"):
            client.get_manifest(repo, "nope")
        # A PUT reset after the registry did it: retried, and there.
        proxy.inject("reset-after")
        client.put_manifest(repo, "v2", manifest, OCI_MANIFEST)
        assert proxy.stats["reset-after"] == 1
        assert client.head_manifest(repo, "v2") is not None


def test_every_failure_mid_request_is_transient(scripted: Scripted) -> None:
    # What the retry policy sees of each way a server fails, through httpx as the client uses it.
    cases: list[tuple[str, str, bytes | None, type[httpx.TransportError]]] = [
        ("GET", "/slow", None, httpx.ReadTimeout),
        ("PUT", "/sink", b"\0" * (64 << 20), httpx.WriteTimeout),
        ("PUT", "/rst-on-body", b"\0" * (64 << 20), httpx.TransportError),
        ("GET", "/hangup", None, httpx.RemoteProtocolError),
        ("GET", "/garbage", None, httpx.RemoteProtocolError),
        ("GET", "/truncate", None, httpx.RemoteProtocolError),
        ("GET", "/truncate-rst", None, httpx.ReadError),
        ("GET", "/truncate-chunked", None, httpx.RemoteProtocolError),
    ]
    for method, path, content, error in cases:
        with http_client(timeout=0.5) as http:
            with pytest.raises(error) as caught:
                http.request(method, f"{scripted.url}{path}", content=content)
            assert is_transient_error(caught.value), path
            assert http.get(f"{scripted.url}/ok").text == "ok"


def test_connect_errors_are_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused_port = sock.getsockname()[1]
    with http_client() as http:
        with pytest.raises(httpx.ConnectError) as refused:
            http.get(f"http://127.0.0.1:{refused_port}/")
        assert is_transient_error(refused.value)

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
        with http_client(timeout=0.3) as http, pytest.raises(httpx.ConnectTimeout) as timed_out:
            http.get(f"http://127.0.0.1:{port}/")
        assert is_transient_error(timed_out.value)
    finally:
        for filler in fillers:
            filler.close()
        full.close()

    # The client gives up after its retries, saying so.
    with RegistryClient(options(retries=2, backoff=0.01)) as client:
        with pytest.raises(RegistryError, match="after retries: ConnectError") as caught:
            client.list_tags(f"127.0.0.1:{refused_port}/x/y")
        assert caught.value.retryable and client.stats["retry"] == 2


def test_a_reset_mid_response_is_retried_by_the_client(registry: Registry) -> None:
    truncator = Truncator(registry.host)
    try:
        with RegistryClient(options(backoff=0.01)) as client:
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
        from support.components import missing

        missing("docker-registry is not installed (apt-get install docker-registry)")
    reg = start_registry(tmp_path_factory.mktemp("tls"), tls=True)
    try:
        yield reg
    finally:
        reg.stop()


def test_tls_with_the_ca(tls_registry: RunningRegistry) -> None:
    assert tls_registry.ca_file is not None
    with RegistryClient(options(ca_bundle=str(tls_registry.ca_file))) as client:
        for host in (tls_registry.host, tls_registry.localhost):  # IP and DNS SANs
            repo = unique(host, "tls")
            manifest = push_manifest(client, repo, "v1", b"over tls")
            head = client.head_manifest(repo, "v1")
            assert head is not None and head.digest == sha256_digest(manifest)
        assert client.stats["ping"] == 2 and client.stats["retry"] == 0  # https only
    with pytest.raises(RegistryError, match="cannot load the CA bundle"):
        RegistryClient(options(ca_bundle="/nonexistent.pem"))


def test_tls_without_the_ca(tls_registry: RunningRegistry) -> None:
    with http_client() as http, pytest.raises(httpx.ConnectError) as caught:
        http.get(f"https://{tls_registry.host}/v2/")
    cert = certificate_error(caught.value)
    assert cert is not None and "certificate verify failed" in str(caught.value)
    assert not is_transient_error(caught.value)

    with RegistryClient(options()) as client:
        with pytest.raises(RegistryError, match="--ca-bundle") as refused:
            client.head_manifest(f"{tls_registry.host}/tls/x", "v1")
        assert "does not verify" in str(refused.value)
        assert client.stats["retry"] == 0 and client.stats["ping"] == 1  # no http after it


def test_tls_to_a_plain_http_server(registry: Registry) -> None:
    with http_client() as http, pytest.raises(httpx.ConnectError) as caught:
        http.get(f"https://{registry.host}/v2/")
    assert tls_error(caught.value) is not None and certificate_error(caught.value) is None
    with FaultProxy(registry.host, rate=0.0) as proxy:  # hangs up on a TLS hello
        for host in (registry.host, proxy.host):
            with RegistryClient(options()) as client:  # loopback: falls back to http
                assert client.list_tags(unique(host, "fallback")) == []
                assert client.stats["ping"] == 2 and client.stats["retry"] == 0


# -- proxies from the environment ------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_requests_go_through_an_http_proxy(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    with FaultProxy(registry.host, rate=0.0) as proxy:
        monkeypatch.setenv(variable, proxy.url)
        repo = unique(registry.host, "proxied")
        with RegistryClient(options()) as client:
            assert client.list_tags(repo) == []
        assert proxy.stats["forwarded"] >= 2  # the http ping and the tag listing
        proxy.reset_stats()
        monkeypatch.setenv("NO_PROXY", "registry.internal,127.0.0.1")
        with RegistryClient(options()) as client:
            assert client.list_tags(repo) == []
        assert proxy.stats["requests"] == 0
