"""`buildgen bake`: render the plan as bake files and run `docker buildx bake` on them."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from buildgen.build.bake import BakeRequest, bake_plan, unhashed_settings
from buildgen.cli.common import (
    add_registry_flags,
    add_switches,
    checked_platform,
    registry_options,
)
from buildgen.cli.selection import add_selection_flags, load_plan
from buildgen.errors import UsageError
from buildgen.model.defaults import DEFAULT_SHARD_SIZE

log = logging.getLogger(__name__)


USAGE = "buildgen bake [options] [-- extra docker buildx bake args]"
DESCRIPTION = (
    "Render the plan as docker-bake HCL files of at most --shard-size targets each, then run "
    "`docker buildx bake -f FILE` once per file (from the catalog's directory). Arguments "
    "after '--' go to every buildx call unchanged (e.g. -- --print, -- --set "
    "'*.labels.x=y', -- --progress plain)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_flags(parser)
    add_registry_flags(parser)
    parser.add_argument(
        "--platform", metavar="P", help="build only this platform (os/arch[/variant])"
    )
    add_switches(parser, {
        "--push": "push to the registry: by digest where the builder can (docker-container), "
        "else under staging tags build-<inputs>-<platforms>; never release tags (publish "
        "writes those). What was pushed is recorded in DIR/results.<platform|all>.json",
        "--push-by-digest": "push by digest whatever the builder (the docker driver refuses it)",
        "--dry-run": "write the files and print the buildx commands; needs no Docker",
        "--keep-going": "with --push: go on past failed targets (their cancelled siblings are "
        "rebuilt), record every success, and list the failures at the end",
        "--retry-failed": "build only the images that failed in the last --push run in this "
        "build folder",
        "--rebuild": "with --push: build images even when their inputs-<hash> tag is already "
        "published",
    })  # fmt: skip
    parser.add_argument(
        "--out", type=Path, metavar="DIR",
        help="where to write the bake files (default: build/bake next to the catalog)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", "--shard-size", dest="shard_size", type=int, default=DEFAULT_SHARD_SIZE,
        metavar="K",
        help=f"at most K targets per bake file, i.e. per buildx run (default: "
        f"{DEFAULT_SHARD_SIZE}); buildx resolves several small files much faster than one large "
        "one, and a failure cancels only its own run",
    )  # fmt: skip
    parser.add_argument(
        "--shard", metavar="I/N",
        help="build part I of N of the (platform's) images: one entry of `buildgen matrix`",
    )  # fmt: skip
    parser.add_argument(
        "--build-retries", type=int, default=1, metavar="N",
        help="with --push: build targets that did not land up to N more times before they "
        "count as failed (default: 1; registries fail transiently under load)",
    )  # fmt: skip


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    request = BakeRequest(
        out=args.out,
        platform=None if args.platform is None else checked_platform(args.platform),
        push=args.push,
        push_by_digest=args.push_by_digest,
        dry_run=args.dry_run,
        shard_size=args.shard_size,
        shard=_shard(args.shard),
        keep_going=args.keep_going,
        build_retries=args.build_retries,
        retry_failed=args.retry_failed,
        rebuild=args.rebuild,
        extra_args=tuple(passthrough),
        registry=registry_options(args),
    )
    unhashed = unhashed_settings(passthrough)
    if unhashed:
        log.warning(
            "%s after `--` change what is built, but not the images' inputs hash: with --push, "
            "images already published with the same inputs are skipped (add --rebuild), and "
            "what is built is tagged and locked as if built without them. Settings that belong "
            "to an image go in the catalog.",
            ", ".join(unhashed),
        )
    bake_run = bake_plan(load_plan(args), request)
    if request.dry_run and bake_run is not None:
        sys.stdout.write(f"cd {shlex.quote(str(bake_run.cwd))}\n")
        for command in bake_run.commands:
            sys.stdout.write(shlex.join(command) + "\n")
    return 0


def _shard(value: str | None) -> tuple[int, int] | None:
    """--shard I/N as (I, N)."""
    if value is None:
        return None
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return int(index), int(count)
