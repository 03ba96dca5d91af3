"""Unpacked images kept by chain ID, so that a warm `materialize` copies instead of extracting.

    trees = UnpackedCache(cache_root / "unpacked", limit=20 * 10**9)
    source = trees.get(layers) or trees.build(layers)   # layers: (blob, media type, diff_id)
    copy_tree(source, rootfs)

Extracting an image is decompressing, hashing and parsing every tar header in Python; copying
the tree it gave is a few system calls per file with the contents copied in the kernel, several
times faster. The key is the OCI chain ID of the image's layers (the diff_ids chained as
`sha256(parent + " " + diff_id)`): the same layers in the same order give the same tree.

Rules, and why:
- A tree is only ever visible under its chain ID once complete: it is extracted into
  `tmp-*`, then renamed into place, and its seal `<chain id hex>.json` (what it holds: files,
  bytes) is written last, atomically. A tree without a seal is unfinished and is ignored (and
  removed by the next `build`). Concurrent builders of one chain ID: the first rename wins, the
  other's copy is discarded.
- The directory is 0700, like the blob cache: trees hold root-only files (a benchmark's
  answers). Trees are made from blobs whose digests and diff_ids were verified as they were
  extracted; they are not re-hashed on each use (as a container runtime's unpacked layers are
  not), so the cache directory must be as trusted as the rootfs it feeds.
- Images without diff_ids in their config (none made by BuildKit or Docker) are not kept.
- `limit` bounds the bytes of file contents kept: after a build, the least recently used trees
  go first (a tree's use touches its seal). A tree in use is never removed, by any process:
  its user holds a shared `flock` on `<chain id hex>.lock` (`hold`) while it copies the tree,
  and eviction takes that lock exclusively without waiting, or passes the tree by. A tree that
  is the lower directory of an overlay mounted in this mount namespace is passed by too (the
  mount outlives the process that made it); one mounted only in another namespace (another
  container sharing the cache) is not seen. The lock files stay: removing one while another
  process opens it would split the lock in two.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from buildgen.crane.extract import apply_image
from buildgen.fsutil import write_atomic

log = logging.getLogger(__name__)

Layer = tuple[Path, str, "str | None"]  # (blob, media type, diff_id)
SEAL_VERSION = 1
# Unfinished trees older than this are left by a process that died: removed by the next build.
STALE_SECONDS = 6 * 3600


def chain_id_of(diff_ids: Sequence[str | None]) -> str | None:
    """The chain ID of layers with these diff_ids, or None when one is unknown or not sha256."""
    if not diff_ids or any(d is None or not d.startswith("sha256:") for d in diff_ids):
        return None
    return chain_id([d for d in diff_ids if d is not None])


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI chain ID of layers with these diff_ids (image-spec config.md, "ChainID")."""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def _checked(layers: Iterable[Layer], diff_ids: Sequence[str | None]) -> Iterator[Layer]:
    """`layers`, each with the diff_id the key was made of (extraction verifies it)."""
    count = 0
    for (blob, media_type, _), diff_id in zip(layers, diff_ids, strict=False):
        count += 1
        yield blob, media_type, diff_id
    if count != len(diff_ids):
        raise ValueError(f"{count} layers for {len(diff_ids)} diff_ids")


class UnpackedCache:
    """Unpacked images under `root`, by chain ID; safe for concurrent processes."""

    def __init__(self, root: Path, *, limit: int) -> None:
        self.root = root
        self.limit = limit

    @contextlib.contextmanager
    def hold(self, chain: str) -> Iterator[None]:
        """Keep the tree of `chain` (made already or not) from eviction until the block ends;
        wait while it is being evicted (after which `get` will not find it)."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = self._lock(chain)
        except OSError as exc:  # a cache this process cannot write: it evicts nothing either
            log.debug("unpacked cache %s: no lock (%s)", self.root, exc)
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def get(self, diff_ids: Sequence[str | None]) -> Path | None:
        """The unpacked tree of the layers with these diff_ids when the cache has it, sealed."""
        key = chain_id_of(diff_ids)
        if key is None:
            return None
        tree, seal = self._paths(key)
        try:
            data = json.loads(seal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if data.get("chainId") != key or not tree.is_dir():
            return None
        os.utime(seal)  # most recently used: evicted last
        return tree

    def build(self, diff_ids: Sequence[str | None], layers: Iterable[Layer]) -> Path:
        """Extract `layers` (whose diff_ids these are, each checked as it is extracted) into a
        new tree in the cache and seal it; its path."""
        key = chain_id_of(diff_ids)
        if key is None:
            raise ValueError("layers without diff_ids have no chain ID")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._remove_stale()
        tree, seal = self._paths(key)
        work = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.root))
        try:
            # The default policy, as without the cache; each layer is extracted as it comes.
            stats = apply_image(work / "tree", _checked(layers, diff_ids))
            try:
                os.rename(work / "tree", tree)
            except OSError:
                if self.get(diff_ids) is not None:
                    log.debug("unpacked %s: another process made it first", key)
                    return tree
                # An unsealed tree under that name: a builder died between its rename and
                # its seal. Ours replaces it.
                shutil.rmtree(tree, ignore_errors=True)
                os.rename(work / "tree", tree)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Contents written: an upper bound of what the tree holds (later layers may delete).
        files, size = sum(s.files for s in stats), sum(s.bytes for s in stats)
        write_atomic(
            seal,
            json.dumps(
                {
                    "sealVersion": SEAL_VERSION,
                    "chainId": key,
                    "diffIds": list(diff_ids),
                    "files": files,
                    "bytes": size,
                    "created": int(time.time()),
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
        )
        self._evict(keep=key)
        return tree

    def _paths(self, key: str) -> tuple[Path, Path]:
        hexdigest = key.split(":", 1)[1]
        return self.root / hexdigest, self.root / f"{hexdigest}.json"

    def _lock(self, key: str) -> int:
        hexdigest = key.split(":", 1)[1]
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(self.root / f"{hexdigest}.lock", flags, 0o600)

    def _seals(self) -> list[tuple[float, int, str]]:
        """(last use, bytes, hex) of every sealed tree."""
        found = []
        for seal in self.root.glob("*.json"):
            try:
                data = json.loads(seal.read_text(encoding="utf-8"))
                found.append((seal.stat().st_mtime, int(data["bytes"]), seal.stem))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def _evict(self, keep: str) -> None:
        """Remove the least recently used trees until the rest fit in `limit` bytes, but for
        the ones in use (held, or under an overlay mount)."""
        seals = sorted(self._seals())
        total = sum(size for _, size, _ in seals)
        mounted: set[str] | None = None  # read only when something is to go
        for _, size, hexdigest in seals:
            if total <= self.limit:
                break
            tree = self.root / hexdigest
            if hexdigest == keep.split(":", 1)[1]:
                continue
            if mounted is None:
                mounted = _overlay_lower_dirs()
            if str(tree.resolve()) in mounted:
                continue
            fd = self._lock(f"sha256:{hexdigest}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                log.debug("unpacked sha256:%s is in use: kept", hexdigest)
                continue
            try:
                log.info("unpacked cache over its limit: removing sha256:%s", hexdigest)
                (self.root / f"{hexdigest}.json").unlink(missing_ok=True)  # unseal first
                shutil.rmtree(tree, ignore_errors=True)
            finally:
                os.close(fd)
            total -= size

    def _remove_stale(self) -> None:
        """Trees left unsealed, and work directories, by processes that died long ago."""
        now = time.time()
        for path in self.root.iterdir():
            if path.suffix == ".json" or not path.is_dir() or path.is_symlink():
                continue
            sealed = path.with_name(path.name + ".json").exists()
            try:
                old = now - path.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
            if not sealed and old:
                shutil.rmtree(path, ignore_errors=True)


def _overlay_lower_dirs() -> set[str]:
    """The lower directories of the overlays mounted in this mount namespace."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    found: set[str] = set()
    for line in lines.splitlines():
        _, separator, rest = line.partition(" - ")
        fields = rest.split(" ")
        if not separator or len(fields) < 3 or fields[0] != "overlay":
            continue
        for option in fields[2].split(","):
            if option.startswith("lowerdir="):
                # Escaped as octal (\040 for a space); paths buildgen mounts have none.
                found.update(option[len("lowerdir=") :].split(":"))
    return found
