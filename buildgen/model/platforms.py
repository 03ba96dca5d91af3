"""Platform strings (os/arch[/variant]) as OCI image indexes and buildx spell them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

KNOWN_OS = ("linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos")
KNOWN_ARCH = (
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64",
    "mips64le", "mips64", "mipsle", "mips", "loong64", "wasm",
)  # fmt: skip
KNOWN_VARIANTS = {
    "arm": ("v5", "v6", "v7", "v8"),
    "arm64": ("v8", "v8.0", "v8.1", "v8.2", "v9"),
    "amd64": ("v1", "v2", "v3", "v4"),
}
# Common misspellings people carry over from uname and other ecosystems.
ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "armhf": "arm"}


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    guess = ALIASES.get(word) or next(iter(difflib.get_close_matches(word, choices, 1)), None)
    return f" (did you mean {guess!r}?)" if guess else ""


def platform_problem(platform: str) -> str | None:
    """Why `platform` is not an os/arch[/variant] string, or None when it is."""
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return f"platform {platform!r} must be os/arch or os/arch/variant, e.g. 'linux/amd64'"
    os_, arch = parts[0], parts[1]
    if os_ not in KNOWN_OS:
        return f"platform {platform!r}: unknown os {os_!r}{_suggest(os_, KNOWN_OS)}"
    if arch not in KNOWN_ARCH:
        return f"platform {platform!r}: unknown architecture {arch!r}{_suggest(arch, KNOWN_ARCH)}"
    if len(parts) == 3:
        variants = KNOWN_VARIANTS.get(arch, ())
        if parts[2] not in variants:
            allowed = ", ".join(variants) if variants else "none"
            return (
                f"platform {platform!r}: unknown variant {parts[2]!r} for {arch} (known: {allowed})"
            )
    return None


def platform_string(platform: Mapping[str, Any]) -> str:
    """os/arch[/variant] of an index entry's platform (or an image config)."""
    parts = [str(platform.get("os", "")), str(platform.get("architecture", ""))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)
