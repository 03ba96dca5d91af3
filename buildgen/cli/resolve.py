"""`buildgen resolve`: the digest-pinned references of one eval's images for one platform, from
the lockfile alone (the crane runner runs it before every eval: no catalog, no YAML)."""

from __future__ import annotations

import argparse
import json
import sys

from buildgen.cli.common import add_eval_flags, add_lock_flag, checked_platform
from buildgen.crane.resolve import Pinned, resolve, to_env
from buildgen.errors import UsageError
from buildgen.model import lockfile, naming
from buildgen.model.naming import Axis, image_key

DESCRIPTION = (
    "Look up the benchmark (or one of its tasks), agent, gateway and the crane runner in the "
    "lockfile and print their digest-pinned references for one platform (--format env: "
    "EVAL_BENCHMARK_IMAGE=<repo>@sha256:... lines; json). Reads only the lockfile. Unknown "
    "names or a platform an image lacks exit 2, naming what there is."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_lock_flag(parser)
    add_eval_flags(parser, required=True)
    parser.add_argument("--format", choices=("env", "json"), default="env")


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    platform = checked_platform(args.platform)
    pinned = pin(args, platform, runner=True)
    if args.format == "json":
        images = {p.role: p.to_json() for p in pinned}
        sys.stdout.write(json.dumps({"platform": platform, "images": images}, indent=2) + "\n")
        return 0
    sys.stdout.write("\n".join(to_env(pinned, platform)) + "\n")
    return 0


def pin(args: argparse.Namespace, platform: str, *, runner: bool) -> list[Pinned]:
    """The images --benchmark (--task), --agent and --gateway name, and the crane runner's when
    `runner`, pinned for `platform` by the lockfile of --catalog (or --lock)."""
    for flag, name in (("--benchmark", args.benchmark), ("--agent", args.agent),
                       ("--gateway", args.gateway)):  # fmt: skip
        # A tier's images (benchmarks/<b>/<tier>) are built on, never run: no name reaches them.
        problem = naming.axis_name_problem(name) if name is not None else None
        if problem:
            raise UsageError(f"{flag}: {problem}")
    task_problem = naming.task_id_problem(args.task) if args.task is not None else None
    if task_problem:
        raise UsageError(f"--task: {task_problem}")
    roles = [
        ("benchmark", image_key(Axis.BENCHMARK, args.benchmark, args.task)),
        ("agent", image_key(Axis.AGENT, args.agent)),
    ]
    if args.gateway:
        roles.append(("gateway", image_key(Axis.GATEWAY, args.gateway)))
    if runner:
        roles.append(("runner", image_key(Axis.CORE, "crane-runner")))
    return resolve(lockfile.read(lockfile.lock_path(args.catalog, args.lock)), roles, platform)
