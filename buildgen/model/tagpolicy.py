"""The tag policy: which tags a published image gets. The one place tags are decided.

- a release version X.Y.Z is immutable: an existing X.Y.Z that points elsewhere is a conflict;
- X.Y, X and `latest` move only when X.Y.Z is the highest stable version of its line
  (X.Y.*, X.*.*, everything) among the versions already in the repository, so publishing a
  backport (1.4.3 after 2.0.0) moves `1.4` and `1` if it is their newest, never `latest` or `2`;
- a prerelease (1.0.0-rc.1) gets only its own tag;
- a per-task image gets only its task id; an image without a version gets `latest`;
- every image also gets `inputs-<hash>`, naming its build inputs, so an unchanged image is
  recognised by one HEAD.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import semver

INPUTS_TAG_PREFIX = "inputs-"
INPUTS_TAG_HEX = 32  # 128 bits of the sha256: unique, and short enough to read


@dataclass(frozen=True)
class TagPlan:
    """Tags to point at a new index: `immutable` ones must not exist elsewhere."""

    immutable: tuple[str, ...]
    moving: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        """Every tag, immutable first."""
        return self.immutable + self.moving


def inputs_tag(inputs: str) -> str:
    """The tag naming an image's build-inputs hash ('sha256:abc...' -> 'inputs-abc...')."""
    return INPUTS_TAG_PREFIX + inputs.removeprefix("sha256:")[:INPUTS_TAG_HEX]


def stable_versions(tags: Iterable[str]) -> list[semver.Version]:
    """The stable X.Y.Z versions among a repository's tags."""
    versions = []
    for tag in tags:
        if semver.Version.is_valid(tag):
            version = semver.Version.parse(tag)
            if not version.prerelease and not version.build:
                versions.append(version)
    return versions


def plan_tags(
    *, version: str | None, task: str | None, inputs: str, existing: Iterable[str]
) -> TagPlan:
    """The tags of one image, given the tags already in its repository."""
    extra = (inputs_tag(inputs),) if inputs else ()
    if task is not None:
        return TagPlan(immutable=(), moving=(task, *extra))
    if version is None:
        return TagPlan(immutable=(), moving=("latest", *extra))
    parsed = semver.Version.parse(version)
    if parsed.prerelease or parsed.build:
        # A build-metadata '+' is not allowed in tags: spell it '_' as Docker tools do.
        return TagPlan(immutable=(version.replace("+", "_"),), moving=extra)
    others = [v for v in stable_versions(existing) if v != parsed]
    moving: list[str] = []
    if all(parsed > v for v in others if (v.major, v.minor) == (parsed.major, parsed.minor)):
        moving.append(f"{parsed.major}.{parsed.minor}")
    if all(parsed > v for v in others if v.major == parsed.major):
        moving.append(f"{parsed.major}")
    if all(parsed > v for v in others):
        moving.append("latest")
    return TagPlan(immutable=(version,), moving=(*moving, *extra))
