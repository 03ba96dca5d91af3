"""The plan: a catalog expanded into one record per image, in a deterministic order.

Everything later stages need about an image (its key, bake target, tags, platforms, build inputs,
dependencies) is decided here, once; rendering and publishing only read it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from buildgen.errors import UsageError
from buildgen.model import inputs, naming
from buildgen.model.catalog import Catalog, Pairing
from buildgen.model.catalog_models import Agent, Gateway, ImageSpec, ProvidedPath
from buildgen.model.fusion import DEFAULT_MODES, PIPELINE, Provided
from buildgen.model.naming import Axis
from buildgen.model.tasks import TierImage, substitute, tier_values

log = logging.getLogger(__name__)

TITLE_LABEL = "org.opencontainers.image.title"
VERSION_LABEL = "org.opencontainers.image.version"
DESCRIPTION_LABEL = "org.opencontainers.image.description"


@dataclass(frozen=True)
class PlannedImage:
    """One image to build: everything the bake file and the publisher need to know."""

    key: str
    axis: Axis
    name: str
    task: str | None
    target: str
    repository: str
    tag: str
    version: str | None
    platforms: tuple[str, ...]
    context: str
    dockerfile: str | None
    dockerfile_inline: str | None
    stage: str | None
    args: Mapping[str, str]
    labels: Mapping[str, str]
    contexts: Mapping[str, str] = field(default_factory=dict)  # named context -> image key
    directories: Mapping[str, str] = field(default_factory=dict)  # named context -> directory
    depends_on: tuple[str, ...] = ()
    provides: tuple[Provided, ...] = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    inputs: str = ""  # build-inputs hash (inputs.py), filled in by make_plan
    tier: str | None = None  # a benchmark's lower tier (name "<b>/<tier>"), not an axis image

    @property
    def tags(self) -> tuple[str, ...]:
        """Full references this image is built under."""
        return (f"{self.repository}:{self.tag}",)

    def to_json(self) -> dict[str, Any]:
        """The plan record of this image (`buildgen plan --json`)."""
        return {
            "key": self.key,
            "axis": self.axis.value,
            "name": self.name,
            "task": self.task,
            "target": self.target,
            "repository": self.repository,
            "tags": list(self.tags),
            "version": self.version,
            "platforms": list(self.platforms),
            "context": self.context,
            "dockerfile": self.dockerfile,
            "dockerfile_inline": self.dockerfile_inline,
            "stage": self.stage,
            "args": dict(self.args),
            "labels": dict(self.labels),
            "contexts": dict(self.contexts),
            "directories": dict(self.directories),
            "depends_on": list(self.depends_on),
            "provides": [p.to_json() for p in self.provides],
            "cache_from": list(self.cache_from),
            "cache_to": list(self.cache_to),
            "inputs": self.inputs,
        } | ({"tier": self.tier} if self.tier is not None else {})


@dataclass(frozen=True)
class Plan:
    """Every image of a catalog (or the selected part of it), in build order."""

    catalog: Catalog
    registry: str
    images: tuple[PlannedImage, ...]
    all_images: Mapping[str, PlannedImage]  # by key, including images not selected

    def to_json(self, status: Mapping[str, str] | None = None) -> str:
        """The plan as `buildgen plan --json` prints it (with each image's `status` if given)."""
        records = (
            image.to_json() | ({"status": status[image.key]} if status else {})
            for image in self.images
        )
        # One record per line: readable, diffable, and json's fast C encoder does the work.
        lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in records)
        return f"[\n{lines}\n]\n" if lines else "[]\n"

    def for_platform(self, platform: str) -> Plan:
        """This plan restricted to one platform: images that lack it are left out."""
        images = tuple(_with_platform(i, platform) for i in self.images if platform in i.platforms)
        everything = {k: _with_platform(i, platform) for k, i in self.all_images.items()}
        skipped = len(self.images) - len(images)
        if skipped:
            log.info("%d image(s) are not built for %s and are skipped", skipped, platform)
        return Plan(self.catalog, self.registry, images, everything)


def _with_platform(image: PlannedImage, platform: str) -> PlannedImage:
    return replace(image, platforms=(platform,))


def make_plan(catalog: Catalog, *, registry: str | None = None, select: Sequence[str] = ()) -> Plan:
    """Expand a validated catalog into its plan; `select` globs over image keys."""
    prefix = registry if registry is not None else catalog.model.registry
    problem = naming.registry_prefix_problem(prefix)
    if problem:
        raise UsageError(f"--registry: {problem}")
    images = list(_expand(catalog, prefix))
    images += _combinations(catalog, prefix, {image.key: image.inputs for image in images})
    by_key = {image.key: image for image in images}
    _check_targets(images)
    chosen = images if not select else _select(images, select)
    return Plan(catalog, prefix, tuple(chosen), by_key)


def _select(images: Sequence[PlannedImage], patterns: Sequence[str]) -> list[PlannedImage]:
    chosen: dict[str, PlannedImage] = {}
    for pattern in patterns:
        matched = [image for image in images if fnmatch.fnmatchcase(image.key, pattern)]
        if not matched:
            log.warning("--select %r selects no image", pattern)
        chosen.update((image.key, image) for image in matched)
    return [image for image in images if image.key in chosen]


def _check_targets(images: Iterable[PlannedImage]) -> None:
    seen: dict[str, str] = {}
    for image in images:
        other = seen.setdefault(image.target, image.key)
        if other != image.key:  # pragma: no cover - naming.bake_target is injective
            raise UsageError(
                f"images {other} and {image.key} map to one bake target {image.target}"
            )


def _expand(catalog: Catalog, prefix: str) -> Iterable[PlannedImage]:
    model = catalog.model
    builder = _Builder(catalog, prefix)
    for name, spec in sorted(model.core.items()):
        yield _axis_image(builder, Axis.CORE, name, spec)
    for name, bench in sorted(model.benchmarks.items()):
        if bench.tasks is None:
            yield _axis_image(builder, Axis.BENCHMARK, name, bench)
            continue
        tiering = catalog.tiers.get(name)
        made: dict[TierImage, PlannedImage] = {}
        for (tier, value), below in (tiering.images if tiering else {}).items():
            parent = None if below is None else (below[0], made[below])
            made[tier, value] = _tier_image(builder, name, tier, value, parent)
            yield made[tier, value]
        for task in catalog.tasks[name]:
            on = None
            if tiering is not None and bench.from_ is not None:
                on = (bench.from_, made[tiering.tasks[task]])
            yield _axis_image(builder, Axis.BENCHMARK, name, bench, task, on)
    for name, agent in sorted(model.agents.items()):
        yield _axis_image(builder, Axis.AGENT, name, agent)
    for name, gateway in sorted(model.gateways.items()):
        yield _axis_image(builder, Axis.GATEWAY, name, gateway)


class _Builder:
    """What every image of one plan is made with: the catalog, the registry prefix, and the
    digests of contexts and Dockerfiles, each computed once (many per-task images share one
    context)."""

    def __init__(self, catalog: Catalog, prefix: str) -> None:
        self.catalog = catalog
        self.prefix = prefix
        self._seen: dict[tuple[str, str], tuple[str, str]] = {}

    def digests(self, context: str, dockerfile: str) -> tuple[str, str]:
        key = (context, dockerfile)
        if key not in self._seen:
            path = self.catalog.root / dockerfile
            self._seen[key] = (
                inputs.context_digest(self.catalog.root / context, path),
                inputs.file_digest(path),
            )
        return self._seen[key]


def _platforms(catalog: Catalog, spec: ImageSpec) -> tuple[str, ...]:
    return tuple(spec.platforms if spec.platforms is not None else catalog.model.platforms)


def _labels(
    catalog: Catalog, key: str, version: str | None, spec: ImageSpec | None
) -> dict[str, str]:
    labels = {TITLE_LABEL: key}
    if version:
        labels[VERSION_LABEL] = version
    if spec is not None and spec.description:
        labels[DESCRIPTION_LABEL] = spec.description
    labels.update(catalog.model.labels)
    if spec is not None:
        labels.update(spec.labels)
    return labels


def _axis_image(
    builder: _Builder,
    axis: Axis,
    name: str,
    spec: ImageSpec,
    task: str | None = None,
    parent: tuple[str, PlannedImage] | None = None,
) -> PlannedImage:
    """An axis image (a benchmark's task when `task`, built on `parent`: its tier's name and
    image)."""
    args = dict(spec.args)
    values: dict[str, str] = {}
    if task is not None:  # a per-task benchmark may give each task its own context
        values = builder.catalog.values(name, task)
        if name in builder.catalog.rows:  # a task table's columns stand in the build arguments too
            args = {arg: substitute(value, values) for arg, value in args.items()}
        args["TASK_ID"] = task
    provides: tuple[Provided, ...] = ()
    if isinstance(spec, (Agent, Gateway)):
        provides = _axis_provides(spec, axis)
    return _built(builder, axis, name, spec, task, values, args, provides, parent)


def _tier_image(
    builder: _Builder,
    bench: str,
    tier_name: str,
    value: str | None,
    parent: tuple[str, PlannedImage] | None,
) -> PlannedImage:
    """The image of a benchmark's tier (for `value` of its key), built on `parent`."""
    tiers = builder.catalog.model.benchmarks[bench].tiers or {}
    tier = tiers[tier_name]
    values = tier_values(tier, value)
    args = {arg: substitute(text, values) for arg, text in tier.args.items()}
    name = naming.tier_name(bench, tier_name)
    return _built(builder, Axis.BENCHMARK, name, tier, value, values, args, (), parent,
                  tier=tier_name)  # fmt: skip


def _built(
    builder: _Builder,
    axis: Axis,
    name: str,
    spec: ImageSpec,
    task: str | None,
    values: Mapping[str, str],
    args: dict[str, str],
    provides: tuple[Provided, ...],
    parent: tuple[str, PlannedImage] | None,
    tier: str | None = None,
) -> PlannedImage:
    """An image built from a context and Dockerfile of the catalog (`values`: their `{name}`
    substitutions), on `parent` (the named context its Dockerfile's FROM uses) when given."""
    context = _normalize(substitute(spec.context, values))
    dockerfile = _normalize(
        substitute(spec.dockerfile or _join(spec.context, "Dockerfile"), values)
    )
    contexts = {} if parent is None else {parent[0]: parent[1].key}
    image = _planned(
        builder.prefix, axis, name, task, spec.version,
        platforms=_platforms(builder.catalog, spec),
        context=context,
        dockerfile=dockerfile,
        dockerfile_inline=None,
        stage=spec.target,
        args=args,
        labels=_labels(builder.catalog, naming.image_key(axis, name, task), spec.version, spec),
        contexts=contexts,
        depends_on=tuple(contexts.values()),
        provides=provides,
        cache_from=tuple(spec.cache_from),
        cache_to=tuple(spec.cache_to),
        tier=tier,
    )  # fmt: skip
    dependencies = {} if parent is None else {parent[0]: parent[1].inputs}
    return _hashed(image, *builder.digests(context, dockerfile), dependencies=dependencies)


def _planned(
    prefix: str, axis: Axis, name: str, task: str | None, version: str | None, **fields: Any
) -> PlannedImage:
    """An image with the names of `axis`, `name` and `task` (naming.py) and `fields`."""
    return PlannedImage(
        key=naming.image_key(axis, name, task),
        axis=axis,
        name=name,
        task=task,
        target=naming.bake_target(axis, name, task),
        repository=naming.repository(prefix, axis, name),
        tag=task or version or "latest",
        version=version,
        **fields,
    )


def _hashed(
    image: PlannedImage,
    context_digest: str | None,
    dockerfile_digest: str | None,
    *,
    dependencies: dict[str, str],
) -> PlannedImage:
    """`image` with its build-inputs hash, from the digests of its context and Dockerfile and
    the hashes of what it is built on (inputs.py)."""
    digest = inputs.inputs_hash(
        context=context_digest,
        dockerfile=dockerfile_digest,
        dockerfile_inline=image.dockerfile_inline,
        stage=image.stage,
        args=dict(image.args),
        labels=dict(image.labels),
        platforms=image.platforms,
        dependencies=dependencies,
    )
    return replace(image, inputs=digest)


def _provided(item: str | ProvidedPath, default_mode: int) -> Provided:
    if isinstance(item, str):
        return Provided(item, default_mode, 0, 0)
    mode = int(item.mode, 8) if item.mode is not None else default_mode
    return Provided(item.path, mode, item.uid, item.gid)


def _combinations(
    catalog: Catalog, prefix: str, hashes: Mapping[str, str]
) -> Iterable[PlannedImage]:
    model = catalog.model
    pipeline_digest = (
        inputs.context_digest(catalog.root / model.pipeline, None) if model.pipeline else ""
    )
    for pairing in catalog.pairings:
        bench = model.benchmarks[pairing.benchmark]
        tasks: Sequence[str | None] = (
            catalog.tasks[pairing.benchmark] if bench.tasks is not None else (None,)
        )
        for task in tasks:
            image = _combination(catalog, prefix, pairing, task)
            dependencies = {role: hashes[dep] for role, dep in image.contexts.items()}
            if model.pipeline is not None:
                dependencies["pipeline"] = pipeline_digest
            yield _hashed(image, None, None, dependencies=dependencies)


def _combination(catalog: Catalog, prefix: str, pairing: Pairing, task: str | None) -> PlannedImage:
    """The combination image of one pairing (and task), its inputs hash not yet made."""
    bench_name, agent_name, gateway_name = pairing.benchmark, pairing.agent, pairing.rule.gateway
    bench, agent = catalog.model.benchmarks[bench_name], catalog.model.agents[agent_name]
    gateway = catalog.model.gateways[gateway_name] if gateway_name else None
    name = naming.eval_name(bench_name, agent_name)
    key = naming.image_key(Axis.EVAL, name, task)
    contexts = {
        "benchmark": naming.image_key(Axis.BENCHMARK, bench_name, task),
        "agent": naming.image_key(Axis.AGENT, agent_name),
    }
    sources = {"agent": _axis_provides(agent, Axis.AGENT)}
    platforms = [p for p in _platforms(catalog, bench) if p in _platforms(catalog, agent)]
    if gateway is not None and gateway_name is not None:
        contexts["gateway"] = naming.image_key(Axis.GATEWAY, gateway_name)
        sources["gateway"] = _axis_provides(gateway, Axis.GATEWAY)
        platforms = [p for p in platforms if p in _platforms(catalog, gateway)]
    directories = {}
    if catalog.model.pipeline is not None:  # a directory laid out as the rootfs has it
        directories["pipeline"] = catalog.model.pipeline
        sources["pipeline"] = (PIPELINE,)
    from buildgen.model.combination import combination_dockerfile  # jinja2: combinations only

    identity = {
        "EVAL_BENCHMARK": naming.image_key(Axis.BENCHMARK, bench_name),
        "EVAL_TASK": task or "",
        "EVAL_AGENT": contexts["agent"],
        "EVAL_GATEWAY": contexts.get("gateway", ""),
    }
    version = pairing.rule.version
    return _planned(
        prefix, Axis.EVAL, name, task, version,
        platforms=tuple(platforms),
        context=".",
        dockerfile=None,
        dockerfile_inline=combination_dockerfile(key, sources, identity),
        stage=None,
        args={},
        labels=_labels(catalog, key, version, None),
        contexts=contexts,
        directories=directories,
        depends_on=tuple(contexts.values()),
    )  # fmt: skip


def _axis_provides(spec: Agent | Gateway, axis: Axis) -> tuple[Provided, ...]:
    return tuple(_provided(item, DEFAULT_MODES[axis]) for item in spec.provides)


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if directory not in ("", ".") else name


def _normalize(path: str) -> str:
    return posixpath.normpath(path)
