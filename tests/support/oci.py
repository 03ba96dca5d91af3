"""Independent oracles for what is in a registry: skopeo and umoci, never buildgen's own code."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any


def inspect_raw(ref: str) -> dict[str, Any]:
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    raw: dict[str, Any] = json.loads(result.stdout)
    return raw


def unpack(ref: str, arch: str, workdir: Path) -> Path:
    """The rootfs of `ref` for linux/`arch`, unpacked by umoci (owners kept: we run as root)."""
    layout = workdir / "layout"
    rootfs = workdir / f"rootfs-{len(list(workdir.glob('rootfs-*')))}"
    subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", "--override-os", "linux",
         "--override-arch", arch, f"docker://{ref}", f"oci:{layout}:image"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{layout}:image", str(rootfs)],
        check=True, capture_output=True,
    )  # fmt: skip
    return rootfs


def tree(rootfs: Path) -> dict[str, str]:
    """Every path under `rootfs` as 'TYPE MODE UID:GID' (mode in octal, with special bits)."""
    entries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            rel = "/" + os.path.relpath(full, rootfs)
            entries[rel] = f"{kind} {stat.S_IMODE(st.st_mode):04o} {st.st_uid}:{st.st_gid}"
    return entries
