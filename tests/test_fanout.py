"""buildgen.registry.fanout, and RegistryClient.head_manifests / get_manifests on top of it.

Against the real registry (plain and TLS, and a token-auth one), through FaultProxy for resets,
and against `Odd`, a raw HTTP/1.1 server in this file whose answers are picked by path, for every
answer the fan-out must leave to the full path.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from components import Registry
from registries import FaultProxy, RunningRegistry, start_registry, write_docker_config
from test_transport import Server, push_manifest, unique

from buildgen.registry import RegistryClient, RegistryError, RegistryOptions, fanout, sha256_digest
from buildgen.registry.fanout import Request, fetch_many


def options(**extra: object) -> RegistryOptions:
    return RegistryOptions(docker_config="/nonexistent", **extra)  # type: ignore[arg-type]


def fetch(requests: list[Request], *, concurrency: int = 4, timeout: float = 10.0) -> list:  # type: ignore[type-arg]
    return fetch_many(
        requests,
        concurrency=concurrency,
        timeout=timeout,
        tls=ssl.create_default_context,
        max_body=1000,
    )


class Odd(Server):
    """A raw HTTP/1.1 server: the answer is picked by the request's path (see ANSWERS)."""

    ANSWERS: ClassVar[dict[str, bytes]] = {
        "/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok",
        "/head": b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",  # HEAD: no body
        "/missing": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "/close": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        "/http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "/no-length": b"HTTP/1.1 200 OK\r\n\r\nok",
        "/too-big": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        "/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        "/garbage": b"SSH-2.0-OpenSSH\r\n\r\n",
        "/folded": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\n  2\r\n\r\n",
        "/split": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsp",  # then "lt" later
        "/hangup": b"",
        "/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "/slow": b"",  # never answers
    }

    def __init__(self) -> None:
        super().__init__(self.serve)
        self.key = ("http", "127.0.0.1", self.port)
        self.paths: list[str] = []

    def serve(self, sock: socket.socket, reader: Any) -> None:
        while True:
            line = reader.readline()
            if not line:
                return
            path = line.split()[1].decode()
            while reader.readline() not in (b"\r\n", b""):
                pass
            self.paths.append(path)
            if path == "/slow":
                self.stopping.wait(30)
                return
            sock.sendall(self.ANSWERS[path])
            if path == "/split":
                time.sleep(0.05)
                sock.sendall(b"lt")
            if path in ("/hangup", "/truncated", "/close", "/http10"):
                return

    def request(self, path: str, method: str = "GET") -> Request:
        return Request.build(self.key, method, path, [("Host", "odd"), ("Accept", "*/*")])


@pytest.fixture
def odd() -> Iterator[Odd]:
    server = Odd()
    yield server
    server.stop()


def test_plain_answers_on_kept_alive_connections(odd: Odd) -> None:
    requests = [odd.request("/ok") for _ in range(20)] + [odd.request("/missing")]
    requests.append(odd.request("/head", "HEAD"))
    requests.append(odd.request("/split"))
    results = fetch(requests, concurrency=3)
    assert results[0] == (200, {"content-length": "2", "x-a": "1, 2"}, b"ok")
    assert all(result == results[0] for result in results[1:20])
    assert results[20] == (404, {"content-length": "0"}, b"")
    assert results[21] == (200, {"content-length": "99"}, b"")  # a HEAD has no body
    assert results[22] is not None and results[22][2] == b"splt"
    assert odd.connections == 3  # one per slot, kept alive throughout


@pytest.mark.parametrize(
    "path",
    ["/chunked", "/no-length", "/too-big", "/interim", "/extra", "/garbage", "/folded",
     "/hangup", "/truncated"],
)  # fmt: skip
def test_anything_out_of_the_plain_is_left_to_the_full_path(odd: Odd, path: str) -> None:
    # The odd answer gives None (and closes its connection); the others are unaffected.
    results = fetch(
        [odd.request("/ok"), odd.request(path), *[odd.request("/ok")] * 5], concurrency=2
    )
    assert results[1] is None
    assert results[0] is not None
    assert [r for r in results[2:] if r is None] in ([], [None] * len(results[2:]))


def test_a_server_that_closes_takes_no_more_requests(odd: Odd) -> None:
    for path in ("/close", "/http10"):
        results = fetch([odd.request(path), odd.request("/ok")], concurrency=1)
        assert results[0] is not None and results[0][2] == b"ok"
        assert results[1] is None  # its connection was gone: the full path sends it


def test_timeouts_and_unreachable_hosts(odd: Odd) -> None:
    start = time.monotonic()
    results = fetch([odd.request("/slow"), odd.request("/ok")], concurrency=2, timeout=0.5)
    assert results[0] is None and results[1] is not None
    assert time.monotonic() - start < 5
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    request = Request.build(("http", "127.0.0.1", port), "GET", "/ok", [("Host", "x")])
    assert fetch([request, request]) == [None, None]


def test_requests_that_cannot_be_sent_as_they_are() -> None:
    key = ("http", "127.0.0.1", 1)
    for headers in ([("Host", "a\r\nX-Injected: 1")], [("Host", "a\nb")], [("Host", "a\0")]):
        with pytest.raises(ValueError, match="line break"):
            Request.build(key, "GET", "/v2/", headers)
    for target in ("/v2/\u00e9", "http://x/v2/"):
        with pytest.raises(ValueError, match="origin-form"):
            Request.build(key, "GET", target, [("Host", "a")])


# -- RegistryClient on the real registry -----------------------------------------------------


def test_many_heads_and_gets_equal_one_at_a_time(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered: list[int] = []
    original = fanout.fetch_many

    def counting(*args: Any, **kwargs: Any) -> list[fanout.Result]:
        results = original(*args, **kwargs)
        answered.append(sum(result is not None for result in results))
        return results

    monkeypatch.setattr(fanout, "fetch_many", counting)
    with RegistryClient(options()) as client:
        repo = unique(registry.host, "many")
        manifests = {
            f"t{i}": push_manifest(client, repo, f"t{i}", f"L{i}".encode()) for i in range(12)
        }
        items = [(repo, tag) for tag in manifests] + [(repo, "absent")]
        before = dict(client.stats)
        heads = client.head_manifests(items, workers=4)
        seen: dict[int, Any] = {}
        gets = client.get_manifests(items, workers=4, each=lambda i, m: seen.setdefault(i, m))
        assert seen == dict(enumerate(gets))  # each one, once, as it came
        assert client.stats["HEAD manifest"] - before.get("HEAD manifest", 0) == 13
        assert answered == [12, 12]  # all but the first of each went out together
        assert heads[-1] is None and gets[-1] is None
        for (_, tag), head, got in zip(items, heads, gets, strict=False):
            if tag == "absent":
                continue
            data = manifests[tag]
            assert head == client.head_manifest(repo, tag)
            assert (
                head is not None and head.digest == sha256_digest(data) and head.size == len(data)
            )
            assert got is not None and got.data == data and got.digest == head.digest
        assert client.head_manifests([], workers=4) == []


def test_tag_digests_ask_if_none_match(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    statuses: list[int] = []
    original = fanout.fetch_many

    def recording(*args: Any, **kwargs: Any) -> list[fanout.Result]:
        results = original(*args, **kwargs)
        statuses.extend(result[0] for result in results if result is not None)
        return results

    monkeypatch.setattr(fanout, "fetch_many", recording)
    with RegistryClient(options()) as client:
        repo = unique(registry.host, "etag")
        digests = [
            sha256_digest(push_manifest(client, repo, f"t{i}", f"E{i}".encode())) for i in range(6)
        ]
        moved = sha256_digest(push_manifest(client, repo, "t5", b"moved"))
        bogus = "sha256:" + "f" * 64
        items = [(repo, f"t{i}") for i in range(6)] + [(repo, "absent"), (repo, bogus)]
        believed = [*digests[:4], None, digests[5], digests[0], bogus]
        now = client.tag_digests(items, believed, workers=3)
        # unchanged (304), unchanged with nothing believed (200), moved (200), no such tag
        # (404); a digest reference is never asked conditionally: distribution would answer 304
        # without looking it up.
        assert now == [*digests[:4], digests[4], moved, None, None]
        assert sorted(statuses) == [200, 200, 304, 304, 304, 404, 404]  # the first went alone
        for (_, tag), digest in zip(items[:6], now, strict=False):
            head = client.head_manifest(repo, tag)
            assert head is not None and head.digest == digest
    with RegistryClient(options(), transport=httpx.HTTPTransport()) as full:  # no fan-out
        assert full.tag_digests(items, believed, workers=3) == now
        assert full.stats["HEAD manifest"] == len(items)


class _Untold(httpx.BaseTransport):
    """A registry that does not tell a manifest's digest on HEAD (some do not)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "HEAD" and "Docker-Content-Digest" in response.headers:
            del response.headers["Docker-Content-Digest"]
        return response


def test_heads_that_do_not_tell_the_digest_are_completed_many_at_once(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RegistryClient(options()) as client:
        repo = unique(registry.host, "untold")
        data = [push_manifest(client, repo, f"t{i}", f"U{i}".encode()) for i in range(6)]
    batches: list[int] = []
    original = RegistryClient.get_manifests

    def counting(self: RegistryClient, items: Any, **kwargs: Any) -> Any:
        batches.append(len(items))
        return original(self, items, **kwargs)

    monkeypatch.setattr(RegistryClient, "get_manifests", counting)
    items = [(repo, f"t{i}") for i in range(6)] + [(repo, "absent")]
    with RegistryClient(options(), transport=_Untold()) as client:
        heads = client.head_manifests(items, workers=3)
        assert [h.digest if h else None for h in heads] == [*map(sha256_digest, data), None]
        assert [h.size if h else None for h in heads] == [*map(len, data), None]
        assert batches == [6]  # one batch of reads, not one read after another
        assert client.tag_digests(items, [sha256_digest(data[0])] * 7, workers=3) == [
            *map(sha256_digest, data),
            None,
        ]


def test_resets_go_the_full_way(registry: Registry) -> None:
    with (
        FaultProxy(registry.host, rate=0.0) as proxy,
        RegistryClient(options(backoff=0.01)) as client,
    ):
        repo = unique(proxy.host, "resets")
        manifests = [push_manifest(client, repo, f"t{i}", f"R{i}".encode()) for i in range(8)]
        proxy.inject("reset", 3)
        heads = client.head_manifests([(repo, f"t{i}") for i in range(8)], workers=3)
        assert [h.digest if h else None for h in heads] == [sha256_digest(m) for m in manifests]
        proxy.inject("503", 2)
        gets = client.get_manifests([(repo, f"t{i}") for i in range(8)], workers=3)
        assert [g.data if g else None for g in gets] == manifests
        proxy.inject("reset", 2)
        proxy.inject("503", 2)
        digests = [sha256_digest(m) for m in manifests]
        believed = [*digests[:4], None, None, "sha256:" + "0" * 64, digests[7]]
        assert client.tag_digests([(repo, f"t{i}") for i in range(8)], believed, workers=3) == (
            digests
        )
        with pytest.raises(RegistryError):
            proxy.inject("503", 100)
            client.head_manifests([(repo, "t0"), (repo, "t1")], workers=2)


def test_over_tls_and_with_token_auth(tmp_path: Path, registry: Registry) -> None:
    for auth, tls in ((None, True), ("token", False)):
        reg: RunningRegistry = start_registry(tmp_path / f"{auth}-{tls}", auth=auth, tls=tls)  # type: ignore[arg-type]
        try:
            extra = {"ca_bundle": str(reg.ca_file)} if reg.ca_file else {}
            config = (
                write_docker_config(
                    tmp_path / f"cfg-{auth}-{tls}",
                    auths={reg.host: (reg.username or "", reg.password or "")},
                )
                if auth
                else "/nonexistent"
            )
            with RegistryClient(RegistryOptions(docker_config=str(config), **extra)) as client:  # type: ignore[arg-type]
                # Three repositories: with token auth, three pull tokens (fetched before).
                repos = [unique(reg.host, f"secure{n}") for n in range(3)]
                items = [(repos[i % 3], f"t{i}") for i in range(9)]
                data = [push_manifest(client, r, t, f"S{t}".encode()) for r, t in items]
                fresh = RegistryClient(RegistryOptions(docker_config=str(config), **extra))  # type: ignore[arg-type]
                with fresh:  # no tokens cached yet
                    heads = fresh.head_manifests(items, workers=3)
                    assert [h.digest if h else None for h in heads] == [
                        sha256_digest(d) for d in data
                    ]
                    gets = fresh.get_manifests(items, workers=3)
                    assert [g.data if g else None for g in gets] == data
                    assert fresh.stats["retry"] == 0
                    if auth:
                        assert fresh.stats["token"] == 3, fresh.stats
        finally:
            reg.stop()
