"""Copy an unpacked rootfs exactly and fast: how a warm `materialize` makes its rootfs.

    stats = copy_tree(Path("cache/unpacked/<chain id>"), Path("rootfs"))

The copy has what the source has, as `extract.tree` and `extract.hardlinks` see it: paths,
types, modes with setuid/setgid/sticky, numeric owners, contents, symlink targets, hardlink
groups, FIFOs, mtimes and (where the file system takes them) xattrs. File contents are copied in
the kernel (`copy_file_range`: no bytes through Python, and a reflink on file systems that can
share extents, such as XFS and Btrfs).

Safety, the same rules as the extraction (`extract.py`):
- the destination must not exist; it is made 0700, and every directory is made 0700 and gets
  its owner, mode and times only when it is full, deepest first, so nothing is reachable with
  looser modes while the copy runs;
- files are created O_EXCL|O_NOFOLLOW with mode 0600, filled, chowned, then chmodded (chown
  clears setuid/setgid, so chmod comes after);
- names come from the source's directory listings, and every directory on both sides is opened
  from its parent's fd with O_NOFOLLOW, so no symlink is ever followed on either side;
- device nodes are made again (the extraction makes them as root, as Docker does) and never
  opened; sockets are refused: no layer can hold one;
- no path is handed to the kernel whole: a tree may hold paths longer than PATH_MAX.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildgen.crane.rootpath import open_dir
from buildgen.errors import ExternalToolError
from buildgen.fsutil import Xattrs, read_xattrs, write_xattrs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Reading the source must not touch its atimes (the copy takes them from it): root may say so.
_NOATIME = getattr(os, "O_NOATIME", 0)
_COPY_CHUNK = 1 << 30


class CopyError(ExternalToolError):
    """The tree could not be copied (exit code 3)."""


@dataclass
class CopyStats:
    """What `copy_tree` made (and, with more, `extract.LayerStats` what a layer did)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    fifos: int = 0
    devices: int = 0
    bytes: int = 0
    """Bytes of regular-file content written."""
    xattrs_skipped: int = 0
    """xattrs the file system refused (EPERM/ENOTSUP), e.g. user.* on a symlink."""


@dataclass(frozen=True)
class _PendingDir:
    """A copied directory whose metadata is applied when the copy is done."""

    path: str  # relative to the destination root ("" for the root)
    st: os.stat_result
    xattrs: Xattrs


def copy_tree(source: Path, destination: Path, *, workers: int = 4) -> CopyStats:
    """Copy the directory `source` to the new directory `destination` (see the module doc).

    Files are copied by `workers` threads (the work is system calls, which run in parallel),
    or by this one when `workers` is 1. The kernel's file creation is most of the work: on a
    2-CPU machine (ext4) a second thread helps when creation is slow (right after other large
    writes or deletions: 60,000 files / 1 GB in 5.7-6.4 s with 2 threads against 8.0-8.2 s with
    one) and costs a little when it is fast (4.5 s with one, 5.3 s with 2).
    """
    return _Copier(source, destination, max(1, workers)).run()


class _DirPair:
    """A source directory and its copy, open while files in them are still being copied."""

    def __init__(self, source_fd: int, target_fd: int) -> None:
        self.source_fd = source_fd
        self.target_fd = target_fd
        self._users = 1  # the walker, until it has listed the directory
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._users == 0
        if done:
            os.close(self.source_fd)
            os.close(self.target_fd)


class _Copier:
    def __init__(self, source: Path, destination: Path, workers: int) -> None:
        self.source = source
        self.destination = destination
        self.stats = CopyStats()
        self.pending: list[_PendingDir] = []
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first copy's path
        self.later_links: list[tuple[str, str]] = []  # (first copy's path, another name)
        self.root_fd = -1
        self.noatime = _NOATIME
        self.workers = workers
        self._stats_lock = threading.Lock()

    def run(self) -> CopyStats:
        try:
            source_fd = os.open(self.source, _DIR_FLAGS)
        except OSError as exc:
            raise CopyError(f"cannot open {self.source}: {exc.strerror}") from exc
        try:
            try:
                os.mkdir(self.destination, 0o700)
                self.root_fd = os.open(self.destination, _DIR_FLAGS)
            except OSError as exc:
                os.close(source_fd)
                raise CopyError(f"cannot make {self.destination}: {exc.strerror}") from exc
            root = _DirPair(source_fd, os.dup(self.root_fd))
            try:
                self.pending.append(_PendingDir("", os.fstat(source_fd), read_xattrs(source_fd)))
                with ThreadPoolExecutor(self.workers, thread_name_prefix="copy") as pool:
                    futures: list[Future[None]] = []
                    self._copy_dir(root, "", pool, futures)
                    for future in futures:
                        future.result()
                for first, other in self.later_links:
                    # Both inside the new tree, which only this copy has written: the names
                    # are walked in it, as made (real directories all the way), one directory
                    # at a time (a path may be longer than the kernel takes in one call).
                    self._link(first, other)
                    self.stats.hardlinks += 1
                self._finish_dirs()
            finally:
                os.close(self.root_fd)
        except OSError as exc:
            raise CopyError(
                f"copying {self.source} to {self.destination}: {exc.strerror or exc}"
            ) from exc
        return self.stats

    def _copy_dir(
        self, pair: _DirPair, rel: str, pool: ThreadPoolExecutor, futures: list[Future[None]]
    ) -> None:
        """Copy the directory `pair` (the walker's use of it ends here), files in `pool`."""
        try:
            with os.scandir(pair.source_fd) as entries:
                listing = [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
            for name, st in listing:
                path = f"{rel}/{name}" if rel else name
                mode = st.st_mode
                if st.st_nlink > 1 and not stat.S_ISDIR(mode):
                    first = self.links.setdefault((st.st_dev, st.st_ino), path)
                    if first != path:  # another name of an inode being copied: link it later
                        self.later_links.append((first, path))
                        continue
                if stat.S_ISREG(mode):
                    pair.acquire()
                    if self.workers > 1:
                        futures.append(pool.submit(self._file, pair, name, st))
                    else:  # no hand-off to a thread
                        self._file(pair, name, st)
                elif stat.S_ISDIR(mode):
                    os.mkdir(name, 0o700, dir_fd=pair.target_fd)
                    child_source = os.open(name, _DIR_FLAGS, dir_fd=pair.source_fd)
                    try:
                        child_target = os.open(name, _DIR_FLAGS, dir_fd=pair.target_fd)
                    except OSError:
                        os.close(child_source)
                        raise
                    child = _DirPair(child_source, child_target)
                    self.pending.append(_PendingDir(path, st, read_xattrs(child_source)))
                    self._copy_dir(child, path, pool, futures)
                    self.stats.dirs += 1
                elif stat.S_ISLNK(mode):
                    self._symlink(pair.source_fd, pair.target_fd, name, st)
                elif stat.S_ISFIFO(mode):
                    os.mkfifo(name, 0o600, dir_fd=pair.target_fd)
                    fd = os.open(name, _READ_FLAGS | os.O_NONBLOCK, dir_fd=pair.target_fd)
                    try:
                        self._metadata(fd, st, self._source_xattrs(pair.source_fd, name))
                    finally:
                        os.close(fd)
                    self.stats.fifos += 1
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    self._device(pair.source_fd, pair.target_fd, name, st)
                else:
                    raise CopyError(
                        f"{self.source}/{path} is a socket, which an unpacked image never "
                        "holds: not copying it"
                    )
        finally:
            pair.release()

    def _file(self, pair: _DirPair, name: str, st: os.stat_result) -> None:
        try:
            source = self._open_source(pair.source_fd, name)
            try:
                target = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=pair.target_fd)
                try:
                    _copy_bytes(source, target, st.st_size)
                    self._metadata(target, st, read_xattrs(source))
                finally:
                    os.close(target)
            finally:
                os.close(source)
        finally:
            pair.release()
        with self._stats_lock:
            self.stats.files += 1
            self.stats.bytes += st.st_size

    def _open_source(self, source_fd: int, name: str) -> int:
        if self.noatime:
            try:
                return os.open(name, _READ_FLAGS | self.noatime, dir_fd=source_fd)
            except PermissionError:  # not the owner and not root: atimes may move, so be it
                self.noatime = 0
        return os.open(name, _READ_FLAGS, dir_fd=source_fd)

    def _symlink(self, source_fd: int, target_fd: int, name: str, st: os.stat_result) -> None:
        os.symlink(os.readlink(name, dir_fd=source_fd), name, dir_fd=target_fd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=target_fd, follow_symlinks=False)
        xattrs = self._source_xattrs(source_fd, name)
        if xattrs:
            self._set_xattrs(f"/proc/self/fd/{target_fd}/{name}", xattrs)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=target_fd,
                 follow_symlinks=False)  # fmt: skip
        self.stats.symlinks += 1

    def _device(self, source_fd: int, target_fd: int, name: str, st: os.stat_result) -> None:
        """A device node, as the extraction made it; never opened (see extract._device)."""
        os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=target_fd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=target_fd, follow_symlinks=False)
        xattrs = self._source_xattrs(source_fd, name)
        if xattrs:
            self._set_xattrs(f"/proc/self/fd/{target_fd}/{name}", xattrs)
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=target_fd)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=target_fd,
                 follow_symlinks=False)  # fmt: skip
        with self._stats_lock:
            self.stats.devices += 1

    def _link(self, first: str, other: str) -> None:
        source, target = first.split("/"), other.split("/")
        source_fd = self._open_made(source[:-1])
        try:
            target_fd = self._open_made(target[:-1])
            try:
                os.link(source[-1], target[-1], src_dir_fd=source_fd, dst_dir_fd=target_fd,
                        follow_symlinks=False)  # fmt: skip
            finally:
                os.close(target_fd)
        finally:
            os.close(source_fd)

    def _open_made(self, parts: list[str]) -> int:
        """A directory this copy made (real directories all the way: it made them all, 0700,
        and nothing else writes there): by its whole path in one call where the kernel takes
        it, else one directory at a time."""
        if not parts:
            return os.dup(self.root_fd)
        try:
            return os.open("/".join(parts), _DIR_FLAGS, dir_fd=self.root_fd)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
        fd = open_dir(self.root_fd, tuple(parts))
        if fd is None:
            raise CopyError(f"{self.destination}/{'/'.join(parts)} went away during the copy")
        return fd

    def _metadata(self, fd: int, st: os.stat_result, xattrs: Xattrs) -> None:
        os.fchown(fd, st.st_uid, st.st_gid)
        self._set_xattrs(fd, xattrs)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid/setgid
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _finish_dirs(self) -> None:
        """Owner, xattrs, mode and times of every directory, deepest first (a 0500 directory
        was still writable while it was filled; its times are set after its last entry)."""
        for pending in sorted(self.pending, key=lambda p: p.path.count("/") + bool(p.path),
                              reverse=True):  # fmt: skip
            fd = self._open_made(pending.path.split("/") if pending.path else [])
            try:
                self._metadata(fd, pending.st, pending.xattrs)
            finally:
                os.close(fd)

    def _source_xattrs(self, source_fd: int, name: str) -> Xattrs:
        return read_xattrs(f"/proc/self/fd/{source_fd}/{name}")

    def _set_xattrs(self, target: int | str, xattrs: Xattrs) -> None:
        if not xattrs:
            return
        refused = write_xattrs(target, xattrs)
        if refused:
            with self._stats_lock:
                self.stats.xattrs_skipped += len(refused)


def _copy_bytes(source: int, target: int, size: int) -> None:
    """All of `source` into `target`, in the kernel when it can (else through a buffer)."""
    left = size
    try:
        while left > 0:
            done = os.copy_file_range(source, target, min(left, _COPY_CHUNK))
            if done == 0:
                break
            left -= done
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while chunk := os.read(source, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
        return
    if left > 0:
        raise CopyError("a file shrank while it was copied")
