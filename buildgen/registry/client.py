"""An OCI distribution client on httpx: manifests, blobs and tags, for publish and pull.

One `RegistryClient` serves a whole run from many threads:

- one shared `httpx.Client` (HTTP/1.1, keep-alive) on the http.client transport of
  `transport.py` (httpcore's pure-Python HTTP/1.1 cost most of the CPU of a small request),
  whose pool keeps up to `max_connections` idle connections per host; httpx's own transport
  serves the hosts an environment proxy (HTTP(S)_PROXY, ALL_PROXY, less NO_PROXY) applies to.
  A semaphore of `max_connections` around every request bounds those in flight, so further
  callers queue instead of failing on a pool timeout;
- manifest HEADs and GETs (one per image in `lock`) first try `StdlibTransport.quick` on an
  idle pooled connection, without httpx's request and response objects; anything but a plain
  answer (200, or 404 to a HEAD) is sent again the full way below;
- per registry host, the scheme and the auth challenge are learnt once (GET /v2/) and tokens are
  cached per scope set until shortly before they expire;
- every request goes through the retry policy of `retry.py`;
- `ensure_blob` handles each (repository, digest) once per client, however many threads ask.

Transport security: https always; plain http only for loopback hosts and hosts listed in
`RegistryOptions.insecure`, which are tried over https first (as docker does) and over http when
they answer https with something that is not TLS. A certificate that does not verify is an error,
never a reason to fall back.
"""

from __future__ import annotations

import collections
import logging
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn, TypeAlias

import httpx

from buildgen import __version__

from . import fanout
from .auth import (
    Challenge,
    Credentials,
    DockerCredentials,
    Scopes,
    Token,
    TokenCache,
    merge_scopes,
    parse_challenges,
    parse_token_response,
    pick_challenge,
    repository_scope,
    token_request,
)
from .errors import AuthError, NotFound, Redactor, RegistryError
from .media import (
    MANIFEST_ACCEPT,
    Descriptor,
    Manifest,
    base_media_type,
    check_digest,
    check_reference,
    digest_of,
    hasher,
    is_digest,
    sha256_digest,
)
from .reference import Repository, allows_plain_http, login_hint, parse_repository
from .retry import (
    BLOB_UNKNOWN_RETRIES,
    RETRYABLE_STATUSES,
    RetryPolicy,
    certificate_error,
    is_transient_error,
    tls_error,
)
from .transport import ProxyRouter, StdlibTransport, endpoint, environment_proxies

log = logging.getLogger(__name__)
_USER_AGENT = f"buildgen/{__version__}"
# Manifests up to this size may take the fast path (registries refuse manifests over 4 MiB).
MAX_QUICK_MANIFEST = 4 << 20

CHUNK_SIZE = 1 << 16
# A blob copied between repositories is kept in memory up to this size, on disk beyond it.
SPOOL_MEMORY = 16 << 20

# A request body: bytes, or a callable giving a fresh iterator of chunks for every attempt.
Body: TypeAlias = bytes | Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class RegistryOptions:
    """How a `RegistryClient` connects, retries and authenticates."""

    insecure: tuple[str, ...] = ()
    """Extra host[:port]s allowed over plain http (loopback hosts always are)."""
    ca_bundle: str | None = None
    """A PEM file of CA certificates to verify TLS with (default: the system's store)."""
    timeout: float = 30.0
    """Seconds for connecting, and between bytes read or written."""
    max_connections: int = 16
    """Connection pool size, and the number of requests in flight at once."""
    retries: int = 6
    """Retries of a transient failure, after the first attempt."""
    backoff: float = 0.2
    """Base of the exponential backoff, in seconds."""
    max_backoff: float = 10.0
    """Ceiling of one backoff sleep, in seconds."""
    max_retry_after: float = 60.0
    """Ceiling on a registry's Retry-After, in seconds."""
    docker_config: str | None = None
    """Directory with Docker's config.json (default: $DOCKER_CONFIG, else ~/.docker)."""
    tags_page_size: int = 1000
    """Tags asked for per page (`?n=`) when listing tags."""

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        if self.tags_page_size < 1:
            raise ValueError("tags_page_size must be at least 1")


@dataclass
class _Host:
    """What the client has learnt about one registry host."""

    registry: str
    api_host: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False
    base: str = ""
    challenge: Challenge | None = None


@dataclass(frozen=True)
class _Answer:
    """A manifest request's answer, from either path: headers have lower-case names."""

    repo: Repository
    url: str
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Prepared:
    """A manifest request, ready for either path."""

    repo: Repository
    host: _Host
    reference: str
    url: str
    scopes: Scopes
    headers: list[tuple[str, str]]
    etag: str | None = None  # sent as If-None-Match


def _condition(etag: str | None) -> dict[str, str]:
    """The header that asks whether a tag still points at the digest `etag`."""
    return {} if etag is None else {"If-None-Match": f'"{etag}"'}


def _told(answer: _Answer, reference: str) -> Descriptor | None:
    """The descriptor a HEAD answer tells in its headers, or None when it does not tell all."""
    digest = answer.headers.get("docker-content-digest", "")
    length = answer.headers.get("content-length", "")
    media_type = base_media_type(answer.headers.get("content-type"))
    if not is_digest(digest) and is_digest(reference):
        digest = reference
    if not is_digest(digest) or not length.isdigit() or not media_type:
        return None
    return Descriptor(digest=digest, media_type=media_type, size=int(length))


def _statuses(method: str, missing_ok: bool, etag: str | None) -> tuple[int, ...]:
    """The answers to a manifest request: 200; 404 to a HEAD (or to a GET when `missing_ok`);
    304 when asked with If-None-Match."""
    found = (200, 404) if method == "HEAD" or missing_ok else (200,)
    return (*found, 304) if etag is not None else found


class _StreamBroken(RegistryError):
    """The connection failed while a blob was being read (worth fetching again)."""


class _BodySizeError(RegistryError):
    """An upload body was not the size announced."""


def _ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
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


def _default_transport(limits: httpx.Limits, opts: RegistryOptions) -> httpx.BaseTransport:
    """The StdlibTransport (see transport.py); requests that an environment proxy applies to
    (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, less NO_PROXY) keep httpx's own transport, which
    speaks to proxies.

    The TLS context is made at the first TLS connection (a CA store takes ~50 ms to load, which
    plain-http registries never need), except that a `ca_bundle` given is loaded at once (a bad
    one is an error before anything else) and proxies get it at once too."""
    bundle = opts.ca_bundle
    context = _ssl_context(bundle) if bundle is not None else None
    direct = StdlibTransport(
        ssl_context=context if context is not None else lambda: _ssl_context(None),
        timeout=opts.timeout,
        max_idle=opts.max_connections,
        keepalive_expiry=limits.keepalive_expiry,
    )
    proxies = environment_proxies()
    if not proxies:
        return direct
    shared = direct.ssl_context

    def proxied(url: str) -> httpx.BaseTransport:
        return httpx.HTTPTransport(verify=shared, limits=limits, proxy=url)

    return ProxyRouter(direct, proxies, proxied)


def _error_details(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    """The error codes of a registry's error body, and a short text of codes and messages."""
    codes: list[str] = []
    parts: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        for item in errors:
            if not isinstance(item, dict):
                continue
            code = str(item.get("code") or "")
            message = str(item.get("message") or "")
            detail = item.get("detail")
            if code:
                codes.append(code)
            text = ": ".join(p for p in (code, message) if p)
            if detail not in (None, "", {}, []):
                text += f" ({str(detail)[:200]})"
            parts.append(text)
    elif response.content and "json" not in response.headers.get("Content-Type", ""):
        parts.append(response.text[:200].strip())
    return tuple(codes), "; ".join(p for p in parts if p)


def _sized(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """`chunks`, checked to add up to exactly `size` bytes."""
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise _BodySizeError(f"the upload body is larger than its declared size {size}")
        if chunk:
            yield bytes(chunk)
    if sent != size:
        raise _BodySizeError(f"the upload body has {sent} bytes, not its declared size {size}")


class RegistryClient:
    """A thread-safe client for OCI distribution registries.

    `repository` arguments are full names, "host[:port]/path/name"; a name without a host is on
    Docker Hub. Malformed names, tags and digests raise ValueError; registry failures raise
    `RegistryError` (`NotFound`, `AuthError`).

    `stats` counts HTTP requests by kind: "HEAD manifest", "GET manifest", "PUT manifest",
    "HEAD blob", "GET blob", "POST blob" (upload starts and mounts), "PUT blob", "DELETE upload",
    "GET tags", "token", "ping" (GET /v2/, once per host, twice when https is tried first); and
    "retry" counts retries of any kind. ("PATCH blob" stays 0: uploads are monolithic.)
    """

    def __init__(
        self,
        options: RegistryOptions | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`transport` and `sleep` are for tests (e.g. an httpx.MockTransport, no real waits);
        without `transport`, requests go through transport.StdlibTransport (and httpx's own
        transport for hosts an environment proxy applies to)."""
        self.options = options or RegistryOptions()
        opts = self.options
        self.policy = RetryPolicy(
            retries=opts.retries,
            backoff=opts.backoff,
            max_backoff=opts.max_backoff,
            max_retry_after=opts.max_retry_after,
        )
        self.stats: collections.Counter[str] = collections.Counter()
        self._stats_lock = threading.Lock()
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(opts.max_connections)
        self._redact = Redactor()
        self._credentials = DockerCredentials(opts.docker_config)
        self._tokens = TokenCache()
        self._hosts: dict[str, _Host] = {}
        self._hosts_lock = threading.Lock()
        self._ensured: set[tuple[str, str, str]] = set()
        self._ensure_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._ensure_lock = threading.Lock()
        limits = httpx.Limits(
            max_connections=opts.max_connections,
            max_keepalive_connections=opts.max_connections,
        )
        chosen = transport if transport is not None else _default_transport(limits, opts)
        # Manifest HEADs (one per image in `lock`) skip httpx on the direct transport.
        self._quick = chosen if isinstance(chosen, StdlibTransport) else None
        self._http = httpx.Client(
            transport=chosen,
            # Used only by transports httpx makes itself, which it does not here (ours are given).
            verify=True,
            timeout=httpx.Timeout(
                connect=opts.timeout, read=opts.timeout, write=opts.timeout, pool=opts.timeout
            ),
            limits=limits,
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- manifests ---------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest or index, or None when the registry does not have it."""
        answer = self._manifest_request("HEAD", repository, reference)
        return self._descriptors([answer], [(repository, reference)], workers=1)[0]

    def head_manifests(
        self, items: Sequence[tuple[str, str]], *, workers: int = 16
    ) -> list[Descriptor | None]:
        """`head_manifest` of each (repository, reference), many at once (`_manifest_requests`)."""
        answers = self._manifest_requests("HEAD", items, workers)
        return self._descriptors(answers, items, workers=workers)

    def tag_digests(
        self,
        items: Sequence[tuple[str, str]],
        believed: Sequence[str | None],
        *,
        workers: int = 16,
    ) -> list[str | None]:
        """The digest each (repository, tag) points at now, or None where there is no such
        tag: HEADs, many at once (`_manifest_requests`).

        Where `believed` gives the digest a tag is thought to point at, it is sent as
        If-None-Match, and a registry that finds it so answers 304 Not Modified. distribution
        checks that right after looking up the tag, before it reads the manifest: about a fifth
        of its work per request saved. Only for tags: it answers 304 to a digest reference
        without looking it up at all, so a digest is never sent that way."""
        etags = [
            digest if isinstance(digest, str) and is_digest(digest) and not is_digest(tag) else None
            for (_, tag), digest in zip(items, believed, strict=True)
        ]
        answers = self._manifest_requests("HEAD", items, workers, etags=etags)
        digests = list(etags)  # what a 304 confirms; the others are replaced below
        told = [i for i, a in enumerate(answers) if a.status != 304 or etags[i] is None]
        found = self._descriptors([answers[i] for i in told], [items[i] for i in told], workers)
        for index, descriptor in zip(told, found, strict=True):
            digests[index] = descriptor.digest if descriptor is not None else None
        return digests

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """A manifest or index, its bytes checked against the digest asked for or announced."""
        return self._manifest(self._manifest_request("GET", repository, reference), reference)

    def get_manifests(
        self,
        items: Sequence[tuple[str, str]],
        *,
        workers: int = 16,
        each: Callable[[int, Manifest | None], None] | None = None,
    ) -> list[Manifest | None]:
        """`get_manifest` of each (repository, reference), many at once (`_manifest_requests`);
        None where the registry does not have it. `each(index, manifest)`, when given, is
        called in this thread with each one as it arrives (in no set order), so that the
        caller's work on it overlaps the registry's on the others."""
        manifests: list[Manifest | None] = [None] * len(items)

        def arrived(index: int, answer: _Answer) -> None:
            manifest = None if answer.status == 404 else self._manifest(answer, items[index][1])
            manifests[index] = manifest
            if each is not None:
                each(index, manifest)

        self._manifest_requests("GET", items, workers, missing_ok=True, each=arrived)
        return manifests

    def _descriptors(
        self, answers: Sequence[_Answer], items: Sequence[tuple[str, str]], workers: int
    ) -> list[Descriptor | None]:
        """The descriptors that HEAD answers give (None for a 404). Not every registry tells
        all on a HEAD: those are completed from the manifests' bytes, read many at once."""
        found = [
            None if answer.status == 404 else _told(answer, reference)
            for answer, (_, reference) in zip(answers, items, strict=True)
        ]
        untold = [i for i, answer in enumerate(answers) if answer.status != 404 and not found[i]]
        if untold:
            wanted = [(str(answers[i].repo), items[i][1]) for i in untold]
            manifests = self.get_manifests(wanted, workers=workers)
            for index, manifest in zip(untold, manifests, strict=True):
                found[index] = manifest.descriptor if manifest is not None else None
        return found

    def _manifest(self, answer: _Answer, reference: str) -> Manifest:
        repo, data = answer.repo, answer.body
        announced = answer.headers.get("docker-content-digest", "")
        expected = reference if is_digest(reference) else None
        if expected is None and is_digest(announced):
            expected = announced
        if expected is None:
            digest = sha256_digest(data)
        else:  # hashed once, with the algorithm of the digest it must match
            actual = digest_of(data, expected)
            if actual != expected:
                source = (
                    "the digest asked for" if expected == reference else "Docker-Content-Digest"
                )
                raise RegistryError(
                    f"manifest {repo}@{reference} from {repo.registry} does not match "
                    f"{source}: expected {expected}, its bytes are {actual}",
                    status=answer.status,
                    code="DIGEST_INVALID",
                    method="GET",
                    path=self._path(answer.url),
                )
            digest = expected
        media_type = base_media_type(answer.headers.get("content-type"))
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            media_type = self._declared_media_type(data) or media_type
        return Manifest(digest=digest, media_type=media_type, data=data)

    def _manifest_request(
        self,
        method: str,
        repository: str,
        reference: str,
        *,
        missing_ok: bool = False,
        etag: str | None = None,
    ) -> _Answer:
        """A HEAD or GET of `repository`'s manifest `reference`, accepting all four types: 200,
        or 404 to a HEAD (or to a GET when `missing_ok`; else NotFound), or 304 when `etag` is
        sent as If-None-Match; anything else an error.

        It is first tried on the transport's fast path (StdlibTransport.quick: an idle pooled
        connection, without httpx's request and response objects); anything but a plain answer
        there is sent again the full way, with its auth renewal, retries and errors."""
        prepared = self._prepare_manifest_request(method, repository, reference, etag)
        expected = _statuses(method, missing_ok, etag)
        if self._quick is not None:
            with self._slots:
                quick = self._quick.quick(
                    method, prepared.url, prepared.headers, max_body=MAX_QUICK_MANIFEST
                )
            if quick is not None and quick[0] in expected:
                self._count(f"{method} manifest")
                return _Answer(prepared.repo, prepared.url, *quick)
        return self._manifest_request_full(method, prepared, expected)

    def _manifest_requests(
        self,
        method: str,
        items: Sequence[tuple[str, str]],
        workers: int,
        *,
        missing_ok: bool = False,
        each: Callable[[int, _Answer], None] | None = None,
        etags: Sequence[str | None] | None = None,
    ) -> list[_Answer]:
        """`_manifest_request` of each (repository, reference), in order, with its etag (if
        `etags`); `each(index, answer)` is called in this thread as each answer arrives.

        On the direct transport, all but the first are sent together from this thread
        (`fanout.fetch_many`: up to `workers` connections, no thread per request); the first
        goes alone, so that the host's auth challenge is known and its token fetched before.
        Whatever the fan-out could not answer plainly, and everything on other transports, is
        sent the full way by `workers` threads. The first error raised is raised here."""
        answers: list[_Answer | None] = [None] * len(items)
        conditions = etags if etags is not None else [None] * len(items)

        def one(index: int) -> _Answer:
            return self._manifest_request(
                method, *items[index], missing_ok=missing_ok, etag=conditions[index]
            )

        if self._quick is not None and len(items) > 1:
            answers[0] = first = one(0)
            if each is not None:
                each(0, first)
            self._fan_out(method, items, answers, missing_ok, conditions, workers, each)
        left = [index for index, answer in enumerate(answers) if answer is None]
        if len(left) == 1:  # no thread for one request
            answers[left[0]] = answer = one(left[0])
            if each is not None:
                each(left[0], answer)
        elif left:
            with ThreadPoolExecutor(min(workers, len(left))) as pool:
                for index, answer in zip(left, pool.map(one, left), strict=True):
                    answers[index] = answer
                    if each is not None:
                        each(index, answer)
        return [answer for answer in answers if answer is not None]

    def _fan_out(
        self,
        method: str,
        items: Sequence[tuple[str, str]],
        answers: list[_Answer | None],
        missing_ok: bool,
        etags: Sequence[str | None],
        workers: int,
        each: Callable[[int, _Answer], None] | None,
    ) -> None:
        """Fill the unanswered `answers` that the fan-out answers plainly (see above)."""
        self._fetch_tokens({repository for repository, _ in items}, workers)
        todo: list[tuple[int, _Prepared, fanout.Request]] = []
        keys: dict[str, fanout.Key] = {}  # by host base URL, which every request URL starts with
        for index, (repository, reference) in enumerate(items):
            if answers[index] is not None:
                continue
            prepared = self._prepare_manifest_request(method, repository, reference, etags[index])
            base = prepared.host.base
            key = keys.get(base)
            if key is None:
                where = endpoint(base)
                if where is None:
                    continue
                key = keys[base] = where[0]
            try:
                path = prepared.url[len(base) :]
                request = fanout.Request.build(key, method, path, prepared.headers)
            except ValueError:
                continue
            todo.append((index, prepared, request))
        if not todo:
            return
        quick = self._quick
        assert quick is not None  # the caller checked
        slots = 0  # connections count against max_connections like any others
        while slots < min(workers, len(todo)) and self._slots.acquire(blocking=slots == 0):
            slots += 1

        def arrived(position: int, result: fanout.Answer) -> None:
            index, prepared, _ = todo[position]
            if result[0] in _statuses(method, missing_ok, prepared.etag):
                self._count(f"{method} manifest")
                answers[index] = answer = _Answer(prepared.repo, prepared.url, *result)
                if each is not None:
                    each(index, answer)

        try:
            fanout.fetch_many(
                [request for _, _, request in todo],
                concurrency=slots,
                timeout=self.options.timeout,
                tls=lambda: quick.ssl_context,
                max_body=MAX_QUICK_MANIFEST,
                each=arrived,
            )
        finally:
            for _ in range(slots):
                self._slots.release()

    def _fetch_tokens(self, repositories: Iterable[str], workers: int) -> None:
        """Get the pull tokens of `repositories` into the cache, `workers` at a time, where the
        registry wants bearer tokens (preparing the requests would fetch them one by one)."""
        wanted = []
        for repository in repositories:
            repo, host = self._target(repository)
            if host.challenge is not None and host.challenge.scheme != "basic":
                wanted.append((host, self._pull(repo)))
        if len(wanted) > 1:
            with ThreadPoolExecutor(min(workers, len(wanted))) as pool:
                list(pool.map(lambda pair: self._authorization(*pair), wanted))

    def _prepare_manifest_request(
        self, method: str, repository: str, reference: str, etag: str | None = None
    ) -> _Prepared:
        repo, host = self._target(repository)
        check_reference(reference)
        url = self._url(host, repo, f"manifests/{reference}")
        scopes = self._pull(repo)
        headers = [("Host", url.split("/", 3)[2]), ("Accept", MANIFEST_ACCEPT),
                   ("User-Agent", _USER_AGENT), *_condition(etag).items()]  # fmt: skip
        if self._quick is not None:
            auth, _ = self._authorization(host, scopes)
            if auth:
                headers.append(("Authorization", auth))
        return _Prepared(repo, host, reference, url, scopes, headers, etag)

    def _manifest_request_full(
        self, method: str, prepared: _Prepared, expected: tuple[int, ...]
    ) -> _Answer:
        repo, url = prepared.repo, prepared.url
        response = self._call(
            method,
            prepared.host,
            url,
            kind=f"{method} manifest",
            scopes=prepared.scopes,
            headers={"Accept": MANIFEST_ACCEPT, **_condition(prepared.etag)},
        )
        if response.status_code == 404 and 404 not in expected:
            message = f"manifest {repo}:{prepared.reference} not found"
            raise self._not_found(response, "GET", url, message)
        self._expect(response, expected, method, url)
        return _Answer(repo, url, response.status_code, dict(response.headers.items()),
                       response.content)  # fmt: skip

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT exactly `data` under a tag or digest; returns its sha256 digest.

        A reply of MANIFEST_BLOB_UNKNOWN is retried a few times with backoff (distribution 2.8
        reports blobs from concurrent pushes as unknown for a moment). The registry's
        Docker-Content-Digest must agree with ours.
        """
        repo, host = self._target(repository)
        check_reference(reference)
        digest = sha256_digest(data)
        if is_digest(reference) and digest_of(data, reference) != reference:
            raise ValueError(f"manifest bytes do not match the digest {reference} to put them at")
        url = self._url(host, repo, f"manifests/{reference}")
        for attempt in range(BLOB_UNKNOWN_RETRIES + 1):
            response = self._call(
                "PUT",
                host,
                url,
                kind="PUT manifest",
                scopes=self._push(repo),
                headers={"Content-Type": media_type},
                body=data,
            )
            if response.status_code in (200, 201, 202, 204):
                break
            error = self._status_error(response, "PUT", url)
            if "MANIFEST_BLOB_UNKNOWN" in error.codes and attempt < BLOB_UNKNOWN_RETRIES:
                log.debug("PUT %s: %s; retrying", self._path(url), error)
                self._count("retry")
                self._sleep(self.policy.delay(attempt))
                continue
            raise error
        announced = response.headers.get("Docker-Content-Digest", "")
        if is_digest(announced) and digest_of(data, announced) != announced:
            raise RegistryError(
                f"{repo.registry} stored manifest {repo}:{reference} as {announced}, "
                f"but its bytes are {digest_of(data, announced)}",
                status=response.status_code,
                method="PUT",
                path=self._path(url),
            )
        return digest

    # -- blobs -------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository has the blob (HEAD)."""
        repo, host = self._target(repository)
        url = self._url(host, repo, f"blobs/{check_digest(digest)}")
        response = self._call("HEAD", host, url, kind="HEAD blob", scopes=self._pull(repo))
        if response.status_code == 404:
            return False
        self._expect(response, (200,), "HEAD", url)
        return True

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Mount a blob from another repository of the same registry, without copying it.

        True when the registry mounted it (201). False when it started an upload instead (the
        source lacks the blob, or we may not read it), which is then cancelled, or when the two
        repositories are on different registries (nothing is sent then).
        """
        repo, host = self._target(repository)
        source = parse_repository(from_repository)
        check_digest(digest)
        if source.registry != repo.registry:
            return False
        url = self._url(host, repo, "blobs/uploads/")
        url += "?" + urllib.parse.urlencode({"mount": digest, "from": source.path})
        scopes = merge_scopes(self._push(repo), self._pull(source))
        response = self._call("POST", host, url, kind="POST blob", scopes=scopes)
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            self._cancel_upload(host, response)
            return False
        raise self._status_error(response, "POST", url)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        data: bytes | Iterable[bytes] | Callable[[], Iterable[bytes]],
        size: int,
    ) -> None:
        """Upload a blob in one streamed PUT (POST to start, then PUT ?digest=, Content-Length).

        `data` is bytes, or a callable returning a fresh iterable of chunks for each attempt.
        A one-shot iterable (e.g. a generator) is sent once and not retried; lists and tuples
        are reused. A failed attempt starts a new upload, unless the blob turns out to be there.
        """
        repo, host = self._target(repository)
        check_digest(digest)
        if size < 0:
            raise ValueError("size must not be negative")
        body, reusable = self._body(data, size, digest)
        attempts = self.policy.retries + 1 if reusable else 1
        for attempt in range(attempts):
            location = self._start_upload(host, repo)
            put_url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
            try:
                response = self._call(
                    "PUT",
                    host,
                    put_url,
                    kind="PUT blob",
                    scopes=self._push(repo),
                    body=body,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    retries=0,
                )
                if response.status_code in (201, 204):
                    return
                raise self._status_error(response, "PUT", put_url)
            except RegistryError as error:
                if not error.retryable or attempt + 1 >= attempts:
                    raise
                if self.blob_exists(repository, digest):
                    return  # the PUT went through though its reply was lost
                log.debug("upload of %s to %s failed (%s); retrying", digest, repo, error)
                self._count("retry")
                self._sleep(self.policy.delay(attempt))

    def get_blob(self, repository: str, digest: str, *, size: int | None = None) -> Iterator[bytes]:
        """Stream a blob's bytes; checks the size (when given) and the digest at the end.

        The request is made when iteration starts (NotFound is raised then) and holds one of the
        client's connections until the iterator is exhausted or closed.
        """
        repo, host = self._target(repository)
        check_digest(digest)
        return self._stream_blob(host, repo, digest, size)

    def ensure_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source_repository: str | None = None,
    ) -> None:
        """Make sure `repository` has the blob, doing the work once per client and key.

        Concurrent callers for the same (repository, digest) wait for the first. In order: HEAD;
        a cross-repository mount from `source_repository` when it is on the same registry; else
        a copy: the blob is read from the source (digest-checked, spooled to memory or a temp
        file) and uploaded, so a failed upload can be retried without reading it again.
        """
        repo = parse_repository(repository)
        check_digest(digest)
        key = (repo.registry, repo.path, digest)
        with self._ensure_lock:
            lock = self._ensure_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._ensured:
                return
            if not self.blob_exists(repository, digest):
                source = parse_repository(source_repository) if source_repository else None
                if source is None or source == repo:
                    raise NotFound(
                        f"blob {digest} is not in {repo} and there is no other repository to "
                        "copy it from"
                    )
                if not (
                    source.registry == repo.registry
                    and self.mount_blob(repository, digest, str(source))
                ):
                    self._copy_blob(source, repo, digest, size)
            with self._ensure_lock:
                self._ensured.add(key)

    # -- tags --------------------------------------------------------------------------------

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of the repository ([] when it does not exist), following Link pagination."""
        repo, host = self._target(repository)
        count = page_size or self.options.tags_page_size
        url: str | None = self._url(host, repo, "tags/list") + f"?n={count}"
        tags: list[str] = []
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise RegistryError(f"tag listing of {repo} loops back to {self._path(url)}")
            response = self._call("GET", host, url, kind="GET tags", scopes=self._pull(repo))
            if response.status_code == 404 and not seen:
                return []  # NAME_UNKNOWN: no such repository, so no tags
            seen.add(url)
            self._expect(response, (200,), "GET", url)
            try:
                page = response.json()
            except ValueError:
                page = None
            names = page.get("tags") if isinstance(page, dict) else None
            if names is not None and not (
                isinstance(names, list) and all(isinstance(t, str) for t in names)
            ):
                raise RegistryError(f"{repo.registry} sent a malformed tag list for {repo}")
            tags.extend(names or [])
            link = response.links.get("next", {}).get("url")
            url = urllib.parse.urljoin(str(response.url), link) if link else None
        return tags

    # -- internals: requests -----------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self._stats_lock:
            self.stats[kind] += 1

    def _target(self, repository: str) -> tuple[Repository, _Host]:
        repo = parse_repository(repository)
        return repo, self._host(repo)

    @staticmethod
    def _pull(repo: Repository) -> Scopes:
        return (repository_scope(repo.path, "pull"),)

    @staticmethod
    def _push(repo: Repository) -> Scopes:
        return (repository_scope(repo.path, "pull,push"),)

    @staticmethod
    def _url(host: _Host, repo: Repository, suffix: str) -> str:
        return f"{host.base}/v2/{repo.path}/{suffix}"

    @staticmethod
    def _path(url: str | httpx.URL) -> str:
        """The path of a URL, for messages: no query (upload state, signatures), no userinfo."""
        return httpx.URL(str(url)).path

    def _host(self, repo: Repository) -> _Host:
        host = self._hosts.get(repo.registry)  # hosts are only ever added
        if host is None:
            with self._hosts_lock:
                host = self._hosts.get(repo.registry)
                if host is None:
                    host = self._hosts[repo.registry] = _Host(repo.registry, repo.api_host)
        if not host.ready:
            with host.lock:
                if not host.ready:
                    self._ping(host)
                    host.ready = True
        return host

    def _ping(self, host: _Host) -> None:
        """Learn a host's scheme and auth challenge from GET /v2/."""
        plain_ok = allows_plain_http(host.api_host, self.options.insecure)
        retry = 0
        while True:
            scheme, response, failure = self._probe(host, plain_ok)
            if response is None:
                assert failure is not None
                # A server that is not up yet, or that dropped us: try again; else report.
                if (is_transient_error(failure) or plain_ok) and retry < self.policy.retries:
                    self._retry_sleep(retry)
                    retry += 1
                    continue
                self._raise_transport(failure, "GET", f"https://{host.api_host}/v2/", host)
            if response.status_code in RETRYABLE_STATUSES and retry < self.policy.retries:
                self._retry_sleep(retry, response)
                retry += 1
                continue
            break
        host.base = f"{scheme}://{host.api_host}"
        if response.status_code == 401:
            challenge = pick_challenge(
                parse_challenges(", ".join(response.headers.get_list("WWW-Authenticate")))
            )
            if challenge is not None:
                host.challenge = Challenge(
                    challenge.scheme, {k: v for k, v in challenge.params.items() if k != "scope"}
                )
        log.debug(
            "%s: %s, auth %s", host.registry, host.base, host.challenge and host.challenge.scheme
        )

    def _probe(
        self, host: _Host, plain_ok: bool
    ) -> tuple[str, httpx.Response | None, Exception | None]:
        """One GET /v2/ over https, then (where allowed) over http when https failed.

        Returns the scheme that answered and its response, or the https failure. A certificate
        that does not verify is raised at once: it must never lead to plain http.
        """
        url = f"https://{host.api_host}/v2/"
        failure: Exception | None = None
        where = endpoint(url)
        if plain_ok and self._quick is not None and where is not None:  # direct: no proxy
            _, hostname, port = where[0]
            failure = self._quick.tls_refusal(hostname, port)
        if failure is None:
            try:
                return "https", self._send_once("GET", url, kind="ping"), None
            except Exception as exc:
                if certificate_error(exc) is not None:
                    self._raise_transport(exc, "GET", url, host)
                if not plain_ok:
                    return "https", None, exc
                failure = exc
        try:
            response = self._send_once("GET", f"http://{host.api_host}/v2/", kind="ping")
        except Exception:
            return "https", None, failure
        # A TLS server asked in plain http answers 400; only take what a registry would say.
        if (
            response.status_code in (200, 401, *RETRYABLE_STATUSES)
            or "Docker-Distribution-Api-Version" in response.headers
        ):
            log.debug("%s does not answer https; using http", host.api_host)
            return "http", response, None
        return "https", None, failure

    @staticmethod
    def _not_tls(exc: BaseException) -> bool:
        """Whether a failed https attempt means the server speaks plain http."""
        if certificate_error(exc) is not None:
            return False
        return isinstance(exc, httpx.RemoteProtocolError) or tls_error(exc) is not None

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        headers: dict[str, str] | None = None,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """One request, read whole, within the concurrency bound; no retries, no auth."""
        request = request or self._http.build_request(method, url, headers=headers)
        with self._slots:
            self._count(kind)
            response = self._http.send(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d", request.method, self._path(request.url), response.status_code)
        return response

    def _retry_sleep(self, retry: int, response: httpx.Response | None = None) -> None:
        self._count("retry")
        self._sleep(self.policy.delay(retry, response))

    def _call(
        self,
        method: str,
        host: _Host,
        url: str,
        *,
        kind: str,
        scopes: Scopes,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        """A request with auth and retries; the response is read whole."""
        response, _ = self._perform(
            method,
            host,
            url,
            kind=kind,
            scopes=scopes,
            headers=headers,
            body=body,
            retries=retries,
            stream=False,
        )
        return response

    def _perform(
        self,
        method: str,
        host: _Host,
        url: str,
        *,
        kind: str,
        scopes: Scopes,
        headers: dict[str, str] | None,
        body: Body | None,
        retries: int | None,
        stream: bool,
    ) -> tuple[httpx.Response, Callable[[], None]]:
        """Send with auth and the retry policy.

        Returns the response and a function that releases it. With `stream`, a successful (2xx)
        response is returned unread, holding its connection and concurrency slot until released;
        every other response is read and released already.
        """
        limit = self.policy.retries if retries is None else retries
        retry = 0
        reauthenticated = False
        used_token: str | None = None
        same_host = url.startswith(host.base + "/")
        while True:
            request_headers = headers
            if same_host:
                auth, used_token = self._authorization(host, scopes)
                if auth:
                    request_headers = {**(headers or {}), "Authorization": auth}
            content: bytes | Iterable[bytes] | None = None
            if body is not None:
                content = body if isinstance(body, bytes) else body()
            request = self._http.build_request(
                method, url, headers=request_headers, content=content
            )
            self._slots.acquire()
            holding = True
            try:
                self._count(kind)
                response = self._http.send(
                    request, stream=True, follow_redirects=method in ("GET", "HEAD")
                )
                if not (stream and response.is_success):
                    try:
                        response.read()
                    finally:
                        response.close()
                        self._slots.release()
                        holding = False
            except Exception as exc:
                if holding:
                    self._slots.release()
                if isinstance(exc, RegistryError):
                    raise
                if is_transient_error(exc) and retry < limit:
                    log.debug("%s %s: %s; retrying", method, self._path(url), type(exc).__name__)
                    self._retry_sleep(retry)
                    retry += 1
                    continue
                self._raise_transport(exc, method, url, host)
            except BaseException:
                if holding:
                    self._slots.release()
                raise
            status = response.status_code
            if log.isEnabledFor(logging.DEBUG):  # _path parses the URL: not for nothing
                log.debug("%s %s -> %d", method, self._path(url), status)
            if status in (401, 403) and same_host:
                if not reauthenticated and self._reauthenticate(host, scopes, response, used_token):
                    reauthenticated = True
                    continue
                raise self._auth_error(host, scopes, response, method, url)
            if status in RETRYABLE_STATUSES and retry < limit:
                self._retry_sleep(retry, response)
                retry += 1
                continue
            if holding:
                return response, self._releaser(response)
            return response, lambda: None

    def _releaser(self, response: httpx.Response) -> Callable[[], None]:
        """A function closing a streamed response and freeing its slot, once."""
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                response.close()
                self._slots.release()

        return release

    def _raise_transport(self, exc: Exception, method: str, url: str, host: _Host) -> NoReturn:
        cert = certificate_error(exc)
        if cert is not None:
            raise RegistryError(
                f"{method} {self._path(url)} on {host.registry}: the TLS certificate does not "
                f"verify ({cert.verify_message or cert}). Pass its CA with --ca-bundle PEM, "
                "or add it to the system's trust store.",
                method=method,
                path=self._path(url),
            ) from None
        detail = self._redact(str(exc)) or type(exc).__name__
        hint = ""
        if self._not_tls(exc) and not allows_plain_http(host.api_host, self.options.insecure):
            hint = (
                ". It does not answer https; plain http is used only for loopback hosts and "
                "hosts listed in the insecure option"
            )
        transient = is_transient_error(exc)
        raise RegistryError(
            f"{method} {self._path(url)} on {host.registry} failed"
            f"{' after retries' if transient else ''}: {type(exc).__name__}: {detail}{hint}",
            method=method,
            path=self._path(url),
            retryable=transient,
        ) from exc

    # -- internals: auth ---------------------------------------------------------------------

    def _creds(self, host: _Host) -> Credentials | None:
        credentials = self._credentials.get(host.registry)
        if credentials is not None:
            self._redact.add(*credentials.secrets)
        return credentials

    def _authorization(self, host: _Host, scopes: Scopes) -> tuple[str | None, str | None]:
        """The Authorization header to send (or None), and the bearer token in it."""
        challenge = host.challenge
        if challenge is None:
            return None, None
        if challenge.scheme == "basic":
            credentials = self._creds(host)
            return (credentials.basic_header() if credentials else None), None
        token = self._tokens.get(host.registry, scopes)
        if token is None and len(scopes) == 1 and scopes[0].endswith(":pull"):
            # A pull,push token of the same repository serves reads too.
            token = self._tokens.get(host.registry, (scopes[0] + ",push",))
        if token is None:
            token_value = self._token(host, challenge, scopes, stale=None)
        else:
            token_value = token.value
        return f"Bearer {token_value}", token_value

    def _token(
        self,
        host: _Host,
        challenge: Challenge,
        scopes: Scopes,
        *,
        stale: str | None,
        extra: Scopes = (),
    ) -> str:
        """A token for `scopes`: cached, or fetched by one thread while the others wait.

        `stale` is a token the registry refused: it is replaced even when not expired. `extra`
        are scopes a registry's challenge asked for beyond ours.
        """
        with self._tokens.lock(host.registry, scopes):
            cached = self._tokens.get(host.registry, scopes)
            if cached is not None and cached.value != stale:
                return cached.value
            token = self._fetch_token(host, challenge, merge_scopes(scopes, extra))
            self._tokens.put(host.registry, scopes, token)
            return token.value

    def _fetch_token(self, host: _Host, challenge: Challenge, scopes: Scopes) -> Token:
        credentials = self._creds(host)
        realm = httpx.URL(challenge.realm or "")
        realm_host = realm.netloc.decode("ascii")
        plain_ok = allows_plain_http(realm_host, self.options.insecure) or credentials is None
        if realm.scheme not in ("http", "https") or (realm.scheme == "http" and not plain_ok):
            raise AuthError(
                f"{host.registry} sends clients for tokens to {realm.scheme}://{realm_host}, "
                "which is not https: refusing to send credentials there (list that host in the "
                "insecure option if this is intended)."
            )
        template = token_request(challenge, scopes, credentials)
        retry = 0
        while True:
            # Built through the client for its timeouts and User-Agent.
            request = self._http.build_request(
                template.method, template.url, headers=template.headers, content=template.content
            )
            try:
                response = self._send_once(
                    request.method, str(request.url), kind="token", request=request
                )
            except Exception as exc:
                if is_transient_error(exc) and retry < self.policy.retries:
                    self._retry_sleep(retry)
                    retry += 1
                    continue
                raise AuthError(
                    f"cannot reach the token service of {host.registry} at {realm_host}: "
                    f"{type(exc).__name__}: {self._redact(str(exc))}"
                ) from None
            if response.status_code in RETRYABLE_STATUSES and retry < self.policy.retries:
                self._retry_sleep(retry, response)
                retry += 1
                continue
            break
        if response.status_code in (401, 403):
            raise self._auth_error(host, scopes, response, template.method, str(realm))
        if not response.is_success:
            codes, text = _error_details(response)
            raise AuthError(
                f"the token service of {host.registry} at {realm_host} answered HTTP "
                f"{response.status_code}{': ' + self._redact(text) if text else ''}",
                status=response.status_code,
                code=codes[0] if codes else None,
                codes=codes,
            )
        try:
            token = parse_token_response(response.content)
        except ValueError as exc:
            raise AuthError(
                f"the token service of {host.registry} at {realm_host}: {exc}"
            ) from None
        self._redact.add(token.value)
        return token

    def _reauthenticate(
        self, host: _Host, scopes: Scopes, response: httpx.Response, used_token: str | None
    ) -> bool:
        """After a 401/403: learn the challenge and get fresh auth. False when nothing changes."""
        header = ", ".join(response.headers.get_list("WWW-Authenticate"))
        challenge = pick_challenge(parse_challenges(header)) if header else None
        if challenge is None:
            if response.status_code == 403 and used_token is not None and host.challenge:
                challenge = host.challenge  # the token may have been revoked: try a new one
            else:
                return False
        previous = host.challenge
        # The scope of a challenge belongs to this request, not to the host.
        host.challenge = Challenge(
            challenge.scheme, {k: v for k, v in challenge.params.items() if k != "scope"}
        )
        if challenge.scheme == "basic":
            # Worth another try only if we were not already sending our credentials.
            already_sent = previous is not None and previous.scheme == "basic"
            return not already_sent and self._creds(host) is not None
        self._token(host, host.challenge, scopes, stale=used_token, extra=challenge.scopes)
        return True

    def _auth_error(
        self, host: _Host, scopes: Scopes, response: httpx.Response, method: str, url: str
    ) -> AuthError:
        codes, text = _error_details(response)
        credentials = self._creds(host)
        if credentials is None:
            config = self._credentials.config_file
            how = f"no credentials for {host.registry} were found in {config}"
        else:
            how = f"the credentials for {host.registry} from {credentials.source} were not enough"
        verb = "refused" if response.status_code == 403 else "requires authentication for"
        message = (
            f"{method} {self._path(url)}: {host.registry} {verb} {' '.join(scopes)} "
            f"(HTTP {response.status_code}{': ' + text if text else ''}); {how}. "
            f"Log in with `{login_hint(host.registry)}`, or set DOCKER_CONFIG to a directory "
            "whose config.json has credentials for it."
        )
        return AuthError(
            self._redact(message),
            status=response.status_code,
            code=codes[0] if codes else None,
            codes=codes,
            method=method,
            path=self._path(url),
        )

    # -- internals: responses ----------------------------------------------------------------

    def _status_error(self, response: httpx.Response, method: str, url: str) -> RegistryError:
        """The error for an unexpected reply: NotFound for 404 and *_UNKNOWN codes."""
        codes, text = _error_details(response)
        status = response.status_code
        message = self._redact(
            f"{method} {self._path(url)} on {response.url.netloc.decode('ascii')} answered "
            f"HTTP {status}{': ' + text if text else ''}"
        )
        unknown = status == 404 or any(c.endswith("_UNKNOWN") for c in codes)
        kind = NotFound if unknown else RegistryError
        return kind(
            message,
            status=status,
            code=codes[0] if codes else None,
            codes=codes,
            method=method,
            path=self._path(url),
            retryable=status in RETRYABLE_STATUSES,
        )

    def _not_found(self, response: httpx.Response, method: str, url: str, what: str) -> NotFound:
        error = self._status_error(response, method, url)
        return NotFound(
            f"{what}: {error}",
            status=error.status,
            code=error.code,
            codes=error.codes,
            method=method,
            path=error.path,
        )

    def _expect(
        self, response: httpx.Response, statuses: Collection[int], method: str, url: str
    ) -> None:
        if response.status_code not in statuses:
            raise self._status_error(response, method, url)

    @staticmethod
    def _declared_media_type(data: bytes) -> str | None:
        try:
            parsed = Manifest("", "", data).json()
        except ValueError:
            return None
        media_type = parsed.get("mediaType")
        return str(media_type) if isinstance(media_type, str) else None

    # -- internals: blob transfer ------------------------------------------------------------

    def _body(
        self, data: bytes | Iterable[bytes] | Callable[[], Iterable[bytes]], size: int, digest: str
    ) -> tuple[Body, bool]:
        """A request body for `data`, and whether it can be sent again for a retry."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            if len(raw) != size:
                raise ValueError(f"blob {digest} has {len(raw)} bytes, not {size}")
            if digest_of(raw, digest) != digest:
                raise ValueError(f"the bytes given for blob {digest} do not match it")
            return raw, True
        if callable(data):
            factory = data
            return (lambda: _sized(factory(), size)), True
        if isinstance(data, (list, tuple)):
            chunks = data
            return (lambda: _sized(chunks, size)), True
        used = False

        def once() -> Iterator[bytes]:
            nonlocal used
            if used:
                raise RegistryError(f"the upload body of blob {digest} cannot be sent twice")
            used = True
            return _sized(data, size)

        return once, False

    def _start_upload(self, host: _Host, repo: Repository) -> str:
        """POST a new upload session; its absolute Location."""
        url = self._url(host, repo, "blobs/uploads/")
        response = self._call("POST", host, url, kind="POST blob", scopes=self._push(repo))
        self._expect(response, (202,), "POST", url)
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                f"POST {self._path(url)} on {repo.registry}: no Location for the upload",
                status=response.status_code,
                method="POST",
                path=self._path(url),
            )
        return urllib.parse.urljoin(str(response.url), str(location))

    def _cancel_upload(self, host: _Host, response: httpx.Response) -> None:
        """Best effort: DELETE the upload session a reply started (it would expire anyway)."""
        location = response.headers.get("Location")
        if not location:
            return
        url = urllib.parse.urljoin(str(response.url), location)
        try:
            self._call("DELETE", host, url, kind="DELETE upload", scopes=(), retries=0)
        except RegistryError as error:
            log.debug("could not cancel upload %s: %s", self._path(url), error)

    def _stream_blob(
        self, host: _Host, repo: Repository, digest: str, size: int | None
    ) -> Iterator[bytes]:
        url = self._url(host, repo, f"blobs/{digest}")
        response, release = self._perform(
            "GET",
            host,
            url,
            kind="GET blob",
            scopes=self._pull(repo),
            headers=None,
            body=None,
            retries=None,
            stream=True,
        )
        try:
            if response.status_code == 404:
                raise self._not_found(response, "GET", url, f"blob {digest} not in {repo}")
            self._expect(response, (200,), "GET", url)
            h = hasher(digest)
            received = 0
            try:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    h.update(chunk)
                    received += len(chunk)
                    yield chunk
            except httpx.TransportError as exc:
                raise _StreamBroken(
                    f"GET {self._path(url)} on {repo.registry}: the connection failed after "
                    f"{received} bytes: {type(exc).__name__}: {self._redact(str(exc))}",
                    method="GET",
                    path=self._path(url),
                    retryable=is_transient_error(exc),
                ) from exc
            actual = f"{h.name}:{h.hexdigest()}"
            if size is not None and received != size:
                raise RegistryError(
                    f"blob {digest} from {repo} has {received} bytes, expected {size}",
                    code="SIZE_INVALID",
                    method="GET",
                    path=self._path(url),
                )
            if actual != digest:
                raise RegistryError(
                    f"blob {digest} from {repo} does not match its digest: its bytes are {actual}",
                    code="DIGEST_INVALID",
                    method="GET",
                    path=self._path(url),
                )
        finally:
            release()

    def _copy_blob(self, source: Repository, repo: Repository, digest: str, size: int) -> None:
        """Read a blob from `source` (checked) into a spool, then upload it to `repo`."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
            for attempt in range(self.policy.retries + 1):
                spool.seek(0)
                spool.truncate()
                try:
                    for chunk in self.get_blob(str(source), digest, size=size):
                        spool.write(chunk)
                    break
                except _StreamBroken:
                    if attempt >= self.policy.retries:
                        raise
                    self._retry_sleep(attempt)

            def chunks() -> Iterator[bytes]:
                spool.seek(0)
                while block := spool.read(CHUNK_SIZE):
                    yield block

            self.upload_blob(str(repo), digest, chunks, size)
