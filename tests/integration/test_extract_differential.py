"""buildgen.crane.extract against umoci on random layer stacks, through a real registry.

Each example is 1-4 layers (tests/support/layergen.py): files, directories, symlinks (absolute,
relative, dangling, loops, climbing above the root), entries written through symlinks of
earlier layers and of their own layer, hardlinks (absolute targets, targets through a symlink,
to symlinks), whiteouts and opaque directories (through symlinks too), FIFOs, device nodes,
names longer than 100 and 255 bytes (and, rarely, than PATH_MAX), odd spellings (`..`, `//`,
absolute, naming the root), PAX records, GNU and ustar layers, setuid/setgid/sticky bits,
big uids/gids and user.* xattrs.

The stack is pushed to the `registry` fixture's registry, then unpacked twice: by buildgen
(pull_layers + apply_image, as crane mode does) and by `skopeo copy` + `umoci raw unpack`.
A model of the policy (layergen.Model, docs/crane-mode.md, "The extraction policy") says beforehand whether the policy
refuses the stack and why. Then either
- the policy applies it: buildgen must, and its rootfs must equal umoci's by path, type, mode,
  owner, content, link target, device numbers, user.* xattrs, mtime (of non-directories) and
  hardlink groups. Where umoci fails alone (a path longer than PATH_MAX: it works with whole
  paths) that is recorded as a hypothesis event, and buildgen's rootfs is compared with the
  model's instead;
- or the policy refuses it: buildgen must raise ExtractionError naming that layer and entry,
  for that reason (a missing hardlink target, a hardlink to a directory or the root, a parent
  that is not a directory, a symlink loop); whether umoci fails too is recorded.

Where umoci is known to differ from Docker (the policy's model), the strategy avoids the shape
or normalises it, each place saying "umoci differs from Docker here".

Examples: BUILDGEN_DIFF_EXAMPLES, else 500 in CI (CI=true) and 60 elsewhere.
BUILDGEN_DIFF_REDIRECT=0 generates no names through symlinks, absolute or with `..` (for an
extractor that refuses them).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from support.components import Registry
from support.hostile import pull_layers, push_image
from support.layergen import REFUSALS, Options, Snapshot, Stack, clean, snapshot, stacks

from buildgen.crane.blobcache import BlobCache
from buildgen.crane.extract import ExtractionError, apply_image
from buildgen.registry import RegistryClient, RegistryOptions

pytestmark = pytest.mark.registry

CI = os.environ.get("CI") == "true"
EXAMPLES = int(os.environ.get("BUILDGEN_DIFF_EXAMPLES") or (500 if CI else 60))
REDIRECT = os.environ.get("BUILDGEN_DIFF_REDIRECT", "1") != "0"


def _can(probe: str) -> bool:
    """Whether the temporary directory's file system (where the rootfs are) takes user.*
    xattrs ("xattr"), or this process may make device nodes ("mknod")."""
    with tempfile.TemporaryDirectory() as top:
        path = os.path.join(top, "probe")
        try:
            if probe == "xattr":
                Path(path).touch()
                os.setxattr(path, "user.probe", b"1")
            else:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except OSError:
            return False
    return True


OPTIONS = Options(redirect=REDIRECT, xattrs=_can("xattr"), devices=_can("mknod"))


class _Pushed:
    """A RegistryClient for push_image that takes a blob it uploaded once as there (no HEAD
    request for it, none for a new one either): pushes stay cheap."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.uploaded: set[tuple[str, str]] = set()

    def blob_exists(self, repository: str, digest: str) -> bool:
        return (repository, digest) in self.uploaded

    def upload_blob(self, repository: str, digest: str, data: bytes, size: int) -> None:
        self.client.upload_blob(repository, digest, data, size)
        self.uploaded.add((repository, digest))

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        return self.client.put_manifest(repository, tag, manifest, media_type)


@dataclass
class World:
    registry: Registry
    client: RegistryClient
    pusher: _Pushed
    cache: BlobCache
    layout: Path
    scratch: Path
    repository: str
    examples: int = 0

    def tag(self) -> str:
        self.examples += 1
        return f"x{self.examples}"


@pytest.fixture(scope="module")
def world(
    registry: Registry, oracles: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    top = tmp_path_factory.mktemp("differential")
    with RegistryClient(RegistryOptions(retries=1, backoff=0.01)) as client:
        yield World(
            registry,
            client,
            _Pushed(client),
            BlobCache(top / "cache"),
            top / "layout",
            top / "scratch",
            f"{registry.host}/differential/{uuid.uuid4().hex[:8]}",
        )


def umoci(world: World, tag: str, rootfs: Path) -> str | None:
    """skopeo copy + umoci raw unpack of `tag` into `rootfs`; None, or why it failed."""
    copy = subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false",
         f"docker://{world.repository}:{tag}", f"oci:{world.layout}:{tag}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert copy.returncode == 0, f"skopeo copy failed: {copy.stderr}"
    unpack = subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{world.layout}:{tag}", str(rootfs)],
        capture_output=True, encoding="utf-8", errors="replace", umask=0o022,
    )  # fmt: skip
    if unpack.returncode == 0:
        return None
    return unpack.stderr.strip().splitlines()[-1] if unpack.stderr.strip() else "failed"


def shorten(message: str) -> str:
    """`message` with runs of a character (the long names) written <254 x 'd'>."""
    return re.sub(r"(.)\1{15,}", lambda m: f"<{len(m.group(0))} x {m.group(1)!r}>", message)


def why(error: str) -> str:
    """umoci's error without the paths (a category for the statistics)."""
    for known in ("file name too long", "no such file or directory", "not a directory",
                  "too many levels of symbolic links", "malicious tar entry", "operation not "
                  "permitted", "is a directory", "file exists"):  # fmt: skip
        if known in error:
            return known
    return re.sub(r"/\S+", "<path>", error)[-120:]


def differences(ours: Snapshot, theirs: Snapshot) -> list[str]:
    found = []
    for path in sorted(set(ours.nodes) | set(theirs.nodes)):
        mine, other = ours.nodes.get(path), theirs.nodes.get(path)
        if mine != other:
            found.append(f"{path}:\n      buildgen {mine}\n      other    {other}")
    if ours.hardlinks != theirs.hardlinks:
        found.append(
            f"hardlinks: buildgen {sorted(map(sorted, ours.hardlinks))}, "
            f"other {sorted(map(sorted, theirs.hardlinks))}"
        )
    return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stack=stacks(OPTIONS))
def test_buildgen_unpacks_as_umoci(world: World, stack: Stack) -> None:
    tag = world.tag()
    layers = [spec.layer() for spec in stack.layers]
    pusher = cast(RegistryClient, world.pusher)
    manifest = push_image(pusher, world.repository, tag, layers)
    umoci_tag = tag
    if stack.root_entries:
        # umoci differs from Docker here: it applies a directory entry naming the root to the
        # root and refuses any other type; Docker skips them (Docker decides): umoci gets the
        # layers without them.
        umoci_tag = f"{tag}-umoci"
        without = [spec.layer(drop_root_entries=True) for spec in stack.layers]
        push_image(pusher, world.repository, umoci_tag, without)
    ours_dir, theirs_dir = world.scratch / f"{tag}-buildgen", world.scratch / f"{tag}-umoci"
    try:
        refused: ExtractionError | None = None
        try:
            apply_image(
                ours_dir, pull_layers(world.client, world.cache, world.repository, manifest)
            )
        except ExtractionError as exc:
            refused = exc
        if stack.refusal is not None:
            layer_index, entry_index, reasons = stack.refusal
            entry = stack.layers[layer_index].entries[entry_index]
            expected = " or ".join(sorted(reasons))
            assert refused is not None, (
                f"the policy refuses entry {entry.name!r} of layer {layer_index} ({expected}); "
                "buildgen applied the stack"
            )
            assert re.search("|".join(REFUSALS[r] for r in reasons), refused.reason), (
                f"refused for another reason than {expected}: {refused}"
            )
            assert refused.layer == layers[layer_index].digest, str(refused)
            assert refused.entry is not None and clean(refused.entry) == clean(entry.name), (
                f"refused another entry than {entry.name!r}: {refused}"
            )
            their_error = umoci(world, umoci_tag, theirs_dir)  # recorded: may fail or not
            event(f"refused ({expected}); umoci {'fails too' if their_error else 'applies it'}")
            return

        assert refused is None, (
            f"buildgen refused a stack the policy applies: {shorten(str(refused))}"
        )
        assert stack.expected is not None
        their_error = umoci(world, umoci_tag, theirs_dir)
        if their_error is None:
            reference, other = snapshot(theirs_dir), "umoci"
            for path in stack.expected.umoci_differs:
                # umoci differs from Docker here: a directory it makes for an entry's parent
                # in a setgid directory keeps the setgid bit (containerd chmods it to 0755,
                # leaving it the parent's group only). Docker decides: the model's node.
                if reference.nodes.get(path, stack.expected.nodes[path]).kind == "dir":
                    reference.nodes[path] = stack.expected.nodes[path]
            event("applied; same rootfs as umoci")
        else:
            # Only umoci fails (a path longer than PATH_MAX): recorded, and buildgen's rootfs
            # is compared with the model's.
            note(f"umoci failed: {shorten(their_error)}")
            event(f"applied; umoci alone fails ({why(their_error)}): compared with the model")
            reference, other = stack.expected, "the model"
        found = differences(snapshot(ours_dir), reference)
        assert not found, f"buildgen and {other} differ:\n  " + "\n  ".join(found)
    finally:
        for rootfs in (ours_dir, theirs_dir):
            shutil.rmtree(rootfs, ignore_errors=True)
