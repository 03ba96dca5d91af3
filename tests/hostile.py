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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from buildgen.blobcache import BlobCache, BlobRef
from buildgen.registry import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RegistryClient

MTIME = 1_700_000_000
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

_TYPES = {
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
    """One tar entry; `kind` is a key of _TYPES, or `typeflag` overrides it (raw bytes)."""

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
            info.type = e.typeflag if e.typeflag is not None else _TYPES[e.kind]
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


@dataclass(frozen=True)
class Case:
    """Images applied in order into one rootfs; the last layer must fail with `error`."""

    name: str
    images: tuple[tuple[Layer, ...], ...]
    error: str
    """A regular expression the ExtractionError's message must match."""


def corpus(outside: Path) -> list[Case]:
    """The hostile cases; `outside` holds `canary` and `etc/passwd` (absolute paths are used)."""
    etc = str(outside / "etc")
    canary = str(outside / "canary")
    # A name under the real /etc that exists nowhere: a broken extractor could only create it.
    stray = f"buildgen-hostile-{uuid.uuid4().hex[:12]}"
    ok_base = layer(d("usr"), f("usr/ok", "fine"))

    def one(name: str, error: str, *layers: Layer) -> Case:
        return Case(name, (tuple(layers),), error)

    return [
        one("dotdot", r"'\.\.' component", layer(f("../canary", "pwned"))),
        one("dotdot-nested", r"'\.\.' component", layer(d("a"), f("a/../../canary", "pwned"))),
        one("dotdot-dir", r"'\.\.' component", layer(d("../evil"))),
        one("absolute", r"absolute path", layer(f(f"{canary}", "pwned"))),
        one("absolute-etc", r"absolute path", layer(f(f"/etc/{stray}", "pwned"))),
        one(
            "symlink-then-write-same-layer",
            r"etc is a symlink .* never written through a symlink",
            layer(sym("etc", etc), f("etc/passwd", "root::0:0::/:/bin/sh\n")),
        ),
        one(
            "symlink-to-real-etc-then-write",
            r"etc is a symlink",
            layer(sym("etc", "/etc"), f(f"etc/{stray}", "pwned")),
        ),
        one(
            "symlink-relative-escape",
            r"up is a symlink",
            layer(sym("up", "../../../../../../.."), f(f"up/{canary.lstrip('/')}", "pwned")),
        ),
        one(
            "symlink-across-layers",
            r"etc is a symlink",
            layer(sym("etc", etc)),
            layer(f("etc/passwd", "root::0:0::/:/bin/sh\n")),
        ),
        Case(
            "symlink-across-images",
            ((layer(d("usr"), sym("etc", etc)),), (layer(f("etc/passwd", "pwned\n")),)),
            r"etc is a symlink",
        ),
        one(
            "symlink-inside-not-followed",
            r"a is a symlink \(to 'b'\)",
            layer(d("b"), sym("a", "b"), f("a/file", "x")),
        ),
        one(
            "symlink-then-dir-through-it",
            r"etc is a symlink",
            layer(sym("etc", etc), d("etc/sub")),
        ),
        one(
            "symlink-loop",
            r"a is a symlink \(to 'b'\)",
            layer(sym("a", "b"), sym("b", "a"), f("a/x", "loop")),
        ),
        one(
            "whiteout-through-symlink",
            r"out is a symlink",
            layer(sym("out", str(outside))),
            layer(wh("out/canary")),
        ),
        one(
            "opaque-through-symlink",
            r"out is a symlink",
            layer(sym("out", str(outside))),
            layer(opaque("out")),
        ),
        one(
            "hardlink-absolute",
            r"hardlink target .* absolute path",
            ok_base,
            layer(hard("usr/passwd", f"{etc}/passwd")),
        ),
        one(
            "hardlink-dotdot",
            r"hardlink target .* '\.\.' component",
            ok_base,
            layer(hard("usr/canary", "../canary")),
        ),
        one(
            "hardlink-via-symlink",
            r"out is a symlink",
            layer(sym("out", str(outside)), hard("stolen", "out/canary")),
        ),
        one(
            "hardlink-missing-target",
            r"hardlink target 'usr/nothing' does not exist",
            ok_base,
            layer(hard("usr/link", "usr/nothing")),
        ),
        one(
            "hardlink-to-directory",
            r"hardlink target 'usr' is a directory",
            ok_base,
            layer(hard("dirlink", "usr")),
        ),
        one(
            "char-device",
            r"device nodes are refused",
            layer(Entry("null", "char", mode=0o666, devmajor=1, devminor=3)),
        ),
        one(
            "block-device",
            r"device nodes are refused",
            layer(Entry("sda", "block", mode=0o660, devmajor=8, devminor=0)),
        ),
        one(
            "root-replaced-by-symlink",
            r"root directory can only be listed as a directory",
            layer(sym("./", str(outside))),
        ),
        one("whiteout-dotdot", r"whiteout of '\.\.'", layer(d("usr"), Entry("usr/.wh..."))),
        one(
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
