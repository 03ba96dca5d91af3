"""Per-task benchmarks: the task table (task ids and their values) and the tiers tasks are built
on (docs/catalog.md, "Tiers").

A task table is a .tsv, .csv or .jsonl file with a column `id`; every column is a `{column}`
substitution in a task's context, dockerfile and args. Tiers are images below the tasks (a
base, one environment per key...): each is built `from` another tier or from nothing, and a tier
with a `key` is one image per distinct value of that column among the tasks built on it.
Pure: the catalog checker (catalog.py) reports what `expand_tiers` finds; the plan builds what
it returns.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from buildgen.model import naming
from buildgen.model.catalog_models import Tier

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
ID_COLUMN = "id"
COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_table(relative: str) -> bool:
    """Whether a `tasks` file is a table (by its suffix) rather than a list of ids."""
    return relative.endswith(TABLE_SUFFIXES)


def placeholders(text: str) -> list[str]:
    """The `{name}` placeholders in `text`, in order."""
    return PLACEHOLDER_RE.findall(text)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with each `{name}` of `values` replaced (other braces are left as they are)."""
    if "{" not in text:
        return text
    return PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def tier_values(tier: Tier, value: str | None) -> dict[str, str]:
    """The `{name}` substitutions of a tier's image: its key's value, when it has a key."""
    return {tier.key: value} if tier.key is not None and value is not None else {}


def task_values(row: Mapping[str, str] | None, task: str) -> dict[str, str]:
    """The `{name}` substitutions of one task: its table row (if any), and `task`, its id."""
    return {**(row or {}), "task": task}


@dataclass(frozen=True)
class Row:
    """One task of a table: its id, its line (1-based) and column in the file, and its values."""

    id: str
    line: int
    column: int
    values: Mapping[str, str]


@dataclass
class Table:
    """A task table: its columns, its rows, and what is wrong with it (line, column, message)."""

    columns: tuple[str, ...] = ()
    rows: list[Row] = field(default_factory=list)
    problems: list[tuple[int, int, str]] = field(default_factory=list)


def read_table(text: str, suffix: str) -> Table:
    """A task table from its text; every problem is collected, none raised."""
    table = Table()
    if suffix == ".jsonl":
        _read_jsonl(text, table)
    else:
        _read_delimited(text, "\t" if suffix == ".tsv" else ",", table)
    if table.columns and ID_COLUMN not in table.columns and not table.problems:
        table.problems.append((1, 1, f"the task table has no column {ID_COLUMN!r}"))
    for name in table.columns:
        if not COLUMN_RE.fullmatch(name):
            table.problems.append(
                (1, 1, f"column {name!r} is not a name: letters, digits and '_', not a digit first")
            )
        elif name == "task":
            table.problems.append((1, 1, "a column may not be named 'task': {task} is the id"))
    return table


def _read_delimited(text: str, delimiter: str, table: Table) -> None:
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        records = [(reader.line_num, record) for record in reader]
    except csv.Error as exc:
        table.problems.append((reader.line_num, 1, f"not a valid table: {exc}"))
        return
    records = [(n, r) for n, r in records if any(cell.strip() for cell in r)]
    if not records:
        table.problems.append((1, 1, "the task table is empty"))
        return
    _, header = records[0]
    table.columns = tuple(cell.strip() for cell in header)
    for number, record in records[1:]:
        if len(record) != len(table.columns):
            table.problems.append(
                (number, 1, f"{len(record)} fields where the header has {len(table.columns)}")
            )
            continue
        values = {name: cell.strip() for name, cell in zip(table.columns, record, strict=True)}
        line = lines[number - 1] if number <= len(lines) else ""
        column = len(line) - len(line.lstrip()) + 1
        table.rows.append(Row(values.get(ID_COLUMN, ""), number, column, values))


def _read_jsonl(text: str, table: Table) -> None:
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            table.problems.append((number, 1, f"not JSON: {exc}"))
            continue
        if not isinstance(record, dict):
            table.problems.append((number, 1, "a line of the task table must be a JSON object"))
            continue
        values = {}
        for name, value in record.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                table.problems.append((number, 1, f"{name!r} must be a string or a number"))
                continue
            values[name] = str(value)
            columns.setdefault(name)
        column = len(line) - len(line.lstrip()) + 1
        table.rows.append(Row(values.get(ID_COLUMN, ""), number, column, values))
    table.columns = tuple(columns)
    for row in table.rows:
        missing = [name for name in table.columns if name not in row.values]
        if missing:
            table.problems.append((row.line, row.column, f"no {', '.join(map(repr, missing))}"))
    if not table.rows and not table.problems:
        table.problems.append((1, 1, "the task table is empty"))


# -- tiers ----------------------------------------------------------------------------------

TierImage = tuple[str, str | None]
"""A tier's image: the tier's name and, for a keyed tier, the value it is built for."""


@dataclass
class Tiering:
    """What a benchmark's tiers expand to: every tier image the tasks need, each with the image
    it is built on (None: on nothing of the catalog), lowest first; and each task's own."""

    images: dict[TierImage, TierImage | None] = field(default_factory=dict)
    tasks: dict[str, TierImage] = field(default_factory=dict)


Subject = tuple[str, str | None]
"""What a problem of the tiers is about: ("task", id), ("tier", name), or ("from", the tier
whose `from` it is, None for the benchmark's own)."""


def expand_tiers(
    tiers: Mapping[str, Tier],
    start: str,
    tasks: Sequence[str],
    values: Mapping[str, Mapping[str, str]],
    problem: Callable[[Subject, str], None],
) -> Tiering:
    """The tier images `tasks` need, built on `start` (the benchmark's `from`); `values` is each
    task's row. `problem(subject, message)` is told what is wrong: a cycle, a tier that does not
    exist, a task without its key's value, an image built on two different images, a tier no
    task is built on."""
    chain = _chain(tiers, start, problem)
    tiering = Tiering()
    if chain is None:
        return tiering
    below: dict[TierImage, TierImage | None] = {}
    conflicted: set[TierImage] = set()
    for task in tasks:
        row = values.get(task, {})
        images: list[TierImage] = []
        for name in chain:
            key = tiers[name].key
            value = row.get(key) if key is not None else None
            if key is not None and not value:
                problem(
                    ("task", task),
                    f"task {task!r} has no value for {key!r}, the key of tier {name!r}",
                )
                break
            bad = naming.task_id_problem(value) if value is not None else None
            if bad:  # the value becomes the image's tag
                problem(("task", task), f"the value of {key!r}, the key of tier {name!r}: "
                        + bad.replace("task id", "tag", 1))  # fmt: skip
                break
            images.append((name, value))
        else:
            tiering.tasks[task] = images[0]
            for image, parent in zip(images, [*images[1:], None], strict=True):
                known = below.setdefault(image, parent)
                if known != parent and image not in conflicted:  # said once per image
                    conflicted.add(image)
                    problem(("task", task), f"tier image {_shown(image)} would be built on both "
                            f"{_shown(known)} and {_shown(parent)}")  # fmt: skip
    # Lowest first: the order of the chain, from its end.
    for name in reversed(chain):
        tiering.images.update(
            sorted(((i, p) for i, p in below.items() if i[0] == name), key=lambda x: x[0][1] or "")
        )
    for name in tiers:
        if name not in chain:
            problem(("tier", name), f"tier {name!r} is not used: no task is built on it")
    return tiering


def _chain(
    tiers: Mapping[str, Tier], start: str, problem: Callable[[Subject, str], None]
) -> list[str] | None:
    """The tiers from `start` down to the one built on nothing; None after a problem."""
    chain: list[str] = []
    name: str | None = start
    while name is not None:
        named_by: Subject = ("from", chain[-1] if chain else None)
        if name not in tiers:
            known = ", ".join(tiers) or "none"
            problem(named_by, f"unknown tier {name!r} (known: {known})")
            return None
        if name in chain:
            cycle = " -> ".join([*chain, name])
            problem(named_by, f"the tiers build on each other in a cycle: {cycle}")
            return None
        chain.append(name)
        name = tiers[name].from_
    return chain


def _shown(image: TierImage | None) -> str:
    if image is None:
        return "nothing"
    name, value = image
    return name if value is None else f"{name}:{value}"
