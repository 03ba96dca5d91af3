"""What `buildgen bake --push` does when a buildx run fails: the retry policy, as a pure function
of how the run ended (`decide`), apart from the loop that runs the files (bake.py).

Transient failures are built again (a registry that answered 500 under load; a builder error,
then without the build cache); a build error is not; a daemon that is gone ends the whole run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# What the docker CLI says when the daemon is gone (stopped, or crashed mid-build).
DAEMON_GONE = "Cannot connect to the Docker daemon"

# Errors of the builder itself, not of what it builds. Seen with Docker Engine 26.1's containerd
# image store after a build was cancelled (a sibling target failed): the build cache keeps a
# record whose snapshot is gone, and every build that hits it fails with "failed to commit <id>
# to <id> during finalize: failed to stat active key during commit: snapshot <id> does not
# exist: not found", until the cache is pruned. Building without the cache succeeds.
_BUILDER_ERRORS = re.compile(
    r"failed to commit \S+ to \S+ during finalize|failed to stat active key during commit"
)


def daemon_gone(tail: Sequence[str]) -> bool:
    """Whether the last lines of a failed run say the Docker daemon is gone."""
    return any(DAEMON_GONE in line for line in tail)


def builder_error(tail: Sequence[str]) -> str | None:
    """The line of a failed run that blames the builder rather than the build, if any."""
    errors = [line for line in tail if line.lstrip("#0123456789 ").startswith("ERROR")]
    return next((line.strip() for line in errors if _BUILDER_ERRORS.search(line)), None)


class Action(Enum):
    """What to do about the targets a failed buildx run did not build."""

    RETRY = "retry"  # build them again (one of --build-retries)
    REBUILD_UNCACHED = "rebuild-uncached"  # the one target again, without the build cache
    SPLIT = "split"  # build them again in two halves (--keep-going)
    FAIL = "fail"  # the one target failed alone: it counts as failed
    GIVE_UP = "give-up"  # they all count as failed, without narrowing down which did
    LANDED = "landed"  # buildx failed, yet every target is in the registry: warn, go on


@dataclass(frozen=True)
class FailedRun:
    """What the policy knows of a failed buildx run."""

    unbuilt: tuple[str, ...]  # the keys of its targets that did not land
    retries: int  # reruns left for them (--build-retries)
    daemon_gone: bool  # in this run or an earlier one
    builder_error: str | None  # the line that blames the builder, if one does
    keep_going: bool
    rebuilt: frozenset[str] = frozenset()  # built once more without the cache already


@dataclass(frozen=True)
class Decision:
    """The policy's answer: an action, and whether to build anything after it."""

    action: Action
    stop: bool = False  # build nothing more (the rest is recorded as not built)
    retries: int = 0  # reruns left for what is built again
    no_cache: bool = False  # build it again without the build cache


def decide(run: FailedRun) -> Decision:
    """The retry policy: what to do after `run` failed."""
    if not run.unbuilt:
        # buildx failed, yet the registry holds every target with every platform (BuildKit's
        # pusher fails on a 500 to a HEAD it makes after or beside another push of the same
        # repository; a cache export can fail after the push): what was asked for is there.
        return Decision(Action.LANDED, stop=run.daemon_gone)
    # The daemon gone: nothing more can be built, not again and not in halves.
    if run.daemon_gone or (run.retries == 0 and len(run.unbuilt) > 1 and not run.keep_going):
        return Decision(Action.GIVE_UP, stop=True)
    if run.retries > 0:
        # Registries fail transiently under concurrent pushes (distribution 2.8 answers 500 on
        # a tag being rewritten): build what did not land once more; cached work is not redone,
        # so a real failure costs little to confirm. After a builder error, without the cache.
        return Decision(Action.RETRY, retries=run.retries - 1, no_cache=bool(run.builder_error))
    if len(run.unbuilt) == 1 and run.builder_error and run.unbuilt[0] not in run.rebuilt:
        # It failed alone, in the builder rather than in its build: once more, without the build
        # cache (the error comes back for as long as the cache holds that record).
        return Decision(Action.REBUILD_UNCACHED, no_cache=True)
    if len(run.unbuilt) == 1:
        return Decision(Action.FAIL, stop=not run.keep_going)
    # --keep-going: a failing target cancels its siblings; build them in halves until every
    # failure stands alone in its run.
    return Decision(Action.SPLIT)
