"""`buildgen resolve`: the digest-pinned references of one eval, read from the lockfile alone
(no catalog: this runs before every eval, in the runner), and the EVAL_* environment that
carries them into the runner (`to_env`, `from_env`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from buildgen.errors import UsageError
from buildgen.model.fusion import Provided
from buildgen.model.lockfile import Lockfile
from buildgen.registry.media import check_digest
from buildgen.registry.reference import parse_reference

ROLES = ("benchmark", "agent", "gateway")


@dataclass(frozen=True)
class Pinned:
    """One image pinned by digest for one platform."""

    role: str
    key: str
    reference: str  # repository@index-digest
    platform_digest: str
    size: int
    provides: tuple[Provided, ...] = ()
    """What the image adds to the fused rootfs (agents and gateways; the benchmark is all)."""
    platforms: tuple[str, ...] = ()
    """Every platform the lockfile has the image for (unknown, empty, from EVAL_* variables)."""

    def to_json(self) -> dict[str, Any]:
        """As `resolve --format json` prints it."""
        data: dict[str, Any] = {
            "key": self.key,
            "reference": self.reference,
            "platformDigest": self.platform_digest,
            "size": self.size,
        }
        if self.provides:
            data["provides"] = [p.to_json() for p in self.provides]
        return data


def resolve(lock: Lockfile, roles: Sequence[tuple[str, str]], platform: str) -> list[Pinned]:
    """The digest-pinned references for (role, key) pairs on `platform`; exit 2 on unknowns."""
    pinned, images = [], lock.images
    for role, key in roles:
        entry = images.get(key)
        if entry is None:
            raise UsageError(f"{role}: no image {key} in the lockfile{_available(images, key)}")
        pin = entry.platforms.get(platform)
        if pin is None:
            raise UsageError(
                f"{role}: {key} has no {platform} image; it has "
                f"{', '.join(sorted(entry.platforms)) or 'none'}"
            )
        try:  # the digests and the reference are checked before anything is pulled
            repository = parse_reference(entry.reference).repository
            reference = f"{repository}@{check_digest(entry.digest)}"
            platform_digest = check_digest(pin.digest)
        except ValueError as exc:
            raise UsageError(f"{role}: {key}: a malformed lockfile entry ({exc})") from None
        pinned.append(
            Pinned(
                role,
                key,
                reference,
                platform_digest,
                pin.size,
                entry.provides,
                tuple(sorted(entry.platforms)),
            )
        )
    return pinned


def _available(images: Iterable[str], key: str) -> str:
    prefix = key.split(":", 1)[0]
    axis = prefix.split("/", 1)[0] + "/"
    same_image = [k for k in images if k.split(":", 1)[0] == prefix]
    if same_image:
        shown = ", ".join(k.split(":", 1)[1] if ":" in k else "(shared)" for k in same_image[:10])
        more = f" and {len(same_image) - 10} more" if len(same_image) > 10 else ""
        return f"; {prefix} has tasks: {shown}{more}"
    names = sorted({k.split(":", 1)[0] for k in images if k.startswith(axis)})
    return f"; known: {', '.join(names[:20]) or 'none'}"


def to_env(pinned: Sequence[Pinned], platform: str) -> list[str]:
    """`resolve --format env`: NAME=VALUE lines the runner takes (`from_env`)."""
    lines = [f"EVAL_PLATFORM={platform}"]
    for p in pinned:
        name = p.role.upper()
        lines += [
            f"EVAL_{name}_IMAGE={p.reference}",
            f"EVAL_{name}_PLATFORM_DIGEST={p.platform_digest}",
            f"EVAL_{name}_SIZE={p.size}",
            f"EVAL_{name}_KEY={p.key}",
        ]
        if p.provides:
            lines.append(f"EVAL_{name}_PROVIDES=" + ",".join(str(x) for x in p.provides))
    return lines


def from_env(environ: Mapping[str, str], platform: str | None) -> tuple[str, list[Pinned]]:
    """The platform and pinned images the EVAL_* variables of `to_env` say (the gateway is
    optional); bad input (exit 2) names the variable."""
    pinned = []
    for role in ROLES:
        name = role.upper()
        reference = environ.get(f"EVAL_{name}_IMAGE")
        if reference is None:
            if role == "gateway":
                continue
            raise UsageError(f"--from-env: EVAL_{name}_IMAGE is not set")
        variable = f"EVAL_{name}_PROVIDES"
        try:
            provides = tuple(
                Provided.parse(item) for item in environ.get(variable, "").split(",") if item
            )
            size = int(environ.get(f"EVAL_{name}_SIZE", "0"))
        except ValueError as exc:
            raise UsageError(f"--from-env: EVAL_{name}_*: {exc}") from None
        pinned.append(
            Pinned(
                role,
                environ.get(f"EVAL_{name}_KEY", role),
                reference,
                environ.get(f"EVAL_{name}_PLATFORM_DIGEST", ""),
                size,
                provides,
            )
        )
    return environ.get("EVAL_PLATFORM", platform or ""), pinned
