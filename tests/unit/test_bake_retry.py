"""bake's retry policy (build/retry.py) and push-mode decision, as pure functions: no Docker.
test_scale_out.py drives the same decisions through real buildx runs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from buildgen.build.bake import BakeRequest, push_mode
from buildgen.build.render import PushMode
from buildgen.build.retry import (
    Action,
    Decision,
    FailedRun,
    builder_error,
    daemon_gone,
    decide,
)

# What buildx printed when dockerd 26.1's build cache held a record of a lost snapshot.
BUILDER_TAIL = (
    "#6 [agents--good 1/1] COPY x /x",
    "#6 ERROR: failed to commit r3r51wqcc3 to d3814s8224 during finalize: failed to stat active "
    "key during commit: snapshot r3r51wqcc3 does not exist: not found",
    "ERROR: failed to solve: failed to commit r3r51wqcc3 to d3814s8224 during finalize",
)
BUILD_TAIL = (
    "#5 [agents--bad 1/1] COPY missing-file /x",
    '#5 ERROR: failed to calculate checksum of ref: "/missing-file": not found',
    'ERROR: failed to solve: failed to compute cache key: "/missing-file": not found',
)
GONE_TAIL = (
    "ERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
    "daemon running?",
)

ONE = FailedRun(unbuilt=("agents/a",), retries=0, daemon_gone=False, builder_error=None,
                keep_going=False)  # fmt: skip
MANY = replace(ONE, unbuilt=("agents/a", "agents/b", "agents/c"))


def test_the_tail_of_a_run_says_what_failed() -> None:
    assert builder_error(BUILDER_TAIL) == BUILDER_TAIL[1]
    assert builder_error(BUILD_TAIL) is None
    # Only the builder's own ERROR lines count, not a build step that prints the same words.
    assert builder_error(("#7 echo failed to stat active key during commit",)) is None
    assert daemon_gone(GONE_TAIL) and not daemon_gone(BUILD_TAIL + BUILDER_TAIL)


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_failed_run_whose_targets_all_landed_is_a_warning(keep_going: bool) -> None:
    """Seen in CI: BuildKit's pusher got a 500 to a HEAD of a tag that a sibling target was
    pushing, and buildx exited 1 with every image in the registry."""
    run = replace(ONE, unbuilt=(), keep_going=keep_going, retries=3)
    assert decide(run) == Decision(Action.LANDED)
    assert decide(replace(run, daemon_gone=True)) == Decision(Action.LANDED, stop=True)


@pytest.mark.parametrize("run", [ONE, MANY, replace(MANY, keep_going=True, retries=2)])
def test_a_daemon_that_is_gone_ends_the_build(run: FailedRun) -> None:
    """Not built again, not split: nothing more can be built."""
    gone = replace(run, daemon_gone=True, builder_error=BUILDER_TAIL[1])
    assert decide(gone) == Decision(Action.GIVE_UP, stop=True)


def test_retries_build_what_did_not_land_again() -> None:
    assert decide(replace(MANY, retries=2)) == Decision(Action.RETRY, retries=1)
    assert decide(replace(ONE, retries=1, keep_going=True)) == Decision(Action.RETRY, retries=0)
    # After a builder error, without the build cache.
    uncached = replace(MANY, retries=1, builder_error=BUILDER_TAIL[1])
    assert decide(uncached) == Decision(Action.RETRY, retries=0, no_cache=True)


def test_without_retries_several_targets_fail_together_unless_keep_going() -> None:
    assert decide(MANY) == Decision(Action.GIVE_UP, stop=True)
    assert decide(replace(MANY, keep_going=True)) == Decision(Action.SPLIT)


def test_a_target_alone_fails_unless_the_builder_did() -> None:
    assert decide(ONE) == Decision(Action.FAIL, stop=True)
    assert decide(replace(ONE, keep_going=True)) == Decision(Action.FAIL, stop=False)
    builder = replace(ONE, builder_error=BUILDER_TAIL[1])
    assert decide(builder) == Decision(Action.REBUILD_UNCACHED, no_cache=True)
    # Once: rebuilt without the cache already, it fails like any other.
    again = replace(builder, rebuilt=frozenset({"agents/a"}))
    assert decide(again) == Decision(Action.FAIL, stop=True)


def test_splitting_ends_with_every_failure_alone() -> None:
    """--keep-going, no retries: halves of halves, until each failing target is in a run of its
    own (where it fails, or lands)."""
    failing = {"t3", "t6"}
    queue = [tuple(f"t{i}" for i in range(8))]
    failed, runs = [], 0
    while queue:
        targets = queue.pop(0)
        runs += 1
        unbuilt = targets if failing & set(targets) else ()  # a failure cancels its siblings
        if not unbuilt:
            continue
        decision = decide(replace(ONE, unbuilt=unbuilt, keep_going=True))
        if decision.action is Action.SPLIT:
            half = (len(unbuilt) + 1) // 2
            queue[:0] = [unbuilt[:half], unbuilt[half:]]
        else:
            assert decision == Decision(Action.FAIL)
            failed += unbuilt
    assert sorted(failed) == ["t3", "t6"]
    assert runs <= 2 * 8


def test_push_mode() -> None:
    def detect() -> PushMode:
        return PushMode.DIGEST

    def no_builder() -> PushMode:
        raise AssertionError("a dry run or no push asks no builder")

    assert push_mode(BakeRequest(), no_builder) is PushMode.NONE
    assert push_mode(BakeRequest(push=True), detect) is PushMode.DIGEST
    assert push_mode(BakeRequest(push=True, dry_run=True), no_builder) is PushMode.STAGING
    for request in (BakeRequest(push_by_digest=True), BakeRequest(push=True,
                    push_by_digest=True, dry_run=True)):  # fmt: skip
        assert push_mode(request, no_builder) is PushMode.DIGEST
