"""Bench: `buildgen lock` vs a loop of `skopeo inspect`, on loopback and with 20 ms per request.

For N per-task images (default 2,000), each published as an OCI index of linux/amd64 and
linux/arm64, in one local `docker-registry`. Setup, not timed: push synthetic per-platform
images and run `buildgen publish` on them (which also writes a lockfile). Then, on each path:

- loopback: straight to the registry on 127.0.0.1;
- +20 ms: through a `FaultProxy` (tests/support/registries.py) in front of the same registry that sleeps
  20 ms before forwarding every request (no faults); `--registry PROXY/prefix` with the same
  path prefix, so the same repositories;

time the whole command (interpreter start, catalog, plan, registry work):

- `buildgen lock` cold: no lockfile; per image one GET of the index by tag (the layer sizes the
  lock records are annotations publish put on the index);
- `buildgen lock` warm: the lockfile the cold run just wrote; per image one HEAD of the tag with
  If-None-Match: its digest (distribution answers 304), the file stays byte-identical (checked);
- `buildgen lock --check`: offline, no registry (the fixed cost of startup + plan + reading);
- a loop of `skopeo inspect --raw --tls-verify=false docker://REF`, one process per reference,
  sequential, as a script would do it (it reads only the index, not the platform manifests).

Both tools are timed in the same minutes: R rounds (--repeat, default 5), each the three
buildgen runs and then the next R-th of the skopeo loop; buildgen's time is the median round,
skopeo's the sum of the parts. (This machine's speed drifts by tens of percent from one minute
to the next; timing one tool after the other measured the drift as much as the tools.)
buildgen's bytecode is compiled first, as `pip install` does: this machine sets
PYTHONDONTWRITEBYTECODE, which would have every run compile the changed modules again.

Through the proxy the cold run starts from no lockfile too: a lockfile is made for one registry
prefix, and one made for the direct host would be started anew for the proxy's (a warning), so
the warm run through the proxy reads the lockfile of the cold run through the proxy. The
proxy's own counters give the HTTP requests per image of each tool.

Next to each time: the CPU seconds of the command, of the registry and of the proxy (which
runs in this process), because all three share this machine's CPUs.

`--sweep 8,16,32,64` adds a table of `lock.update` alone (timed inside a child process, after
its imports and plan) with `workers` = `RegistryOptions.max_connections` = K, cold and warm,
on both paths: what other values of `buildgen lock --jobs` (default 64) cost or gain.

Run: .venv/bin/python -m bench.bench_lock [--images N] [--repeat R] [--sweep K,K,...]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import buildgen as buildgen_package
from buildgen.model import lockfile as lockfile_format
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan
from buildgen.registry import RegistryClient, RegistryOptions
from buildgen.release import lock
from tests.support.components import start_registry
from tests.support.gencatalog import generate_catalog
from tests.support.registries import FaultProxy
from tests.support.synth import push_synthetic

PLATFORMS = "[linux/amd64, linux/arm64]"
SELECT = "benchmarks/*"
PREFIX = "bench"  # the repository path prefix under either host
LATENCY = 0.02
GOALS = {"loopback": 20.0, "+20 ms": 50.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Timing:
    """Wall seconds of a command, and CPU seconds spent by it, the registry and the proxy."""

    wall: float
    client_cpu: float
    registry_cpu: float
    proxy_cpu: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(
            self.wall + other.wall,
            self.client_cpu + other.client_cpu,
            self.registry_cpu + other.registry_cpu,
            self.proxy_cpu + other.proxy_cpu,
        )


ZERO = Timing(0.0, 0.0, 0.0, 0.0)
REGISTRY_PID = 0  # set in main(): the docker-registry process, for its CPU time


def cpu_of(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def registry_cpu() -> float:
    fields = Path(f"/proc/{REGISTRY_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(command: list[str], cwd: Path) -> tuple[Timing, str]:
    """Run `command` to completion; its timing and stdout. The proxy runs in this process,
    which otherwise only waits: this process's own CPU time is the proxy's."""
    before = (cpu_of(resource.RUSAGE_CHILDREN), registry_cpu(), cpu_of(resource.RUSAGE_SELF))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = (cpu_of(resource.RUSAGE_CHILDREN), registry_cpu(), cpu_of(resource.RUSAGE_SELF))
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return Timing(wall, *(b - a for a, b in zip(before, after, strict=True))), done.stdout


def median(timings: list[Timing]) -> Timing:
    """The run with the median wall time (its CPU times with it)."""
    return sorted(timings, key=lambda t: t.wall)[len(timings) // 2]


def buildgen(verb: str, catalog: Path, registry: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "buildgen", verb, "-q", "--catalog", str(catalog),
            "--registry", registry, "--select", SELECT, *extra]  # fmt: skip


@dataclass
class Route:
    """One way to reach the registry: its name in the table, host and proxy (if any)."""

    name: str
    host: str
    proxy: FaultProxy | None = None

    @property
    def prefix(self) -> str:
        return f"{self.host}/{PREFIX}"

    def requests(self) -> int:
        return self.proxy.stats["requests"] if self.proxy else 0

    def reset(self) -> None:
        if self.proxy:
            self.proxy.reset_stats()


@dataclass
class Measured:
    route: str
    case: str
    timing: Timing
    images: int
    requests_per_image: float | None = None
    note: str = ""


@dataclass
class Rounds:
    """What one path's rounds measured: buildgen's runs, and the skopeo loop in parts."""

    cold: list[Timing]
    warm: list[Timing]
    check: list[Timing]
    skopeo: Timing = ZERO
    skopeo_done: int = 0
    cold_requests: int = 0
    warm_requests: int = 0
    skopeo_requests: int = 0


def lock_round(route: Route, catalog: Path, work: Path, rounds: Rounds) -> None:
    """`buildgen lock` cold (no lockfile), warm (the cold run's lockfile) and --check, once."""
    lockfile = work / f"lock-{route.name.replace(' ', '')}.json"
    command = buildgen("lock", catalog, route.prefix, "--lock", str(lockfile))
    lockfile.unlink(missing_ok=True)
    route.reset()
    rounds.cold.append(run(command, work)[0])
    rounds.cold_requests = route.requests()
    written, mtime = sha(lockfile), lockfile.stat().st_mtime_ns
    route.reset()
    rounds.warm.append(run(command, work)[0])
    rounds.warm_requests = route.requests()
    if sha(lockfile) != written or lockfile.stat().st_mtime_ns != mtime:
        sys.exit(f"{route.name}: the warm run rewrote {lockfile}")
    rounds.check.append(run([*command, "--check"], work)[0])


def skopeo_part(route: Route, references: list[str], rounds: Rounds) -> None:
    """A part of the sequential skopeo loop, one process per reference."""
    route.reset()
    for reference in references:
        rounds.skopeo += run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{reference}"], Path.cwd())[0]  # fmt: skip
    rounds.skopeo_done += len(references)
    rounds.skopeo_requests += route.requests()


def time_route(
    route: Route, catalog: Path, work: Path, references: list[str], args: argparse.Namespace
) -> list[Measured]:
    """`repeat` rounds, each `buildgen lock` cold / warm / --check and then a part of the skopeo
    loop, so that both tools are timed in the same minutes: this machine's speed drifts by tens
    of percent from one minute to the next. The skopeo loop is whole unless a first sample says
    it would take longer than `budget`; then each part is cut to its share of `sample` and the
    total scaled up."""
    n, repeat = len(references), args.repeat
    parts = [references[i * n // repeat : (i + 1) * n // repeat] for i in range(repeat)]
    rounds = Rounds([], [], [])
    share = max(1, args.sample // repeat)
    for index, part in enumerate(parts):
        lock_round(route, catalog, work, rounds)
        log(f"  round {index + 1}/{repeat}: cold {rounds.cold[-1].wall:.2f} s, warm "
            f"{rounds.warm[-1].wall:.2f} s, --check {rounds.check[-1].wall:.2f} s")  # fmt: skip
        if index == 0 and len(part) > share:
            skopeo_part(route, part[:share], rounds)
            projected = rounds.skopeo.wall / share * n
            if projected > args.budget:
                log(f"  skopeo ({route.name}): {share} in {rounds.skopeo.wall:.1f} s; all {n} "
                    f"would take ~{projected:.0f} s > {args.budget:.0f} s: extrapolating")  # fmt: skip
                parts = [p[:share] for p in parts]
                part = part[:share]
            skopeo_part(route, part[share:], rounds)
        else:
            skopeo_part(route, part, rounds)
        log(f"  skopeo ({route.name}): {rounds.skopeo_done}/{n} in {rounds.skopeo.wall:.1f} s")
    done = rounds.skopeo_done
    scale = n / done
    t = rounds.skopeo
    skopeo = Timing(t.wall * scale, t.client_cpu * scale, t.registry_cpu * scale,
                    t.proxy_cpu * scale)  # fmt: skip
    note = "whole loop" if done == n else (
        f"**extrapolated** from {done} of {n} ({t.wall:.1f} s measured)"
    )  # fmt: skip
    per = (lambda count: count / n) if route.proxy else (lambda count: None)
    return [
        Measured(route.name, "`buildgen lock` cold", median(rounds.cold), n,
                 per(rounds.cold_requests), f"median of {repeat}"),
        Measured(route.name, "`buildgen lock` warm", median(rounds.warm), n,
                 per(rounds.warm_requests), f"median of {repeat}; file byte-identical"),
        Measured(route.name, "`buildgen lock --check` (offline floor)", median(rounds.check), n,
                 0.0 if route.proxy else None, f"median of {repeat}; no registry"),
        Measured(route.name, "`skopeo inspect --raw` loop", skopeo, n,
                 rounds.skopeo_requests / done if route.proxy else None,
                 f"{note}; in {repeat} parts between the rounds"),
    ]  # fmt: skip


# -- the concurrency sweep: lock.update in a child process, workers = max_connections = K ----


def worker(catalog: Path, prefix: str, lockfile: Path, k: int) -> None:
    """(child) One lock.update with K workers and connections; prints its seconds."""
    plan = make_plan(load_catalog(catalog), registry=prefix, select=[SELECT])
    current = (
        lockfile_format.read(lockfile)
        if lockfile.exists()
        else lockfile_format.Lockfile(plan.catalog.digest, plan.registry)
    )
    with RegistryClient(RegistryOptions(max_connections=k)) as client:
        start = time.perf_counter()
        lock.update(current, plan, client, workers=k)
        seconds = time.perf_counter() - start
    lockfile_format.write(lockfile, current)
    print(json.dumps({"seconds": seconds}))


def sweep(routes: list[Route], catalog: Path, work: Path, ks: list[int]) -> list[list[str]]:
    """Per route and K: cold and warm lock.update (one run each), in a child process so that
    the proxy (in this process) does not share its interpreter lock."""
    rows = []
    for route in routes:
        lockfile = work / "sweep.lock.json"
        for k in ks:
            cells = [route.name, str(k)]
            lockfile.unlink(missing_ok=True)
            for _ in ("cold", "warm"):
                timing, out = run([sys.executable, __file__, "--worker", str(catalog), route.prefix,
                                   str(lockfile), str(k)], work)  # fmt: skip
                seconds = json.loads(out)["seconds"]
                cells += [f"{seconds:.2f}", cpu_cell(timing)]
            log(f"  sweep {route.name} K={k}: cold {cells[2]} s, warm {cells[4]} s")
            rows.append(cells)
    return rows


# -- output ----------------------------------------------------------------------------------


def cpu_cell(t: Timing) -> str:
    return f"{t.client_cpu:.1f} / {t.registry_cpu:.1f} / {t.proxy_cpu:.1f}"


def table(rows: list[Measured], out: Callable[[str], None]) -> None:
    header = ("path", "case", "images", "seconds", "ms/image", "HTTP requests/image",
              "CPU s: client / registry / proxy", "skopeo / buildgen", "notes")  # fmt: skip
    out("| " + " | ".join(header) + " |")
    out("|" + "---|" * len(header))
    skopeo = {r.route: r.timing.wall for r in rows if r.case.startswith("`skopeo")}
    for r in rows:
        ratio = ""
        if r.case in ("`buildgen lock` cold", "`buildgen lock` warm"):
            x = skopeo[r.route] / r.timing.wall
            goal = GOALS[r.route]
            ratio = f"{x:.1f}x ({'meets' if x >= goal else 'misses'} {goal:.0f}x)"
        reqs = "" if r.requests_per_image is None else f"{r.requests_per_image:.2f}"
        out(f"| {r.route} | {r.case} | {r.images:,} | {r.timing.wall:.2f} | "
            f"{r.timing.wall / r.images * 1000:.1f} | {reqs} | {cpu_cell(r.timing)} | {ratio} | "
            f"{r.note} |")  # fmt: skip


def concurrency() -> int:
    """Requests `buildgen lock` has in flight: its --jobs default (workers and pool alike)."""
    return lock.DEFAULT_JOBS


def ceilings(rows: list[Measured], n: int) -> list[str]:
    """Why the ratios are what they are: the best ratio each buildgen mode could reach here if
    it were bound only by CPU (all of this machine's CPUs, shared with the registry and the
    proxy), only by its own interpreter (the client's CPU time, nearly all of it under one
    interpreter lock), or only by latency (through the proxy, with the hard-coded concurrency).
    """
    by = {(r.route, r.case): r for r in rows}
    k = concurrency()
    cpus = os.cpu_count() or 1
    lines = ["Ceilings (the best ratio each bound alone allows):", ""]
    for route in GOALS:
        skopeo = by[(route, "`skopeo inspect --raw` loop")].timing
        floor = by[(route, "`buildgen lock --check` (offline floor)")].timing.wall
        for mode in ("cold", "warm"):
            r = by[(route, f"`buildgen lock` {mode}")]
            t = r.timing
            cpu = t.client_cpu + t.registry_cpu + t.proxy_cpu
            parts = [
                f"CPU: {cpu:.1f} CPU s (client {t.client_cpu:.1f}, registry "
                f"{t.registry_cpu:.1f}, proxy {t.proxy_cpu:.1f}) on {cpus} CPUs take "
                f">= {cpu / cpus:.2f} s: {skopeo.wall * cpus / cpu:.1f}x",
                f"interpreter: the client's {t.client_cpu:.2f} CPU s: "
                f"{skopeo.wall / t.client_cpu:.1f}x",
            ]
            if r.requests_per_image is not None:
                latency = r.requests_per_image * n * LATENCY / k + floor
                parts.append(
                    f"latency: {r.requests_per_image:.0f} x {n:,} x {LATENCY * 1000:.0f} ms / {k} "
                    f"in flight + {floor:.2f} s offline floor = {latency:.2f} s: "
                    f"{skopeo.wall / latency:.1f}x"
                )
            lines.append(
                f"- {route}, {mode} (measured {skopeo.wall / t.wall:.1f}x, the processes kept "
                f"{cpu / t.wall:.2f} CPUs busy): " + "; ".join(parts) + "."
            )
    return lines


def compare_locks(direct: Path, proxied: Path, direct_host: str, proxy_host: str) -> None:
    """The lock made through the proxy is the direct one with the host swapped."""
    a = json.loads(direct.read_text())
    b = json.loads(proxied.read_text().replace(proxy_host, direct_host))
    if a != b:
        keys = sorted(
            k for k in {*a["images"], *b["images"]} if a["images"].get(k) != b["images"].get(k)
        )
        header = {k: (a.get(k), b.get(k)) for k in a if k != "images" and a.get(k) != b.get(k)}
        first = keys[0] if keys else None
        sys.exit(
            f"{proxied} is not {direct} with {proxy_host} for {direct_host}: header {header}, "
            f"{len(keys)} entries differ, e.g. {first}: {a['images'].get(first)} vs {b['images'].get(first)}"
        )


def effective_cores() -> float:
    """How many cores' worth two CPU-bound processes get here (at most os.cpu_count())."""
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass"
    cpu = cpu_of(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    for proc in procs:
        proc.wait()
    return (cpu_of(resource.RUSAGE_CHILDREN) - cpu) / (time.perf_counter() - start)


def main() -> None:
    global REGISTRY_PID
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, metavar="N", help="default 2000")
    parser.add_argument(
        "--repeat", type=int, default=5, metavar="R",
        help="rounds: buildgen runs per case (median), parts of the skopeo loop (5)",
    )  # fmt: skip
    parser.add_argument(
        "--budget", type=float, default=240, metavar="S",
        help="run a whole skopeo loop only if it should take at most S seconds (240)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", type=int, default=200, metavar="M",
        help="skopeo commands timed before deciding whether to extrapolate (200)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep", default="", metavar="K,K,...",
        help="also time lock.update with workers = max_connections = each K (one run each)",
    )  # fmt: skip
    args = parser.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not on PATH")
    n = args.images
    ks = [int(k) for k in args.sweep.split(",") if k.strip()]
    compileall.compile_dir(Path(buildgen_package.__file__).parent, quiet=1)
    cores = effective_cores()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        root = Path(tmp)
        registry = start_registry(root / "registry")
        REGISTRY_PID = registry.process.pid
        proxy = FaultProxy(registry.host, rate=0.0, added_latency=LATENCY)
        try:
            direct = Route("loopback", registry.host)
            proxied = Route("+20 ms", proxy.host, proxy)
            log(f"registry on {registry.host}, proxy (+{LATENCY * 1000:.0f} ms/request) on "
                f"{proxy.host}; setup (not timed): {n} images x 2 platforms, publish")  # fmt: skip
            catalog = generate_catalog(root / "catalog", n, combinations=False, agents=1,
                                       task_platforms=PLATFORMS)  # fmt: skip
            plan = make_plan(load_catalog(catalog), registry=direct.prefix, select=[SELECT])
            start = time.perf_counter()
            with RegistryClient() as client:
                results = push_synthetic(client, plan)
            results_file = root / "results.all.json"
            results.write(results_file)
            published = root / "published.lock.json"
            run(buildgen("publish", catalog, direct.prefix, "--from", str(results_file),
                         "--lock", str(published)), root)  # fmt: skip
            log(f"  pushed {2 * n} manifests and published {n} indexes in "
                f"{time.perf_counter() - start:.1f} s")  # fmt: skip

            rows: list[Measured] = []
            for route in (direct, proxied):
                references = [f"{i.repository}:{i.tag}" for i in
                              make_plan(load_catalog(catalog), registry=route.prefix,
                                        select=[SELECT]).images]  # fmt: skip
                log(f"{route.name}: {args.repeat} rounds of buildgen lock cold / warm / --check "
                    f"and a part of the skopeo loop over {n} references ...")  # fmt: skip
                rows += time_route(route, catalog, root, references, args)

            if sha(root / "lock-loopback.json") != sha(published):
                sys.exit("the cold lock differs from the one publish wrote")
            compare_locks(published, root / "lock-+20ms.json", registry.host, proxy.host)
            sweep_rows = sweep([direct, proxied], catalog, root, ks) if ks else []
        finally:
            proxy.stop()
            registry.stop()
    load_end = os.getloadavg()[0]

    table(rows, print)
    print()
    for line in ceilings(rows, n):
        print(line)
    print()
    print(
        f"- {n:,} per-task images, each an OCI index of linux/amd64 + linux/arm64 published by "
        f"`buildgen publish` in one local `docker-registry` (distribution 2.8, filesystem "
        f"storage). Setup is not timed. Every time is a whole command (subprocess), startup "
        f"included. {os.cpu_count()} CPUs; two busy processes got {cores:.2f} cores' worth when "
        f"measured at the start; load average {load_start:.1f} at the start, {load_end:.1f} at "
        "the end. The client, the registry and the proxy share these CPUs. Timed in "
        f"{args.repeat} rounds per path, each buildgen's three runs and then the next "
        f"{args.repeat}th of the skopeo loop, so that both are measured in the same minutes; "
        "buildgen's bytecode compiled first, as `pip install` does."
    )
    print(
        "- loopback: `--registry 127.0.0.1:PORT/bench`; +20 ms: `--registry "
        "127.0.0.1:PROXYPORT/bench` through tests/support/registries.py `FaultProxy(rate=0, "
        "added_latency=0.02)`, which sleeps 20 ms before forwarding each request (same "
        "repositories). HTTP requests/image are the proxy's counts (the same on loopback)."
    )
    print(
        "- cold: `buildgen lock --lock NEW` with no lockfile: one GET of the index by tag per "
        "image (the layer sizes are annotations on the index). warm: the same command again on "
        "the file the cold run wrote: one HEAD per image with If-None-Match (304: unchanged), "
        "file byte-identical (checked). The cold loopback lock is byte-identical to the one `publish` wrote; the "
        "proxy's is the same with the proxy's host (checked). Through the proxy nothing is "
        "reused from the loopback run: a lock is for one registry prefix."
    )
    print(
        "- skopeo: `skopeo inspect --raw --tls-verify=false docker://REF`, one process per "
        "reference, sequential. It reads the index only (no platform manifests, no sizes); "
        "with --tls-verify=false it tries https first, then http, on a new connection per "
        "request (no keep-alive)."
    )
    print(
        "- CPU s: the command's own (its process tree), the registry's (/proc), the proxy's "
        "(this process, which only waits meanwhile), during the timed run; scaled like the "
        "time when extrapolated."
    )
    if sweep_rows:
        print()
        print("`lock.update` alone (after interpreter start and plan, in a child process), with "
              "`workers` = `RegistryOptions.max_connections` = K; one run each; the client's CPU "
              "s are the whole child process's, startup and plan included:")  # fmt: skip
        print()
        print("| path | K | cold s | CPU s: client / registry / proxy | warm s | "
              "CPU s: client / registry / proxy |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for cells in sweep_rows:
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
