"""`buildgen publish`: merge per-platform builds into one OCI index per image, push it, tag it.

Reads the results files of `buildgen bake --push` runs (one per platform or CI shard), and
talks to the registry directly (no Docker daemon). Idempotent: an image whose inputs-hash tag
already exists is unchanged; HEAD comes before every PUT, so a second run pushes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildgen.build.results import PlatformResult, Pushed, Results, load_results
from buildgen.errors import BuildgenError, CatalogError, CheckFailed, ExternalToolError
from buildgen.model.lockfile import INPUTS_ANNOTATION, LAYERS_SIZE_ANNOTATION
from buildgen.model.plan import Plan, PlannedImage
from buildgen.model.tagpolicy import TagPlan, inputs_tag, plan_tags
from buildgen.registry import OCI_INDEX, RegistryClient, RegistryError, RegistryOptions
from buildgen.registry.media import sha256_digest
from buildgen.release.lock import pin_published

log = logging.getLogger(__name__)

ANNOTATION = "org.opencontainers.image."


@dataclass(frozen=True)
class SourceInfo:
    """Where the images come from: index annotations revision, source and created."""

    revision: str | None
    source: str | None
    created: str

    @classmethod
    def from_git(cls, directory: Path) -> SourceInfo:
        """From git when `directory` is in a checkout; SOURCE_DATE_EPOCH fixes `created`."""

        def git(*args: str) -> str | None:
            try:
                result = subprocess.run(
                    ["git", "-C", str(directory), *args],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=10,
                )
            except (OSError, subprocess.TimeoutExpired):
                return None
            return result.stdout.strip() or None if result.returncode == 0 else None

        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch and epoch.isdigit():
            created = _iso(datetime.fromtimestamp(int(epoch), timezone.utc))
        else:
            # The commit time, not the clock: publishing the same commit twice gives one index.
            committed = git("log", "-1", "--format=%ct")
            when = datetime.fromtimestamp(int(committed), timezone.utc) if committed else None
            created = _iso(when or datetime.now(timezone.utc))
        return cls(
            git("rev-parse", "HEAD"), _public_url(git("remote", "get-url", "origin")), created
        )


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public_url(url: str | None) -> str | None:
    """A remote URL without credentials, as https when it is an scp-like ssh address."""
    if not url:
        return None
    url = re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", url)  # drop user:token@
    match = re.fullmatch(r"[\w.-]+@([\w.-]+):(.+?)(?:\.git)?", url)
    if match:
        return f"https://{match.group(1)}/{match.group(2)}"
    return url.removesuffix(".git")


@dataclass
class Outcome:
    """How publishing one image ended."""

    key: str
    status: str  # published | unchanged | failed | would-publish | would-tag
    repository: str = ""
    digest: str = ""
    tags: tuple[str, ...] = ()
    message: str = ""
    error: BuildgenError | RegistryError | None = None
    index: bytes | None = field(default=None, repr=False)  # the index pushed, for the lockfile


@dataclass(frozen=True)
class PublishOptions:
    """What `buildgen publish` was asked to do."""

    jobs: int = 16
    dry_run: bool = False


@dataclass
class Found:
    """One image in the results files: where it was pushed, from which inputs, per platform;
    or, when bake found it unchanged, the digest of the index already published."""

    repository: str
    inputs: str
    platforms: dict[str, PlatformResult] = field(default_factory=dict)
    unchanged: str | None = None


def merge_results(plan: Plan, results: Sequence[Results]) -> dict[str, Found]:
    """Per image key, what the results files say, merged (later files win)."""
    merged: dict[str, Found] = {}
    for result in results:
        for key, image in result.images.items():
            found = merged.setdefault(key, Found(image.repository, image.inputs))
            if found.inputs != image.inputs:
                log.warning("%s: results disagree on its inputs; using the later file", key)
                found.inputs, found.platforms = image.inputs, {}
            found.repository = image.repository
            found.unchanged = image.unchanged or found.unchanged
            for platform, pushed in image.platforms.items():
                previous = found.platforms.get(platform)
                if previous and previous.manifest.digest != pushed.manifest.digest:
                    log.warning("%s %s: two results files disagree; using the later", key, platform)
                found.platforms[platform] = pushed
    return merged


def build_index(
    image: PlannedImage, platforms: Mapping[str, PlatformResult], source: SourceInfo
) -> bytes:
    """The OCI index of an image: its platform manifests in plan order, each followed by its
    attestation manifests (platform unknown/unknown), with the OCI annotations."""
    manifests: list[dict[str, Any]] = []
    for platform in image.platforms:
        result = platforms[platform]
        os_, arch, *variant = platform.split("/")
        entry = result.manifest.to_json()
        entry["platform"] = {
            "architecture": arch,
            "os": os_,
            **({"variant": variant[0]} if variant else {}),
        }
        if result.layers_size is not None:
            entry["annotations"] = {**entry.get("annotations", {}),
                                    LAYERS_SIZE_ANNOTATION: str(result.layers_size)}  # fmt: skip
        manifests.append(entry)
        for attestation in result.attestations:
            manifests.append(
                {**attestation.to_json(), "platform": {"architecture": "unknown", "os": "unknown"}}
            )
    annotations = {
        INPUTS_ANNOTATION: image.inputs,
        ANNOTATION + "title": image.key,
        ANNOTATION + "version": image.version or image.tag,
        ANNOTATION + "created": source.created,
    }
    if source.revision:
        annotations[ANNOTATION + "revision"] = source.revision
    if source.source:
        annotations[ANNOTATION + "source"] = source.source
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": annotations,
    }
    return json.dumps(index, sort_keys=True, separators=(",", ":")).encode()


LIST_TAGS_FROM = 8  # images published in one repository; below, a HEAD per image is cheaper


class _Publisher:
    def __init__(
        self, client: RegistryClient, plan: Plan, source: SourceInfo, dry_run: bool
    ) -> None:
        self.client = client
        self.plan = plan
        self.source = source
        self.dry_run = dry_run
        self._tags: dict[str, list[str]] = {}
        self._tags_lock = threading.Lock()
        self._repo_locks: dict[str, threading.Lock] = {}
        # Repositories where many images are published: one tag listing tells which inputs
        # tags exist, instead of one HEAD per image (a 2,000-task benchmark is one repository).
        images_per_repository = Counter(image.repository for image in plan.images)
        self._listed = {
            repository
            for repository, count in images_per_repository.items()
            if count >= LIST_TAGS_FROM
        }

    def existing_tags(self, repository: str) -> list[str]:
        with self._tags_lock:
            lock = self._repo_locks.setdefault(repository, threading.Lock())
        with lock:  # list each repository once per run, even from 16 workers
            if repository not in self._tags:
                self._tags[repository] = self.client.list_tags(repository)
            return self._tags[repository]

    def publish(self, image: PlannedImage, found: Found | None) -> Outcome:
        repository = image.repository

        def failed(message: str) -> Outcome:
            return Outcome(image.key, "failed", repository, message=message,
                           error=CheckFailed(message))  # fmt: skip

        if found is None:
            return failed("not built: in no results file")
        if found.inputs != image.inputs:
            return failed("built from other inputs than the catalog now has: bake again")
        missing = [p for p in image.platforms if p not in found.platforms]
        if missing and not found.unchanged:
            return failed(f"no build for {', '.join(missing)} in the results files")
        # The repository's tags, when they are listed: for a release version's tag policy, or
        # because many images share the repository. They also say which inputs tags exist.
        listed: list[str] | None = None
        if (image.task is None and image.version is not None) or repository in self._listed:
            listed = self.existing_tags(repository)
        existing = [] if image.task is not None or image.version is None else listed or []
        tag_plan = plan_tags(
            version=image.version, task=image.task, inputs=found.inputs, existing=existing
        )
        if found.unchanged:  # bake found its inputs tag there; the other tags are checked
            known = {inputs_tag(found.inputs): found.unchanged}
            return self._retag(image, found.unchanged, tag_plan, known)
        current = None
        if listed is None or inputs_tag(found.inputs) in listed:
            current = self.client.head_manifest(repository, inputs_tag(found.inputs))
        if current is not None:
            known = {inputs_tag(found.inputs): current.digest}
            return self._retag(image, current.digest, tag_plan, known)
        data = build_index(image, found.platforms, self.source)
        digest = sha256_digest(data)
        # A new index: only release tags need a look first (they must not point elsewhere);
        # the inputs tag was just found missing, and moving tags are rewritten anyway.
        unseen: dict[str, str | None] = dict.fromkeys(tag_plan.moving)
        pointing = self._tags_now(image, tag_plan, digest, unseen)
        if self.dry_run:
            return Outcome(image.key, "would-publish", repository, digest, tag_plan.all)
        if found.repository != repository:
            self._copy_manifests(found.repository, repository, found.platforms.values())
        # Each tag PUT carries the index itself (a registry stores it with the first), and
        # checks that every manifest it names is there: no tag can point at a missing one.
        # Immutable tags first, then the moving ones, the inputs tag last: it marks the image
        # complete for the next run.
        for tag in tag_plan.all:
            if pointing[tag] != digest:
                self.client.put_manifest(repository, tag, data, OCI_INDEX)
        return Outcome(image.key, "published", repository, digest, tag_plan.all, index=data)

    def _retag(
        self, image: PlannedImage, digest: str, tag_plan: TagPlan, known: Mapping[str, str | None]
    ) -> Outcome:
        pointing = self._tags_now(image, tag_plan, digest, known)
        stale = [tag for tag in tag_plan.all if pointing[tag] != digest]
        if stale and self.dry_run:
            return Outcome(image.key, "would-tag", image.repository, digest, tuple(stale))
        if stale:
            manifest = self.client.get_manifest(image.repository, digest)
            for tag in stale:
                self.client.put_manifest(image.repository, tag, manifest.data, manifest.media_type)
        return Outcome(
            image.key,
            "unchanged",
            image.repository,
            digest,
            tag_plan.all,
            message=f"retagged {', '.join(stale)}" if stale else "",
        )

    def _tags_now(
        self, image: PlannedImage, tag_plan: TagPlan, digest: str, known: Mapping[str, str | None]
    ) -> dict[str, str | None]:
        """What each tag points at now (one HEAD each); a release tag elsewhere is a conflict."""
        pointing: dict[str, str | None] = {}
        for tag in tag_plan.all:
            if tag in known:
                pointing[tag] = known[tag]
                continue
            found = self.client.head_manifest(image.repository, tag)
            pointing[tag] = found.digest if found else None
            if tag in tag_plan.immutable and found is not None and found.digest != digest:
                raise _Conflict(
                    f"{image.repository}:{tag} already exists and points at {found.digest[:19]}, "
                    f"not at this build ({digest[:19]}): release tags are immutable, so bump "
                    f"the version of {image.key} in the catalog"
                )
        return pointing

    def _copy_manifests(
        self, source: str, target: str, platforms: Sequence[PlatformResult] | Any
    ) -> None:
        for result in platforms:
            for pushed in (result.manifest, *result.attestations):
                self._copy_manifest(source, target, pushed)

    def _copy_manifest(self, source: str, target: str, pushed: Pushed) -> None:
        if self.client.head_manifest(target, pushed.digest) is not None:
            return
        manifest = self.client.get_manifest(source, pushed.digest)
        data = manifest.json()
        for blob in [data["config"], *data.get("layers", [])]:
            self.client.ensure_blob(
                target, blob["digest"], int(blob["size"]), source_repository=source
            )
        self.client.put_manifest(target, pushed.digest, manifest.data, manifest.media_type)


class _Conflict(BuildgenError):
    exit_code = 2


def publish(
    plan: Plan,
    results: Sequence[Results],
    client: RegistryClient,
    options: PublishOptions,
    source: SourceInfo,
    progress: Callable[[Outcome, int, int], None] | None = None,
) -> list[Outcome]:
    """Publish every image of the plan that the results name; never raises for one image."""
    merged = merge_results(plan, results)
    publisher = _Publisher(client, plan, source, options.dry_run)

    def one(image: PlannedImage) -> Outcome:
        try:
            return publisher.publish(image, merged.get(image.key))
        except (RegistryError, _Conflict, ExternalToolError, CatalogError) as exc:
            status = "failed"
            return Outcome(image.key, status, image.repository, message=str(exc), error=exc)

    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        futures = [pool.submit(one, image) for image in plan.images]
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            outcomes[outcome.key] = outcome
            if progress:
                progress(outcome, done, len(futures))
    return [outcomes[image.key] for image in plan.images]


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """3 when the registry failed, 2 for a conflicting release tag, 1 when images were not
    built, else 0."""
    codes = [o.error.exit_code for o in outcomes if o.error is not None]
    return max(codes, default=0)


@dataclass
class Summary:
    """Counts per status, for the closing line."""

    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Summary:
        summary = cls()
        for outcome in outcomes:
            summary.counts[outcome.status] = summary.counts.get(outcome.status, 0) + 1
        return summary

    def __str__(self) -> str:
        order = ("published", "unchanged", "would-publish", "would-tag", "failed")
        return ", ".join(
            f"{self.counts.get(s, 0)} {s}"
            for s in order
            if s in self.counts or s in ("published", "unchanged", "failed")
        )


# -- the whole of `buildgen publish` ---------------------------------------------------------


@dataclass(frozen=True)
class PublishRequest:
    """What `buildgen publish` was asked to do."""

    results: tuple[Path, ...]  # results files of `bake --push` runs
    options: PublishOptions = field(default_factory=PublishOptions)
    lock: Path | None = None  # the lockfile to update; default: next to the catalog
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def publish_results(
    plan: Plan,
    request: PublishRequest,
    progress: Callable[[Outcome, int, int], None] | None = None,
) -> list[Outcome]:
    """`buildgen publish`: publish the plan's images from the results files (`options.jobs` at
    once), then, unless a dry run, pin what was published or found unchanged in the lockfile.
    Returns every image's outcome (`exit_code` maps them)."""
    results = load_results(request.results)
    source = SourceInfo.from_git(plan.catalog.root)
    log.info("publishing %d image(s) to %s from %d results file(s)", len(plan.images),
             plan.registry, len(results))  # fmt: skip
    registry = replace(request.registry, max_connections=request.options.jobs)
    with RegistryClient(registry) as client:
        outcomes = publish(plan, results, client, request.options, source, progress)
        log.info("publish: %s", Summary.of(outcomes))
        for outcome in outcomes:
            if outcome.status == "failed":
                log.error("publish: failed: %s: %s", outcome.key, outcome.message)
        if not request.options.dry_run:
            done = {o.key: o.digest for o in outcomes if o.status in ("published", "unchanged")}
            indexes = {o.key: o.index for o in outcomes if o.index is not None}
            pin_published(plan, request.lock, client, known=done, indexes=indexes)
    return outcomes
