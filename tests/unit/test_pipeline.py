"""The eval pipeline in the catalog and the plan (its `pipeline` directory goes into every
combination image, and into the inputs hash), and which platforms a machine can run. The
pipeline running for real, in both modes: test_crane_runner.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.catalogs import write_catalog

from buildgen.cli import main
from buildgen.crane import machine
from buildgen.errors import UsageError
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan

CATALOG = """
version: 1
registry: r.example/evals
platforms: [linux/amd64]
benchmarks:
  tb: {context: tb}
agents:
  a1: {context: a1}
gateways:
  gw: {context: gw}
combinations:
  - {benchmark: tb, agents: ["*"], gateway: gw}
"""
DIRS = ("tb", "a1", "gw")


def combination(catalog: Path) -> dict[str, object]:
    plan = make_plan(load_catalog(catalog))
    return plan.all_images["evals/tb--a1"].to_json()


def test_a_missing_pipeline_directory_is_an_error_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_catalog(tmp_path, CATALOG + "pipeline: nowhere\n", *DIRS)
    assert main(["validate", "--catalog", str(path)]) == 2
    errors = [
        line for line in capsys.readouterr().err.splitlines() if re.match(r".*:\d+:\d+: ", line)
    ]
    assert errors == [f"{path}:12:11: pipeline directory 'nowhere' does not exist"]


def test_the_pipeline_goes_into_every_combination_and_its_inputs(tmp_path: Path) -> None:
    files = {"pipe/opt/eval/run": "#!/bin/sh\necho one\n"}
    path = write_catalog(tmp_path, CATALOG + "pipeline: pipe\n", *DIRS, files=files)
    image = combination(path)
    assert image["directories"] == {"pipeline": "pipe"}
    dockerfile = str(image["dockerfile_inline"])
    assert 'COPY --from=pipeline ["/opt/eval", "/opt/eval"]' in dockerfile
    assert 'COPY --from=skeleton --chmod=0755 --chown=0:0 ["/fusion/2/", "/opt/"]' in dockerfile
    assert 'ENTRYPOINT ["/opt/eval/run"]' in dockerfile
    assert (
        'EVAL_BENCHMARK="benchmarks/tb"' in dockerfile and 'EVAL_GATEWAY="models/gw"' in dockerfile
    )
    before = image["inputs"]
    (tmp_path / "pipe/opt/eval/run").write_text("#!/bin/sh\necho two\n")
    assert combination(path)["inputs"] != before  # a new pipeline: the combinations are rebuilt
    plan = make_plan(load_catalog(path))
    assert plan.all_images["agents/a1"].to_json()["directories"] == {}  # axis images: unchanged


def test_without_a_pipeline_the_combination_is_the_fusion_rule_alone(tmp_path: Path) -> None:
    image = combination(write_catalog(tmp_path, CATALOG, *DIRS))
    assert image["directories"] == {}
    assert "pipeline" not in str(image["dockerfile_inline"])
    assert "ENTRYPOINT" not in str(image["dockerfile_inline"])


def test_runnable_platforms_are_the_machines_and_binfmt_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "native_platform", lambda: "linux/amd64")
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64\n")
    (tmp_path / "qemu-s390x").write_text("disabled\ninterpreter /usr/bin/qemu-s390x\n")
    (tmp_path / "status").write_text("enabled\n")
    assert machine.runnable_platforms(tmp_path) == ["linux/amd64", "linux/arm64"]
    monkeypatch.setattr(machine, "BINFMT", tmp_path)
    machine.check_runnable("linux/arm64")
    with pytest.raises(UsageError) as refused:
        machine.check_runnable("linux/s390x", ["linux/amd64", "linux/s390x"])
    assert str(refused.value).startswith(
        "this machine cannot run linux/s390x; the image has linux/amd64, linux/s390x; it runs "
        "linux/amd64, linux/arm64"
    )


@pytest.mark.parametrize(
    ("machine_platform", "platform", "runs"),
    [
        ("linux/amd64", "linux/amd64/v2", True),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/amd64", "linux/386", True),
        ("linux/arm/v7", "linux/arm/v6", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/amd64", "linux/arm64", False),
        ("linux/386", "linux/amd64", False),
    ],
)
def test_a_machine_runs_variants_of_its_own_platform(
    machine_platform: str, platform: str, runs: bool
) -> None:
    assert machine._runs(machine_platform, platform) is runs
