"""Bench: buildgen plan+render vs buildx's own resolve time, sharded vs one file.

For N per-task images (default 500, 2,000, 5,000), and a benchmark in tiers shaped like
SWE-bench's (1 base, 60 environments, 2,294 tasks; --tiered): the wall time of the whole
`buildgen bake --dry-run` command (plan + render + write), then `docker buildx bake --print`
over the sharded files (one buildx call per file, as `buildgen bake` runs them) and over one
unsharded file holding every target. Run: .venv/bin/python -m bench.bench_bake [N ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.gencatalog import generate_catalog


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def render(catalog: Path, out: Path, shard_size: int) -> tuple[float, list[Path]]:
    command = [sys.executable, "-m", "buildgen", "bake", "--dry-run", "-q",
               "--catalog", str(catalog), "--out", str(out), "--shard-size", str(shard_size)]  # fmt: skip
    seconds = timed(command, catalog.parent)
    return seconds, sorted(out.glob("docker-bake.*.hcl"))


def buildx_print(files: list[Path], cwd: Path) -> float:
    return sum(timed(["docker", "buildx", "bake", "-f", str(f), "--print"], cwd) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[500, 2000, 5000])
    parser.add_argument("--repeat", type=int, default=3, help="runs of buildgen per size (median)")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument(
        "--tiered", action="append", default=None, metavar="TASKS:ENVS",
        help="also a benchmark in tiers, as SWE-bench's: 1 base, ENVS environments, TASKS tasks "
        "(default: 2294:60)",
    )  # fmt: skip
    args = parser.parse_args()
    cases = [(n, 0) for n in args.sizes]
    for spec in args.tiered if args.tiered is not None else ["2294:60"]:
        tasks, _, envs = spec.partition(":")
        cases.append((int(tasks), int(envs)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tasks, envs in cases:
            root = Path(tmp) / f"n{tasks}-{envs}"
            catalog = generate_catalog(root, tasks, combinations=False, environments=envs)
            n = tasks + (envs + 1 if envs else 0)
            runs = [render(catalog, root / "sharded", args.shard_size) for _ in range(args.repeat)]
            render_s = statistics.median(seconds for seconds, _ in runs)
            sharded = runs[0][1]
            _, single = render(catalog, root / "single", n + 100)
            sharded_s = buildx_print(sharded, root)
            single_s = buildx_print(single, root)
            label = f"{n:,}" + (f" (1 base, {envs} envs, {tasks:,} tasks)" if envs else "")
            rows.append((label, render_s, len(sharded), sharded_s, single_s, single_s / sharded_s))
            print(f"  measured {label}", file=sys.stderr)
    header = ("images", "buildgen plan+render s", "files", "buildx --print sharded s",
              "buildx --print one file s", "one file / sharded")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for n, render_s, files, sharded_s, single_s, ratio in rows:
        print(
            f"| {n} | {render_s:.3f} | {files} | {sharded_s:.2f} | {single_s:.2f} | {ratio:.1f}x |"
        )


if __name__ == "__main__":
    main()
