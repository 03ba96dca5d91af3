"""The rendered HCL, as real `docker buildx bake --print` resolves it, is exactly the plan."""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bakeprint import assert_files_match_plan, bake_print
from support.catalogs import REPO
from support.gencatalog import generate_catalog

from buildgen.build.bake import BakeOptions, prepare
from buildgen.build.render import PushMode
from buildgen.model.catalog import Agent, Catalog, CatalogModel, load_catalog
from buildgen.model.plan import make_plan

pytestmark = pytest.mark.buildx


def test_repo_catalog_resolves_to_the_plan(buildx: None, tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"), registry="127.0.0.1:5000/evals")
    bake = prepare(plan, BakeOptions(out=tmp_path, shard_size=500))
    assert len(bake.files) == 1
    assert assert_files_match_plan(bake.files, plan, bake.cwd) == 1


def test_repo_catalog_sharded_small(buildx: None, tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    bake = prepare(plan, BakeOptions(out=tmp_path, shard_size=4, push=PushMode.STAGING))
    assert len(bake.files) > 3
    assert assert_files_match_plan(bake.files, plan, bake.cwd, staging=True) == len(bake.files)


def test_push_by_digest_output_parses(buildx: None, tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    bake = prepare(plan, BakeOptions(out=tmp_path, push=PushMode.DIGEST))
    printed = bake_print(bake.files[0], bake.cwd)["target"]["agents--echo-agent"]
    assert printed["output"] == [
        "type=image,name=ghcr.io/acme/evals/agents/echo-agent,push-by-digest=true,"
        "name-canonical=true,push=true"
    ]
    assert "tags" not in printed


def test_generated_2000_task_catalog(buildx: None, tmp_path: Path) -> None:
    path = generate_catalog(tmp_path / "catalog", 2000)
    plan = make_plan(load_catalog(path))
    assert len(plan.images) == 2000 + 2 + 1 + 2000  # tasks, agents, gateway, combinations
    bake = prepare(plan, BakeOptions(out=tmp_path / "out"))
    assert all(len(f.read_text()) for f in bake.files)
    assert assert_files_match_plan(bake.files, plan, bake.cwd) == len(bake.files) == 9


def test_platform_filter(buildx: None, tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    bake = prepare(plan, BakeOptions(out=tmp_path, platform="linux/arm64"))
    printed = bake_print(bake.files[0], bake.cwd)
    built = printed["group"]["default"]["targets"]
    assert built and not any("swe-mini" in name or "crane-runner" in name for name in built)
    assert all(printed["target"][n]["platforms"] == ["linux/arm64"] for n in built)


# Strings a catalog may hold: anything but unpaired surrogates (YAML input cannot carry them)
# and text not in Unicode NFC (validation refuses it: HCL would normalize it).
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).filter(
    lambda s: unicodedata.is_normalized("NFC", s)
) | st.sampled_from(
    ["${x}", "$${x}", "%{if a}b%{endif}", '"}\ntarget "evil" {', "\\", "\\n", "${", "%{"]
)
ARG_NAME = st.text(
    alphabet=string.ascii_letters + string.digits + '_${}%"\\.-', min_size=1, max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    args=st.dictionaries(ARG_NAME, ANY_TEXT, max_size=4),
    labels=st.dictionaries(ANY_TEXT.filter(bool), ANY_TEXT, max_size=4),
    description=ANY_TEXT,
)
def test_catalog_strings_come_back_byte_identical(
    buildx: None, tmp_path: Path, args: dict[str, str], labels: dict[str, str], description: str
) -> None:
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "Dockerfile").write_text("FROM scratch\n")
    model = CatalogModel(
        version=1,
        registry="r.example/evals",
        platforms=["linux/amd64"],
        labels={"global": description},
        agents={"a": Agent(context="a", args=args, labels=labels, description=description or None)},
    )
    catalog = Catalog(path=tmp_path / "catalog.yaml", model=model, tasks={}, digest="sha256:0")
    plan = make_plan(catalog)
    bake = prepare(plan, BakeOptions(out=tmp_path / "out"))
    printed = bake_print(bake.files[0], tmp_path)
    assert list(printed["target"]) == ["agents--a"]
    assert printed["group"]["default"]["targets"] == ["agents--a"]
    target = printed["target"]["agents--a"]
    assert target.get("args", {}) == plan.images[0].args
    assert target.get("labels", {}) == plan.images[0].labels
