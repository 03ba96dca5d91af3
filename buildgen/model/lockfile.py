"""The digest lockfile `images.lock.json`: its format (DESIGN.md contract 4; docs/lockfile.md).

Crane mode pulls every axis image by digest; this file is where those digests live, next to
the catalog, reviewed in pull requests. It is `json.dumps(lock, indent=2, sort_keys=True)` plus
a newline, so one image's change is a one-entry diff, and it is replaced atomically. This module
is what both sides share: the release side writes it (`release/lock.py`), the crane runner reads
it (`crane/resolve.py`). A lockfile is input: `parse` checks every entry's shape and names the
first broken one; the digests' own syntax is checked where they are used (`crane/resolve.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildgen.errors import UsageError
from buildgen.fsutil import write_atomic
from buildgen.model.fusion import Provided

LOCK_VERSION = 1
LOCK_FILE = "images.lock.json"
INPUTS_ANNOTATION = "dev.buildgen.inputs"  # written by publish on every index it makes
# On each platform entry of an index publish makes: the compressed size of that platform's
# layers, so the lock can record it from the index alone.
LAYERS_SIZE_ANNOTATION = "dev.buildgen.layers.size"
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


@dataclass(frozen=True)
class PlatformPin:
    """One platform's image manifest: its digest, and the compressed bytes of its layers."""

    digest: str
    size: int


@dataclass(frozen=True)
class LockEntry:
    """Which digest one image name means (docs/lockfile.md, the entry's fields)."""

    reference: str
    """The tag the digest was resolved from: <repository>:<tag>."""
    digest: str
    """The manifest the reference pointed to: an OCI index for multi-platform images."""
    media_type: str
    platforms: Mapping[str, PlatformPin]
    inputs: str | None = None
    """The image's build-inputs hash; None when buildgen did not publish it."""
    provides: tuple[Provided, ...] = ()
    """The fusion rule travels with the digests: crane mode needs no catalog."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": {
                platform: {"digest": pin.digest, "size": pin.size}
                for platform, pin in self.platforms.items()
            },
            "inputs": self.inputs,
        }
        if self.provides:
            data["provides"] = [provided.to_json() for provided in self.provides]
        return data

    @classmethod
    def from_json(cls, data: object) -> LockEntry:
        """An entry from its JSON; ValueError naming what is wrong."""
        try:
            if not isinstance(data, dict):
                raise ValueError("not an object")
            platforms = data["platforms"]
            if not isinstance(platforms, dict):
                raise ValueError("no platforms")
            return cls(
                reference=_string(data["reference"], "reference"),
                digest=_string(data["digest"], "digest"),
                media_type=_string(data["mediaType"], "mediaType"),
                platforms={
                    str(platform): PlatformPin(
                        _string(pin["digest"], f"{platform} digest"), _size(pin["size"])
                    )
                    for platform, pin in platforms.items()
                },
                inputs=None if data.get("inputs") is None else _string(data["inputs"], "inputs"),
                provides=tuple(Provided.from_json(item) for item in data.get("provides") or ()),
            )
        except KeyError as exc:
            raise ValueError(f"no {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(str(exc)) from None


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string: {value!r}")
    return value


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"size is not a whole number of bytes: {value!r}")
    return value


@dataclass
class Lockfile:
    """The whole file: the catalog and registry it was made for, and an entry per image key."""

    catalog_digest: str | None = None
    registry: str | None = None
    images: dict[str, LockEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"lockVersion": LOCK_VERSION}
        if self.catalog_digest is not None:
            data["catalogDigest"] = self.catalog_digest
        if self.registry is not None:
            data["registry"] = self.registry
        data["images"] = {key: entry.to_json() for key, entry in self.images.items()}
        return data

    def dumps(self) -> str:
        """The lockfile's exact text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def lock_path(catalog_path: Path, explicit: Path | None) -> Path:
    """The lockfile: `--lock PATH`, else images.lock.json next to the catalog."""
    return explicit if explicit is not None else catalog_path.parent / LOCK_FILE


def read(path: Path) -> Lockfile:
    """Load a lockfile; a broken one is bad input (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no lockfile (run `buildgen lock` or `buildgen publish`)"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the lockfile: {exc.strerror}") from None
    return parse(text, str(path))


def parse(text: str, where: str) -> Lockfile:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise UsageError(f"{where}: not a buildgen lockfile (no 'images')")
    if data.get("lockVersion") != LOCK_VERSION:
        raise UsageError(f"{where}: lockVersion {data.get('lockVersion')!r} is not {LOCK_VERSION}")
    images = {}
    for key, entry in data["images"].items():
        try:
            images[key] = LockEntry.from_json(entry)
        except ValueError as exc:
            raise UsageError(f"{where}: {key}: a malformed lockfile entry ({exc})") from None
    header = [data.get("catalogDigest"), data.get("registry")]
    for name, value in zip(("catalogDigest", "registry"), header, strict=True):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: {name} is not a string: {value!r}")
    return Lockfile(header[0], header[1], images)


def write(path: Path, lock: Lockfile) -> bool:
    """Replace the lockfile atomically when its text changes; True when it did."""
    text = lock.dumps()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    write_atomic(path, text)
    return True


def layers_size(manifest: Mapping[str, Any]) -> int:
    """Compressed bytes a runner downloads for one platform: the sum of its layers."""
    return sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
