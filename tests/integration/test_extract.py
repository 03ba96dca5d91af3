"""buildgen.crane.extract: applying OCI layers to a rootfs.

Unit tests build tar layers in Python (tests/support/hostile.py). The integration tests push images to
the real registry of the `registry` fixture and pull them back through BlobCache: the hostile
corpus must be refused with nothing outside the rootfs touched, and a benign 3-layer image must
unpack exactly as umoci (the independent oracle) unpacks it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.components import Registry
from support.hostile import (
    DIR,
    MTIME,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    Case,
    Entry,
    Layer,
    corpus,
    d,
    device,
    digest,
    f,
    gz,
    hard,
    layer,
    link_to,
    opaque,
    pull_layers,
    push_image,
    sym,
    tar_bytes,
    wh,
    write_blob,
)
from support.trees import TreeEntry, apply, hardlinks, snapshot, tree, user_xattrs_supported

from buildgen.crane.blobcache import BlobCache
from buildgen.crane.extract import (
    ExtractionError,
    ExtractPolicy,
    apply_image,
    apply_layer,
    blob_digest,
)
from buildgen.crane.layerstream import layer_compression
from buildgen.errors import ExternalToolError
from buildgen.registry import OCI_MANIFEST, RegistryClient, RegistryError, RegistryOptions

# -- helpers ---------------------------------------------------------------------------------


def file_entry(data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> TreeEntry:
    raw = data.encode() if isinstance(data, str) else data
    return TreeEntry("file", mode, uid, gid, "sha256:" + hashlib.sha256(raw).hexdigest())


def dir_entry(mode: int = 0o755, uid: int = 0, gid: int = 0) -> TreeEntry:
    return TreeEntry("dir", mode, uid, gid, "")


# -- owners, modes, types --------------------------------------------------------------------


def test_owners_and_modes_with_special_bits(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("bin"),
            # setuid/setgid on files owned by non-root: a chmod before the chown would lose them
            f("bin/su", "su", 0o4755, 1000, 1000),
            f("bin/wall", "wall", 0o2755, 0, 5),
            f("bin/both", "both", 0o6750, 1000, 50),
            d("tmp", 0o1777),
            d("shared", 0o3775, 0, 100),
            f("plain", "p", 0o640, 1001, 1002),
            f("nothing", "0", 0o000),
            d("home"),
            d("home/u", 0o750, 1000, 1000),
            f("home/u/.rc", "rc", 0o600, 1000, 1000),
            f("big-ids", "x", 0o644, 65534, 4_000_000),
        ),
    )
    assert tree(tmp_path / "rootfs") == {
        "/bin": dir_entry(),
        "/bin/su": file_entry("su", 0o4755, 1000, 1000),
        "/bin/wall": file_entry("wall", 0o2755, 0, 5),
        "/bin/both": file_entry("both", 0o6750, 1000, 50),
        "/tmp": dir_entry(0o1777),
        "/shared": dir_entry(0o3775, 0, 100),
        "/plain": file_entry("p", 0o640, 1001, 1002),
        "/nothing": file_entry("0", 0o000),
        "/home": dir_entry(),
        "/home/u": dir_entry(0o750, 1000, 1000),
        "/home/u/.rc": file_entry("rc", 0o600, 1000, 1000),
        "/big-ids": file_entry("x", 0o644, 65534, 4_000_000),
    }


def test_root_only_files_and_dirs_stay_root_only(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("tasks", 0o700),
            f("tasks/task-1.json", '{"answer": 42}', 0o600),
            d("tests", 0o700),
            d("tests/hidden", 0o700),
            f("tests/hidden/test_x.py", "assert 42", 0o600),
            d("opt"),
            d("opt/gateway", 0o700),
            f("opt/gateway/key", "sk-123", 0o600),
        ),
        # a later layer (another image) adds to a root-only directory without listing it
        layer(f("tasks/task-2.json", "{}", 0o600), f("opt/gateway/conf", "c", 0o600)),
    )
    t = tree(tmp_path / "rootfs")
    assert t["/tasks"] == dir_entry(0o700)
    assert t["/tasks/task-1.json"] == file_entry('{"answer": 42}', 0o600)
    assert t["/tasks/task-2.json"] == file_entry("{}", 0o600)
    assert t["/tests"] == t["/tests/hidden"] == t["/opt/gateway"] == dir_entry(0o700)
    assert t["/tests/hidden/test_x.py"].mode == t["/opt/gateway/key"].mode == 0o600


def test_read_only_directories_are_filled(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("ro", 0o500),
            f("ro/a", "a", 0o444),
            d("ro/sub", 0o500),
            f("ro/sub/b", "b", 0o400),
            d("none", 0o000),
            f("none/c", "c"),
        ),
        layer(f("ro/late", "l", 0o444)),  # filled again by a later layer
    )
    t = tree(tmp_path / "rootfs")
    assert t["/ro"] == t["/ro/sub"] == dir_entry(0o500)
    assert t["/none"] == dir_entry(0o000)
    assert {p for p in t if p.startswith(("/ro/", "/none/"))} == {
        "/ro/a",
        "/ro/sub",
        "/ro/sub/b",
        "/ro/late",
        "/none/c",
    }


def test_nothing_is_readable_by_others_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are created 0600 and chowned before their chmod; their directory is 0700 then."""
    events: list[tuple[str, int, int]] = []
    real_open, real_fchown, real_fchmod, real_mkdir = os.open, os.fchown, os.fchmod, os.mkdir

    def spy_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_CREAT:
            assert flags & os.O_EXCL and flags & os.O_NOFOLLOW
            assert dir_fd is not None
            events.append(("create", stat.S_IMODE(os.fstat(fd).st_mode), 0))
            events.append(("parent", stat.S_IMODE(os.fstat(dir_fd).st_mode), 0))
        return fd

    def spy_fchown(fd: int, uid: int, gid: int) -> None:
        events.append(("fchown", stat.S_IMODE(os.fstat(fd).st_mode), fd))
        real_fchown(fd, uid, gid)

    def spy_fchmod(fd: int, mode: int) -> None:
        events.append(("fchmod", mode, fd))
        real_fchmod(fd, mode)

    def spy_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        events.append(("mkdir", mode, 0))
        real_mkdir(path, mode, dir_fd=dir_fd)

    (tmp_path / "rootfs").mkdir()
    blob = write_blob(
        tmp_path / "blobs",
        layer(
            d("pub", 0o755),
            f("pub/readme", "r", 0o644),
            d("tasks", 0o700),
            f("tasks/answer", "42", 0o600),
            f("implicit/parent/file", "x", 0o4755, 1000),
        ).blob,
    )
    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fchown", spy_fchown)
    monkeypatch.setattr(os, "fchmod", spy_fchmod)
    monkeypatch.setattr(os, "mkdir", spy_mkdir)
    apply_layer(tmp_path / "rootfs", blob, "application/vnd.oci.image.layer.v1.tar+gzip")
    monkeypatch.undo()

    creates = [e for e in events if e[0] == "create"]
    assert len(creates) == 3 and all(mode == 0o600 for _, mode, _ in creates)
    assert all(mode == 0o700 for kind, mode, _ in events if kind in ("parent", "mkdir"))
    # every fchown of a file comes while it is still 0600, before its fchmod
    file_chowns = [e for e in events if e[0] == "fchown" and e[1] == 0o600]
    assert len(file_chowns) == 3
    for _, _, fd in file_chowns:
        kinds = [k for k, _, x in events if x == fd and k in ("fchown", "fchmod")]
        assert kinds.index("fchown") < kinds.index("fchmod")
    assert tree(tmp_path / "rootfs")["/implicit/parent/file"].mode == 0o4755


# -- links, FIFOs, xattrs, mtimes ------------------------------------------------------------


def test_symlinks_keep_targets_owners_and_mtimes(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("bin"),
            f("bin/busybox", "bb", 0o755),
            sym("bin/sh", "busybox"),
            sym("abs", "/etc/passwd", 1000, 1000, mtime=MTIME - 5),
            sym("dangling", "does/not/exist"),
            sym("up", "../../.."),
            sym("dirlink", "bin"),
            sym("weird", "a//b/./c/../"),
        ),
    )
    rootfs = tmp_path / "rootfs"
    t = tree(rootfs)
    assert t["/bin/sh"] == TreeEntry("symlink", 0o777, 0, 0, "busybox")
    assert t["/abs"] == TreeEntry("symlink", 0o777, 1000, 1000, "/etc/passwd")
    assert t["/dangling"].content == "does/not/exist"
    assert t["/up"].content == "../../.."
    assert t["/weird"].content == "a//b/./c/../"
    assert t["/dirlink"].kind == "symlink"
    assert os.lstat(rootfs / "abs").st_mtime_ns == (MTIME - 5) * 10**9


def test_hardlinks(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("bin"),
            f("bin/busybox", "bb", 0o755),
            hard("bin/ls", "bin/busybox", 0o755),
            hard("./bin/cat", "./bin/busybox", 0o755),
            sym("s", "/etc/passwd"),
            hard("s2", "s", 0o777),  # a hardlink to a symlink is that symlink, not its target
        ),
        layer(d("usr"), hard("usr/busybox", "bin/busybox", 0o755)),  # to a lower-layer file
    )
    rootfs = tmp_path / "rootfs"
    assert hardlinks(rootfs) == {
        frozenset({"/bin/busybox", "/bin/ls", "/bin/cat", "/usr/busybox"}),
        frozenset({"/s", "/s2"}),
    }
    assert tree(rootfs)["/s2"] == TreeEntry("symlink", 0o777, 0, 0, "/etc/passwd")
    assert os.lstat(rootfs / "bin/ls").st_nlink == 4


def test_fifos(tmp_path: Path) -> None:
    stats = apply(tmp_path, layer(d("run"), Entry("run/pipe", "fifo", mode=0o620, uid=1000, gid=5)))
    assert tree(tmp_path / "rootfs")["/run/pipe"] == TreeEntry("fifo", 0o620, 1000, 5, "")
    assert stats[0].fifos == 1


def test_xattrs(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    pax = {"SCHILY.xattr.user.origin": "buildgen", "SCHILY.xattr.user.bin": "\x01\x02é"}
    [stats] = apply(
        tmp_path,
        layer(
            d("x", pax={"SCHILY.xattr.user.dir": "yes"}),
            f("x/file", "data", pax=pax),
            # user.* xattrs are not allowed on symlinks (EPERM): skipped and counted, not fatal
            sym("x/link", "file", pax={"SCHILY.xattr.user.link": "no"}),
        ),
    )
    rootfs = tmp_path / "rootfs"
    assert tree(rootfs)["/x/file"] == file_entry("data")
    refused = user_xattrs_supported(tmp_path)
    if refused is not None:
        assert stats.xattrs_skipped == 4
        pytest.skip(refused)
    assert os.getxattr(rootfs / "x/file", "user.origin") == b"buildgen"
    assert os.getxattr(rootfs / "x/file", "user.bin") == "\x01\x02é".encode()
    assert os.getxattr(rootfs / "x", "user.dir") == b"yes"
    assert stats.xattrs_skipped == 1


def test_xattrs_can_be_turned_off(tmp_path: Path) -> None:
    [stats] = apply(
        tmp_path,
        layer(f("file", "d", pax={"SCHILY.xattr.user.a": "1"})),
        policy=ExtractPolicy(xattrs=False),
    )
    assert os.listxattr(tmp_path / "rootfs/file") == []
    assert stats.xattrs_skipped == 0


def test_mtimes(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("dir", mtime=MTIME - 100),  # listed first, filled after: its mtime is set last
            f("dir/a", "a", mtime=MTIME - 200),
            d("dir/sub", mtime=MTIME - 300),
            f("dir/sub/b", "b", mtime=MTIME - 400),
            sym("dir/link", "a", mtime=MTIME - 500),
            Entry("dir/pipe", "fifo", mode=0o600, mtime=MTIME - 600),
            f("precise", "p", pax={"mtime": "1700000000.123456789", "atime": "1700000100.5"}),
            f("old-atime", "o", pax={"atime": "1000"}),
        ),
    )
    rootfs = tmp_path / "rootfs"

    def mtime(path: str) -> int:
        return os.lstat(rootfs / path).st_mtime_ns // 10**9

    assert mtime("dir") == MTIME - 100
    assert mtime("dir/a") == MTIME - 200
    assert mtime("dir/sub") == MTIME - 300
    assert mtime("dir/sub/b") == MTIME - 400
    assert mtime("dir/link") == MTIME - 500
    assert mtime("dir/pipe") == MTIME - 600
    precise = os.lstat(rootfs / "precise")
    assert precise.st_mtime_ns == 1_700_000_000_123_456_789
    assert precise.st_atime_ns == 1_700_000_100_500_000_000
    # an atime before the mtime is raised to it, as Docker does
    assert os.lstat(rootfs / "old-atime").st_atime_ns == MTIME * 10**9


# -- whiteouts -------------------------------------------------------------------------------

BASE_ENTRIES = (
    d("data"),
    f("data/keep", "keep"),
    f("data/old", "old"),
    d("data/gone"),
    f("data/gone/a", "a"),
    d("data/gone/deep", 0o700),
    f("data/gone/deep/b", "b"),
    d("lib"),
    f("lib/old", "old"),
    d("lib/sub"),
    f("lib/sub/x", "x"),
    sym("lib/link", "old"),
)
BASE = layer(*BASE_ENTRIES)


def test_whiteout_of_a_file_and_of_a_directory(tmp_path: Path) -> None:
    stats = apply(tmp_path, BASE, layer(wh("data/old"), wh("data/gone"), wh("data/never-was")))
    t = tree(tmp_path / "rootfs")
    assert {p for p in t if p.startswith("/data")} == {"/data", "/data/keep"}
    assert stats[1].whiteouts == 3
    assert not any(".wh." in p for p in t)


@pytest.mark.parametrize("marker", ["first", "middle", "last"])
def test_opaque_directory_keeps_what_its_layer_adds(tmp_path: Path, marker: str) -> None:
    adds = [
        d("lib"),
        f("lib/new", "new"),
        d("lib/sub", 0o750),
        f("lib/sub/y", "y"),
        f("lib/old", "v2"),
    ]
    position = {"first": 0, "middle": 2, "last": len(adds)}[marker]
    entries = [*adds[:position], opaque("lib"), *adds[position:]]
    apply(tmp_path, BASE, layer(*entries))
    t = tree(tmp_path / "rootfs")
    assert {p: e for p, e in t.items() if p.startswith("/lib")} == {
        "/lib": dir_entry(),
        "/lib/new": file_entry("new"),
        "/lib/sub": dir_entry(0o750),
        "/lib/sub/y": file_entry("y"),  # lib/sub/x came from below: hidden too
        "/lib/old": file_entry("v2"),  # re-added by the same layer
    }
    assert "/data/keep" in t  # other directories untouched


def test_opaque_directory_without_readds_and_at_the_root(tmp_path: Path) -> None:
    apply(tmp_path, BASE, layer(opaque("data")))
    assert {p for p in tree(tmp_path / "rootfs") if p.startswith("/data")} == {"/data"}
    apply(tmp_path, BASE, layer(f("fresh", "f"), opaque("")), rootfs="rootfs2")
    assert set(tree(tmp_path / "rootfs2")) == {"/fresh"}


def test_a_char_device_0_0_is_a_whiteout(tmp_path: Path) -> None:
    # overlayfs's whiteout format in a tar: Docker (overlayfs storage) shows no such node, in
    # any layer, and hides what the layers below put at that name.
    [_, stats] = apply(
        tmp_path,
        layer(f("gone", "g"), f("keep", "k"), d("dir"), f("dir/x", "x")),
        layer(Entry("gone", "char", mode=0), Entry("dir", "char", mode=0), Entry("new", "char")),
    )
    assert tree(tmp_path / "rootfs") == {"/keep": file_entry("k")}
    assert stats.whiteouts == 3 and stats.devices == 0


def test_whiteout_does_not_remove_what_its_own_layer_adds(tmp_path: Path) -> None:
    # The spec forbids this; if a layer does it anyway, the whiteout only applies below.
    apply(
        tmp_path,
        BASE,
        layer(
            f("data/new", "n"),
            wh("data/new"),
            d("data/gone"),
            f("data/gone/c", "c"),
            wh("data/gone"),
        ),
    )
    t = tree(tmp_path / "rootfs")
    assert "/data/new" in t
    assert {p for p in t if p.startswith("/data/gone")} == {"/data/gone", "/data/gone/c"}


def test_file_and_directory_replace_each_other(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(f("f2d", "file"), d("d2f"), f("d2f/inner", "i"), d("d2l"), sym("l2d", "elsewhere")),
        layer(
            d("f2d", 0o700),
            f("f2d/inner", "now a dir"),
            f("d2f", "now a file"),
            sym("d2l", "f2d"),
            d("l2d"),
        ),
        layer(
            f("same", "1"),
            d("same"),
            f("same/x", "x"),
            f("again", "a"),
            d("again"),
            f("again", "b"),
        ),
    )
    t = tree(tmp_path / "rootfs")
    assert t["/f2d"] == dir_entry(0o700) and t["/f2d/inner"] == file_entry("now a dir")
    assert t["/d2f"] == file_entry("now a file") and "/d2f/inner" not in t
    assert t["/d2l"] == TreeEntry("symlink", 0o777, 0, 0, "f2d")
    assert t["/l2d"] == dir_entry()
    assert t["/same"] == dir_entry() and t["/same/x"] == file_entry("x")
    assert t["/again"] == file_entry("b")


# -- replacing links is never writing through them -------------------------------------------


def test_replacing_a_symlink_never_writes_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("canary")
    (outside / "dir").mkdir()
    before = snapshot(tmp_path, tmp_path / "rootfs", tmp_path / "blobs")
    apply(
        tmp_path,
        layer(
            sym("file", str(outside / "canary")),
            sym("dir", str(outside / "dir")),
            sym("s", str(outside / "canary")),
            hard("h", "s"),
        ),
        layer(f("file", "inside", 0o600), d("dir", 0o700), f("dir/x", "x"), f("h", "replaced")),
    )
    t = tree(tmp_path / "rootfs")
    assert t["/file"] == file_entry("inside", 0o600)
    assert t["/dir"] == dir_entry(0o700) and t["/dir/x"] == file_entry("x")
    assert t["/h"] == file_entry("replaced") and t["/s"].kind == "symlink"
    assert snapshot(tmp_path, tmp_path / "rootfs", tmp_path / "blobs") == before
    assert (outside / "canary").read_text() == "canary"


# -- media types, integrity ------------------------------------------------------------------


def test_media_types(tmp_path: Path) -> None:
    tar = tar_bytes([f("a", "a")])
    cases = {
        "application/vnd.oci.image.layer.v1.tar+gzip": gz(tar),
        "application/vnd.docker.image.rootfs.diff.tar.gzip": gz(tar),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": gz(tar),
        "application/vnd.oci.image.layer.v1.tar": tar,
        "application/vnd.docker.image.rootfs.diff.tar": tar,
    }
    for index, (media_type, blob) in enumerate(cases.items()):
        rootfs = tmp_path / f"r{index}"
        rootfs.mkdir()
        stats = apply_layer(
            rootfs, write_blob(tmp_path / "blobs", blob), media_type, expected_diff_id=digest(tar)
        )
        assert tree(rootfs) == {"/a": file_entry("a")}, media_type
        assert stats.diff_id == digest(tar)
    with pytest.raises(ValueError, match="not a supported layer media type"):
        layer_compression("application/vnd.oci.image.layer.v1.tar+encrypted")
    with pytest.raises(ExtractionError, match="not a supported layer media type"):
        apply_layer(tmp_path / "r0", write_blob(tmp_path / "blobs", tar), "application/json")


def test_zstd(tmp_path: Path) -> None:
    """Decoded when a zstd module is importable; otherwise a clear error, never garbage."""
    tar = tar_bytes([f("z", "zstd")])
    media_type = "application/vnd.oci.image.layer.v1.tar+zstd"
    (tmp_path / "rootfs").mkdir()
    try:
        import zstandard  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        blob = write_blob(tmp_path / "blobs", b"\x28\xb5\x2f\xfd not really zstd")
        with pytest.raises(ExtractionError, match="install the `zstandard` package"):
            apply_layer(tmp_path / "rootfs", blob, media_type)
        return
    # two frames, as zstd:chunked writes them
    half = len(tar) // 2
    compressor = zstandard.ZstdCompressor()
    data = compressor.compress(tar[:half]) + compressor.compress(tar[half:])
    blob = write_blob(tmp_path / "blobs", data)
    apply_layer(tmp_path / "rootfs", blob, media_type, expected_diff_id=digest(tar))
    assert tree(tmp_path / "rootfs") == {"/z": file_entry("zstd")}


def test_zstd_without_a_decoder_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def no_zstd(name: str, package: str | None = None) -> Any:
        if name in ("zstandard", "compression.zstd"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_zstd)
    (tmp_path / "rootfs").mkdir()
    blob = write_blob(tmp_path / "blobs", b"\x28\xb5\x2f\xfd")
    with pytest.raises(ExtractionError, match=r"zstd-compressed.*pip install zstandard") as info:
        apply_layer(tmp_path / "rootfs", blob, "application/vnd.oci.image.layer.v1.tar+zstd")
    assert info.value.exit_code == 3


def test_diff_id_mismatch_is_an_error(tmp_path: Path) -> None:
    good = layer(f("a", "a"))
    (tmp_path / "rootfs").mkdir()
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ExtractionError, match=f"diff_id is {wrong}") as info:
        apply_layer(
            tmp_path / "rootfs",
            write_blob(tmp_path / "blobs", good.blob),
            good.media_type,
            expected_diff_id=wrong,
        )
    assert info.value.layer == good.digest


@pytest.mark.parametrize("where", ["header", "content", "trailer"])
def test_corrupt_blob_is_caught_by_its_digest(tmp_path: Path, where: str) -> None:
    """A cache file changed after download (same size, so `has()` passes) is refused."""
    good = layer(f("a", "a" * 5000), f("b", "b"))
    path = write_blob(tmp_path / "blobs", good.blob)
    data = bytearray(path.read_bytes())
    index = {"header": 3, "content": len(data) // 2, "trailer": len(data) - 2}[where]
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(ExtractionError, match="does not match its digest") as info:
        apply_layer(tmp_path / "rootfs", path, good.media_type)
    assert info.value.layer == good.digest
    assert blob_digest(path) == good.digest


_TAR = tar_bytes([f("a", "1"), f("b", "2"), f("c", "3")])
_BAD_HEADER = bytearray(_TAR)
_BAD_HEADER[1024 + 148] ^= 0x11  # the checksum of b's header: tarfile alone would just stop there


@pytest.mark.parametrize(
    ("blob", "media_type", "error"),
    [
        (gz(_TAR)[:-12], "application/vnd.oci.image.layer.v1.tar+gzip", "Compressed file ended"),
        (b"plain bytes", "application/vnd.oci.image.layer.v1.tar+gzip", "Not a gzipped file"),
        (bytes(_BAD_HEADER), OCI_LAYER_TAR, "invalid or truncated tar header at offset 1024"),
        (_TAR[: 2048 + 300], OCI_LAYER_TAR, "invalid or truncated tar header at offset 2048"),
        # Inside b's one byte of data (a cut in its padding ends the archive, as in Go's reader).
        (_TAR[: 1024 + 512], OCI_LAYER_TAR, "unexpected end of data"),
    ],
    ids=["truncated-gzip", "not-gzip", "bad-header", "truncated-header", "truncated-data"],
)
def test_truncated_and_malformed_streams(
    tmp_path: Path, blob: bytes, media_type: str, error: str
) -> None:
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(ExtractionError, match=f"cannot read the layer: .*{error}"):
        apply_layer(tmp_path / "rootfs", write_blob(tmp_path / "blobs", blob), media_type)


def test_empty_layers(tmp_path: Path) -> None:
    for index, blob in enumerate((b"", b"\0" * 1024, gz(b"\0" * 10240))):
        rootfs = tmp_path / f"r{index}"
        rootfs.mkdir()
        media_type = OCI_LAYER_TAR if index < 2 else "application/vnd.oci.image.layer.v1.tar+gzip"
        apply_layer(rootfs, write_blob(tmp_path / "blobs", blob), media_type)
        assert tree(rootfs) == {}


# -- policy ----------------------------------------------------------------------------------


def test_device_nodes_can_be_skipped(tmp_path: Path) -> None:
    [stats] = apply(
        tmp_path,
        layer(
            d("dev"),
            Entry("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
            Entry("dev/sda", "block", mode=0o660, devmajor=8),
        ),
        policy=ExtractPolicy(devices="skip"),
    )
    assert set(tree(tmp_path / "rootfs")) == {"/dev"}
    assert stats.devices_skipped == 2


def test_root_entry_is_skipped_and_new_rootfs_mode(tmp_path: Path) -> None:
    # containerd skips an entry that names the root ("file ignored: resolved to root"): "/"
    # of a container is its runtime's, 0755 root, whatever a layer lists for "./".
    apply(tmp_path, layer(f("a", "a")))
    assert stat.S_IMODE(os.stat(tmp_path / "rootfs").st_mode) == 0o755
    for index, root in enumerate((d("./", 0o750, 0, 10), sym("./", "/etc"), f("a/..", "x"))):
        rootfs = f"rootfs{index}"
        apply(tmp_path, layer(root, f("a", "a")), rootfs=rootfs)
        st = os.lstat(tmp_path / rootfs)
        assert (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode), st.st_gid) == (True, 0o755, 0)
        assert tree(tmp_path / rootfs) == {"/a": file_entry("a")}


def test_names_are_cleaned_inside_the_root(tmp_path: Path) -> None:
    # As containerd and umoci clean them (Go's filepath.Clean of "/" + name): `..` never
    # goes above the root, and an absolute name is relative to it.
    apply(
        tmp_path,
        layer(
            d("usr"),
            f("usr/../../escape", "1"),
            f("/abs/file", "2"),
            f("../../up", "3"),
            f("./a//b/./c", "4"),
        ),
    )
    assert tree(tmp_path / "rootfs") == {
        "/usr": dir_entry(),
        "/escape": file_entry("1"),
        "/abs": dir_entry(),
        "/abs/file": file_entry("2"),
        "/up": file_entry("3"),
        "/a": dir_entry(),
        "/a/b": dir_entry(),
        "/a/b/c": file_entry("4"),
    }
    assert not (tmp_path / "escape").exists() and not (tmp_path / "up").exists()


def test_refusals_name_layer_and_entry(tmp_path: Path) -> None:
    evil = layer(f("usr", "a file"), f("usr/lib/x", "x"))
    with pytest.raises(ExtractionError) as info:
        apply(tmp_path, evil)
    error = info.value
    assert isinstance(error, ExternalToolError) and error.exit_code == 3
    assert error.layer == evil.digest and error.entry == "usr/lib/x"
    assert str(error) == f"layer {evil.digest}, entry 'usr/lib/x': usr is not a directory"


def test_depth_limit(tmp_path: Path) -> None:
    deep = "/".join(["d"] * 20)
    with pytest.raises(ExtractionError, match="more than 10 components"):
        apply(tmp_path, layer(f(deep, "x")), policy=ExtractPolicy(max_depth=10))
    apply(tmp_path, layer(f(deep, "x")), policy=ExtractPolicy(max_depth=20), rootfs="ok")
    assert tree(tmp_path / "ok")["/" + deep] == file_entry("x")


def test_whiteout_prefix_in_a_directory_name_is_a_plain_name(tmp_path: Path) -> None:
    # Only the last component of a name can be a whiteout; containerd creates the rest.
    apply(tmp_path, layer(f(".wh.x/y", "y")))
    assert tree(tmp_path / "rootfs") == {"/.wh.x": dir_entry(), "/.wh.x/y": file_entry("y")}


# -- hostile images through a real registry --------------------------------------------------

CASES = [case.name for case in corpus(Path("/placeholder"))]
Pulled = list[tuple[Path, str, str | None]]


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(RegistryOptions(retries=1, backoff=0.01)) as c:
        yield c


def outside_world(top: Path) -> None:
    """The canaries hostile layers aim at, next to the rootfs."""
    (top / "canary").write_text("canary\n")
    (top / "etc").mkdir()
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.chmod(top / "etc/passwd", 0o644)


def strays() -> set[str]:
    return {name for name in os.listdir("/etc") if name.startswith("buildgen-hostile-")}


@pytest.fixture(scope="module")
def hostile_world(
    registry: Registry, client: RegistryClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, list[Pulled]]]:
    """A directory with the canaries, and every hostile image pushed, then pulled into a cache.

    Each case's rootfs is `world/rootfs/<case>`; everything else in `world` must never change.
    """
    world = tmp_path_factory.mktemp("hostile")
    outside_world(world)
    (world / "rootfs").mkdir()
    (world / "rootfs" / "canary").write_text("beside every rootfs\n")
    cache = BlobCache(world / "cache")

    def prepare(case: Case) -> list[Pulled]:
        images = []
        for index, layers in enumerate(case.images):
            repository = f"{registry.host}/hostile/{case.name}-{index}"
            manifest = push_image(client, repository, "latest", layers)
            images.append(pull_layers(client, cache, repository, manifest))
        return images

    cases = corpus(world)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return world, dict(zip(CASES, pool.map(prepare, cases), strict=True))


def fingerprint(path: Path) -> tuple[Any, ...]:
    st = os.lstat(path)
    return path.read_bytes(), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns


def found_at(rootfs: Path, path: str) -> str | None:
    """What is at `path` in `rootfs`, in the terms of `Case.expect` (symlinks not followed)."""
    try:
        st = os.lstat(f"{rootfs}{path}")
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return DIR
    if stat.S_ISLNK(st.st_mode):
        return link_to(os.readlink(f"{rootfs}{path}"))
    if stat.S_ISFIFO(st.st_mode):
        return "<fifo>"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
        return device(kind, os.major(st.st_rdev), os.minor(st.st_rdev))
    return Path(f"{rootfs}{path}").read_text()


@pytest.mark.parametrize("name", CASES)
def test_hostile_image_is_refused_or_contained_and_nothing_outside_changes(
    name: str, hostile_world: tuple[Path, dict[str, list[Pulled]]]
) -> None:
    world, pulled = hostile_world
    [case] = [c for c in corpus(world) if c.name == name]
    images = pulled[name]
    rootfs = world / "rootfs" / name
    rootfs.mkdir()
    # Canaries: beside the rootfs, beside its parent, and in the temp dir.
    temp_canary = Path(tempfile.gettempdir(), f"buildgen-canary-{uuid.uuid4().hex[:8]}")
    temp_canary.write_text("canary\n")
    everyone = [world / "rootfs" / c for c in CASES]
    try:
        before, etc_before = snapshot(world, *everyone), strays()
        temp_before = fingerprint(temp_canary)
        error = case.error
        if case.needs_root and os.geteuid() != 0:
            error = r"device .* only a process with CAP_MKNOD"
        if error is not None:
            with pytest.raises(ExtractionError) as info:
                for layers in images:  # images applied into one rootfs, as crane mode fuses
                    apply_image(rootfs, layers)
            assert re.search(error, str(info.value)), str(info.value)
            assert info.value.layer == blob_digest(images[-1][-1][0])
            assert info.value.entry is not None
        else:
            for layers in images:
                apply_image(rootfs, layers)
            assert {path: found_at(rootfs, path) for path in case.expect} == case.expect
        assert snapshot(world, *everyone) == before
        assert fingerprint(temp_canary) == temp_before
        assert (world / "canary").read_text() == "canary\n"
        assert (world / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"
        assert strays() == etc_before == set()
    finally:
        temp_canary.unlink()


def test_corrupted_cached_blob_is_refused(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    outside_world(tmp_path)
    repository = f"{registry.host}/hostile/corrupt-cache"
    good = layer(d("etc"), f("etc/passwd", "root:x:0:0::/:/bin/sh\n"))
    manifest = push_image(client, repository, "latest", [good])
    cache = BlobCache(tmp_path / "cache")
    [(path, media_type, diff_id)] = pull_layers(client, cache, repository, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert cache.has(good.digest, len(good.blob))  # size only: the digest check is on read
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    before = snapshot(tmp_path, rootfs)
    with pytest.raises(ExtractionError, match=f"{good.digest}.*does not match its digest"):
        apply_layer(rootfs, path, media_type, expected_diff_id=diff_id)
    assert snapshot(tmp_path, rootfs) == before
    # a second pull does not repair it silently either: has() trusts the size...
    pull_layers(client, cache, repository, manifest)
    assert cache.stats["download"] == 1
    # ...so the remedy the error names (delete it, fetch again) is what works
    path.unlink()
    pull_layers(client, cache, repository, manifest)
    apply_layer(rootfs, path, media_type, expected_diff_id=diff_id)
    assert tree(rootfs)["/etc/passwd"] == file_entry("root:x:0:0::/:/bin/sh\n")


def test_manifest_not_matching_its_digest_is_refused() -> None:
    """A registry (or a man in the middle) answering a digest with other bytes."""
    real = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    forged = real.replace(b'"layers": []', b'"layers": [ ]')
    asked = digest(real)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(
            200,
            content=forged,
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": asked},
        )

    match = f"does not match the digest asked for.*{asked}"
    with (
        RegistryClient(transport=httpx.MockTransport(handler)) as c,
        pytest.raises(RegistryError, match=match),
    ):
        c.get_manifest("127.0.0.1:5999/hostile/manifest", asked)


# -- equivalence with umoci ------------------------------------------------------------------


def oci_image() -> list[Layer]:
    """Three layers: owners, special modes, links, FIFOs, xattrs; deletions and an opaque dir."""
    l1 = layer(
        d("bin"),
        f("bin/busybox", b"\x7fELF" + b"b" * 4000, 0o755),
        hard("bin/ls", "bin/busybox", 0o755),
        sym("bin/sh", "busybox"),
        f("bin/su", "su", 0o4755),
        f("bin/wall", "wall", 0o2755, 0, 5),
        f("bin/suid-user", "su-user", 0o4750, 1000, 1000),
        d("etc"),
        f("etc/passwd", "root:x:0:0\n"),
        f("etc/shadow", "root:*:1::::::\n", 0o640, 0, 42),
        sym("etc/localtime", "/usr/share/zoneinfo/UTC"),
        d("tmp", 0o1777),
        d("home"),
        d("home/user", 0o750, 1000, 1000),
        f("home/user/.bashrc", "PS1=$\n", 0o644, 1000, 1000),
        sym("home/user/passwd", "../../etc/passwd", 1000, 1000),
        d("tasks", 0o700),
        f("tasks/task-1.json", '{"answer": 42}', 0o600),
        d("tests", 0o700),
        d("tests/hidden", 0o700),
        f("tests/hidden/test_a.py", "assert True\n", 0o600),
        d("opt"),
        d("opt/gateway", 0o700),
        f("opt/gateway/key", "sk-secret", 0o600),
        d("ro", 0o500),
        f("ro/file", "read only", 0o444),
        d("run"),
        Entry("run/fifo", "fifo", mode=0o620, uid=0, gid=5),
        *BASE_ENTRIES,
        d("swap"),
        f("swap/file-to-dir", "f"),
        d("swap/dir-to-file"),
        f("swap/dir-to-file/inner", "i"),
        d("xattr"),
        f("xattr/file", "x", pax={"SCHILY.xattr.user.test": "hello"}),
    )
    l2 = layer(
        wh("data/old"),
        wh("data/gone"),
        d("etc"),
        f("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n"),
        f("home/user/.bashrc", "PS1=#\n", 0o600, 1000, 1000),
        f("tmp/scratch", "tmp", 0o666, 1000, 1000),
        hard("data/keep-link", "data/keep"),
        f("implicit/parent/file", "no parent entries"),
    )
    l3 = layer(
        d("lib"),
        opaque("lib"),
        f("lib/new", "new"),
        d("lib/sub", 0o750),
        f("lib/sub/y", "y"),
        d("swap/file-to-dir", 0o700),
        f("swap/file-to-dir/inner", "inner"),
        f("swap/dir-to-file", "now a file"),
        sym("bin/sh", "/bin/busybox"),
        f("bin/su", "su v2", 0o4711),
        d("tasks", 0o700),
        f("tasks/task-2.json", '{"answer": 7}', 0o600),
    )
    return [l1, l2, l3]


def test_same_rootfs_as_umoci(
    registry: Registry, oracles: None, client: RegistryClient, tmp_path: Path
) -> None:
    repository = f"{registry.host}/equivalence/image-{uuid.uuid4().hex[:8]}"
    layers = oci_image()
    manifest = push_image(client, repository, "v1", layers)

    layout, theirs = tmp_path / "layout", tmp_path / "umoci-rootfs"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--src-tls-verify=false",
            f"docker://{repository}:v1",
            f"oci:{layout}:x",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{layout}:x", str(theirs)],
        check=True,
        capture_output=True,
        text=True,
    )

    cache = BlobCache(tmp_path / "cache")
    ours = tmp_path / "rootfs"
    stats = apply_image(ours, pull_layers(client, cache, repository, manifest))
    assert [s.diff_id for s in stats] == [x.diff_id for x in layers]

    our_tree, their_tree = tree(ours), tree(theirs)
    assert our_tree == their_tree
    assert (
        hardlinks(ours)
        == hardlinks(theirs)
        == {
            frozenset({"/bin/busybox", "/bin/ls"}),
            frozenset({"/data/keep", "/data/keep-link"}),
        }
    )

    def mtimes(rootfs: Path) -> dict[str, int]:
        return {
            p: os.lstat(f"{rootfs}{p}").st_mtime_ns
            for p, e in tree(rootfs).items()
            if e.kind != "dir"
        }

    def xattrs(rootfs: Path) -> dict[str, dict[str, bytes]]:
        found = {}
        for p, e in tree(rootfs).items():
            if e.kind in ("file", "dir"):
                names = os.listxattr(f"{rootfs}{p}")
                found[p] = {
                    n: os.getxattr(f"{rootfs}{p}", n) for n in names if n.startswith("user.")
                }
        return found

    assert mtimes(ours) == mtimes(theirs)
    assert xattrs(ours) == xattrs(theirs)
    # the parts that matter, spelled out (so an oracle regression cannot hide one)
    assert our_tree["/tasks"] == dir_entry(0o700)
    assert our_tree["/tasks/task-1.json"].mode == our_tree["/opt/gateway/key"].mode == 0o600
    assert our_tree["/bin/su"] == file_entry("su v2", 0o4711)
    assert our_tree["/bin/suid-user"] == file_entry("su-user", 0o4750, 1000, 1000)
    assert our_tree["/bin/wall"] == file_entry("wall", 0o2755, 0, 5)
    assert our_tree["/tmp"] == dir_entry(0o1777)
    assert our_tree["/implicit"] == our_tree["/implicit/parent"] == dir_entry(0o755)
    assert {p for p in our_tree if p.startswith("/lib")} == {
        "/lib",
        "/lib/new",
        "/lib/sub",
        "/lib/sub/y",
    }
    assert {p for p in our_tree if p.startswith("/data")} == {
        "/data",
        "/data/keep",
        "/data/keep-link",
    }


def test_multi_member_gzip_layers(tmp_path: Path) -> None:
    # A gzip stream may be several members (pigz, concatenated writers): all of them are read.
    tar = tar_bytes([d("a"), f("a/one", "1" * 5000), f("a/two", "2" * 5000)])
    half = len(tar) // 2
    blob = gz(tar[:half]) + gz(tar[half:])
    path = write_blob(tmp_path / "blobs", blob)
    apply_image(tmp_path / "rootfs", [(path, OCI_LAYER_GZIP, digest(tar))])
    assert (tmp_path / "rootfs/a/two").read_text() == "2" * 5000
    garbage = write_blob(tmp_path / "blobs", gz(tar) + b"garbage")
    with pytest.raises(ExtractionError, match="Not a gzipped file"):
        apply_image(tmp_path / "other", [(garbage, OCI_LAYER_GZIP, None)])
