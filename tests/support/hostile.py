"""Tar layers built in Python for the extraction tests, the hostile corpus, and pushing them.

- `Entry` + `tar_bytes` / `layer` write tar layers (PAX format, gzip with a fixed mtime), with
  any name, type, owner, mode, link target or PAX record, including ones no honest tool makes.
- `corpus(outside)` is the hostile corpus: images (lists of layers) that try to create or modify
  something outside the rootfs, each with the error `apply_layer` must raise. `outside` is a
  directory next to the rootfs holding canaries (`canary`, `etc/passwd`) the layers aim at.
- `push_image` pushes layers as an OCI image (config with correct diff_ids) with the registry
  client; `pull_layers` fetches one back through a `BlobCache`, as crane mode does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildgen.crane.blobcache import BlobCache, BlobRef
from buildgen.registry import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RegistryClient

MTIME = 1_700_000_000
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}
_DEFAULT_MODES = {"dir": 0o755, "symlink": 0o777}


@dataclass(frozen=True)
class Entry:
    """One tar entry; `kind` is a key of TAR_TYPES, or `typeflag` overrides it (raw bytes)."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    link: str = ""
    pax: dict[str, str] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0
    typeflag: bytes | None = None


def f(
    name: str,
    data: bytes | str = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    *,
    mtime: int = MTIME,
    pax: dict[str, str] | None = None,
) -> Entry:
    """A regular file."""
    content = data.encode() if isinstance(data, str) else data
    return Entry(name, "file", content, mode, uid, gid, mtime, pax=pax or {})


def d(
    name: str,
    mode: int = 0o755,
    uid: int = 0,
    gid: int = 0,
    *,
    mtime: int = MTIME,
    pax: dict[str, str] | None = None,
) -> Entry:
    """A directory."""
    return Entry(name, "dir", b"", mode, uid, gid, mtime, pax=pax or {})


def sym(
    name: str,
    target: str,
    uid: int = 0,
    gid: int = 0,
    *,
    mtime: int = MTIME,
    pax: dict[str, str] | None = None,
) -> Entry:
    """A symlink (its target verbatim)."""
    return Entry(name, "symlink", b"", 0o777, uid, gid, mtime, link=target, pax=pax or {})


def hard(name: str, target: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    """A hardlink to `target` (a name in the rootfs, as tar writes it)."""
    return Entry(name, "hardlink", b"", mode, uid, gid, link=target)


def wh(path: str) -> Entry:
    """The whiteout of `path` (`dir/.wh.name`)."""
    head, _, base = path.rpartition("/")
    return Entry(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory: str) -> Entry:
    """The opaque-directory marker of `directory`."""
    directory = directory.rstrip("/")
    return Entry(f"{directory}/.wh..wh..opq" if directory else ".wh..wh..opq")


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    """An uncompressed PAX tar of `entries`, in order, with exactly the fields given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.typeflag if e.typeflag is not None else TAR_TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else _DEFAULT_MODES.get(e.kind, 0o644)
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.link
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.pax_headers = dict(e.pax)
            if e.kind == "file" and e.typeflag is None:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def gz(data: bytes) -> bytes:
    """gzip with mtime 0, so the same tar always makes the same blob."""
    return gzip.compress(data, mtime=0)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """A layer blob as pushed: its bytes, media type and the diff_id of its tar."""

    blob: bytes
    media_type: str
    diff_id: str

    @property
    def digest(self) -> str:
        return digest(self.blob)


def layer(*entries: Entry) -> Layer:
    """A gzip layer of `entries`."""
    tar = tar_bytes(entries)
    return Layer(gz(tar), OCI_LAYER_GZIP, digest(tar))


def write_blob(directory: Path, data: bytes) -> Path:
    """Store `data` content-addressed (`directory/sha256/<hex>`) like the blob cache does."""
    path = directory / "sha256" / digest(data).split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the hostile corpus ----------------------------------------------------------------------

DIR = "<dir>"
"""In `Case.expect`: a directory is there."""


def link_to(target: str) -> str:
    """In `Case.expect`: a symlink to `target` is there."""
    return f"<symlink {target}>"


def device(kind: str, major: int, minor: int) -> str:
    """In `Case.expect`: a device node is there ("char" or "block")."""
    return f"<{kind} {major}:{minor}>"


@dataclass(frozen=True)
class Case:
    """Images applied in order into one rootfs. Either the last layer fails with `error`, or
    everything applies and the rootfs holds `expect` (path -> file content, DIR, link_to(..),
    device(..), or None for "not there"). Nothing outside the rootfs may change in either."""

    name: str
    images: tuple[tuple[Layer, ...], ...]
    error: str | None = None
    """A regular expression the ExtractionError's message must match."""
    expect: dict[str, str | None] = field(default_factory=dict)
    needs_root: bool = False
    """Only as root (with CAP_MKNOD); without, the case must be refused with a clear message."""


def corpus(outside: Path) -> list[Case]:
    """The hostile cases; `outside` holds `canary` and `etc/passwd` (absolute paths are used).

    Every class of hostile entry the extraction policy names (docs/crane-mode.md): names out of
    the root, symlinks to the host on the way to an entry (absolute, relative, chained, across
    layers and images), hardlinks out of the root or through symlinks, whiteouts through
    symlinks or of the root, device nodes, the root replaced, loops, unknown types. Docker
    contains most of them inside the rootfs rather than refusing: so does buildgen.
    """
    etc = str(outside / "etc")
    canary = str(outside / "canary")
    inside = str(outside).lstrip("/")  # where an absolute path to `outside` lands in the rootfs
    # A name under the real /etc that exists nowhere: a broken extractor could only create it
    # (the same for every call with this `outside`, so that a test finds the pushed one).
    stray = f"buildgen-hostile-{hashlib.sha256(str(outside).encode()).hexdigest()[:12]}"
    ok_base = layer(d("usr"), f("usr/ok", "fine"))
    passwd = "root::0:0::/:/bin/sh\n"

    def refused(name: str, error: str, *layers: Layer) -> Case:
        return Case(name, (tuple(layers),), error=error)

    def contained(name: str, expect: dict[str, str | None], *layers: Layer) -> Case:
        return Case(name, (tuple(layers),), expect=expect)

    return [
        # -- names that leave the root: cleaned into it (containerd, umoci) --
        contained("dotdot", {"/canary": "pwned"}, layer(f("../canary", "pwned"))),
        contained(
            "dotdot-nested", {"/canary": "pwned"}, layer(d("a"), f("a/../../canary", "pwned"))
        ),
        contained("dotdot-dir", {"/evil": DIR}, layer(d("../evil"))),
        contained("dotdot-deep", {"/x": "x"}, layer(f("../" * 64 + "x", "x"))),
        contained("absolute", {f"/{inside}/canary": "pwned"}, layer(f(canary, "pwned"))),
        contained(
            "absolute-etc",
            {f"/etc/{stray}": "pwned"},
            layer(f(f"/etc/{stray}", "pwned")),
        ),
        # -- symlinks on the way to an entry: resolved inside the rootfs --
        contained(
            "symlink-then-write-same-layer",
            {"/etc": link_to(etc), f"/{inside}/etc/passwd": passwd},
            layer(sym("etc", etc), f("etc/passwd", passwd)),
        ),
        refused(
            # In the rootfs, /etc -> /etc is a loop, as it is in a container (containerd
            # refuses the layer too).
            "symlink-to-real-etc-then-write",
            r"too many levels of symbolic links",
            layer(sym("etc", "/etc"), f(f"etc/{stray}", "pwned")),
        ),
        contained(
            "symlink-to-real-etc-elsewhere-then-write",
            {"/conf": link_to("/etc"), f"/etc/{stray}": "pwned"},
            layer(sym("conf", "/etc"), f(f"conf/{stray}", "pwned")),
        ),
        contained(
            "symlink-relative-escape",
            {f"/{inside}/canary": "pwned"},
            layer(sym("up", "../../../../../../.."), f(f"up/{canary.lstrip('/')}", "pwned")),
        ),
        contained(
            "symlink-chain-escape",
            {"/x": "pwned"},
            layer(
                sym("a", "b/c"),
                sym("b", "/d"),
                d("d"),
                sym("d/c", "../../../.."),
                f("a/x", "pwned"),
            ),
        ),
        contained(
            "symlink-across-layers",
            {f"/{inside}/etc/passwd": passwd},
            layer(sym("etc", etc)),
            layer(f("etc/passwd", passwd)),
        ),
        Case(
            "symlink-across-images",
            ((layer(d("usr"), sym("etc", etc)),), (layer(f("etc/passwd", "pwned\n")),)),
            expect={f"/{inside}/etc/passwd": "pwned\n"},
        ),
        contained(
            "symlink-inside-followed",
            {"/a": link_to("b"), "/b/file": "x"},
            layer(d("b"), sym("a", "b"), f("a/file", "x")),
        ),
        contained(
            "symlink-dotdot-to-root",
            {"/sub/dir": link_to("../../../.."), "/file": "x"},
            layer(d("sub"), sym("sub/dir", "../../../.."), f("sub/dir/file", "x")),
        ),
        contained(
            "symlink-then-dir-through-it",
            {f"/{inside}/etc/sub": DIR},
            layer(sym("etc", etc), d("etc/sub")),
        ),
        contained(
            "symlink-dangling-made-as-directory",
            {"/link": link_to("/nowhere/dir"), "/nowhere/dir/file": "x"},
            layer(sym("link", "/nowhere/dir"), f("link/file", "x")),
        ),
        refused(
            "symlink-loop",
            r"too many levels of symbolic links",
            layer(sym("a", "b"), sym("b", "a"), f("a/x", "loop")),
        ),
        refused(
            "symlink-self-loop",
            r"too many levels of symbolic links",
            layer(sym("self", "self"), f("self/x", "loop")),
        ),
        refused(
            "symlink-to-a-file-then-write",
            r"target is not a directory",
            layer(f("target", "a file"), sym("link", "target"), f("link/x", "x")),
        ),
        refused(
            "file-as-a-parent",
            r"usr is not a directory",
            ok_base,
            layer(f("usr", "now a file")),
            layer(f("usr/x", "x")),
        ),
        # -- the last component is replaced, never followed --
        contained(
            "file-over-symlink-to-outside",
            {"/out": "mine"},
            layer(sym("out", canary)),
            layer(f("out", "mine")),
        ),
        contained(
            "dir-over-symlink-to-outside",
            {"/etc": DIR, "/etc/passwd": passwd},
            layer(sym("etc", etc)),
            layer(d("etc"), f("etc/passwd", passwd)),
        ),
        contained(
            "fifo-and-symlink-over-symlink",
            {"/p": "<fifo>", "/s": link_to("/etc/shadow")},
            layer(sym("p", canary), sym("s", canary)),
            layer(Entry("p", "fifo", mode=0o600), sym("s", "/etc/shadow")),
        ),
        # -- whiteouts: resolved in the root, never out of it, never the root itself --
        contained(
            "whiteout-through-symlink",
            {"/out": link_to(str(outside)), f"/{inside}": DIR},
            layer(sym("out", str(outside))),
            layer(wh("out/canary")),
        ),
        contained(
            "opaque-through-symlink",
            {"/out": link_to(str(outside))},
            layer(sym("out", str(outside))),
            layer(opaque("out")),
        ),
        contained(
            "whiteout-of-a-symlink-to-outside",
            {"/out": None},
            layer(sym("out", canary)),
            layer(wh("out")),
        ),
        contained(
            "opaque-root-through-symlink",
            {"/usr": None, "/r": None, "/new": "n"},
            ok_base,
            layer(sym("r", "/")),
            layer(opaque("r"), f("new", "n")),
        ),
        refused("whiteout-dotdot", r"whiteout of '\.\.'", layer(d("usr"), Entry("usr/.wh..."))),
        refused("whiteout-dot", r"whiteout of '\.'", layer(d("usr"), Entry("usr/.wh.."))),
        refused("whiteout-empty", r"whiteout of ''", layer(d("usr"), Entry("usr/.wh."))),
        # -- hardlinks: resolved in the root, to what is already there --
        refused(
            "hardlink-absolute-to-outside",
            r"hardlink target .* does not exist",
            ok_base,
            layer(hard("usr/passwd", f"{etc}/passwd")),
        ),
        contained(
            "hardlink-absolute-inside",  # kaniko writes absolute link names
            {"/usr/ok": "fine", "/usr/ok2": "fine"},
            ok_base,
            layer(hard("usr/ok2", "/usr/ok")),
        ),
        refused(
            "hardlink-dotdot",
            r"hardlink target '\.\./canary' does not exist",
            ok_base,
            layer(hard("usr/canary", "../canary")),
        ),
        refused(
            "hardlink-via-symlink-to-outside",
            r"hardlink target 'out/canary' does not exist",
            layer(sym("out", str(outside)), hard("stolen", "out/canary")),
        ),
        contained(
            "hardlink-via-symlink-inside",
            {"/lib": link_to("usr"), "/libc": "fine"},
            ok_base,
            layer(sym("lib", "usr"), hard("libc", "lib/ok")),
        ),
        contained(
            "hardlink-to-symlink-to-outside",
            {"/s": link_to(canary), "/h": link_to(canary)},
            layer(sym("s", canary), hard("h", "s")),
        ),
        refused(
            "hardlink-missing-target",
            r"hardlink target 'usr/nothing' does not exist",
            ok_base,
            layer(hard("usr/link", "usr/nothing")),
        ),
        refused(
            "hardlink-to-directory",
            r"hardlink target 'usr' is a directory",
            ok_base,
            layer(hard("dirlink", "usr")),
        ),
        refused("hardlink-to-root", r"hardlink to the root", layer(hard("rootlink", "./"))),
        refused(
            # what is at the name goes first (containerd): the target is then gone
            "hardlink-to-itself",
            r"hardlink target 'usr/ok' does not exist",
            ok_base,
            layer(hard("usr/ok", "usr/ok")),
        ),
        # -- device nodes: made as root (as Docker does), refused without CAP_MKNOD --
        Case(
            "char-device",
            ((layer(d("dev"), Entry("dev/null", "char", mode=0o666, devmajor=1, devminor=3)),),),
            expect={"/dev/null": device("char", 1, 3)},
            needs_root=True,
        ),
        Case(
            "block-device-through-symlink",
            ((layer(sym("dev", etc), Entry("dev/sda", "block", mode=0o660, devmajor=8)),),),
            expect={f"/{inside}/etc/sda": device("block", 8, 0)},
            needs_root=True,
        ),
        # -- the root itself: an entry naming it is skipped --
        contained(
            "root-replaced-by-symlink", {"/a": "a"}, layer(sym("./", str(outside)), f("a", "a"))
        ),
        contained("root-replaced-by-file", {"/a": "a"}, layer(f("/", "x"), f("a", "a"))),
        # -- ported from other runtimes' own suites (containerd TestBreakouts, moby go-archive,
        #    umoci): the same layers, the outcome Docker gives --
        contained(
            "hardlink-to-symlink-never-chmods-through-it",  # containerd HardlinkSymlinkChmod
            {f"/{inside}/etc/passwd": link_to(canary), "/sketchy": link_to(canary)},
            layer(sym(f"{etc}/passwd", canary), hard("sketchy", f"{etc}/passwd", 0o777)),
        ),
        contained(
            "symlink-override-path",  # containerd SymlinkOverridePath
            {"/foo": DIR, "/foo/tmp/breakout": "678", "/tmp/breakout": "345"},
            layer(
                d("foo"),
                d("foo/tmp"),
                f("foo/tmp/breakout", "012"),
                sym("foo", "/"),
                f("foo/tmp/breakout", "345"),
                d("foo"),
                d("foo/tmp"),
                f("foo/tmp/breakout", "678"),
            ),
        ),
        contained(
            "symlink-two-hops",  # moby TestUntarSymlinkBreakout
            {"/escape": link_to("../victim"), "/victim/newfile": "pwned"},
            layer(
                d("inner"),
                sym("inner/go_up", ".."),
                sym("inner/go_up/escape", "../victim"),
                f("inner/go_up/escape/newfile", "pwned"),
            ),
        ),
        contained(
            "through-absolute-symlink-of-a-lower-layer",  # moby TestUntarThroughAbsoluteSymlink
            {"/var/run": link_to("/run"), "/run/existing/non-existing/file": "x"},
            layer(d("var"), sym("var/run", "/run"), d("run"), d("run/existing")),
            layer(f("var/run/existing/non-existing/file", "x")),
        ),
        contained(
            "hardlink-through-symlinks-up-and-out",  # containerd HardlinkRelativeUpAndOut
            {"/etc/passwd": "inside", "/localpasswd": "inside"},
            layer(
                d("etc"),
                f("etc/passwd", "inside"),
                sym("localetc", "upandout/../../../etc"),
                hard("localpasswd", "/localetc/passwd"),
            ),
        ),
        contained(
            "whiteout-through-dead-symlink",  # containerd WhiteoutDeadSymlinkParent
            {"/etc/passwd": "inside", "/dne": DIR},
            layer(d("etc"), f("etc/passwd", "inside"), sym("localetc", "/dne")),
            layer(wh("localetc/etc")),
        ),
        contained(
            "whiteout-of-a-symlink-keeps-its-target",  # containerd WhiteoutSymlink
            {"/etc/passwd": "inside", "/localetc": None},
            layer(d("etc"), f("etc/passwd", "inside"), sym("localetc", "/etc")),
            layer(wh("localetc")),
        ),
        contained("dotdot-prefixed-name", {"/..gitme": "ok"}, layer(f("..gitme", "ok"))),
        refused(
            "unknown-type",
            r"unsupported tar entry type",
            layer(Entry("weird", typeflag=b"V")),
        ),
    ]


# -- pushing and pulling ---------------------------------------------------------------------


def push_image(client: RegistryClient, repository: str, tag: str, layers: Sequence[Layer]) -> str:
    """Push an OCI image of `layers` (config with their diff_ids); returns the manifest digest."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
        }
    ).encode()
    for data in (config, *(x.blob for x in layers)):
        if not client.blob_exists(repository, digest(data)):
            client.upload_blob(repository, digest(data), data, len(data))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
            "layers": [
                {"mediaType": x.media_type, "digest": x.digest, "size": len(x.blob)} for x in layers
            ],
        }
    ).encode()
    client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    return digest(manifest)


def pull_layers(
    client: RegistryClient,
    cache: BlobCache,
    repository: str,
    reference: str,
    mirrors: Sequence[str] = (),
) -> list[tuple[Path, str, str | None]]:
    """Fetch an image's layers into `cache`: (blob path, media type, diff_id) for apply_image."""
    manifest = client.get_manifest(repository, reference).json()
    config_ref = manifest["config"]
    config = json.loads(
        b"".join(client.get_blob(repository, config_ref["digest"], size=config_ref["size"]))
    )
    diff_ids = config["rootfs"]["diff_ids"]
    descriptors = manifest["layers"]
    assert len(diff_ids) == len(descriptors)
    paths = cache.fetch_all(
        client,
        [BlobRef(repository, x["digest"], x["size"], tuple(mirrors)) for x in descriptors],
    )
    return [
        (paths[x["digest"]], x["mediaType"], diff_id)
        for x, diff_id in zip(descriptors, diff_ids, strict=True)
    ]
