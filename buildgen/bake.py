"""`buildgen bake`: write the bake files of a plan, hand them to `docker buildx bake`, and
(with --push) record what each target pushed."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExternalToolError, UsageError
from .plan import Plan
from .render import DEFAULT_SHARD_SIZE, BakeFile, PushMode, render_bake_file, shard

if TYPE_CHECKING:
    from .registry import RegistryClient
    from .results import Results

log = logging.getLogger(__name__)

BAKE_FILE_PATTERN = "docker-bake.*.hcl"
PLAN_FILE = "plan.json"
# Builders whose image exporter can push by digest; the docker driver cannot.
PUSH_BY_DIGEST_DRIVERS = ("docker-container", "kubernetes", "remote")


@dataclass(frozen=True)
class BakeOptions:
    """What `buildgen bake` was asked to do."""

    out: Path
    push: PushMode = PushMode.NONE
    platform: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    extra_args: tuple[str, ...] = ()
    docker: str = "docker"


@dataclass(frozen=True)
class BakeRun:
    """The files written, the shards they hold, and the buildx command that builds each."""

    plan: Plan
    options: BakeOptions
    files: tuple[Path, ...]
    shards: tuple[BakeFile, ...]
    commands: tuple[tuple[str, ...], ...]
    cwd: Path


def prepare(plan: Plan, options: BakeOptions) -> BakeRun:
    """Render the plan's bake files into `options.out` (replacing the previous set whole)."""
    if options.shard_size < 1:
        raise UsageError("--shard-size must be at least 1")
    if options.platform is not None:
        plan = plan.for_platform(options.platform)
    try:
        shards = shard(plan.images, plan.all_images, options.shard_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    source = os.path.relpath(plan.catalog.path, plan.catalog.root)
    texts = [
        render_bake_file(b, push=options.push, index=i + 1, total=len(shards), source=source)
        for i, b in enumerate(shards)
    ]
    out = options.out.resolve()
    files = _write_all(out, texts, plan.to_json())
    commands = tuple(_command(options, path) for path in files)
    return BakeRun(plan, options, files, tuple(shards), commands, plan.catalog.root.resolve())


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
        for old in [*out.glob(BAKE_FILE_PATTERN), *out.glob("metadata.*.json")]:
            if old.name not in names:
                old.unlink()
        for name in [*names, PLAN_FILE]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tuple(out / name for name in names)


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
    """How one bake file's buildx run ended."""

    index: int
    path: Path
    returncode: int
    metadata: dict[str, Any]


def run(bake: BakeRun) -> list[FileOutcome]:
    """Run each buildx command in turn; stop after the first failure (its outcome included)."""
    if shutil.which(bake.options.docker) is None:
        raise ExternalToolError("docker is not installed or not on PATH (try --dry-run)")
    total = len(bake.commands)
    outcomes = []
    for index, (path, command) in enumerate(zip(bake.files, bake.commands, strict=True)):
        log.info("[%d/%d] %s", index + 1, total, shlex.join(command))
        sys.stderr.flush()
        result = subprocess.run(command, cwd=bake.cwd, check=False)
        outcomes.append(FileOutcome(index, path, result.returncode, _read_metadata(path)))
        if result.returncode != 0:
            break
    return outcomes


def _read_metadata(bake_file: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(metadata_path(bake_file).read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {}  # buildx writes none when any target fails


def bake(bake_run: BakeRun, client: RegistryClient | None = None) -> Results | None:
    """Build every file; with a push, record what each target pushed (also when some failed).

    Raises ExternalToolError (exit 3) when a buildx run failed, after the results are written.
    """
    from .results import Results, collect, results_path  # talks to registries: httpx

    outcomes = run(bake_run)
    options = bake_run.options
    results = None
    if options.push is not PushMode.NONE:
        if client is None:
            raise ValueError("a registry client is needed to record what was pushed")
        plan = bake_run.plan
        path = results_path(options.out.resolve(), options.platform)
        results = Results(plan.registry, plan.catalog.digest, options.platform or "all")
        ran = {outcome.index for outcome in outcomes}
        for outcome in outcomes:
            collect(client, bake_run.shards[outcome.index].targets, options.push,
                    outcome.metadata, results)  # fmt: skip
            results.write(path)
        for index, bake_file in enumerate(bake_run.shards):
            if index not in ran:
                for image in bake_file.targets:
                    results.failed[image.key] = "not built: an earlier bake file failed"
        results.write(path)
        log.info(
            "recorded %d pushed image(s), %d failed, in %s",
            len(results.images), len(results.failed), path,
        )  # fmt: skip
    failed = [outcome for outcome in outcomes if outcome.returncode != 0]
    if failed:
        raise ExternalToolError(
            f"docker buildx bake failed (exit {failed[0].returncode}) on {failed[0].path}",
            command=bake_run.commands[failed[0].index],
            returncode=failed[0].returncode,
        )
    return results
