"""`buildgen bake`: write the bake files of a plan, hand them to `docker buildx bake`, and
(with --push) record what each target pushed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from buildgen.build.incremental import published
from buildgen.build.render import (
    DEFAULT_SHARD_SIZE,
    BakeFile,
    PushMode,
    render_bake_file,
    select_shard,
    shard,
)
from buildgen.build.results import (
    ImageResult,
    Results,
    collect,
    load_existing,
    load_results,
    results_path,
)
from buildgen.build.retry import Action, FailedRun, builder_error, daemon_gone, decide
from buildgen.errors import ExternalToolError, UsageError
from buildgen.model.plan import Plan, PlannedImage
from buildgen.registry import RegistryClient, RegistryOptions
from buildgen.registry.reference import parse_reference

log = logging.getLogger(__name__)
# buildx's own output, passed through line by line (the CLI shows it at every verbosity).
buildx_output = log.getChild("buildx")

BAKE_FILE_PATTERN = "docker-bake.*.hcl"
PLAN_FILE = "plan.json"
# Builders whose image exporter can push by digest; the docker driver cannot.
PUSH_BY_DIGEST_DRIVERS = ("docker-container", "kubernetes", "remote")


@dataclass(frozen=True)
class BakeOptions:
    """How to render and run a plan's bake files: the push mode and the images published
    already are decided (`bake_plan` decides them for `buildgen bake`)."""

    out: Path
    push: PushMode = PushMode.NONE
    platform: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    extra_args: tuple[str, ...] = ()
    docker: str = "docker"
    shard: tuple[int, int] | None = None  # (index, count): one entry of a CI matrix
    keep_going: bool = False
    build_retries: int = 1  # reruns of targets that did not land, before they count as failed
    prebuilt: Mapping[str, str] = field(default_factory=dict)  # unchanged: key -> repo@digest


@dataclass(frozen=True)
class BakeRun:
    """The files written, the shards they hold, and the buildx command that builds each."""

    plan: Plan
    options: BakeOptions
    files: tuple[Path, ...]
    shards: tuple[BakeFile, ...]
    commands: tuple[tuple[str, ...], ...]
    cwd: Path
    unchanged: tuple[PlannedImage, ...] = ()


def restrict(plan: Plan, options: BakeOptions) -> Plan:
    """The part of the plan this run is for: its platform, then its shard of the matrix."""
    if options.platform is not None:
        plan = plan.for_platform(options.platform)
    if options.shard is not None:
        try:
            images = select_shard(plan.images, *options.shard)
        except ValueError as exc:
            raise UsageError(f"--shard: {exc}") from None
        plan = replace(plan, images=tuple(images))
    return plan


def prepare(plan: Plan, options: BakeOptions, *, part: Plan | None = None) -> BakeRun:
    """Render the plan's bake files into `options.out` (replacing the previous set whole).

    Images in `options.prebuilt` are not built: targets that build on them take them from the
    registry by digest. `part` is `restrict(plan, options)` when the caller has it already.
    """
    if options.shard_size < 1:
        raise UsageError("--jobs must be at least 1")
    plan = part if part is not None else restrict(plan, options)
    unchanged = tuple(i for i in plan.images if i.key in options.prebuilt)
    to_build = [i for i in plan.images if i.key not in options.prebuilt]
    try:
        shards = shard(to_build, plan.all_images, options.shard_size, options.prebuilt)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    texts = [_render(plan, options, b, i + 1, len(shards)) for i, b in enumerate(shards)]
    out = options.out.resolve()
    files = _write_all(out, texts, plan.to_json())
    commands = tuple(_command(options, path) for path in files)
    return BakeRun(
        plan, options, files, tuple(shards), commands, plan.catalog.root.resolve(), unchanged
    )


def _render(plan: Plan, options: BakeOptions, bake_file: BakeFile, index: int, total: int) -> str:
    source = os.path.relpath(plan.catalog.path, plan.catalog.root)
    return render_bake_file(
        bake_file,
        push=options.push,
        index=index,
        total=total,
        source=source,
        prebuilt=options.prebuilt,
    )


def _write_all(out: Path, texts: Sequence[str], plan_json: str) -> tuple[Path, ...]:
    """Write the new file set next to the old, then swap, so no run sees half of each."""
    out.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(texts))))
    names = [f"docker-bake.{i:0{width}d}.hcl" for i in range(1, len(texts) + 1)]
    staging = Path(tempfile.mkdtemp(prefix=".bake-", dir=out))
    try:
        for name, text in zip(names, texts, strict=True):
            (staging / name).write_text(text, encoding="utf-8")
        (staging / PLAN_FILE).write_text(plan_json, encoding="utf-8")
        for old in [
            *out.glob(BAKE_FILE_PATTERN),
            *out.glob("metadata.*.json"),
            *out.glob("retry.*.hcl"),
        ]:
            if old.name not in names:
                old.unlink()
        for name in [*names, PLAN_FILE]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tuple(out / name for name in names)


# `--set` keys that change what a target builds (cache, output, pull and the like do not).
_BUILD_KEYS = frozenset({"annotations", "args", "attest", "context", "contexts", "dockerfile",
                         "dockerfile-inline", "labels", "network", "platform", "secrets", "ssh",
                         "target"})  # fmt: skip


def unhashed_settings(extra_args: Sequence[str]) -> list[str]:
    """The arguments after `--` that change what is built, which the inputs hash does not see:
    `--set` of a build key (`*.args.X=1`) and extra bake files (`-f`, `--file`)."""
    found = []
    args = iter(extra_args)
    for arg in args:
        name, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in ("--set", "-f", "--file"):
            continue
        if not equals:
            value = next(args, "")
        if name == "--set":
            target_key = value.partition("=")[0].split(".")
            if len(target_key) < 2 or target_key[1] not in _BUILD_KEYS:
                continue
        found.append(f"{name} {value}")
    return found


def metadata_path(bake_file: Path) -> Path:
    """Where buildx writes its metadata for one bake file."""
    return bake_file.with_name(bake_file.name.replace("docker-bake.", "metadata.")[:-4] + ".json")


def _command(options: BakeOptions, path: Path) -> tuple[str, ...]:
    # Outputs (push or not) are in the file itself: `--push` would also set them on the
    # borrowed targets, which must stay cache-only.
    command = [options.docker, "buildx", "bake", "-f", str(path)]
    if options.push is not PushMode.NONE:
        command += ["--metadata-file", str(metadata_path(path))]
    return (*command, *options.extra_args)


def detect_push_mode(docker: str = "docker") -> PushMode:
    """Push by digest when the current builder can, else under staging tags."""
    try:
        result = subprocess.run(
            [docker, "buildx", "inspect"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalToolError(f"cannot run docker buildx inspect: {exc}") from None
    if result.returncode != 0:
        raise ExternalToolError(
            "docker buildx inspect failed; is buildx installed and a builder selected?",
            command=["docker", "buildx", "inspect"],
            returncode=result.returncode,
            stderr=result.stderr,
        )
    for line in result.stdout.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Driver":
            driver = value.strip()
            log.debug("buildx driver: %s", driver)
            return PushMode.DIGEST if driver in PUSH_BY_DIGEST_DRIVERS else PushMode.STAGING
    return PushMode.STAGING


@dataclass(frozen=True)
class FileOutcome:
    """How one buildx run ended, with the last lines it printed."""

    path: Path
    command: tuple[str, ...]
    returncode: int
    metadata: dict[str, Any]
    tail: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """A target that did not build, for the summary."""

    key: str
    platforms: tuple[str, ...]
    reason: str
    tail: tuple[str, ...]


def run_file(path: Path, command: Sequence[str], cwd: Path, tail_lines: int = 25) -> FileOutcome:
    """Run one buildx command, passing its output through line by line (and keeping the end)."""
    log.info("%s", shlex.join(command))
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            buildx_output.info("%s", line.rstrip("\n"))
            tail.append(line.rstrip("\n"))
    return FileOutcome(path, tuple(command), process.returncode, _read_metadata(path), tuple(tail))


def run(bake_run: BakeRun) -> list[FileOutcome]:
    """Run every bake file without recording anything (no push); stop at the first failure."""
    _require_docker(bake_run.options)
    outcomes = []
    for number, (path, command) in enumerate(zip(bake_run.files, bake_run.commands, strict=True)):
        log.info("[%d/%d]", number + 1, len(bake_run.files))
        outcomes.append(run_file(path, command, bake_run.cwd))
        if outcomes[-1].returncode != 0:
            break
    return outcomes


def _require_docker(options: BakeOptions) -> None:
    if shutil.which(options.docker) is None:
        raise ExternalToolError("docker is not installed or not on PATH (try --dry-run)")


def _read_metadata(bake_file: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(metadata_path(bake_file).read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {}  # buildx writes none when any target fails


def bake(bake_run: BakeRun, client: RegistryClient | None = None) -> Results | None:
    """Build every file. With a push, record what each target pushed as it lands (also when
    others fail) and the unchanged images; what did not land is built again as the retry
    policy decides (retry.py): again, without the cache, or (--keep-going) in halves until
    each failure stands alone.

    Raises ExternalToolError (exit 3) when any target failed, after the results are written.
    """
    options = bake_run.options
    if options.push is PushMode.NONE:
        failed = [o for o in run(bake_run) if o.returncode != 0]
        if failed:
            raise ExternalToolError(
                f"docker buildx bake failed on {failed[0].path}",
                command=failed[0].command,
                returncode=failed[0].returncode,
            )
        return None
    if client is None:
        raise ValueError("a registry client is needed to record what was pushed")
    if bake_run.files:
        _require_docker(options)

    plan = bake_run.plan
    path = results_path(options.out.resolve(), options.platform)
    results = load_existing(path, plan.registry, plan.catalog.digest, options.platform or "all")
    for image in bake_run.unchanged:
        digest = parse_reference(options.prebuilt[image.key]).digest
        if digest is None:  # `published` gives repository@digest references only
            raise ValueError(f"{image.key}: prebuilt {options.prebuilt[image.key]} has no digest")
        results.images[image.key] = ImageResult(
            image.key, image.repository, image.inputs, {}, unchanged=digest
        )
        results.failed.pop(image.key, None)
    results.write(path)
    queue = [
        (bake_file, file_path, command, options.build_retries)
        for bake_file, file_path, command in zip(
            bake_run.shards, bake_run.files, bake_run.commands, strict=True
        )
    ]
    failures: list[Failure] = []
    retries = 0
    stopped = gone = False
    rebuilt: set[str] = set()  # targets built again without the cache after a builder error

    def requeue(images: Sequence[PlannedImage], attempts: int, *extra: str) -> None:
        nonlocal retries
        retries += 1
        for piece in shard(images, plan.all_images, len(plan.all_images) + 1, options.prebuilt):
            retry_path = options.out.resolve() / f"retry.{retries:03d}.hcl"
            retry_path.write_text(_render(plan, options, piece, retries, retries), encoding="utf-8")
            command = (*_command(options, retry_path), *extra)
            queue.insert(0, (piece, retry_path, command, attempts))

    while queue:
        bake_file, file_path, command, attempts = queue.pop(0)
        if stopped:
            reason = (
                "the Docker daemon stopped answering" if gone else "an earlier bake file failed"
            )
            for image in bake_file.targets:
                results.failed[image.key] = f"not built: {reason}"
            continue
        outcome = run_file(file_path, command, bake_run.cwd)
        collect(client, bake_file.targets, options.push, outcome.metadata, results)
        results.write(path)
        if outcome.returncode == 0:
            continue
        unbuilt = [image for image in bake_file.targets if image.key in results.failed]
        gone = gone or daemon_gone(outcome.tail)
        failed_run = FailedRun(
            unbuilt=tuple(image.key for image in unbuilt),
            retries=attempts,
            daemon_gone=gone,
            builder_error=builder_error(outcome.tail),
            keep_going=options.keep_going,
            rebuilt=frozenset(rebuilt),
        )
        decision = decide(failed_run)
        stopped = decision.stop
        uncached = _without_cache(unbuilt) if decision.no_cache else ()
        match decision.action:
            case Action.LANDED:
                log.warning(
                    "%s: docker buildx bake exited %d, yet the registry holds every one of its "
                    "%d target(s) with all their platforms; its last lines:\n%s",
                    file_path, outcome.returncode, len(bake_file.targets),
                    "\n".join(f"  | {line}" for line in outcome.tail[-5:]),
                )  # fmt: skip
            case Action.GIVE_UP:  # one run's log for all of them: its last lines each
                failures += [Failure(i.key, i.platforms, results.failed[i.key], outcome.tail[-3:])
                             for i in unbuilt]  # fmt: skip
            case Action.FAIL:
                (image,) = unbuilt
                failures.append(
                    Failure(image.key, image.platforms, results.failed[image.key], outcome.tail)
                )
            case Action.RETRY:
                log.warning("%d target(s) not built; building them again%s", len(unbuilt),
                            ", without the cache" if uncached else "")  # fmt: skip
                requeue(unbuilt, decision.retries, *uncached)
            case Action.REBUILD_UNCACHED:
                rebuilt.add(unbuilt[0].key)
                log.warning("%s: the builder failed (%s); building it once more, without the "
                            "cache", unbuilt[0].key, failed_run.builder_error)  # fmt: skip
                requeue(unbuilt, decision.retries, *uncached)
            case Action.SPLIT:
                half = (len(unbuilt) + 1) // 2
                requeue(unbuilt[half:], decision.retries)
                requeue(unbuilt[:half], decision.retries)
    results.write(path)
    log.info(
        "recorded %d image(s) (%d unchanged), %d failed, in %s",
        len(results.images),
        len(bake_run.unchanged),
        len(results.failed),
        path,
    )
    if failures:
        _report(failures)
        if gone:
            raise ExternalToolError(
                f"{len(failures)} target(s) failed to build: the Docker daemon stopped answering "
                "during the build. Check it (and its log), then `buildgen bake --push "
                "--retry-failed` builds only what is missing. (Docker Engine 26 can crash "
                "pushing to a plain-http registry: see docs/bake.md.)"
            )
        raise ExternalToolError(
            f"{len(failures)} target(s) failed to build; `buildgen bake --push --retry-failed` "
            "rebuilds only those"
        )
    return results


def _without_cache(images: Sequence[PlannedImage]) -> tuple[str, ...]:
    """buildx arguments that build these targets (not the ones they borrow) without the cache."""
    return tuple(arg for image in images for arg in ("--set", f"{image.target}.no-cache=true"))


def _report(failures: Sequence[Failure]) -> None:
    lines = [f"{len(failures)} target(s) failed:"]
    for failure in failures:
        lines.append(f"  {failure.key} [{', '.join(failure.platforms)}]: {failure.reason}")
        lines += [f"    | {line}" for line in failure.tail[-12:]]
    log.error("%s", "\n".join(lines))


def failed_keys(out: Path, platform: str | None) -> list[str]:
    """The images the last push in this build folder failed to build (for --retry-failed)."""
    path = results_path(out.resolve(), platform)
    if not path.exists():
        raise UsageError(f"--retry-failed: no results in {path} (run bake --push first)")
    (results,) = load_results([path])
    return sorted(results.failed)


# -- the whole of `buildgen bake` ------------------------------------------------------------


@dataclass(frozen=True)
class BakeRequest:
    """What `buildgen bake` was asked to do; `bake_plan` decides the push mode and which images
    are published already."""

    out: Path | None = None  # default: build/bake next to the catalog
    platform: str | None = None
    push: bool = False
    push_by_digest: bool = False  # whatever the builder
    dry_run: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE
    shard: tuple[int, int] | None = None
    keep_going: bool = False
    build_retries: int = 1
    retry_failed: bool = False  # only the images the last push into `out` failed to build
    rebuild: bool = False  # build images whose inputs-<hash> tag is published, too
    extra_args: tuple[str, ...] = ()
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def push_mode(request: BakeRequest, detect: Callable[[], PushMode] = detect_push_mode) -> PushMode:
    """How to push: by digest when asked; else as the builder can (`detect`), but a dry run
    asks no builder and shows staging tags."""
    if request.push_by_digest:
        return PushMode.DIGEST
    if not request.push:
        return PushMode.NONE
    return PushMode.STAGING if request.dry_run else detect()


def bake_plan(plan: Plan, request: BakeRequest) -> BakeRun | None:
    """`buildgen bake`: write the plan's bake files and, unless a dry run, build them; with a
    push, images already published with their inputs are not built (unless `rebuild`) and
    what was pushed is recorded.

    Returns the run prepared (a dry run's commands are in it), or None when `retry_failed`
    finds nothing that failed. Raises ExternalToolError when a build failed.
    """
    out = request.out if request.out is not None else plan.catalog.root / "build" / "bake"
    if request.retry_failed:
        keys = set(failed_keys(out, request.platform))
        if not keys:
            log.info("nothing failed last time: nothing to retry")
            return None
        plan = replace(plan, images=tuple(i for i in plan.images if i.key in keys))
        log.info("retrying %d image(s) that failed last time", len(plan.images))
    push = push_mode(request)
    options = BakeOptions(
        out=out,
        push=push,
        platform=request.platform,
        shard_size=request.shard_size,
        extra_args=request.extra_args,
        shard=request.shard,
        keep_going=request.keep_going,
        build_retries=max(0, request.build_retries),
    )
    with contextlib.ExitStack() as stack:
        client = None
        if push is not PushMode.NONE and not request.dry_run:
            client = stack.enter_context(RegistryClient(request.registry))
        part = restrict(plan, options)  # this run's platform and shard
        if client is not None and not request.rebuild:
            needed = {k: plan.all_images[k] for i in part.images for k in (i.key, *i.depends_on)}
            options = replace(options, prebuilt=published(needed.values(), client))
        bake_run = prepare(plan, options, part=part)
        pushing = {PushMode.DIGEST: "; pushing by digest", PushMode.STAGING: "; pushing under "
                   "staging tags", PushMode.NONE: ""}[push]  # fmt: skip
        log.info("%d image(s) to build in %d bake file(s) under %s, %d unchanged%s",
                 len(bake_run.plan.images) - len(bake_run.unchanged), len(bake_run.files), out,
                 len(bake_run.unchanged), pushing)  # fmt: skip
        if request.dry_run:
            return bake_run
        if not bake_run.files and not bake_run.unchanged:
            log.warning("nothing to build")
            return bake_run
        bake(bake_run, client)
    return bake_run
