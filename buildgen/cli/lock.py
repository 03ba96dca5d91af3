"""`buildgen lock`: pin digests in images.lock.json; --check it (offline, or --remote too);
--diff it against an older one."""

from __future__ import annotations

import argparse
import logging
import sys

from buildgen.cli.common import (
    add_lock_flag,
    add_registry_flags,
    positive_int,
    registry_options,
)
from buildgen.cli.selection import add_selection_flags, load_plan
from buildgen.errors import UsageError
from buildgen.release import lock
from buildgen.release.lock import DEFAULT_JOBS, LockOptions

log = logging.getLogger(__name__)


DESCRIPTION = (
    "Resolve every image's tag in the registry and pin its digest in the lockfile (HEAD "
    "first; the index is read only when its digest changed; entries not selected stay "
    "byte-identical). --check compares the lockfile with the catalog offline (exit 1 "
    "listing missing, extra and stale entries); --remote also checks the pinned digests "
    "exist and reports tags that moved (drift). --diff OLD prints a Markdown table of what "
    "changed since OLD (a lockfile path or a git revision)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_flags(parser)
    add_registry_flags(parser)
    add_lock_flag(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="offline check; exit 1 when stale")
    mode.add_argument("--diff", metavar="OLD", help="Markdown diff against a path or git revision")
    parser.add_argument("--remote", action="store_true", help="with --check: ask the registry too")
    parser.add_argument(
        "--jobs", type=positive_int, default=DEFAULT_JOBS, metavar="N",
        help=f"registry requests in flight at once (default {DEFAULT_JOBS}): one HEAD per "
        "image is mostly waiting, so more than publish's",
    )  # fmt: skip


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    if args.remote and not args.check:
        raise UsageError("--remote goes with --check")
    options = LockOptions(path=args.lock, jobs=args.jobs, registry=registry_options(args))
    plan = load_plan(args)
    if args.diff is not None:
        sys.stdout.write(lock.diff_since(plan, args.diff, options))
        return 0
    if not args.check:
        lock.refresh(plan, options)
        return 0
    verdict = lock.verify(plan, options, remote=args.remote)
    for finding in verdict.findings:
        sys.stdout.write(f"{finding}\n")
    if verdict.findings:
        log.error("%s: %d problem(s); run `buildgen lock` (or publish) to update it",
                  verdict.path, len(verdict.findings))  # fmt: skip
        return 1
    log.info("%s: up to date (%d images)", verdict.path, verdict.images)
    return 0
