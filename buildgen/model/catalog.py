"""The catalog: `catalog.yaml` read, validated and turned into typed, frozen values.

DESIGN.md contract 2. The structure (keys, types) is the pydantic models of catalog_models.py,
the one model of the catalog, which the rest of buildgen reads. The rules that need the file
system or more than one entry (names, task lists, contexts, combinations) are checked here,
after the structure. Every problem found is reported, each with its file, line and column.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import semver
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from buildgen.errors import CatalogError, Location, Problem
from buildgen.model import naming
from buildgen.model.catalog_models import (
    Agent,
    Benchmark,
    CatalogModel,
    Combination,
    Gateway,
    ImageSpec,
    ProvidedPath,
)
from buildgen.model.naming import Axis
from buildgen.model.platforms import platform_problem
from buildgen.model.yamlsource import Document
from buildgen.model.yamlsource import Path as YamlPath
from buildgen.model.yamlsource import load as load_yaml

SCHEMA_VERSION = 1
# Provided paths go into generated Dockerfiles: a strict alphabet keeps them inert there.
PROVIDED_PATH_RE = re.compile(r"(/[A-Za-z0-9._@+-]+)+")
MODE_RE = re.compile(r"0?[0-7]{3}|[0-7]{4}")
# In a per-task benchmark's context or dockerfile: each task's own directory, so that a change
# to one task's files changes only that task's build inputs.
TASK_PLACEHOLDER = "{task}"

SECTIONS: Mapping[str, tuple[Axis, type[ImageSpec]]] = {
    "core": (Axis.CORE, ImageSpec),
    "benchmarks": (Axis.BENCHMARK, Benchmark),
    "agents": (Axis.AGENT, Agent),
    "gateways": (Axis.GATEWAY, Gateway),
}


_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class Pairing:
    """A benchmark and an agent that a combination rule pre-bakes into evals/<b>--<a>."""

    index: int  # of the rule, in the catalog's combinations
    rule: Combination
    benchmark: str
    agent: str


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: the model, where it lives, every benchmark's task ids and what its
    combination rules make."""

    path: Path
    model: CatalogModel
    tasks: Mapping[str, tuple[str, ...]]
    digest: str
    pairings: tuple[Pairing, ...] = ()

    @property
    def root(self) -> Path:
        """The directory that contexts and Dockerfiles are relative to."""
        return self.path.parent


def catalog_schema() -> dict[str, Any]:
    """The JSON Schema of catalog.yaml, generated from the models."""
    return CatalogModel.model_json_schema()


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and validate a catalog; raise CatalogError listing every problem found."""
    catalog_path = Path(path)
    shown = os.fspath(path)
    try:
        text = catalog_path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise _unreadable(shown, f"cannot read the catalog: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise _unreadable(shown, f"the catalog is not UTF-8: {exc.reason}") from None
    doc, problems = load_yaml(text, shown)
    if problems:
        raise CatalogError(problems)
    checker = _Checker(doc, catalog_path.parent)
    model = checker.check()
    if checker.problems or model is None:
        raise CatalogError(checker.problems)
    return Catalog(
        path=catalog_path,
        model=model,
        tasks=checker.tasks,
        digest=_digest(model, checker.tasks),
        pairings=tuple(checker.pairings),
    )


def _unreadable(shown: str, message: str) -> CatalogError:
    return CatalogError([Problem(Location(shown, 1, 1), message)])


def _digest(model: CatalogModel, tasks: Mapping[str, tuple[str, ...]]) -> str:
    """The digest of what the catalog means; comments and key order don't count."""
    catalog = model.model_dump()
    if catalog["pipeline"] is None:  # a key added later: catalogs without it keep their digest
        del catalog["pipeline"]
    normalized = {"catalog": catalog, "tasks": tasks}
    encoded = json.dumps(normalized, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


_FRIENDLY_TYPES = {
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "int_type": "must be an integer",
}


class _Checker:
    """Collects every problem of one catalog document."""

    def __init__(self, doc: Document, root: Path) -> None:
        self.doc = doc
        self.root = root
        self.problems: list[Problem] = []
        self.tasks: dict[str, tuple[str, ...]] = {}
        self.pairings: list[Pairing] = []
        self._checked_paths: dict[tuple[str, str], str | None] = {}

    def add(self, path: YamlPath, message: str, *, key: bool = False) -> None:
        self.problems.append(Problem(self.doc.at(path, key=key), message))

    def check(self) -> CatalogModel | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.add(
                (), "the catalog must be a mapping with keys version, registry, platforms, ..."
            )
            return None
        model = self._structure(data)
        self._names(data)
        if isinstance(data.get("registry"), str):
            problem = naming.registry_prefix_problem(data["registry"])
            if problem:
                self.add(("registry",), problem)
        self._platforms(data.get("platforms"), ("platforms",))
        if isinstance(data.get("pipeline"), str):
            self._directory(data["pipeline"], ("pipeline",), "pipeline directory")
        # With problems in the structure, each entry that is well formed by itself is still
        # checked on: every problem is reported at once.
        specs: dict[str, dict[str, ImageSpec | None]] = {}
        for section, (_axis, spec_type) in SECTIONS.items():
            entries = data.get(section)
            if not isinstance(entries, dict):
                continue
            valid = getattr(model, section) if model is not None else None
            specs[section] = {
                name: valid[name] if valid is not None else _valid(spec_type, entry)
                for name, entry in entries.items()
            }
            for name, spec in specs[section].items():
                if spec is not None:
                    self._spec(section, name, spec)
        rules = data.get("combinations")
        if model is not None:
            self._combinations(model.combinations, specs, model.platforms)
        elif isinstance(rules, list):
            top = data.get("platforms")
            well_formed = isinstance(top, list) and top and all(isinstance(p, str) for p in top)
            default = top if well_formed else None
            self._combinations([_valid(Combination, rule) for rule in rules], specs, default)
        return model

    # -- structure ---------------------------------------------------------------------------

    def _structure(self, data: dict[str, Any]) -> CatalogModel | None:
        try:
            return CatalogModel.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self._pydantic_error(error)
            return None

    def _pydantic_error(self, error: ErrorDetails) -> None:
        loc: YamlPath = tuple(
            part for part in error["loc"] if not (isinstance(part, str) and part.startswith("["))
        )
        kind = error["type"]
        # A union (tasks: str | list) reports one error per branch; keep the location, one message.
        loc = tuple(p for p in loc if p not in ("str", "list[str]"))
        if kind == "extra_forbidden":
            record = _record_at(loc[:-1])
            allowed = sorted(record.model_fields) if record else []
            hint = difflib.get_close_matches(str(loc[-1]), allowed, 1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            known = f" (known keys: {', '.join(allowed)})" if allowed and not hint else ""
            self.add(loc, f"unknown key {loc[-1]!r}{suggestion}{known}", key=True)
        elif kind == "missing":
            self.add(loc[:-1], f"missing required key {loc[-1]!r}")
        elif kind == "literal_error" and loc == ("version",):
            self.add(
                loc,
                f"unsupported catalog version {error['input']!r}; this buildgen reads "
                f"version {SCHEMA_VERSION}",
            )
        elif kind in _FRIENDLY_TYPES:
            value = error["input"]
            message = f"{_describe(loc)} {_FRIENDLY_TYPES[kind]}, not {_yaml_type(value)}"
            if kind == "string_type" and isinstance(value, (int, float, bool)):
                message += f' (quote it: "{self.doc.raw.get(loc, value)}")'
            self._add_once(loc, message)
        elif kind == "too_short":
            self.add(loc, f"{_describe(loc)} must not be empty")
        else:
            self._add_once(loc, f"{_describe(loc)}: {error['msg']}")

    def _add_once(self, loc: YamlPath, message: str) -> None:
        location = self.doc.at(loc)
        if any(p.location == location for p in self.problems):
            return
        self.problems.append(Problem(location, message))

    # -- names -------------------------------------------------------------------------------

    def _names(self, data: dict[str, Any]) -> None:
        for section in SECTIONS:
            entries = data.get(section)
            if isinstance(entries, dict):
                for name in entries:
                    problem = naming.axis_name_problem(str(name))
                    if problem:
                        self.add((section, name), f"{section}: {problem}", key=True)

    # -- one entry ---------------------------------------------------------------------------

    def _spec(self, section: str, name: str, spec: ImageSpec) -> None:
        base: YamlPath = (section, name)
        per_task = isinstance(spec, Benchmark) and spec.tasks is not None
        if isinstance(spec, Benchmark) and spec.tasks is not None:
            self._tasks(name, spec.tasks, (*base, "tasks"))
        templated = TASK_PLACEHOLDER in spec.context + (spec.dockerfile or "")
        if templated and not per_task:
            where = "context" if TASK_PLACEHOLDER in spec.context else "dockerfile"
            self.add((*base, where), f"'{TASK_PLACEHOLDER}' is only for per-task benchmarks")
        elif templated:
            self._sources(spec, base, self.tasks.get(name, ()))
        else:
            self._sources(spec, base, (None,))
        if spec.version is not None and not semver.Version.is_valid(spec.version):
            self.add(
                (*base, "version"),
                f"version {spec.version!r} is not a semantic version "
                "(MAJOR.MINOR.PATCH, e.g. '1.2.0')",
            )
        self._platforms(spec.platforms, (*base, "platforms"))
        for arg in spec.args:
            if not arg or any(c in arg for c in "= \t\n"):
                self.add(
                    (*base, "args", arg), f"build argument name {arg!r} is not valid", key=True
                )
        for label in spec.labels:
            if not label:
                self.add((*base, "labels"), "a label name must not be empty")
        if isinstance(spec, (Agent, Gateway)):
            self._provides(spec.provides, (*base, "provides"))

    def _sources(self, spec: ImageSpec, base: YamlPath, tasks: Sequence[str | None]) -> None:
        """The context directory and Dockerfile exist (for every task, when they name one)."""
        before = len(self.problems)
        for task in tasks:
            if len(self.problems) - before >= 5:
                self.add((*base, "context"), "... (further tasks not checked)")
                return
            context = spec.context if task is None else spec.context.replace(TASK_PLACEHOLDER, task)
            dockerfile = spec.dockerfile or f"{spec.context.rstrip('/')}/Dockerfile"
            if task is not None:
                dockerfile = dockerfile.replace(TASK_PLACEHOLDER, task)
            found = self._directory(context, (*base, "context"), "context directory")
            if found is not None or spec.dockerfile:
                where = (*base, "dockerfile") if spec.dockerfile else (*base, "context")
                self._file(dockerfile, where, "Dockerfile")

    def _platforms(self, platforms: Any, path: YamlPath) -> None:
        if not isinstance(platforms, list):
            return
        seen: set[str] = set()
        for i, platform in enumerate(platforms):
            if not isinstance(platform, str):
                continue
            problem = platform_problem(platform)
            if problem:
                self.add((*path, i), problem)
            elif platform in seen:
                self.add((*path, i), f"platform {platform!r} is listed twice")
            seen.add(platform)
        if not platforms and path != ("platforms",):
            self.add(path, "platforms must not be empty (omit the key to use the default)")

    def _provides(self, provides: list[str | ProvidedPath], path: YamlPath) -> None:
        if not provides:
            self.add(path, "provides must list at least one path")
        seen: set[str] = set()
        for i, item in enumerate(provides):
            where: YamlPath = (*path, i) if isinstance(item, str) else (*path, i, "path")
            value = item if isinstance(item, str) else item.path
            if not PROVIDED_PATH_RE.fullmatch(value) or any(
                part in (".", "..") for part in value.split("/")
            ):
                self.add(
                    where,
                    f"provided path {value!r} must be an absolute, normalized path "
                    "below '/' of letters, digits and '._@+-' (no '.', '..', '//' or "
                    "trailing '/')",
                )
            elif any(
                value == p or value.startswith(p + "/") or p.startswith(value + "/") for p in seen
            ):
                self.add(where, f"provided path {value!r} overlaps another provided path")
            seen.add(value)
            mode = item.mode if isinstance(item, ProvidedPath) else None
            if mode is not None and not MODE_RE.fullmatch(mode):
                self.add((*path, i, "mode"), f"mode {mode!r} must be octal, e.g. '0700'")

    def _directory(self, relative: str, path: YamlPath, what: str) -> Path | None:
        problem = self._path_problem(relative, "dir")
        if problem:
            self.add(path, f"{what} {relative!r} {problem}")
            return None
        return self.root / relative

    def _file(self, relative: str, path: YamlPath, what: str) -> None:
        problem = self._path_problem(relative, "file")
        if problem:
            self.add(path, f"{what} {relative!r} {problem}")

    def _path_problem(self, relative: str, kind: str) -> str | None:
        cache_key = (relative, kind)
        if cache_key not in self._checked_paths:
            self._checked_paths[cache_key] = _path_problem(self.root, relative, kind)
        return self._checked_paths[cache_key]

    def _tasks(self, benchmark: str, tasks: str | list[str], path: YamlPath) -> None:
        if isinstance(tasks, str):
            ids = self._task_file(tasks, path)
            if ids is None:
                return
        else:
            ids = [(task, self.doc.at((*path, i))) for i, task in enumerate(tasks)]
        seen: dict[str, Location] = {}
        for task, location in ids:
            problem = naming.task_id_problem(task)
            if problem:
                self.problems.append(Problem(location, problem))
            elif task in seen:
                first = seen[task]
                where = f"line {first.line}" if first.path == location.path else str(first)
                self.problems.append(
                    Problem(location, f"duplicate task id {task!r} (first listed on {where})")
                )
            else:
                seen[task] = location
        if not ids:
            self.add(path, f"benchmark {benchmark!r} is per-task but its task list is empty")
        self.tasks[benchmark] = tuple(seen)

    def _task_file(self, relative: str, path: YamlPath) -> list[tuple[str, Location]] | None:
        problem = self._path_problem(relative, "file")
        if problem:
            self.add(path, f"task list {relative!r} {problem}")
            return None
        shown = os.path.join(os.path.dirname(self.doc.path), relative)
        try:
            text = (self.root / relative).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.add(path, f"cannot read task list {relative!r}: {exc}")
            return None
        ids = []
        for number, line in enumerate(text.splitlines(), start=1):
            content = line.split("#", 1)[0]
            task = content.strip()
            if task:
                ids.append(
                    (task, Location(shown, number, len(content) - len(content.lstrip()) + 1))
                )
        return ids

    # -- combinations ------------------------------------------------------------------------

    def _combinations(
        self,
        rules: Sequence[Combination | None],
        specs: Mapping[str, Mapping[str, ImageSpec | None]],
        default_platforms: Sequence[str] | None,
    ) -> None:
        names = {section: sorted(specs.get(section, {})) for section in SECTIONS}
        self.pairings, problems = expand_combinations(rules, names["benchmarks"], names["agents"])
        for path, message in problems:
            self.add(path, message)
        for i, rule in enumerate(rules):
            if rule is None:  # its structure was reported
                continue
            base: YamlPath = ("combinations", i)
            if rule.gateway is not None and rule.gateway not in names["gateways"]:
                self.add((*base, "gateway"), _unknown("gateway", rule.gateway, names["gateways"]))
            if rule.version is not None and not semver.Version.is_valid(rule.version):
                self.add(
                    (*base, "version"),
                    f"version {rule.version!r} is not a semantic version (MAJOR.MINOR.PATCH)",
                )
        for pairing in self.pairings:
            axes = [("benchmarks", pairing.benchmark), ("agents", pairing.agent)]
            gateway = pairing.rule.gateway
            if gateway is not None and gateway in names["gateways"]:
                axes.append(("gateways", gateway))
            if not _share_a_platform(specs, default_platforms, axes):
                self.add(
                    ("combinations", pairing.index),
                    f"combination {pairing.benchmark}--{pairing.agent} has no platform that "
                    f"{' and '.join(name for _, name in axes)} all have",
                )


def expand_combinations(
    rules: Sequence[Combination | None], benchmarks: Sequence[str], agents: Sequence[str]
) -> tuple[list[Pairing], list[tuple[YamlPath, str]]]:
    """What the combination rules make: every benchmark and agent they pair, once each (for
    the first rule that names the pair), in the rules' order; and the problems found on the
    way (a name that is not defined, a glob that matches nothing, a pair made twice). A rule
    of None (one that is not well formed) makes nothing."""
    made: dict[tuple[str, str], Pairing] = {}
    problems: list[tuple[YamlPath, str]] = []

    def match(pattern: str, names: Sequence[str], what: str, path: YamlPath) -> list[str]:
        if any(c in pattern for c in "*?["):
            matched = sorted(fnmatch.filter(names, pattern))
            if not matched:
                problems.append((path, f"pattern {pattern!r} matches no {what}"))
            return matched
        if pattern not in names:
            problems.append((path, _unknown(what, pattern, names)))
            return []
        return [pattern]

    for i, rule in enumerate(rules):
        if rule is None:
            continue
        base: YamlPath = ("combinations", i)
        chosen = match(rule.benchmark, benchmarks, "benchmark", (*base, "benchmark"))
        with_agents = dict.fromkeys(
            agent
            for j, pattern in enumerate(rule.agents)
            for agent in match(pattern, agents, "agent", (*base, "agents", j))
        )
        for benchmark in chosen:
            for agent in with_agents:
                first = made.setdefault((benchmark, agent), Pairing(i, rule, benchmark, agent))
                if first.index != i:
                    message = (
                        f"combination {benchmark}--{agent} is already made by "
                        f"combination rule {first.index + 1}"
                    )
                    problems.append((base, message))
    return list(made.values()), problems


def _share_a_platform(
    specs: Mapping[str, Mapping[str, ImageSpec | None]],
    default: Sequence[str] | None,
    axes: list[tuple[str, str]],
) -> bool:
    """Whether the (section, name) entries have a platform in common. What is not well formed
    (an entry, or the default platforms when it is None) limits nothing: its problems are
    reported."""
    common: set[str] | None = None
    for section, name in axes:
        spec = specs[section][name]
        platforms = spec.platforms if spec is not None and spec.platforms is not None else default
        if spec is not None and platforms is not None:
            common = set(platforms) if common is None else common & set(platforms)
    return common is None or bool(common)


def _unknown(what: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = difflib.get_close_matches(name, known, 1)
    if hint:
        return f"unknown {what} {name!r}; did you mean {hint[0]!r}?"
    listed = ", ".join(known) if known else "none defined"
    return f"unknown {what} {name!r} (known: {listed})"


def _path_problem(root: Path, relative: str, kind: str) -> str | None:
    if not relative:
        return "is empty"
    if os.path.isabs(relative):
        return "must be relative to the catalog's directory"
    full = root / relative
    # Contexts and Dockerfiles are read by the build: keep them inside the catalog's tree.
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        return "is outside the catalog's directory"
    if kind == "dir":
        if not full.is_dir():
            return "does not exist" if not full.exists() else "is not a directory"
    elif not full.is_file():
        return "does not exist" if not full.exists() else "is not a file"
    return None


def _valid(model: type[_M], data: Any) -> _M | None:
    """`data` as `model`, or None if it is not well formed (pydantic's errors on it were
    reported with the whole catalog's)."""
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _record_at(path: YamlPath) -> type[BaseModel] | None:
    """The model of the mapping at `path` of the catalog."""
    if not path:
        return CatalogModel
    if len(path) == 2 and path[0] in SECTIONS:
        return SECTIONS[str(path[0])][1]
    if len(path) == 2 and path[0] == "combinations":
        return Combination
    return None


def _describe(loc: YamlPath) -> str:
    named = [str(p) for p in loc if isinstance(p, str)]
    return f"'{'.'.join(named)}'" if named else "the value"


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
