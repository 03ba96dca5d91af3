"""End to end: two per-platform `bake --push` runs (as two native runners would), then one
`publish`, against a real registry (https: see components.py); checked with skopeo and
`docker buildx imagetools` (through a plain-http mirror: buildx speaks only http to loopback)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.catalogs import REPO
from support.components import Registry
from support.oci import inspect_raw
from support.registries import start_registry

from buildgen.build.results import load_results
from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan
from buildgen.registry import RegistryClient
from buildgen.release.publish import PublishOptions, SourceInfo, publish

pytestmark = pytest.mark.docker

PLATFORMS = ("linux/amd64", "linux/arm64")


def buildgen(registry: Registry, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True, text=True,
                          cwd=REPO, env=registry.env())  # fmt: skip


@pytest.fixture(scope="module")
def baked(
    base_image: str,
    docker_registry: Registry,
    oracles: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, list[Path]]:
    prefix = f"{docker_registry.host}/pub"
    results = []
    for platform in PLATFORMS:  # separate runs and build folders, as two runners would have
        out = tmp_path_factory.mktemp("runner")
        result = buildgen(docker_registry, "bake", "--push", "--platform", platform, "--registry", prefix,
                          "--out", str(out), "--", "--progress", "plain")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        results.append(out / f"results.{platform.replace('/', '-')}.json")
    return prefix, results


@pytest.fixture(scope="module")
def published(baked: tuple[str, list[Path]], docker_registry: Registry) -> str:
    prefix, results = baked
    lockfile = results[0].parent / "images.lock.json"
    result = buildgen(
        docker_registry,
        "publish",
        "--registry",
        prefix,
        "--lock",
        str(lockfile),
        "--from",
        *map(str, results),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16 published, 0 unchanged, 0 failed" in result.stderr
    return prefix


def test_bake_push_writes_no_release_tags(
    baked: tuple[str, list[Path]], docker_registry: Registry
) -> None:
    prefix, results = baked
    with RegistryClient(docker_registry.options()) as client:
        tags = client.list_tags(f"{prefix}/benchmarks/terminal-bench")
    assert tags and all(tag.startswith("build-") for tag in tags), tags
    per_platform = [json.loads(path.read_text()) for path in results]
    amd64, arm64 = (r["images"]["agents/echo-agent"]["platforms"] for r in per_platform)
    assert list(amd64) == ["linux/amd64"] and list(arm64) == ["linux/arm64"]
    assert "benchmarks/swe-mini:django__django-11099" not in per_platform[1]["images"]  # amd64 only


def test_merged_index_has_both_platforms_and_annotations(
    published: str, docker_registry: Registry, tmp_path: Path
) -> None:
    ref = f"{published}/agents/echo-agent:2.0.14"  # multi-platform (benchmarks are amd64 only)
    index = inspect_raw(ref)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    assert ("linux", "amd64") in platforms and ("linux", "arm64") in platforms
    assert platforms.count(("unknown", "unknown")) == 2  # buildx's attestations, carried along
    annotations = index["annotations"]
    assert annotations["org.opencontainers.image.version"] == "2.0.14"
    assert annotations["org.opencontainers.image.title"] == "agents/echo-agent"
    assert annotations["org.opencontainers.image.created"].endswith("Z")
    assert len(annotations.get("org.opencontainers.image.revision", "x" * 40)) == 40
    mirror = start_registry(tmp_path / "mirror", proxy_remote=docker_registry.url,
                            proxy_ca_file=docker_registry.ca_file)  # fmt: skip
    try:
        via_mirror = ref.replace(docker_registry.host, mirror.host, 1)
        imagetools = subprocess.run(["docker", "buildx", "imagetools", "inspect", "--raw",
                                     via_mirror], capture_output=True, text=True)  # fmt: skip
    finally:
        mirror.stop()
    assert imagetools.returncode == 0, imagetools.stderr
    assert json.loads(imagetools.stdout) == index


def test_lock_sizes_are_the_layers_skopeo_sees(
    baked: tuple[str, list[Path]], published: str
) -> None:
    # publish writes each platform's layer size into the index; the lock takes it from there
    lock = json.loads((baked[1][0].parent / "images.lock.json").read_text())
    entry = lock["images"]["agents/echo-agent"]
    assert sorted(entry["platforms"]) == list(PLATFORMS)
    for platform in PLATFORMS:
        repository = entry["reference"].rsplit(":", 1)[0]
        pinned = entry["platforms"][platform]
        manifest = inspect_raw(f"{repository}@{pinned['digest']}")
        assert pinned["size"] == sum(layer["size"] for layer in manifest["layers"]) > 0


def test_override_arch_gets_the_arm64_manifest(published: str, tmp_path: Path) -> None:
    ref = f"{published}/agents/echo-agent:2.0.14"
    index = inspect_raw(ref)
    arm64 = next(
        m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64"
    )
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "--override-arch", "arm64",
                    f"docker://{ref}", f"oci:{tmp_path}:x"], check=True)  # fmt: skip
    layout = json.loads((tmp_path / "index.json").read_text())
    assert layout["manifests"][0]["digest"] == arm64


def test_release_tags(published: str, docker_registry: Registry) -> None:
    with RegistryClient(docker_registry.options()) as client:
        bench = set(client.list_tags(f"{published}/benchmarks/terminal-bench"))
        tasks = set(client.list_tags(f"{published}/benchmarks/swe-mini"))
        evals = set(client.list_tags(f"{published}/evals/terminal-bench--echo-agent"))
    assert {"1.0.0", "1.0", "1", "latest"} <= bench
    assert {"astropy__astropy-12907", "django__django-11099", "sympy__sympy-20590"} <= tasks
    assert not {"latest", "1.2.0"} & tasks  # per-task images keep only their task ids
    assert "latest" in evals
    for tags in (bench, tasks, evals):
        assert any(t.startswith("inputs-") for t in tags)


def test_publish_again_pushes_nothing(
    published: str, baked: tuple[str, list[Path]], docker_registry: Registry
) -> None:
    plan = make_plan(load_catalog(REPO / "catalog.yaml"), registry=published)
    source = SourceInfo.from_git(REPO)
    with RegistryClient(docker_registry.options()) as client:
        first = {
            i.key: i
            for i in publish(plan, load_results(baked[1]), client, PublishOptions(), source)
        }
        writes = {k: n for k, n in client.stats.items() if k.startswith(("PUT", "POST", "PATCH"))}
    assert {o.key: o.message for o in first.values() if o.status != "unchanged"} == {}
    assert writes == {}
    assert first["benchmarks/terminal-bench"].digest == inspect_raw_digest(
        f"{published}/benchmarks/terminal-bench:1.0.0"
    )


def inspect_raw_digest(ref: str) -> str:
    result = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                            capture_output=True, check=True)  # fmt: skip
    return "sha256:" + hashlib.sha256(result.stdout).hexdigest()
