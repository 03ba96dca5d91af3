"""Real registries for integration tests: CNCF distribution 2.8 with htpasswd or token auth, TLS,
pull-through mirrors, plus a fault-injecting HTTP proxy and Docker credential fixtures.

Everything listens on and connects to 127.0.0.1 only.

- `start_registry(workdir, auth=..., tls=..., proxy_remote=...)` starts `docker-registry serve`.
  `host` is always "127.0.0.1:PORT"; with `tls=True` the server certificate carries SANs for
  IP 127.0.0.1 *and* DNS localhost, so "localhost:PORT" works too (see `RunningRegistry.localhost`).
- `TokenIssuer` implements the Docker token spec (GET with Basic credentials) and the OAuth2 POST
  grants (`password`, `refresh_token`), signing RS256 JWTs with `x5c` headers.
- `FaultProxy` sits in front of a registry and injects 503 / 429 / connection resets / latency.
- `write_docker_config` / `write_credential_helper` produce a DOCKER_CONFIG directory and an
  executable `docker-credential-NAME`.
- `make_oci_layout` writes a tiny single-layer OCI image layout (for `skopeo copy oci:...`).

Distribution 2.8 facts these helpers rely on (checked here):
- Token `aud` must be a single string equal to `auth.token.service` (2.8 has no audience lists);
  `iss` must equal `auth.token.issuer`; exp/nbf are checked with 60 s leeway, so a token with
  `exp` in the past is still accepted for a minute (use `TokenIssuer.token_lifetime = -120` to
  issue tokens the registry rejects at once).
- Upload `Location` headers are absolute and built from the request's Host header, so a proxy
  that passes Host through gets correct URLs without rewriting (FaultProxy still rewrites any
  Location that names the upstream, as a fallback).
- An OCI manifest is 404 (MANIFEST_UNKNOWN) unless the request's Accept lists its media type.
- `POST /v2/NAME/blobs/uploads/?digest=D` with a body is NOT a monolithic upload in 2.8: the body
  is ignored and the answer is 202 + Location; finish with `PUT LOCATION&digest=D` + body.
- Scope violations answer 401 with `error="insufficient_scope"` in WWW-Authenticate.
- A pull-through mirror (`proxy.remoteurl`) refuses pushes; it trusts only system CAs, so an
  https remote needs SSL_CERT_FILE (`proxy_ca_file`).
Client facts: skopeo (containers/image) disables keep-alive, tries https before http when
`--tls-verify=false` (FaultProxy closes a TLS ClientHello at once so the fallback is quick),
sends its OAuth2 refresh_token form *chunked*, ignores `credsStore` in an `--authfile`, and
drops an `auths` entry that has an `identitytoken` but no `auth`. httpx's `params=` replaces
the query of the URL (it would drop the `_state` of an upload Location).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import random
import re
import secrets
import select
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from buildgen.registry import (
    OCI_MANIFEST,
    RegistryClient,
    sha256_digest,
)

from .components import free_port

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

LOOPBACK = "127.0.0.1"
SERVICE = "buildgen-test-registry"
ISSUER = "buildgen-test-issuer"

# --------------------------------------------------------------------------------------------
# Certificates and keys (cached per process: key generation is the slow part)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    signing_cert_pem: bytes
    signing_cert_der: bytes
    signing_key_pem: bytes


@lru_cache(maxsize=1)
def _pki() -> _Pki:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pkcs8(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("buildgen test CA"))
        .issuer_name(name("buildgen test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    # Token signing: RS256 needs RSA; a self-signed certificate is the registry's rootcertbundle.
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_cert = (
        x509.CertificateBuilder()
        .subject_name(name(ISSUER))
        .issuer_name(name(ISSUER))
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(signing_key, hashes.SHA256())
    )
    return _Pki(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert_pem=server_cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=pkcs8(server_key),
        signing_cert_pem=signing_cert.public_bytes(serialization.Encoding.PEM),
        signing_cert_der=signing_cert.public_bytes(serialization.Encoding.DER),
        signing_key_pem=pkcs8(signing_key),
    )


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # PEM of the self-signed CA
    cert_file: Path  # server certificate (SAN: 127.0.0.1, localhost), signed by the CA
    key_file: Path  # its key (PKCS#8 PEM, EC P-256)
    cert_dir: Path  # a directory with only `ca.crt`: for `skopeo --cert-dir` / docker certs.d


def write_tls_files(directory: Path) -> TlsFiles:
    """Write the test CA and a server certificate for 127.0.0.1/localhost into `directory`."""
    pki = _pki()
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = directory / "ca.pem", directory / "server.crt", directory / "server.key"
    ca.write_bytes(pki.ca_pem)
    cert.write_bytes(pki.server_cert_pem)
    key.write_bytes(pki.server_key_pem)
    key.chmod(0o600)
    cert_dir = directory / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(pki.ca_pem)
    return TlsFiles(ca, cert, key, cert_dir)


def server_ssl_context() -> ssl.SSLContext:
    """A server-side SSLContext with the test server certificate (for Python test servers)."""
    pki = _pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _tempfiles(pki.server_cert_pem, pki.server_key_pem) as (cert, key):
        ctx.load_cert_chain(cert, key)
    return ctx


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@contextlib.contextmanager
def _tempfiles(*contents: bytes) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(contents):
            path = Path(tmp) / f"f{i}"
            path.write_bytes(data)
            paths.append(str(path))
        yield paths


# --------------------------------------------------------------------------------------------
# Token issuer (Docker token spec + OAuth2 grants)
# --------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, without verifying it (for assertions in tests)."""
    header, claims, _ = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(claims))


_SCOPE = re.compile(
    r"^(?P<type>[a-z0-9]+)(?:\((?P<cls>[a-z0-9]+)\))?:(?P<name>.+):(?P<actions>[^:]*)$"
)


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """'repository:foo/bar:pull,push' -> ('repository', 'foo/bar', ['pull', 'push'])."""
    match = _SCOPE.match(scope)
    if not match:
        return None
    actions = [a for a in match["actions"].split(",") if a]
    return match["type"], match["name"], actions


@dataclass
class IssuerRequest:
    method: str
    grant_type: str | None  # None for GET
    user: str | None  # the authenticated subject, None if anonymous / rejected
    scopes: list[str]
    status: int
    client_id: str | None = None


class TokenIssuer:
    """A token server on 127.0.0.1 (HTTPS with the test CA when `tls=True`).

    - `GET {realm}?service=S&scope=repository:NAME:pull,push[&scope=...][&offline_token=true]` with
      HTTP Basic credentials -> 200 `{"token", "access_token", "expires_in", "issued_at"}` (+
      `"refresh_token"` = `identity_token` when `offline_token=true`). Without or with wrong
      credentials -> 401 with `WWW-Authenticate: Basic` (unless `anonymous_actions` is set).
    - `POST {realm}` form `grant_type=password&username&password&service&scope&client_id` or
      `grant_type=refresh_token&refresh_token&service&scope&client_id` -> 200
      `{"access_token", "token_type": "Bearer", "expires_in", "issued_at", "refresh_token",
      "scope"}`; bad credentials / unknown refresh token -> 400 `{"error": "invalid_grant"}`.
      `scope` may be space-separated and/or repeated.

    Valid users get what they ask for (filtered by `acl` when set). Every issued access token is
    appended to `tokens`; `requests` counts HTTP requests; `log` keeps one `IssuerRequest` each.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        service: str = SERVICE,
        issuer: str = ISSUER,
        tls: bool = False,
        expires_in: int = 300,
    ) -> None:
        pki = _pki()
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.users: dict[str, str] = {username: password}
        self.username = username
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        # Seconds from now for the `exp` claim; None = expires_in. Distribution adds 60 s leeway.
        self.token_lifetime: int | None = None
        # Identity (refresh) token the issuer accepts for `username` in grant_type=refresh_token.
        self.identity_token = "idt-" + secrets.token_urlsafe(24)
        self.refresh_tokens: dict[str, str] = {self.identity_token: username}
        # repository name -> allowed actions (fnmatch patterns allowed as keys); None = anything.
        self.acl: dict[str, set[str]] | None = None
        # Actions granted to anonymous GETs (e.g. {"pull"}); None = anonymous gets 401.
        self.anonymous_actions: set[str] | None = None
        self.tokens: list[str] = []
        self.requests = 0
        self.log: list[IssuerRequest] = []
        self._lock = threading.Lock()
        self._key = cast("RSAPrivateKey", load_pem_private_key(pki.signing_key_pem, None))
        self._x5c = [base64.b64encode(pki.signing_cert_der).decode()]
        self.signing_cert_pem = pki.signing_cert_pem

        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self.tls = tls
        if tls:
            self._server.socket = server_ssl_context().wrap_socket(
                self._server.socket, server_side=True
            )
        self.port = int(self._server.server_address[1])
        scheme = "https" if tls else "http"
        self.realm = f"{scheme}://{LOOPBACK}:{self.port}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="token-issuer", daemon=True
        )
        self._thread.start()

    # -- token minting ------------------------------------------------------------------------

    def _granted(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        import fnmatch

        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            rtype, name, wanted = parsed
            allowed: set[str]
            if user is None:
                allowed = self.anonymous_actions or set()
            elif self.acl is None:
                allowed = set(wanted)
            else:
                allowed = set()
                for pattern, actions in self.acl.items():
                    if fnmatch.fnmatchcase(name, pattern):
                        allowed |= actions
            granted = [a for a in wanted if a in allowed or "*" in allowed]
            access.append({"type": rtype, "name": name, "actions": granted})
        return access

    def mint(self, user: str | None, scopes: Iterable[str]) -> str:
        """A signed JWT for `user` with the granted subset of `scopes` (recorded in `tokens`)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        lifetime = self.expires_in if self.token_lifetime is None else self.token_lifetime
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": self._granted(user, scopes),
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = signing_input + "." + _b64url(signature)
        with self._lock:
            self.tokens.append(token)
        return token

    def _check_basic(self, header: str | None) -> tuple[bool, str | None]:
        """(credentials present, valid user or None)."""
        if not header or not header.lower().startswith("basic "):
            return False, None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return True, None
        if user in self.users and secrets.compare_digest(self.users[user], password):
            return True, user
        return True, None

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _record(self, entry: IssuerRequest) -> None:
                with issuer._lock:
                    issuer.requests += 1
                    issuer.log.append(entry)

            def _success(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
                token = issuer.mint(user, scopes)
                issued = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                return {
                    "token": token,
                    "access_token": token,
                    "expires_in": issuer.expires_in,
                    "issued_at": issued,
                }

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
                present, user = issuer._check_basic(self.headers.get("Authorization"))
                if url.path != "/token":
                    self._record(IssuerRequest("GET", None, None, scopes, 404))
                    self._reply(404, {"error": "not found"}, {})
                    return
                if user is None and (present or issuer.anonymous_actions is None):
                    self._record(IssuerRequest("GET", None, None, scopes, 401))
                    self._reply(
                        401,
                        {
                            "errors": [
                                {"code": "UNAUTHORIZED", "message": "authentication required"}
                            ]
                        },
                        {"WWW-Authenticate": 'Basic realm="buildgen-test-issuer"'},
                    )
                    return
                body = self._success(user, scopes)
                if user is not None and query.get("offline_token", [""])[0] == "true":
                    body["refresh_token"] = issuer.identity_token
                client_id = query.get("client_id", [None])[0]
                self._record(IssuerRequest("GET", None, user, scopes, 200, client_id))
                self._reply(200, body, {})

            def do_POST(self) -> None:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    # containers/image (skopeo) sends its OAuth2 form chunked.
                    sink = io.BytesIO()
                    _copy_chunked(self.rfile, sink.write)
                    raw = _dechunk(sink.getvalue())
                else:
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = urllib.parse.parse_qs(raw.decode())

                def one(key: str) -> str | None:
                    values = form.get(key)
                    return values[0] if values else None

                scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
                grant = one("grant_type")
                client_id = one("client_id")
                user: str | None = None
                refresh: str | None = None
                if grant == "password":
                    name, password = one("username"), one("password")
                    if (
                        name in issuer.users
                        and password is not None
                        and secrets.compare_digest(issuer.users[name], password)
                    ):
                        user, refresh = name, issuer.identity_token
                elif grant == "refresh_token":
                    refresh = one("refresh_token")
                    user = issuer.refresh_tokens.get(refresh or "")
                else:
                    self._record(IssuerRequest("POST", grant, None, scopes, 400, client_id))
                    self._reply(400, {"error": "unsupported_grant_type"}, {})
                    return
                if urllib.parse.urlsplit(self.path).path != "/token" or user is None:
                    self._record(IssuerRequest("POST", grant, None, scopes, 400, client_id))
                    self._reply(400, {"error": "invalid_grant"}, {})
                    return
                body = self._success(user, scopes)
                del body["token"]
                body.update(token_type="Bearer", refresh_token=refresh, scope=" ".join(scopes))
                self._record(IssuerRequest("POST", grant, user, scopes, 200, client_id))
                self._reply(200, body, {})

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --------------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------------


@dataclass
class RunningRegistry:
    """A `docker-registry serve` on 127.0.0.1.

    `host` is "127.0.0.1:PORT" in every mode (with TLS the certificate has an IP SAN for
    127.0.0.1 and a DNS SAN for localhost, so `localhost` = "localhost:PORT" verifies too).
    """

    host: str
    url: str
    username: str | None
    password: str | None
    ca_file: Path | None
    workdir: Path
    issuer: TokenIssuer | None
    process: subprocess.Popen[bytes]
    port: int
    auth: str | None = None
    tls: TlsFiles | None = None
    config_file: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def localhost(self) -> str:
        return f"localhost:{self.port}"

    @property
    def cert_dir(self) -> Path | None:
        """A directory holding only `ca.crt` (for `skopeo --cert-dir`), when TLS is on."""
        return self.tls.cert_dir if self.tls else None

    @property
    def creds(self) -> str:
        """'user:password' for `skopeo --creds`."""
        return f"{self.username}:{self.password}"

    @property
    def log_text(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def secrets(self) -> list[str]:
        """Strings that must never appear in a program's output: the password, every token the
        issuer handed out so far and its identity (refresh) token."""
        found = [self.password] if self.password else []
        if self.issuer is not None:
            found += [self.issuer.identity_token, *self.issuer.tokens]
        return found

    def ssl_context(self) -> ssl.SSLContext | None:
        return client_ssl_context(self.ca_file) if self.ca_file else None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.issuer is not None:
            self.issuer.stop()


def _htpasswd_line(username: str, password: str) -> str:
    import bcrypt

    # distribution 2.8 reads only bcrypt entries; Go accepts the $2b$ prefix. Cost 4 = fastest.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{username}:{hashed}\n"


def start_registry(
    workdir: Path,
    *,
    auth: Literal[None, "htpasswd", "token"] = None,
    tls: bool = False,
    username: str = "alice",
    password: str = "s3cret-pa55word",
    proxy_remote: str | None = None,
    proxy_username: str | None = None,
    proxy_password: str | None = None,
    proxy_ca_file: Path | None = None,
    issuer_tls: bool | None = None,
    timeout: float = 20,
) -> RunningRegistry:
    """Start distribution 2.8 on 127.0.0.1 and wait until `/v2/` answers (401 counts as up).

    auth="htpasswd": Basic auth against a bcrypt htpasswd file (realm "buildgen-test").
    auth="token": Bearer auth via a `TokenIssuer` (served over HTTPS when `issuer_tls`, which
    defaults to `tls`).
    proxy_remote: pull-through mirror of that URL (`proxy_username/password` are the mirror's
    credentials for the remote; `proxy_ca_file` is exported as SSL_CERT_FILE for an https remote).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{LOOPBACK}:{port}", "secret": secrets.token_hex(16)},
    }
    tls_files: TlsFiles | None = None
    if tls:
        tls_files = write_tls_files(workdir / "tls")
        config["http"]["tls"] = {
            "certificate": str(tls_files.cert_file),
            "key": str(tls_files.key_file),
        }
    issuer: TokenIssuer | None = None
    if auth == "htpasswd":
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(_htpasswd_line(username, password))
        config["auth"] = {"htpasswd": {"realm": "buildgen-test", "path": str(htpasswd)}}
    elif auth == "token":
        issuer = TokenIssuer(username, password, tls=tls if issuer_tls is None else issuer_tls)
        bundle = workdir / "token-signing.pem"
        bundle.write_bytes(issuer.signing_cert_pem)
        config["auth"] = {
            "token": {
                "realm": issuer.realm,
                "service": issuer.service,
                "issuer": issuer.issuer,
                "rootcertbundle": str(bundle),
            }
        }
    elif auth is not None:
        raise ValueError(f"unknown auth {auth!r}")
    if proxy_remote:
        proxy: dict[str, str] = {"remoteurl": proxy_remote}
        if proxy_username is not None:
            proxy["username"] = proxy_username
            proxy["password"] = proxy_password or ""
        config["proxy"] = proxy

    config_file = workdir / "config.yml"
    config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
    env = dict(os.environ)
    if proxy_ca_file is not None:
        env["SSL_CERT_FILE"] = str(proxy_ca_file)
    with (workdir / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    scheme = "https" if tls else "http"
    reg = RunningRegistry(
        host=f"{LOOPBACK}:{port}",
        url=f"{scheme}://{LOOPBACK}:{port}",
        username=username if auth else None,
        password=password if auth else None,
        ca_file=tls_files.ca_file if tls_files else None,
        workdir=workdir,
        issuer=issuer,
        process=process,
        port=port,
        auth=auth,
        tls=tls_files,
        config_file=config_file,
    )
    try:
        _wait_up(reg, timeout)
    except BaseException:
        reg.stop()
        raise
    return reg


def _wait_up(reg: RunningRegistry, timeout: float) -> None:
    context = reg.ssl_context()
    deadline = time.monotonic() + timeout
    while True:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited {reg.process.returncode}: {reg.log_text}")
        try:
            with urllib.request.urlopen(f"{reg.url}/v2/", timeout=1, context=context):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not answer within {timeout} s: {reg.log_text}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Fault-injecting proxy
# --------------------------------------------------------------------------------------------

FAULT_KINDS = ("503", "429", "reset", "latency", "reset-after")


class _Closed(Exception):
    """The peer closed the connection."""


def _buffered_reader(sock: socket.socket) -> io.BufferedReader:
    return cast(io.BufferedReader, sock.makefile("rb", buffering=1 << 16))


def _read_head(reader: io.BufferedIOBase) -> list[bytes] | None:
    """Request/status line + header lines (without CRLF); None on EOF before any byte."""
    lines: list[bytes] = []
    while True:
        line = reader.readline(65537)
        if not line:
            if lines:
                raise _Closed("EOF inside a message head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerate stray CRLF between messages (RFC 9112 2.2)
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.rstrip(b"\r\n"))
        if len(lines) > 200:
            raise _Closed("too many header lines")


def _headers(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        out.append((name.strip(), value.strip()))
    return out


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _tokens(headers: list[tuple[str, str]], name: str) -> set[str]:
    name = name.lower()
    return {
        t.strip().lower()
        for k, v in headers
        if k.lower() == name
        for t in v.split(",")
        if t.strip()
    }


def _copy_exact(src: io.BufferedIOBase, send: Callable[[bytes], Any], n: int) -> None:
    while n > 0:
        chunk = src.read1(min(n, 1 << 16))
        if not chunk:
            raise _Closed("EOF inside a body")
        send(chunk)
        n -= len(chunk)


def _copy_chunked(src: io.BufferedIOBase, send: Callable[[bytes], Any]) -> None:
    while True:
        line = src.readline(65537)
        if not line:
            raise _Closed("EOF inside a chunked body")
        send(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = src.readline(65537)
                if not trailer:
                    raise _Closed("EOF inside chunked trailers")
                send(trailer)
                if trailer in (b"\r\n", b"\n"):
                    return
        _copy_exact(src, send, size + 2)


def _dechunk(data: bytes) -> bytes:
    """The payload of a complete chunked body."""
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def _copy_until_eof(src: io.BufferedIOBase, send: Callable[[bytes], Any]) -> None:
    while True:
        chunk = src.read1(1 << 16)
        if not chunk:
            return
        send(chunk)


def _discard(_: bytes) -> None:
    pass


def _rst(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Upstream:
    def __init__(self, addr: tuple[str, int], timeout: float) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _buffered_reader(self.sock)

    def alive(self) -> bool:
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable  # an idle keep-alive connection is readable only at EOF/error

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class FaultProxy:
    """A TCP-level HTTP/1.1 reverse proxy on 127.0.0.1 in front of an upstream registry host,
    injecting faults into a fraction of requests.

    Fault kinds (one is chosen per faulted request with a seeded `random.Random`):
    - "503": answer 503 + distribution JSON error `UNAVAILABLE` without forwarding;
    - "429": answer 429 + `Retry-After: <retry_after>` + `TOOMANYREQUESTS` without forwarding;
    - "reset": read the request head, then close the client connection with a TCP RST;
    - "latency": sleep `latency` s, then forward normally (also counted as "forwarded");
    - "reset-after" (not in the default kinds): forward the request, let the upstream complete it,
      then RST the client instead of relaying the response (a PUT that succeeded but the client
      saw a reset).
    `added_latency` is slept before EVERY request. `inject(kind, n)` forces the next n requests to
    fail with `kind` regardless of rate; `only(method, path) -> bool` restricts random faults.

    `stats` counts "connections", "requests", each kind, "forwarded" (counted when the upstream's
    answer starts to be relayed) and "upstream_error"; `log` keeps (method, path, outcome) per
    request where outcome is a kind or "forwarded". Outcomes are counted before the client gets
    its answer, so a client that just finished sees its own request in `stats`.
    The client's Host header is passed through (distribution then builds upload URLs for the
    proxy itself); a `Location` naming the upstream is rewritten to the proxy anyway.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.1,
        seed: int = 0,
        kinds: Sequence[str] = ("503", "429", "reset", "latency"),
        retry_after: float = 1,
        latency: float = 0.2,
        added_latency: float = 0.0,
        only: Callable[[str, str], bool] | None = None,
        upstream_timeout: float = 60,
    ) -> None:
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown fault kinds {bad}; choose from {FAULT_KINDS}")
        up_host, _, up_port = upstream.rpartition(":")
        if up_host not in (LOOPBACK, "localhost"):
            raise ValueError(f"FaultProxy only connects to 127.0.0.1, not {upstream!r}")
        self.upstream = upstream
        self._up_addr = (LOOPBACK, int(up_port))
        self.kinds = tuple(kinds)
        self.retry_after = retry_after
        self.latency = latency
        self.added_latency = added_latency
        self.only = only
        self.upstream_timeout = upstream_timeout
        self._rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._forced: deque[str] = deque()
        self.stats: dict[str, int] = dict.fromkeys(
            ("connections", "requests", *FAULT_KINDS, "forwarded", "upstream_error"), 0
        )
        self.log: list[tuple[str, str, str]] = []
        self._links: set[_Link] = set()
        self._threads: set[threading.Thread] = set()
        self._closing = False

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        self.host = f"{LOOPBACK}:{self.port}"
        self.url = f"http://{self.host}"
        self._upstream_prefixes = [f"http://{h}:{up_port}" for h in (LOOPBACK, "localhost")]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()

    # -- control ------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._rate = rate

    def set_kinds(self, kinds: Sequence[str]) -> None:
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown fault kinds {bad}")
        with self._lock:
            self.kinds = tuple(kinds)

    def inject(self, kind: str, count: int = 1) -> None:
        """Fail the next `count` requests with `kind`, whatever the rate."""
        if kind not in FAULT_KINDS:
            raise ValueError(kind)
        with self._lock:
            self._forced.extend([kind] * count)

    def reset_stats(self) -> None:
        with self._lock:
            for key in self.stats:
                self.stats[key] = 0
            self.log.clear()

    def stop(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links = list(self._links)
            threads = list(self._threads)
        for link in links:
            link.shutdown()
        self._accept_thread.join(5)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- machinery ----------------------------------------------------------------------------

    def _record(self, key: str, method: str, path: str, *, log: bool = True) -> None:
        with self._lock:
            self.stats[key] += 1
            if log:
                self.log.append((method, path, key))

    def _choose(self, method: str, path: str) -> str | None:
        with self._lock:
            self.stats["requests"] += 1
            draw, pick = self._rng.random(), self._rng.randrange(len(self.kinds))
            if self._forced:
                return self._forced.popleft()
            if self.only is not None and not self.only(method, path):
                return None
            return self.kinds[pick] if draw < self._rate else None

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(conn, _buffered_reader(conn))
            thread = threading.Thread(target=self._serve, args=(link,), daemon=True)
            with self._lock:
                self.stats["connections"] += 1
                self._links.add(link)
                self._threads.add(thread)
            thread.start()

    def _simple_response(
        self, conn: socket.socket, method: str, status: int, code: str, extra: str, close: bool
    ) -> None:
        message = f"{HTTPStatus(status).phrase.lower()} (injected by FaultProxy)"
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
        data = body.encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            "Docker-Distribution-Api-Version: registry/2.0\r\n"
            f"Content-Length: {len(data)}\r\n{extra}"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        conn.sendall(head.encode() + (b"" if method == "HEAD" else data))

    def _serve(self, link: _Link) -> None:
        """One client connection: requests in sequence (keep-alive) until one side closes."""
        try:
            if link.reader.peek(1)[:1] == b"\x16":
                # A TLS ClientHello (clients like skopeo try https first): close at once, as a
                # plain-HTTP server would fail the handshake, so the client falls back to http.
                return
            while not self._closing and self._one_request(link):
                pass
        except (_Closed, OSError, ValueError):
            pass
        finally:
            link.close()
            with self._lock:
                self._links.discard(link)
                self._threads.discard(threading.current_thread())

    def _one_request(self, link: _Link) -> bool:
        """Handle one request on `link`; True to keep the client connection for the next one."""
        head = _read_head(link.reader)
        if head is None:
            return False
        parts = head[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            return False
        method, target, version = parts
        headers = _headers(head)
        conn_tokens = _tokens(headers, "connection")
        if version == "HTTP/1.0":
            keepalive = "keep-alive" in conn_tokens
        else:
            keepalive = "close" not in conn_tokens
        chunked = "chunked" in _tokens(headers, "transfer-encoding")
        length = 0 if chunked else int(_get(headers, "content-length") or 0)
        expect = (_get(headers, "expect") or "").lower() == "100-continue"

        if self.added_latency:
            time.sleep(self.added_latency)
        fault = self._choose(method, target)

        if fault in ("503", "429"):
            # With Expect: 100-continue the body never comes: answer and close.
            close = expect or not keepalive
            if not expect:
                if chunked:
                    _copy_chunked(link.reader, _discard)
                else:
                    _copy_exact(link.reader, _discard, length)
            self._record(fault, method, target)  # before answering: the client may exit at once
            if fault == "503":
                self._simple_response(link.conn, method, 503, "UNAVAILABLE", "", close)
            else:
                retry = f"Retry-After: {self.retry_after:g}\r\n"
                self._simple_response(link.conn, method, 429, "TOOMANYREQUESTS", retry, close)
            return not close
        if fault == "reset":
            self._record("reset", method, target)
            link.reset = True
            return False
        if fault == "latency":
            time.sleep(self.latency)

        # ---- forward the request ----
        if expect:
            link.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        out = [head[0]] + [line for line in head[1:] if not line.lower().startswith(b"expect:")]
        try:
            if link.upstream is None or not link.upstream.alive():
                link.drop_upstream()
                link.upstream = _Upstream(self._up_addr, self.upstream_timeout)
            upstream = link.upstream
            upstream.sock.sendall(b"\r\n".join(out) + b"\r\n\r\n")
            if chunked:
                _copy_chunked(link.reader, upstream.sock.sendall)
            elif length:
                _copy_exact(link.reader, upstream.sock.sendall, length)
            while True:
                resp = _read_head(upstream.reader)
                if resp is None:
                    raise _Closed("upstream closed before answering")
                status = int(resp[0].split(b" ")[1])
                if status >= 200 or status == 101:
                    break
                if status != 100:  # a 100 was sent by us already
                    link.conn.sendall(b"\r\n".join(resp) + b"\r\n\r\n")
        except (_Closed, OSError, ValueError, IndexError):
            self._record("upstream_error", method, target)
            link.drop_upstream()
            with contextlib.suppress(OSError):  # best effort: the request body may be half read
                self._simple_response(link.conn, method, 502, "UNAVAILABLE", "", close=True)
            return False

        # ---- relay the response ----
        resp_headers = _headers(resp)
        resp_lines = [resp[0]]
        for line, (name, value) in zip(resp[1:], resp_headers, strict=True):
            if name.lower() == "location":
                value = self._rewrite_location(value)
                line = f"{name}: {value}".encode("latin-1")
            resp_lines.append(line)
        if method == "HEAD" or status in (204, 304):
            framing = "none"
        elif "chunked" in _tokens(resp_headers, "transfer-encoding"):
            framing = "chunked"
        elif _get(resp_headers, "content-length") is not None:
            framing = "length"
        else:
            framing = "eof"
        upstream_closes = framing == "eof" or "close" in _tokens(resp_headers, "connection")

        if fault != "reset-after":
            # counted once the upstream answered, before relaying (the client may exit at once)
            self._record("forwarded", method, target, log=fault != "latency")
            if fault == "latency":
                self._record("latency", method, target)
        send: Callable[[bytes], Any] = _discard if fault == "reset-after" else link.conn.sendall
        send(b"\r\n".join(resp_lines) + b"\r\n\r\n")
        try:
            if framing == "chunked":
                _copy_chunked(upstream.reader, send)
            elif framing == "length":
                size = int(_get(resp_headers, "content-length") or 0)
                _copy_exact(upstream.reader, send, size)
            elif framing == "eof":
                _copy_until_eof(upstream.reader, send)
        except _Closed:
            self._record("upstream_error", method, target)
            link.drop_upstream()
            return False  # the response was cut short: closing tells the client
        if upstream_closes:
            link.drop_upstream()
        if fault == "reset-after":
            self._record("reset-after", method, target)
            link.reset = True
            return False
        return keepalive and not upstream_closes

    def _rewrite_location(self, value: str) -> str:
        for prefix in self._upstream_prefixes:
            if value.startswith(prefix):
                return self.url + value[len(prefix) :]
        return value


class _Link:
    """A client connection and the upstream connection serving it."""

    def __init__(self, conn: socket.socket, reader: io.BufferedReader) -> None:
        self.conn = conn
        self.reader = reader
        self.upstream: _Upstream | None = None
        self.reset = False

    def drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def shutdown(self) -> None:
        """Wake up a thread blocked on either socket (FaultProxy.stop)."""
        socks = [self.conn] + ([self.upstream.sock] if self.upstream else [])
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        self.drop_upstream()
        if self.reset:
            _rst(self.conn)
        else:
            with contextlib.suppress(OSError):
                self.conn.close()


# --------------------------------------------------------------------------------------------
# Docker client configuration
# --------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_docker_config(
    directory: Path,
    auths: dict[str, tuple[str, str]] | None = None,
    creds_store: str | None = None,
    cred_helpers: dict[str, str] | None = None,
    identity_tokens: dict[str, str] | None = None,
) -> Path:
    """Write `directory/config.json` like the docker CLI does and return `directory` (DOCKER_CONFIG).

    auths: host -> (user, password) as `{"auth": base64("user:password")}`.
    identity_tokens: host -> identity token as `{"auth": base64("<token>:"), "identitytoken": T}`
    (the docker CLI writes base64("USER:") there; containers/image/skopeo drops an entry whose
    `auth` is missing, so one is always written). When the host is also in `auths`, that `auth`
    is kept and `identitytoken` is added next to it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"auths": {}}
    for host, (user, password) in (auths or {}).items():
        config["auths"][host] = {"auth": _b64(f"{user}:{password}")}
    for host, token in (identity_tokens or {}).items():
        # containers/image ignores an entry without a decodable "auth"; docker writes "user:".
        entry = config["auths"].setdefault(host, {"auth": _b64("<token>:")})
        entry["identitytoken"] = token
    if creds_store is not None:
        config["credsStore"] = creds_store
    if cred_helpers:
        config["credHelpers"] = dict(cred_helpers)
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return directory


_HELPER = r'''#!{python}
"""docker-credential-{name}: a test credential helper (docker-credential-helpers protocol).
Its store is {store!r}; each call appends "ACTION SERVER" to {log!r}."""
import json, sys

STORE, LOG = {store!r}, {log!r}
NOT_FOUND = "credentials not found in native keychain"


def load():
    with open(STORE) as f:
        return json.load(f)


def save(creds):
    with open(STORE, "w") as f:
        json.dump(creds, f)


def norm(url):
    url = url.strip()
    for scheme in ("https://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    return url.split("/", 1)[0]


def find(creds, url):
    if url in creds:
        return url
    for key in creds:
        if norm(key) == norm(url):
            return key
    return None


def main():
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    data = sys.stdin.read() if action in ("get", "store", "erase") else ""
    with open(LOG, "a") as f:
        f.write(f"{{action}} {{data.strip() if action != 'store' else json.loads(data)['ServerURL']}}\n")
    creds = load()
    if action == "get":
        key = find(creds, data.strip())
        if key is None:
            print(NOT_FOUND)
            return 1
        user, secret = creds[key]
        print(json.dumps({{"ServerURL": key, "Username": user, "Secret": secret}}))
        return 0
    if action == "list":
        print(json.dumps({{k: v[0] for k, v in creds.items()}}))
        return 0
    if action == "store":
        entry = json.loads(data)
        creds[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
        save(creds)
        return 0
    if action == "erase":
        key = find(creds, data.strip())
        if key is None:
            print(NOT_FOUND)
            return 1
        del creds[key]
        save(creds)
        return 0
    if action == "version":
        print("docker-credential-{name} (buildgen tests) 0.1")
        return 0
    print(f"unknown action: {{action}}")
    return 1


sys.exit(main())
'''


def write_credential_helper(bin_dir: Path, name: str, creds: dict[str, tuple[str, str]]) -> Path:
    """Write an executable `bin_dir/docker-credential-NAME` (put bin_dir on PATH).

    creds: server URL -> (username, secret). Username "<token>" means the secret is an identity
    token (Docker's convention); the helper just returns it. `get` matches the exact server URL,
    then by host (scheme and path ignored). `store`/`erase` persist to
    `bin_dir/.docker-credential-NAME.json`; every call is logged (action + server URL, never the
    secret) to `bin_dir/docker-credential-NAME.log`.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad helper name {name!r}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    store = bin_dir / f".docker-credential-{name}.json"
    log = bin_dir / f"docker-credential-{name}.log"
    store.write_text(json.dumps({k: list(v) for k, v in creds.items()}))
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        _HELPER.format(python=sys.executable, name=name, store=str(store), log=str(log))
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def helper_calls(bin_dir: Path, name: str) -> list[str]:
    """The logged calls ("get 127.0.0.1:5000", ...) of a helper written by write_credential_helper."""
    log = bin_dir / f"docker-credential-{name}.log"
    return log.read_text().splitlines() if log.exists() else []


# --------------------------------------------------------------------------------------------
# Tiny images
# --------------------------------------------------------------------------------------------


def make_oci_layout(
    directory: Path,
    files: dict[str, bytes] | None = None,
    *,
    tag: str = "latest",
    arch: str = "amd64",
) -> str:
    """Write a one-layer linux/`arch` image into the OCI layout `directory` (adding to its index)
    and return the skopeo reference "oci:DIR:TAG"."""
    files = files if files is not None else {"hello.txt": f"hello from {tag}\n".encode()}
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    layer_digest, layer_size = put(gzip.compress(tar_bytes, mtime=0))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()],
        },
    }
    config_digest, config_size = put(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = put(json.dumps(manifest, sort_keys=True).encode())
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_file = directory / "index.json"
    index: dict[str, Any] = (
        json.loads(index_file.read_text())
        if index_file.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_file.write_text(json.dumps(index))
    return f"oci:{directory}:{tag}"


def tools_missing(*tools: str) -> str | None:
    """A reason if one of `tools` is not on PATH (pass it to conftest.missing)."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {tool})"
    return None


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
