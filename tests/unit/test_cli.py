"""The CLI contract: verbs, flags, exit codes, stdout for data and stderr for people."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.catalogs import REPO

from buildgen.cli import main


def buildgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buildgen", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


def test_help_lists_the_verbs() -> None:
    result = buildgen("--help")
    assert result.returncode == 0
    for verb in ("validate", "plan", "bake", "schema"):
        assert f"\n    {verb}" in result.stdout


@pytest.mark.parametrize("verb", ["validate", "plan", "bake", "schema"])
def test_every_verb_has_help(verb: str) -> None:
    result = buildgen(verb, "--help")
    assert result.returncode == 0
    assert "--catalog" in result.stdout


def test_unknown_flag_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_plan_json_is_deterministic_and_complete() -> None:
    first, second = buildgen("plan", "--json"), buildgen("plan", "--json")
    assert first.returncode == 0
    assert first.stdout == second.stdout
    records = json.loads(first.stdout)
    keys = [r["key"] for r in records]
    assert keys[0] == "core/crane-runner"
    assert "benchmarks/swe-mini:django__django-11099" in keys
    assert len(keys) == len(set(keys)) == 16
    for field in (
        "key",
        "target",
        "tags",
        "platforms",
        "context",
        "dockerfile",
        "args",
        "depends_on",
    ):
        assert all(field in r for r in records), field
    task = next(r for r in records if r["key"] == "benchmarks/swe-mini:django__django-11099")
    assert task["tags"] == ["ghcr.io/acme/evals/benchmarks/swe-mini:django__django-11099"]
    assert task["args"] == {
        "BASE_IMAGE": "local/crane-base:latest",
        "TASK_ID": "django__django-11099",
    }
    assert task["platforms"] == ["linux/amd64"]
    combo = next(r for r in records if r["key"] == "evals/terminal-bench--echo-agent")
    assert combo["depends_on"] == [
        "benchmarks/terminal-bench",
        "agents/echo-agent",
        "models/mock-gateway",
    ]


def test_registry_override_and_select() -> None:
    result = buildgen("plan", "--json", "--registry", "127.0.0.1:5000/x", "--select", "agents/*")
    records = json.loads(result.stdout)
    assert [r["key"] for r in records] == ["agents/echo-agent", "agents/shell-agent"]
    assert records[0]["tags"] == ["127.0.0.1:5000/x/agents/echo-agent:2.0.14"]


def test_select_matching_nothing_warns() -> None:
    result = buildgen("plan", "--select", "benchmarks/swe-mini:django__*", "--select", "nope/*")
    assert result.returncode == 0
    assert "--select 'nope/*' selects no image" in result.stderr
    assert "benchmarks/swe-mini:django__django-11099" in result.stdout
    assert "astropy" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "--registry", "UPPER/case"], "--registry: registry prefix 'UPPER/case'"),
        (["bake", "--dry-run", "--platform", "linux/x86_64"], "did you mean 'amd64'"),
        (["bake", "--dry-run", "--shard-size", "0"], "--jobs must be at least 1"),
        (["plan", "--", "--print"], "only for 'bake'"),
        (["lock", "--jobs", "0"], "--jobs: not a positive whole number: '0'"),
        (["publish", "--jobs", "x", "--from", "r.json"], "--jobs: not a positive whole number"),
        (["materialize", "--rootfs", "r", "--unpacked-limit", "lots"], "not a size: 'lots'"),
    ],
)
def test_bad_input_is_exit_2(args: list[str], message: str) -> None:
    result = buildgen(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "size"), [("0", 0), ("500M", 500 * 10**6), ("20G", 20 * 10**9), ("3gb", 3 * 10**9)]
)
def test_byte_sizes(text: str, size: int) -> None:
    from buildgen.cli.materialize import byte_size

    assert byte_size(text) == size


def test_dry_run_needs_no_docker(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no docker on PATH
    out = tmp_path / "out"
    result = buildgen("bake", "--dry-run", "--out", str(out), "--shard-size", "6", "--",
                      "--progress", "plain", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cd {REPO}"
    files = sorted(out.glob("docker-bake.*.hcl"))
    assert len(files) > 1
    assert lines[1:] == [f"docker buildx bake -f {f} --progress plain" for f in files]
    assert json.loads((out / "plan.json").read_text())[0]["key"] == "core/crane-runner"


def test_build_settings_after_the_separator_are_warned_about(tmp_path: Path) -> None:
    """They change what is built but not the inputs hash: a warning says what that means."""
    changing = buildgen("bake", "--dry-run", "--out", str(tmp_path), "--", "--progress", "plain",
                        "--set", "*.args.PYTHON=3.12", "--file=extra.hcl")  # fmt: skip
    assert changing.returncode == 0, changing.stderr
    assert "--set *.args.PYTHON=3.12, --file extra.hcl after `--`" in changing.stderr
    assert "--rebuild" in changing.stderr
    harmless = buildgen("bake", "--dry-run", "--out", str(tmp_path), "--", "--set",
                        "*.cache-from=type=local,src=/tmp/c", "--progress", "plain")  # fmt: skip
    assert harmless.returncode == 0, harmless.stderr
    assert "inputs hash" not in harmless.stderr


def test_rerender_replaces_the_whole_set(tmp_path: Path) -> None:
    assert (
        buildgen("bake", "--dry-run", "--out", str(tmp_path), "--shard-size", "4").returncode == 0
    )
    assert len(list(tmp_path.glob("docker-bake.*.hcl"))) > 1
    assert buildgen("bake", "--dry-run", "--out", str(tmp_path)).returncode == 0
    assert [p.name for p in tmp_path.glob("docker-bake.*.hcl")] == ["docker-bake.001.hcl"]
    assert not list(tmp_path.glob(".bake-*"))


def test_bake_without_docker_is_exit_3(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    result = buildgen("bake", "--out", str(tmp_path), env=env)
    assert result.returncode == 3
    assert "docker is not installed" in result.stderr


def test_invalid_catalog_is_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text("version: 1\nregistry: [x]\n")
    result = buildgen("bake", "--dry-run", "--catalog", str(tmp_path / "catalog.yaml"))
    assert result.returncode == 2
    assert (
        f"{tmp_path / 'catalog.yaml'}:2:11: 'registry' must be a string, not a list"
        in result.stderr
    )
    assert "missing required key 'platforms'" in result.stderr
    assert "Traceback" not in result.stderr


IMPORTED_AFTER = """\
import contextlib, io, sys
from buildgen.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(" ".join(sorted(sys.modules)))
"""


def imported_after(*args: str) -> set[str]:
    """The modules `buildgen ARGS` imports (run in a fresh interpreter)."""
    result = subprocess.run([sys.executable, "-c", IMPORTED_AFTER, *args], capture_output=True,
                            text=True, cwd=REPO, check=True)  # fmt: skip
    return set(result.stdout.split())


def test_resolve_imports_no_catalog_pydantic_jinja2_or_yaml(tmp_path: Path) -> None:
    """The crane runner runs it before every eval: it reads the lockfile alone."""
    lock = tmp_path / "images.lock.json"
    lock.write_text(json.dumps({"lockVersion": 1, "registry": "r.io/x", "images": {}}))
    modules = imported_after("resolve", "--lock", str(lock), "--benchmark", "b", "--agent", "a",
                             "--platform", "linux/amd64")  # fmt: skip
    assert "buildgen.cli.resolve" in modules and "buildgen.crane.resolve" in modules
    heavy = {"jinja2", "pydantic", "yaml", "buildgen.model.catalog", "buildgen.model.plan"}
    assert not heavy & modules


def test_help_imports_no_verb() -> None:
    modules = imported_after("--help")
    assert not {m for m in modules if m.startswith("buildgen.cli.") and m != "buildgen.cli.common"}


def test_buildx_output_passes_through_at_every_verbosity(tmp_path: Path) -> None:
    """It is buildx's own, not buildgen's messages: -q hides buildgen's, not buildx's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\necho "fake buildx: $3 $4"\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}"}
    out = tmp_path / "out"
    quiet = buildgen("bake", "-q", "--select", "agents/*", "--out", str(out), env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == f"fake buildx: -f {out / 'docker-bake.001.hcl'}\n"
    normal = buildgen("bake", "--select", "agents/*", "--out", str(out), env=env)
    assert f"fake buildx: -f {out / 'docker-bake.001.hcl'}\n" in normal.stderr
    assert "docker buildx bake -f" in normal.stderr  # the command, logged by buildgen


def test_verbs_that_talk_to_no_registry_do_not_load_its_client() -> None:
    """httpx and the registry client are most of the start-up: validate, plan and schema go
    without them; a registry's error still exits 3 (the registry tests)."""
    code = (
        "import sys; from buildgen.cli import main\n"
        f"assert main(['validate', '--catalog', {str(REPO / 'catalog.yaml')!r}]) == 0\n"
        "assert main(['schema']) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('httpx', 'buildgen.registry'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
