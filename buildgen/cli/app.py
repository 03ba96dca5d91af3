"""The command line: parse flags, call one function, map errors to exit codes.

Exit codes (DESIGN.md): 0 done, 1 the thing checked is not so, 2 bad input, 3 an external tool
or registry failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from buildgen import __version__
from buildgen.errors import BuildgenError, CatalogError, UsageError
from buildgen.model.defaults import DEFAULT_CATALOG, DEFAULT_SHARD_SIZE
from buildgen.model.platforms import platform_problem
from buildgen.registry import RegistryError

# Verbs import what they use when they run: `resolve` runs before every eval in crane mode and
# must not pay for pydantic, jinja2 or httpx.
if TYPE_CHECKING:
    from buildgen.model.catalog import Catalog
    from buildgen.model.plan import Plan
    from buildgen.registry import RegistryOptions
    from buildgen.release.publish import Outcome

log = logging.getLogger("buildgen")

DESCRIPTION = """\
buildgen turns catalog.yaml (benchmarks, agents, model gateways, the crane runner and
pre-baked combinations) into docker-bake files and builds them with docker buildx bake.

  buildgen validate            check the catalog; every error as FILE:LINE:COL: message
  buildgen plan                the images the catalog expands to (--json for machines)
  buildgen bake                render the bake files and run docker buildx bake on them
  buildgen publish             merge per-platform pushes into tagged multi-arch indexes
  buildgen lock                pin digests in images.lock.json (--check, --diff OLD)
  buildgen resolve             digest-pinned references for crane mode, from the lockfile
  buildgen matrix              a CI job matrix: one entry per (platform, shard)
  buildgen materialize         crane mode: fuse benchmark, agent and gateway into one rootfs
  buildgen schema              the catalog's JSON Schema

exit codes: 0 done, 1 check failed, 2 bad input, 3 an external tool failed
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a verb and turn buildgen's own errors into messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main_inner(args)
    except CatalogError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        sys.stderr.write(f"buildgen: {exc.args[0]}\n")
        return exc.exit_code
    except (BuildgenError, RegistryError) as exc:
        sys.stderr.write(f"buildgen: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("buildgen: interrupted\n")
        return 130


def main_inner(argv: list[str]) -> int:
    """Parse `argv` and run the verb; raises BuildgenError on failure."""
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose - args.quiet)
    if passthrough and args.verb != "bake":
        raise UsageError("arguments after '--' are passed to docker buildx bake: only for 'bake'")
    handler: Callable[[argparse.Namespace, list[str]], int] = args.handler
    return handler(args, passthrough)


DEFAULT_UNPACKED_LIMIT = 20 * 10**9
# Requests in flight for `lock`. From one thread (registry/fanout.py), connections are cheap; on
# a 20 ms path 2,000 HEADs took 1.79 s with 64 against 1.92 s with 32 (bench_lock --sweep), and
# the same on loopback.
DEFAULT_LOCK_JOBS = 64
_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _byte_size(text: str) -> int:
    """A size such as 0, 500M, 20G (powers of 1000; a trailing B is allowed)."""
    value = text.strip().upper().removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 0, 500M, 20G)")
    return int(number) * _SIZE_UNITS[unit]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 itself; keep the message format and our exit code for bad flags.
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="buildgen", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"buildgen {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")
    common.add_argument("-q", "--quiet", action="count", default=0, help="only warnings and errors")
    common.add_argument(
        "--catalog", type=Path, default=Path(DEFAULT_CATALOG), metavar="PATH",
        help=f"the catalog file (default: ./{DEFAULT_CATALOG})",
    )  # fmt: skip
    selecting = _Parser(add_help=False)
    selecting.add_argument(
        "--registry", metavar="PREFIX",
        help="image name prefix, overriding the catalog's 'registry' (e.g. 127.0.0.1:5000/evals)",
    )  # fmt: skip
    selecting.add_argument(
        "--select", action="append", default=[], metavar="GLOB",
        help="only images whose key matches (repeatable), e.g. 'agents/*' or "
        "'benchmarks/swe-bench:django__*'",
    )  # fmt: skip

    registry = _Parser(add_help=False)
    registry.add_argument(
        "--insecure-registry", action="append", default=[], metavar="HOST",
        help="allow plain http to HOST[:PORT] (loopback always is)",
    )  # fmt: skip
    registry.add_argument(
        "--ca-bundle", metavar="PEM", help="verify registry TLS with these CA certificates"
    )

    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)

    validate = verbs.add_parser(
        "validate", parents=[common], formatter_class=_Formatter,
        help="check the catalog and the files it names",
        description="Check the catalog and every file it names. Exit 0 when valid; exit 2 "
        "when not, with every error as FILE:LINE:COL: message on stderr.",
    )  # fmt: skip
    validate.set_defaults(handler=_validate)

    plan = verbs.add_parser(
        "plan", parents=[common, selecting, registry], formatter_class=_Formatter,
        help="show the images the catalog expands to",
        description="Expand the catalog into one record per image (key, bake target, tags, "
        "platforms, context, Dockerfile, args, dependencies), in a deterministic order.",
    )  # fmt: skip
    plan.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    plan.add_argument(
        "--status", action="store_true",
        help="ask the registry which images changed: an image whose inputs-<hash> tag is "
        "published is unchanged (one HEAD each)",
    )  # fmt: skip
    plan.set_defaults(handler=_plan)

    bake = verbs.add_parser(
        "bake", parents=[common, selecting, registry], formatter_class=_Formatter,
        usage="buildgen bake [options] [-- extra docker buildx bake args]",
        help="render the bake files and run docker buildx bake",
        description="Render the plan as docker-bake HCL files of at most --shard-size targets "
        "each, then run `docker buildx bake -f FILE` once per file (from the catalog's "
        "directory). Arguments after '--' go to every buildx call unchanged "
        "(e.g. -- --print, -- --set '*.labels.x=y', -- --progress plain).",
    )  # fmt: skip
    bake.add_argument(
        "--platform", metavar="P", help="build only this platform (os/arch[/variant])"
    )
    bake.add_argument(
        "--push", action="store_true",
        help="push to the registry: by digest where the builder can (docker-container), else "
        "under staging tags build-<inputs>-<platforms>; never release tags (publish writes "
        "those). What was pushed is recorded in DIR/results.<platform|all>.json",
    )  # fmt: skip
    bake.add_argument(
        "--push-by-digest", action="store_true",
        help="push by digest whatever the builder (the docker driver refuses it)",
    )  # fmt: skip
    bake.add_argument(
        "--dry-run", action="store_true",
        help="write the files and print the buildx commands; needs no Docker",
    )  # fmt: skip
    bake.add_argument(
        "--out", type=Path, metavar="DIR",
        help="where to write the bake files (default: build/bake next to the catalog)",
    )  # fmt: skip
    bake.add_argument(
        "--jobs", "--shard-size", dest="shard_size", type=int, default=DEFAULT_SHARD_SIZE,
        metavar="K",
        help=f"at most K targets per bake file, i.e. per buildx run (default: "
        f"{DEFAULT_SHARD_SIZE}); buildx resolves several small files much faster than one large "
        "one, and a failure cancels only its own run",
    )  # fmt: skip
    bake.add_argument(
        "--shard", metavar="I/N",
        help="build part I of N of the (platform's) images: one entry of `buildgen matrix`",
    )  # fmt: skip
    bake.add_argument(
        "--keep-going", action="store_true",
        help="with --push: go on past failed targets (their cancelled siblings are rebuilt), "
        "record every success, and list the failures at the end",
    )  # fmt: skip
    bake.add_argument(
        "--build-retries", type=int, default=1, metavar="N",
        help="with --push: build targets that did not land up to N more times before they "
        "count as failed (default: 1; registries fail transiently under load)",
    )  # fmt: skip
    bake.add_argument(
        "--retry-failed", action="store_true",
        help="build only the images that failed in the last --push run in this build folder",
    )  # fmt: skip
    bake.add_argument(
        "--rebuild", action="store_true",
        help="with --push: build images even when their inputs-<hash> tag is already published",
    )  # fmt: skip
    bake.set_defaults(handler=_bake)

    publish_ = verbs.add_parser(
        "publish", parents=[common, selecting, registry], formatter_class=_Formatter,
        help="merge per-platform pushes into multi-arch indexes and tag them",
        description="For every image, build one OCI index from the per-platform manifests "
        "recorded by `buildgen bake --push` (with their attestations), annotate it, push it "
        "once and tag it: the immutable X.Y.Z; X.Y, X and latest only when it is the newest "
        "stable version of that line in the repository; a prerelease only its own tag; a "
        "per-task image its task id; and inputs-<hash>. Talks to the registry directly.",
    )  # fmt: skip
    publish_.add_argument(
        "--from", dest="results", nargs="+", type=Path, required=True, metavar="RESULTS",
        help="results files of bake --push runs (e.g. build/bake/results.*.json)",
    )  # fmt: skip
    publish_.add_argument(
        "--dry-run", action="store_true", help="print what would be pushed and tagged"
    )
    publish_.add_argument(
        "--jobs",
        type=_positive_int,
        default=16,
        metavar="N",
        help="images published at once (default 16)",
    )
    publish_.add_argument(
        "--lock", type=Path, metavar="PATH",
        help="the lockfile to update (default: images.lock.json next to the catalog)",
    )  # fmt: skip
    publish_.set_defaults(handler=_publish)

    lock = verbs.add_parser(
        "lock", parents=[common, selecting, registry], formatter_class=_Formatter,
        help="write, check or diff the digest lockfile images.lock.json",
        description="Resolve every image's tag in the registry and pin its digest in the "
        "lockfile (HEAD first; the index is read only when its digest changed; entries not "
        "selected stay byte-identical). --check compares the lockfile with the catalog offline "
        "(exit 1 listing missing, extra and stale entries); --remote also checks the pinned "
        "digests exist and reports tags that moved (drift). --diff OLD prints a Markdown table "
        "of what changed since OLD (a lockfile path or a git revision).",
    )  # fmt: skip
    lock.add_argument("--lock", type=Path, metavar="PATH", help="default: next to the catalog")
    mode = lock.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="offline check; exit 1 when stale")
    mode.add_argument("--diff", metavar="OLD", help="Markdown diff against a path or git revision")
    lock.add_argument("--remote", action="store_true", help="with --check: ask the registry too")
    lock.add_argument(
        "--jobs", type=_positive_int, default=DEFAULT_LOCK_JOBS, metavar="N",
        help=f"registry requests in flight at once (default {DEFAULT_LOCK_JOBS}): one HEAD per "
        "image is mostly waiting, so more than publish's",
    )  # fmt: skip
    lock.set_defaults(handler=_lock)

    resolve = verbs.add_parser(
        "resolve", parents=[common], formatter_class=_Formatter,
        help="print the digest-pinned references crane mode needs",
        description="Look up the benchmark (or one of its tasks), agent, gateway and the crane "
        "runner in the lockfile and print their digest-pinned references for one platform "
        "(--format env: EVAL_BENCHMARK_IMAGE=<repo>@sha256:... lines; json). Reads only the "
        "lockfile. Unknown names or a platform an image lacks exit 2, naming what there is.",
    )  # fmt: skip
    resolve.add_argument("--lock", type=Path, metavar="PATH", help="default: next to the catalog")
    resolve.add_argument("--benchmark", required=True, metavar="B")
    resolve.add_argument("--task", metavar="T", help="a task of a per-task benchmark")
    resolve.add_argument("--agent", required=True, metavar="A")
    resolve.add_argument("--gateway", metavar="G")
    resolve.add_argument("--platform", required=True, metavar="P", help="e.g. linux/amd64")
    resolve.add_argument("--format", choices=("env", "json"), default="env")
    resolve.set_defaults(handler=_resolve)

    materialize = verbs.add_parser(
        "materialize", parents=[common, registry], formatter_class=_Formatter,
        help="crane mode: fuse benchmark, agent and gateway images into one rootfs, by digest",
        description="Pull the benchmark (or one task of it), agent and gateway images by digest "
        "(from the lockfile, or with --from-env from EVAL_* variables as `buildgen resolve` "
        "prints them), verify every digest and size, and fuse them into --rootfs: the "
        "benchmark's layers (OCI whiteouts applied), then each directory the agent and gateway "
        "provide, with the fusion rule's mode and owner (the same rule as the combination "
        "images). Blobs are cached by digest in --cache (a second run downloads nothing); "
        "--mirror registries are tried first. Prints (or writes to --record) every digest used.",
    )  # fmt: skip
    materialize.add_argument(
        "--lock", type=Path, metavar="PATH", help="default: next to the catalog"
    )
    materialize.add_argument("--benchmark", metavar="B")
    materialize.add_argument("--task", metavar="T")
    materialize.add_argument("--agent", metavar="A")
    materialize.add_argument("--gateway", metavar="G")
    materialize.add_argument("--platform", metavar="P", help="e.g. linux/amd64")
    materialize.add_argument("--rootfs", type=Path, required=True, metavar="DIR",
                             help="a new or empty directory for the fused rootfs")  # fmt: skip
    materialize.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="cache of blobs and unpacked images (default: $XDG_CACHE_HOME/buildgen or "
        "~/.cache/buildgen)",
    )
    materialize.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY",
        help="pull from this registry first (host[:port]; repeatable)",
    )
    materialize.add_argument(
        "--record",
        type=Path,
        metavar="PATH",
        help="write the record of digests used here (default: stdout)",
    )
    materialize.add_argument(
        "--unpacked-limit",
        type=_byte_size,
        default=DEFAULT_UNPACKED_LIMIT,
        metavar="SIZE",
        help="keep unpacked benchmark images in the cache, up to SIZE bytes of files (e.g. "
        "20G, the default; 0 keeps none): a run with an image kept copies it instead of "
        "extracting its layers again",
    )
    materialize.add_argument(
        "--overlay",
        action="store_true",
        help="make the rootfs an overlay mount of the unpacked image in the cache instead of a "
        "copy (instant; needs CAP_SYS_ADMIN, else it copies); writes land in .DIR.overlay "
        "beside it; remove it with --unmount",
    )
    materialize.add_argument(
        "--unmount",
        action="store_true",
        help="unmount the overlay rootfs --rootfs DIR and remove its writable layer, then exit",
    )
    materialize.add_argument(
        "--from-env",
        action="store_true",
        help="take the references from EVAL_* variables, not the lockfile",
    )
    materialize.set_defaults(handler=_materialize)

    matrix = verbs.add_parser(
        "matrix", parents=[common, selecting], formatter_class=_Formatter,
        help="a CI job matrix: one entry per (platform, shard)",
        description="Print a GitHub Actions `strategy.matrix` (JSON, {\"include\": [...]}) with "
        "one entry per platform and shard, each at most --targets-per-job images, the whole "
        "within --max-jobs, so each platform builds on its own native runner. Build an entry "
        "with `buildgen bake --push --platform P --shard I/N`; publish all entries' results "
        "with `buildgen publish --from`.",
    )  # fmt: skip
    matrix.add_argument(
        "--platform", action="append", default=[], metavar="P",
        help="only these platforms (repeatable; default: every platform in the plan)",
    )  # fmt: skip
    matrix.add_argument("--max-jobs", type=int, default=256, metavar="N",
                        help="at most N entries (GitHub's limit is 256)")  # fmt: skip
    matrix.add_argument(
        "--targets-per-job", type=int, default=500, metavar="K",
        help="at most K images per entry (raised when needed to fit --max-jobs)",
    )  # fmt: skip
    matrix.set_defaults(handler=_matrix)

    schema = verbs.add_parser(
        "schema", formatter_class=_Formatter, parents=[common],
        help="print the catalog's JSON Schema",
        description="Print the JSON Schema of catalog.yaml (for editors: see README).",
    )  # fmt: skip
    schema.set_defaults(handler=_schema)
    return parser


def _setup_logging(level: int) -> None:
    logging.basicConfig(
        format="%(message)s",
        stream=sys.stderr,
        level={-1: logging.WARNING, 0: logging.INFO}.get(max(-1, min(level, 1)), logging.DEBUG),
        force=True,
    )
    # httpx logs every request at INFO: that is our debug level, not the user's.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level > 1 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Catalog:
    from buildgen.model.catalog import load_catalog

    return load_catalog(args.catalog)


def _make_plan(args: argparse.Namespace) -> Plan:
    from buildgen.model.plan import make_plan

    return make_plan(_load(args), registry=args.registry, select=args.select)


def _validate(args: argparse.Namespace, _: list[str]) -> int:
    catalog = _load(args)
    counts = {
        "core": len(catalog.model.core),
        "benchmarks": len(catalog.model.benchmarks),
        "agents": len(catalog.model.agents),
        "gateways": len(catalog.model.gateways),
        "combination rules": len(catalog.model.combinations),
    }
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    log.info("%s: valid (%s)", args.catalog, summary)
    return 0


def _plan(args: argparse.Namespace, _: list[str]) -> int:
    plan = _make_plan(args)
    status: dict[str, str] = {}
    if args.status:
        from buildgen.build.incremental import published
        from buildgen.registry import RegistryClient

        with RegistryClient(_registry_options(args)) as client:
            done = published(plan.images, client)
        status = {i.key: "unchanged" if i.key in done else "changed" for i in plan.images}
        changed = sum(1 for s in status.values() if s == "changed")
        log.info("%d of %d image(s) changed since they were published", changed, len(status))
    if args.json:
        sys.stdout.write(plan.to_json(status))
        return 0
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
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")
    log.info(
        "%d image(s) under %s; bake targets and full tags: --json", len(plan.images), plan.registry
    )
    return 0


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return int(index), int(count)


def _bake(args: argparse.Namespace, passthrough: list[str]) -> int:
    from dataclasses import replace

    from buildgen.build.bake import (
        BakeOptions,
        bake,
        detect_push_mode,
        failed_keys,
        prepare,
        restrict,
        unhashed_settings,
    )
    from buildgen.build.render import PushMode

    if args.platform is not None:
        problem = platform_problem(args.platform)
        if problem:
            raise UsageError(f"--platform: {problem}")
    unhashed = unhashed_settings(passthrough)
    if unhashed:
        log.warning(
            "%s after `--` change what is built, but not the images' inputs hash: with --push, "
            "images already published with the same inputs are skipped (add --rebuild), and "
            "what is built is tagged and locked as if built without them. Settings that belong "
            "to an image go in the catalog.",
            ", ".join(unhashed),
        )
    plan = _make_plan(args)
    out = args.out if args.out is not None else plan.catalog.root / "build" / "bake"
    if args.retry_failed:
        keys = set(failed_keys(out, args.platform))
        if not keys:
            log.info("nothing failed last time: nothing to retry")
            return 0
        plan = replace(plan, images=tuple(i for i in plan.images if i.key in keys))
        log.info("retrying %d image(s) that failed last time", len(plan.images))
    push = PushMode.NONE
    if args.push or args.push_by_digest:
        if args.push_by_digest:
            push = PushMode.DIGEST
        else:
            push = PushMode.STAGING if args.dry_run else detect_push_mode()
    options = BakeOptions(
        out=out,
        push=push,
        platform=args.platform,
        shard_size=args.shard_size,
        extra_args=tuple(passthrough),
        shard=_parse_shard(args.shard),
        keep_going=args.keep_going,
        build_retries=max(0, args.build_retries),
    )
    client = None
    if push is not PushMode.NONE and not args.dry_run:
        from buildgen.registry import RegistryClient

        client = RegistryClient(_registry_options(args))
    try:
        part = restrict(plan, options)  # this run's platform and shard
        if client is not None and not args.rebuild:
            from buildgen.build.incremental import published

            needed = {k: plan.all_images[k] for i in part.images for k in (i.key, *i.depends_on)}
            options = replace(options, prebuilt=published(needed.values(), client))
        bake_run = prepare(plan, options, part=part)
        pushing = {PushMode.DIGEST: "; pushing by digest", PushMode.STAGING: "; pushing under "
                   "staging tags", PushMode.NONE: ""}[push]  # fmt: skip
        log.info("%d image(s) to build in %d bake file(s) under %s, %d unchanged%s",
                 len(bake_run.plan.images) - len(bake_run.unchanged), len(bake_run.files), out,
                 len(bake_run.unchanged), pushing)  # fmt: skip
        if args.dry_run:
            sys.stdout.write(f"cd {shlex.quote(str(bake_run.cwd))}\n")
            for command in bake_run.commands:
                sys.stdout.write(shlex.join(command) + "\n")
            return 0
        if not bake_run.files and not bake_run.unchanged:
            log.warning("nothing to build")
            return 0
        bake(bake_run, client)
    finally:
        if client is not None:
            client.close()
    return 0


def _registry_options(args: argparse.Namespace, connections: int | None = None) -> RegistryOptions:
    from buildgen.registry import RegistryOptions

    options = RegistryOptions(insecure=tuple(args.insecure_registry), ca_bundle=args.ca_bundle)
    if connections is not None:
        options = dataclasses.replace(options, max_connections=connections)
    return options


def _publish(args: argparse.Namespace, _: list[str]) -> int:
    from buildgen.build.results import load_results
    from buildgen.registry import RegistryClient
    from buildgen.release.publish import (
        Progress,
        PublishOptions,
        SourceInfo,
        Summary,
        exit_code,
        publish,
    )

    plan = _make_plan(args)
    results = load_results(args.results)
    source = SourceInfo.from_git(plan.catalog.root)
    options = PublishOptions(jobs=args.jobs, dry_run=args.dry_run)
    log.info("publishing %d image(s) to %s from %d results file(s)", len(plan.images),
             plan.registry, len(results))  # fmt: skip
    with RegistryClient(_registry_options(args, args.jobs)) as client:
        outcomes = publish(plan, results, client, options, source, Progress())
    if args.dry_run:
        for outcome in outcomes:
            if outcome.status in ("would-publish", "would-tag"):
                verb = "push index" if outcome.status == "would-publish" else "retag"
                sys.stdout.write(
                    f"{verb} {outcome.repository}@{outcome.digest} tags: {' '.join(outcome.tags)}\n"
                )
    log.info("publish: %s", Summary.of(outcomes))
    for outcome in outcomes:
        if outcome.status == "failed":
            log.error("publish: failed: %s: %s", outcome.key, outcome.message)
    if not args.dry_run:
        _lock_published(args, plan, outcomes, client_options=_registry_options(args))
    return exit_code(outcomes)


def _lock_published(args: argparse.Namespace, plan: Plan, outcomes: list[Outcome],
                    client_options: RegistryOptions) -> None:  # fmt: skip
    """Pin what publish pushed (or found unchanged) in the lockfile."""
    from dataclasses import replace

    from buildgen.model import lockfile
    from buildgen.registry import RegistryClient
    from buildgen.release import lock

    done = {o.key: o.digest for o in outcomes if o.status in ("published", "unchanged")}
    if not done:
        return
    path = lockfile.lock_path(plan.catalog.path, args.lock)
    current = (
        lockfile.read(path) if path.exists() else lockfile.empty(plan.catalog.digest, plan.registry)
    )
    subset = replace(plan, images=tuple(i for i in plan.images if i.key in done))
    with RegistryClient(client_options) as client:
        indexes = {o.key: o.index for o in outcomes if o.index is not None}
        changed = lock.update(current, subset, client, known=done, indexes=indexes)
    if lockfile.write(path, current):
        log.info("%s: %d entr%s updated", path, len(changed), "y" if len(changed) == 1 else "ies")


def _lock(args: argparse.Namespace, _: list[str]) -> int:
    from buildgen.model import lockfile
    from buildgen.release import lock

    plan = _make_plan(args)
    path = lockfile.lock_path(plan.catalog.path, args.lock)
    if args.remote and not args.check:
        raise UsageError("--remote goes with --check")
    if args.diff is not None:
        new = lockfile.read(path) if path.exists() else {"images": {}}
        sys.stdout.write(lock.diff_markdown(lock.load_old(args.diff, path), new))
        return 0
    if args.check:
        current = lockfile.read(path)
        findings = lock.check(current, plan)
        if args.remote:
            from buildgen.registry import RegistryClient

            with RegistryClient(_registry_options(args, args.jobs)) as client:
                findings += lock.check_remote(current, plan, client, workers=args.jobs)
        for finding in findings:
            sys.stdout.write(f"{finding}\n")
        if findings:
            log.error("%s: %d problem(s); run `buildgen lock` (or publish) to update it",
                      path, len(findings))  # fmt: skip
            return 1
        log.info("%s: up to date (%d images)", path, len(current["images"]))
        return 0
    from buildgen.registry import RegistryClient

    existed = path.exists()
    current = lockfile.read(path) if existed else lockfile.empty(plan.catalog.digest, plan.registry)
    header = lockfile.header(current)
    with RegistryClient(_registry_options(args, args.jobs)) as client:
        changed = lock.update(current, plan, client, workers=args.jobs)
    # A run that changes nothing leaves the file alone (not even rendered again).
    written = bool(changed or not existed or lockfile.header(current) != header)
    written = written and lockfile.write(path, current)
    note = "" if written else " (file unchanged)"
    log.info("%s: %d of %d selected image(s) changed%s", path, len(changed), len(plan.images), note)
    return 0


def _resolve(args: argparse.Namespace, _: list[str]) -> int:
    from buildgen.crane.resolve import resolve as resolve_pinned
    from buildgen.crane.resolve import to_env
    from buildgen.model import lockfile, naming
    from buildgen.model.naming import Axis

    problem = platform_problem(args.platform)
    if problem:
        raise UsageError(f"--platform: {problem}")
    roles = [
        ("benchmark", naming.image_key(Axis.BENCHMARK, args.benchmark, args.task)),
        ("agent", naming.image_key(Axis.AGENT, args.agent)),
    ]
    if args.gateway:
        roles.append(("gateway", naming.image_key(Axis.GATEWAY, args.gateway)))
    roles.append(("runner", naming.image_key(Axis.CORE, "crane-runner")))
    current = lockfile.read(lockfile.lock_path(args.catalog, args.lock))
    pinned = resolve_pinned(current, roles, args.platform)
    if args.format == "json":
        images = {p.role: p.to_json() for p in pinned}
        sys.stdout.write(json.dumps({"platform": args.platform, "images": images}, indent=2) + "\n")
        return 0
    sys.stdout.write("\n".join(to_env(pinned, args.platform)) + "\n")
    return 0


def _materialize(args: argparse.Namespace, _: list[str]) -> int:
    import os

    from buildgen.crane.blobcache import BlobCache
    from buildgen.crane.materialize import materialize
    from buildgen.crane.resolve import from_env
    from buildgen.crane.resolve import resolve as resolve_pinned
    from buildgen.crane.unpacked import UnpackedCache
    from buildgen.model import lockfile, naming
    from buildgen.model.naming import Axis
    from buildgen.registry import RegistryClient

    if args.unmount:
        from buildgen.crane.overlay import unmount

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
        problem = platform_problem(args.platform)
        if problem:
            raise UsageError(f"--platform: {problem}")
        platform = args.platform
        roles = [("benchmark", naming.image_key(Axis.BENCHMARK, args.benchmark, args.task)),
                 ("agent", naming.image_key(Axis.AGENT, args.agent))]  # fmt: skip
        if args.gateway:
            roles.append(("gateway", naming.image_key(Axis.GATEWAY, args.gateway)))
        pinned = resolve_pinned(
            lockfile.read(lockfile.lock_path(args.catalog, args.lock)), roles, platform
        )
    for part in pinned[1:]:
        if not part.provides:
            raise UsageError(f"{part.key}: the lockfile says nothing it provides; "
                             "re-run `buildgen lock` with this buildgen")  # fmt: skip
    cache_root = args.cache or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buildgen"  # fmt: skip
    with RegistryClient(_registry_options(args)) as client:
        unpacked = (
            UnpackedCache(cache_root / "unpacked", limit=args.unpacked_limit)
            if args.unpacked_limit > 0
            else None
        )
        record = materialize(client, pinned[0], pinned[1:], rootfs=args.rootfs,
                             cache=BlobCache(cache_root), mirrors=args.mirror,
                             unpacked=unpacked, overlay=args.overlay)  # fmt: skip
    record["platform"] = platform
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if args.record:
        from buildgen.fsutil import write_atomic

        write_atomic(args.record, text)
    else:
        sys.stdout.write(text)
    log.info("materialized %s into %s", " + ".join(p.key for p in pinned), args.rootfs)
    return 0


def _matrix(args: argparse.Namespace, _: list[str]) -> int:
    from buildgen.build.matrix import matrix

    for platform in args.platform:
        problem = platform_problem(platform)
        if problem:
            raise UsageError(f"--platform: {problem}")
    plan = _make_plan(args)
    result = matrix(plan, args.platform, max_jobs=args.max_jobs,
                    targets_per_job=args.targets_per_job)  # fmt: skip
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
    log.info("%d job(s) for %d image(s)", len(result["include"]), len(plan.images))
    return 0


def _schema(args: argparse.Namespace, _: list[str]) -> int:
    from buildgen.model.catalog import catalog_schema

    sys.stdout.write(json.dumps(catalog_schema(), indent=2) + "\n")
    return 0
