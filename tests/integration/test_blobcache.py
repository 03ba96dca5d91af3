"""buildgen.crane.blobcache: the content-addressed blob cache, against the real registry fixture."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.components import Registry, free_port
from support.hostile import digest

from buildgen.crane.blobcache import BlobCache, BlobCacheError, BlobRef
from buildgen.registry import RegistryClient, RegistryOptions

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(RegistryOptions(retries=0, backoff=0.01)) as c:
        yield c


def repo(registry: Registry, name: str) -> str:
    return f"{registry.host}/blobcache/{name}-{uuid.uuid4().hex[:8]}"


def push(client: RegistryClient, repository: str, *blobs: bytes) -> list[BlobRef]:
    for data in blobs:
        client.upload_blob(repository, digest(data), data, len(data))
    return [BlobRef(repository, digest(data), len(data)) for data in blobs]


class Tampering(RegistryClient):
    """A client whose answers from some repositories are other bytes of the right size."""

    def __init__(self, tampered: set[str], options: RegistryOptions) -> None:
        super().__init__(options)
        self.tampered = tampered
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def get_blob(self, repository: str, digest: str, *, size: int | None = None) -> Iterator[bytes]:
        with self.lock:
            self.calls.append(repository)
        if repository in self.tampered:
            return iter([b"\0" * (size or 1)])
        return super().get_blob(repository, digest, size=size)


def leftovers(cache: BlobCache) -> list[str]:
    tmp = cache.root / "tmp"
    return os.listdir(tmp) if tmp.exists() else []


def test_second_fetch_downloads_nothing(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    repository = repo(registry, "warm")
    blobs = [os.urandom(1000 + i) for i in range(3)]
    refs = push(client, repository, *blobs)
    cache = BlobCache(tmp_path / "cache")
    gets = client.stats["GET blob"]

    paths = cache.fetch_all(client, [*refs, refs[0]], workers=4)  # one digest listed twice

    assert {d: p.read_bytes() for d, p in paths.items()} == {digest(b): b for b in blobs}
    assert all(paths[r.digest] == cache.path(r.digest) for r in refs)
    assert (cache.stats["download"], cache.stats["bytes"]) == (3, sum(map(len, blobs)))
    assert client.stats["GET blob"] - gets == 3
    # a second run (a new process: a new BlobCache on the same directory) downloads nothing
    again = BlobCache(tmp_path / "cache")
    assert again.fetch_all(client, refs) == paths
    assert (again.stats["download"], again.stats["hit"]) == (0, 3)
    assert client.stats["GET blob"] - gets == 3
    assert leftovers(cache) == []


def test_cache_is_as_private_as_the_layers_in_it(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    [ref] = push(client, repo(registry, "modes"), b"root-only answers, compressed")
    cache = BlobCache(tmp_path / "cache")
    path = cache.fetch(client, ref.repository, ref.digest, ref.size)
    assert path == tmp_path / "cache" / "blobs" / "sha256" / ref.digest.split(":")[1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (cache.root, cache.root / "blobs", path.parent, cache.root / "tmp"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_mirror_is_tried_first(registry: Registry, tmp_path: Path) -> None:
    origin, mirror = repo(registry, "origin"), repo(registry, "mirror")
    client = Tampering(set(), RegistryOptions(retries=0))
    with client:
        [ref] = push(client, origin, b"shared layer")
        push(client, mirror, b"shared layer")
        [only_mirrored] = push(client, mirror, b"only the mirror has it")
        cache = BlobCache(tmp_path / "cache")
        cache.fetch(client, origin, ref.digest, ref.size, mirrors=[mirror])
        cache.fetch(client, origin, only_mirrored.digest, only_mirrored.size, mirrors=[mirror])
        assert client.calls == [mirror, mirror]
    assert cache.stats["mirror"] == 2
    assert cache.stats["source failed"] == 0


def test_failing_mirrors_fall_through_to_the_origin(registry: Registry, tmp_path: Path) -> None:
    origin = repo(registry, "origin")
    empty_mirror = repo(registry, "empty-mirror")  # answers 404
    dead_mirror = f"127.0.0.1:{free_port()}/nobody/listens"  # connection refused
    lying_mirror = repo(registry, "lying-mirror")  # serves other bytes of the right size
    client = Tampering({lying_mirror}, RegistryOptions(retries=0, backoff=0.01))
    with client:
        [ref] = push(client, origin, b"the real layer")
        cache = BlobCache(tmp_path / "cache")
        path = cache.fetch(
            client, origin, ref.digest, ref.size, mirrors=[empty_mirror, dead_mirror, lying_mirror]
        )
        assert client.calls[0] == empty_mirror and client.calls[-1] == origin
    assert path.read_bytes() == b"the real layer"
    assert cache.stats["source failed"] == 3
    assert (cache.stats["download"], cache.stats["mirror"]) == (1, 0)
    assert leftovers(cache) == []


def test_wrong_bytes_are_an_error_and_leave_nothing_behind(
    registry: Registry, tmp_path: Path
) -> None:
    origin = repo(registry, "tampered")
    client = Tampering({origin}, RegistryOptions(retries=0))
    with client:
        [ref] = push(client, origin, b"what the digest says")
        cache = BlobCache(tmp_path / "cache")
        with pytest.raises(BlobCacheError, match=f"blob {ref.digest} .*does not match") as info:
            cache.fetch(client, origin, ref.digest, ref.size)
    assert info.value.digest == ref.digest and info.value.exit_code == 3
    assert not cache.path(ref.digest).exists()
    assert leftovers(cache) == []


def test_size_is_verified_too(registry: Registry, client: RegistryClient, tmp_path: Path) -> None:
    [ref] = push(client, repo(registry, "size"), b"0123456789")
    cache = BlobCache(tmp_path / "cache")
    for size, error in ((4, "larger than its size 4"), (20, "10 bytes, expected 20")):
        with pytest.raises(BlobCacheError, match=error):
            cache.fetch(client, ref.repository, ref.digest, size)
        assert not cache.path(ref.digest).exists()
    assert leftovers(cache) == []


def test_has_checks_presence_and_size(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    """has() is a stat: a truncated file is fetched again; a same-size corrupt one is left to
    apply_layer's digest check (tests/integration/test_extract.py::test_corrupted_cached_blob_is_refused)."""
    [ref] = push(client, repo(registry, "has"), b"complete blob")
    cache = BlobCache(tmp_path / "cache")
    assert not cache.has(ref.digest, ref.size)
    path = cache.fetch(client, ref.repository, ref.digest, ref.size)
    assert cache.has(ref.digest, ref.size) and not cache.has(ref.digest, ref.size + 1)
    path.write_bytes(b"truncated")
    assert not cache.has(ref.digest, ref.size)
    cache.fetch(client, ref.repository, ref.digest, ref.size)
    assert path.read_bytes() == b"complete blob"
    assert cache.stats["download"] == 2


def test_fetch_all_reports_every_failure_together(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    repository = repo(registry, "partial")
    [present] = push(client, repository, b"present")
    missing = [BlobRef(repository, digest(x), len(x)) for x in (b"missing one", b"missing two")]
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(BlobCacheError, match="2 of 3 blobs could not be fetched") as info:
        cache.fetch_all(client, [present, *missing])
    assert all(m.digest in str(info.value) for m in missing)
    assert cache.has(present.digest, present.size)  # the others still completed


def test_prefetch_hands_over_each_blob_as_it_lands(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    repository = repo(registry, "prefetch")
    first, second = push(client, repository, b"first" * 1000, b"second" * 1000)
    missing = BlobRef(repository, digest(b"not there"), 9)
    cache = BlobCache(tmp_path / "cache")
    with cache.prefetch(client, [first, missing, second], workers=2) as fetches:
        assert fetches.path(first.digest) == cache.path(first.digest)
        assert cache.path(first.digest).read_bytes() == b"first" * 1000
        with pytest.raises(BlobCacheError, match=missing.digest):
            fetches.path(missing.digest)  # the failure of that blob, and of that blob only
        assert fetches.path(second.digest).read_bytes() == b"second" * 1000
        with pytest.raises(BlobCacheError, match="1 of 3 blobs could not be fetched"):
            fetches.wait()
        with pytest.raises(ValueError, match="not being fetched"):
            fetches.path(digest(b"never asked for"))
    assert leftovers(cache) == []


def test_fetch_all_tries_every_repository_listing_a_digest(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    has_it, lacks_it = repo(registry, "has-it"), repo(registry, "lacks-it")
    [ref] = push(client, has_it, b"base layer shared by two images")
    cache = BlobCache(tmp_path / "cache")
    paths = cache.fetch_all(client, [BlobRef(lacks_it, ref.digest, ref.size), ref])
    assert paths[ref.digest].read_bytes() == b"base layer shared by two images"
    assert cache.stats["download"] == 1


def test_bad_input_is_refused(client: RegistryClient, tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="not a sha256/sha512 digest"):
        cache.path("md5:abc")
    sha = "sha256:" + "a" * 64
    with pytest.raises(ValueError, match="two sizes"):
        cache.fetch_all(client, [BlobRef("r/x", sha, 1), BlobRef("r/y", sha, 2)])


CONCURRENT = """
import sys
from pathlib import Path
from buildgen.crane.blobcache import BlobCache, BlobRef
from buildgen.registry import RegistryClient, RegistryOptions
root, repository, *refs = sys.argv[1:]
items = [BlobRef(repository, d, int(s)) for d, s in (r.split("=") for r in refs)]
with RegistryClient(RegistryOptions(retries=2, backoff=0.01)) as client:
    paths = BlobCache(Path(root)).fetch_all(client, items, workers=4)
assert len(paths) == len(items)
"""


def test_concurrent_processes_share_one_cache(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    repository = repo(registry, "concurrent")
    blobs = [os.urandom(200_000) for _ in range(6)]
    refs = push(client, repository, *blobs)
    args = [str(tmp_path / "cache"), repository, *(f"{r.digest}={r.size}" for r in refs)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]  # fmt: skip
    for process in processes:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output.decode()
    cache = BlobCache(tmp_path / "cache")
    assert all(cache.path(digest(b)).read_bytes() == b for b in blobs)
    assert leftovers(cache) == []
