"""buildgen.crane.overlay and materialize's choice between an overlay mount and a copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.components import require_overlay
from support.hostile import d, f, layer, write_blob
from support.trees import apply, hardlinks, tree

from buildgen.crane import materialize
from buildgen.crane.overlay import (
    OverlayError,
    OverlayUnavailable,
    overlay_mount,
    unmount,
    upper_of,
)
from buildgen.crane.unpacked import UnpackedCache


def image(tmp_path: Path) -> Path:
    apply(tmp_path, layer(d("tasks", 0o700), f("tasks/answer", "42", 0o600), f("bin", "x", 0o755)))
    return tmp_path / "rootfs"


def test_without_the_privilege_it_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = image(tmp_path)

    def refuse(tree: Path, rootfs: Path) -> Path:
        raise OverlayUnavailable("mount: Operation not permitted (errno 1)")

    monkeypatch.setattr(materialize, "overlay_mount", refuse)
    assert materialize._from_tree(source, tmp_path / "out", overlay=True) == "copy"
    assert not os.path.ismount(tmp_path / "out")
    assert tree(tmp_path / "out") == tree(source)
    assert hardlinks(tmp_path / "out") == hardlinks(source)


def test_paths_overlay_options_cannot_hold_are_not_mounted(tmp_path: Path) -> None:
    source = image(tmp_path)
    for name in ("a,b", "a:b", "a=b"):
        with pytest.raises(OverlayUnavailable, match="character"):
            overlay_mount(source, tmp_path / name)
        assert not (tmp_path / name).exists() and not upper_of(tmp_path / name).exists()


def test_a_leftover_upper_directory_is_not_reused(tmp_path: Path) -> None:
    source = image(tmp_path)
    upper_of(tmp_path / "out").mkdir()
    with pytest.raises(OverlayUnavailable, match="exists already"):
        overlay_mount(source, tmp_path / "out")


def test_unmount_refuses_what_is_not_mounted(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(OverlayError, match="not a mount point"):
        unmount(tmp_path / "plain")
    assert (tmp_path / "plain").is_dir()


def test_mount_write_unmount(tmp_path: Path) -> None:
    require_overlay(tmp_path)
    source = image(tmp_path)
    before = tree(source)
    merged = tmp_path / "merged"
    assert materialize._from_tree(source, merged, overlay=True) == "overlay"
    assert os.path.ismount(merged) and tree(merged) == before
    assert os.lstat(merged).st_mode == os.lstat(source).st_mode  # the root takes the tree's
    (merged / "tasks" / "answer").write_text("changed")
    (merged / "new").write_text("n")
    assert tree(source) == before  # the lower layer is never written through the mount
    assert (upper_of(merged) / "upper" / "new").read_text() == "n"
    unmount(merged)
    assert not merged.exists() and not upper_of(merged).exists()


def test_a_tree_under_an_overlay_is_not_evicted(tmp_path: Path) -> None:
    """The mount outlives the process that made it: eviction looks at the mounts."""
    require_overlay(tmp_path)
    layers = [layer(f(f"file{i}", str(i) * 1000)) for i in range(2)]
    images = [[(write_blob(tmp_path / "blobs", x.blob), x.media_type, x.diff_id)] for x in layers]
    cache = UnpackedCache(tmp_path / "unpacked", limit=1500)  # room for one
    first = cache.build([layers[0].diff_id], images[0])
    merged = tmp_path / "merged"
    assert materialize._from_tree(first, merged, overlay=True) == "overlay"
    try:
        cache.build([layers[1].diff_id], images[1])  # over the limit: the mounted one stays
        assert cache.get([layers[0].diff_id]) == first
        assert (merged / "file0").read_text() == "0" * 1000
    finally:
        unmount(merged)
