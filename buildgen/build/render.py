"""Rendering: the plan as docker-bake HCL files (jinja2), split into shards buildx resolves fast.

DESIGN.md contract 3: stock `docker buildx bake` accepts the output, combination targets take
their axis images through `target:` contexts, and every catalog string goes through `hcl_string`,
so no catalog can inject HCL.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from buildgen.model.combination import template_environment
from buildgen.model.defaults import DEFAULT_SHARD_SIZE as DEFAULT_SHARD_SIZE
from buildgen.model.naming import Axis, bake_target_of_key

if TYPE_CHECKING:
    from buildgen.model.plan import PlannedImage

TEMPLATES = Path(__file__).resolve().parent / "templates"

_ESCAPES = {
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}
for _code in (*range(0x20), 0x7F):
    _ESCAPES.setdefault(_code, f"\\u{_code:04x}")


def hcl_string(value: str) -> str:
    """`value` as an HCL quoted string literal that evaluates to exactly `value`.

    Besides the usual escapes, HCL reads `${` and `%{` as template sequences: `$${` and `%%{`
    are their literal spellings.
    """
    escaped = value.translate(_ESCAPES)
    if "{" in escaped:
        escaped = escaped.replace("${", "$${").replace("%{", "%%{")
    return f'"{escaped}"'


@cache
def _relative_to(path: str, start: str) -> str:
    return posixpath.relpath(path, start)


@cache
def _environment() -> jinja2.Environment:
    env = template_environment(TEMPLATES)
    env.filters["hcl"] = hcl_string
    env.filters["bake_target"] = bake_target_of_key
    # bake reads `dockerfile` relative to the context; the plan keeps it relative to the catalog.
    env.filters["relative_to"] = _relative_to
    env.filters["hcl_list"] = lambda values: f"[{', '.join(map(hcl_string, values))}]"
    return env


@dataclass(frozen=True)
class BakeFile:
    """One shard of the plan: targets built and output, plus dependencies it borrows.

    Borrowed targets are images of another shard that a `target:` context here needs; they are
    built from cache for the context only and never output, so each image is pushed once.
    """

    targets: tuple[PlannedImage, ...]
    borrowed: tuple[PlannedImage, ...]

    @property
    def size(self) -> int:
        """Number of bake targets in the file."""
        return len(self.targets) + len(self.borrowed)


def shard(
    images: Sequence[PlannedImage],
    all_images: Mapping[str, PlannedImage],
    max_targets: int = DEFAULT_SHARD_SIZE,
    prebuilt: Mapping[str, str] | None = None,
) -> list[BakeFile]:
    """Split `images` into files of at most `max_targets` targets, dependencies kept inside.

    Each image lands right after its dependencies where it can, so a combination usually shares
    a file with its benchmark; a dependency from an earlier file is borrowed. A dependency in
    `prebuilt` (key -> published reference) is taken from the registry instead of built.
    """
    prebuilt = prebuilt or {}
    if max_targets < 1:
        raise ValueError("max_targets must be at least 1")
    files: list[BakeFile] = []
    owned: list[PlannedImage] = []
    present: dict[str, PlannedImage] = {}

    def flush() -> None:
        if owned:
            mine = {image.key for image in owned}
            borrowed = tuple(image for key, image in present.items() if key not in mine)
            files.append(BakeFile(tuple(owned), borrowed))
        owned.clear()
        present.clear()

    for image in _dependency_order(images):
        needed = _closure(image, all_images, prebuilt)
        if len(needed) + 1 > max_targets:
            raise ValueError(
                f"{image.key} needs {len(needed)} other targets in its file (its build "
                f"contexts); raise the shard size to at least {len(needed) + 1}"
            )
        missing = [dep for dep in needed if dep.key not in present]
        if len(present) + len(missing) + 1 > max_targets:
            flush()
            missing = needed
        for dep in missing:
            present[dep.key] = dep
        owned.append(image)
        present[image.key] = image
    flush()
    return files


def _closure(
    image: PlannedImage, all_images: Mapping[str, PlannedImage], prebuilt: Mapping[str, str]
) -> list[PlannedImage]:
    """The images `image` builds on, transitively, dependencies first (not the prebuilt)."""
    ordered: dict[str, PlannedImage] = {}

    def visit(key: str) -> None:
        if key in prebuilt:
            return
        dep = all_images[key]
        for inner in dep.depends_on:
            visit(inner)
        ordered.setdefault(key, dep)

    for key in image.depends_on:
        visit(key)
    return list(ordered.values())


def select_shard(images: Sequence[PlannedImage], index: int, count: int) -> list[PlannedImage]:
    """Part `index` (1-based) of `count` near-equal, contiguous parts of the packing order:
    the same on every machine, and a combination stays with its benchmark where it can."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: the index must be between 1 and {count}")
    ordered = _dependency_order(images)
    start, stop = (len(ordered) * (index - 1)) // count, (len(ordered) * index) // count
    return ordered[start:stop]


def _dependency_order(images: Sequence[PlannedImage]) -> list[PlannedImage]:
    """`images` in packing order: the few widely shared axes (core, agents, gateways) first,
    then each benchmark image followed by the images built on it."""
    shared = (Axis.CORE, Axis.AGENT, Axis.GATEWAY)
    order = [i for i in images if i.axis in shared] + [i for i in images if i.axis not in shared]
    position = {image.key: index for index, image in enumerate(order)}

    def anchor(item: tuple[int, PlannedImage]) -> tuple[int, int, int]:
        index, image = item
        deps = [position[d] for d in image.depends_on if d in position]
        return (max(deps), 1, index) if deps else (index, 0, index)

    return [image for _, image in sorted(enumerate(order), key=anchor)]


class PushMode(str, Enum):
    """How `bake --push` names what it pushes. Never a release tag: only publish writes those."""

    NONE = "none"  # no push: the builder's default output (the docker driver loads locally)
    STAGING = "staging"  # under staging tags build-<inputs>-<platforms> (the docker driver)
    DIGEST = "digest"  # push by digest, no tag at all (docker-container and remote builders)


def staging_tag(image: PlannedImage) -> str:
    """The tag a per-platform push goes to: its inputs hash and platforms make it unique, so
    runs for different platforms never overwrite each other, and a rerun of the same inputs
    lands on the same tag."""
    scope = "_".join(p.replace("/", "-") for p in image.platforms)
    return f"build-{image.inputs.removeprefix('sha256:')[:16]}-{scope}"


def _outputs(image: PlannedImage, mode: PushMode) -> tuple[list[str], list[str]]:
    """Tags and outputs of an owned target."""
    if mode is PushMode.STAGING:
        return [f"{image.repository}:{staging_tag(image)}"], ["type=image,push=true"]
    if mode is PushMode.DIGEST:
        output = (
            f"type=image,name={image.repository},push-by-digest=true,name-canonical=true,push=true"
        )
        return [], [output]
    return list(image.tags), []


def render_bake_file(
    bake: BakeFile,
    *,
    push: PushMode,
    index: int,
    total: int,
    source: str,
    prebuilt: Mapping[str, str] | None = None,
) -> str:
    """One bake file's HCL text; contexts in `prebuilt` come from the registry by digest."""
    published = prebuilt or {}

    def context_of(key: str) -> str:
        if key in published:
            return f"docker-image://{published[key]}"
        return f"target:{bake_target_of_key(key)}"

    template = _environment().get_template("docker-bake.hcl.j2")
    return template.render(
        context_of=context_of,
        targets=bake.targets,
        entries=[(image, False, *_outputs(image, push)) for image in bake.targets]
        + [(image, True, [], []) for image in bake.borrowed],
        index=index,
        total=total,
        source=source,
    )
