"""The lockfile's typed model (model/lockfile.py): what it reads it writes back byte for byte,
and a broken entry is bad input that names the entry and the field."""

from __future__ import annotations

import json

import pytest

from buildgen.errors import UsageError
from buildgen.model import lockfile
from buildgen.model.fusion import Provided

DIGEST = "sha256:" + "ab" * 32
ENTRY = {
    "reference": "r.example/evals/agents/a:1.0.0",
    "digest": DIGEST,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "platforms": {"linux/amd64": {"digest": DIGEST, "size": 12}},
    "inputs": None,
}


def _text(images: dict[str, object]) -> str:
    lock = {"lockVersion": 1, "catalogDigest": DIGEST, "registry": "r.example/evals"}
    return json.dumps({**lock, "images": images}, indent=2, sort_keys=True) + "\n"


def test_what_is_read_is_written_back_byte_for_byte() -> None:
    provides = [{"path": "/opt/agent", "mode": "0755", "uid": 0, "gid": 0}]
    text = _text({"agents/a": {**ENTRY, "provides": provides}, "benchmarks/b": ENTRY})
    lock = lockfile.parse(text, "x")
    assert lock.images["agents/a"].provides == (Provided("/opt/agent", 0o755),)
    assert lock.images["benchmarks/b"].platforms["linux/amd64"] == lockfile.PlatformPin(DIGEST, 12)
    assert lock.dumps() == text


def test_an_empty_lockfile_has_only_its_version() -> None:
    assert json.loads(lockfile.Lockfile().dumps()) == {"lockVersion": 1, "images": {}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"digest": 7}, "agents/a: a malformed lockfile entry (digest is not a string: 7)"),
        ({"platforms": None}, "agents/a: a malformed lockfile entry (no platforms)"),
        ({"platforms": {"linux/amd64": {"size": 1}}}, "(no 'digest')"),
        ({"platforms": {"linux/amd64": {"digest": DIGEST}}}, "(no 'size')"),
        ({"platforms": {"linux/amd64": {"digest": DIGEST, "size": -1}}}, "size is not a whole"),
        ({"platforms": {"linux/amd64": {"digest": DIGEST, "size": True}}}, "size is not a whole"),
        ({"reference": None}, "reference is not a string"),
        ({"provides": [{"path": "/opt/a", "uid": 0, "gid": 0}]}, "(no 'mode')"),
    ],
)  # fmt: skip
def test_a_broken_entry_is_named(change: dict[str, object], message: str) -> None:
    text = _text({"benchmarks/b": ENTRY, "agents/a": {**ENTRY, **change}})
    with pytest.raises(UsageError, match=r"^x: ") as caught:
        lockfile.parse(text, "x")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "no 'images'"),
        ('{"lockVersion": 2, "images": {}}', "lockVersion 2 is not 1"),
        ('{"lockVersion": 1, "registry": 5, "images": {}}', "registry is not a string"),
    ],
)
def test_a_file_that_is_no_lockfile_is_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        lockfile.parse(text, "x")
