"""Blobs: HEADs, streamed and checked reads, monolithic uploads, mounts, and `ensure`, which
makes sure a repository has a blob with as little copying as it takes."""

from __future__ import annotations

import logging
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

import httpx

from .challenges import merge_scopes
from .errors import NotFound, RegistryError, url_path
from .media import check_digest, digest_of, hasher
from .ping import Host
from .reference import Repository, parse_repository
from .remote import Body, Remote, api_url, pull, push
from .retry import is_transient_error

log = logging.getLogger(__name__)

# What an upload takes: bytes, chunks, or a callable giving fresh chunks for each attempt.
BlobData: TypeAlias = bytes | Iterable[bytes] | Callable[[], Iterable[bytes]]

CHUNK_SIZE = 1 << 16
# A blob copied between repositories is kept in memory up to this size, on disk beyond it.
SPOOL_MEMORY = 16 << 20


class _StreamBroken(RegistryError):
    """The connection failed while a blob was being read (worth fetching again)."""


class _BodySizeError(RegistryError):
    """An upload body was not the size announced."""


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


def _body(data: BlobData, size: int, digest: str) -> tuple[Body, bool]:
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


class Blobs:
    """The blob requests of a client (see `RegistryClient` for what each method does)."""

    def __init__(self, remote: Remote) -> None:
        self._remote = remote
        self._session = remote.session
        self._ensured: set[tuple[str, str, str]] = set()
        self._ensure_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def exists(self, repository: str, digest: str) -> bool:
        repo, host = self._remote.target(repository)
        url = api_url(host, repo, f"blobs/{check_digest(digest)}")
        response = self._remote.call("HEAD", host, url, kind="HEAD blob", scopes=pull(repo))
        if response.status_code == 404:
            return False
        self._remote.expect(response, (200,), "HEAD", url)
        return True

    def mount(self, repository: str, digest: str, from_repository: str) -> bool:
        repo, host = self._remote.target(repository)
        source = parse_repository(from_repository)
        check_digest(digest)
        if source.registry != repo.registry:
            return False
        url = api_url(host, repo, "blobs/uploads/")
        url += "?" + urllib.parse.urlencode({"mount": digest, "from": source.path})
        scopes = merge_scopes(push(repo), pull(source))
        response = self._remote.call("POST", host, url, kind="POST blob", scopes=scopes)
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            self._cancel_upload(host, response)
            return False
        raise self._remote.status_error(response, "POST", url)

    def upload(self, repository: str, digest: str, data: BlobData, size: int) -> None:
        repo, host = self._remote.target(repository)
        check_digest(digest)
        if size < 0:
            raise ValueError("size must not be negative")
        body, reusable = _body(data, size, digest)
        # Each attempt is a new upload session: a failed PUT spends the one it was sent to.
        attempts = self._session.policy.retries + 1 if reusable else 1
        for attempt in range(attempts):
            location = self._start_upload(host, repo)
            put_url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
            try:
                response = self._remote.call(
                    "PUT",
                    host,
                    put_url,
                    kind="PUT blob",
                    scopes=push(repo),
                    body=body,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    retries=0,
                )
                if response.status_code in (201, 204):
                    return
                raise self._remote.status_error(response, "PUT", put_url)
            except RegistryError as error:
                if not error.retryable or attempt + 1 >= attempts:
                    raise
                if self.exists(repository, digest):
                    return  # the PUT went through though its reply was lost
                log.debug("upload of %s to %s failed (%s); retrying", digest, repo, error)
                self._session.pause(attempt)

    def get(self, repository: str, digest: str, size: int | None) -> Iterator[bytes]:
        repo, host = self._remote.target(repository)
        check_digest(digest)
        return self._stream(host, repo, digest, size)

    def ensure(
        self, repository: str, digest: str, size: int, source_repository: str | None
    ) -> None:
        repo = parse_repository(repository)
        check_digest(digest)
        key = (repo.registry, repo.path, digest)
        with self._lock:
            lock = self._ensure_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._ensured:
                return
            if not self.exists(repository, digest):
                source = parse_repository(source_repository) if source_repository else None
                if source is None or source == repo:
                    raise NotFound(
                        f"blob {digest} is not in {repo} and there is no other repository to "
                        "copy it from"
                    )
                if not (
                    source.registry == repo.registry and self.mount(repository, digest, str(source))
                ):
                    self._copy(source, repo, digest, size)
            with self._lock:
                self._ensured.add(key)

    # -- internals ---------------------------------------------------------------------------

    def _start_upload(self, host: Host, repo: Repository) -> str:
        """POST a new upload session; its absolute Location."""
        url = api_url(host, repo, "blobs/uploads/")
        response = self._remote.call("POST", host, url, kind="POST blob", scopes=push(repo))
        self._remote.expect(response, (202,), "POST", url)
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                f"POST {url_path(url)} on {repo.registry}: no Location for the upload",
                status=response.status_code,
                method="POST",
                path=url_path(url),
            )
        return urllib.parse.urljoin(str(response.url), str(location))

    def _cancel_upload(self, host: Host, response: httpx.Response) -> None:
        """Best effort: DELETE the upload session a reply started (it would expire anyway)."""
        location = response.headers.get("Location")
        if not location:
            return
        url = urllib.parse.urljoin(str(response.url), location)
        try:
            self._remote.call("DELETE", host, url, kind="DELETE upload", scopes=(), retries=0)
        except RegistryError as error:
            log.debug("could not cancel upload %s: %s", url_path(url), error)

    def _stream(
        self, host: Host, repo: Repository, digest: str, size: int | None
    ) -> Iterator[bytes]:
        url = api_url(host, repo, f"blobs/{digest}")
        response = self._remote.call(
            "GET", host, url, kind="GET blob", scopes=pull(repo), stream=True
        )
        try:
            if response.status_code == 404:
                raise self._remote.not_found(response, "GET", url, f"blob {digest} not in {repo}")
            self._remote.expect(response, (200,), "GET", url)
            h = hasher(digest)
            received = 0
            try:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    h.update(chunk)
                    received += len(chunk)
                    yield chunk
            except httpx.TransportError as exc:
                raise _StreamBroken(
                    f"GET {url_path(url)} on {repo.registry}: the connection failed after "
                    f"{received} bytes: {type(exc).__name__}: {self._remote.redact(str(exc))}",
                    method="GET",
                    path=url_path(url),
                    retryable=is_transient_error(exc),
                ) from exc
            actual = f"{h.name}:{h.hexdigest()}"
            if size is not None and received != size:
                raise RegistryError(
                    f"blob {digest} from {repo} has {received} bytes, expected {size}",
                    code="SIZE_INVALID",
                    method="GET",
                    path=url_path(url),
                )
            if actual != digest:
                raise RegistryError(
                    f"blob {digest} from {repo} does not match its digest: its bytes are {actual}",
                    code="DIGEST_INVALID",
                    method="GET",
                    path=url_path(url),
                )
        finally:
            response.close()

    def _copy(self, source: Repository, repo: Repository, digest: str, size: int) -> None:
        """Read a blob from `source` (checked) into a spool, then upload it to `repo`."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
            for attempt in range(self._session.policy.retries + 1):
                spool.seek(0)
                spool.truncate()
                try:
                    for chunk in self.get(str(source), digest, size):
                        spool.write(chunk)
                    break
                except _StreamBroken:
                    if attempt >= self._session.policy.retries:
                        raise
                    self._session.pause(attempt)

            def chunks() -> Iterator[bytes]:
                spool.seek(0)
                while block := spool.read(CHUNK_SIZE):
                    yield block

            self.upload(str(repo), digest, chunks, size)
