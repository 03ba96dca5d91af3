"""Compare rendered bake files, as real `docker buildx bake --print` resolves them, with a plan."""

from __future__ import annotations

import json
import posixpath
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from buildgen.model.naming import bake_target, parse_key
from buildgen.model.plan import Plan


def bake_print(path: Path, cwd: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["docker", "buildx", "bake", "-f", str(path), "--print"],
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, f"buildx rejected {path}:\n{result.stderr}"
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


def expected_target(record: dict[str, Any], staging: bool = False) -> dict[str, Any]:
    """What buildx should resolve a plan record's target to (the fields we set)."""
    tags = record["tags"]
    if staging:  # bake --push: build-<16 hex of the inputs hash>-<platforms>, no release tag
        scope = "_".join(p.replace("/", "-") for p in record["platforms"])
        tags = [f"{record['repository']}:build-{record['inputs'][7:23]}-{scope}"]
    target: dict[str, Any] = {
        "context": record["context"],
        "tags": tags,
        "platforms": record["platforms"],
        "args": record["args"],
        "labels": record["labels"],
    }
    if record["dockerfile_inline"] is not None:
        target["dockerfile-inline"] = record["dockerfile_inline"]
    else:
        target["dockerfile"] = record["dockerfile"]
    if record["contexts"] or record["directories"]:
        target["contexts"] = {
            name: "target:" + bake_target(*parse_key(key))
            for name, key in record["contexts"].items()
        } | record["directories"]  # a directory context as written: relative to the catalog
    return target


def resolved_target(printed: dict[str, Any]) -> dict[str, Any]:
    """The same fields from `--print` output, with `dockerfile` made relative to the catalog."""
    target = {
        key: printed.get(key, {}) for key in ("context", "tags", "platforms", "args", "labels")
    }
    if "dockerfile-inline" in printed:
        target["dockerfile-inline"] = printed["dockerfile-inline"]
    else:
        target["dockerfile"] = posixpath.normpath(
            posixpath.join(printed["context"], printed["dockerfile"])
        )
    if printed.get("contexts"):
        target["contexts"] = printed["contexts"]
    return target


def assert_files_match_plan(
    files: Iterable[Path], plan: Plan, cwd: Path, staging: bool = False
) -> int:
    """Every plan image is an output target of exactly one file and resolves to its record."""
    records = {r["target"]: r for r in json.loads(plan.to_json())}
    owned: dict[str, Path] = {}
    count = 0
    for path in files:
        count += 1
        printed = bake_print(path, cwd)
        group = printed["group"]["default"]["targets"]
        targets = printed["target"]
        for name in group:
            assert name in records, f"{path}: target {name} is not in the plan"
            assert name not in owned, f"{name} is built by {owned[name]} and {path}"
            owned[name] = path
            expected = expected_target(records[name], staging)
            assert resolved_target(targets[name]) == expected, name
            assert "cacheonly" not in json.dumps(targets[name].get("output", []))
        for name, target in targets.items():
            if name not in group:  # borrowed: a context only, never an output
                # buildx drops outputs of targets pulled in only as contexts; ours say cacheonly.
                assert target.get("output") in (None, ["type=cacheonly"]), f"{path}: {name} output"
                assert not target.get("tags"), f"{path}: borrowed {name} has tags"
                assert any(name in json.dumps(t.get("contexts", {})) for t in targets.values())
    assert sorted(owned) == sorted(records), "the files do not build exactly the plan"
    return count
