"""Rootfs trees as comparable data, for tests and benches: every path's type, mode, owner and
content hash or link target, and the hardlink groups. Walked from fds, so paths longer than
PATH_MAX are seen too."""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from buildgen.crane.extract import (
    ExtractPolicy,
    LayerStats,
    apply_image,
)

from .hostile import (
    Layer,
    write_blob,
)

_CHUNK = 1 << 20


class TreeEntry(NamedTuple):
    """One path of a rootfs as `tree` describes it."""

    kind: str
    """"dir", "file", "symlink", "fifo", "char", "block" or "socket"."""
    mode: int
    """Permission bits with setuid/setgid/sticky (stat.S_IMODE)."""
    uid: int
    gid: int
    content: str
    """"sha256:<hex>" of a file's bytes, a symlink's target, "" for anything else."""


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
    ):
        if test(mode):
            return kind
    return "socket"


def _walk_tree(rootfs: Path) -> Iterable[tuple[str, int, str, os.stat_result]]:
    """(path "/a/b", fd of its directory, its name, lstat) of everything under `rootfs`,
    walked from fds, so paths longer than PATH_MAX are seen too."""
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(rootfs):
        rel = os.path.relpath(dirpath, rootfs)
        prefix = "/" if rel == "." else f"/{rel}/"
        for name in dirnames + filenames:
            yield prefix + name, dir_fd, name, os.lstat(name, dir_fd=dir_fd)


def tree(rootfs: Path) -> dict[str, TreeEntry]:
    """Every path under `rootfs` ("/a/b", the root itself excluded), for comparisons."""
    entries: dict[str, TreeEntry] = {}
    for path, dir_fd, name, st in _walk_tree(rootfs):
        kind = _kind(st.st_mode)
        content = ""
        if kind == "file":
            content = _file_digest(dir_fd, name)
        elif kind == "symlink":
            content = os.readlink(name, dir_fd=dir_fd)
        elif kind in ("char", "block"):
            content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        entries[path] = TreeEntry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    return entries


def hardlinks(rootfs: Path) -> set[frozenset[str]]:
    """The groups of paths under `rootfs` that are one inode (non-directories only)."""
    groups: dict[tuple[int, int], set[str]] = {}
    for path, _, _, st in _walk_tree(rootfs):
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), set()).add(path)
    return {frozenset(paths) for paths in groups.values() if len(paths) > 1}


def _file_digest(dir_fd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def apply(
    tmp_path: Path, *layers: Layer, policy: ExtractPolicy | None = None, rootfs: str = "rootfs"
) -> list[LayerStats]:
    """Apply gzip layers (stored content-addressed under tmp_path/blobs) to tmp_path/rootfs."""
    blobs = [(write_blob(tmp_path / "blobs", x.blob), x.media_type, x.diff_id) for x in layers]
    return apply_image(tmp_path / rootfs, blobs, policy=policy or ExtractPolicy())


def snapshot(top: Path, *exclude: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under `top` but `exclude`: type, mode, owner, content or target, mtime."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [n for n in dirnames if Path(dirpath, n) not in exclude]
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            if full in exclude:
                continue
            st = os.lstat(full)
            content: str | bytes = ""
            if stat.S_ISREG(st.st_mode):
                content = full.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(full)
            found[str(full.relative_to(top))] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                content,
                st.st_mtime_ns,
                st.st_nlink,
            )
    return found


def user_xattrs_supported(directory: Path) -> str | None:
    """None when `directory`'s file system takes user.* xattrs, else why not."""
    probe = directory / f".xattr-probe-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.buildgen-probe", b"1")
    except OSError as exc:
        return f"user.* xattrs are refused by the file system of {directory}: {exc.strerror}"
    finally:
        probe.unlink()
    return None
