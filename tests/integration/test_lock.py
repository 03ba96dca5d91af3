"""The lockfile against a real registry: publish -> lock -> resolve, --check, --diff, no-op
byte-identical runs, one-entry updates, and resolve on a 50,000-entry lockfile."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.catalogs import REPO
from support.components import Registry
from support.synth import push_platform_image, push_synthetic

from buildgen.model.catalog import load_catalog
from buildgen.model.plan import make_plan
from buildgen.registry import OCI_INDEX, RegistryClient

pytestmark = pytest.mark.registry

CATALOG = """\
version: 1
registry: r.example/evals
platforms: [linux/amd64, linux/arm64]
core:
  crane-runner: {context: ctx, version: 0.1.0}
benchmarks:
  tb: {context: ctx, version: 1.0.0}
  swe: {context: ctx, version: 1.2.0, platforms: [linux/amd64], tasks: [t1, t2]}
agents:
  a: {context: ctx, version: 2.0.0}
gateways:
  g: {context: ctx, version: 1.0.0}
"""


def buildgen(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildgen", *args], capture_output=True,
                          text=True, cwd=cwd)  # fmt: skip


def _write_catalog(root: Path, text: str = CATALOG) -> Path:
    (root / "ctx").mkdir(parents=True, exist_ok=True)
    (root / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    (root / "catalog.yaml").write_text(text)
    return root / "catalog.yaml"


@pytest.fixture()
def published(registry: Registry, tmp_path: Path) -> tuple[Path, str]:
    """A catalog whose images are all published (so its lockfile is written), and its prefix."""
    catalog = _write_catalog(tmp_path)
    prefix = f"{registry.host}/{tmp_path.name.lower().replace('_', '-')}"
    plan = make_plan(load_catalog(catalog), registry=prefix)
    with RegistryClient() as client:
        push_synthetic(client, plan).write(tmp_path / "results.json")
    result = buildgen("publish", "--catalog", str(catalog), "--registry", prefix,
                      "--from", str(tmp_path / "results.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "images.lock.json").is_file()
    return catalog, prefix


def _lock(catalog: Path, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return buildgen("lock", "--catalog", str(catalog), "--registry", prefix, *args)


def test_lock_format_and_noop_is_byte_identical(published: tuple[Path, str]) -> None:
    catalog, prefix = published
    path = catalog.parent / "images.lock.json"
    before = path.read_bytes()
    data = json.loads(before)
    assert before.decode() == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["lockVersion"] == 1 and data["registry"] == prefix
    assert sorted(data["images"]) == [
        "agents/a", "benchmarks/swe:t1", "benchmarks/swe:t2", "benchmarks/tb",
        "core/crane-runner", "models/g",
    ]  # fmt: skip
    entry = data["images"]["benchmarks/tb"]
    assert set(entry) >= {"reference", "digest", "mediaType", "platforms", "inputs"}
    assert entry["reference"] == f"{prefix}/benchmarks/tb:1.0.0"
    assert sorted(entry["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert entry["platforms"]["linux/amd64"]["size"] == 1024  # the synthetic layer
    assert list(data["images"]["benchmarks/swe:t1"]["platforms"]) == ["linux/amd64"]

    mtime = path.stat().st_mtime_ns
    result = _lock(catalog, prefix)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime  # not even rewritten
    assert _lock(catalog, prefix, "--check").returncode == 0
    assert _lock(catalog, prefix, "--check", "--remote").returncode == 0

    fresh = catalog.parent / "fresh.lock.json"  # from nothing: every index read by tag
    result = _lock(catalog, prefix, "--lock", str(fresh))
    assert result.returncode == 0, result.stderr
    assert fresh.read_bytes() == before


def test_resolve_matches_skopeo(published: tuple[Path, str], oracles: None) -> None:
    catalog, prefix = published
    result = buildgen("resolve", "--catalog", str(catalog), "--benchmark", "swe", "--task", "t2",
                      "--agent", "a", "--gateway", "g", "--platform", "linux/amd64")  # fmt: skip
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["EVAL_PLATFORM"] == "linux/amd64"
    assert env["EVAL_BENCHMARK_KEY"] == "benchmarks/swe:t2"
    for role in ("BENCHMARK", "AGENT", "GATEWAY", "RUNNER"):
        reference = env[f"EVAL_{role}_IMAGE"]
        assert reference.startswith(f"{prefix}/") and "@sha256:" in reference
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                             capture_output=True, check=True).stdout  # fmt: skip
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == reference.split("@")[1]
        platform = next(
            m for m in json.loads(raw)["manifests"] if m["platform"]["architecture"] == "amd64"
        )
        assert platform["digest"] == env[f"EVAL_{role}_PLATFORM_DIGEST"]

    as_json = buildgen("resolve", "--catalog", str(catalog), "--benchmark", "tb", "--agent", "a",
                       "--platform", "linux/arm64", "--format", "json")  # fmt: skip
    images = json.loads(as_json.stdout)["images"]
    assert sorted(images) == ["agent", "benchmark", "runner"]
    assert images["benchmark"]["key"] == "benchmarks/tb"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "nope", "--agent", "a"], "no image benchmarks/nope in the lockfile; known: benchmarks/swe, benchmarks/tb"),
        (["--benchmark", "swe", "--agent", "a"], "benchmarks/swe has tasks: t1, t2"),
        (["--benchmark", "tb", "--agent", "zz"], "no image agents/zz"),
        (["--benchmark", "swe", "--task", "t1", "--agent", "a", "--platform", "linux/arm64"], "benchmarks/swe:t1 has no linux/arm64 image; it has linux/amd64"),
    ],
)  # fmt: skip
def test_resolve_errors_name_what_there_is(
    published: tuple[Path, str], args: list[str], message: str
) -> None:
    catalog, _ = published
    if "--platform" not in args:
        args = [*args, "--platform", "linux/amd64"]
    result = buildgen("resolve", "--catalog", str(catalog), *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (("  g: {context: ctx, version: 1.0.0}\n", "  g: {context: ctx, version: 1.0.0}\n  h: {context: ctx}\n"), "missing  models/h"),
        (("  a: {context: ctx, version: 2.0.0}\n", ""), "extra    agents/a"),
        (("tb: {context: ctx, version: 1.0.0}", "tb: {context: ctx, version: 1.1.0}"), "stale    benchmarks/tb: locked"),
        (("tasks: [t1, t2]", "tasks: [t1, t2, t3]"), "missing  benchmarks/swe:t3"),
        (("crane-runner: {context: ctx, version: 0.1.0}", "crane-runner: {context: ctx, version: 0.1.0, args: {X: y}}"), "stale    core/crane-runner: its build inputs changed"),
    ],
)  # fmt: skip
def test_check_catches(published: tuple[Path, str], change: tuple[str, str], finding: str) -> None:
    catalog, prefix = published
    text = catalog.read_text()
    assert change[0] in text
    catalog.write_text(text.replace(change[0], change[1]))
    result = _lock(catalog, prefix, "--check")
    assert result.returncode == 1
    assert finding in result.stdout, result.stdout


def test_one_mutated_image_changes_one_entry(published: tuple[Path, str]) -> None:
    catalog, prefix = published
    path = catalog.parent / "images.lock.json"
    before = json.loads(path.read_text())
    repository = f"{prefix}/agents/a"
    with RegistryClient() as client:  # someone re-pushes agents/a:2.0.0 with other content
        amd64 = push_platform_image(client, repository, "linux/amd64", "mutated")
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**amd64.manifest.to_json(), "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()  # fmt: skip
        client.put_manifest(repository, "2.0.0", index, OCI_INDEX)
    drift = _lock(catalog, prefix, "--check", "--remote")
    assert drift.returncode == 1 and "drift    agents/a" in drift.stdout
    assert _lock(catalog, prefix, "--select", "agents/*").returncode == 0
    after = json.loads(path.read_text())
    changed = [k for k in after["images"] if after["images"][k] != before["images"].get(k)]
    assert changed == ["agents/a"]
    assert list(after["images"]["agents/a"]["platforms"]) == ["linux/amd64"]
    # An index publish did not make has no size annotations: the lock reads the manifest.
    assert after["images"]["agents/a"]["platforms"]["linux/amd64"]["size"] == amd64.layers_size
    fresh = catalog.parent / "fresh-agents.lock.json"  # the same, read by tag from no entry
    assert _lock(catalog, prefix, "--select", "agents/*", "--lock", str(fresh)).returncode == 0
    assert json.loads(fresh.read_text())["images"] == {"agents/a": after["images"]["agents/a"]}

    diff = _lock(catalog, prefix, "--diff", str(_saved(before, catalog.parent / "old.json")))
    assert diff.returncode == 0
    assert "1 changed" in diff.stdout
    assert "| `agents/a` | changed |" in diff.stdout and "-linux/arm64" in diff.stdout


def _dumps(lock: object) -> str:
    """A lockfile's text as docs/lockfile.md specifies it (for hand-made, even broken, ones)."""
    return json.dumps(lock, indent=2, sort_keys=True) + "\n"


def _saved(data: dict[str, object], path: Path) -> Path:
    path.write_text(_dumps(data))
    return path


def test_diff_against_a_git_revision(published: tuple[Path, str]) -> None:
    catalog, prefix = published
    root = catalog.parent
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "catalog.yaml", "images.lock.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "lock"], check=True)
    data = json.loads((root / "images.lock.json").read_text())
    data["images"]["models/extra"] = data["images"].pop("models/g")
    (root / "images.lock.json").write_text(_dumps(data))
    diff = _lock(catalog, prefix, "--diff", "HEAD")
    assert diff.returncode == 0, diff.stderr
    assert "| `models/extra` | added |" in diff.stdout
    assert "| `models/g` | removed |" in diff.stdout
    assert "1 added, 1 removed" in diff.stdout


def test_resolve_on_50000_entries_under_a_second(tmp_path: Path) -> None:
    images = {}
    for i in range(50_000):
        digest = "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
        images[f"benchmarks/big:task-{i:05d}"] = {
            "reference": f"r.example/evals/benchmarks/big:task-{i:05d}", "digest": digest,
            "mediaType": OCI_INDEX, "inputs": digest,
            "platforms": {"linux/amd64": {"digest": digest, "size": 1000 + i}},
        }  # fmt: skip
    for key in ("agents/a", "core/crane-runner"):
        images[key] = {
            **images["benchmarks/big:task-00000"],
            "reference": f"r.example/evals/{key}:1.0.0",
        }
    (tmp_path / "images.lock.json").write_text(_dumps({"lockVersion": 1, "catalogDigest": "x",
                                                           "registry": "r.example/evals", "images": images}))  # fmt: skip
    start = time.perf_counter()
    result = buildgen("resolve", "--catalog", str(tmp_path / "catalog.yaml"), "--benchmark", "big",
                      "--task", "task-49999", "--agent", "a", "--platform", "linux/amd64")  # fmt: skip
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "EVAL_BENCHMARK_SIZE=50999" in result.stdout
    # The goal (under 1 s) is measured for the notes; a loaded CI machine must not fail on it.
    assert elapsed < 10.0, f"resolve took {elapsed:.2f} s on 50,000 entries"
    sys.stderr.write(f"resolve on 50,000 entries: {elapsed:.2f} s\n")


def test_no_lockfile_is_a_clear_error(tmp_path: Path) -> None:
    result = buildgen("resolve", "--catalog", str(tmp_path / "catalog.yaml"), "--benchmark", "b",
                      "--agent", "a", "--platform", "linux/amd64")  # fmt: skip
    assert result.returncode == 2
    assert "no lockfile" in result.stderr


def test_lockfile_satisfies_its_schema(published: tuple[Path, str]) -> None:
    import jsonschema

    catalog, _ = published
    schema = json.loads((REPO / "schema" / "lock.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads((catalog.parent / "images.lock.json").read_text()), schema)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"digest": "sha256:short"}, "not a sha256/sha512 digest: 'sha256:short'"),
        ({"reference": "r.example/evals/agents/a:bad tag"}, "not a tag or digest"),
        ({"reference": None}, "agents/a: a malformed lockfile entry"),
        ({"platforms": ["linux/amd64"]}, "agents/a: a malformed lockfile entry (no platforms)"),
        ({"platforms": {"linux/amd64": {"digest": 7}}}, "agents/a: a malformed lockfile entry"),
        ({"provides": [{"path": "/opt/agent"}]}, "no 'mode'"),
    ],
)  # fmt: skip
def test_resolve_refuses_a_malformed_entry_with_a_message(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    """A lockfile is input: a broken entry is exit 2 naming it, never a traceback."""
    digest = "sha256:" + "ab" * 32
    good = {"reference": "r.example/evals/x:1.0.0", "digest": digest, "mediaType": OCI_INDEX,
            "platforms": {"linux/amd64": {"digest": digest, "size": 1}}}  # fmt: skip
    images = {"benchmarks/b": good, "agents/a": {**good, **change}}
    (tmp_path / "images.lock.json").write_text(_dumps({"lockVersion": 1,
        "catalogDigest": "x", "registry": "r.example/evals", "images": images}))  # fmt: skip
    result = buildgen("resolve", "--catalog", str(tmp_path / "catalog.yaml"), "--benchmark", "b",
                      "--agent", "a", "--platform", "linux/amd64")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
