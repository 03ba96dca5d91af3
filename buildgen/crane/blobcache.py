"""A content-addressed directory of registry blobs, `<cache>/blobs/<algorithm>/<hex>`.

Crane mode pulls the layers of several images by digest; the cache makes a second run (or a
second image sharing a base layer) download nothing:

    cache = BlobCache(Path("/var/cache/buildgen"))
    paths = cache.fetch_all(client, [BlobRef(repo, layer.digest, layer.size)])

Rules, and why:
- A blob is only ever visible under its digest once it is complete and verified: it is written
  to a temp file in `<cache>/tmp` (same file system), its sha256 and size are checked, then it
  is renamed into place. Concurrent processes may download the same blob; the last rename wins
  and both wrote identical bytes, so no lock is needed between processes.
- Files are 0600 and directories 0700: a layer holds root-only files (a benchmark's answers)
  compressed but in the clear, so the cache must be no more readable than those files.
- `has()` checks presence and size only (a stat, so that a warm run is cheap). The digest is
  checked on download, and again by `extract.apply_layer` while it reads the blob, so a cache
  file corrupted afterwards cannot slip into a rootfs.
- Mirrors are repositories tried before the origin for the same digest: the digest check makes
  any source safe, so a mirror that fails or serves wrong bytes just falls through to the next.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildgen.errors import ExternalToolError
from buildgen.registry import RegistryClient, RegistryError
from buildgen.registry.media import check_digest, split_digest

log = logging.getLogger(__name__)

# A retryable failure (a connection that broke mid-blob) gets this many more attempts on the
# same source before falling through to the next; the client already retried the request.
STREAM_RETRIES = 1
# Failures listed in full in a combined error; the rest are counted.
MAX_LISTED_FAILURES = 10


class BlobCacheError(ExternalToolError):
    """A blob could not be fetched from any source, or its bytes do not match (exit code 3)."""

    def __init__(self, digest: str, message: str) -> None:
        self.digest = digest
        super().__init__(message)


@dataclass(frozen=True)
class BlobRef:
    """One blob to fetch: where it lives, what it must hash to, how big it is."""

    repository: str
    """Full repository name, "host[:port]/path/name" (the origin, tried last)."""
    digest: str
    size: int
    mirrors: tuple[str, ...] = ()
    """Repositories to try first, in order (e.g. a pull-through mirror's name for it)."""


class Prefetch:
    """Blobs being fetched by `BlobCache.prefetch`; leaving the `with` block cancels the ones
    not started and waits for the others."""

    def __init__(self, pool: ThreadPoolExecutor, futures: dict[str, Future[Path]]) -> None:
        self._pool = pool
        self._futures = futures

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def path(self, digest: str) -> Path:
        """The cached blob, once fetched and verified (raises BlobCacheError if it failed)."""
        try:
            return self._futures[digest].result()
        except KeyError:
            raise ValueError(f"blob {digest} is not being fetched") from None

    def wait(self) -> dict[str, Path]:
        """Every blob: {digest: path}; all failures together in one error."""
        failures: list[BaseException] = []
        paths: dict[str, Path] = {}
        for digest, future in self._futures.items():
            try:
                paths[digest] = future.result()
            except (ExternalToolError, RegistryError, OSError) as exc:
                failures.append(exc)
        if failures:
            lines = [str(f) for f in failures[:MAX_LISTED_FAILURES]]
            if len(failures) > MAX_LISTED_FAILURES:
                lines.append(f"... and {len(failures) - MAX_LISTED_FAILURES} more")
            first = failures[0]
            raise BlobCacheError(
                first.digest if isinstance(first, BlobCacheError) else "",
                f"{len(failures)} of {len(self._futures)} blobs could not be fetched:\n"
                + "\n".join(lines),
            )
        return paths


class BlobCache:
    """Blobs by digest under `root`; thread-safe, and safe for concurrent processes.

    `stats` counts "hit" (already cached), "download" (blobs downloaded and verified),
    "bytes" (bytes downloaded), "mirror" (downloads served by a mirror) and "source failed"
    (a source that failed and was fallen through).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats: collections.Counter[str] = collections.Counter()
        self._stats_lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def path(self, digest: str) -> Path:
        """Where the blob `digest` lives in the cache (whether or not it is there yet)."""
        algorithm, hexdigest = split_digest(digest)
        return self.root / "blobs" / algorithm / hexdigest

    def has(self, digest: str, size: int) -> bool:
        """Whether the blob is cached with the right size (not re-hashed: see the module doc)."""
        try:
            st = os.lstat(self.path(digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def fetch(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        size: int,
        mirrors: Sequence[str] = (),
    ) -> Path:
        """The cached blob's path, downloading it first (mirrors in order, then `repository`)."""
        return self._fetch(client, digest, size, [*mirrors, repository])

    def fetch_all(
        self, client: RegistryClient, items: Iterable[BlobRef], workers: int = 8
    ) -> dict[str, Path]:
        """Fetch every blob in parallel, each digest once; returns {digest: path}.

        When several items name one digest, their sources are all tried (in order of
        appearance). Every failure is reported together in one error, after the others finish.
        """
        with self.prefetch(client, items, workers) as fetches:
            return fetches.wait()

    def prefetch(
        self, client: RegistryClient, items: Iterable[BlobRef], workers: int = 8
    ) -> Prefetch:
        """Start fetching every blob in parallel (as `fetch_all`), in the order given; use the
        result as a context manager, and take each blob with `path` as soon as it is there:

            with cache.prefetch(client, refs) as fetches:
                for ref in refs:
                    apply(fetches.path(ref.digest))   # waits for that blob only
        """
        sources: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for item in items:
            check_digest(item.digest)
            if sizes.setdefault(item.digest, item.size) != item.size:
                raise ValueError(
                    f"blob {item.digest} is listed with two sizes: "
                    f"{sizes[item.digest]} and {item.size}"
                )
            listed = sources.setdefault(item.digest, [])
            listed.extend(s for s in (*item.mirrors, item.repository) if s not in listed)
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="blob")
        futures = {
            digest: pool.submit(self._fetch, client, digest, sizes[digest], order)
            for digest, order in sources.items()
        }
        return Prefetch(pool, futures)

    # -- internals ---------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _lock(self, digest: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(digest, threading.Lock())

    def _fetch(
        self, client: RegistryClient, digest: str, size: int, sources: Sequence[str]
    ) -> Path:
        target = self.path(digest)
        if size < 0:
            raise ValueError(f"blob {digest}: size must not be negative")
        # One download per digest in this process; other processes are handled by the rename.
        with self._lock(digest):
            if self.has(digest, size):
                self._count("hit")
                return target
            errors: list[str] = []
            for index, source in enumerate(sources):
                for attempt in range(STREAM_RETRIES + 1):
                    try:
                        self._download(client, source, digest, size, target)
                    except (RegistryError, BlobCacheError) as exc:
                        retry = (
                            isinstance(exc, RegistryError)
                            and exc.retryable
                            and attempt < STREAM_RETRIES
                        )
                        log.debug("blob %s from %s failed: %s", digest, source, exc)
                        if retry:
                            continue
                        errors.append(f"{source}: {exc}")
                        self._count("source failed")
                        break
                    if index < len(sources) - 1:
                        self._count("mirror")
                    return target
            raise BlobCacheError(
                digest,
                f"blob {digest} could not be fetched from any source:\n  " + "\n  ".join(errors),
            )

    def _download(
        self, client: RegistryClient, source: str, digest: str, size: int, target: Path
    ) -> None:
        """Stream the blob into a 0600 temp file, verify sha256 and size, rename into place."""
        algorithm, _ = split_digest(digest)
        tmpdir = self.root / "tmp"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (self.root / "blobs", target.parent, tmpdir):
            directory.mkdir(mode=0o700, exist_ok=True)
        # mkstemp creates the file 0600, so not even a partial layer is ever readable by others.
        fd, temp = tempfile.mkstemp(prefix=f"{target.name[:16]}.", suffix=".part", dir=tmpdir)
        try:
            h = hashlib.new(algorithm)
            received = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in client.get_blob(source, digest, size=size):
                    received += len(chunk)
                    if received > size:
                        # Stop at once: a source sending more than the descriptor said must not
                        # be able to fill the disk.
                        raise BlobCacheError(
                            digest,
                            f"blob {digest} from {source} is larger than its size {size}",
                        )
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if received != size:
                raise BlobCacheError(
                    digest, f"blob {digest} from {source} has {received} bytes, expected {size}"
                )
            actual = f"{algorithm}:{h.hexdigest()}"
            if actual != digest:
                raise BlobCacheError(
                    digest, f"blob {digest} from {source} does not match its digest: {actual}"
                )
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._count("download")
        self._count("bytes", received)
        log.debug("fetched %s (%d bytes) from %s", digest, received, source)
