"""Proof that the registry test infrastructure in tests/support/registries.py works, checked with
independent clients (skopeo, curl, httpx) -- never with buildgen's own registry client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.components import missing
from support.registries import (
    FaultProxy,
    RunningRegistry,
    decode_jwt,
    helper_calls,
    make_oci_layout,
    start_registry,
    tools_missing,
    write_credential_helper,
    write_docker_config,
)

pytestmark = pytest.mark.registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _require(*tools: str) -> None:
    problem = tools_missing(*tools)
    if problem:
        missing(problem)


@pytest.fixture(scope="module")
def tools() -> None:
    _require("docker-registry", "skopeo", "curl")


def skopeo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-layer OCI layout: 'oci:DIR:v1'."""
    return make_oci_layout(tmp_path_factory.mktemp("image") / "layout", tag="v1")


def _manifest_digest(image_ref: str) -> str:
    layout, _, tag = image_ref.removeprefix("oci:").rpartition(":")
    index = json.loads((Path(layout) / "index.json").read_text())
    (entry,) = [
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag
    ]
    return str(entry["digest"])


def _remote_digest(ref: str, *extra: str) -> str:
    raw = ok(skopeo("inspect", "--raw", *extra, f"docker://{ref}")).stdout
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


@pytest.fixture(scope="module")
def plain(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path_factory.mktemp("plain"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_reg(
    tools: None, tmp_path_factory: pytest.TempPathFactory, image: str
) -> Iterator[RunningRegistry]:
    """A token-auth registry holding `test/app:v1` (pushed by skopeo with --dest-creds)."""
    reg = start_registry(tmp_path_factory.mktemp("token"), auth="token")
    try:
        ok(
            skopeo(
                "copy", "-q", "--dest-tls-verify=false", "--dest-creds", reg.creds,
                image, f"docker://{reg.host}/test/app:v1",
            )
        )  # fmt: skip
        yield reg
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
# htpasswd
# ---------------------------------------------------------------------------------------------


def test_htpasswd_registry_rejects_anonymous_and_accepts_basic_auth(
    tools: None, tmp_path: Path, image: str
) -> None:
    reg = start_registry(tmp_path, auth="htpasswd")
    try:
        anonymous = httpx.get(f"{reg.url}/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic realm=")
        user, password = reg.username or "", reg.password or ""
        assert httpx.get(f"{reg.url}/v2/", auth=(user, "wrong")).status_code == 401
        assert httpx.get(f"{reg.url}/v2/", auth=(user, password)).status_code == 200

        target = f"docker://{reg.host}/test/basic:v1"
        assert skopeo("copy", "-q", "--dest-tls-verify=false", image, target).returncode != 0
        ok(
            skopeo(
                "copy", "-q", "--dest-tls-verify=false", "--dest-creds", reg.creds, image, target
            )
        )
        ref = f"{reg.host}/test/basic:v1"
        assert _remote_digest(ref, "--tls-verify=false", "--creds", reg.creds) == _manifest_digest(
            image
        )
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
# token auth
# ---------------------------------------------------------------------------------------------


def test_token_registry_skopeo_push_and_pull(
    token_reg: RunningRegistry, image: str, tmp_path: Path
) -> None:
    reg, issuer = token_reg, token_reg.issuer
    assert issuer is not None
    challenge = httpx.get(f"{reg.url}/v2/").headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{issuer.realm}",service="{issuer.service}"')

    # the fixture pushed with --dest-creds; pull it back with --src-creds
    before = issuer.requests
    pulled = skopeo(
        "copy", "--src-tls-verify=false", "--src-creds", reg.creds,
        f"docker://{reg.host}/test/app:v1", f"oci:{tmp_path / 'out'}:v1",
    )  # fmt: skip
    ok(pulled)
    assert issuer.requests > before
    assert _manifest_digest(f"oci:{tmp_path / 'out'}:v1") == _manifest_digest(image)
    assert issuer.tokens and not any(s in pulled.stdout + pulled.stderr for s in reg.secrets())

    denied = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", f"{reg.username}:wrong",
        f"docker://{reg.host}/test/app:v1",
    )  # fmt: skip
    assert denied.returncode != 0
    assert issuer.log[-1].status == 401


def test_token_issuer_get_follows_the_docker_token_spec(token_reg: RunningRegistry) -> None:
    issuer = token_reg.issuer
    assert issuer is not None
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("service", issuer.service),
        ("scope", "repository:test/app:pull"),
        ("scope", "repository:other/repo:pull,push"),
    ]
    assert httpx.get(issuer.realm, params=params).status_code == 401
    assert httpx.get(issuer.realm, params=params, auth=("alice", "nope")).status_code == 401

    answer = httpx.get(issuer.realm, params=[*params, ("offline_token", "true")], auth=("alice", token_reg.password or ""))  # fmt: skip
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert body["refresh_token"] == issuer.identity_token
    assert body["token"] in issuer.tokens
    header, claims = decode_jwt(body["token"])
    assert header["alg"] == "RS256" and len(header["x5c"]) == 1
    assert claims["aud"] == issuer.service and claims["iss"] == issuer.issuer
    assert claims["sub"] == "alice"
    assert {"iat", "nbf", "exp", "jti"} <= claims.keys()
    assert claims["access"] == [
        {"type": "repository", "name": "test/app", "actions": ["pull"]},
        {"type": "repository", "name": "other/repo", "actions": ["pull", "push"]},
    ]

    bearer = {"Authorization": f"Bearer {body['token']}"}
    tags = httpx.get(f"{token_reg.url}/v2/test/app/tags/list", headers=bearer)
    assert tags.status_code == 200 and tags.json()["tags"] == ["v1"]
    # the token grants pull only on test/app: an upload there is refused
    upload = httpx.post(f"{token_reg.url}/v2/test/app/blobs/uploads/", headers=bearer)
    assert upload.status_code == 401
    assert 'error="insufficient_scope"' in upload.headers["www-authenticate"]


def test_token_issuer_oauth2_password_and_refresh_token_grants(token_reg: RunningRegistry) -> None:
    issuer = token_reg.issuer
    assert issuer is not None
    scope = "repository:test/app:pull repository:test/app:push"
    form = {"grant_type": "password", "username": "alice", "password": token_reg.password or ""}
    common = {"service": issuer.service, "client_id": "buildgen-tests", "scope": scope}
    first = httpx.post(issuer.realm, data={**form, **common, "access_type": "offline"})
    assert first.status_code == 200, first.text
    assert first.json()["refresh_token"] == issuer.identity_token
    bad = httpx.post(issuer.realm, data={**form, **common, "password": "wrong"})
    assert bad.status_code == 400 and bad.json() == {"error": "invalid_grant"}

    refreshed = httpx.post(
        issuer.realm,
        data={**common, "grant_type": "refresh_token", "refresh_token": issuer.identity_token},
    )
    assert refreshed.status_code == 200, refreshed.text
    access = refreshed.json()["access_token"]
    assert access in issuer.tokens and refreshed.json()["expires_in"] == 300
    assert decode_jwt(access)[1]["access"][0]["actions"] == ["pull"]
    bearer = {"Authorization": f"Bearer {access}"}
    assert httpx.get(f"{token_reg.url}/v2/test/app/tags/list", headers=bearer).status_code == 200
    upload = httpx.post(f"{token_reg.url}/v2/test/app/blobs/uploads/", headers=bearer)
    assert upload.status_code == 202  # push was granted too
    httpx.delete(f"{token_reg.url}{upload.headers['location'].split(token_reg.host, 1)[1]}", headers=bearer)  # fmt: skip

    unknown = httpx.post(
        issuer.realm, data={**common, "grant_type": "refresh_token", "refresh_token": "nope"}
    )
    assert unknown.status_code == 400
    assert [entry.grant_type for entry in issuer.log[-4:]] == [
        "password", "password", "refresh_token", "refresh_token",
    ]  # fmt: skip


def test_expired_tokens_are_refused_by_the_registry(token_reg: RunningRegistry) -> None:
    issuer = token_reg.issuer
    assert issuer is not None
    issuer.token_lifetime = -120  # distribution allows 60 s of leeway
    try:
        stale = issuer.mint("alice", ["repository:test/app:pull"])
    finally:
        issuer.token_lifetime = None
    fresh = issuer.mint("alice", ["repository:test/app:pull"])
    url = f"{token_reg.url}/v2/test/app/tags/list"
    assert httpx.get(url, headers={"Authorization": f"Bearer {stale}"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_anonymous_pull_when_enabled(token_reg: RunningRegistry) -> None:
    issuer = token_reg.issuer
    assert issuer is not None
    ref = f"docker://{token_reg.host}/test/app:v1"
    assert skopeo("inspect", "--raw", "--tls-verify=false", ref).returncode != 0
    issuer.anonymous_actions = {"pull"}
    try:
        ok(skopeo("inspect", "--raw", "--tls-verify=false", ref))
        answer = httpx.get(issuer.realm, params={"scope": "repository:test/app:pull,push"})
        assert decode_jwt(answer.json()["token"])[1]["access"][0]["actions"] == ["pull"]
    finally:
        issuer.anonymous_actions = None


def test_skopeo_uses_identity_token_from_docker_config(
    token_reg: RunningRegistry, tmp_path: Path
) -> None:
    issuer = token_reg.issuer
    assert issuer is not None
    config_dir = write_docker_config(
        tmp_path / "docker", identity_tokens={token_reg.host: issuer.identity_token}
    )
    result = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--authfile", str(config_dir / "config.json"),
        f"docker://{token_reg.host}/test/app:v1",
    )  # fmt: skip
    ok(result)
    assert issuer.log[-1].grant_type == "refresh_token" and issuer.log[-1].status == 200


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def test_tls_registry_needs_its_ca(tools: None, tmp_path: Path, image: str) -> None:
    reg = start_registry(tmp_path, tls=True, auth="token")
    try:
        assert reg.url == f"https://{reg.host}" and reg.ca_file is not None
        for url in (f"{reg.url}/v2/", f"https://{reg.localhost}/v2/"):
            good = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(reg.ca_file), url],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert good.returncode == 0 and good.stdout == "401", good.stderr
        bad = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", f"{reg.url}/v2/"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert bad.returncode == 60, bad.stderr  # peer certificate cannot be authenticated

        # skopeo with --cert-dir (ca.crt) pushes; the token realm is https with the same CA
        assert reg.issuer is not None and reg.issuer.realm.startswith("https://")
        target = f"docker://{reg.host}/test/tls:v1"
        ok(skopeo("copy", "-q", "--dest-cert-dir", str(reg.cert_dir), "--dest-creds", reg.creds, image, target))  # fmt: skip
        assert skopeo("copy", "-q", "--dest-creds", reg.creds, image, target).returncode != 0
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
# pull-through mirror
# ---------------------------------------------------------------------------------------------


def test_pull_through_mirror(plain: RunningRegistry, image: str, tmp_path: Path) -> None:
    ok(skopeo("copy", "-q", "--dest-tls-verify=false", image, f"docker://{plain.host}/mirror/src:v1"))  # fmt: skip
    mirror = start_registry(tmp_path, proxy_remote=plain.url)
    try:
        ref = f"{mirror.host}/mirror/src:v1"
        assert _remote_digest(ref, "--tls-verify=false") == _manifest_digest(image)
        ok(skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'out'}:v1"))  # fmt: skip
        assert any((mirror.workdir / "storage").rglob("data"))  # blobs were cached
    finally:
        mirror.stop()


# ---------------------------------------------------------------------------------------------
# FaultProxy
# ---------------------------------------------------------------------------------------------


def test_fault_proxy_forwards_skopeo_at_rate_zero(
    plain: RunningRegistry, image: str, tmp_path: Path
) -> None:
    with FaultProxy(plain.host, rate=0) as proxy:
        ok(skopeo("copy", "-q", "--dest-tls-verify=false", image, f"docker://{proxy.host}/fp/zero:v1"))  # fmt: skip
        ok(skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{proxy.host}/fp/zero:v1", f"oci:{tmp_path / 'out'}:v1"))  # fmt: skip
        assert proxy.stats["forwarded"] == proxy.stats["requests"] > 5
        assert proxy.stats["upstream_error"] == 0
        assert {method for method, _, _ in proxy.log} >= {"GET", "HEAD", "POST", "PATCH", "PUT"}
    assert _remote_digest(f"{plain.host}/fp/zero:v1", "--tls-verify=false") == _manifest_digest(
        image
    )


def test_fault_proxy_latency_faults_keep_skopeo_working(
    plain: RunningRegistry, image: str, tmp_path: Path
) -> None:
    with FaultProxy(plain.host, rate=0.1, kinds=["latency"], latency=0.05, seed=1) as proxy:
        ok(skopeo("copy", "-q", "--dest-tls-verify=false", image, f"docker://{proxy.host}/fp/slow:v1"))  # fmt: skip
        ok(skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{proxy.host}/fp/slow:v1", f"oci:{tmp_path / 'out'}:v1"))  # fmt: skip
        with httpx.Client(base_url=proxy.url) as client:
            for _ in range(40):
                # distribution 2.8 answers 404 for an OCI manifest unless the client accepts it
                head = client.head("/v2/fp/slow/manifests/v1", headers={"Accept": OCI_MANIFEST})
                assert head.status_code == 200
        assert proxy.stats["latency"] >= 1
        assert proxy.stats["forwarded"] == proxy.stats["requests"]
        assert sum(proxy.stats[k] for k in ("503", "429", "reset", "reset-after")) == 0


def test_fault_proxy_rate_one_fails_every_request(plain: RunningRegistry) -> None:
    with FaultProxy(plain.host, rate=0, kinds=["503"], seed=3) as proxy:
        with httpx.Client(base_url=proxy.url) as client:
            assert client.get("/v2/").status_code == 200
            proxy.set_rate(1.0)
            for _ in range(20):
                answer = client.get("/v2/")
                assert answer.status_code == 503
                assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
            head = client.head("/v2/")
            assert head.status_code == 503 and head.content == b""
            # a body the proxy refuses is drained, so the keep-alive connection stays usable
            put = client.put("/v2/fp/x/blobs/uploads/nope", content=b"z" * 100_000)
            assert put.status_code == 503
        result = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{proxy.host}/fp/x:v1")
        assert result.returncode != 0
        assert proxy.stats["503"] == proxy.stats["requests"] - 1 >= 22
        assert proxy.stats["connections"] >= 2
        proxy.set_rate(0)
        assert httpx.get(f"{proxy.url}/v2/").status_code == 200


def test_fault_proxy_429_and_resets(plain: RunningRegistry) -> None:
    with FaultProxy(plain.host, rate=0, retry_after=2) as proxy:
        proxy.inject("429")
        throttled = httpx.get(f"{proxy.url}/v2/")
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
        assert throttled.json()["errors"][0]["code"] == "TOOMANYREQUESTS"

        proxy.inject("reset")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{proxy.url}/v2/")

        # reset-after: the upstream performed the request, the client saw a reset
        proxy.inject("reset-after")
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{proxy.url}/v2/fp/reset/blobs/uploads/")
        assert httpx.get(f"{proxy.url}/v2/").status_code == 200
        assert proxy.stats["429"] == proxy.stats["reset"] == proxy.stats["reset-after"] == 1
        assert [kind for _, _, kind in proxy.log] == [
            "429", "reset", "reset-after", "forwarded",
        ]  # fmt: skip


def test_fault_proxy_streams_uploads_concurrently_over_keepalive(plain: RunningRegistry) -> None:
    """16 clients, each on one keep-alive connection: chunked PATCH, Content-Length PUT, HEAD."""
    errors: list[BaseException] = []

    def client_run(proxy: FaultProxy, n: int) -> None:
        try:
            with httpx.Client(base_url=proxy.url, timeout=30) as client:
                repo = f"fp/conc{n}"
                data = os.urandom(300_000) + bytes([n])
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                start = client.post(f"/v2/{repo}/blobs/uploads/")
                assert start.status_code == 202
                location = start.headers["location"]
                assert location.startswith(f"{proxy.url}/v2/{repo}/blobs/uploads/")

                def body() -> Iterator[bytes]:  # no length: httpx sends it chunked
                    for i in range(0, len(data), 65_000):
                        yield data[i : i + 65_000]

                patched = client.patch(location, content=body())
                assert (
                    patched.status_code == 202 and patched.headers["range"] == f"0-{len(data) - 1}"
                )
                sep = "&" if "?" in patched.headers["location"] else "?"
                done = client.put(f"{patched.headers['location']}{sep}digest={digest}")
                assert done.status_code == 201, done.text
                # monolithic: POST, then PUT ?digest= with a Content-Length body (distribution
                # 2.8 ignores a body on POST ?digest= and answers 202, not 201)
                small = b"small blob %d" % n
                small_digest = "sha256:" + hashlib.sha256(small).hexdigest()
                second = client.post(f"/v2/{repo}/blobs/uploads/")
                assert second.status_code == 202
                sep = "&" if "?" in second.headers["location"] else "?"
                mono = client.put(
                    f"{second.headers['location']}{sep}digest={small_digest}", content=small
                )
                assert mono.status_code == 201, mono.text
                head = client.head(f"/v2/{repo}/blobs/{digest}")
                assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
                got = client.get(f"/v2/{repo}/blobs/{digest}")
                assert got.status_code == 200 and got.content == data
        except BaseException as exc:
            errors.append(exc)

    with FaultProxy(plain.host, rate=0) as proxy:
        threads = [threading.Thread(target=client_run, args=(proxy, n)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert proxy.stats["requests"] == proxy.stats["forwarded"] == 16 * 7
        assert proxy.stats["connections"] == 16  # keep-alive: one connection per client


def test_fault_proxy_added_latency_and_location_rewrite(plain: RunningRegistry) -> None:
    with (
        FaultProxy(plain.host, rate=0, added_latency=0.03) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        started = time.monotonic()
        for _ in range(5):
            assert client.get("/v2/").status_code == 200
        assert time.monotonic() - started >= 5 * 0.03
        # distribution builds Location from the Host header, which the proxy passes through;
        # when a client sends the upstream's name, the Location is rewritten to the proxy
        answer = client.post("/v2/fp/loc/blobs/uploads/", headers={"Host": plain.host})
        assert answer.status_code == 202
        assert answer.headers["location"].startswith(f"{proxy.url}/v2/fp/loc/blobs/uploads/")


# ---------------------------------------------------------------------------------------------
# Docker config and credential helpers
# ---------------------------------------------------------------------------------------------


def _helper(script: Path, action: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), action], input=stdin, capture_output=True, text=True, timeout=20, check=False
    )


def test_credential_helper_protocol(tmp_path: Path) -> None:
    script = write_credential_helper(
        tmp_path / "bin",
        "buildgen-test",
        {"127.0.0.1:5000": ("bob", "pw"), "https://ghcr.example": ("<token>", "idt-123")},
    )
    assert script.name == "docker-credential-buildgen-test" and os.access(script, os.X_OK)
    got = _helper(script, "get", "127.0.0.1:5000\n")
    assert got.returncode == 0
    assert json.loads(got.stdout) == {"ServerURL": "127.0.0.1:5000", "Username": "bob", "Secret": "pw"}  # fmt: skip
    assert json.loads(_helper(script, "get", "https://127.0.0.1:5000").stdout)["Username"] == "bob"
    token = json.loads(_helper(script, "get", "ghcr.example").stdout)
    assert token["Username"] == "<token>" and token["Secret"] == "idt-123"
    absent = _helper(script, "get", "other.example")
    assert absent.returncode == 1 and "credentials not found in native keychain" in absent.stdout
    assert json.loads(_helper(script, "list").stdout) == {"127.0.0.1:5000": "bob", "https://ghcr.example": "<token>"}  # fmt: skip
    stored = json.dumps({"ServerURL": "new.example", "Username": "carol", "Secret": "s"})
    assert _helper(script, "store", stored).returncode == 0
    assert json.loads(_helper(script, "get", "new.example").stdout)["Secret"] == "s"
    assert _helper(script, "erase", "new.example").returncode == 0
    assert _helper(script, "get", "new.example").returncode == 1
    calls = helper_calls(tmp_path / "bin", "buildgen-test")
    assert calls[0] == "get 127.0.0.1:5000" and "store new.example" in calls
    assert not any("pw" in call or "idt-123" in call for call in calls)


def test_docker_config_and_helper_work_with_skopeo(
    tools: None, tmp_path: Path, token_reg: RunningRegistry, image: str
) -> None:
    reg = start_registry(tmp_path / "reg", auth="htpasswd")
    try:
        config = write_docker_config(
            tmp_path / "plain-config", auths={reg.host: (reg.username or "", reg.password or "")}
        )
        entry = json.loads((config / "config.json").read_text())["auths"][reg.host]
        assert base64.b64decode(entry["auth"]).decode() == f"{reg.username}:{reg.password}"
        authfile = str(config / "config.json")
        target = f"docker://{reg.host}/test/authfile:v1"
        ok(skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-authfile", authfile, image, target))  # fmt: skip
        ok(skopeo("inspect", "--raw", "--tls-verify=false", "--authfile", authfile, target))

        # credHelpers: skopeo runs docker-credential-NAME from PATH
        bin_dir = tmp_path / "bin"
        write_credential_helper(bin_dir, "bgtest", {token_reg.host: (token_reg.username or "", token_reg.password or "")})  # fmt: skip
        helpers = write_docker_config(tmp_path / "helper-config", cred_helpers={token_reg.host: "bgtest"})  # fmt: skip
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        result = skopeo(
            "inspect", "--raw", "--tls-verify=false", "--authfile", str(helpers / "config.json"),
            f"docker://{token_reg.host}/test/app:v1", env=env,
        )  # fmt: skip
        ok(result)
        assert helper_calls(bin_dir, "bgtest") == [f"get {token_reg.host}"]
    finally:
        reg.stop()
