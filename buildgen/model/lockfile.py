"""The digest lockfile `images.lock.json`: its format (DESIGN.md contract 4; docs/lockfile.md).

Crane mode pulls every axis image by digest; this file is where those digests live, next to
the catalog, reviewed in pull requests. It is `json.dumps(lock, indent=2, sort_keys=True)` plus
a newline, so one image's change is a one-entry diff, and it is replaced atomically. This module
is what both sides share: the release side writes it (`release/lock.py`), the crane runner reads
it (`crane/resolve.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from buildgen.errors import UsageError
from buildgen.fsutil import write_atomic

LOCK_VERSION = 1
LOCK_FILE = "images.lock.json"
INPUTS_ANNOTATION = "dev.buildgen.inputs"  # written by publish on every index it makes
# On each platform entry of an index publish makes: the compressed size of that platform's
# layers, so the lock can record it from the index alone.
LAYERS_SIZE_ANNOTATION = "dev.buildgen.layers.size"
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"

Entry = dict[str, Any]


def lock_path(catalog_path: Path, explicit: Path | None) -> Path:
    """The lockfile: `--lock PATH`, else images.lock.json next to the catalog."""
    return explicit if explicit is not None else catalog_path.parent / LOCK_FILE


def dumps(lock: Mapping[str, Any]) -> str:
    """The lockfile's exact text."""
    return json.dumps(lock, indent=2, sort_keys=True) + "\n"


def empty(catalog_digest: str, registry: str) -> dict[str, Any]:
    """A lock with no images yet, for a catalog (its digest) and registry prefix."""
    return {
        "lockVersion": LOCK_VERSION,
        "catalogDigest": catalog_digest,
        "registry": registry,
        "images": {},
    }


def header(lock: Mapping[str, Any]) -> dict[str, Any]:
    """Everything in the lock but its entries."""
    return {key: value for key, value in lock.items() if key != "images"}


def read(path: Path) -> dict[str, Any]:
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


def parse(text: str, where: str) -> dict[str, Any]:
    try:
        lock = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON: {exc}") from None
    if not isinstance(lock, dict) or not isinstance(lock.get("images"), dict):
        raise UsageError(f"{where}: not a buildgen lockfile (no 'images')")
    if lock.get("lockVersion") != LOCK_VERSION:
        raise UsageError(f"{where}: lockVersion {lock.get('lockVersion')!r} is not {LOCK_VERSION}")
    return lock


def write(path: Path, lock: Mapping[str, Any]) -> bool:
    """Replace the lockfile atomically when its text changes; True when it did."""
    text = dumps(lock)
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
