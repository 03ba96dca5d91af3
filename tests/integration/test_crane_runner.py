"""The crane runner for real: the core/crane-runner image, baked from the repo's catalog (plus
a test-only hostile agent) on its Debian base (scripts/make-base-image), runs in a container
against the test registry (--network host). It gives the same rootfs and record as `buildgen
materialize` on the host and as the combination image, from `buildgen resolve --format env`
variables and from a mounted lockfile (a per-task benchmark), through a pull-through mirror with
the origin stopped. It runs the eval: the same result.json as `docker run` of the combination
image, with bwrap and with the chroot fallback, and the hostile agent is denied everything in
all three. Its Python dependencies come from scripts/prepare-crane-runner (no network in the
build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.catalogs import REPO, copy_repo_catalog
from support.components import Registry
from support.images import exported, image_part, image_tree
from support.mirrors import Mirrored, start_mirrored
from support.trees import TreeEntry, tree

pytestmark = pytest.mark.docker

# debootstrap takes ~35 s: scripts/make-base-image keeps its rootfs as a tarball, across runs
RUNNER_KEY = "core/crane-runner"
PLATFORM = "linux/amd64"
DOCKER_RUN_TIMEOUT = 600
HOSTILE = Path(__file__).resolve().parent / "agents" / "hostile-agent"
PIPELINE = REPO / "containers/core/eval-pipeline"


def buildgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)  # fmt: skip


# -- the released images: the repo's catalog, the runner on the Debian base ---------------------


@dataclass
class Released:
    prefix: str
    lock: Path
    runner: str
    """The runner's digest-pinned reference, from the lockfile."""
    registry: Registry
    """Where the images are (https, with the test CA)."""


def prepare_vendor() -> None:
    result = subprocess.run([str(REPO / "scripts/prepare-crane-runner")], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def released(
    base_image: str, docker_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Released:
    """The repo's catalog, plus the test-only hostile agent, baked, pushed and published."""
    prepare_vendor()
    root = tmp_path_factory.mktemp("catalog")
    catalog = copy_repo_catalog(root)
    shutil.copytree(HOSTILE, root / "containers/agents/hostile-agent")
    text = catalog.read_text().replace(
        "\ngateways:",
        "\n  hostile-agent: {context: containers/agents/hostile-agent, version: 0.0.1}"
        "\n\ngateways:",
        1,
    )
    catalog.write_text(text)
    prefix, trust = f"{docker_registry.host}/crane-runner-test", docker_registry.env()
    out = tmp_path_factory.mktemp("bake")
    baked = buildgen("bake", "--catalog", str(catalog), "--push", "--registry", prefix,
                     "--out", str(out), env=trust)  # fmt: skip
    assert baked.returncode == 0, baked.stderr[-4000:]
    lock = out / "images.lock.json"
    publish = buildgen("publish", "--catalog", str(catalog), "--registry", prefix, "--lock",
                       str(lock), "--from", str(out / "results.all.json"), env=trust)  # fmt: skip
    assert publish.returncode == 0, publish.stderr[-4000:]
    env = resolve(lock, "terminal-bench", "echo-agent")
    return Released(prefix, lock, env["EVAL_RUNNER_IMAGE"], docker_registry)


def resolve(lock: Path, benchmark: str, agent: str, task: str | None = None) -> dict[str, str]:
    args = ["resolve", "--lock", str(lock), "--benchmark", benchmark, "--agent", agent,
            "--gateway", "mock-gateway", "--platform", PLATFORM, "--format", "env"]  # fmt: skip
    result = buildgen(*args, *(["--task", task] if task else []))
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def run_runner(
    released: Released, evaldir: Path, *docker_args: str, command: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`docker run` the runner with `evaldir` as /eval, on the host's network, trusting the
    registry's CA."""
    evaldir.mkdir(parents=True, exist_ok=True)
    ca = released.registry.ca_file
    trust = (
        ["-v", f"{ca}:/run/test-ca.pem:ro", "-e", "SSL_CERT_FILE=/run/test-ca.pem"] if ca else []
    )
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{evaldir}:/eval", *trust,
         *docker_args, released.runner, *command],
        capture_output=True, text=True, timeout=DOCKER_RUN_TIMEOUT,
    )  # fmt: skip


def host_materialize(
    released: Released, env: dict[str, str], rootfs: Path, *args: str
) -> dict[str, object]:
    """`buildgen materialize --from-env` on the host; returns its record."""
    clean = released.registry.env(
        {k: v for k, v in os.environ.items() if not k.startswith("EVAL_")}
    )
    record = rootfs.with_suffix(".json")
    result = buildgen("materialize", "--from-env", "--rootfs", str(rootfs), "--cache",
                      str(rootfs.with_suffix(".cache")), "--record", str(record), "--pipeline",
                      str(PIPELINE), *args, env={**clean, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr
    record_data: dict[str, object] = json.loads(record.read_text())
    return record_data


HARNESS = ("sh", "-c", 'echo "harness: $EVAL_ROOTFS $EVAL_RECORD ${PYTHONPATH-no-pythonpath}"')


def test_runner_from_resolve_env_equals_host_and_container_mode(
    released: Released, tmp_path: Path
) -> None:
    env = resolve(released.lock, "terminal-bench", "echo-agent")
    env_file = write_env_file(tmp_path / "eval.env", env)
    evaldir = tmp_path / "eval"
    run = run_runner(released, evaldir, "--env-file", str(env_file), command=HARNESS)
    assert run.returncode == 0, run.stderr[-4000:]
    # the harness got the rootfs and the caller's environment (not the image's PYTHONPATH)
    assert run.stdout.splitlines()[-1] == "harness: /eval/rootfs /eval/record.json no-pythonpath"
    # a harness of its own gets the rootfs after the agent's install.sh ran in it
    assert "running /opt/agent/install.sh in the rootfs" in run.stderr
    crane = tree(evaldir / "rootfs")
    installed = crane.pop("/usr/local/bin/echo-agent")
    assert installed == TreeEntry("symlink", 0o777, 0, 0, "/opt/agent/bin/agent")

    host_record = host_materialize(released, env, tmp_path / "host")
    assert image_part(crane) == image_tree(tmp_path / "host")  # /dev: the runner made devices
    assert json.loads((evaldir / "record.json").read_text()) == host_record
    assert host_record["platform"] == PLATFORM
    images = host_record["images"]
    assert isinstance(images, dict)
    assert images["benchmark"]["manifest"] == env["EVAL_BENCHMARK_PLATFORM_DIGEST"]
    assert images["agent"]["manifest"] == env["EVAL_AGENT_PLATFORM_DIGEST"]
    assert images["gateway"]["manifest"] == env["EVAL_GATEWAY_PLATFORM_DIGEST"]
    assert list((evaldir / "cache").rglob("sha256/*"))  # the blob cache is where it was told

    container = image_tree(
        exported(f"{released.prefix}/evals/terminal-bench--echo-agent:latest", tmp_path / "ctr")
    )
    assert image_part(crane) == container
    assert crane["/tasks"] == TreeEntry("dir", 0o700, 0, 0, "")
    assert crane["/opt/gateway"] == TreeEntry("dir", 0o700, 0, 0, "")


def test_runner_per_task_from_mounted_lock(released: Released, tmp_path: Path) -> None:
    task = "django__django-11099"
    lockdir = tmp_path / "lock"
    lockdir.mkdir()
    shutil.copy(released.lock, lockdir / "images.lock.json")
    evaldir = tmp_path / "eval"
    run = run_runner(
        released, evaldir, "-v", f"{lockdir}:/lock:ro",
        "-e", "EVAL_LOCK=/lock/images.lock.json", "-e", "EVAL_BENCHMARK_ENV=per-task",
        "-e", "EVAL_BENCHMARK=swe-mini", "-e", f"EVAL_TASK={task}", "-e", "EVAL_AGENT=shell-agent",
        "-e", "EVAL_GATEWAY=mock-gateway", "-e", f"EVAL_PLATFORM={PLATFORM}",
        "-e", "EVAL_ROOTFS=/eval/fused", command=HARNESS,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.splitlines()[-1] == "harness: /eval/fused /eval/record.json no-pythonpath"

    env = resolve(released.lock, "swe-mini", "shell-agent", task)
    host_record = host_materialize(released, env, tmp_path / "host")
    crane = tree(evaldir / "fused")
    assert crane.pop("/usr/local/bin/shell-agent").kind == "symlink"  # the agent's install.sh
    assert image_part(crane) == image_tree(tmp_path / "host")
    record = json.loads((evaldir / "record.json").read_text())
    assert record == host_record
    assert record["images"]["benchmark"]["key"] == f"benchmarks/swe-mini:{task}"
    assert task in (evaldir / "fused/tasks/task.json").read_text()

    container = image_tree(
        exported(f"{released.prefix}/evals/swe-mini--shell-agent:{task}", tmp_path / "ctr")
    )
    assert image_part(crane) == container


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"EVAL_BENCHMARK": "swe-mini", "EVAL_AGENT": "shell-agent", "EVAL_PLATFORM": PLATFORM},
         "EVAL_BENCHMARK_ENV=per-task needs a task"),
        ({"EVAL_BENCHMARK_IMAGE": "from-resolve"}, "EVAL_BENCHMARK_ENV=per-task needs a task"),
        ({"EVAL_BENCHMARK": "swe-mini:a", "EVAL_TASK": "b", "EVAL_AGENT": "shell-agent"},
         "EVAL_TASK=b does not match EVAL_BENCHMARK=swe-mini:a"),
        ({"EVAL_AGENT": "shell-agent"}, "no images: set EVAL_BENCHMARK_IMAGE"),
    ],
)  # fmt: skip
def test_runner_refuses_bad_environments(
    released: Released, tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    env = {"EVAL_LOCK": "/lock/images.lock.json", "EVAL_BENCHMARK_ENV": "per-task"}
    if variables.get("EVAL_BENCHMARK_IMAGE") == "from-resolve":  # a shared benchmark's variables
        env |= resolve(released.lock, "terminal-bench", "echo-agent")
    else:
        env |= variables
    env_file = write_env_file(tmp_path / "eval.env", env)
    evaldir = tmp_path / "eval"
    run = run_runner(released, evaldir, "--env-file", str(env_file), "-v",
                     f"{released.lock.parent}:/lock:ro", command=HARNESS)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "harness:" not in run.stdout
    assert not (evaldir / "rootfs").exists()


def test_runner_pulls_from_mirror_with_origin_stopped_and_runs_install_sh(
    released: Released, tmp_path: Path
) -> None:
    setup: Mirrored = start_mirrored(tmp_path / "registries")
    try:
        env = {**setup.env, "EVAL_MIRRORS": setup.mirror.host}
        env_file = write_env_file(tmp_path / "eval.env", env)
        first = run_runner(released, tmp_path / "first", "--env-file", str(env_file),
                           command=HARNESS)  # fmt: skip
        assert first.returncode == 0, first.stderr[-4000:]
        host = tmp_path / "host"
        host_materialize(released, setup.env, host, "--mirror", setup.mirror.host)
        setup.wait_until_mirrored()

        setup.stop_origin()
        second = run_runner(released, tmp_path / "second", "--env-file", str(env_file),
                            command=HARNESS)  # fmt: skip
        assert second.returncode == 0, second.stderr[-4000:]
        assert "harness: /eval/rootfs" in second.stdout
        assert "running /opt/agent/install.sh in the rootfs" in second.stderr
    finally:
        setup.mirror.stop()
        setup.origin.stop()

    crane = image_part(tree(tmp_path / "second/rootfs"))  # /dev: the runner made devices
    assert crane == image_tree(tmp_path / "first/rootfs")
    assert json.loads((tmp_path / "second/record.json").read_text()) == json.loads(
        (tmp_path / "first/record.json").read_text()
    )
    # the fused rootfs is the host's, plus what install.sh made in it (chrooted: under /)
    added = {p: crane[p] for p in sorted(set(crane) - set(tree(host)))}
    assert added == {
        "/opt/agent/installed": TreeEntry(
            "file", 0o644, 0, 0, added["/opt/agent/installed"].content
        ),
        "/usr": TreeEntry("dir", 0o755, 0, 0, ""),
        "/usr/local": TreeEntry("dir", 0o755, 0, 0, ""),
        "/usr/local/bin": TreeEntry("dir", 0o755, 0, 0, ""),
        "/usr/local/bin/agent": TreeEntry("symlink", 0o777, 0, 0, "/opt/agent/bin/agent"),
    }
    assert (tmp_path / "second/rootfs/opt/agent/installed").read_text() == "installed in /\n"
    assert {p: e for p, e in crane.items() if p not in added} == tree(host)


def test_runner_image_has_no_pydantic_or_jinja2(released: Released) -> None:
    """materialize runs (the tests above) with httpx, docker and theirs only."""

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint",
                               "python3", released.runner, *args], capture_output=True,
                              text=True, timeout=DOCKER_RUN_TIMEOUT)  # fmt: skip

    found = python("-c", "import importlib.util as u; print([m for m in ('pydantic', 'jinja2', "
                   "'yaml', 'semver') if u.find_spec(m)], u.find_spec('httpx').origin)")  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[] /opt/buildgen/vendor/httpx/__init__.py"
    usage = python("-m", "buildgen", "materialize", "--help")
    assert usage.returncode == 0, usage.stderr
    assert "--from-env" in usage.stdout
    assert python("-m", "buildgen", "resolve", "--help").returncode == 0
    # only the modules its verbs import (scripts/runner-modules): no build or release side
    shipped = python("-c", "import pathlib; print(sorted(str(p.relative_to('/opt/buildgen')) "
                     "for p in pathlib.Path('/opt/buildgen/buildgen').rglob('*.py')))")  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr
    files = [f for f in runner_modules() if f.endswith(".py")]
    assert shipped.stdout.strip() == str(sorted(files))


def runner_modules() -> list[str]:
    listed = subprocess.run([sys.executable, str(REPO / "scripts/runner-modules")],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return listed.stdout.split()


def test_bake_without_vendored_dependencies_fails_clearly(base_image: str, tmp_path: Path) -> None:
    catalog = copy_repo_catalog(tmp_path / "repo")
    shutil.rmtree(tmp_path / "repo/containers/core/crane-runner/vendor", ignore_errors=True)
    result = buildgen("bake", "--catalog", str(catalog), "--select", "core/*", "--out",
                      str(tmp_path / "out"), "--", "--progress", "plain")  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "containers/core/crane-runner/vendor" in output and "not found" in output
    assert "scripts/prepare-crane-runner" in output  # the Dockerfile's hint, shown by buildx


def test_prepare_is_idempotent_and_vendors_no_pydantic() -> None:
    prepare_vendor()
    vendor = REPO / "containers/core/crane-runner/vendor"
    stamp = (vendor / ".buildgen-vendor").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in vendor.rglob("*")}
    again = subprocess.run([str(REPO / "scripts/prepare-crane-runner")], capture_output=True,
                           text=True)  # fmt: skip
    assert again.returncode == 0 and "up to date" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in vendor.rglob("*")} == mtimes
    assert (vendor / ".buildgen-vendor").read_text() == stamp
    names = {p.name for p in vendor.iterdir()}
    assert {"httpx", "docker", "requests", "urllib3"} <= names
    assert not names & {"pydantic", "pydantic_core", "jinja2", "yaml", "semver"}
    assert not list(vendor.rglob("*.so")) and not list(vendor.rglob("__pycache__"))


# -- the eval itself: result.json in both modes, both sandboxes ---------------------------------

# (benchmark, task, per-task): a shared-environment benchmark and a per-task one
EVALS = [("terminal-bench", "hello-world", False), ("swe-mini", "django__django-11099", True)]
SOLVES = {"shell-agent": True, "echo-agent": False}
# The fields of result.json that may differ between the modes (docs/crane-mode.md says why).
MAY_DIFFER = {"mode", "sandbox", "images", "started", "seconds"}


def locked(released: Released, key: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(released.lock.read_text())["images"][key]
    return entry


def container_eval(
    released: Released, benchmark: str, task: str, per_task: bool, agent: str, out: Path
) -> dict[str, Any]:
    """`docker run` of the combination image, pinned by the lockfile: its result.json."""
    entry = locked(released, f"evals/{benchmark}--{agent}" + (f":{task}" if per_task else ""))
    reference = f"{entry['reference'].rsplit(':', 1)[0]}@{entry['digest']}"
    out.mkdir(parents=True)
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/output",
         *([] if per_task else ["-e", f"EVAL_TASK={task}"]), reference],
        capture_output=True, text=True, timeout=DOCKER_RUN_TIMEOUT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    result: dict[str, Any] = json.loads((out / "task/result.json").read_text())
    return result


def crane_eval(
    released: Released,
    benchmark: str,
    task: str,
    per_task: bool,
    agent: str,
    work: Path,
    sandbox: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The crane runner given `buildgen resolve --format env`: its result.json, its record, and
    the variables it was given. bwrap needs the privilege to make namespaces; chroot is what
    the runner falls back to without it."""
    env = resolve(released.lock, benchmark, agent, task if per_task else None)
    run_env = {**env, "EVAL_SANDBOX": sandbox} | ({} if per_task else {"EVAL_TASK": task})
    work.mkdir(parents=True, exist_ok=True)
    env_file = write_env_file(work / "eval.env", run_env)
    out = work / "output"
    out.mkdir(parents=True)
    privilege = ["--privileged"] if sandbox == "bwrap" else []
    run = run_runner(released, work / "eval", "--env-file", str(env_file), "-v", f"{out}:/output",
                     *privilege)  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"sandbox: {sandbox}" in run.stderr
    result: dict[str, Any] = json.loads((out / "task/result.json").read_text())
    record: dict[str, Any] = json.loads((work / "eval/record.json").read_text())
    return result, record, env


@pytest.mark.parametrize("agent", sorted(SOLVES))
@pytest.mark.parametrize(("benchmark", "task", "per_task"), EVALS)
def test_crane_mode_gives_the_result_of_container_mode(
    released: Released, tmp_path: Path, benchmark: str, task: str, per_task: bool, agent: str
) -> None:
    container = container_eval(released, benchmark, task, per_task, agent, tmp_path / "ctr")
    results = {}
    for sandbox in ("bwrap", "chroot"):
        result, record, env = crane_eval(released, benchmark, task, per_task, agent,
                                         tmp_path / sandbox, sandbox)  # fmt: skip
        results[sandbox] = result
        assert result["mode"] == "crane" and result["sandbox"] == sandbox
        assert record["sandbox"]["kind"] == sandbox
        # the digests pulled are the lockfile's, and result.json says so
        for role in ("benchmark", "agent", "gateway"):
            key = env[f"EVAL_{role.upper()}_KEY"]
            entry = locked(released, key)
            used = result["images"][role]
            assert used["key"] == key
            assert used["reference"].endswith(f"@{entry['digest']}")
            assert used["manifest"] == entry["platforms"][PLATFORM]["digest"]
            assert used["manifest"] == record["images"][role]["manifest"]
    assert container["mode"] == "container" and container["sandbox"] == "container"

    def same(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k not in MAY_DIFFER}

    assert same(results["bwrap"]) == same(container) == same(results["chroot"])
    assert set(container) == set(results["bwrap"]) == set(results["chroot"])
    assert container["resolved"] is SOLVES[agent], container
    assert container["score"] == (1.0 if SOLVES[agent] else 0.0)
    assert container["task"] == task and container["agent"] == f"agents/{agent}"
    assert container["benchmark"] == f"benchmarks/{benchmark}"
    assert container["gateway"] == "models/mock-gateway"


# What the hostile agent tries; each must print a DENIED line.
HOSTILE_ATTEMPTS = [
    "list /tasks", "list /tests", "list /opt/gateway", "read /tasks/task.json",
    "read /tasks/hello-world.json", "read /tests/run.sh", "read /opt/gateway/answers.json",
    "read /opt/gateway/bin/gateway", "read /eval/cache", "read /eval/images.lock.json",
    "read /eval/record.json", "read /lock/images.lock.json", "read /root/.docker/config.json",
    "read /proc/1/environ", "write /etc/passwd", "write /opt/agent/bin/agent",
    "write /output/task/result.json", "write /output/hostile", "write /usr/local/bin/hostile",
    "write /tmp/hostile", "write /hostile", "write anywhere outside /testbed",
    "signal or ptrace", "environment beyond the allow-list", "EVAL_* or credential variables",
]  # fmt: skip


def hostile_report(agent_log: Path) -> tuple[list[str], list[str], int]:
    lines = agent_log.read_text().splitlines()
    denied = [line.removeprefix("DENIED ") for line in lines if line.startswith("DENIED ")]
    allowed = [line for line in lines if line.startswith("ALLOWED ")]
    others = next(int(line.split()[1]) for line in lines if line.startswith("INFO "))
    return denied, allowed, others


@pytest.mark.parametrize("mode", ["container", "bwrap", "chroot"])
def test_the_agent_cannot_reach_what_it_must_not(
    released: Released, tmp_path: Path, mode: str
) -> None:
    """The hostile agent, as the agent user, while the gateway runs: every attempt fails."""
    benchmark, task, per_task = EVALS[0]
    if mode == "container":
        result = container_eval(released, benchmark, task, per_task, "hostile-agent",
                                tmp_path / "out")  # fmt: skip
        agent_log = tmp_path / "out/task/agent.log"
    else:
        result, _, _ = crane_eval(released, benchmark, task, per_task, "hostile-agent",
                                  tmp_path, mode)  # fmt: skip
        agent_log = tmp_path / "output/task/agent.log"
    denied, allowed, others = hostile_report(agent_log)
    assert not allowed, "\n".join(allowed)
    assert len(denied) == len(HOSTILE_ATTEMPTS), denied
    for attempt, line in zip(HOSTILE_ATTEMPTS, denied, strict=True):
        assert line.startswith(attempt), (attempt, line)
    assert others >= 2  # the gateway and the pipeline, at least, were there to attack
    assert result["resolved"] is False and result["agent_exit"] == 0


def test_a_platform_the_machine_cannot_run_is_refused_before_any_pull(
    released: Released, tmp_path: Path
) -> None:
    """The lockfile says the benchmark has linux/s390x too (this machine runs amd64 only)."""
    lock = json.loads(released.lock.read_text())
    entry = lock["images"]["benchmarks/terminal-bench"]
    entry["platforms"]["linux/s390x"] = entry["platforms"][PLATFORM]
    for key in ("agents/echo-agent", "models/mock-gateway"):
        lock["images"][key]["platforms"]["linux/s390x"] = lock["images"][key]["platforms"][PLATFORM]
    lockdir = tmp_path / "lock"
    lockdir.mkdir()
    (lockdir / "images.lock.json").write_text(json.dumps(lock))
    evaldir = tmp_path / "eval"
    run = run_runner(
        released, evaldir, "-v", f"{lockdir}:/lock:ro", "-e", "EVAL_LOCK=/lock/images.lock.json",
        "-e", "EVAL_BENCHMARK=terminal-bench", "-e", "EVAL_AGENT=echo-agent",
        "-e", "EVAL_GATEWAY=mock-gateway", "-e", "EVAL_PLATFORM=linux/s390x",
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert "this machine cannot run linux/s390x; the image has linux/amd64, linux/s390x" in (
        run.stderr
    )
    assert "it runs linux/amd64" in run.stderr
    assert not list(evaldir.rglob("sha256/*"))  # nothing was pulled
    assert not (evaldir / "rootfs").exists()


def test_an_agent_past_its_time_limit_is_stopped(released: Released, tmp_path: Path) -> None:
    """An agent that would sleep for ten minutes, with EVAL_AGENT_TIMEOUT=1: killed, graded."""
    sleeper = tmp_path / "agent"
    sleeper.write_text("#!/bin/sh\necho started\nsleep 600\n")
    sleeper.chmod(0o755)
    entry = locked(released, "evals/terminal-bench--shell-agent")
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/output",
         "-v", f"{sleeper}:/opt/agent/bin/agent:ro", "-e", "EVAL_TASK=hello-world",
         "-e", "EVAL_AGENT_TIMEOUT=1", f"{entry['reference'].rsplit(':', 1)[0]}@{entry['digest']}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "task/result.json").read_text())
    assert result["agent_timed_out"] is True and result["resolved"] is False
    assert result["agent_exit"] == -9 and result["seconds"] < 30
    assert (out / "task/agent.log").read_text() == "started\n"
