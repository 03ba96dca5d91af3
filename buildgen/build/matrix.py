"""`buildgen matrix`: a CI job matrix (GitHub Actions `strategy.matrix` shape) for a plan.

One entry per (platform, shard), so each platform runs on its own native runner, with as few
shards as keep every job at most `targets_per_job` targets and the whole matrix within
`max_jobs` (GitHub allows 256 jobs per matrix). `buildgen bake --platform P --shard I/N --push`
builds one entry; `buildgen publish --from` takes every entry's results file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from buildgen.errors import UsageError
from buildgen.model.plan import Plan

GITHUB_MAX_JOBS = 256
DEFAULT_TARGETS_PER_JOB = 500


def matrix(
    plan: Plan,
    platforms: Sequence[str] = (),
    *,
    max_jobs: int = GITHUB_MAX_JOBS,
    targets_per_job: int = DEFAULT_TARGETS_PER_JOB,
) -> dict[str, Any]:
    """{"include": [{"platform", "shard", "images"}...]} for the plan's images."""
    if max_jobs < 1 or targets_per_job < 1:
        raise UsageError("--max-jobs and --targets-per-job must be at least 1")
    chosen = list(platforms) or sorted({p for image in plan.images for p in image.platforms})
    counts = {p: sum(1 for image in plan.images if p in image.platforms) for p in chosen}
    counts = {p: n for p, n in counts.items() if n}
    if len(counts) > max_jobs:
        raise UsageError(f"{len(counts)} platforms need more than --max-jobs {max_jobs} jobs")
    per_job = targets_per_job
    # Grow the jobs until the matrix fits: a platform of n images needs ceil(n / per_job)
    # shards. It ends: at per_job >= the largest n, every platform is one job.
    while sum(math.ceil(n / per_job) for n in counts.values()) > max_jobs:
        per_job += max(1, per_job // 20)
    include = []
    for platform, count in counts.items():
        shards = math.ceil(count / per_job)
        for index in range(1, shards + 1):
            start, stop = (count * (index - 1)) // shards, (count * index) // shards
            include.append({
                "platform": platform,
                "shard": f"{index}/{shards}",
                "images": stop - start,
                "slug": f"{platform.replace('/', '-')}-{index}-of-{shards}",
            })  # fmt: skip
    return {"include": include}
