"""`buildgen validate`: exit 0 on a valid catalog; exit 2 with every error as PATH:LINE:COL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.catalogs import REPO, write_catalog

from buildgen.cli import main

HEADER = """
version: 1
registry: ghcr.io/acme/evals
platforms: [linux/amd64, linux/arm64]
"""
VALID_BODY = """
core:
  crane-runner: {context: ., dockerfile: runner/Dockerfile}
benchmarks:
  tb: {context: tb, version: 1.0.0}
  swe:
    context: swe
    platforms: [linux/amd64]
    tasks: tasks.txt
agents:
  a1: {context: a1, version: 2.0.14}
  a2: {context: a2}
gateways:
  gw: {context: gw, version: 1.74.0}
combinations:
  - {benchmark: tb, agents: ["*"], gateway: gw}
"""
DIRS = ("runner", "tb", "swe", "a1", "a2", "gw")
TASKS = {"tasks.txt": "# ids\ndjango__django-11099\nastropy__astropy-12907  # trailing comment\n\n"}


def run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["validate", "--catalog", str(path)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if re.match(r".*:\d+:\d+: ", line)]


def test_repo_catalog_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, errors = run(REPO / "catalog.yaml", capsys)
    assert (code, errors) == (0, [])


def test_valid_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_catalog(tmp_path, HEADER + VALID_BODY, *DIRS, files=TASKS)
    assert run(path, capsys) == (0, [])


# Every case is a whole catalog. H is the standard header: `version` on line 1, `registry` on
# line 2, `platforms` on line 3; B adds a benchmark, an agent and a gateway on lines 4-9.
H = HEADER.lstrip("\n")
B = (
    H
    + "benchmarks:\n  tb: {context: tb, version: 1.0.0}\nagents:\n  a1: {context: a1}\ngateways:\n  gw: {context: gw}\n"
)

CASES = [
    ("yaml syntax", H + "benchmarks:\n  tb: {context: tb\n", "6:1: YAML syntax error"),
    ("duplicate key", H + "agents:\n  a1: {context: a1}\n  a1: {context: a2}\n", "6:3: duplicate key 'a1' (first defined on line 5)"),
    ("duplicate top key", H + "registry: other.io/x\n", "4:1: duplicate key 'registry' (first defined on line 2)"),
    ("unknown key", H + "agents:\n  a1: {context: a1, verison: 1.0.0}\n", "5:21: unknown key 'verison'; did you mean 'version'?"),
    ("unknown top key", H + "benchmark: {}\n", "4:1: unknown key 'benchmark'; did you mean 'benchmarks'?"),
    ("wrong type", H + "agents:\n  a1: {context: [a1]}\n", "5:17: 'agents.a1.context' must be a string, not a list"),
    ("number arg", H + "agents:\n  a1: {context: a1, args: {PYTHON: 3.10}}\n", "5:36: 'agents.a1.args.PYTHON' must be a string, not a number (3.1) (quote it: \"3.10\")"),
    ("missing key", H + "agents:\n  a1: {version: 1.0.0}\n", "5:7: missing required key 'context'"),
    ("missing top key", "version: 1\nplatforms: [linux/amd64]\n", "1:1: missing required key 'registry'"),
    ("uppercase name", H + "agents:\n  Claude: {context: a1}\n", "5:3: agents: name 'Claude' must be lowercase"),
    ("double dash name", H + "agents:\n  claude--code: {context: a1}\n", "5:3: agents: name 'claude--code' contains '--'"),
    ("bad chars name", H + "gateways:\n  lite_llm!: {context: gw}\n", "5:3: gateways: name 'lite_llm!' is not a valid name"),
    ("invalid task id", H + "benchmarks:\n  b:\n    context: swe\n    tasks: [ok-1, -bad, 'sp ace']\n", "7:19: task id '-bad' is not a valid tag"),
    ("invalid task id in file", H + "benchmarks:\n  b: {context: swe, tasks: bad.txt}\n", "bad.txt:3:3: task id 'no/slash' is not a valid tag"),
    ("duplicate task id", H + "benchmarks:\n  b:\n    context: swe\n    tasks: [t1, t2, t1]\n", "7:21: duplicate task id 't1' (first listed on line 7)"),
    ("empty task list", H + "benchmarks:\n  b: {context: swe, tasks: []}\n", "5:28: benchmark 'b' is per-task but its task list is empty"),
    ("empty task file", H + "benchmarks:\n  b: {context: swe, tasks: empty.txt}\n", "5:28: benchmark 'b' is per-task but its task list is empty"),
    ("missing task file", H + "benchmarks:\n  b: {context: swe, tasks: nope.txt}\n", "5:28: task list 'nope.txt' does not exist"),
    ("missing context", H + "agents:\n  a1: {context: nowhere}\n", "5:17: context directory 'nowhere' does not exist"),
    ("context outside", H + "agents:\n  a1: {context: ../..}\n", "5:17: context directory '../..' is outside the catalog's directory"),
    ("missing dockerfile", H + "agents:\n  a1: {context: a1, dockerfile: a1/Nope}\n", "5:33: Dockerfile 'a1/Nope' does not exist"),
    ("context without dockerfile", H + "agents:\n  a1: {context: nodockerfile}\n", "5:17: Dockerfile 'nodockerfile/Dockerfile' does not exist"),
    ("bad platform", H + "agents:\n  a1: {context: a1, platforms: [linux-amd64]}\n", "5:33: platform 'linux-amd64' must be os/arch"),
    ("unknown arch", "version: 1\nregistry: r.io/x\nplatforms: [linux/x86_64]\n", "3:13: platform 'linux/x86_64': unknown architecture 'x86_64' (did you mean 'amd64'?)"),
    ("non-semver", H + "agents:\n  a1: {context: a1, version: '1.2'}\n", "5:30: version '1.2' is not a semantic version"),
    ("unquoted version", H + "agents:\n  a1: {context: a1, version: 1.10}\n", "5:30: 'agents.a1.version' must be a string, not a number (1.1) (quote it: \"1.10\")"),
    ("combination unknown benchmark", B + "combinations:\n  - {benchmark: tbb, agents: [a1], gateway: gw}\n", "11:17: unknown benchmark 'tbb'; did you mean 'tb'?"),
    ("combination unknown agent", B + "combinations:\n  - {benchmark: tb, agents: [a1, zz], gateway: gw}\n", "11:34: unknown agent 'zz'"),
    ("combination unknown gateway", B + "combinations:\n  - {benchmark: tb, agents: ['*'], gateway: nope}\n", "11:45: unknown gateway 'nope'"),
    ("combination glob matches nothing", B + "combinations:\n  - {benchmark: 'x*', agents: ['*']}\n", "11:17: pattern 'x*' matches no benchmark"),
    ("combination repeated pair", B + "combinations:\n  - {benchmark: tb, agents: [a1]}\n  - {benchmark: tb, agents: ['*']}\n", "12:5: combination tb--a1 is already made by combination rule 1"),
    ("platform not a string, with combinations", B.replace("a1: {context: a1}", "a1: {context: a1, platforms: [[linux/amd64]]}") + "combinations:\n  - {benchmark: tb, agents: [a1]}\n", "7:33: 'agents.a1.platforms' must be a string, not a list"),
    ("combination without common platform", B.replace("a1: {context: a1}", "a1: {context: a1, platforms: [linux/arm64]}").replace("tb: {context: tb, version: 1.0.0}", "tb: {context: tb, platforms: [linux/amd64]}") + "combinations:\n  - {benchmark: tb, agents: [a1]}\n", "11:5: combination tb--a1 has no platform that tb and a1 all have"),
    ("non-NFC text", H + 'agents:\n  a1: {context: a1, labels: {x: "e\\u0301"}}\n', "5:33: string is not in Unicode normalization form C"),
    ("catalog version", "version: 2\nregistry: r.io/x\nplatforms: [linux/amd64]\n", "1:10: unsupported catalog version 2"),
    ("bad registry", "version: 1\nregistry: Ghcr.io/Acme\nplatforms: [linux/amd64]\n", "2:11: registry prefix 'Ghcr.io/Acme' is not a valid image name prefix"),
    ("not a mapping", "- just\n- a list\n", "1:1: the catalog must be a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    files = {"empty.txt": "# nothing here\n", "bad.txt": "# ids\nok\n  no/slash\n"}
    path = write_catalog(tmp_path, text, *DIRS, files=files)
    (tmp_path / "nodockerfile").mkdir()
    code, errors = run(path, capsys)
    assert code == 2
    where, message = expected.split(": ", 1)
    prefix = f"{tmp_path / where}" if where.startswith("bad.txt") else f"{path}:{where}"
    assert any(line.startswith(prefix + ": ") and message in line for line in errors), (
        f"expected {prefix}: ...{message}... in:\n" + "\n".join(errors)
    )


def test_every_error_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = H + (
        "agents:\n"
        "  Bad: {context: a1}\n"  # line 5: name
        "  a1: {context: nowhere, version: x}\n"  # line 6: context, version
        "  a2: {context: a2, extra: 1}\n"  # line 7: unknown key
        "gateways:\n"
        "  gw: {context: gw, platforms: [linux/amd65]}\n"  # line 9: platform
    )
    path = write_catalog(tmp_path, text, *DIRS)
    code, errors = run(path, capsys)
    assert code == 2
    assert [line.split(": ")[0].removeprefix(str(path)) for line in errors] == [
        ":5:3", ":6:17", ":6:35", ":7:21", ":9:33",
    ]  # fmt: skip


def test_cli_prints_no_traceback(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, H + "agents: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "buildgen", "validate", "--catalog", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:")


def test_missing_catalog_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, errors = run(tmp_path / "absent.yaml", capsys)
    assert code == 2
    assert errors == [
        f"{tmp_path / 'absent.yaml'}:1:1: cannot read the catalog: No such file or directory"
    ]


def test_yaml_merge_keys_may_be_overridden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        H
        + "agents:\n  a1: &base {context: a1, version: 1.0.0}\n  a2:\n    <<: *base\n    version: 2.0.0\n"
    )
    path = write_catalog(tmp_path, text, *DIRS)
    assert run(path, capsys) == (0, [])
    from buildgen.model.catalog import load_catalog

    assert load_catalog(path).model.agents["a2"].version == "2.0.0"


def test_combination_rules_make_each_pair_once_in_order(tmp_path: Path) -> None:
    from buildgen.model.catalog import load_catalog

    text = H + (
        "benchmarks:\n  tb: {context: tb}\n  swe: {context: swe}\n"
        "agents:\n  a1: {context: a1}\n  a2: {context: a2}\n"
        "gateways:\n  gw: {context: gw}\n"
        "combinations:\n"
        "  - {benchmark: '*', agents: [a2, '*'], gateway: gw}\n"  # globs sorted, each agent once
    )
    catalog = load_catalog(write_catalog(tmp_path, text, *DIRS))
    made = [(p.index, p.benchmark, p.agent, p.rule.gateway) for p in catalog.pairings]
    assert made == [
        (0, "swe", "a2", "gw"), (0, "swe", "a1", "gw"), (0, "tb", "a2", "gw"), (0, "tb", "a1", "gw"),
    ]  # fmt: skip
