"""The crane runner for real: the core/crane-runner image, baked from the repo's catalog on a
Debian bookworm base with python3 that the test makes itself (debootstrap + docker import,
cached), runs in a container against the test registry (--network host) and gives the same
rootfs and record as `buildgen materialize` on the host, and as the combination image; from
`buildgen resolve --format env` variables and from a mounted lockfile (a per-task benchmark);
through a pull-through mirror with the origin stopped, running the agent's install.sh in the
rootfs. Its Python dependencies come from scripts/prepare-crane-runner (no network in the build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import Registry
from conftest import REPO, copy_repo_catalog, missing
from test_conformance import exported, image_tree
from test_mirror import Mirrored, start_mirrored
from trees import TreeEntry, tree

from buildgen.model.naming import bake_target_of_key

pytestmark = pytest.mark.docker

DEBIAN_IMAGE = "local/debian-py:bookworm"
# debootstrap takes ~35 s: its rootfs is kept as a tarball here, across test runs
CACHE_DIR = Path(os.environ.get("BUILDGEN_TEST_CACHE", "/var/cache/buildgen-test"))
RUNNER_KEY = "core/crane-runner"
PLATFORM = "linux/amd64"
DOCKER_RUN_TIMEOUT = 600


def buildgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)  # fmt: skip


# -- the base image: Debian bookworm (minbase) with python3 ---------------------------------


def debian_uri() -> str:
    """The archive URI of the system's Debian source (never a host name written here): the first
    deb822 stanza whose Suites hold a plain codename (not -security/-updates), else the first."""
    uris: list[tuple[bool, str]] = []
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    for stanza in sources.read_text().split("\n\n") if sources.is_file() else []:
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            key, _, value = line.partition(":")
            if value and not line.startswith((" ", "#")):
                fields[key.strip()] = value.split()
        if fields.get("URIs"):
            plain = any("-" not in suite for suite in fields.get("Suites", []))
            uris.append((plain, fields["URIs"][0]))
    legacy = Path("/etc/apt/sources.list")
    for line in legacy.read_text().splitlines() if legacy.is_file() else []:
        words = line.split()
        if words[:1] == ["deb"]:
            uris += [(False, w) for w in words[1:] if "://" in w][:1]
    if not uris:
        missing("no Debian archive URI in /etc/apt/sources.list.d/debian.sources")
    return next((u for plain, u in uris if plain), uris[0][1]).rstrip("/")


def _image_exists(reference: str) -> bool:
    result = subprocess.run(["docker", "image", "inspect", reference], capture_output=True)
    return result.returncode == 0


def _unmount_under(root: Path) -> None:
    """debootstrap mounts /proc and /sys in the target; never delete through a leftover mount."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _debootstrap_tarball(work: Path) -> Path:
    """The cached rootfs tarball, made with debootstrap when it is not there yet."""
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        cache = CACHE_DIR
    except OSError:
        cache = work  # not root: this session only
    tarball = cache / "debian-py-bookworm.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        missing("debootstrap is not installed (apt-get install debootstrap)")
    root = work / "root"
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root),
             debian_uri()],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"debootstrap failed:\n{(result.stdout + result.stderr)[-3000:]}"
        )
        _unmount_under(root)
        partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.tmp")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial),
             "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*", "."],
            check=True,
        )  # fmt: skip
        os.replace(partial, tarball)
    finally:
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
    return tarball


@pytest.fixture(scope="session")
def debian_py(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """local/debian-py:bookworm: kept when the image store has it, else imported from the
    cached tarball, else debootstrapped (~35 s) first."""
    if not _image_exists(DEBIAN_IMAGE):
        tarball = _debootstrap_tarball(tmp_path_factory.mktemp("debootstrap"))
        with tarball.open("rb") as handle:
            result = subprocess.run(["docker", "import", "-", DEBIAN_IMAGE], stdin=handle,
                                    capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
    check = subprocess.run(["docker", "run", "--rm", "--network", "none", DEBIAN_IMAGE,
                            "python3", "-c", "import sys; print(sys.version_info[:2] >= (3, 10))"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.stdout.strip() == "True", check.stderr
    return DEBIAN_IMAGE


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
    debian_py: str, docker_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Released:
    prepare_vendor()
    prefix, trust = f"{docker_registry.host}/crane-runner-test", docker_registry.env()
    out = tmp_path_factory.mktemp("bake")
    # The runner alone (one target, so `--set` names a target of every bake file), on the
    # Debian base; then everything else with the catalog's own arguments.
    base = f"{bake_target_of_key(RUNNER_KEY)}.args.BASE_IMAGE={debian_py}"
    core = buildgen("bake", "--push", "--registry", prefix, "--select", "core/*",
                    "--out", str(out / "core"), "--", "--set", base, env=trust)  # fmt: skip
    assert core.returncode == 0, core.stderr[-4000:]
    rest = buildgen("bake", "--push", "--registry", prefix, "--select", "benchmarks/*",
                    "--select", "agents/*", "--select", "models/*", "--select", "evals/*",
                    "--out", str(out / "rest"), env=trust)  # fmt: skip
    assert rest.returncode == 0, rest.stderr[-4000:]
    lock = out / "images.lock.json"
    publish = buildgen("publish", "--registry", prefix, "--lock", str(lock), "--from",
                       str(out / "core/results.all.json"), str(out / "rest/results.all.json"),
                       env=trust)  # fmt: skip
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
                      str(rootfs.with_suffix(".cache")), "--record", str(record), *args,
                      env={**clean, **env})  # fmt: skip
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
    # the demo benchmark is FROM scratch: nothing to run install.sh with
    assert "no working /bin/sh: skipping /opt/agent/install.sh" in run.stderr

    host_record = host_materialize(released, env, tmp_path / "host")
    crane = tree(evaldir / "rootfs")
    assert crane == tree(tmp_path / "host")
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
    if "/etc" not in crane:  # the runtime made /etc for its own files; the image has none
        container.pop("/etc")
    assert crane == container
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
    assert crane == tree(tmp_path / "host")
    record = json.loads((evaldir / "record.json").read_text())
    assert record == host_record
    assert record["images"]["benchmark"]["key"] == f"benchmarks/swe-mini:{task}"
    assert task in (evaldir / "fused/tasks/task.json").read_text()

    container = image_tree(
        exported(f"{released.prefix}/evals/swe-mini--shell-agent:{task}", tmp_path / "ctr")
    )
    if "/etc" not in crane:
        container.pop("/etc")
    assert crane == container


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
        first = run_runner(released, tmp_path / "first", "--env-file", str(env_file))
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

    crane = tree(tmp_path / "second/rootfs")
    assert crane == tree(tmp_path / "first/rootfs")
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


def test_bake_without_vendored_dependencies_fails_clearly(debian_py: str, tmp_path: Path) -> None:
    catalog = copy_repo_catalog(tmp_path / "repo")
    shutil.rmtree(tmp_path / "repo/containers/core/crane-runner/vendor", ignore_errors=True)
    base = f"{bake_target_of_key(RUNNER_KEY)}.args.BASE_IMAGE={debian_py}"
    result = buildgen("bake", "--catalog", str(catalog), "--select", "core/*", "--out",
                      str(tmp_path / "out"), "--", "--set", base, "--progress", "plain")  # fmt: skip
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
