"""`RegistryClient`: the one object the rest of buildgen talks to registries through.

A facade over the modules that do the work, each one concern:

- `session`: the httpx.Client, the bound on requests in flight, counters, the retry loop;
- `ping`: per host, the scheme (https, or http where allowed) and the auth challenge;
- `auth`: Authorization headers and tokens (`challenges`, `credentials` beside it);
- `remote`: one request to a repository, with auth and retries, on top of those;
- `manifests`, `blobs`, `tags`: the registry API.

One client serves a whole run from many threads. Per registry host, the scheme and the auth
challenge are learnt once (GET /v2/), and tokens are cached per scope set until shortly before
they expire. `ensure_blob` handles each (repository, digest) once per client, however many
threads ask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import httpx

from .auth import Authenticator
from .blobs import BlobData, Blobs
from .credentials import DockerCredentials
from .errors import Redactor
from .manifests import Manifests
from .media import Descriptor, Manifest
from .options import RegistryOptions
from .ping import Hosts
from .remote import Remote
from .session import Session
from .tags import list_tags


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
        without `transport`, requests go through httpx's own."""
        self.options = opts = options or RegistryOptions()
        self._session = Session(opts, transport=transport, sleep=sleep)
        self.policy = self._session.policy
        self.stats = self._session.stats
        redactor = Redactor()
        credentials = DockerCredentials(opts.docker_config)
        auth = Authenticator(self._session, credentials, redactor, opts.insecure)
        hosts = Hosts(self._session, auth, redactor, opts.insecure)
        self._remote = Remote(self._session, hosts, auth, redactor)
        self._manifests = Manifests(self._remote)
        self._blobs = Blobs(self._remote)

    def close(self) -> None:
        """Close the connection pool."""
        self._session.close()

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
        """The descriptor of a manifest or index, or None when the registry does not have it.

        A registry that does not tell the digest on a HEAD gets a GET to complete it."""
        return self._manifests.head(repository, reference)

    def head_manifests(
        self, items: Sequence[tuple[str, str]], *, workers: int = 16
    ) -> list[Descriptor | None]:
        """`head_manifest` of each (repository, reference), `workers` at a time."""
        return self._manifests.heads(items, workers)

    def tag_digests(
        self,
        items: Sequence[tuple[str, str]],
        believed: Sequence[str | None],
        *,
        workers: int = 16,
    ) -> list[str | None]:
        """The digest each (repository, tag) points at now, or None where there is no such
        tag: HEADs, `workers` at a time.

        Where `believed` gives the digest a tag is thought to point at, it is sent as
        If-None-Match, and a registry that finds it so answers 304 Not Modified. distribution
        checks that right after looking up the tag, before it reads the manifest, which saves
        it work. Only for tags: it answers 304 to a digest reference without looking it up at
        all, so a digest is never sent that way."""
        return self._manifests.tag_digests(items, believed, workers)

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """A manifest or index, its bytes checked against the digest asked for or announced."""
        return self._manifests.get(repository, reference)

    def get_manifests(
        self,
        items: Sequence[tuple[str, str]],
        *,
        workers: int = 16,
        each: Callable[[int, Manifest | None], None] | None = None,
    ) -> list[Manifest | None]:
        """`get_manifest` of each (repository, reference), `workers` at a time; None where the
        registry does not have it. `each(index, manifest)`, when given, is called in this
        thread with each one as it arrives (in no set order), so that the caller's work on it
        overlaps the registry's on the others."""
        return self._manifests.gets(items, workers, each)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT exactly `data` under a tag or digest; returns its sha256 digest.

        A reply of MANIFEST_BLOB_UNKNOWN is retried a few times with backoff (distribution 2.8
        reports blobs from concurrent pushes as unknown for a moment). The registry's
        Docker-Content-Digest must agree with ours.
        """
        return self._manifests.put(repository, reference, data, media_type)

    # -- blobs -------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository has the blob (HEAD)."""
        return self._blobs.exists(repository, digest)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Mount a blob from another repository of the same registry, without copying it.

        True when the registry mounted it (201). False when it started an upload instead (the
        source lacks the blob, or we may not read it), which is then cancelled, or when the two
        repositories are on different registries (nothing is sent then).
        """
        return self._blobs.mount(repository, digest, from_repository)

    def upload_blob(self, repository: str, digest: str, data: BlobData, size: int) -> None:
        """Upload a blob in one streamed PUT (POST to start, then PUT ?digest=, Content-Length).

        `data` is bytes, or a callable returning a fresh iterable of chunks for each attempt.
        A one-shot iterable (e.g. a generator) is sent once and not retried; lists and tuples
        are reused. A failed attempt starts a new upload, unless the blob turns out to be there.
        """
        self._blobs.upload(repository, digest, data, size)

    def get_blob(self, repository: str, digest: str, *, size: int | None = None) -> Iterator[bytes]:
        """Stream a blob's bytes; checks the size (when given) and the digest at the end.

        The request is made when iteration starts (NotFound is raised then) and holds one of the
        client's connections until the iterator is exhausted or closed.
        """
        return self._blobs.get(repository, digest, size)

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
        self._blobs.ensure(repository, digest, size, source_repository)

    # -- tags --------------------------------------------------------------------------------

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of the repository ([] when it does not exist), following Link pagination."""
        return list_tags(self._remote, repository, page_size or self.options.tags_page_size)
