"""Rendering: HCL escaping, the golden bake file of the repo catalog, and sharding."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.catalogs import REPO
from support.gencatalog import generate_catalog

from buildgen.build.bake import BakeOptions, prepare
from buildgen.build.render import PushMode, hcl_string, shard, staging_tag
from buildgen.model.catalog import load_catalog
from buildgen.model.naming import BAKE_TARGET_RE, Axis, bake_target
from buildgen.model.plan import make_plan

GOLDEN = Path(__file__).parent / "golden" / "repo-catalog.docker-bake.hcl"


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("${HOME}", '"$${HOME}"'),
        ("%{ if x }", '"%%{ if x }"'),
        ("two\nlines\r\t", r'"two\nlines\r\t"'),
        ("\x00\x1b\x7f", r'"\u0000\u001b\u007f"'),
        ("ünïcödé 😀", '"ünïcödé 😀"'),
    ],
)
def test_hcl_string(value: str, literal: str) -> None:
    assert hcl_string(value) == literal


def test_golden_bake_file(tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    bake = prepare(plan, BakeOptions(out=tmp_path))
    rendered = bake.files[0].read_text()
    if os.environ.get("BUILDGEN_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "set BUILDGEN_UPDATE_GOLDEN=1 to accept the change"


NAMES = st.from_regex(r"[a-z0-9]{1,3}([._-][a-z0-9]{1,3}){0,2}", fullmatch=True)
TASKS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)


@given(st.lists(st.tuples(st.sampled_from(list(Axis)), NAMES, st.none() | TASKS), max_size=30))
def test_bake_targets_are_valid_and_unique(images: list[tuple[Axis, str, str | None]]) -> None:
    targets: dict[str, tuple[Axis, str, str | None]] = {}
    for image in set(images):
        target = bake_target(*image)
        assert BAKE_TARGET_RE.fullmatch(target)
        assert targets.setdefault(target, image) == image, f"{image} and {targets[target]} collide"


@pytest.mark.parametrize("size", [1, 3, 7, 50, 500])
def test_shards_keep_dependencies_inside(tmp_path: Path, size: int) -> None:
    plan = make_plan(load_catalog(generate_catalog(tmp_path, 40, agents=3)))
    if size < 4:  # a combination needs itself plus three dependencies in one file
        with pytest.raises(ValueError, match="raise the shard size to at least 4"):
            shard(plan.images, plan.all_images, size)
        return
    files = shard(plan.images, plan.all_images, size)
    owned = [image.key for f in files for image in f.targets]
    assert sorted(owned) == sorted(image.key for image in plan.images)
    for f in files:
        assert f.size <= size
        present = {image.key for image in (*f.targets, *f.borrowed)}
        for image in (*f.targets, *f.borrowed):
            assert set(image.depends_on) <= present
        assert not {b.key for b in f.borrowed} & {t.key for t in f.targets}


def test_combinations_share_a_file_with_their_benchmark(tmp_path: Path) -> None:
    plan = make_plan(load_catalog(generate_catalog(tmp_path, 2000)))
    files = shard(plan.images, plan.all_images, 500)
    borrowed = sum(len(f.borrowed) for f in files)
    # Only the agent and the gateway (and a benchmark cut off at a file boundary) are borrowed.
    assert borrowed <= 3 * len(files)


def test_no_catalog_string_reaches_hcl_unescaped(tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"))
    text = prepare(plan, BakeOptions(out=tmp_path)).files[0].read_text()
    # Every value is a quoted literal: no template sequence survives outside an escape.
    assert not re.search(r"(?<!\$)\$\{", text)


def test_push_outputs(tmp_path: Path) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"), select=["agents/echo-agent"])
    image = plan.images[0]
    assert staging_tag(image) == f"build-{image.inputs[7:23]}-linux-amd64_linux-arm64"
    staged = (
        prepare(plan, BakeOptions(out=tmp_path / "s", push=PushMode.STAGING)).files[0].read_text()
    )
    assert f'tags = ["{image.repository}:{staging_tag(image)}"]' in staged
    assert 'output = ["type=image,push=true"]' in staged
    assert ":2.0.14" not in staged  # never a release tag: only publish writes those
    by_digest = (
        prepare(plan, BakeOptions(out=tmp_path / "d", push=PushMode.DIGEST)).files[0].read_text()
    )
    assert "tags =" not in by_digest
    assert (
        f'output = ["type=image,name={image.repository},push-by-digest=true,'
        'name-canonical=true,push=true"]'
    ) in by_digest
