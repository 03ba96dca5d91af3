"""Publish at scale and under faults, against a real registry (synthetic per-platform images)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.components import Registry
from support.gencatalog import generate_catalog
from support.synth import push_synthetic

from buildgen.build.results import ImageResult, Results
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import Plan, make_plan
from buildgen.registry import RegistryClient, RegistryOptions
from buildgen.release.publish import Outcome, PublishOptions, SourceInfo, exit_code, publish

pytestmark = pytest.mark.registry
SOURCE = SourceInfo(
    revision="0" * 40, source="https://example.invalid/evals", created="2026-01-01T00:00:00Z"
)


def _plan(tmp_path: Path, tasks: int, prefix: str) -> Plan:
    catalog = generate_catalog(tmp_path / "catalog", tasks, combinations=False, agents=1,
                               task_platforms="[linux/amd64, linux/arm64]")  # fmt: skip
    plan = make_plan(load_catalog(catalog), registry=prefix, select=["benchmarks/*"])
    assert len(plan.images) == tasks
    return plan


def _verify(client: RegistryClient, outcomes: list[Outcome]) -> None:
    """Every tag of every published image names its index, whose children are all there."""
    for outcome in outcomes:
        for tag in outcome.tags:
            found = client.head_manifest(outcome.repository, tag)
            assert found is not None and found.digest == outcome.digest, (outcome.key, tag)
        index = client.get_manifest(outcome.repository, outcome.digest).json()
        assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
        for child in index["manifests"]:
            assert client.head_manifest(outcome.repository, child["digest"]) is not None


def test_500_images_16_workers_one_repository(registry: Registry, tmp_path: Path) -> None:
    plan = _plan(tmp_path, 500, f"{registry.host}/scale")
    with RegistryClient() as client:
        results = push_synthetic(client, plan)
        outcomes = publish(plan, [results], client, PublishOptions(jobs=16), SOURCE)
        assert [o.message for o in outcomes if o.status != "published"] == []
        assert exit_code(outcomes) == 0
        _verify(client, outcomes)
        assert len({o.repository for o in outcomes}) == 1


def _through(results: Results, upstream: str, proxy: str) -> Results:
    """The same results, naming the registry through the proxy."""
    moved = Results(
        results.registry.replace(upstream, proxy), results.catalog_digest, results.scope
    )
    for key, image in results.images.items():
        moved.images[key] = ImageResult(key, image.repository.replace(upstream, proxy), image.inputs,
                                        image.platforms)  # fmt: skip
    return moved


def test_faults_end_with_the_same_digests(registry: Registry, tmp_path: Path) -> None:
    from support.registries import FaultProxy

    clean_plan = _plan(tmp_path / "a", 60, f"{registry.host}/clean")
    with RegistryClient() as client:
        clean = publish(
            clean_plan, [push_synthetic(client, clean_plan)], client, PublishOptions(), SOURCE
        )
        faulty_direct = _plan(tmp_path / "b", 60, f"{registry.host}/faulty")
        results = push_synthetic(client, faulty_direct)
    assert exit_code(clean) == 0

    proxy = FaultProxy(registry.host, rate=0.1, seed=7, retry_after=0.2, latency=0.05)
    try:
        plan = make_plan(
            faulty_direct.catalog, registry=f"{proxy.host}/faulty", select=["benchmarks/*"]
        )
        options = RegistryOptions(backoff=0.05, max_backoff=0.5, retries=8)
        with RegistryClient(options) as client:
            outcomes = publish(plan, [_through(results, registry.host, proxy.host)], client,
                               PublishOptions(jobs=8), SOURCE)  # fmt: skip
            assert client.stats["retry"] > 0
        assert sum(proxy.stats.get(kind, 0) for kind in ("503", "429", "reset")) > 0
        assert exit_code(outcomes) == 0, [o.message for o in outcomes if o.error]
        assert [o.digest for o in outcomes] == [o.digest for o in clean]

        # Faults that outlast the retries: exit 3, no tag names a missing manifest, a rerun completes.
        retag = make_plan(
            faulty_direct.catalog, registry=f"{proxy.host}/again", select=["benchmarks/*"]
        )
        with RegistryClient() as direct:
            again = push_synthetic(direct, make_plan(faulty_direct.catalog, registry=f"{registry.host}/again",
                                                     select=["benchmarks/*"]))  # fmt: skip
        proxy.set_rate(0.6)
        few_retries = RegistryOptions(backoff=0.01, max_backoff=0.05, retries=1)
        with RegistryClient(few_retries) as client:
            failed = publish(retag, [_through(again, registry.host, proxy.host)], client,
                             PublishOptions(jobs=8), SOURCE)  # fmt: skip
        assert exit_code(failed) == 3
        assert any(o.status == "failed" for o in failed)
        with RegistryClient() as direct:
            for outcome in failed:
                repo = outcome.repository.replace(proxy.host, registry.host)
                for tag in direct.list_tags(repo):
                    found = direct.get_manifest(repo, tag).json()
                    for child in found.get("manifests", []):
                        assert direct.head_manifest(repo, child["digest"]) is not None
        proxy.set_rate(0.0)
        with RegistryClient() as client:
            rerun = publish(
                retag,
                [_through(again, registry.host, proxy.host)],
                client,
                PublishOptions(),
                SOURCE,
            )
            assert exit_code(rerun) == 0
            _verify(client, rerun)
        assert [o.digest for o in rerun] == [o.digest for o in clean]
    finally:
        proxy.stop()
