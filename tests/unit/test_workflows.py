"""The example workflows under .github/workflows/: they parse, have the jobs the docs describe,
build every platform of the repo's catalog on a native runner, and every `buildgen` command in
their `run:` steps is a real verb with flags that verb accepts (checked against the argparse
parser, without running anything: no network, no Docker)."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.catalogs import REPO

from buildgen.cli import build_parser
from buildgen.errors import UsageError
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan

WORKFLOWS = REPO / ".github" / "workflows"
LOCK_CHECK = WORKFLOWS / "lock-check.yml"
RELEASE = WORKFLOWS / "release.yml"
NATIVE_RUNNERS = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")"}
REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "<&", ">|", "&>", "&>>"}


# -- reading workflows -----------------------------------------------------------------------


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    """`on:` (YAML 1.1 reads a bare `on` key as the boolean True)."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"no triggers: {on!r}"
    return on


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The steps of `job` that use `action` (any version)."""
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


@dataclass(frozen=True)
class Command:
    """One `buildgen ...` command found in a run: step."""

    where: str  # workflow file / job / step
    line: str  # the logical shell line it is on
    argv: tuple[str, ...]  # after "buildgen": verb, flags, values

    def __str__(self) -> str:
        return f"{self.where}: {self.line.strip()}"


def logical_lines(script: str) -> Iterator[str]:
    """The lines of a shell script with backslash-newline continuations joined."""
    yield from re.sub(r"\\\n[ \t]*", " ", script).splitlines()


def simple_commands(line: str) -> Iterator[list[str]]:
    """The words of each simple command on one shell line: split at |, &&, ;, ... and without
    redirections (`>> "$GITHUB_STEP_SUMMARY"`) or comments. `${{ expressions }}` count as one
    word."""
    line = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", line)
    line = re.sub(r"(?<![\w/.-])\d+(?=[<>])", "", line)  # 2>&1: the fd number is no argument
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    skip_target = False
    for token in lexer:
        if skip_target:
            skip_target = False
        elif token in SHELL_OPERATORS:
            yield words
            words = []
        elif token in REDIRECTS or re.fullmatch(r"\d+[<>]&?", token):
            skip_target = True
        elif not words and token in ("{", "}", "then", "do", "else", "if", "while", "!"):
            continue  # a group or compound command: what follows is the command
        else:
            words.append(token)
    yield words


def is_buildgen(words: list[str]) -> int | None:
    """Where buildgen's own arguments start in `words`, or None when it is another command:
    `buildgen ...`, `.venv/bin/buildgen ...`, `python -m buildgen ...`, after VAR=value words."""
    i = 0
    while i < len(words) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i]):
        i += 1
    if i < len(words) and words[i].rsplit("/", 1)[-1] == "buildgen":
        return i + 1
    if (
        i + 2 < len(words)
        and re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", words[i])
        and words[i + 1 : i + 3] == ["-m", "buildgen"]
    ):
        return i + 3
    return None


def buildgen_commands(path: Path) -> list[Command]:
    """Every buildgen command in every run: step of the workflow at `path`."""
    found = []
    for job_id, job in load(path)["jobs"].items():
        for number, step in enumerate(steps(job), start=1):
            script = step.get("run")
            if not script:
                continue
            where = f"{path.name} / {job_id} / {step.get('name') or f'step {number}'}"
            for line in logical_lines(str(script)):
                if "buildgen" not in line:
                    continue
                assert not re.search(r"(\$\(|`)\s*(\S*/)?buildgen\b", line), (
                    f"{where}: buildgen inside $(...) or `...` is not checked here: {line}"
                )
                for words in simple_commands(line):
                    start = is_buildgen(words)
                    if start is not None:
                        found.append(Command(where, line, tuple(words[start:])))
    return found


ALL_COMMANDS = [c for p in (LOCK_CHECK, RELEASE) for c in buildgen_commands(p)]


# -- checking a command against the CLI's parser ----------------------------------------------


def verbs() -> dict[str, argparse.ArgumentParser]:
    """buildgen's subcommand parsers by verb, as `buildgen.cli` builds them."""
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "buildgen's parser has no (or several) subcommand groups"
    return dict(actions[0].choices)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def problems(argv: tuple[str, ...]) -> list[str]:
    """What is wrong with `buildgen ARGV` as the CLI would parse it (nothing is run)."""
    if not argv:
        return ["no verb"]
    verb, *rest = argv
    known = verbs()
    if verb not in known:
        return [f"unknown verb {verb!r} (buildgen has {', '.join(sorted(known))})"]
    if "--" in rest:  # everything after -- goes to docker buildx bake (main_inner cuts it off)
        if verb != "bake":
            return ["arguments after '--' are only for bake"]
        rest = rest[: rest.index("--")]
    accepted = option_strings(known[verb])
    found = []
    for word in rest:
        if word.startswith("-") and word != "-":
            flag = word.split("=", 1)[0]
            if flag not in accepted:  # exact: argparse would also take an abbreviation
                found.append(f"`buildgen {verb}` has no flag {flag}")
    try:
        build_parser().parse_args([verb, *rest])  # values, required flags, exclusive groups
    except UsageError as exc:
        found.append(f"`buildgen {verb}` rejects it: {exc}")
    return found


def test_the_workflows_call_buildgen() -> None:
    called = {(c.where.split(" / ")[0], c.argv[0]) for c in ALL_COMMANDS if c.argv}
    for verb in ("validate", "lock"):
        assert ("lock-check.yml", verb) in called
    for verb in ("validate", "plan", "bake", "publish", "lock"):
        assert ("release.yml", verb) in called


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_every_buildgen_command_exists_with_its_flags(command: Command) -> None:
    assert problems(command.argv) == [], str(command)


def test_the_checker_rejects_unknown_verbs_and_flags() -> None:
    assert problems(("lock", "--check")) == []
    assert problems(("publish", "--from", "results/a.json", "results/b.json")) == []
    assert problems(("bake", "--push", "--", "--progress", "plain")) == []
    assert problems(("bake", "--platform=linux/arm64", "--push")) == []
    assert problems(("lokc", "--check"))[0].startswith("unknown verb 'lokc'")
    assert problems(())[0] == "no verb"
    assert any("no flag --chek" in p for p in problems(("lock", "--chek")))
    assert any("no flag --dif" in p for p in problems(("lock", "--dif", "HEAD")))  # abbreviation
    assert any("no flag --push" in p for p in problems(("publish", "--push", "--from", "x")))
    assert any("rejects" in p for p in problems(("publish",)))  # --from is required
    assert any("rejects" in p for p in problems(("lock", "--check", "--diff", "HEAD")))
    assert problems(("plan", "--", "--print")) == ["arguments after '--' are only for bake"]


def test_commands_are_found_in_multiline_runs() -> None:
    script = (
        "echo start  # buildgen is mentioned here only\n"
        'buildgen lock --diff "origin/${{ github.base_ref }}" >> "$GITHUB_STEP_SUMMARY"\n'
        "{\n  buildgen plan --json\n} > plan.json\n"
        "buildgen bake --push \\\n    --platform linux/amd64 && .venv/bin/buildgen validate\n"
        "FOO=1 python -m buildgen publish --from results/*.json 2>&1 | tee log\n"
        "echo 'buildgen nope --flag'\n"
    )
    found = [
        tuple(words[start:])
        for line in logical_lines(script)
        for words in simple_commands(line)
        if (start := is_buildgen(words)) is not None
    ]
    assert found == [
        ("lock", "--diff", "origin/GITHUB_EXPRESSION"),
        ("plan", "--json"),
        ("bake", "--push", "--platform", "linux/amd64"),
        ("validate",),
        ("publish", "--from", "results/*.json"),
    ]


# -- structure -------------------------------------------------------------------------------


def catalog_platforms() -> set[str]:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    return {p for image in plan.all_images.values() for p in image.platforms}


def test_lock_check_workflow() -> None:
    workflow = load(LOCK_CHECK)
    assert "pull_request" in triggers(workflow)
    assert workflow["permissions"]["contents"] == "read"
    commands = [c for c in ALL_COMMANDS if c.where.startswith(LOCK_CHECK.name)]
    argvs = [c.argv for c in commands]
    assert ("validate",) in argvs
    assert ("lock", "--check") in argvs
    diff = [c for c in commands if c.argv[:2] == ("lock", "--diff")]
    assert len(diff) == 1
    assert diff[0].argv[2].startswith("origin/")
    assert ">>" in diff[0].line
    assert "GITHUB_STEP_SUMMARY" in diff[0].line
    (job,) = workflow["jobs"].values()
    (checkout,) = uses(job, "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0, "--diff origin/<base> needs the base branch"
    for login in uses(job, "docker/login-action"):
        assert login["with"]["registry"] == "ghcr.io"


def test_release_workflow_jobs() -> None:
    workflow = load(RELEASE)
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    assert on["push"]["tags"]
    jobs = workflow["jobs"]
    assert set(jobs) >= {"plan", "build", "publish", "lock-pr"}
    assert jobs["build"]["needs"] == "plan"
    assert jobs["publish"]["needs"] == "build"
    assert jobs["lock-pr"]["needs"] == "publish"
    for job_id in ("build", "publish"):
        assert jobs[job_id]["permissions"]["packages"] == "write"
        (login,) = uses(jobs[job_id], "docker/login-action")
        assert login["with"]["registry"] == "ghcr.io"
    (upload,) = uses(jobs["build"], "actions/upload-artifact")
    assert upload["with"]["path"] == "build/bake/results.*.json"
    assert "${{ matrix." in upload["with"]["name"], "one artifact per matrix leg"
    (download,) = uses(jobs["publish"], "actions/download-artifact")
    artifacts = download["with"]["pattern"].rstrip("*")
    assert upload["with"]["name"].startswith(artifacts)
    assert download["with"]["merge-multiple"] is True
    results_dir = download["with"]["path"]
    (publish,) = [c for c in ALL_COMMANDS if c.argv[:1] == ("publish",)]
    assert publish.argv[publish.argv.index("--from") + 1] == f"{results_dir}/*.json"
    assert " / publish / " in publish.where
    (pr,) = uses(jobs["lock-pr"], "peter-evans/create-pull-request")
    assert "images.lock.json" in pr["with"]["add-paths"]
    assert pr["with"]["base"], "a tag checkout is a detached HEAD: the action needs `base`"
    assert jobs["lock-pr"]["permissions"] == {"contents": "write", "pull-requests": "write"}
    lock_pr = [c.argv for c in ALL_COMMANDS if " / lock-pr / " in c.where]
    assert any(argv[:2] == ("lock", "--diff") for argv in lock_pr)


def test_release_matrix_builds_every_catalog_platform_natively() -> None:
    workflow = load(RELEASE)
    build = workflow["jobs"]["build"]
    legs = build["strategy"]["matrix"]["include"]
    platforms = [leg["platform"] for leg in legs]
    assert sorted(platforms) == sorted(catalog_platforms())
    assert len(set(platforms)) == len(platforms)
    for leg in legs:
        assert leg["runner"] == NATIVE_RUNNERS[leg["platform"]], leg
    assert build["runs-on"] == "${{ matrix.runner }}"
    (bake,) = [c for c in ALL_COMMANDS if c.argv[:1] == ("bake",)]
    assert "--push" in bake.argv
    assert bake.argv[bake.argv.index("--platform") + 1] == "GITHUB_EXPRESSION"
    assert "${{ matrix.platform }}" in bake.line
    # The plan job's guard lists the same platforms as the matrix.
    guard = [s for s in steps(workflow["jobs"]["plan"]) if "MATRIX_PLATFORMS" in s.get("env", {})]
    assert len(guard) == 1
    assert sorted(guard[0]["env"]["MATRIX_PLATFORMS"].split()) == sorted(platforms)


@pytest.mark.parametrize("path", [LOCK_CHECK, RELEASE], ids=lambda p: p.name)
def test_no_registry_but_ghcr(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "--registry" not in text, "images go to the catalog's registry"
    hosts = set(re.findall(r"\b(?:[a-z0-9-]+\.)+(?:io|com|dev|net|org|cloud)\b", text))
    assert hosts <= {"ghcr.io"}, hosts
