"""`buildgen bake`: write the bake files of a plan and hand them to `docker buildx bake`."""

from __future__ import annotations

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

from .errors import ExternalToolError, UsageError
from .plan import Plan
from .render import DEFAULT_SHARD_SIZE, render_bake_file, shard

log = logging.getLogger(__name__)

BAKE_FILE_PATTERN = "docker-bake.*.hcl"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class BakeOptions:
    """What `buildgen bake` was asked to do."""

    out: Path
    push: bool = False
    platform: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    extra_args: tuple[str, ...] = ()
    docker: str = "docker"


@dataclass(frozen=True)
class BakeRun:
    """The files written and the buildx command that builds each."""

    files: tuple[Path, ...]
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
    return BakeRun(files, commands, plan.catalog.root.resolve())


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
        for old in out.glob(BAKE_FILE_PATTERN):
            if old.name not in names:
                old.unlink()
        for name in [*names, PLAN_FILE]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tuple(out / name for name in names)


def _command(options: BakeOptions, path: Path) -> tuple[str, ...]:
    # Outputs (push or not) are in the file itself: `--push` would also set them on the
    # borrowed targets, which must stay cache-only.
    return (options.docker, "buildx", "bake", "-f", str(path), *options.extra_args)


def run(bake: BakeRun) -> None:
    """Run each buildx command in turn; stop at the first failure."""
    if shutil.which(bake.commands[0][0] if bake.commands else "docker") is None:
        raise ExternalToolError("docker is not installed or not on PATH (try --dry-run)")
    total = len(bake.commands)
    for number, command in enumerate(bake.commands, start=1):
        log.info("[%d/%d] %s", number, total, shlex.join(command))
        sys.stderr.flush()
        result = subprocess.run(command, cwd=bake.cwd, check=False)
        if result.returncode != 0:
            raise ExternalToolError(
                f"docker buildx bake failed (exit {result.returncode}) on {command[4]}",
                command=command,
                returncode=result.returncode,
            )
