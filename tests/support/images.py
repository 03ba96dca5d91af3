"""An image's filesystem as a container of it has it (`docker export`), and the part of a
tree that is the image's own (not what a container runtime adds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .trees import TreeEntry, tree

# Paths a container runtime adds to every container; they are not part of the image. Kept in
# step with docs/crane-mode.md.
RUNTIME_ONLY = ("/.dockerenv", "/dev", "/proc", "/sys", "/etc/hostname", "/etc/hosts",
                "/etc/resolv.conf", "/etc/mtab")  # fmt: skip


def exported(reference: str, dest: Path) -> Path:
    """The filesystem of a container of `reference`, as `docker export` gives it."""
    subprocess.run(["docker", "pull", "-q", reference], check=True, capture_output=True)
    container = subprocess.run(["docker", "create", reference, "/none"], check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    try:
        dest.mkdir(parents=True)
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-xpf", "-", "-C", str(dest)],
                       stdin=export.stdout, check=True)  # fmt: skip
        assert export.wait() == 0
    finally:
        subprocess.run(["docker", "rm", "-f", container], check=True, capture_output=True)
    return dest


def image_tree(rootfs: Path) -> dict[str, TreeEntry]:
    """The tree of `rootfs` without what a container runtime adds to it (RUNTIME_ONLY)."""
    return image_part(tree(rootfs))


def image_part(entries: dict[str, TreeEntry]) -> dict[str, TreeEntry]:
    return {
        path: entry
        for path, entry in entries.items()
        if not any(path == p or path.startswith(p + "/") for p in RUNTIME_ONLY)
    }
