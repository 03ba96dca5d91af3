"""Paths inside a root directory, resolved as a container runtime resolves them, from an fd.

    parts = clean("../usr/./lib/")           # ("usr", "lib"): never above the root
    found = resolve(root_fd, parts)          # (real path, fd of that directory) or None

A layer that writes `lib/x.so` over an earlier layer's `lib -> usr/lib` puts it in
`usr/lib/x.so`: containerd, moby (in its chroot) and umoci (securejoin) resolve a symlink met
on the way to an entry inside the rootfs, an absolute target or `..` clamped at the root, and
so does `resolve`. It walks one component at a time with openat(O_NOFOLLOW | O_DIRECTORY)
from an fd of the root and reads each symlink it meets itself, so no step can leave the root,
whatever the tree holds or another process swaps in meanwhile (a swapped-in symlink is read
and resolved in the root too). This is what openat2(RESOLVE_IN_ROOT) does in the kernel; Python
has no binding for it, and one path walked here is a few system calls.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Symlinks one lookup may follow: continuity's RootPath (containerd) stops at 255 as well.
MAX_LINKS = 255

Parts = tuple[str, ...]


class PathRefused(Exception):
    """A path cannot be resolved in the root (a loop, a non-directory on the way, too deep)."""


def clean(name: str) -> Parts:
    """The components of `name` as Go's filepath.Clean("/" + name) leaves them: empty and `.`
    components dropped, `..` taking the one before it away and never going above the root
    (an absolute name is relative to the root)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return tuple(parts)


def join(parts: Parts) -> str:
    return "/".join(parts)


def open_dir(root_fd: int, parts: Parts) -> int | None:
    """A new fd of the real directory `parts` under `root_fd`, or None where a component is
    missing or not a directory. No symlink is followed: for trees this process made itself."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    os.close(fd)
                    return None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def resolve(
    root_fd: int,
    parts: Parts,
    *,
    create: Callable[[Parts], None] | None = None,
    max_depth: int = 4096,
) -> tuple[Parts, int] | None:
    """The directory `parts` names under `root_fd`, symlinks resolved inside the root: its real
    path and a new fd of it; None where it does not exist or is not a directory.

    With `create`, a missing directory on the way is made (mode 0700, for the caller to set
    when it is done) and `create(real path)` is told, and a non-directory on the way raises
    PathRefused. A symlink loop and a real path deeper than `max_depth` components raise it
    always.
    """
    pending = list(reversed(parts))  # the components still to walk, the next one last
    real: list[str] = []
    # Components past the end of what exists as directories (a missing name, or a file:
    # `blocked`). As in continuity's RootPath (containerd), they are taken as names: a `..`
    # after one takes it away again (`nowhere/../etc` and `file/../etc` are `etc`), and they
    # are made only when the walk is over.
    absent: list[str] = []
    blocked = False
    links = 0
    fd = os.dup(root_fd)
    try:
        while pending:
            name = pending.pop()
            if name == "..":  # only symlink targets bring these: never above the root
                if absent:
                    absent.pop()
                    blocked = blocked and bool(absent)
                elif real:
                    real.pop()
                    os.close(fd)
                    fd = _reopen(root_fd, real)
                continue
            if absent:
                absent.append(name)
                continue
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                absent.append(name)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.lstat(name, dir_fd=fd)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_LINKS:
                        raise PathRefused(
                            f"too many levels of symbolic links (more than {MAX_LINKS}) in "
                            f"{join(parts)!r}"
                        ) from None
                    target = os.readlink(name, dir_fd=fd)
                    if target.startswith("/"):
                        real.clear()
                        os.close(fd)
                        fd = os.dup(root_fd)
                    pending.extend(reversed([p for p in target.split("/") if p and p != "."]))
                    continue
                absent.append(name)
                blocked = True
                continue
            os.close(fd)
            fd = child
            real.append(name)
        if len(real) + len(absent) > max_depth:
            raise PathRefused(f"{join(parts)!r} resolves deeper than {max_depth} directories")
        if absent:
            if blocked and create is not None:
                raise PathRefused(f"{join((*real, absent[0]))} is not a directory")
            if create is None:
                os.close(fd)
                return None
            for name in absent:
                os.mkdir(name, 0o700, dir_fd=fd)
                real.append(name)
                create(tuple(real))
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
    except BaseException:
        os.close(fd)
        raise
    return tuple(real), fd


def _reopen(root_fd: int, real: list[str]) -> int:
    """The directory `real` again (walked as resolved a moment ago: real directories)."""
    fd = open_dir(root_fd, tuple(real))
    if fd is None:
        raise PathRefused(f"{join(tuple(real))} changed while it was being resolved")
    return fd


def copy_files_out(root: Path, path: str, dest: Path) -> list[str]:
    """Copy the regular files directly in the directory `path` of `root` to `dest` (made if
    missing); return their names. `path` is resolved inside the root, and each file is opened
    with O_NOFOLLOW: nothing outside the root is read, whatever links the tree holds (a
    symlink, a device or a directory is skipped)."""
    root_fd = os.open(root, DIR_FLAGS)
    try:
        found = resolve(root_fd, clean(path))
    finally:
        os.close(root_fd)
    if found is None:
        return []
    dir_fd = found[1]
    copied = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(dir_fd)):
            try:  # the type first: opening a device or FIFO may do something
                if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    continue
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)  # fmt: skip
            except OSError:  # a symlink swapped in (ELOOP), or gone
                continue
            with os.fdopen(fd, "rb") as source:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue  # replaced between the two looks
                with (dest / name).open("wb") as target:  # in pieces: a log may be large
                    shutil.copyfileobj(source, target, 1 << 20)
            copied.append(name)
    finally:
        os.close(dir_fd)
    return copied
