"""Image names: the one place where keys, repositories, tags and bake target names are made.

DESIGN.md contract 1. The Rust CLI that runs evals builds the same names, so every rule here is
documented in docs/naming.md and changes only on purpose.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum

AXIS_NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
TASK_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A registry prefix is a reference without tag or digest: an optional domain (with port),
# then lowercase path components (the distribution spec's grammar).
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_IPV6 = r"\[[0-9a-fA-F:]+\](?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
HOST_RE = re.compile(rf"{_DOMAIN}|{_IPV6}")
BAKE_TARGET_RE = re.compile(r"[a-zA-Z0-9_-]+")
# The distribution spec allows repository names up to 255 characters in practice.
MAX_REPOSITORY_LENGTH = 255


class Axis(str, Enum):
    """An image family: its catalog section and the path component of its image names."""

    CORE = "core"
    BENCHMARK = "benchmarks"
    AGENT = "agents"
    GATEWAY = "models"
    EVAL = "evals"

    @property
    def section(self) -> str:
        """The catalog section that lists images of this axis."""
        return {Axis.GATEWAY: "gateways", Axis.EVAL: "combinations"}.get(self, self.value)


def axis_name_problem(name: str) -> str | None:
    """Why `name` is not a valid axis name, or None when it is."""
    if not name:
        return "name is empty"
    if "--" in name:
        return f"name {name!r} contains '--', which separates benchmark and agent in evals/<b>--<a>"
    if name != name.lower():
        return f"name {name!r} must be lowercase"
    if not AXIS_NAME_RE.fullmatch(name):
        return (
            f"name {name!r} is not a valid name: use lowercase letters and digits, "
            "separated by single '.', '_' or '-'"
        )
    return None


def task_id_problem(task: str) -> str | None:
    """Why `task` is not a valid task id (it becomes an image tag), or None when it is."""
    if not task:
        return "task id is empty"
    if len(task) > 128:
        return f"task id {task[:40]!r}... is longer than 128 characters (the tag limit)"
    if not TASK_ID_RE.fullmatch(task):
        return (
            f"task id {task!r} is not a valid tag: use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return None


def registry_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot prefix image names, or None when it can."""
    first, _, rest = prefix.partition("/")
    # As in docker's reference grammar, the first component is a registry host only when it
    # looks like one (a '.', a ':' or 'localhost'); otherwise it is a lowercase path component.
    is_host = "." in first or ":" in first or first == "localhost" or first.startswith("[")
    if is_host:
        host_ok = HOST_RE.fullmatch(first) is not None
        valid = host_ok and (not rest or REPOSITORY_PATH_RE.fullmatch(rest) is not None)
    else:
        valid = REPOSITORY_PATH_RE.fullmatch(prefix) is not None
    if not valid:
        return (
            f"registry prefix {prefix!r} is not a valid image name prefix "
            "(e.g. 'ghcr.io/acme/evals' or '127.0.0.1:5000/evals'; lowercase path)"
        )
    return None


def image_key(axis: Axis, name: str, task: str | None = None) -> str:
    """The key of an image, as used by the plan, the lockfile and `--select`."""
    return f"{axis.value}/{name}" if task is None else f"{axis.value}/{name}:{task}"


def eval_name(benchmark: str, agent: str) -> str:
    """The name of the combination image of `benchmark` and `agent`."""
    return f"{benchmark}--{agent}"


def tier_name(benchmark: str, tier: str) -> str:
    """The name of a benchmark's tier images: benchmarks/<b>/<tier>[:<value>] are their keys."""
    return f"{benchmark}/{tier}"


def repository(prefix: str, axis: Axis, name: str) -> str:
    """The full repository of an image, e.g. ghcr.io/acme/evals/agents/claude-code."""
    return f"{prefix.rstrip('/')}/{axis.value}/{name}"


def bake_target(axis: Axis, name: str, task: str | None = None) -> str:
    """The bake target name of an image: its key with '/' and ':' spelled '--'.

    Bake target names allow only [a-zA-Z0-9_-]. Axis names never contain '--' or '__', so '.'
    in an axis name is spelled '__' without ambiguity, and the '/' of a tier's name (<b>/<tier>)
    '---' (a task id never starts with '-'). A task id may contain anything a tag may; one with
    a '.' gets it spelled '_' plus a short hash of the id to stay unique.
    """
    parts = [axis.value, name.replace(".", "__").replace("/", "---")]
    if task is not None:
        if "." in task:
            digest = hashlib.sha256(task.encode()).hexdigest()[:8]
            parts.append(f"{task.replace('.', '_')}-{digest}")
        else:
            parts.append(task)
    return "--".join(parts)


def parse_key(key: str) -> tuple[Axis, str, str | None]:
    """Split an image key into axis, name and task (None for a shared image)."""
    axis_part, _, rest = key.partition("/")
    name, _, task = rest.partition(":")
    return Axis(axis_part), name, (task or None)


def bake_target_of_key(key: str) -> str:
    """The bake target name of the image with this key."""
    return bake_target(*parse_key(key))
