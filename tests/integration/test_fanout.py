"""RegistryClient.head_manifests / get_manifests / tag_digests: many requests at once.

Against the real registry (plain and TLS, and a token-auth one), through FaultProxy for resets
and 503s, and through `_Untold` and `_Statuses`, transports in this file that take a header off
the registry's answers or record them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from support.components import Registry
from support.registries import (
    FaultProxy,
    RunningRegistry,
    push_manifest,
    start_registry,
    unique,
    write_docker_config,
)

from buildgen.registry import RegistryClient, RegistryError, RegistryOptions, sha256_digest
from buildgen.registry.manifests import Manifests


def options(**extra: object) -> RegistryOptions:
    return RegistryOptions(docker_config="/nonexistent", **extra)  # type: ignore[arg-type]


def test_many_heads_and_gets_equal_one_at_a_time(registry: Registry) -> None:
    with RegistryClient(options()) as client:
        repo = unique(registry.host, "many")
        manifests = {
            f"t{i}": push_manifest(client, repo, f"t{i}", f"L{i}".encode()) for i in range(12)
        }
        items = [(repo, tag) for tag in manifests] + [(repo, "absent")]
        before = dict(client.stats)
        heads = client.head_manifests(items, workers=4)
        seen: dict[int, Any] = {}

        def each(index: int, manifest: Any) -> None:
            assert index not in seen
            seen[index] = manifest

        gets = client.get_manifests(items, workers=4, each=each)
        assert seen == dict(enumerate(gets))  # each one, once, as it came
        assert client.stats["HEAD manifest"] - before.get("HEAD manifest", 0) == 13
        assert client.stats["GET manifest"] - before.get("GET manifest", 0) == 13
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
        assert client.get_manifests(items[:1], workers=4) == gets[:1]


class _Statuses(httpx.BaseTransport):
    """httpx's transport, recording the status of every manifest HEAD."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "HEAD" and "/manifests/" in request.url.path:
            self.statuses.append(response.status_code)
        return response


def test_tag_digests_ask_if_none_match(registry: Registry) -> None:
    recording = _Statuses()
    with RegistryClient(options(), transport=recording) as client:
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
        assert sorted(recording.statuses) == [200, 200, 304, 304, 304, 304, 404, 404]
        for (_, tag), digest in zip(items[:6], now, strict=False):
            head = client.head_manifest(repo, tag)
            assert head is not None and head.digest == digest
        assert client.tag_digests(items, believed, workers=1) == now


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
    original = Manifests.gets

    def counting(self: Manifests, items: Any, *args: Any, **kwargs: Any) -> Any:
        batches.append(len(items))
        return original(self, items, *args, **kwargs)

    monkeypatch.setattr(Manifests, "gets", counting)
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


def test_resets_and_503s_are_retried(registry: Registry) -> None:
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
