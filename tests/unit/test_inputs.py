"""Build-inputs hashes and the catalog digest: .dockerignore semantics and what changes a hash
(and what does not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.catalogs import REPO, copy_repo_catalog, write_catalog

from buildgen.model.catalog import load_catalog
from buildgen.model.inputs import DockerIgnore
from buildgen.model.plan import make_plan


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/README.md", False),
        (["**/*.md"], "docs/deep/README.md", True),
        (["**/*.md"], "README.md", True),
        (["build"], "build/x/y", True),
        (["/build/"], "build/x", True),
        (["*", "!src/"], "src/a.py", False),
        (["*", "!src/"], "other.py", True),
        (["a?c"], "abc", True),
        (["[a-c]x"], "bx", True),
        (["[!a-c]x"], "bx", False),
        (["# comment", ""], "x", False),
        (["**/__pycache__"], "pkg/__pycache__/m.pyc", True),
    ],
)
def test_dockerignore(patterns: list[str], path: str, excluded: bool) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


def _copy_repo_catalog(tmp_path: Path) -> Path:
    return copy_repo_catalog(tmp_path)


def _hashes(catalog: Path) -> dict[str, str]:
    return {i.key: i.inputs for i in make_plan(load_catalog(catalog)).images}


def test_hash_is_stable_across_checkouts(tmp_path: Path) -> None:
    assert _hashes(_copy_repo_catalog(tmp_path)) == _hashes(REPO / "catalog.yaml")


def test_a_change_moves_exactly_the_images_built_from_it(tmp_path: Path) -> None:
    catalog = _copy_repo_catalog(tmp_path)
    before = _hashes(catalog)
    (tmp_path / "containers/agents/echo-agent/bin/agent").write_text("#!/bin/sh\necho changed\n")
    after = _hashes(catalog)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [
        "agents/echo-agent",
        "evals/swe-mini--echo-agent:astropy__astropy-12907",
        "evals/swe-mini--echo-agent:django__django-11099",
        "evals/swe-mini--echo-agent:sympy__sympy-20590",
        "evals/terminal-bench--echo-agent",
    ]


def test_ignored_files_and_mtimes_do_not_count(tmp_path: Path) -> None:
    catalog = _copy_repo_catalog(tmp_path)
    before = _hashes(catalog)
    (tmp_path / "buildgen" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "buildgen" / "__pycache__" / "x.pyc").write_bytes(b"junk")  # .dockerignore'd
    (tmp_path / "notes.txt").write_text("not in the runner's context")
    (tmp_path / "containers/agents/echo-agent/install.sh").touch()
    assert _hashes(catalog) == before


def test_exec_bit_counts(tmp_path: Path) -> None:
    catalog = _copy_repo_catalog(tmp_path)
    before = _hashes(catalog)
    (tmp_path / "containers/models/mock-gateway/opt/gateway/answers.json").chmod(0o755)
    after = _hashes(catalog)
    assert {k for k in before if before[k] != after[k]} == {
        "models/mock-gateway",
        "evals/terminal-bench--echo-agent",
        "evals/terminal-bench--shell-agent",
        "evals/swe-mini--echo-agent:astropy__astropy-12907",
        "evals/swe-mini--echo-agent:django__django-11099",
        "evals/swe-mini--echo-agent:sympy__sympy-20590",
        "evals/swe-mini--shell-agent:astropy__astropy-12907",
        "evals/swe-mini--shell-agent:django__django-11099",
        "evals/swe-mini--shell-agent:sympy__sympy-20590",
    }


# Every kind of value the catalog model holds (provides as strings and as mappings, inline and
# file task lists, combinations, labels at both levels).
DIGEST_CATALOG = """
# a comment
version: 1
registry: ghcr.io/acme/evals
platforms: [linux/amd64, linux/arm64]
labels: {org.example.team: evals}
core:
  crane-runner: {context: ., dockerfile: runner/Dockerfile, target: final}
benchmarks:
  tb: {context: tb, version: 1.0.0, args: {PYTHON: '3.11'}, description: Terminal tasks}
  swe: {context: swe, platforms: [linux/amd64], tasks: tasks.txt, cache_from: [type=gha]}
  inline: {context: tb, tasks: [t1, t2]}
agents:
  a1: {context: a1, version: 2.0.14}
  a2: {context: a2, provides: [/opt/a2, {path: /etc/a2, mode: '0700', uid: 1000, gid: 1000}]}
gateways:
  gw: {context: gw, labels: {tier: gateway}}
combinations:
  - {benchmark: tb, agents: ['*'], gateway: gw, version: 1.0.0}
  - {benchmark: swe, agents: [a1]}
"""


def test_catalog_digest_is_what_lockfiles_recorded(tmp_path: Path) -> None:
    """Lockfiles record the catalog digest: a new buildgen must give the same one."""
    dirs = ("runner", "tb", "swe", "a1", "a2", "gw")
    files = {"tasks.txt": "# ids\nt-1\nt-2\n"}
    catalog = load_catalog(write_catalog(tmp_path / "a", DIGEST_CATALOG, *dirs, files=files))
    assert catalog.digest == (
        "sha256:2c8c72bea68a22270164af2bb5605ce34764862cd0017eedb51abf94c19549bd"
    )
    # Comments, flow or block style and key order do not count.
    reordered = DIGEST_CATALOG.replace("# a comment\n", "").replace(
        "  a1: {context: a1, version: 2.0.14}", "  a1:\n    version: 2.0.14\n    context: a1"
    )
    again = load_catalog(write_catalog(tmp_path / "b", reordered, *dirs, files=files))
    assert again.digest == catalog.digest
