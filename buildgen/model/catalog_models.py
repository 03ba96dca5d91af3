"""The catalog's typed model: catalog.yaml's structure as frozen pydantic models, strict.

One model for everything: `buildgen schema` is generated from it (field descriptions and
examples included), pydantic's errors on it become the structural messages of
`buildgen validate`, and its values are what the plan reads. The rules that need the file
system or more than one entry are catalog.py's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ImageSpec(_Model):
    """How to build one image; the keys every catalog entry shares."""

    context: str = Field(
        description="Build context directory, relative to the catalog file. In a per-task "
        "benchmark, '{task}' stands for the task id (one context per task).",
        examples=["containers/agents/claude-code"],
    )
    dockerfile: str | None = Field(
        default=None,
        description="Dockerfile, relative to the catalog file. Default: <context>/Dockerfile.",
    )
    target: str | None = Field(
        default=None, description="Build stage of the Dockerfile to build (docker build --target)."
    )
    version: str | None = Field(
        default=None,
        description="Semantic version of the image (quote it: YAML reads 1.10 as a number). "
        "It is the image's tag; without a version the tag is 'latest'.",
        examples=["1.2.0"],
    )
    platforms: list[str] | None = Field(
        default=None,
        description="Platforms to build, overriding the catalog-wide default.",
        examples=[["linux/amd64"]],
    )
    args: dict[str, str] = Field(
        default_factory=dict,
        description="Build arguments (values are strings: quote numbers).",
        examples=[{"PYTHON": "3.11"}],
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Image labels, added to (and overriding) the catalog's."
    )
    cache_from: list[str] = Field(
        default_factory=list,
        description="buildx cache sources, as CSV strings (e.g. 'type=registry,ref=...').",
    )
    cache_to: list[str] = Field(
        default_factory=list, description="buildx cache destinations, as CSV strings."
    )
    description: str | None = Field(
        default=None,
        description="Free text; becomes the org.opencontainers.image.description label.",
    )


_FROM_DOC = (
    "The tier this is built on. Its Dockerfile names it as a stage (`FROM <tier>`): bake "
    "passes that tier's image (for a keyed tier, the one of this task's or image's value) as "
    "the build context of that name."
)


class Tier(ImageSpec):
    """A lower tier of a per-task benchmark (e.g. a base, then one environment per key)."""

    from_: str | None = Field(default=None, alias="from", description=_FROM_DOC)
    key: str | None = Field(
        default=None,
        description="A column of the task table: the tier is one image per distinct value the "
        "tasks built on it have, tagged with that value; '{<column>}' stands for the value in "
        "context, dockerfile and args. Without a key the tier is one image.",
        examples=["env"],
    )


class Benchmark(ImageSpec):
    """A benchmark: one shared environment image, or one image per task."""

    tasks: str | list[str] | None = Field(
        default=None,
        description="Per-task benchmark: a file relative to the catalog, or an inline list of "
        "task ids. A .tsv, .csv or .jsonl file is a table with a column 'id' (the task id) "
        "whose columns are '{<column>}' substitutions in context, dockerfile and args; any "
        "other file holds one task id per line ('#' comments). One image per task, "
        "benchmarks/<b>:<task>, built with the build argument TASK_ID.",
        examples=["tasks/swe-bench.txt", "tasks/swe-bench.tsv", ["task-1", "task-2"]],
    )
    tiers: dict[str, Tier] | None = Field(
        default=None,
        description="Per-task benchmark: the images the tasks are built on, by tier name "
        "(benchmarks/<b>/<tier>[:<value>]), each built from the tier it names in `from`.",
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        description="Per-task benchmark with tiers: the tier every task is built on. " + _FROM_DOC,
    )


class ProvidedPath(_Model):
    """A directory an agent or gateway contributes to a fused rootfs, and who may read it."""

    path: str = Field(description="Absolute path of the directory.", examples=["/opt/gateway"])
    mode: str | None = Field(
        default=None,
        description="Octal mode the directory gets in the fused rootfs (quote it). Default: "
        "'0755' for agents, '0700' (root-only) for gateways.",
        examples=["0700"],
    )
    uid: int = Field(default=0, ge=0, description="Numeric owner of the directory.")
    gid: int = Field(default=0, ge=0, description="Numeric group of the directory.")


_PROVIDES_DOC = (
    "Directories this image contributes to a fused rootfs (crane mode and combination images "
    "alike): each is created with its mode and owner, then filled with the image's files under "
    "it, which keep their own modes and owners. A plain string is a path with the defaults."
)


class Agent(ImageSpec):
    """An agent: its files live under the paths it provides."""

    provides: list[str | ProvidedPath] = Field(
        default_factory=lambda: list[str | ProvidedPath](["/opt/agent"]),
        description=_PROVIDES_DOC,
    )


class Gateway(ImageSpec):
    """A model gateway: its files live under the paths it provides (root-only by default)."""

    provides: list[str | ProvidedPath] = Field(
        default_factory=lambda: list[str | ProvidedPath](["/opt/gateway"]),
        description=_PROVIDES_DOC,
    )


class Combination(_Model):
    """A rule that pre-bakes evals/<b>--<a> images (container mode)."""

    benchmark: str = Field(description="Benchmark name, or a glob over benchmark names.")
    agents: list[str] = Field(
        min_length=1, description="Agent names or globs ('*' is every agent)."
    )
    gateway: str | None = Field(default=None, description="Gateway whose paths are added too.")
    version: str | None = Field(
        default=None, description="Semantic version of the combination images (their tag)."
    )


class CatalogModel(_Model):
    """catalog.yaml: everything buildgen builds, and how."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="buildgen catalog",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1] = Field(description="Catalog schema version.")
    registry: str = Field(
        description="Prefix of every image name; `--registry` overrides it.",
        examples=["ghcr.io/acme/evals"],
    )
    platforms: list[str] = Field(
        min_length=1,
        description="Default platforms of every image.",
        examples=[["linux/amd64", "linux/arm64"]],
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every image.")
    core: dict[str, ImageSpec] = Field(
        default_factory=dict, description="Core images (core/<name>), e.g. the crane-runner."
    )
    benchmarks: dict[str, Benchmark] = Field(default_factory=dict)
    agents: dict[str, Agent] = Field(default_factory=dict)
    gateways: dict[str, Gateway] = Field(default_factory=dict)
    combinations: list[Combination] = Field(default_factory=list)
    pipeline: str | None = Field(
        default=None,
        description="A directory (relative to the catalog) holding the eval pipeline, whose "
        "`run` is the eval's entry: every combination image gets it at /opt/eval (root-owned, "
        "0755), as the crane runner puts its own copy into a crane-mode rootfs.",
        examples=["containers/core/eval-pipeline"],
    )

    @field_validator("core", "benchmarks", "agents", "gateways", mode="before")
    @classmethod
    def _null_section_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value
