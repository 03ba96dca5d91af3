"""`buildgen publish`: merge the per-platform pushes of `bake --push` runs into one tagged OCI
index per image, then pin them in the lockfile."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from buildgen.cli.common import (
    add_lock_flag,
    add_registry_flags,
    positive_int,
    registry_options,
)
from buildgen.cli.selection import add_selection_flags, load_plan
from buildgen.release.publish import (
    Outcome,
    PublishOptions,
    PublishRequest,
    exit_code,
    publish_results,
)

DESCRIPTION = (
    "For every image, build one OCI index from the per-platform manifests recorded by "
    "`buildgen bake --push` (with their attestations), annotate it, push it once and tag "
    "it: the immutable X.Y.Z; X.Y, X and latest only when it is the newest stable version "
    "of that line in the repository; a prerelease only its own tag; a per-task image its "
    "task id; and inputs-<hash>. Talks to the registry directly."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_flags(parser)
    add_registry_flags(parser)
    parser.add_argument(
        "--from", dest="results", nargs="+", type=Path, required=True, metavar="RESULTS",
        help="results files of bake --push runs (e.g. build/bake/results.*.json)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be pushed and tagged"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=16,
        metavar="N",
        help="images published at once (default 16)",
    )
    add_lock_flag(parser)


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    request = PublishRequest(
        results=tuple(args.results),
        options=PublishOptions(jobs=args.jobs, dry_run=args.dry_run),
        lock=args.lock,
        registry=registry_options(args),
    )
    outcomes = publish_results(load_plan(args), request, Progress())
    if args.dry_run:
        for outcome in outcomes:
            if outcome.status in ("would-publish", "would-tag"):
                verb = "push index" if outcome.status == "would-publish" else "retag"
                sys.stdout.write(f"{verb} {outcome.repository}@{outcome.digest} tags: "
                                 f"{' '.join(outcome.tags)}\n")  # fmt: skip
    return exit_code(outcomes)


class Progress:
    """A one-line counter on a terminal; a line every ~10% (and at most every 10 s) in CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.counts: dict[str, int] = {}
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, outcome: Outcome, done: int, total: int) -> None:
        with self.lock:
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
            line = f"publish: {done}/{total} ({summary})"
            if self.tty:
                self.stream.write(f"\r{line}\033[K" + ("\n" if done == total else ""))
                self.stream.flush()
            else:
                now = time.monotonic()
                step = max(1, total // 10)
                if done == total or done % step == 0 or now - self.last > 10:
                    self.last = now
                    self.stream.write(line + "\n")
            if outcome.status == "failed":
                self.stream.write(
                    ("\r\033[K" if self.tty else "")
                    + f"publish: {outcome.key}: {outcome.message}\n"
                )
