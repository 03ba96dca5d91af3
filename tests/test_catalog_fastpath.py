"""The catalog's fast path (catalog.py builds the usual, valid catalog without pydantic) against
the models (catalog_models.py, pydantic in strict mode): the same fields, and whatever the fast
path accepts, pydantic accepts as the same value."""

from __future__ import annotations

import copy
import dataclasses
import random
import subprocess
import sys
from typing import Any

import yaml
from conftest import REPO

from buildgen.model import catalog, catalog_models

BASE: dict[str, Any] = {
    "version": 1,
    "registry": "ghcr.io/acme/evals",
    "platforms": ["linux/amd64", "linux/arm64"],
    "labels": {"org.example.team": "evals"},
    "core": {"crane-runner": {"context": ".", "dockerfile": "runner/Dockerfile"}},
    "benchmarks": {
        "tb": {"context": "tb", "version": "1.0.0", "args": {"A": "1"}, "description": "d"},
        "swe": {"context": "swe/{task}", "platforms": ["linux/amd64"], "tasks": "tasks.txt"},
        "inline": {"context": "i", "tasks": ["t1", "t2"], "cache_from": ["type=gha"]},
    },
    "agents": {
        "a1": {"context": "a1", "version": "2.0.14", "target": "final"},
        "a2": {"context": "a2", "provides": ["/opt/a2", {"path": "/etc/a2", "mode": "0700"}]},
    },
    "gateways": {
        "gw": {"context": "gw", "provides": [{"path": "/opt/gw", "uid": 1000, "gid": 1000}]},
    },
    "combinations": [
        {"benchmark": "tb", "agents": ["*"], "gateway": "gw", "version": "1.0.0"},
        {"benchmark": "swe", "agents": ["a1"]},
    ],
}

# What a mutation puts somewhere: every YAML scalar type, and shapes right and wrong.
VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.5, "", "x", "1.0.0", "/opt/x", [], ["x"],
                     [1], [None], {}, {"a": "b"}, {"a": 1}, {"path": "/opt/y"},
                     {"context": "c"}, {"benchmark": "tb", "agents": []}]  # fmt: skip
KEYS = ["context", "tasks", "provides", "path", "mode", "uid", "version", "agents", "extra"]


def pydantic_value(document: Any) -> Any:
    value, _errors = catalog_models.validate(catalog.CatalogModel, document)
    return value


def fast_value(document: Any) -> Any:
    try:
        return catalog._catalog(document)
    except catalog._Declined:
        return None


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += places(item, (*path, i))
    return found


def mutate(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One random change: a value replaced, a key dropped or a key added, somewhere."""
    path = rng.choice(places(document)[1:])
    parent: Any = document
    for part in path[:-1]:
        parent = parent[part]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.3 and isinstance(parent[path[-1]], dict):
        parent[path[-1]][rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES))
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
    return document


def test_the_dataclasses_have_the_models_fields_and_defaults() -> None:
    for model, runtime in catalog_models.RUNTIME.items():
        ours = {f.name: f for f in dataclasses.fields(runtime)}
        assert list(ours) == list(model.model_fields), runtime
        for name, info in model.model_fields.items():
            mine = ours[name]
            no_default = mine.default is dataclasses.MISSING
            assert (no_default and mine.default_factory is dataclasses.MISSING) == (
                info.is_required()
            ), (runtime, name)
            if not info.is_required():
                default = mine.default_factory() if no_default else mine.default  # type: ignore[misc]
                assert default == info.get_default(call_default_factory=True), (runtime, name)


def test_the_fast_path_builds_what_pydantic_builds() -> None:
    repo = yaml.safe_load((REPO / "catalog.yaml").read_text())
    empty_sections = {**BASE, "core": None, "agents": None, "combinations": []}
    for document in (BASE, repo, empty_sections):
        fast = fast_value(document)
        assert fast is not None
        assert fast == pydantic_value(document)


def test_whatever_the_fast_path_accepts_pydantic_accepts_as_the_same() -> None:
    rng = random.Random(20261201)
    accepted = refused = conservative = 0
    for _ in range(2500):
        document = mutate(copy.deepcopy(BASE), rng)
        fast, slow = fast_value(document), pydantic_value(document)
        if fast is not None:
            assert fast == slow, document
            accepted += 1
        elif slow is None:
            refused += 1
        else:
            conservative += 1  # declined, but pydantic accepts: the slow path serves it
    assert accepted > 300 and refused > 300, (accepted, refused)
    assert conservative < accepted / 10, (conservative, accepted)


def test_a_valid_catalog_is_read_without_pydantic() -> None:
    probe = (
        "import sys\n"
        "from buildgen.model.catalog import load_catalog\n"
        "from buildgen.model.plan import make_plan\n"
        f"make_plan(load_catalog({str(REPO / 'catalog.yaml')!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
