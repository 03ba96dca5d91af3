"""Bench: `buildgen publish` vs a loop of `docker buildx imagetools create`, same merges.

For N per-task images (default 500), each built for linux/amd64 and linux/arm64: push the
per-platform manifests of every image to a local registry twice, under two prefixes (setup, not
timed). Then time the whole `buildgen publish` command (startup included), which merges each
image's two manifests into one OCI index and tags it, against the loop a release script would
run: one `docker buildx imagetools create` per image, sequentially, with the same tags. Both
sides start from the same state, against the same registry, in the same run.
Run: .venv/bin/python -m bench.bench_publish [--images N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from buildgen.build.results import Results
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import Plan, make_plan
from buildgen.model.tagpolicy import plan_tags
from buildgen.registry import RegistryClient
from tests.support.components import start_registry
from tests.support.gencatalog import generate_catalog
from tests.support.synth import push_synthetic

PLATFORMS = "[linux/amd64, linux/arm64]"
REQUEST = re.compile(r'"(?:GET|HEAD|PUT|POST|PATCH|DELETE) /v2/')  # the registry's access log


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def requests(log_file: Path) -> int:
    """Registry API requests served so far."""
    with log_file.open(encoding="utf-8", errors="replace") as lines:
        return sum(1 for line in lines if REQUEST.search(line))


def setup(client: RegistryClient, catalog: Path, prefix: str) -> tuple[Plan, Results]:
    """The plan under `prefix`, with every image's per-platform manifests pushed."""
    plan = make_plan(load_catalog(catalog), registry=prefix, select=["benchmarks/*"])
    results = push_synthetic(client, plan)
    assert len(results.images) == len(plan.images)
    return plan, results


def run_buildgen(catalog: Path, prefix: str, results: Path, jobs: int) -> float:
    command = [sys.executable, "-m", "buildgen", "publish", "-q", "--catalog", str(catalog),
               "--registry", prefix, "--select", "benchmarks/*", "--from", str(results),
               "--jobs", str(jobs)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=catalog.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"buildgen publish failed ({done.returncode}):\n{done.stderr}")
    return seconds


def imagetools_commands(plan: Plan, results: Results) -> list[list[str]]:
    """Per image: imagetools create with the tags buildgen gives it, from its two manifests."""
    commands = []
    for image in plan.images:
        found = results.images[image.key]
        tags = plan_tags(version=image.version, task=image.task, inputs=image.inputs, existing=[])
        command = ["docker", "buildx", "imagetools", "create"]
        for tag in tags.all:
            command += ["-t", f"{image.repository}:{tag}"]
        command += [f"{found.repository}@{found.platforms[p].manifest.digest}"
                    for p in image.platforms]  # fmt: skip
        commands.append(command)
    return commands


def run_imagetools(commands: list[list[str]], sample: int, budget: float) -> tuple[float, int]:
    """(seconds, commands run): the whole loop, or only the first `sample` commands when the
    whole loop would take longer than `budget` seconds at their pace."""
    total = len(commands)
    elapsed = 0.0
    for done, command in enumerate(commands, start=1):
        start = time.perf_counter()
        ran = subprocess.run(command, capture_output=True, text=True)
        elapsed += time.perf_counter() - start
        if ran.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({ran.returncode}):\n{ran.stderr}")
        if done == sample and done < total:
            projected = elapsed / done * total
            if projected > budget:
                log(f"  imagetools: {done} in {elapsed:.1f} s; all {total} would take "
                    f"~{projected:.0f} s > {budget:.0f} s: extrapolating")  # fmt: skip
                return elapsed, done
        if done % max(1, total // 10) == 0 or done == total:
            log(f"  imagetools: {done}/{total} in {elapsed:.1f} s")
    return elapsed, total


def platform_digests(client: RegistryClient, reference: str) -> list[tuple[str, str]]:
    repository, tag = reference.rsplit(":", 1)
    index = client.get_manifest(repository, tag).json()
    return [
        (f"{m['platform']['os']}/{m['platform']['architecture']}", m["digest"])
        for m in index["manifests"]
    ]


def check(
    client: RegistryClient, plans: dict[str, Plan], results: Results, ran: int, tags: int
) -> str:
    """Both sides' index of the first image name the same two platform manifests, and each
    side has every tag it should. Returns a one-line summary."""
    image = plans["buildgen"].images[0]
    found = results.images[image.key]
    expected = [(p, found.platforms[p].manifest.digest) for p in image.platforms]
    for side, plan in plans.items():
        other = plan.images[0]
        digests = platform_digests(client, f"{other.repository}:{other.tag}")
        if digests != expected:
            sys.exit(f"{side}: {other.repository}:{other.tag} lists {digests}, not {expected}")
    for side, count in (("buildgen", len(plans["buildgen"].images)), ("imagetools", ran)):
        repositories = {i.repository for i in plans[side].images}
        found_tags = sum(len(client.list_tags(r)) for r in repositories)
        if found_tags != tags * count:
            sys.exit(f"{side}: {found_tags} tags in the registry, expected {tags * count}")
    return f"{image.key}: both indexes list {', '.join(f'{p} {d[:19]}' for p, d in expected)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, metavar="N", help="default 500")
    parser.add_argument("--jobs", type=int, default=16, help="buildgen publish --jobs (16)")
    parser.add_argument(
        "--budget", type=float, default=180, metavar="S",
        help="run the whole imagetools loop only if it should take at most S seconds (180)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", type=int, default=50, metavar="M",
        help="imagetools commands timed before deciding whether to extrapolate (50)",
    )  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("docker-registry"):
        sys.exit("docker-registry (CNCF distribution) is not on PATH")
    probe = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"docker buildx is not usable: {probe.stderr.strip()}")
    n = args.images
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        root = Path(tmp)
        load = os.getloadavg()[0]
        registry = start_registry(root / "registry")
        try:
            log(f"registry on {registry.host}; setup (not timed): {n} images x 2 platforms x 2")
            catalog = generate_catalog(root / "catalog", n, combinations=False, agents=1,
                                       task_platforms=PLATFORMS)  # fmt: skip
            plans: dict[str, Plan] = {}
            with RegistryClient() as client:
                start = time.perf_counter()
                plans["buildgen"], bg_results = setup(client, catalog, f"{registry.host}/bg")
                plans["imagetools"], it_results = setup(client, catalog, f"{registry.host}/it")
                log(f"  pushed {4 * n} manifests in {time.perf_counter() - start:.1f} s")
            results_file = root / "results.all.json"
            bg_results.write(results_file)

            access_log = registry.root / "registry.log"
            before = requests(access_log)
            log(f"buildgen publish --jobs {args.jobs} ...")
            bg_s = run_buildgen(catalog, f"{registry.host}/bg", results_file, args.jobs)
            log(f"  {bg_s:.2f} s")
            wrote_lock = (catalog.parent / "images.lock.json").exists()
            middle = requests(access_log)
            log("docker buildx imagetools create, one per image ...")
            commands = imagetools_commands(plans["imagetools"], it_results)
            tags = commands[0].count("-t")  # the same for every per-task image
            it_measured, ran = run_imagetools(commands, args.sample, args.budget)
            it_s = it_measured / ran * n
            calls = {
                "buildgen": (middle - before) / n,
                "imagetools": (requests(access_log) - middle) / ran,
            }
            with RegistryClient() as client:
                checked = check(client, plans, bg_results, ran, tags)
            log(f"  check: {checked}")
            load_end = os.getloadavg()[0]
        finally:
            registry.stop()

    extrapolated = ran < n
    it_cell = f"{it_s:.2f}" + (f" (extrapolated from {ran})" if extrapolated else "")
    header = ("images", "buildgen publish s", "ms/image", "imagetools create loop s",
              "ms/image", "imagetools / buildgen")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print(
        f"| {n:,} | {bg_s:.2f} | {bg_s / n * 1000:.1f} | {it_cell} | {it_s / n * 1000:.1f} "
        f"| {it_s / bg_s:.1f}x |"
    )
    print()
    print(
        f"- Each side merges the same linux/amd64 + linux/arm64 manifests (already in one local "
        f"`docker-registry` on {registry.host}, separate repository prefixes) into one OCI index "
        f"per image and writes {tags} tags per image (task id + `inputs-<hash>`): buildgen by "
        f"its tag policy, imagetools via {tags} `-t` flags."
    )
    print(
        f"- buildgen: the whole `python -m buildgen publish --jobs {args.jobs}` command "
        "(interpreter start, catalog + plan, results file, registry work)"
        + (
            "; it also wrote `images.lock.json` (from the indexes it pushed, which carry each "
            "platform's layer size, so with no extra request); one tag listing of the shared "
            "repository replaces a HEAD of each image's inputs tag."
            if wrote_lock
            else "."
        )
    )
    print(
        "- imagetools: `docker buildx imagetools create -t REPO:TASK -t REPO:inputs-HASH "
        "REPO@sha256:AMD64 REPO@sha256:ARM64`, one process per image, sequential. It needs no "
        "configuration for the http registry: buildx's resolver speaks plain http to 127.0.0.1 "
        "from the first request (no https attempt). It also reads each manifest's config blob "
        "to learn its platform; buildgen takes platforms from the results file."
        + (
            f" **Extrapolated**: {ran} of {n} commands ran, in {it_measured:.1f} s; "
            "the time is scaled linearly to N."
            if extrapolated
            else ""
        )
    )
    print(
        f"- Registry API requests per image (access log): buildgen {calls['buildgen']:.1f}, "
        f"imagetools {calls['imagetools']:.1f}."
    )
    print(f"- Checked: {checked}; every tag of both sides is in the registry.")
    print(
        f"- {os.cpu_count()} CPUs, load average {load:.1f} at the start, {load_end:.1f} at the end "
        "(the registry and both clients share them); setup (pushing the per-platform images) is not timed."
    )


if __name__ == "__main__":
    main()
