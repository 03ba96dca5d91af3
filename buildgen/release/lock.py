"""Keeping the lockfile current: `buildgen lock` (pin what the registry has), `--check`
(offline, and `--remote`), `--diff` (a Markdown table for a pull request), and pinning what
`buildgen publish` just published. The format itself is `model/lockfile.py`."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from buildgen.errors import CheckFailed, UsageError
from buildgen.model.lockfile import (
    ATTESTATION_ANNOTATION,
    INPUTS_ANNOTATION,
    LAYERS_SIZE_ANNOTATION,
    LockEntry,
    Lockfile,
    PlatformPin,
    layers_size,
    lock_path,
    parse,
    read,
    write,
)
from buildgen.model.plan import Plan, PlannedImage
from buildgen.registry import RegistryClient, RegistryOptions
from buildgen.registry.reference import parse_reference

if TYPE_CHECKING:
    from buildgen.registry import Manifest

log = logging.getLogger(__name__)

# Requests in flight for `lock`: enough to keep a distant registry busy (`bench_lock --sweep`
# measures it; docs/lockfile.md, "How fast").
DEFAULT_JOBS = 64


@dataclass(frozen=True)
class LockOptions:
    """Which lockfile `buildgen lock` keeps, and how it asks the registry."""

    path: Path | None = None  # default: images.lock.json next to the catalog
    jobs: int = DEFAULT_JOBS  # registry requests in flight at once
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def _client(options: LockOptions) -> RegistryClient:
    return RegistryClient(replace(options.registry, max_connections=options.jobs))


# -- resolving from a registry ---------------------------------------------------------------


class _Unfinished(Exception):
    """An entry needs more from the registry than what is in hand."""


def _entry(
    client: RegistryClient | None,
    image: PlannedImage,
    digest: str | None = None,
    index: bytes | None = None,
    *,
    manifest: Manifest | None = None,
    document: Mapping[str, Any] | None = None,
) -> LockEntry:
    """The lock entry of `image`, from the registry (its primary tag, or a known digest);
    `index` is that digest's manifest when the caller has it in hand (publish just pushed it),
    `manifest` the manifest its tag gave when the caller read it (`document`: parsed).
    Without a client, _Unfinished when the entry would need a request."""
    from buildgen.model.platforms import platform_string
    from buildgen.registry import OCI_INDEX, Manifest, NotFound

    reference = image.tags[0]
    if manifest is None and index is not None and digest is not None:
        manifest = Manifest(digest, OCI_INDEX, index)
    elif manifest is None:
        if client is None:
            raise _Unfinished
        try:
            manifest = client.get_manifest(image.repository, digest or image.tag)
        except NotFound:
            raise CheckFailed(f"{reference} is not in the registry (publish it first)") from None
    data = document if document is not None else manifest.json()
    platforms: dict[str, PlatformPin] = {}
    inputs = None
    if manifest.is_index:
        inputs = (data.get("annotations") or {}).get(INPUTS_ANNOTATION)
        for platform, child in _platform_children(data):
            size = str((child.get("annotations") or {}).get(LAYERS_SIZE_ANNOTATION, ""))
            if size.isdigit():
                platforms[platform] = PlatformPin(child["digest"], int(size))
            elif client is None:
                raise _Unfinished
            else:
                platforms[platform] = PlatformPin(
                    child["digest"], _layers_size(client, image, child)
                )
    else:
        if client is None:
            raise _Unfinished
        config = json.loads(b"".join(client.get_blob(image.repository, data["config"]["digest"])))
        platforms[platform_string(config)] = PlatformPin(manifest.digest, layers_size(data))
    return LockEntry(
        reference, manifest.digest, manifest.media_type, platforms, inputs, image.provides
    )


def _platform_children(index: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The entries of an index that are platforms (not attestation manifests), with their
    `os/arch[/variant]`."""
    from buildgen.model.platforms import platform_string

    found = []
    for child in index.get("manifests", []):
        platform = platform_string(child.get("platform") or {})
        if not platform.startswith("unknown/") and not (child.get("annotations") or {}).get(
            ATTESTATION_ANNOTATION
        ):
            found.append((platform, child))
    return found


def _layers_size(client: RegistryClient, image: PlannedImage, child: Mapping[str, Any]) -> int:
    return layers_size(client.get_manifest(image.repository, child["digest"]).json())


def update(
    lock: Lockfile,
    plan: Plan,
    client: RegistryClient,
    *,
    known: Mapping[str, str] | None = None,
    indexes: Mapping[str, bytes] | None = None,
    workers: int = 16,
) -> list[str]:
    """Refresh the entries of the plan's (selected) images; return the keys that changed.

    One HEAD per image (free of Docker Hub's pull limits); the index and its manifests are read
    only when the digest differs from the entry's. `known` gives digests already in hand
    (publish), which saves the HEAD too. Entries of other images stay exactly as they were.
    """
    if lock.registry != plan.registry:
        if lock.images:
            log.warning(
                "the lockfile was made for %s; starting it anew for %s",
                lock.registry,
                plan.registry,
            )
        lock.registry, lock.images = plan.registry, {}
    lock.catalog_digest = plan.catalog.digest
    images = lock.images

    known = dict(known or {})
    indexes = indexes or {}
    # Images with no entry are read by tag at once (the index is verified against the
    # registry's digest) rather than HEAD first; the others get a HEAD unless known.
    new = [image for image in plan.images if image.key not in known and image.key not in images]
    heads = [image for image in plan.images if image.key not in known and image.key in images]
    fetched: dict[str, tuple[Manifest, Mapping[str, Any]]] = {}  # the index read, and parsed
    entries: dict[str, LockEntry] = {}

    def arrived(position: int, manifest: Manifest | None) -> None:
        """An index read by tag: its entry is made now, while the registry answers the other
        requests, when the index alone has all it takes (layer sizes)."""
        if manifest is None:
            return  # reported below, in the plan's order
        image, document = new[position], manifest.json()
        fetched[image.key] = manifest, document
        with contextlib.suppress(_Unfinished):
            entries[image.key] = _entry(None, image, manifest=manifest, document=document)

    _present(new, client.get_manifests(_tags(new), workers=workers, each=arrived))
    # Asked "still this digest?" (If-None-Match), a registry answers without reading the index.
    believed: list[str | None] = [images[image.key].digest for image in heads]
    now = client.tag_digests(_tags(heads), believed, workers=workers)
    known.update(zip(_keys(heads), _present(heads, now), strict=True))

    def unchanged(image: PlannedImage) -> bool:
        current = images.get(image.key)
        return bool(
            current
            and current.digest == known[image.key]
            and current.reference == image.tags[0]
            and current.provides == image.provides
        )

    def one(image: PlannedImage) -> LockEntry:
        if image.key in fetched:
            manifest, document = fetched[image.key]
            return _entry(client, image, manifest=manifest, document=document)
        return _entry(client, image, known[image.key], indexes.get(image.key))

    # The rest need requests of their own: changed images, and indexes without layer sizes.
    online = [
        image
        for image in plan.images
        if image.key not in entries and (image.key in fetched or not unchanged(image))
    ]
    if online:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(online)))) as pool:
            keys = [image.key for image in online]
            entries.update(zip(keys, pool.map(one, online), strict=True))
    changed = []
    for image in plan.images:  # in the plan's order
        if image.key in entries:
            images[image.key] = entries[image.key]
            changed.append(image.key)
    return changed


def refresh(plan: Plan, options: LockOptions) -> list[str]:
    """`buildgen lock`: pin the plan's images as the registry has them; return the keys that
    changed. A run that changes nothing leaves the file alone (not even rendered again)."""
    path = lock_path(plan.catalog.path, options.path)
    existed = path.exists()
    current = read(path) if existed else Lockfile(plan.catalog.digest, plan.registry)
    before = current.catalog_digest, current.registry
    with _client(options) as client:
        changed = update(current, plan, client, workers=options.jobs)
    written = bool(changed or not existed or (current.catalog_digest, current.registry) != before)
    written = written and write(path, current)
    note = "" if written else " (file unchanged)"
    log.info("%s: %d of %d selected image(s) changed%s", path, len(changed), len(plan.images), note)
    return changed


def pin_published(
    plan: Plan,
    path: Path | None,
    client: RegistryClient,
    *,
    known: Mapping[str, str],
    indexes: Mapping[str, bytes],
) -> None:
    """After `buildgen publish`: pin the images of `known` (key -> the digest just published or
    found unchanged; `indexes`: the indexes pushed) in the lockfile at `path` (default: next to
    the catalog)."""
    if not known:
        return
    path = lock_path(plan.catalog.path, path)
    current = read(path) if path.exists() else Lockfile(plan.catalog.digest, plan.registry)
    subset = replace(plan, images=tuple(i for i in plan.images if i.key in known))
    changed = update(current, subset, client, known=known, indexes=indexes)
    if write(path, current):
        log.info("%s: %d entr%s updated", path, len(changed), "y" if len(changed) == 1 else "ies")


def _tags(images: Sequence[PlannedImage]) -> list[tuple[str, str]]:
    return [(image.repository, image.tag) for image in images]


def _keys(images: Sequence[PlannedImage]) -> list[str]:
    return [image.key for image in images]


_T = TypeVar("_T")


def _present(images: Sequence[PlannedImage], found: Sequence[_T | None]) -> list[_T]:
    """`found` (one per image), or CheckFailed naming the first image the registry lacks."""
    for image, item in zip(images, found, strict=True):
        if item is None:
            raise CheckFailed(f"{image.tags[0]} is not in the registry (publish it first)")
    return [item for item in found if item is not None]


# -- checking --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One way the lockfile and the catalog (or registry) disagree."""

    kind: str  # missing | extra | stale | catalog | gone | drift
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:8} {self.key}: {self.detail}"


def check(lock: Lockfile, plan: Plan) -> list[Finding]:
    """Offline: the lock has exactly the catalog's images, each from its current inputs."""
    findings = []
    images = lock.images
    if lock.registry != plan.registry:
        findings.append(
            Finding(
                "catalog",
                "registry",
                f"lock is for {lock.registry}, the catalog builds for {plan.registry}",
            )
        )
    for image in plan.images:
        entry = images.get(image.key)
        if entry is None:
            findings.append(Finding("missing", image.key, "not in the lockfile"))
        elif entry.reference != image.tags[0]:
            findings.append(
                Finding(
                    "stale", image.key, f"locked {entry.reference}, the catalog has {image.tags[0]}"
                )
            )
        elif entry.provides != image.provides:
            findings.append(Finding("stale", image.key, "its fusion rule (provides) changed"))
        elif entry.inputs not in (None, image.inputs):
            findings.append(
                Finding("stale", image.key, "its build inputs changed since it was locked")
            )
    planned = {image.key for image in plan.all_images.values()}
    selected = {image.key for image in plan.images}
    for key in sorted(images):
        if key not in planned:
            findings.append(Finding("extra", key, "not in the catalog"))
    if selected == planned and lock.catalog_digest != plan.catalog.digest and not findings:
        findings.append(
            Finding(
                "catalog",
                "catalogDigest",
                "the catalog changed since the lock was made (run buildgen lock)",
            )
        )
    return findings


def check_remote(
    lock: Lockfile, plan: Plan, client: RegistryClient, *, workers: int = 16
) -> list[Finding]:
    """Every pinned digest still exists; tags that moved since are drift."""
    images = lock.images
    by_key = plan.all_images

    keys = sorted(images)
    pins: list[tuple[str, str]] = []
    tags: list[tuple[str, str]] = []
    for key in keys:
        entry = images[key]
        image = by_key.get(key)
        try:
            reference = parse_reference(entry.reference)
        except ValueError as exc:
            raise UsageError(f"{key}: a malformed lockfile entry ({exc})") from None
        repository = reference.repository if image is None else image.repository
        pins.append((repository, entry.digest))
        tags.append((repository, reference.tag or "latest"))
    pinned = client.head_manifests(pins, workers=workers)
    tagged = client.tag_digests(tags, [digest for _, digest in pins], workers=workers)
    found: list[Finding] = []
    for key, (repository, digest), there, now in zip(keys, pins, pinned, tagged, strict=True):
        if there is None:
            found.append(Finding("gone", key, f"{repository}@{digest} is not in the registry"))
        if now is not None and now != digest:
            locked = f"{images[key].reference} now points at {now[:19]}, locked {digest[:19]}"
            found.append(Finding("drift", key, locked))
    return found


@dataclass(frozen=True)
class Verdict:
    """What `buildgen lock --check` found: the lockfile, how many images it pins, and every way
    it disagrees with the catalog (and the registry)."""

    path: Path
    images: int
    findings: tuple[Finding, ...]


def verify(plan: Plan, options: LockOptions, *, remote: bool = False) -> Verdict:
    """`buildgen lock --check`: the lockfile against the catalog, offline; with `remote`, also
    against the registry (every pinned digest there, no tag moved)."""
    path = lock_path(plan.catalog.path, options.path)
    current = read(path)
    findings = check(current, plan)
    if remote:
        with _client(options) as client:
            findings += check_remote(current, plan, client, workers=options.jobs)
    return Verdict(path, len(current.images), tuple(findings))


# -- diffing ---------------------------------------------------------------------------------


def diff_since(plan: Plan, old: str, options: LockOptions) -> str:
    """`buildgen lock --diff OLD`: the Markdown table of what changed in the plan's lockfile
    since OLD (a lockfile path or a git revision)."""
    path = lock_path(plan.catalog.path, options.path)
    new = read(path) if path.exists() else Lockfile()
    return diff_markdown(load_old(old, path), new)


def load_old(spec: str, path: Path) -> Lockfile:
    """OLD for --diff: a lockfile path, or a git revision of this lockfile."""
    candidate = Path(spec)
    if candidate.is_file():
        return read(candidate)
    top = subprocess.run(
        ["git", "-C", str(path.parent.resolve()), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    if top.returncode != 0:
        raise UsageError(f"--diff {spec}: no such file, and {path.parent} is not in a git checkout")
    relative = path.resolve().relative_to(Path(top.stdout.strip()))
    shown = subprocess.run(
        ["git", "-C", top.stdout.strip(), "show", f"{spec}:{relative.as_posix()}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        if "exists on disk, but not in" in shown.stderr or "does not exist in" in shown.stderr:
            return Lockfile()  # the lock is new in this change
        raise UsageError(f"--diff {spec}: {shown.stderr.strip() or 'not a file or git revision'}")
    return parse(shown.stdout, f"{spec}:{relative}")


def _tag_of(reference: str) -> str:
    """The tag of a lockfile reference, or the text itself when it is not one."""
    try:
        return parse_reference(reference).tag or reference
    except ValueError:
        return reference


def _short(digest: str | None) -> str:
    return f"`{digest.removeprefix('sha256:')[:12]}`" if digest else ""


def diff_markdown(old: Lockfile, new: Lockfile) -> str:
    """A Markdown table of added, removed and changed images, for a PR comment."""
    rows = []
    for key in sorted(set(old.images) | set(new.images)):
        a, b = old.images.get(key), new.images.get(key)
        if a == b:
            continue
        if a is None or b is None:
            entry = b or a
            assert entry is not None
            change = "added" if a is None else "removed"
            rows.append(
                f"| `{key}` | {change} | {_short(a.digest if a else None)} | "
                f"{_short(b.digest if b else None)} | "
                f"{', '.join(sorted(entry.platforms))} |"
            )
            continue
        notes = [f"+{p}" for p in sorted(set(b.platforms) - set(a.platforms))]
        notes += [f"-{p}" for p in sorted(set(a.platforms) - set(b.platforms))]
        if a.reference != b.reference:
            notes.append(f"{_tag_of(a.reference)} → {_tag_of(b.reference)}")
        rows.append(
            f"| `{key}` | changed | {_short(a.digest)} | {_short(b.digest)} | {' '.join(notes)} |"
        )
    if not rows:
        return "No image changed.\n"
    counts = {
        kind: sum(f"| {kind} |" in row for row in rows) for kind in ("added", "removed", "changed")
    }
    header = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return (
        f"**images.lock.json**: {header}\n\n| image | change | old | new | platforms |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
