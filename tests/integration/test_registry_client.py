"""buildgen.registry: the OCI distribution client.

Integration tests run against the real CNCF distribution 2.8 of the `registry` fixture. The
retry policy, auth flows, digest checks and the http refusal are unit tests on an
httpx.MockTransport (no sleeping: the client is given a recording `sleep`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.components import Registry, missing
from support.oci import inspect_raw
from support.registries import (
    FaultProxy,
    RunningRegistry,
    helper_calls,
    start_registry,
    write_credential_helper,
    write_docker_config,
)

from buildgen.registry import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    AuthError,
    NotFound,
    Reference,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    RetryPolicy,
    parse_reference,
    parse_repository,
    redact,
    sha256_digest,
)
from buildgen.registry.auth import parse_token_response
from buildgen.registry.challenges import parse_challenges
from buildgen.registry.credentials import DockerCredentials
from buildgen.registry.retry import parse_retry_after

# -- helpers ---------------------------------------------------------------------------------


def unique(registry: Registry, name: str) -> str:
    return f"{registry.host}/test-client/{name}-{uuid.uuid4().hex[:8]}"


def image(client: RegistryClient, repository: str, layer: bytes, arch: str = "amd64") -> bytes:
    """Upload a config and one layer and return the OCI image manifest's bytes (not yet put)."""
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}
    ).encode()
    client.upload_blob(repository, sha256_digest(config), config, len(config))
    # The layer goes up as a re-creatable stream of chunks.
    client.upload_blob(
        repository,
        sha256_digest(layer),
        lambda: (layer[i : i + 4096] for i in range(0, len(layer), 4096)),
        len(layer),
    )
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(layer), "size": len(layer)}
            ],
        }
    ).encode()


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(RegistryOptions(docker_config="/nonexistent")) as c:
        yield c


# -- against the real registry ---------------------------------------------------------------


def test_image_and_index_round_trip(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "roundtrip")
    layer = bytes(range(256)) * 300
    manifest = image(client, repo, layer)
    digest = client.put_manifest(repo, "amd64", manifest, OCI_MANIFEST)
    assert digest == sha256_digest(manifest)

    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    index_digest = client.put_manifest(repo, "1.0", index, OCI_INDEX)

    head = client.head_manifest(repo, "1.0")
    assert head is not None
    assert (head.digest, head.media_type, head.size) == (index_digest, OCI_INDEX, len(index))
    got = client.get_manifest(repo, "1.0")
    assert (got.digest, got.media_type, got.data) == (index_digest, OCI_INDEX, index)
    assert got.media_type in INDEX_TYPES and got.is_index
    assert got.json()["manifests"][0]["digest"] == digest

    by_digest = client.get_manifest(repo, digest)
    assert by_digest.data == manifest and by_digest.media_type in MANIFEST_TYPES
    assert client.head_manifest(repo, digest) == by_digest.descriptor

    assert b"".join(client.get_blob(repo, sha256_digest(layer), size=len(layer))) == layer
    assert client.blob_exists(repo, sha256_digest(layer))
    assert client.stats["PUT manifest"] == 2 and client.stats["retry"] == 0


def test_registry_stores_exactly_our_bytes(
    registry: Registry, client: RegistryClient, oracles: None
) -> None:
    repo = unique(registry, "oracle")
    manifest = image(client, repo, b"oracle layer")
    # Unusual formatting: the registry must keep the bytes we sent, not re-serialize them.
    odd = json.dumps(json.loads(manifest), indent=3).encode() + b"\n"
    digest = client.put_manifest(repo, "odd", odd, OCI_MANIFEST)
    raw = inspect_raw(f"{repo}:odd")
    assert raw == json.loads(odd)
    assert client.get_manifest(repo, "odd").data == odd
    assert digest == sha256_digest(odd)


def test_put_manifest_twice_same_digest(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "twice")
    manifest = image(client, repo, b"same layer")
    first = client.put_manifest(repo, "t", manifest, OCI_MANIFEST)
    second = client.put_manifest(repo, "t", manifest, OCI_MANIFEST)
    by_digest = client.put_manifest(repo, first, manifest, OCI_MANIFEST)
    assert first == second == by_digest == sha256_digest(manifest)
    with pytest.raises(ValueError):
        client.put_manifest(repo, "sha256:" + "0" * 64, manifest, OCI_MANIFEST)


def test_missing_things(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "missing")
    client.put_manifest(repo, "present", image(client, repo, b"x"), OCI_MANIFEST)
    with pytest.raises(NotFound) as caught:
        client.get_manifest(repo, "absent")
    error = caught.value
    assert isinstance(error, RegistryError) and error.exit_code == 3
    assert error.exit_code == 3
    assert (error.status, error.code) == (404, "MANIFEST_UNKNOWN")
    assert "absent" in str(error)
    assert client.head_manifest(repo, "absent") is None
    assert not client.blob_exists(repo, "sha256:" + "1" * 64)
    with pytest.raises(NotFound):
        b"".join(client.get_blob(repo, "sha256:" + "1" * 64))
    assert client.list_tags(unique(registry, "no-such-repo")) == []


def test_list_tags_more_than_a_page(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "tags")
    manifest = image(client, repo, b"tagged")
    names = [f"v{i}" for i in range(7)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: client.put_manifest(repo, t, manifest, OCI_MANIFEST), names))
    # distribution 2.8 ignores ?n= for tags (one page, no Link); the paginated path is covered
    # by test_list_tags_follows_link_pagination below.
    assert sorted(client.list_tags(repo, page_size=3)) == names


def test_cross_repository_mount(registry: Registry, client: RegistryClient) -> None:
    source = unique(registry, "mount-src")
    target = unique(registry, "mount-dst")
    layer = b"mountable layer" * 100
    image(client, source, layer)
    digest = sha256_digest(layer)
    assert client.mount_blob(target, digest, source) is True
    assert client.blob_exists(target, digest)
    # A blob the source does not have: the registry starts an upload instead, which we cancel.
    assert client.mount_blob(target, "sha256:" + "2" * 64, source) is False
    assert client.stats["DELETE upload"] == 1
    # Different registries cannot mount: nothing is sent.
    posts = client.stats["POST blob"]
    assert (
        client.mount_blob(target, digest, source.replace(registry.host, "other.example")) is False
    )
    assert client.stats["POST blob"] == posts


def test_ensure_blob_mounts_on_same_registry(registry: Registry, client: RegistryClient) -> None:
    source = unique(registry, "ens-src")
    target = unique(registry, "ens-dst")
    layer = b"ensure by mount"
    image(client, source, layer)
    before = client.stats.copy()
    client.ensure_blob(target, sha256_digest(layer), len(layer), source_repository=source)
    client.ensure_blob(target, sha256_digest(layer), len(layer), source_repository=source)
    delta = client.stats - before
    assert delta == {"HEAD blob": 1, "POST blob": 1}  # once: HEAD (absent), mount (201)
    assert client.blob_exists(target, sha256_digest(layer))


def test_ensure_blob_concurrently_uploads_once(registry: Registry, client: RegistryClient) -> None:
    # "localhost:PORT" is another registry name for the same server, so ensure_blob cannot
    # mount and must copy: GET from the source, then POST + PUT to the target.
    source = unique(registry, "copy-src")
    target = unique(registry, "copy-dst")
    layer = b"copied once" * 5000
    digest = sha256_digest(layer)
    image(client, source, layer)
    source_other_name = source.replace(registry.host, f"localhost:{registry.port}")
    before = client.stats.copy()
    barrier = threading.Barrier(16)

    def ensure(_: int) -> None:
        barrier.wait()
        client.ensure_blob(target, digest, len(layer), source_repository=source_other_name)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ensure, range(16)))
    delta = client.stats - before
    assert delta["HEAD blob"] == 1
    assert delta["GET blob"] == 1
    assert delta["POST blob"] == 1
    assert delta["PUT blob"] == 1
    assert b"".join(client.get_blob(target, digest)) == layer


def test_ensure_blob_without_a_source(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "nosource")
    with pytest.raises(NotFound):
        client.ensure_blob(repo, "sha256:" + "3" * 64, 10)


def test_get_blob_checks_size(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "size")
    client.upload_blob(repo, sha256_digest(b"12345"), b"12345", 5)
    with pytest.raises(RegistryError, match="5 bytes, expected 6"):
        b"".join(client.get_blob(repo, sha256_digest(b"12345"), size=6))


def test_upload_bodies(registry: Registry, client: RegistryClient) -> None:
    repo = unique(registry, "bodies")
    data = b"generator body" * 1000
    # A one-shot generator is accepted (sent once, not retried).
    client.upload_blob(
        repo, sha256_digest(data), (data[i : i + 100] for i in range(0, len(data), 100)), len(data)
    )
    assert client.blob_exists(repo, sha256_digest(data))
    # A body shorter than its declared size fails cleanly instead of hanging the connection.
    other = b"too short"
    with pytest.raises(RegistryError, match="not its declared size"):
        client.upload_blob(repo, sha256_digest(other + b"!"), lambda: [other], len(other) + 1)
    with pytest.raises(ValueError):
        client.upload_blob(repo, sha256_digest(b"abc"), b"abd", 3)


def test_concurrent_pushes_of_images_sharing_blobs(
    registry: Registry, client: RegistryClient
) -> None:
    """The publish pattern: 16 workers, shared config/layers, ensure_blob then put_manifest."""
    repo = unique(registry, "publish")
    shared = b"shared base layer" * 2000
    seed = unique(registry, "seed")
    image(client, seed, shared)
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    client.upload_blob(seed, sha256_digest(config), config, len(config))

    def push(i: int) -> str:
        own = f"own layer {i}".encode()
        client.upload_blob(repo, sha256_digest(own), own, len(own))
        for blob in (config, shared):
            client.ensure_blob(repo, sha256_digest(blob), len(blob), source_repository=seed)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": sha256_digest(config),
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(b), "size": len(b)}
                    for b in (shared, own)
                ],
            }
        ).encode()
        return client.put_manifest(repo, f"t{i}", manifest, OCI_MANIFEST)

    with ThreadPoolExecutor(16) as pool:
        digests = list(pool.map(push, range(32)))
    assert len(set(digests)) == 32
    assert len(client.list_tags(repo)) == 32


# -- unit tests on a mock transport ----------------------------------------------------------


class Recorder:
    """Wraps a handler; records every request a MockTransport gets."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.handler(request)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.url.path for r in self.requests if method is None or r.method == method]


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> tuple[RegistryClient, Recorder, list[float]]:
    options.setdefault("docker_config", "/nonexistent")
    recorder = Recorder(handler)
    sleeps: list[float] = []
    client = RegistryClient(
        RegistryOptions(**options), transport=httpx.MockTransport(recorder), sleep=sleeps.append
    )
    return client, recorder, sleeps


def ping_ok(request: httpx.Request) -> httpx.Response | None:
    return httpx.Response(200, json={}) if request.url.path == "/v2/" else None


def registry_error(status: int, code: str, message: str = "", **headers: str) -> httpx.Response:
    body = {"errors": [{"code": code, "message": message or code.lower(), "detail": None}]}
    return httpx.Response(status, json=body, headers=headers)


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
MANIFEST_DIGEST = sha256_digest(MANIFEST)


def test_get_manifest_detects_digest_mismatch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        return httpx.Response(
            200,
            content=MANIFEST + b" ",  # tampered: one byte more than what the digest names
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST},
        )

    client, _, _ = mock_client(handler)
    with pytest.raises(RegistryError, match="does not match") as by_tag:
        client.get_manifest("registry.test/a/b", "latest")
    assert by_tag.value.code == "DIGEST_INVALID"
    with pytest.raises(RegistryError, match="the digest asked for"):
        client.get_manifest("registry.test/a/b", MANIFEST_DIGEST)


def test_get_manifest_media_type_and_no_digest_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        assert OCI_INDEX in request.headers["Accept"] and OCI_MANIFEST in request.headers["Accept"]
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": "application/json"})

    client, _, _ = mock_client(handler)
    manifest = client.get_manifest("registry.test/a/b", "latest")
    assert (manifest.digest, manifest.media_type) == (MANIFEST_DIGEST, OCI_MANIFEST)


def test_retry_429_honours_retry_after() -> None:
    calls = iter(
        [
            registry_error(429, "TOOMANYREQUESTS", **{"Retry-After": "2"}),
            registry_error(
                429,
                "TOOMANYREQUESTS",
                **{
                    "Retry-After": format_datetime(
                        datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True
                    )
                },
            ),
            registry_error(429, "TOOMANYREQUESTS", **{"Retry-After": "3600"}),
            httpx.Response(200),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return ping_ok(request) or next(calls)

    client, recorder, sleeps = mock_client(handler)
    assert client.blob_exists("registry.test/a/b", "sha256:" + "4" * 64) is True
    assert sleeps[0] == 2.0
    assert 25 <= sleeps[1] <= 30
    assert sleeps[2] == 60.0  # capped at max_retry_after
    assert client.stats["retry"] == 3 and client.stats["HEAD blob"] == 4
    assert len(recorder.paths("HEAD")) == 4


def test_retry_503_then_success_with_jittered_backoff() -> None:
    calls = iter([httpx.Response(503), httpx.Response(502), httpx.Response(200)])

    def handler(request: httpx.Request) -> httpx.Response:
        return ping_ok(request) or next(calls)

    client, _, sleeps = mock_client(handler, backoff=0.5, max_backoff=0.8)
    assert client.blob_exists("registry.test/a/b", "sha256:" + "4" * 64)
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 0.8


def test_retry_connection_reset_then_success() -> None:
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        if attempts["n"] == 2:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"name": "a/b", "tags": ["x"]})

    client, _, sleeps = mock_client(handler)
    assert client.list_tags("registry.test/a/b") == ["x"]
    assert client.stats["retry"] == 2 and len(sleeps) == 2


def test_retries_give_up_with_a_useful_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ping_ok(request) or registry_error(503, "UNAVAILABLE", "try later")

    client, recorder, _ = mock_client(handler, retries=2)
    with pytest.raises(RegistryError) as caught:
        client.get_manifest("registry.test/a/b", "v1")
    error = caught.value
    assert (error.status, error.code, error.retryable) == (503, "UNAVAILABLE", True)
    assert "GET /v2/a/b/manifests/v1" in str(error) and "try later" in str(error)
    assert len(recorder.paths("GET")) == 1 + 3  # ping + first attempt + 2 retries


def test_4xx_is_not_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ping_ok(request) or registry_error(400, "MANIFEST_INVALID", "bad manifest")

    client, recorder, sleeps = mock_client(handler)
    with pytest.raises(RegistryError, match="MANIFEST_INVALID: bad manifest") as caught:
        client.put_manifest("registry.test/a/b", "v1", MANIFEST, OCI_MANIFEST)
    assert caught.value.status == 400 and not caught.value.retryable
    assert recorder.paths("PUT") == ["/v2/a/b/manifests/v1"] and sleeps == []


def test_put_manifest_retries_manifest_blob_unknown() -> None:
    calls = iter(
        [
            registry_error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"),
            httpx.Response(201, headers={"Docker-Content-Digest": MANIFEST_DIGEST}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        assert request.content == MANIFEST
        assert request.headers["Content-Type"] == OCI_MANIFEST
        return next(calls)

    client, _, sleeps = mock_client(handler)
    assert client.put_manifest("registry.test/a/b", "v1", MANIFEST, OCI_MANIFEST) == MANIFEST_DIGEST
    assert client.stats["retry"] == 1 and len(sleeps) == 1


def test_put_manifest_checks_the_registry_digest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ping_ok(request) or httpx.Response(
            201, headers={"Docker-Content-Digest": "sha256:" + "5" * 64}
        )

    client, _, _ = mock_client(handler)
    with pytest.raises(RegistryError, match="stored manifest"):
        client.put_manifest("registry.test/a/b", "v1", MANIFEST, OCI_MANIFEST)


def test_upload_retries_a_failed_put_with_a_new_session() -> None:
    data = b"blob data"
    digest = sha256_digest(data)
    puts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        if request.method == "POST":
            return httpx.Response(
                202, headers={"Location": f"/v2/a/b/blobs/uploads/{uuid.uuid4()}?_state=s"}
            )
        if request.method == "PUT":
            puts["n"] += 1
            assert request.url.params["digest"] == digest and request.url.params["_state"] == "s"
            assert request.headers["Content-Length"] == str(len(data)) and request.content == data
            if puts["n"] == 1:
                raise httpx.WriteError("broken pipe")
            return httpx.Response(201)
        if request.method == "HEAD":
            return httpx.Response(404)
        raise AssertionError(request)

    client, recorder, _ = mock_client(handler)
    client.upload_blob("registry.test/a/b", digest, lambda: iter([data[:4], data[4:]]), len(data))
    assert len(recorder.paths("POST")) == 2 and puts["n"] == 2
    assert client.stats["retry"] == 1


def test_list_tags_follows_link_pagination() -> None:
    tags = [f"t{i:02d}" for i in range(10)]

    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        n = int(request.url.params["n"])
        last = request.url.params.get("last")
        start = tags.index(last) + 1 if last else 0
        page = tags[start : start + n]
        headers = {}
        if start + n < len(tags):
            headers["Link"] = f'</v2/a/b/tags/list?n={n}&last={page[-1]}>; rel="next"'
        return httpx.Response(200, json={"name": "a/b", "tags": page}, headers=headers)

    client, recorder, _ = mock_client(handler, tags_page_size=4)
    assert client.list_tags("registry.test/a/b") == tags
    assert client.stats["GET tags"] == 3
    assert client.list_tags("registry.test/a/b", page_size=3) == tags
    assert client.stats["GET tags"] == 3 + 4
    assert recorder.requests[-1].url.params["n"] == "3"


def test_plain_http_only_for_loopback_and_insecure_hosts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            # What a plain-http server looks like to a TLS client.
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number") from (
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
            )
        return ping_ok(request) or httpx.Response(200)

    digest = "sha256:" + "6" * 64
    client, recorder, sleeps = mock_client(handler)
    with pytest.raises(RegistryError, match="insecure option"):
        client.blob_exists("registry.example:5000/a/b", digest)
    assert {r.url.scheme for r in recorder.requests} == {"https"}
    assert sleeps == []  # a TLS failure is not transient

    client, recorder, _ = mock_client(handler, insecure=("registry.example:5000",))
    assert client.blob_exists("registry.example:5000/a/b", digest)
    assert recorder.requests[-1].url.scheme == "http"

    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000"):
        client, recorder, _ = mock_client(handler)
        assert client.blob_exists(f"{host}/a/b", digest)
        assert recorder.requests[-1].url == f"http://{host}/v2/a/b/blobs/{digest}"


def test_certificate_errors_are_not_retried_or_downgraded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_message = "self-signed certificate"
        raise httpx.ConnectError("certificate verify failed") from error

    client, recorder, sleeps = mock_client(handler)
    with pytest.raises(RegistryError, match="--ca-bundle"):
        client.blob_exists("127.0.0.1:5000/a/b", "sha256:" + "6" * 64)
    assert [r.url.scheme for r in recorder.requests] == ["https"] and sleeps == []


# -- auth on a mock transport ----------------------------------------------------------------

PASSWORD = "s3cret-Passw0rd"
TOKEN = "tok-0123456789abcdef"


def write_config(directory: Path, config: dict[str, Any]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def bearer_registry(
    expect_auth: Callable[[httpx.Request], bool], token_calls: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    challenge = 'Bearer realm="https://auth.test/token",service="registry.test"'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            token_calls.append(request)
            if not expect_auth(request):
                return httpx.Response(401, json={"details": "incorrect username or password"})
            return httpx.Response(200, json={"token": TOKEN, "expires_in": 300})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            scope = 'scope="repository:a/b:pull"' if request.url.path != "/v2/" else ""
            return httpx.Response(
                401,
                json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                headers={"WWW-Authenticate": ",".join(p for p in (challenge, scope) if p)},
            )
        if "/fail/" in request.url.path:
            # A registry that echoes what we sent must not get it into our error message.
            return httpx.Response(400, text=f"bad request with {request.headers['Authorization']}")
        if request.method == "POST":
            return httpx.Response(201)  # mounted
        return httpx.Response(200, json={"name": "a/b", "tags": ["x"]})

    return handler


def test_token_flow_with_password_from_docker_config(tmp_path: Path) -> None:
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    config = write_config(tmp_path / "docker", {"auths": {"https://registry.test": {"auth": auth}}})
    token_calls: list[httpx.Request] = []

    def basic_ok(request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Basic {auth}"

    client, _, _ = mock_client(bearer_registry(basic_ok, token_calls), docker_config=config)
    for _ in range(5):
        assert client.list_tags("registry.test/a/b") == ["x"]
    assert client.stats["token"] == 1  # cached per scope
    query = token_calls[0].url.params
    assert query["service"] == "registry.test"
    assert query.get_list("scope") == ["repository:a/b:pull"]
    # A push scope is another token; a mount asks for pull on the source too.
    client.mount_blob("registry.test/a/b", "sha256:" + "7" * 64, "registry.test/c/d")
    assert token_calls[-1].url.params.get_list("scope") == [
        "repository:a/b:pull,push",
        "repository:c/d:pull",
    ]
    with pytest.raises(RegistryError) as caught:
        client.list_tags("registry.test/a/fail")
    message = str(caught.value)
    assert "***" in message
    for secret in (PASSWORD, TOKEN, auth):
        assert secret not in message and secret not in repr(caught.value)


def test_token_flow_with_identity_token(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "docker", {"auths": {"registry.test": {"identitytoken": "refresh-abcdef"}}}
    )
    token_calls: list[httpx.Request] = []

    def refresh_ok(request: httpx.Request) -> bool:
        form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
        return request.method == "POST" and form == {
            "grant_type": "refresh_token",
            "refresh_token": "refresh-abcdef",
            "client_id": "buildgen",
            "scope": "repository%3Aa%2Fb%3Apull",
            "service": "registry.test",
        }

    client, _, _ = mock_client(bearer_registry(refresh_ok, token_calls), docker_config=config)
    assert client.list_tags("registry.test/a/b") == ["x"]
    assert len(token_calls) == 1


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'[ "$server" = registry.test ] && echo \'{{"Username":"bob","Secret":"{PASSWORD}"}}\' '
        "&& exit 0\necho 'credentials not found in native keychain'; exit 1\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(shutil.which('sh') or '/bin/sh').parent}")
    config = write_config(tmp_path / "docker", {"credHelpers": {"registry.test": "fake"}})
    expected = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    token_calls: list[httpx.Request] = []

    def helper_ok(request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == expected

    client, _, _ = mock_client(bearer_registry(helper_ok, token_calls), docker_config=config)
    assert client.list_tags("registry.test/a/b") == ["x"]


def test_auth_error_says_how_to_log_in(tmp_path: Path) -> None:
    token_calls: list[httpx.Request] = []
    client, _, _ = mock_client(bearer_registry(lambda r: False, token_calls))
    with pytest.raises(AuthError) as caught:
        client.list_tags("registry.test/a/b")
    error = caught.value
    assert error.exit_code == 3 and error.status == 401
    assert "docker login registry.test" in str(error) and "DOCKER_CONFIG" in str(error)
    assert "no credentials" in str(error)

    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    config = write_config(tmp_path / "docker", {"auths": {"registry.test": {"auth": auth}}})
    client, _, _ = mock_client(bearer_registry(lambda r: False, []), docker_config=config)
    with pytest.raises(AuthError) as caught:
        client.list_tags("registry.test/a/b")
    assert "were not enough" in str(caught.value) and PASSWORD not in str(caught.value)


def test_basic_auth(tmp_path: Path) -> None:
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    config = write_config(tmp_path / "docker", {"auths": {"registry.test": {"auth": auth}}})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Basic {auth}":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="Registry"'})
        return httpx.Response(200)

    client, recorder, _ = mock_client(handler, docker_config=config)
    assert client.blob_exists("registry.test/a/b", "sha256:" + "8" * 64)
    assert client.blob_exists("registry.test/a/b", "sha256:" + "9" * 64)
    # Learnt from the ping: credentials go with every request, no 401 round trips.
    assert [r.url.path for r in recorder.requests].count("/v2/") == 1
    assert len(recorder.requests) == 3


def test_expired_token_is_refreshed() -> None:
    issued: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            issued.append(f"token-{len(issued)}-abcdefgh")
            return httpx.Response(200, json={"token": issued[-1]})
        if issued and request.headers.get("Authorization") == f"Bearer {issued[-1]}":
            return httpx.Response(200)
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="s"'}
        )

    client, _, _ = mock_client(handler)
    assert client.blob_exists("registry.test/a/b", "sha256:" + "8" * 64)
    issued.append("revoked-elsewhere")  # the registry now wants a newer token than ours
    assert client.blob_exists("registry.test/a/b", "sha256:" + "8" * 64)
    assert client.stats["token"] == 2


# -- pure helpers ----------------------------------------------------------------------------


def test_parse_challenges() -> None:
    (bearer,) = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/ubuntu:pull repository:x/y:pull,push",error="insufficient_scope"'
    )
    assert bearer.scheme == "bearer" and bearer.realm == "https://auth.docker.io/token"
    assert bearer.service == "registry.docker.io"
    assert bearer.scopes == ("repository:library/ubuntu:pull", "repository:x/y:pull,push")
    basic, other = parse_challenges('Basic realm="a \\"quoted\\" realm", Newauth realm=x, p=1')
    assert basic.scheme == "basic" and basic.realm == 'a "quoted" realm'
    assert other.scheme == "newauth" and other.params == {"realm": "x", "p": "1"}
    assert parse_challenges("") == []


def test_parse_reference() -> None:
    digest = "sha256:" + "ab" * 32
    ref = parse_reference(f"127.0.0.1:5000/evals/agents/x:1.0@{digest}")
    assert (ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000/evals/agents/x", "1.0", digest)
    assert str(ref) == f"127.0.0.1:5000/evals/agents/x:1.0@{digest}"
    assert parse_reference("127.0.0.1:5000/x") == Reference("127.0.0.1:5000/x")  # a port, no tag
    assert parse_reference(f"r.example/x@{digest}") == Reference("r.example/x", None, digest)
    assert parse_reference("r.example/x:t").tag == "t"
    for bad in ("r.example/x@sha256:00", "r.example/x:bad tag", "r.example/x:", "r.example/"):
        with pytest.raises(ValueError):
            parse_reference(bad)


def test_parse_repository() -> None:
    assert str(parse_repository("ubuntu")) == "docker.io/library/ubuntu"
    assert str(parse_repository("org/app")) == "docker.io/org/app"
    assert parse_repository("index.docker.io/org/app").api_host == "registry-1.docker.io"
    repo = parse_repository("127.0.0.1:5000/evals/agents/x")
    assert (repo.registry, repo.path) == ("127.0.0.1:5000", "evals/agents/x")
    assert parse_repository("localhost/x").registry == "localhost"
    for bad in ("Upper/case", "127.0.0.1:5000/x:tag", "host.io/", "a//b", "x@sha256:00"):
        with pytest.raises(ValueError):
            parse_repository(bad)


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(backoff=0.2, max_backoff=10.0, random=lambda: 1.0)
    assert [policy.delay(n) for n in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert RetryPolicy(random=lambda: 0.0).delay(5) == 0.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert {policy.retryable_status(s) for s in (408, 429, 500, 502, 503, 504)} == {True}
    assert {policy.retryable_status(s) for s in (400, 401, 403, 404, 409, 501)} == {False}


def test_redact() -> None:
    text = (
        f'Authorization: Bearer {TOKEN} {{"token": "{TOKEN}", "access_token":"abc123456"}} '
        f"https://alice:{PASSWORD}@registry.test/v2/?password=hunter22&x=1"
    )
    cleaned = redact(text)
    for secret in (TOKEN, PASSWORD, "abc123456", "hunter22"):
        assert secret not in cleaned
    assert "x=1" in cleaned and "registry.test" in cleaned
    assert redact("the opaque value xyz-plain", secrets=["xyz-plain"]) == "the opaque value ***"


def test_token_response() -> None:
    now = 1000.0
    token = parse_token_response(b'{"access_token": "abc", "expires_in": 300}', now=now)
    assert token.value == "abc" and token.expires_at == now + 290 and "abc" not in repr(token)
    short = parse_token_response(b'{"token": "t"}', now=now)
    assert short.expires_at == now + 50  # default 60 s, minus the margin
    with pytest.raises(ValueError):
        parse_token_response(b'{"nothing": 1}')


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        RegistryOptions(max_connections=0)
    with pytest.raises(ValueError):
        RegistryOptions(timeout=0)


def test_concurrency_is_bounded() -> None:
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        if response := ping_ok(request):
            return response
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(0.01)
        with lock:
            in_flight["now"] -= 1
        return httpx.Response(200)

    client, _, _ = mock_client(handler, max_connections=3)
    with ThreadPoolExecutor(12) as pool:
        list(
            pool.map(
                lambda i: client.blob_exists("registry.test/a/b", f"sha256:{i:064x}"), range(36)
            )
        )
    assert in_flight["max"] == 3


# -- against real registries with auth, TLS and faults (tests/support/registries.py) ------------------


@pytest.fixture(scope="module")
def registries_ok() -> None:
    if shutil.which("docker-registry") is None:
        missing("docker-registry is not installed (apt-get install docker-registry)")


def push_small_image(client: RegistryClient, repository: str, tag: str) -> str:
    manifest = image(client, repository, f"layer of {repository}".encode())
    return client.put_manifest(repository, tag, manifest, OCI_MANIFEST)


def assert_no_secrets(text: str, reg: RunningRegistry) -> None:
    for secret in reg.secrets():
        assert secret not in text


@pytest.mark.registry
def test_htpasswd_registry(registries_ok: None, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg", auth="htpasswd")
    try:
        assert reg.username and reg.password
        good = write_docker_config(tmp_path / "good", {reg.host: (reg.username, reg.password)})
        with RegistryClient(RegistryOptions(docker_config=str(good))) as client:
            digest = push_small_image(client, f"{reg.host}/auth/basic", "v1")
            assert client.get_manifest(f"{reg.host}/auth/basic", "v1").digest == digest
            assert client.list_tags(f"{reg.host}/auth/basic") == ["v1"]

        anonymous_client = RegistryClient(RegistryOptions(docker_config=str(tmp_path / "none")))
        with anonymous_client, pytest.raises(AuthError) as anonymous:
            anonymous_client.head_manifest(f"{reg.host}/auth/basic", "v1")
        assert f"docker login {reg.host}" in str(anonymous.value)
        assert anonymous.value.status == 401 and anonymous.value.exit_code == 3

        bad = write_docker_config(tmp_path / "bad", {reg.host: (reg.username, "wrong-password")})
        bad_client = RegistryClient(RegistryOptions(docker_config=str(bad)))
        with bad_client, pytest.raises(AuthError) as wrong:
            bad_client.head_manifest(f"{reg.host}/auth/basic", "v1")
        assert "were not enough" in str(wrong.value)
        assert "wrong-password" not in str(wrong.value)
        assert_no_secrets(str(wrong.value), reg)
    finally:
        reg.stop()


@pytest.mark.registry
def test_token_registry_over_tls_with_credential_helper(
    registries_ok: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = start_registry(tmp_path / "reg", auth="token", tls=True)
    try:
        assert reg.username and reg.password and reg.ca_file and reg.issuer
        bin_dir = tmp_path / "bin"
        write_credential_helper(bin_dir, "bgtest", {reg.host: (reg.username, reg.password)})
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        config = write_docker_config(tmp_path / "docker", cred_helpers={reg.host: "bgtest"})
        options = RegistryOptions(docker_config=str(config), ca_bundle=str(reg.ca_file))
        with RegistryClient(options) as client:
            source, target = f"{reg.host}/auth/src", f"{reg.host}/auth/dst"
            push_small_image(client, source, "v1")
            layer = f"layer of {source}".encode()
            client.ensure_blob(target, sha256_digest(layer), len(layer), source_repository=source)
            assert client.stats["PUT blob"] == 2  # config and layer of the source only: mounted
            tokens = client.stats["token"]
            for _ in range(3):
                assert client.list_tags(source) == ["v1"]
                assert client.get_manifest(source, "v1").media_type == OCI_MANIFEST
            # Reads reuse the push token of the same repository; nothing new is fetched.
            assert client.stats["token"] == tokens
            with pytest.raises(NotFound) as caught:
                client.get_manifest(target, "absent")
        assert helper_calls(bin_dir, "bgtest") == [f"get {reg.host}"]  # once per host
        mounts = [r for r in reg.issuer.log if len(r.scopes) == 2]
        assert mounts and set(mounts[0].scopes) == {
            "repository:auth/dst:pull,push",
            "repository:auth/src:pull",
        }
        assert_no_secrets(str(caught.value), reg)

        # The same registry without its CA: a clear error, no retries, no fallback to http.
        with RegistryClient(RegistryOptions(docker_config=str(config))) as client:
            with pytest.raises(RegistryError, match="--ca-bundle"):
                client.head_manifest(f"{reg.host}/auth/src", "v1")
            assert client.stats["retry"] == 0
    finally:
        reg.stop()


@pytest.mark.registry
def test_token_registry_with_identity_token(registries_ok: None, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg", auth="token")
    try:
        assert reg.issuer
        config = write_docker_config(
            tmp_path / "docker", identity_tokens={reg.host: reg.issuer.identity_token}
        )
        with RegistryClient(RegistryOptions(docker_config=str(config))) as client:
            push_small_image(client, f"{reg.host}/auth/idt", "v1")
            assert client.head_manifest(f"{reg.host}/auth/idt", "v1") is not None
        grants = {r.grant_type for r in reg.issuer.log}
        assert grants == {"refresh_token"}
    finally:
        reg.stop()


@pytest.mark.registry
def test_faults_are_retried(registries_ok: None, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "reg")
    try:
        kinds = ("503", "429", "reset", "reset-after")
        with FaultProxy(reg.host, rate=0.25, kinds=kinds, retry_after=0.01, seed=7) as proxy:
            options = RegistryOptions(
                docker_config=str(tmp_path / "none"), retries=10, backoff=0.01, max_backoff=0.05
            )
            with RegistryClient(options) as client:
                repo = f"{proxy.host}/faults/x"

                def push(i: int) -> str:
                    return push_small_image(client, repo, f"t{i}")

                with ThreadPoolExecutor(8) as pool:
                    digests = list(pool.map(push, range(16)))
                assert sorted(client.list_tags(repo)) == sorted(f"t{i}" for i in range(16))
                for i, digest in enumerate(digests):
                    assert client.get_manifest(repo, f"t{i}").digest == digest
                assert client.stats["retry"] > 0
            assert sum(proxy.stats[k] for k in kinds) > 0
    finally:
        reg.stop()


def test_docker_credentials_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = base64.b64encode(b"hubuser:hubpass").decode()
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": hub},
            "http://plain.test:5000/v2/": {"auth": base64.b64encode(b"u:p4ss").decode()},
            "token.test": {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": "idt"},
        }
    }
    directory = write_config(tmp_path / "env-config", config)
    monkeypatch.setenv("DOCKER_CONFIG", directory)
    store = DockerCredentials()  # $DOCKER_CONFIG
    hub_creds = store.get("docker.io")
    assert hub_creds is not None and (hub_creds.username, hub_creds.password) == (
        "hubuser",
        "hubpass",
    )
    assert "hubpass" not in repr(hub_creds)
    plain = store.get("plain.test:5000")
    assert (
        plain is not None
        and plain.basic_header() == "Basic " + base64.b64encode(b"u:p4ss").decode()
    )
    token = store.get("token.test")
    assert token is not None and token.identity_token == "idt" and token.basic_header() is None
    assert store.get("elsewhere.test") is None
    # The option wins over $DOCKER_CONFIG, and a directory without config.json means anonymous.
    assert DockerCredentials(str(tmp_path / "empty")).get("docker.io") is None


def test_cred_helper_keys_are_normalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    write_credential_helper(
        bin_dir, "norm", {"https://helped.test:5000": ("helper-user", "helper-secret")}
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = write_docker_config(
        tmp_path / "docker", cred_helpers={"https://helped.test:5000": "norm"}
    )
    found = DockerCredentials(str(config)).get("helped.test:5000")
    assert found is not None and (found.username, found.password) == (
        "helper-user",
        "helper-secret",
    )

    broken = write_config(tmp_path / "broken", {"credHelpers": {"helped.test:5000": "absent"}})
    with pytest.raises(AuthError, match="credential helper"):
        DockerCredentials(broken).get("helped.test:5000")
