"""The catalog: `catalog.yaml` read, validated and turned into typed, frozen values.

DESIGN.md contract 2. Structural rules (keys, types) are the pydantic models of
catalog_models.py, which are also the source of the JSON Schema (`buildgen schema`). A catalog
of the usual, valid shape is checked and built here without them (`_catalog`: importing pydantic
and building the models took longer than reading a 2,000-image catalog); anything else goes to
them, for pydantic's verdict and its errors. The rules that need the file system or more than
one entry (names, task lists, contexts, combinations) are checked after the structure. Every
problem found is reported, each with its file, line and column.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import semver

from buildgen.errors import CatalogError, Location, Problem
from buildgen.model import naming
from buildgen.model.defaults import DEFAULT_CATALOG as DEFAULT_CATALOG
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

# -- the catalog's values --------------------------------------------------------------------
# Plain frozen dataclasses. Their fields, types and defaults are those of the pydantic models
# in catalog_models.py (the schema, with every field's description); a test keeps them equal.


@dataclass(frozen=True)
class ImageSpec:
    """How to build one image; the keys every catalog entry shares."""

    context: str
    dockerfile: str | None = None
    target: str | None = None
    version: str | None = None
    platforms: list[str] | None = None
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    cache_from: list[str] = field(default_factory=list)
    cache_to: list[str] = field(default_factory=list)
    description: str | None = None


@dataclass(frozen=True)
class Benchmark(ImageSpec):
    """A benchmark: one shared environment image, or one image per task."""

    tasks: str | list[str] | None = None


@dataclass(frozen=True)
class ProvidedPath:
    """A directory an agent or gateway contributes to a fused rootfs, and who may read it."""

    path: str
    mode: str | None = None
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Agent(ImageSpec):
    """An agent: its files live under the paths it provides."""

    provides: list[str | ProvidedPath] = field(default_factory=lambda: ["/opt/agent"])


@dataclass(frozen=True)
class Gateway(ImageSpec):
    """A model gateway: its files live under the paths it provides (root-only by default)."""

    provides: list[str | ProvidedPath] = field(default_factory=lambda: ["/opt/gateway"])


@dataclass(frozen=True)
class Combination:
    """A rule that pre-bakes evals/<b>--<a> images (container mode)."""

    benchmark: str
    agents: list[str]
    gateway: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class CatalogModel:
    """catalog.yaml: everything buildgen builds, and how."""

    version: int
    registry: str
    platforms: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    core: dict[str, ImageSpec] = field(default_factory=dict)
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    combinations: list[Combination] = field(default_factory=list)


SECTIONS: Mapping[str, tuple[Axis, type[ImageSpec]]] = {
    "core": (Axis.CORE, ImageSpec),
    "benchmarks": (Axis.BENCHMARK, Benchmark),
    "agents": (Axis.AGENT, Agent),
    "gateways": (Axis.GATEWAY, Gateway),
}


# -- the fast path: the usual, valid shape, without pydantic ---------------------------------
# Each function returns the value its model would give, or raises _Declined for anything it
# does not plainly accept, which then goes to pydantic (catalog_models.py). Declining is always
# safe; what is accepted must be what pydantic, in strict mode, gives for it
# (tests/test_catalog_fastpath.py: the repo's catalog, and thousands of random variations).


class _Declined(Exception):
    """Not the plain, valid shape: let pydantic decide, and say what is wrong."""


_T = TypeVar("_T")


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _Declined
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _texts(value: Any) -> list[str]:
    if type(value) is not list:
        raise _Declined
    return [_text(item) for item in value]


def _optional_texts(value: Any) -> list[str] | None:
    return None if value is None else _texts(value)


def _some_texts(value: Any) -> list[str]:
    items = _texts(value)
    if not items:
        raise _Declined
    return items


def _text_map(value: Any) -> dict[str, str]:
    if type(value) is not dict:
        raise _Declined
    return {_text(key): _text(item) for key, item in value.items()}


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Declined
    return value


def _record(kind: type[_T], value: Any, convert: Mapping[str, Callable[[Any], Any]]) -> _T:
    """`kind` from a mapping whose keys are all known and hold what they must."""
    if type(value) is not dict or not value.keys() <= convert.keys():
        raise _Declined
    try:
        return kind(**{key: convert[key](item) for key, item in value.items()})
    except TypeError:  # a required key is missing
        raise _Declined from None


def _tasks(value: Any) -> str | list[str] | None:
    return _text(value) if type(value) is str else _optional_texts(value)


def _provided_path(value: Any) -> str | ProvidedPath:
    if type(value) is str:
        return value
    convert = {"path": _text, "mode": _optional_text, "uid": _count, "gid": _count}
    return _record(ProvidedPath, value, convert)


def _provides(value: Any) -> list[str | ProvidedPath]:
    if type(value) is not list:
        raise _Declined
    return [_provided_path(item) for item in value]


_SPEC_FIELDS: dict[str, Callable[[Any], Any]] = {
    "context": _text,
    "dockerfile": _optional_text,
    "target": _optional_text,
    "version": _optional_text,
    "platforms": _optional_texts,
    "args": _text_map,
    "labels": _text_map,
    "cache_from": _texts,
    "cache_to": _texts,
    "description": _optional_text,
}
_SPEC_CONVERTERS: dict[type[ImageSpec], dict[str, Callable[[Any], Any]]] = {
    ImageSpec: _SPEC_FIELDS,
    Benchmark: {**_SPEC_FIELDS, "tasks": _tasks},
    Agent: {**_SPEC_FIELDS, "provides": _provides},
    Gateway: {**_SPEC_FIELDS, "provides": _provides},
}


_Spec = TypeVar("_Spec", bound=ImageSpec)


def _spec(kind: type[_Spec], value: Any) -> _Spec:
    return _record(kind, value, _SPEC_CONVERTERS[kind])


def _section(kind: type[ImageSpec]) -> Callable[[Any], dict[str, Any]]:
    def convert(value: Any) -> dict[str, Any]:
        if value is None:  # `agents:` with nothing under it
            return {}
        if type(value) is not dict:
            raise _Declined
        return {_text(name): _spec(kind, entry) for name, entry in value.items()}

    return convert


def _combinations(value: Any) -> list[Combination]:
    if type(value) is not list:
        raise _Declined
    convert = {"benchmark": _text, "agents": _some_texts, "gateway": _optional_text,
               "version": _optional_text}  # fmt: skip
    return [_record(Combination, rule, convert) for rule in value]


def _schema_version(value: Any) -> int:
    if type(value) is not int or value != SCHEMA_VERSION:
        raise _Declined
    return value


_CATALOG_FIELDS: dict[str, Callable[[Any], Any]] = {
    "version": _schema_version,
    "registry": _text,
    "platforms": _some_texts,
    "labels": _text_map,
    **{section: _section(kind) for section, (_axis, kind) in SECTIONS.items()},
    "combinations": _combinations,
}


def _catalog(data: Any) -> CatalogModel:
    return _record(CatalogModel, data, _CATALOG_FIELDS)


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: the model, where it lives, and every benchmark's task ids."""

    path: Path
    model: CatalogModel
    tasks: Mapping[str, tuple[str, ...]]
    digest: str

    @property
    def root(self) -> Path:
        """The directory that contexts and Dockerfiles are relative to."""
        return self.path.parent


def catalog_schema() -> dict[str, Any]:
    """The JSON Schema of catalog.yaml, generated from the models."""
    from buildgen.model.catalog_models import schema

    return schema()


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and validate a catalog; raise CatalogError listing every problem found."""
    catalog_path = Path(path)
    shown = os.fspath(path)
    try:
        raw = catalog_path.read_bytes()
    except OSError as exc:
        raise CatalogError(
            [Problem(Location(shown, 1, 1), f"cannot read the catalog: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            [Problem(Location(shown, 1, 1), f"the catalog is not UTF-8: {exc.reason}")]
        ) from None
    doc, problems = load_yaml(text, shown)
    if problems:
        raise CatalogError(problems)
    checker = _Checker(doc, catalog_path.parent)
    model = checker.check()
    if checker.problems or model is None:
        raise CatalogError(checker.problems)
    return Catalog(
        path=catalog_path, model=model, tasks=checker.tasks, digest=_digest(model, checker.tasks)
    )


def _digest(model: CatalogModel, tasks: Mapping[str, tuple[str, ...]]) -> str:
    """The digest of what the catalog means; comments and key order don't count."""
    normalized = {"catalog": asdict(model), "tasks": tasks}
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
        for section, (_axis, spec_type) in SECTIONS.items():
            entries = data.get(section)
            if not isinstance(entries, dict):
                continue
            specs = getattr(model, section) if model is not None else None
            for name, entry in entries.items():
                spec = specs[name] if specs is not None else self._entry(spec_type, entry)
                if spec is not None:
                    self._spec(section, name, spec)
        self._combinations(data)
        return model

    # -- structure ---------------------------------------------------------------------------

    def _structure(self, data: dict[str, Any]) -> CatalogModel | None:
        try:
            return _catalog(data)
        except _Declined:
            pass
        from buildgen.model.catalog_models import validate

        model, errors = validate(CatalogModel, data)
        for error in errors:
            self._pydantic_error(error)
        return model if isinstance(model, CatalogModel) else None

    def _pydantic_error(self, error: Mapping[str, Any]) -> None:
        loc: YamlPath = tuple(
            part for part in error["loc"] if not (isinstance(part, str) and part.startswith("["))
        )
        kind = error["type"]
        # A union (tasks: str | list) reports one error per branch; keep the location, one message.
        loc = tuple(p for p in loc if p not in ("str", "list[str]", "list[constrained-str]"))
        if kind == "extra_forbidden":
            record = _record_at(loc[:-1])
            allowed = sorted(f.name for f in fields(record)) if record else []
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

    def _entry(self, spec_type: type[ImageSpec], entry: Any) -> ImageSpec | None:
        """One entry of a catalog whose structure has problems, for the checks after it."""
        try:
            return _spec(spec_type, entry)
        except _Declined:
            pass
        from buildgen.model.catalog_models import validate

        spec, _ = validate(spec_type, entry)  # its errors were reported with the whole catalog
        return spec if isinstance(spec, spec_type) else None

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

    def _combinations(self, data: dict[str, Any]) -> None:
        rules = data.get("combinations")
        if not isinstance(rules, list):
            return
        names = {
            section: sorted(data[section]) if isinstance(data.get(section), dict) else []
            for section in ("benchmarks", "agents", "gateways")
        }
        pairs: dict[tuple[str, str], int] = {}
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            base: YamlPath = ("combinations", i)
            benchmarks = self._match(
                rule.get("benchmark"), names["benchmarks"], "benchmark", (*base, "benchmark")
            )
            agent_patterns = rule.get("agents")
            agents: list[str] = []
            if isinstance(agent_patterns, list):
                for j, pattern in enumerate(agent_patterns):
                    agents += self._match(pattern, names["agents"], "agent", (*base, "agents", j))
            gateway = rule.get("gateway")
            if isinstance(gateway, str) and gateway not in names["gateways"]:
                self.add((*base, "gateway"), _unknown("gateway", gateway, names["gateways"]))
            if isinstance(rule.get("version"), str) and not semver.Version.is_valid(
                rule["version"]
            ):
                self.add(
                    (*base, "version"),
                    f"version {rule['version']!r} is not a semantic version (MAJOR.MINOR.PATCH)",
                )
            for benchmark in benchmarks:
                for agent in dict.fromkeys(agents):
                    if (benchmark, agent) in pairs:
                        self.add(
                            base,
                            f"combination {benchmark}--{agent} is already made by "
                            f"combination rule {pairs[benchmark, agent] + 1}",
                        )
                    pairs.setdefault((benchmark, agent), i)
                    axes = [("benchmarks", benchmark), ("agents", agent)]
                    if isinstance(gateway, str) and gateway in names["gateways"]:
                        axes.append(("gateways", gateway))
                    if not _common_platforms(data, axes):
                        self.add(
                            base,
                            f"combination {benchmark}--{agent} has no platform that "
                            f"{' and '.join(name for _, name in axes)} all have",
                        )

    def _match(self, pattern: Any, names: list[str], what: str, path: YamlPath) -> list[str]:
        if not isinstance(pattern, str):
            return []
        if any(c in pattern for c in "*?["):
            matched = fnmatch.filter(names, pattern)
            if not matched:
                self.add(path, f"pattern {pattern!r} matches no {what}")
            return matched
        if pattern not in names:
            self.add(path, _unknown(what, pattern, names))
            return []
        return [pattern]


def _common_platforms(data: dict[str, Any], axes: list[tuple[str, str]]) -> set[str]:
    """The platforms every (section, name) entry is built for, from the raw catalog."""
    top = data.get("platforms")
    default: list[Any] = top if isinstance(top, list) else []
    common: set[str] | None = None
    for section, name in axes:
        entry = data[section].get(name)
        platforms = entry.get("platforms") if isinstance(entry, dict) else None
        chosen = set(platforms if isinstance(platforms, list) else default)
        common = chosen if common is None else common & chosen
    return common or set()


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


def _record_at(path: YamlPath) -> type[Any] | None:
    """The dataclass (and model) of the mapping at `path` of the catalog."""
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
