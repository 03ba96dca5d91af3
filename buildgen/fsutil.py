"""Small file-system helpers: nothing buildgen writes is ever seen half-written."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """`sha256:<hex>` of a file's bytes, read in blocks, never through a symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


# xattr failures that mean "this file system or file type does not take it", which Docker and
# containerd skip too; anything else is an error.
XATTR_UNSUPPORTED = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})

Xattrs = list[tuple[str, bytes]]


def read_xattrs(target: int | str) -> Xattrs:
    """The xattrs of an fd, or of a path without following its last link ([] where the file
    system has none)."""
    try:
        if isinstance(target, int):
            return [(key, os.getxattr(target, key)) for key in os.listxattr(target)]
        names = os.listxattr(target, follow_symlinks=False)
        return [(key, os.getxattr(target, key, follow_symlinks=False)) for key in names]
    except OSError as exc:
        if exc.errno in XATTR_UNSUPPORTED or exc.errno == errno.ENODATA:
            return []
        raise


def write_xattrs(target: int | str, xattrs: Xattrs) -> list[tuple[str, OSError]]:
    """Set xattrs on an fd, or on a path without following its last link; the ones the file
    system does not take (XATTR_UNSUPPORTED), with why. Any other failure raises."""
    refused = []
    for key, value in xattrs:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in XATTR_UNSUPPORTED:
                raise
            refused.append((key, exc))
    return refused
