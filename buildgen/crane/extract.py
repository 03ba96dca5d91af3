"""Apply OCI image layers to a rootfs directory, as Docker/BuildKit do, without a daemon.

    stats = apply_image(rootfs, [(cache.path(d), media_type, diff_id) for ...])

What comes out equals what Docker (Engine 26 with the containerd image store, whose applier is
containerd's) and umoci produce: paths, types, modes with setuid/setgid/sticky, numeric owners,
contents, symlink targets, hardlinks, FIFOs, device nodes, mtimes and (where the file system
allows) xattrs. OCI whiteouts are honoured: `.wh.NAME` deletes NAME from the lower layers,
`.wh..wh..opq` empties its directory of everything the lower layers put there, and neither ever
deletes what the same layer adds, whatever the order of the tar.

Nothing outside `rootfs` is ever read, created or modified, whatever the layers hold: every
path is resolved from an fd of the rootfs one component at a time (`rootpath.resolve`). The
policy, case by case beside Docker's, is in docs/crane-mode.md ("The extraction policy"):
- names are cleaned as Go's filepath.Clean("/" + name): absolute names and `..` stay inside
  the root; an entry that names the root itself is skipped (as containerd does);
- a symlink met on the way to an entry (laid down by an earlier layer, another image, or
  earlier in this one) is followed inside the rootfs, its target resolved there (an absolute
  one from the rootfs, `..` never above it), as Docker does; the entry's own name is never
  followed: what is there is replaced (a directory over a directory is merged);
- hardlink targets are resolved the same way (their last component not followed) and must be
  a non-directory already in the rootfs;
- whiteouts are resolved the same way and remove only names inside their directory;
- character and block devices are made when this process may (CAP_MKNOD), else refused
  (`ExtractPolicy.devices="skip"` drops them instead); FIFOs always;
- refused: a parent that is not a directory, a symlink loop (more than 255 links in one
  lookup), paths deeper than `ExtractPolicy.max_depth` components, unknown entry types.
When a layer is refused, what it already wrote stays inside the rootfs; the caller discards it.

No file is world-readable while it is being written: regular files are created O_EXCL|O_NOFOLLOW
with mode 0600 (an existing entry is unlinked first, never opened), filled, chowned, then chmodded
to their mode (chmod after chown, because chown clears setuid/setgid). Directories are made 0700
and get their owner, mode and mtime when the layer is done, deepest first, so a 0500 directory
can still be filled and a 0700 one is never briefly open.

Integrity: the blob is hashed while it is decompressed and must match its digest (taken from the
cache path `.../sha256/<hex>` or given), and the uncompressed stream must match the config's
diff_id when one is given; a mismatch is an error, never a warning. The tar stream is read by
`tarstream.TarReader`, as Go's archive/tar reads it: a header that does not parse, or a stream
cut short inside a header or file data, is an error too.

Owners are set with chown, so extraction runs as root (there is no rootless mode). A hardlink
header's owner and mode are applied to the inode, as Docker and containerd do (umoci does not;
honest writers give a hardlink its target's metadata, so the results agree).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from buildgen.crane.layerstream import (
    HashingReader,
    Prefetcher,
    StreamError,
    decompressor,
    layer_compression,
)
from buildgen.crane.rootpath import DIR_FLAGS as _DIR_FLAGS
from buildgen.crane.rootpath import Parts, PathRefused, clean, join, open_dir, resolve
from buildgen.crane.tarstream import (
    BLOCK_DEVICE,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    TarError,
    TarReader,
)
from buildgen.crane.treecopy import CopyStats
from buildgen.errors import ExternalToolError
from buildgen.fsutil import Xattrs, write_xattrs
from buildgen.registry.media import split_digest

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# Docker (and umoci, through the umask) give a parent directory the tar does not list 0755 root.
_IMPLICIT_DIR_MODE = 0o755
_BLOB_PATH = re.compile(r"^(?:(sha256)/([a-f0-9]{64})|(sha512)/([a-f0-9]{128}))$")


class ExtractionError(ExternalToolError):
    """A layer could not be applied, or the extraction policy refused it (exit code 3).

    `layer` is the blob's digest (or its path when the digest is unknown), `entry` the tar
    entry's name as written in the layer (None for a problem with the layer as a whole).
    """

    def __init__(self, layer: str, message: str, *, entry: str | None = None) -> None:
        self.layer = layer
        self.entry = entry
        self.reason = message
        where = f"layer {layer}" if entry is None else f"layer {layer}, entry {entry!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class ExtractPolicy:
    """What `apply_layer` accepts beyond plain files, directories, links and FIFOs."""

    devices: Literal["create", "skip"] = "create"
    """Character/block device entries: make them (refused where this process may not), or
    skip them (counted)."""
    xattrs: bool = True
    """Apply `SCHILY.xattr.*` PAX records (failures the file system reports are counted)."""
    max_depth: int = 256
    """Most path components an entry, or the real path it resolves to, may have (bounds the
    recursion of removals)."""


@dataclass
class LayerStats(CopyStats):
    """What one layer did to the rootfs: what a copy makes, and more."""

    whiteouts: int = 0
    devices_skipped: int = 0
    diff_id: str = ""
    """The digest of the uncompressed tar stream, as computed while reading it."""


# -- public API ------------------------------------------------------------------------------


def blob_digest(blob: Path) -> str | None:
    """The digest a content-addressed path names (`.../sha256/<hex>`), else None."""
    match = _BLOB_PATH.match(f"{blob.parent.name}/{blob.name}")
    if match is None:
        return None
    algorithm = match.group(1) or match.group(3)
    hexdigest = match.group(2) or match.group(4)
    return f"{algorithm}:{hexdigest}"


def apply_layer(
    rootfs: Path,
    blob: Path,
    media_type: str,
    *,
    expected_diff_id: str | None = None,
    digest: str | None = None,
    policy: ExtractPolicy = ExtractPolicy(),
) -> LayerStats:
    """Apply one layer blob to the existing directory `rootfs` (see the module docstring).

    `digest` is the blob's digest; by default it is read from a content-addressed `blob` path
    (as `BlobCache.path` makes). The blob must hash to it, and its uncompressed stream to
    `expected_diff_id` when given. Raises `ExtractionError`.
    """
    digest = digest if digest is not None else blob_digest(blob)
    label = digest or str(blob)
    try:
        compression = layer_compression(media_type)
        raw_algorithm = split_digest(digest)[0] if digest is not None else "sha256"
        diff_algorithm = split_digest(expected_diff_id)[0] if expected_diff_id else "sha256"
    except ValueError as exc:
        raise ExtractionError(label, str(exc)) from None
    stats = LayerStats()
    try:
        root_fd = os.open(rootfs, _DIR_FLAGS)  # a rootfs that is a symlink is refused
    except OSError as exc:
        raise ExtractionError(label, f"cannot open the rootfs {rootfs}: {exc.strerror}") from exc
    try:
        handle = open(blob, "rb", buffering=0)  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        os.close(root_fd)
        raise ExtractionError(label, f"cannot open the blob {blob}: {exc.strerror}") from exc
    applier = _Applier(root_fd, label, policy, stats)
    try:
        with handle:
            raw = HashingReader(handle, raw_algorithm)
            try:
                plain = HashingReader(decompressor(compression, raw), diff_algorithm)
                # Reading, decompressing and hashing run in a thread of their own (zlib and
                # hashlib release the GIL), ahead of the tar parsing and the writes.
                with Prefetcher(plain, raw) as feed:
                    applier.run(feed)
                    feed.drain()
            except Exception as exc:
                # A corrupt blob usually fails as a bad gzip or tar stream before its end:
                # say so rather than blaming the stream.
                if digest is not None:
                    _check_blob_digest(raw, digest, label, blob, cause=exc)
                if isinstance(exc, ExtractionError):
                    raise
                if isinstance(exc, LookupError):  # no decoder for the compression
                    raise ExtractionError(label, str(exc)) from None
                if isinstance(exc, (StreamError, TarError)):
                    raise ExtractionError(label, f"cannot read the layer: {exc}") from exc
                raise
        if digest is not None:
            _check_blob_digest(raw, digest, label, blob)
        stats.diff_id = plain.digest()
        if expected_diff_id is not None and stats.diff_id != expected_diff_id:
            raise ExtractionError(
                label,
                f"the uncompressed layer is {stats.diff_id}, but the image config's diff_id "
                f"is {expected_diff_id}",
            )
        applier.finish()
    finally:
        applier.close()
        os.close(root_fd)
    return stats


def apply_image(
    rootfs: Path,
    layers: Iterable[tuple[Path, str, str | None]],
    *,
    policy: ExtractPolicy = ExtractPolicy(),
) -> list[LayerStats]:
    """Apply (blob, media type, diff_id or None) layers in order; creates `rootfs` if missing.
    `layers` may be a generator: each layer is taken only when the one before is applied.

    A new `rootfs` is made 0755 root, what "/" is in Docker's containers (layers cannot change
    it: an entry naming the root is skipped).
    """
    if not rootfs.exists():
        rootfs.mkdir(parents=True)
        rootfs.chmod(0o755)
    # Tens of thousands of tar headers make no reference cycles: without collections
    # meanwhile, the interpreter does not walk them over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return [
            apply_layer(rootfs, blob, media_type, expected_diff_id=diff_id, policy=policy)
            for blob, media_type, diff_id in layers
        ]
    finally:
        if collecting:
            gc.enable()


def _check_blob_digest(
    raw: HashingReader,
    digest: str,
    label: str,
    blob: Path,
    *,
    cause: BaseException | None = None,
) -> None:
    if cause is not None:
        try:
            raw.drain()
        except StreamError:
            return  # cannot tell: let the original error speak
    actual = raw.digest()
    if actual != digest:
        raise ExtractionError(
            label,
            f"the blob {blob} does not match its digest: its bytes are {actual} (a corrupt "
            "cache file? delete it and fetch it again)",
        ) from cause


# -- the extraction --------------------------------------------------------------------------


class _Refused(Exception):
    """The policy refuses an entry (becomes an ExtractionError naming it)."""


@dataclass
class _DirMeta:
    """The owner, mode, times and xattrs a directory gets when the layer is done."""

    mode: int
    uid: int  # -1: as the kernel made it (fchown leaves it)
    gid: int
    times: tuple[int, int] | None  # (atime_ns, mtime_ns); None leaves them as they fall
    xattrs: Xattrs = field(default_factory=list)


def _times(entry: Entry) -> tuple[int, int]:
    """(atime_ns, mtime_ns) as Docker sets them: atime is never before mtime."""
    mtime, atime = entry.mtime_ns, entry.atime_ns
    return (max(atime, mtime) if atime is not None else mtime), mtime


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_tree(parent_fd: int, name: str) -> None:
    """Remove `name` in `parent_fd` and, for a directory, all under it; never follows links."""
    st = os.lstat(name, dir_fd=parent_fd)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        for child in os.listdir(fd):
            _remove_tree(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _device_name(info: Entry) -> str:
    kind = "character" if info.type == CHAR else "block"
    return f"{kind} device {info.devmajor}:{info.devminor}"


class _Applier:
    """Applies the entries of one layer to the rootfs `root_fd`.

    Names are cleaned (`rootpath.clean`) and their parent directories resolved in the root
    (`rootpath.resolve`): a symlink on the way is followed inside the rootfs, never out of
    it. The last component is never followed. Paths are kept as they really are in the
    rootfs ("usr/lib/x.so" for an entry "lib/x.so" written through `lib -> usr/lib`).
    """

    def __init__(self, root_fd: int, label: str, policy: ExtractPolicy, stats: LayerStats) -> None:
        self.root_fd = root_fd
        self.label = label
        self.policy = policy
        self.stats = stats
        # Paths this layer created, and their ancestors: whiteouts spare them (see _purge).
        self.upper: set[str] = set()
        # Directories created or listed by this layer, and the metadata they end with.
        self.dirs: dict[str, _DirMeta] = {}
        # The last directory looked up: (its name in the layer, its real path, an fd of it).
        # Consecutive entries mostly share a parent.
        self._cached: tuple[Parts, Parts, int] | None = None
        self._lent = -1  # the cached fd an entry is using: not closed when forgotten

    # -- driving ---------------------------------------------------------------------------

    def run(self, plain: Prefetcher) -> None:
        """Apply every entry of the tar stream `plain`."""
        reader = TarReader(plain.chunk)
        while (entry := reader.next()) is not None:
            try:
                self.entry(entry, reader)
            except _Refused as exc:
                raise ExtractionError(self.label, str(exc), entry=entry.name) from None
            except (OSError, ValueError, OverflowError) as exc:
                raise ExtractionError(self.label, _describe(exc), entry=entry.name) from exc

    def finish(self) -> None:
        """Give every directory of this layer its owner, mode and times, deepest first."""
        depth = {rel: (rel.count("/") + 1 if rel else 0) for rel in self.dirs}
        for rel in sorted(self.dirs, key=lambda r: depth[r], reverse=True):
            meta = self.dirs[rel]
            try:
                fd = open_dir(self.root_fd, tuple(rel.split("/")) if rel else ())
                if fd is None:
                    continue  # replaced later in the layer
                try:
                    os.fchown(fd, meta.uid, meta.gid)
                    self._set_xattrs(fd, meta.xattrs)
                    os.fchmod(fd, meta.mode)
                    if meta.times is not None:
                        os.utime(fd, ns=meta.times)
                finally:
                    os.close(fd)
            except (OSError, ValueError, OverflowError) as exc:
                raise ExtractionError(self.label, _describe(exc), entry=rel or "./") from exc

    def close(self) -> None:
        self._forget()

    # -- entries ---------------------------------------------------------------------------

    def entry(self, info: Entry, reader: TarReader) -> None:
        parts = clean(info.name)
        if len(parts) > self.policy.max_depth:
            raise _Refused(f"the name has more than {self.policy.max_depth} components")
        if not parts:
            # "./", "/", "a/..": the root itself, which containerd skips whatever the type
            # (the root of a container's filesystem is its runtime's, 0755 root).
            log.debug("%s: entry %r ignored: it names the root", self.label, info.name)
            return
        kind = info.type
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, parts[-1])
            return
        if kind == CHAR and info.devmajor == info.devminor == 0:
            # overlayfs's own whiteout. Docker's storage is overlayfs, whose mounts show no
            # such node, in any layer: it hides what the layers below put there, as
            # `.wh.NAME` does.
            self._whiteout(parts, WHITEOUT_PREFIX + parts[-1])
            return
        if kind in (CHAR, BLOCK_DEVICE) and self.policy.devices == "skip":
            log.debug("%s: skipping device node %s", self.label, info.name)
            self.stats.devices_skipped += 1
            return
        make = self._MAKERS.get(kind)
        if make is None:
            raise _Refused(f"unsupported tar entry type {info.type!r}")
        with self._parent(parts) as (real, parent):
            path = (*real, parts[-1])
            make(self, parent, path, info, reader)
        self._mark(path)

    def _file(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        name = path[-1]
        try:  # most names are new: no lstat first
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        except FileExistsError:
            self._clear(parent, path, keep_dir=False)
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            for piece in reader.data(_CHUNK):
                _write_all(fd, piece)
            self.stats.bytes += info.size
            self._fd_metadata(fd, info)
        finally:
            os.close(fd)
        self.stats.files += 1

    def _dir(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        name = path[-1]
        if self._clear(parent, path, keep_dir=True) is None:
            os.mkdir(name, 0o700, dir_fd=parent)
        else:
            # A directory from a lower layer is 0700 too until the layer is done: its new
            # mode may be stricter (a 0755 one made root-only), and its files must not be
            # reachable in between.
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
        self.dirs[join(path)] = _DirMeta(
            info.mode & 0o7777, info.uid, info.gid, _times(info), info.xattrs
        )
        self.stats.dirs += 1

    def _symlink(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        name = path[-1]
        self._clear(parent, path, keep_dir=False)
        os.symlink(info.linkname, name, dir_fd=parent)  # the target is kept verbatim
        os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(f"/proc/self/fd/{parent}/{name}", info.xattrs)
        os.utime(name, ns=_times(info), dir_fd=parent, follow_symlinks=False)
        self.stats.symlinks += 1

    def _hardlink(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        """A link to what the target names in the rootfs: its parent resolved in the root like
        any entry's (absolute targets, as kaniko writes them, are relative to the root), its
        last component not followed (a hardlink to a symlink is one more name of the symlink,
        as in containerd)."""
        target = clean(info.linkname)
        missing = _Refused(f"the hardlink target {info.linkname!r} does not exist in the rootfs")
        if not target:
            raise _Refused("a hardlink to the root directory")
        # What is at the name goes first, as in containerd: a target looked up through it (or
        # the name itself) is then missing.
        name = path[-1]
        self._clear(parent, path, keep_dir=False)
        found = self._resolve(target[:-1], create=False)
        if found is None:
            raise missing
        target_parent = found[1]
        try:
            try:
                st = os.lstat(target[-1], dir_fd=target_parent)
            except FileNotFoundError:
                raise missing from None
            if stat.S_ISDIR(st.st_mode):
                raise _Refused(f"the hardlink target {info.linkname!r} is a directory")
            # linkat without AT_SYMLINK_FOLLOW: links the name found, even a symlink.
            os.link(target[-1], name, src_dir_fd=target_parent, dst_dir_fd=parent,
                    follow_symlinks=False)  # fmt: skip
        finally:
            os.close(target_parent)
        # Docker and containerd apply a hardlink header's metadata to the inode.
        if stat.S_ISLNK(st.st_mode):
            os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            self._node_metadata(parent, name, info)
        else:
            self._metadata(parent, name, info)
        self.stats.hardlinks += 1

    def _fifo(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        name = path[-1]
        self._clear(parent, path, keep_dir=False)
        os.mkfifo(name, 0o600, dir_fd=parent)
        self._metadata(parent, name, info)
        self.stats.fifos += 1

    def _device(self, parent: int, path: Parts, info: Entry, reader: TarReader) -> None:
        """A character or block device, made as Docker makes it when it runs as root; where
        this process may not (no CAP_MKNOD: not root, or in a user namespace) it is refused."""
        name = path[-1]
        self._clear(parent, path, keep_dir=False)
        kind = stat.S_IFCHR if info.type == CHAR else stat.S_IFBLK
        try:
            device = os.makedev(info.devmajor, info.devminor)
            os.mknod(name, kind | 0o600, device, dir_fd=parent)
        except PermissionError:
            raise _Refused(
                f"the layer holds a {_device_name(info)}, which only a process with "
                "CAP_MKNOD (root, outside a user namespace: as the crane runner runs) can "
                "create; run as root, or materialize an image without device nodes"
            ) from None
        self._node_metadata(parent, name, info)
        self.stats.devices += 1

    _MAKERS: ClassVar[dict[str, Callable[[_Applier, int, Parts, Entry, TarReader], None]]] = {
        REGULAR: _file,
        DIRECTORY: _dir,
        SYMLINK: _symlink,
        HARDLINK: _hardlink,
        FIFO: _fifo,
        CHAR: _device,
        BLOCK_DEVICE: _device,
    }

    def _whiteout(self, parts: Parts, base: str) -> None:
        """`.wh.NAME` hides NAME of the lower layers, `.wh..wh..opq` everything of theirs in its
        directory. The directory is resolved in the root like any entry's parent, and made
        when missing, as containerd does; what this layer adds is never removed."""
        self.stats.whiteouts += 1
        # `.wh..wh.plnk` and the like (aufs's) are whiteouts of `.wh.plnk` like any other, as
        # Docker's overlayfs storage and umoci take them: only the opaque marker is special.
        name = base[len(WHITEOUT_PREFIX) :]
        if base != WHITEOUT_OPAQUE and name in ("", ".", ".."):
            raise _Refused(f"a whiteout of {name!r}")
        with self._parent(parts) as (real, fd):
            if base == WHITEOUT_OPAQUE:
                self._purge_children(fd, join(real))
            else:
                self._purge(fd, name, join((*real, name)))

    # -- helpers ---------------------------------------------------------------------------

    def _metadata(self, parent: int, name: str, info: Entry) -> None:
        """Owner, xattrs, mode (after the owner) and times of a FIFO or a hardlinked file.

        Through an fd opened O_NOFOLLOW (O_NONBLOCK: opening a FIFO must not wait for a
        writer), so nothing swapped in by name could redirect a chmod.
        """
        fd = os.open(
            name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            self._fd_metadata(fd, info)
        finally:
            os.close(fd)

    def _node_metadata(self, parent: int, name: str, info: Entry) -> None:
        """Owner, xattrs, mode and times of a device node, by name: opening a device may do
        anything its driver does. It was made a moment ago in a directory only root can write
        to (0700 until the layer is done), so the name is still it."""
        os.chown(name, info.uid, info.gid, dir_fd=parent, follow_symlinks=False)
        self._set_xattrs(f"/proc/self/fd/{parent}/{name}", info.xattrs)
        os.chmod(name, info.mode & 0o7777, dir_fd=parent)
        os.utime(name, ns=_times(info), dir_fd=parent, follow_symlinks=False)

    def _fd_metadata(self, fd: int, info: Entry) -> None:
        """Owner, xattrs, mode and times from `info`, through `fd` (chmod after chown, which
        clears setuid/setgid)."""
        os.fchown(fd, info.uid, info.gid)
        self._set_xattrs(fd, info.xattrs)
        os.fchmod(fd, info.mode & 0o7777)
        os.utime(fd, ns=_times(info))

    def _mark(self, path: Parts) -> None:
        """Add the path and its ancestors to `upper`. An ancestor already there has its own
        ancestors there too (nothing removes a path but with everything under it)."""
        rel = join(path)
        while rel and rel not in self.upper:
            self.upper.add(rel)
            rel = rel.rpartition("/")[0]

    @contextlib.contextmanager
    def _parent(self, parts: Parts) -> Iterator[tuple[Parts, int]]:
        """The real path of the directory of the entry `parts` and an fd of it, made with any
        missing directory on the way, for the block's use.

        The fd is the cached one, lent (saving a dup and a close for each of tens of thousands
        of entries): dropped from the cache during the block, it is not closed (`_forget`)
        until the block ends."""
        key = parts[:-1]
        if self._cached is None or self._cached[0] != key:
            found = self._resolve(key, create=True)
            assert found is not None  # with create, a directory or a refusal
            self._forget()
            self._cached = (key, *found)
        assert self._cached is not None
        real, fd = self._cached[1], self._cached[2]
        self._lent = fd
        try:
            yield real, fd
        finally:
            self._lent = -1
            if self._cached is None or self._cached[2] != fd:
                os.close(fd)

    def _resolve(self, parts: Parts, *, create: bool) -> tuple[Parts, int] | None:
        """`rootpath.resolve` from the root, its refusals as the entry's: a new fd."""
        try:
            return resolve(
                self.root_fd,
                parts,
                create=self._made if create else None,
                max_depth=self.policy.max_depth,
            )
        except PathRefused as exc:
            raise _Refused(str(exc)) from None

    def _made(self, real: Parts) -> None:
        """Docker gives a parent directory the tar does not list mode 0755 and the owner the
        kernel gives it: root, and the group of a setgid parent (containerd makes it and only
        chmods it). A parent this layer lists is 0700 root until the layer is done, so its
        setgid group is taken from the listing; a listing later in the layer overrides all."""
        gid = -1
        meta = self.dirs.get(join(real[:-1]))
        if meta is not None:
            if meta.mode & stat.S_ISGID:
                gid = meta.gid
        else:
            fd = open_dir(self.root_fd, real[:-1])
            if fd is not None:
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                if st.st_mode & stat.S_ISGID:
                    gid = st.st_gid
        self.dirs.setdefault(join(real), _DirMeta(_IMPLICIT_DIR_MODE, -1, gid, None))

    def _forget(self) -> None:
        if self._cached is not None:
            fd = self._cached[2]
            self._cached = None
            if fd != self._lent:
                os.close(fd)

    def _clear(self, parent: int, path: Parts, *, keep_dir: bool) -> os.stat_result | None:
        """Make way for a new entry: remove what is at `path` (unless a directory to keep)."""
        try:
            st = os.lstat(path[-1], dir_fd=parent)
        except FileNotFoundError:
            return None
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return st
        self._remove(parent, path[-1], join(path), st)
        return None

    def _remove(self, parent: int, name: str, rel: str, st: os.stat_result | None = None) -> None:
        # A lookup can only have gone through a directory or a symlink: removing a file, FIFO
        # or device cannot change what the cached one found.
        if st is None or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self._forget()
        _remove_tree(parent, name)
        if rel in self.upper:
            # This layer's own entries under it are gone too: forget them.
            prefix = rel + "/"
            self.upper = {p for p in self.upper if p != rel and not p.startswith(prefix)}
            self.dirs = {
                p: m for p, m in self.dirs.items() if p != rel and not p.startswith(prefix)
            }

    def _purge(self, parent: int, name: str, rel: str) -> None:
        """Remove what the lower layers put at `rel`, sparing what this layer added."""
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return
        if rel not in self.upper:
            # Nothing under a path this layer did not touch can be this layer's.
            self._remove(parent, name, rel, st)
        elif stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                self._purge_children(fd, rel)
            finally:
                os.close(fd)

    def _purge_children(self, fd: int, rel: str) -> None:
        for child in os.listdir(fd):
            self._purge(fd, child, f"{rel}/{child}" if rel else child)

    def _set_xattrs(self, target: int | str, xattrs: Xattrs) -> None:
        """Set xattrs on an fd, or on a /proc/self/fd path without following its last link."""
        if not self.policy.xattrs or not xattrs:
            return
        for key, exc in write_xattrs(target, xattrs):
            log.debug("%s: xattr %s not set: %s", self.label, key, exc.strerror)
            self.stats.xattrs_skipped += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return f"{type(exc).__name__}: {exc}"
