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
from dataclasses import dataclass, field
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
    Tier,
)
from buildgen.model.naming import Axis
from buildgen.model.platforms import platform_problem
from buildgen.model.tasks import (
    Subject,
    Tiering,
    expand_tiers,
    is_table,
    placeholders,
    read_table,
    task_values,
    tier_values,
)
from buildgen.model.tasks import substitute as substitute_values
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
    rows: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    """benchmark -> task -> its values, for benchmarks whose tasks are a table."""
    tiers: Mapping[str, Tiering] = field(default_factory=dict)
    """benchmark -> the tier images its tasks are built on, for benchmarks with tiers."""

    def values(self, benchmark: str, task: str) -> dict[str, str]:
        """The `{name}` substitutions of one task: its table row, and `task`, its id."""
        return task_values(self.rows.get(benchmark, {}).get(task), task)

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
        digest=_digest(model, checker.tasks, checker.rows),
        pairings=tuple(checker.pairings),
        rows=checker.rows,
        tiers=checker.tiers,
    )


def _unreadable(shown: str, message: str) -> CatalogError:
    return CatalogError([Problem(Location(shown, 1, 1), message)])


def _digest(
    model: CatalogModel,
    tasks: Mapping[str, tuple[str, ...]],
    rows: Mapping[str, Mapping[str, Mapping[str, str]]],
) -> str:
    """The digest of what the catalog means; comments and key order don't count."""
    catalog = model.model_dump()
    # Keys added later are left out when unset, so catalogs without them keep their digest.
    if catalog["pipeline"] is None:
        del catalog["pipeline"]
    for bench in catalog["benchmarks"].values():
        for later in ("tiers", "from_"):
            if bench[later] is None:
                del bench[later]
    normalized: dict[str, Any] = {"catalog": catalog, "tasks": tasks}
    if rows:
        normalized["rows"] = rows
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
        self.rows: dict[str, dict[str, dict[str, str]]] = {}
        self.tiers: dict[str, Tiering] = {}
        self._task_locations: dict[str, dict[str, Location]] = {}
        self._columns: dict[str, tuple[str, ...]] = {}  # of each task table read
        self.default_platforms: list[str] | None = None
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
        top = data.get("platforms")
        well_formed = isinstance(top, list) and top and all(isinstance(p, str) for p in top)
        self.default_platforms = top if well_formed else None
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
            rules_seen = [_valid(Combination, rule) for rule in rules]
            self._combinations(rules_seen, specs, self.default_platforms)
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
            allowed = sorted(f.alias or n for n, f in record.model_fields.items()) if record else []
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
        elif per_task and (templated or name in self.rows):
            table = name in self.rows  # a plain list's args are taken as written
            known = {*self._columns.get(name, ()), "task"}
            where = "the task table" if table else "this benchmark (its tasks are no table)"
            self._placeholders(spec, base, known, where, args=table)
            rows = self.rows.get(name, {})
            self._sources(spec, base, [task_values(rows.get(t), t) for t in self.tasks[name]])
        else:
            self._sources(spec, base, [{}])
        if isinstance(spec, Benchmark):
            self._tiers(name, spec, base)
        self._image_rules(spec, base)
        if isinstance(spec, (Agent, Gateway)):
            self._provides(spec.provides, (*base, "provides"))

    def _placeholders(
        self, spec: ImageSpec, base: YamlPath, known: set[str], where: str, *, args: bool = True
    ) -> None:
        """Every `{name}` in context, dockerfile (and args) is one of `known`."""
        texts: list[tuple[YamlPath, str]] = [((*base, "context"), spec.context)]
        if spec.dockerfile:
            texts.append(((*base, "dockerfile"), spec.dockerfile))
        if args:
            texts += [((*base, "args", arg), value) for arg, value in spec.args.items()]
        for path, text in texts:
            for name in placeholders(text):
                if name not in known:
                    shown = ", ".join(f"{{{k}}}" for k in sorted(known)) or "none"
                    self.add(
                        path, f"'{{{name}}}' is not a substitution of {where} (it has: {shown})"
                    )

    def _tiers(self, name: str, bench: Benchmark, base: YamlPath) -> None:
        """The benchmark's tiers: each one well formed, and what the tasks make of them."""
        tiers = bench.tiers or {}
        columns = self._columns.get(name)
        broken = False  # what the tiers expand to cannot be known
        for tier_name, tier in tiers.items():
            where: YamlPath = (*base, "tiers", tier_name)
            problem = naming.axis_name_problem(tier_name)
            if problem:
                self.add(where, f"tier {problem}", key=True)
            self._image_rules(tier, where)
            if tier.key is not None and columns is not None and tier.key not in columns:
                self.add((*where, "key"), f"key {tier.key!r} is not a column of the task table")
                broken = True
            elif tier.key is not None and columns is None and name not in self.rows:
                broken = True  # no table (said below), or a broken one (its problems are said)
            else:
                known = {tier.key} if tier.key is not None else set()
                what = f"tier {tier_name!r} (only its key is)"
                self._placeholders(tier, where, known, what)
        if bench.tiers is not None and bench.tasks is None:
            self.add((*base, "tiers"), "tiers are for per-task benchmarks (add `tasks`)")
            return
        keyed = [n for n, t in tiers.items() if t.key is not None]
        if (
            keyed
            and bench.tasks is not None
            and not (isinstance(bench.tasks, str) and is_table(bench.tasks))
        ):
            self.add((*base, "tasks"), f"tier {keyed[0]!r} has a key: the tasks must be a table "
                     "(.tsv, .csv or .jsonl) with that column")  # fmt: skip
            broken = True
        if bench.tiers is not None and bench.from_ is None:
            self.add(base, "a benchmark with tiers needs `from`: the tier its tasks are built on")
            return
        if bench.from_ is not None and bench.tiers is None:
            self.add((*base, "from"), "`from` names a tier, and this benchmark has no `tiers`")
            return
        if bench.from_ is None:
            return
        self._tier_platforms(bench, base)
        if broken or name not in self.tasks:
            return
        locations = self._task_locations.get(name, {})

        def problem_at(subject: Subject, message: str) -> None:
            kind, about = subject
            if kind == "task":
                self.problems.append(Problem(locations[str(about)], message))
            elif kind == "from":
                where = (*base, "from") if about is None else (*base, "tiers", about, "from")
                self.add(where, message)
            else:
                self.add((*base, "tiers", about) if about in tiers else base, message, key=True)

        tiering = expand_tiers(tiers, bench.from_, self.tasks[name], self.rows.get(name, {}),
                               problem_at)  # fmt: skip
        self.tiers[name] = tiering
        for tier_name, tier in tiers.items():
            values = [tier_values(tier, v) for t, v in tiering.images if t == tier_name]
            self._sources(tier, (*base, "tiers", tier_name), values)

    def _tier_platforms(self, bench: Benchmark, base: YamlPath) -> None:
        """Each image is built for platforms its tier below has: a tier image for one
        platform cannot be the FROM of another's build."""
        default = self.default_platforms
        tiers = bench.tiers or {}

        def of(spec: ImageSpec) -> set[str] | None:
            platforms = spec.platforms if spec.platforms is not None else default
            return set(platforms) if platforms is not None else None

        built: list[tuple[YamlPath, ImageSpec, str | None]] = [(base, bench, bench.from_)]
        built += [((*base, "tiers", n), t, t.from_) for n, t in tiers.items()]
        for where, spec, below in built:
            if below not in tiers:
                continue
            mine, theirs = of(spec), of(tiers[below])
            if mine is not None and theirs is not None and not mine <= theirs:
                missing = ", ".join(sorted(mine - theirs))
                at = (*where, "platforms") if spec.platforms is not None else where
                self.add(at, f"built for {missing}, which tier {below!r} below it is not")

    def _image_rules(self, spec: ImageSpec, base: YamlPath) -> None:
        """What every image's entry must hold beyond its structure."""
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

    def _sources(
        self, spec: ImageSpec, base: YamlPath, substitutions: Sequence[Mapping[str, str]]
    ) -> None:
        """The context directory and Dockerfile exist, for every task (or tier value) when they
        name one: `substitutions` are their `{name}` values."""
        before = len(self.problems)
        for values in substitutions:
            if len(self.problems) - before >= 5:
                self.add((*base, "context"), "... (further tasks not checked)")
                return
            context = substitute_values(spec.context, values)
            dockerfile = substitute_values(
                spec.dockerfile or f"{spec.context.rstrip('/')}/Dockerfile", values
            )
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
        rows: dict[str, dict[str, str]] = {}
        if isinstance(tasks, str):
            ids = self._task_file(benchmark, tasks, path, rows)
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
        self._task_locations[benchmark] = seen
        if isinstance(tasks, str) and is_table(tasks):
            self.rows[benchmark] = {task: rows[task] for task in seen}

    def _task_file(
        self, benchmark: str, relative: str, path: YamlPath, rows: dict[str, dict[str, str]]
    ) -> list[tuple[str, Location]] | None:
        """The ids of a task file, each where it stands; a table's rows go into `rows`."""
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
        if is_table(relative):
            table = read_table(text, os.path.splitext(relative)[1])
            for number, column, message in table.problems:
                self.problems.append(Problem(Location(shown, number, column), message))
            if table.problems:
                return None
            self._columns[benchmark] = table.columns
            for row in table.rows:
                rows.setdefault(row.id, dict(row.values))
            return [(row.id, Location(shown, row.line, row.column)) for row in table.rows]
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
    if len(path) == 4 and path[0] == "benchmarks" and path[2] == "tiers":
        return Tier
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
