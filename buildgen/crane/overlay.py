"""A rootfs as an overlay mount of an unpacked image: `materialize --overlay`.

    upper = overlay_mount(tree, rootfs)      # raises OverlayUnavailable without the right
    ...                                      # (CAP_SYS_ADMIN) or kernel support
    unmount(rootfs)                          # `buildgen materialize --unmount DIR`

This is what container runtimes do with unpacked layers: the cached tree is the read-only lower
layer, shared by every run that uses it; everything a run writes (the fused agent and gateway
directories, then whatever the agent does) lands in its own upper directory, next to the
rootfs as `.<name>.overlay/`. The tree is never written through the mount, so concurrent runs
on one cache cannot see each other's changes. Making the rootfs costs no copy at all.

The merged root directory is the upper one: it gets the tree root's owner, mode and times.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from pathlib import Path

from buildgen.errors import ExternalToolError

_MS_NODEV = 4
_MNT_DETACH = 2
# Characters the overlay option string gives a meaning to: such paths are not mounted.
_SPECIAL = frozenset(",:=\\\n")


class OverlayUnavailable(Exception):
    """This process cannot mount an overlay here (no privilege, no kernel support, odd path)."""


class OverlayError(ExternalToolError):
    """Unmounting or cleaning up failed (exit code 3)."""


def upper_of(rootfs: Path) -> Path:
    """Where the writable layer of an overlay rootfs lives: `.<name>.overlay` beside it."""
    return rootfs.parent / f".{rootfs.name}.overlay"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def overlay_mount(tree: Path, rootfs: Path) -> Path:
    """Mount `rootfs` (a new or empty directory) as an overlay of `tree`; its upper directory.

    Raises OverlayUnavailable, having left nothing behind, when it cannot be done here.
    """
    paths = [str(tree.resolve()), str(rootfs.resolve()), str(upper_of(rootfs).resolve())]
    if any(_SPECIAL & set(path) for path in paths):
        raise OverlayUnavailable("a path has a character overlay options cannot hold")
    base = upper_of(rootfs)
    if base.exists():
        raise OverlayUnavailable(f"{base} exists already (left by an earlier run?)")
    rootfs.mkdir(parents=True, exist_ok=True)
    base.mkdir(mode=0o700)
    upper, work = base / "upper", base / "work"
    try:
        upper.mkdir(mode=0o700)
        work.mkdir(mode=0o700)
        st = os.lstat(tree)
        os.chown(upper, st.st_uid, st.st_gid)
        os.chmod(upper, stat.S_IMODE(st.st_mode))
        os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
        options = f"lowerdir={paths[0]},upperdir={upper.resolve()},workdir={work.resolve()}"
        libc = _libc()
        if libc.mount(b"overlay", paths[1].encode(), b"overlay", _MS_NODEV,
                      options.encode()) != 0:  # fmt: skip
            code = ctypes.get_errno()
            raise OverlayUnavailable(f"mount: {os.strerror(code)} (errno {code})")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return upper


def is_overlay(rootfs: Path) -> bool:
    """Whether `rootfs` is a mount point with an overlay upper directory beside it."""
    return os.path.ismount(rootfs) and upper_of(rootfs).is_dir()


def unmount(rootfs: Path) -> None:
    """Unmount an overlay rootfs and remove its upper directory (and the empty mount point)."""
    if not os.path.ismount(rootfs):
        raise OverlayError(f"{rootfs} is not a mount point")
    libc = _libc()
    if libc.umount2(str(rootfs.resolve()).encode(), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        raise OverlayError(f"cannot unmount {rootfs}: {os.strerror(code)} (errno {code})")
    shutil.rmtree(upper_of(rootfs), ignore_errors=True)
    try:
        rootfs.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise OverlayError(f"cannot remove {rootfs}: {exc.strerror}") from exc
