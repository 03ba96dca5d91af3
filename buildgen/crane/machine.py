"""Which platforms this machine can run: its own, and those a binfmt_misc handler (qemu-user, as
`docker run --privileged tonistiigi/binfmt` installs) runs for it. The crane runner refuses an
eval for any other platform before it pulls anything."""

from __future__ import annotations

import os
from pathlib import Path

from buildgen.errors import UsageError

# uname's machine, and the arch a binfmt_misc handler is named after -> the OCI platform
_MACHINES = {
    "x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64",
    "arm64": "linux/arm64", "armv7l": "linux/arm/v7", "arm": "linux/arm/v7",
    "ppc64le": "linux/ppc64le", "s390x": "linux/s390x", "riscv64": "linux/riscv64",
    "i386": "linux/386", "i686": "linux/386",
}  # fmt: skip
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def native_platform() -> str | None:
    """This machine's own platform, None if unknown."""
    return _MACHINES.get(os.uname().machine)


def runnable_platforms(binfmt: Path) -> list[str]:
    """This machine's platform, then each one an enabled binfmt_misc handler runs."""
    found = [p for p in (native_platform(),) if p]
    for handler in sorted(binfmt.glob("qemu-*")):  # none when binfmt_misc is not mounted
        try:
            enabled = handler.read_text().startswith("enabled")
        except OSError:
            continue
        platform = _MACHINES.get(handler.name.removeprefix("qemu-"))
        if enabled and platform and platform not in found:
            found.append(platform)
    return found


def check_runnable(platform: str, image_platforms: list[str] | None = None) -> None:
    """UsageError (exit 2) unless this machine can run `platform`, naming the platforms the
    image has (when known) and the machine's."""
    runnable = runnable_platforms(BINFMT)
    if any(_runs(machine, platform) for machine in runnable):
        return
    has = f"; the image has {', '.join(image_platforms)}" if image_platforms else ""
    raise UsageError(
        f"this machine cannot run {platform}{has}; it runs {', '.join(runnable) or 'nothing known'}"
        f" ({os.uname().machine}, and the binfmt_misc handlers in {BINFMT})"
    )


def _runs(machine: str, platform: str) -> bool:
    """Whether a machine of platform `machine` runs images of `platform`: the same one; a
    variant of amd64 or arm64 (amd64/v2, arm64/v8); an older arm (arm/v6 on arm/v7); 386 on
    amd64."""
    if machine == platform:
        return True
    m_os, m_arch, *m_variant = machine.split("/")
    p_os, p_arch, *p_variant = platform.split("/")
    if m_os != p_os:
        return False
    if m_arch == p_arch:
        if p_arch in ("amd64", "arm64"):
            return True
        return p_arch == "arm" and (p_variant or ["v7"]) <= (m_variant or ["v7"])
    return (m_arch, p_arch) == ("amd64", "386")
