"""`buildgen materialize`: crane mode's rootfs, the benchmark, agent and gateway images fused by
digest (or, with --unmount, an overlay rootfs taken down)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from buildgen.cli.common import (
    add_eval_flags,
    add_lock_flag,
    add_registry_flags,
    add_switches,
    checked_platform,
    registry_options,
)
from buildgen.cli.resolve import pin
from buildgen.crane.machine import check_runnable
from buildgen.crane.materialize import (
    DEFAULT_UNPACKED_LIMIT,
    MaterializeOptions,
    materialize_pinned,
)
from buildgen.crane.overlay import unmount
from buildgen.crane.resolve import from_env
from buildgen.errors import UsageError
from buildgen.fsutil import write_atomic

log = logging.getLogger(__name__)

_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def byte_size(text: str) -> int:
    """An argparse type: a size such as 0, 500M, 20G (powers of 1000; a trailing B is allowed)."""
    value = text.strip().upper().removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 0, 500M, 20G)")
    return int(number) * _SIZE_UNITS[unit]


DESCRIPTION = (
    "Pull the benchmark (or one task of it), agent and gateway images by digest (from the "
    "lockfile, or with --from-env from EVAL_* variables as `buildgen resolve` prints them), "
    "verify every digest and size, and fuse them into --rootfs: the benchmark's layers (OCI "
    "whiteouts applied), then each directory the agent and gateway provide, with the fusion "
    "rule's mode and owner (the same rule as the combination images). Blobs are cached by "
    "digest in --cache (a second run downloads nothing); --mirror registries are tried "
    "first. Prints (or writes to --record) every digest used."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_registry_flags(parser)
    add_lock_flag(parser)
    add_eval_flags(parser, required=False)  # not with --from-env or --unmount
    parser.add_argument("--rootfs", type=Path, required=True, metavar="DIR",
                        help="a new or empty directory for the fused rootfs")  # fmt: skip
    parser.add_argument(
        "--cache", type=Path, metavar="DIR",
        help="cache of blobs and unpacked images (default: $XDG_CACHE_HOME/buildgen or "
        "~/.cache/buildgen)",
    )  # fmt: skip
    parser.add_argument(
        "--mirror", action="append", default=[], metavar="REGISTRY",
        help="pull from this registry first (host[:port]; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--record", type=Path, metavar="PATH",
        help="write the record of digests used here (default: stdout)",
    )  # fmt: skip
    parser.add_argument(
        "--unpacked-limit", type=byte_size, default=DEFAULT_UNPACKED_LIMIT, metavar="SIZE",
        help="keep unpacked benchmark images in the cache, up to SIZE bytes of files (e.g. "
        "20G, the default; 0 keeps none): a run with an image kept copies it instead of "
        "extracting its layers again",
    )  # fmt: skip
    parser.add_argument(
        "--pipeline", type=Path, metavar="DIR",
        help="also fuse DIR's opt/eval into the rootfs at /opt/eval (root-owned, 0755), as "
        "the catalog's `pipeline` is in every combination image (the crane runner passes its "
        "own copy)",
    )  # fmt: skip
    add_switches(parser, {
        "--overlay": "make the rootfs an overlay mount of the unpacked image in the cache instead "
        "of a copy (instant; needs CAP_SYS_ADMIN, else it copies); writes land in .DIR.overlay "
        "beside it; remove it with --unmount",
        "--unmount": "unmount the overlay rootfs --rootfs DIR and remove its writable layer, "
        "then exit",
        "--from-env": "take the references from EVAL_* variables, not the lockfile",
        "--runnable": "refuse (exit 2, before any pull) a platform this machine cannot run: its "
        "own, or one a binfmt_misc handler runs",
    })  # fmt: skip


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    if args.unmount:
        unmount(args.rootfs)
        log.info("unmounted %s", args.rootfs)
        return 0
    if args.overlay and args.unpacked_limit == 0:
        raise UsageError("--overlay mounts the unpacked image: it needs --unpacked-limit above 0")
    if args.from_env:
        platform, pinned = from_env(os.environ, args.platform)
    else:
        if not (args.benchmark and args.agent and args.platform):
            raise UsageError("--benchmark, --agent and --platform are needed (or --from-env)")
        platform = checked_platform(args.platform)
        pinned = pin(args, platform, runner=False)
    if args.runnable:
        check_runnable(platform, list(pinned[0].platforms) or None)
    if args.pipeline is not None and not args.pipeline.is_dir():
        raise UsageError(f"--pipeline {args.pipeline} is not a directory")
    options = MaterializeOptions(
        rootfs=args.rootfs,
        cache=args.cache,
        mirrors=tuple(args.mirror),
        unpacked_limit=args.unpacked_limit,
        overlay=args.overlay,
        registry=registry_options(args),
        pipeline=args.pipeline,
    )
    record = materialize_pinned(platform, pinned, options)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if args.record:
        write_atomic(args.record, text)
    else:
        sys.stdout.write(text)
    log.info("materialized %s into %s", " + ".join(p.key for p in pinned), args.rootfs)
    return 0
