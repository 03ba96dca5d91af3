"""Bake results: what `buildgen bake --push` put in the registry, per image and platform.

buildx's `--metadata-file` has no per-platform digests and is not written at all when any
target fails, so after each bake file buildgen asks the registry what each target pushed and
records it here, for the targets that succeeded also when others failed. `buildgen publish
--from` merges these files (one per platform run, or per CI shard) into multi-arch indexes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from buildgen.build.render import PushMode, staging_tag
from buildgen.errors import UsageError
from buildgen.fsutil import write_atomic
from buildgen.model.lockfile import layers_size
from buildgen.model.plan import PlannedImage
from buildgen.model.platforms import platform_string
from buildgen.registry import INDEX_TYPES, NotFound, RegistryClient, RegistryError

log = logging.getLogger(__name__)

RESULTS_VERSION = 1
ATTESTATION_TYPE = "attestation-manifest"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class Pushed:
    """A manifest in a registry: digest, media type, size (a descriptor, as JSON)."""

    digest: str
    media_type: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"digest": self.digest, "mediaType": self.media_type}
        data["size"] = self.size
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pushed:
        return cls(
            data["digest"], data["mediaType"], int(data["size"]), data.get("annotations", {})
        )


@dataclass(frozen=True)
class PlatformResult:
    """One platform's image manifest and the attestation manifests that describe it, with
    the compressed size of its layers when known (what a runner downloads; the lock needs it,
    and publish writes it into the index so that nobody has to read the manifest again)."""

    manifest: Pushed
    attestations: tuple[Pushed, ...] = ()
    layers_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = {**self.manifest.to_json(), "attestations": [a.to_json() for a in self.attestations]}
        if self.layers_size is not None:
            data["layersSize"] = self.layers_size
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlatformResult:
        size = data.get("layersSize")
        return cls(
            Pushed.from_json(data),
            tuple(Pushed.from_json(a) for a in data["attestations"]),
            int(size) if size is not None else None,
        )


@dataclass(frozen=True)
class ImageResult:
    """What one target pushed: where, from which inputs, and each platform's manifest."""

    key: str
    repository: str
    inputs: str
    platforms: Mapping[str, PlatformResult]
    unchanged: str | None = None  # digest of the index already published for these inputs

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "repository": self.repository,
            "inputs": self.inputs,
            "platforms": {p: r.to_json() for p, r in sorted(self.platforms.items())},
        }
        if self.unchanged:
            data["unchanged"] = self.unchanged
        return data


@dataclass
class Results:
    """The results file of one `buildgen bake --push` run."""

    registry: str
    catalog_digest: str
    scope: str
    images: dict[str, ImageResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason

    def to_json(self) -> str:
        data = {
            "resultsVersion": RESULTS_VERSION,
            "registry": self.registry,
            "catalogDigest": self.catalog_digest,
            "scope": self.scope,
            "images": {k: self.images[k].to_json() for k in sorted(self.images)},
            "failed": dict(sorted(self.failed.items())),
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json())


def results_path(out: Path, platform: str | None) -> Path:
    """Where a bake run records its results: one file per platform scope."""
    scope = platform.replace("/", "-") if platform else "all"
    return out / f"results.{scope}.json"


def load_existing(path: Path, registry: str, catalog_digest: str, scope: str) -> Results:
    """The results of earlier runs in this build folder (kept by --retry-failed and reruns),
    or a new record when there are none for this registry."""
    if path.exists():
        try:
            (earlier,) = load_results([path])
        except UsageError as exc:
            log.warning("ignoring %s: %s", path, exc)
        else:
            if earlier.registry == registry:
                earlier.catalog_digest = catalog_digest
                return earlier
    return Results(registry, catalog_digest, scope)


def load_results(paths: Sequence[Path]) -> list[Results]:
    """Read results files; a bad file is bad input (exit 2)."""
    loaded = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("resultsVersion") != RESULTS_VERSION:
                raise ValueError(f"unsupported resultsVersion {data.get('resultsVersion')!r}")
            results = Results(data["registry"], data["catalogDigest"], data["scope"])
            for key, image in data["images"].items():
                results.images[key] = ImageResult(
                    key,
                    image["repository"],
                    image["inputs"],
                    {p: PlatformResult.from_json(r) for p, r in image["platforms"].items()},
                    image.get("unchanged"),
                )
            results.failed = dict(data.get("failed", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--from {path}: not a buildgen results file ({exc})") from None
        loaded.append(results)
    return loaded


def split_index(index: Mapping[str, Any]) -> dict[str, PlatformResult]:
    """The platform manifests of an index, each with its attestation manifests."""
    manifests: dict[str, Pushed] = {}
    platforms: dict[str, str] = {}
    attestations: dict[str, list[Pushed]] = {}
    for entry in index.get("manifests", []):
        pushed = Pushed.from_json(entry)
        annotations = entry.get("annotations") or {}
        if annotations.get(REFERENCE_TYPE) == ATTESTATION_TYPE:
            attestations.setdefault(annotations.get(REFERENCE_DIGEST, ""), []).append(pushed)
            continue
        platform = platform_string(entry.get("platform") or {})
        manifests[pushed.digest] = Pushed(pushed.digest, pushed.media_type, pushed.size)
        platforms[pushed.digest] = platform
    return {
        platforms[digest]: PlatformResult(manifest, tuple(attestations.get(digest, ())))
        for digest, manifest in manifests.items()
    }


def resolve(client: RegistryClient, repository: str, reference: str) -> dict[str, PlatformResult]:
    """What `repository:reference` (or @digest) holds, per platform, with layer sizes."""
    manifest = client.get_manifest(repository, reference)
    data = manifest.json()
    if manifest.media_type in INDEX_TYPES:
        return {
            platform: replace(
                found,
                layers_size=layers_size(
                    client.get_manifest(repository, found.manifest.digest).json()
                ),
            )
            for platform, found in split_index(data).items()
        }
    # A single-platform image without attestations: its platform is in its config.
    config_descriptor = data["config"]
    config = json.loads(b"".join(client.get_blob(repository, config_descriptor["digest"])))
    platform = platform_string(config)
    pushed = Pushed(manifest.digest, manifest.media_type, len(manifest.data))
    return {platform: PlatformResult(pushed, layers_size=layers_size(data))}


def collect(
    client: RegistryClient,
    images: Iterable[PlannedImage],
    mode: PushMode,
    metadata: Mapping[str, Mapping[str, Any]] | None,
    results: Results,
    *,
    workers: int = 16,
) -> None:
    """Record in `results` what each of `images` pushed, asking the registry; the rest failed."""

    def one(image: PlannedImage) -> tuple[PlannedImage, dict[str, PlatformResult] | None, str]:
        if mode is PushMode.DIGEST:
            digest = (metadata or {}).get(image.target, {}).get("containerimage.digest")
            if not digest:
                return image, None, "not in buildx's metadata file (the build failed)"
            reference = str(digest)
        else:
            reference = staging_tag(image)
        try:
            found = resolve(client, image.repository, reference)
        except NotFound:
            return image, None, f"nothing at {image.repository}:{reference} (failed or canceled)"
        except RegistryError as exc:
            return image, None, str(exc)
        missing = set(image.platforms) - set(found)
        if missing:
            return image, None, f"pushed without {', '.join(sorted(missing))}"
        return image, {p: found[p] for p in image.platforms}, ""

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for image, platforms, reason in pool.map(one, images):
            if platforms is None:
                results.failed[image.key] = reason
                results.images.pop(image.key, None)
            else:
                results.images[image.key] = ImageResult(
                    image.key, image.repository, image.inputs, platforms
                )
                results.failed.pop(image.key, None)
