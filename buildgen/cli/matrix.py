"""`buildgen matrix`: a GitHub Actions job matrix, one entry per (platform, shard)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from buildgen.build.matrix import matrix
from buildgen.cli.common import checked_platform
from buildgen.cli.selection import add_selection_flags, load_plan

log = logging.getLogger(__name__)


DESCRIPTION = (
    'Print a GitHub Actions `strategy.matrix` (JSON, {"include": [...]}) with one entry per '
    "platform and shard, each at most --targets-per-job images, the whole within --max-jobs, "
    "so each platform builds on its own native runner. Build an entry with `buildgen bake "
    "--push --platform P --shard I/N`; publish all entries' results with `buildgen publish "
    "--from`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_flags(parser)
    parser.add_argument(
        "--platform", action="append", default=[], metavar="P",
        help="only these platforms (repeatable; default: every platform in the plan)",
    )  # fmt: skip
    parser.add_argument("--max-jobs", type=int, default=256, metavar="N",
                        help="at most N entries (GitHub's limit is 256)")  # fmt: skip
    parser.add_argument(
        "--targets-per-job", type=int, default=500, metavar="K",
        help="at most K images per entry (raised when needed to fit --max-jobs)",
    )  # fmt: skip


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    platforms = [checked_platform(platform) for platform in args.platform]
    plan = load_plan(args)
    result = matrix(plan, platforms, max_jobs=args.max_jobs, targets_per_job=args.targets_per_job)
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
    log.info("%d job(s) for %d image(s)", len(result["include"]), len(plan.images))
    return 0
