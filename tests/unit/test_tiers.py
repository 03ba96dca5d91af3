"""Per-task benchmarks in tiers (docs/catalog.md, "Tiers"): the task table, what the tiers expand
to, every mistake as FILE:LINE:COL (all at once), names, and inputs hashes that follow the
parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildgen.cli import main
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan

CATALOG = """\
version: 1
registry: r.example/evals
platforms: [linux/amd64, linux/arm64]
benchmarks:
  swe:
    tasks: tasks.tsv
    tiers:
      base: {context: base}
      env: {from: base, key: env, context: "env/{env}", args: {SETUP: "{env}"}}
    from: env
    context: task
    args: {REPO: "{repo}"}
"""
TABLE = "id\tenv\trepo\nt-1\tpy39\tdjango\nt-2\tpy39\tflask\nt-3\tpy311\tdjango\n"


def write(root: Path, catalog: str = CATALOG, table: str = TABLE, name: str = "tasks.tsv") -> Path:
    for directory in ("base", "env/py39", "env/py311", "task"):
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "Dockerfile").write_text(f"FROM scratch\nCOPY . /{directory}\n")
    (root / name).write_text(table)
    (root / "catalog.yaml").write_text(catalog)
    return root / "catalog.yaml"


def test_tiers_expand_to_one_image_per_key_used(tmp_path: Path) -> None:
    plan = make_plan(load_catalog(write(tmp_path)))
    images = {image.key: image for image in plan.images}
    assert list(images) == [
        "benchmarks/swe/base", "benchmarks/swe/env:py311", "benchmarks/swe/env:py39",
        "benchmarks/swe:t-1", "benchmarks/swe:t-2", "benchmarks/swe:t-3",
    ]  # fmt: skip
    env = images["benchmarks/swe/env:py39"]
    assert (env.repository, env.tag, env.tier) == (
        "r.example/evals/benchmarks/swe/env",
        "py39",
        "env",
    )
    assert env.target == "benchmarks--swe---env--py39"
    assert (env.context, env.args, env.contexts) == (
        "env/py39", {"SETUP": "py39"}, {"base": "benchmarks/swe/base"})  # fmt: skip
    task = images["benchmarks/swe:t-2"]
    assert task.contexts == {"env": "benchmarks/swe/env:py39"}
    assert task.args == {"REPO": "flask", "TASK_ID": "t-2"}
    assert task.tier is None and images["benchmarks/swe/base"].depends_on == ()


def test_a_jsonl_table_gives_the_same_plan(tmp_path: Path) -> None:
    tsv = make_plan(load_catalog(write(tmp_path / "tsv")))
    rows = [line.split("\t") for line in TABLE.splitlines()[1:]]
    jsonl = "".join(f'{{"id": "{i}", "env": "{e}", "repo": "{r}"}}\n' for i, e, r in rows)
    catalog = CATALOG.replace("tasks.tsv", "tasks.jsonl")
    other = make_plan(load_catalog(write(tmp_path / "jsonl", catalog, jsonl, "tasks.jsonl")))
    assert [(i.key, i.inputs) for i in tsv.images] == [(i.key, i.inputs) for i in other.images]


def test_a_parent_change_changes_exactly_what_is_built_on_it(tmp_path: Path) -> None:
    before = {i.key: i.inputs for i in make_plan(load_catalog(write(tmp_path))).images}
    (tmp_path / "env/py39/setup.sh").write_text("pip install x\n")
    after = {i.key: i.inputs for i in make_plan(load_catalog(tmp_path / "catalog.yaml")).images}
    changed = sorted(key for key in before if before[key] != after[key])
    assert changed == ["benchmarks/swe/env:py39", "benchmarks/swe:t-1", "benchmarks/swe:t-2"]
    (tmp_path / "base/more").write_text("x")
    again = {i.key: i.inputs for i in make_plan(load_catalog(tmp_path / "catalog.yaml")).images}
    assert all(again[key] != after[key] for key in after)


@pytest.mark.parametrize(
    ("catalog", "table", "expected"),
    [
        (CATALOG.replace("from: env\n", "from: envs\n"), TABLE,
         ["catalog.yaml:10:11: unknown tier 'envs' (known: base, env)"]),
        (CATALOG.replace("{context: base}", "{context: base, from: env}"), TABLE,
         ["catalog.yaml:8:35: the tiers build on each other in a cycle: env -> base -> env"]),
        (CATALOG.replace("key: env,", "key: python,"), TABLE,
         ["catalog.yaml:9:30: key 'python' is not a column of the task table"]),
        (CATALOG, TABLE.replace("t-3\tpy311", "t-3\t"),
         ["tasks.tsv:4:1: task 't-3' has no value for 'env', the key of tier 'env'"]),
        (CATALOG.replace("    from: env\n", "    from: base\n"), TABLE,
         ["catalog.yaml:9:7: tier 'env' is not used: no task is built on it"]),
        (CATALOG.replace('args: {REPO: "{repo}"}', 'args: {REPO: "{repository}"}'), TABLE,
         ["catalog.yaml:12:18: '{repository}' is not a substitution of the task table (it has: {env}, "
          "{id}, {repo}, {task})"]),
        (CATALOG.replace("    from: env\n", ""), TABLE,
         ["catalog.yaml:6:5: a benchmark with tiers needs `from`: the tier its tasks are built "
          "on"]),
        (CATALOG.replace("{context: base}", "{context: base, platforms: [linux/amd64]}"), TABLE,
         ["catalog.yaml:9:12: built for linux/arm64, which tier 'base' below it is not"]),
        (CATALOG, "id\tenv\trepo\nt-1\tpy39\n", ["tasks.tsv:2:1: 2 fields where the header has 3"]),
        (CATALOG, "task\tenv\nt-1\tpy39\n", ["tasks.tsv:1:1: the task table has no column 'id'",
          "tasks.tsv:1:1: a column may not be named 'task': {task} is the id"]),
        (CATALOG.replace("key: env,", "key: env, kye: 1,"), TABLE,
         ["catalog.yaml:9:35: unknown key 'kye'; did you mean 'key'?"]),
    ],
)  # fmt: skip
def test_every_mistake_is_reported_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], catalog: str, table: str,
    expected: list[str],
) -> None:  # fmt: skip
    path = write(tmp_path, catalog, table)
    assert main(["validate", "--catalog", str(path)]) == 2
    shown = [line.replace(f"{tmp_path}/", "") for line in capsys.readouterr().err.splitlines()]
    assert shown[:-1] == expected


def test_an_environment_on_two_bases_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = CATALOG.replace("{context: base}", "{context: base, key: os}")
    table = "id\tenv\trepo\tos\nt-1\tpy39\td\tdebian\nt-2\tpy39\tf\tubuntu\n"
    path = write(tmp_path, catalog, table)
    (tmp_path / "base").mkdir(exist_ok=True)
    assert main(["validate", "--catalog", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "tasks.tsv:3:1: tier image env:py39 would be built on both base:debian and base:ubuntu"
        in err
    )


def test_a_catalog_without_tiers_keeps_its_digest_and_hashes(tmp_path: Path) -> None:
    """Catalogs written before tiers: the same catalog digest and inputs (golden in
    test_inputs.py); here, that a list of tasks gets no substitution in its args."""
    catalog = CATALOG.split("    tiers:")[0] + '    context: task\n    args: {REPO: "{repo}"}\n'
    plan = make_plan(load_catalog(write(tmp_path, catalog.replace("tasks.tsv", "tasks.txt"),
                                        "t-1\n", "tasks.txt")))  # fmt: skip
    assert plan.images[0].args == {"REPO": "{repo}", "TASK_ID": "t-1"}


def test_resolve_reaches_no_tier_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tier images are pinned in the lockfile but are not axis images: no name resolves one."""
    args = ["resolve", "--catalog", str(write(tmp_path)), "--agent", "a", "--platform",
            "linux/amd64"]  # fmt: skip
    assert main([*args, "--benchmark", "swe/env", "--task", "py39"]) == 2
    assert "--benchmark: name 'swe/env' is not a valid name" in capsys.readouterr().err


def _problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], catalog: str, table: str
) -> list[str]:
    path = write(tmp_path, catalog, table)
    assert main(["validate", "--catalog", str(path)]) == 2
    return [line.replace(f"{tmp_path}/", "") for line in capsys.readouterr().err.splitlines()][:-1]


def test_a_bad_value_of_a_key_is_reported_on_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _problems(tmp_path, capsys, CATALOG, TABLE.replace("t-2\tpy39", "t-2\t.py39"))
    assert shown == ["tasks.tsv:3:1: the value of 'env', the key of tier 'env': tag '.py39' is "
                     "not a valid tag: use letters, digits, '_', '.' and '-', not starting with "
                     "'.' or '-'"]  # fmt: skip


def test_missing_tier_contexts_are_capped_like_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"t-{i}\tnone{i}\tr\n" for i in range(12))
    shown = _problems(tmp_path, capsys, CATALOG, f"id\tenv\trepo\n{rows}")
    assert len(shown) == 6 and shown[-1].endswith("... (further tasks not checked)"), shown


def test_without_from_the_tiers_are_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = CATALOG.replace("    from: env\n", "").replace("key: env,", "key: nope,")
    shown = _problems(tmp_path, capsys, catalog, TABLE)
    assert any("key 'nope' is not a column" in line for line in shown), shown
    assert any("needs `from`" in line for line in shown), shown


def test_a_keyed_tier_needs_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = CATALOG.replace("tasks: tasks.tsv", "tasks: [t-1]")
    assert _problems(tmp_path, capsys, catalog, TABLE) == [
        "catalog.yaml:6:12: tier 'env' has a key: the tasks must be a table (.tsv, .csv or "
        ".jsonl) with that column"]  # fmt: skip


def test_a_conflict_is_reported_once_per_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = CATALOG.replace("{context: base}", "{context: base, key: os}")
    rows = "".join(f"t-{i}\tpy39\td\t{'debian' if i == 0 else 'ubuntu'}\n" for i in range(5))
    shown = _problems(tmp_path, capsys, catalog, f"id\tenv\trepo\tos\n{rows}")
    assert len([line for line in shown if "would be built on both" in line]) == 1, shown


def test_a_header_without_rows_is_an_empty_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _problems(tmp_path, capsys, CATALOG, "id\tenv\trepo\n")
    assert not any("is not a column" in line for line in shown), shown
