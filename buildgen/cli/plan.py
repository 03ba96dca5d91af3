"""`buildgen plan`: the images the catalog expands to, as a table or (--json) one record each;
with --status, which of them changed since they were published."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping

from buildgen.build.incremental import published
from buildgen.cli.common import add_registry_flags, registry_options
from buildgen.cli.selection import add_selection_flags, load_plan
from buildgen.model.plan import Plan
from buildgen.registry import RegistryClient

log = logging.getLogger(__name__)


DESCRIPTION = (
    "Expand the catalog into one record per image (key, bake target, tags, platforms, "
    "context, Dockerfile, args, dependencies), in a deterministic order."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_flags(parser)
    add_registry_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    parser.add_argument(
        "--status", action="store_true",
        help="ask the registry which images changed: an image whose inputs-<hash> tag is "
        "published is unchanged (one HEAD each)",
    )  # fmt: skip


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    plan = load_plan(args)
    status: dict[str, str] = {}
    if args.status:
        with RegistryClient(registry_options(args)) as client:
            done = published(plan.images, client)
        status = {i.key: "unchanged" if i.key in done else "changed" for i in plan.images}
        changed = sum(1 for s in status.values() if s == "changed")
        log.info("%d of %d image(s) changed since they were published", changed, len(status))
    if args.json:
        sys.stdout.write(plan.to_json(status))
        return 0
    sys.stdout.write(_table(plan, status))
    log.info(
        "%d image(s) under %s; bake targets and full tags: --json", len(plan.images), plan.registry
    )
    return 0


def _table(plan: Plan, status: Mapping[str, str]) -> str:
    """One row per image, columns aligned but the last (dependencies, which run long)."""
    header = ["KEY", "TAG", "PLATFORMS", *(["STATUS"] if status else []), "DEPENDS ON"]
    rows: list[list[str]] = [header] + [
        [i.key, i.tag, ",".join(i.platforms), *([status[i.key]] if status else []),
         " ".join(i.depends_on) or "-"]
        for i in plan.images
    ]  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
