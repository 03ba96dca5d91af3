"""Crane mode: fuse a benchmark, an agent and a gateway image into one rootfs, by digest.

`buildgen materialize` is what the crane runner runs: it takes the digest-pinned references
from the lockfile, pulls manifests and blobs (mirrors first; every digest and size verified)
into a content-addressed cache, applies the benchmark's layers, then the fusion rule: each
directory the agent and gateway provide is created with the catalog's mode and owner and filled
with that image's files under it, keeping theirs. That is exactly what the combination
Dockerfile (buildgen/build/templates/combination.Dockerfile.j2) does with COPY, from the same rule.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildgen.crane.blobcache import BlobCache, BlobRef, Prefetch
from buildgen.crane.extract import apply_image, apply_layer
from buildgen.crane.overlay import OverlayUnavailable, overlay_mount, unmount
from buildgen.crane.resolve import Pinned
from buildgen.crane.rootpath import DIR_FLAGS, PathRefused, clean, join, resolve
from buildgen.crane.treecopy import copy_tree
from buildgen.crane.unpacked import Layer, UnpackedCache, chain_id_of
from buildgen.errors import CheckFailed, ExternalToolError, UsageError
from buildgen.fsutil import read_xattrs, sha256_file
from buildgen.model.fusion import PIPELINE, Provided
from buildgen.registry import MANIFEST_TYPES, RegistryClient, RegistryError, RegistryOptions
from buildgen.registry.reference import parse_reference, parse_repository

log = logging.getLogger(__name__)

TAR = "application/vnd.oci.image.layer.v1.tar"
# Unpacked layers take about this many times their compressed size (a safe side estimate).
EXPANSION = 3
DEFAULT_UNPACKED_LIMIT = 20 * 10**9  # bytes of files kept unpacked in the cache


@dataclass
class Pulled:
    """A platform manifest and its config (both verified and cached); its layers, to fetch."""

    manifest_digest: str
    config_digest: str
    layers: list[tuple[BlobRef, str, str | None]]  # (blob, media type, diff_id)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def diff_ids(self) -> list[str | None]:
        return [diff_id for _, _, diff_id in self.layers]

    def ready(self, fetches: Prefetch) -> Iterator[Layer]:
        """The layers in order, each as soon as its blob is in the cache, verified."""
        for ref, media_type, diff_id in self.layers:
            yield fetches.path(ref.digest), media_type, diff_id


def _mirrored(repository: str, mirrors: Sequence[str]) -> list[str]:
    """The same repository path on each mirror registry (a pull-through cache of the origin)."""
    path = parse_repository(repository).path
    return [f"{mirror.rstrip('/')}/{path}" for mirror in mirrors]


def _manifest(client: RegistryClient, repository: str, digest: str, mirrors: Sequence[str]) -> Any:
    errors = []
    for source in [*_mirrored(repository, mirrors), repository]:
        try:
            manifest = client.get_manifest(source, digest)  # verifies the bytes' digest
        except RegistryError as exc:
            errors.append(f"{source}: {exc}")
            continue
        if manifest.digest != digest or manifest.media_type not in MANIFEST_TYPES:
            errors.append(f"{source}: {manifest.media_type} is not an image manifest")
            continue
        return manifest
    raise ExternalToolError(f"cannot get {repository}@{digest}: " + "; ".join(errors))


def pull(
    client: RegistryClient, cache: BlobCache, pinned: Pinned, mirrors: Sequence[str]
) -> Pulled:
    """Fetch one image's platform manifest and config into the cache, verified; the layers
    are fetched by the caller (`BlobCache.prefetch`), so that unpacking overlaps downloading."""
    repository = parse_reference(pinned.reference).repository  # a tag beside the digest: ignored
    manifest = _manifest(client, repository, pinned.platform_digest, mirrors)
    data = manifest.json()
    config_ref = data["config"]
    mirrored = tuple(_mirrored(repository, mirrors))
    config_path = cache.fetch(
        client, repository, config_ref["digest"], int(config_ref["size"]), mirrored
    )
    config = json.loads(config_path.read_bytes())
    diff_ids: list[str | None] = list(config.get("rootfs", {}).get("diff_ids", []))
    layers = data.get("layers", [])
    if len(diff_ids) != len(layers):
        diff_ids = [None] * len(layers)
    return Pulled(
        manifest.digest,
        config_ref["digest"],
        [
            (
                BlobRef(repository, layer["digest"], int(layer["size"]), mirrored),
                layer["mediaType"],
                diff_id,
            )
            for layer, diff_id in zip(layers, diff_ids, strict=True)
        ],
        {
            "key": pinned.key,
            "reference": pinned.reference,
            "manifest": manifest.digest,
            "config": config_ref["digest"],
            "layers": [layer["digest"] for layer in layers],
        },
    )


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: where its free space can be asked."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_space(parts: Sequence[Pinned], rootfs: Path) -> None:
    """Refuse before pulling when the disk is clearly too small (sizes come from the lock)."""
    total = sum(part.size for part in parts)
    need = total * EXPANSION
    probe = _existing(rootfs)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise CheckFailed(
            f"not enough disk: {_mb(free)} free at {probe}, the images need about {_mb(need)} "
            f"({_mb(total)} compressed, unpacked about {EXPANSION}x); free some or use another "
            "--rootfs / --cache"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def fuse(rootfs: Path, staging: Path, provided: Provided, label: str) -> None:
    """Add `provided` from an image unpacked at `staging` to `rootfs`, as COPY --from does: the
    directory gets the rule's mode and owner, its contents keep theirs.

    Both sides are walked from fds, never through a symlink out of their root: the provided
    path is resolved inside `staging` (as BuildKit resolves a COPY source in its image), its
    tree is read with openat(O_NOFOLLOW) one directory at a time, and it is written to
    `rootfs` as an uncompressed layer by the same extractor as every layer, which resolves the
    destination inside `rootfs` (a benchmark's `/opt -> usr/opt` is followed, in the rootfs).
    """
    root_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = resolve(root_fd, clean(provided.path))
    except PathRefused as exc:
        raise ExternalToolError(f"{label}: {provided.path}: {exc}") from None
    finally:
        os.close(root_fd)
    if found is None:
        raise ExternalToolError(
            f"{label} has no directory {provided.path}, which the catalog says it provides"
        )
    real, source_fd = found
    with tempfile.NamedTemporaryFile(dir=rootfs.parent, suffix=".tar", delete=False) as handle:
        layer = Path(handle.name)
    try:
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            arcname = "/".join(clean(provided.path))
            top = _tar_info(arcname, os.fstat(source_fd), tarfile.DIRTYPE)
            top.mode, top.uid, top.gid = provided.mode, provided.uid, provided.gid
            top.pax_headers = {}  # whole seconds, as before; no xattrs of the image's
            tar.addfile(top)
            _add_tree(tar, source_fd, arcname, {})
        digest = sha256_file(layer)
        apply_layer(rootfs, layer, TAR, digest=digest)
    finally:
        os.close(source_fd)
        layer.unlink(missing_ok=True)
    log.debug("%s: fused %s (from %s in the image)", label, provided.path, "/" + join(real))


def _tar_info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    """A tar header for `st` with its exact mtime (a pax record: tarfile keeps only seconds)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    seconds, nanos = divmod(st.st_mtime_ns, 1_000_000_000)
    info.mtime = seconds
    if nanos:
        info.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    return info


def _add_tree(
    tar: tarfile.TarFile, dir_fd: int, prefix: str, links: dict[tuple[int, int], str]
) -> None:
    """Add what is in the directory `dir_fd` to `tar` under `prefix`, sorted, hardlinks as
    links to the first name of their inode; no symlink followed."""
    for name in sorted(os.listdir(dir_fd)):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        arcname = f"{prefix}/{name}"
        mode = st.st_mode
        kind = _TAR_TYPES.get(stat.S_IFMT(mode))
        if kind is None:
            raise ExternalToolError(f"{arcname}: a socket cannot be copied into the rootfs")
        info = _tar_info(arcname, st, kind)
        xattrs = read_xattrs(f"/proc/self/fd/{dir_fd}/{name}")
        if xattrs:
            info.pax_headers = {
                **info.pax_headers,
                **{
                    f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                    for key, value in xattrs
                },
            }
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            first = links.setdefault((st.st_dev, st.st_ino), arcname)
            if first != arcname:
                info.type, info.linkname = tarfile.LNKTYPE, first
                tar.addfile(info)
                continue
        if stat.S_ISDIR(mode):
            tar.addfile(info)
            child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            try:
                _add_tree(tar, child, arcname, links)
            finally:
                os.close(child)
        elif stat.S_ISREG(mode):
            info.size = st.st_size
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as content:
                tar.addfile(info, content)
        elif stat.S_ISLNK(mode):
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            tar.addfile(info)
        else:  # FIFOs and device nodes
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            tar.addfile(info)


_TAR_TYPES = {
    stat.S_IFDIR: tarfile.DIRTYPE,
    stat.S_IFREG: tarfile.REGTYPE,
    stat.S_IFLNK: tarfile.SYMTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
}


def _from_tree(tree: Path, rootfs: Path, overlay: bool) -> str:
    """Make `rootfs` from an unpacked tree: an overlay mount of it, else a copy; which."""
    if overlay:
        try:
            upper = overlay_mount(tree, rootfs)
        except OverlayUnavailable as exc:
            log.warning("--overlay: cannot mount an overlay (%s); copying the image instead", exc)
        else:
            log.info("%s is an overlay mount (writes go to %s); `buildgen materialize "
                     "--unmount --rootfs %s` removes it", rootfs, upper, rootfs)  # fmt: skip
            return "overlay"
    if rootfs.exists():
        rootfs.rmdir()  # empty (checked by the caller): copy_tree makes it, 0700 until done
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    copy_tree(tree, rootfs, workers=2)
    return "copy"


def _room_for_a_tree(unpacked: UnpackedCache, benchmark: Pinned) -> bool:
    """Whether the disk holds the benchmark unpacked twice: in the cache and in the rootfs."""
    probe = _existing(unpacked.root)
    if shutil.disk_usage(probe).free < 2 * benchmark.size * EXPANSION:
        log.info("not keeping the unpacked image: too little disk at %s", probe)
        return False
    return True


def materialize(
    client: RegistryClient,
    benchmark: Pinned,
    others: Sequence[Pinned],
    *,
    rootfs: Path,
    cache: BlobCache,
    mirrors: Sequence[str] = (),
    unpacked: UnpackedCache | None = None,
    overlay: bool = False,
    pipeline: Path | None = None,
) -> dict[str, Any]:
    """Build the fused rootfs at `rootfs` (which must not exist or be empty); return the record
    of every digest used.

    Every layer of every image is downloaded in parallel, and each is unpacked as soon as it and
    the ones before it are there. With `unpacked`, the benchmark image is extracted once into
    that cache (by chain ID) and the rootfs is a copy of it: the next run only copies. With
    `overlay` too, the rootfs is an overlay mount of that tree instead of a copy (see
    overlay.py), when this process may mount one; else it is a copy. With `pipeline`, that
    tree's /opt/eval is fused last, as every combination image has the catalog's pipeline."""
    if rootfs.is_symlink() or (rootfs.exists() and not rootfs.is_dir()):
        raise UsageError(f"--rootfs {rootfs} is not a directory: give a new directory")
    if rootfs.exists() and any(rootfs.iterdir()):
        raise UsageError(f"--rootfs {rootfs} is not empty: give a new directory")
    existed = rootfs.exists()
    parts = [benchmark, *others]
    check_space(parts, rootfs)
    pulled = {part.role: pull(client, cache, part, mirrors) for part in parts}
    image = pulled[benchmark.role]
    refs = [ref for part in parts for ref, _, _ in pulled[part.role].layers]
    unpacked_record: dict[str, Any] | None = None
    try:
        with contextlib.ExitStack() as held, cache.prefetch(client, refs) as fetches:
            chain = chain_id_of(image.diff_ids)  # None: the image cannot be kept unpacked
            if unpacked and chain:  # no process evicts the tree while it is copied
                held.enter_context(unpacked.hold(chain))
            tree = unpacked.get(image.diff_ids) if unpacked and chain else None
            if tree is not None:
                unpacked_record = {"chainId": chain, "reused": True}
            elif unpacked and chain and _room_for_a_tree(unpacked, benchmark):
                tree = unpacked.build(image.diff_ids, image.ready(fetches))
                unpacked_record = {"chainId": chain, "reused": False}
            if tree is not None and unpacked_record is not None:
                unpacked_record["rootfs"] = _from_tree(tree, rootfs, overlay)
                held.close()  # copied, or mounted (which keeps it from eviction itself)
            else:
                rootfs.mkdir(parents=True, exist_ok=True)
                rootfs.chmod(0o755)
                apply_image(rootfs, image.ready(fetches))
            for part in others:
                staging = Path(tempfile.mkdtemp(prefix=f".{part.role}-", dir=rootfs.parent))
                try:
                    os.chmod(staging, 0o700)  # holds root-only files while it exists
                    apply_image(staging / "rootfs", pulled[part.role].ready(fetches))
                    for provided in part.provides:
                        fuse(rootfs, staging / "rootfs", provided, part.key)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            if pipeline is not None:
                fuse(rootfs, pipeline, PIPELINE, "the pipeline")
            fetches.wait()  # every blob the record names is in the cache, verified
    except BaseException:
        # Nothing half-made stays: the rootfs was new or empty, so all of it goes (rmtree
        # never follows a symlink on Linux: it walks from fds).
        if unpacked_record and unpacked_record.get("rootfs") == "overlay":
            unmount(rootfs)
        elif rootfs.is_dir() and not rootfs.is_symlink():
            shutil.rmtree(rootfs, ignore_errors=True)
            if existed:
                rootfs.mkdir(exist_ok=True)
        raise
    record: dict[str, Any] = {"platform": None, "images": {}}
    if unpacked_record is not None:
        record["unpacked"] = unpacked_record
    for part in parts:
        entry = pulled[part.role].record
        if part.provides:
            entry["provides"] = [p.to_json() for p in part.provides]
        record["images"][part.role] = entry
    return record


# -- the whole of `buildgen materialize` -----------------------------------------------------


@dataclass(frozen=True)
class MaterializeOptions:
    """Where `buildgen materialize` fuses the images, and what it keeps between runs."""

    rootfs: Path  # a new or empty directory
    cache: Path | None = None  # default: $XDG_CACHE_HOME/buildgen, else ~/.cache/buildgen
    mirrors: tuple[str, ...] = ()  # registries tried first (host[:port])
    unpacked_limit: int = DEFAULT_UNPACKED_LIMIT  # 0: keep no image unpacked
    overlay: bool = False  # the rootfs an overlay mount of the unpacked image, where it may be
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    pipeline: Path | None = None  # a tree whose opt/eval is fused in too (fusion.PIPELINE)


def default_cache() -> Path:
    """The cache of blobs and unpacked images when --cache is not given."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buildgen"


def materialize_pinned(
    platform: str, pinned: Sequence[Pinned], options: MaterializeOptions
) -> dict[str, Any]:
    """`buildgen materialize`: fuse `pinned` (the benchmark, then what adds to it) for
    `platform` into `options.rootfs`, through the blob cache and (a limit above 0) the unpacked
    cache under `options.cache`; return the record of every digest used."""
    benchmark, *others = pinned
    for part in others:
        if not part.provides:
            raise UsageError(f"{part.key}: the lockfile says nothing it provides; "
                             "re-run `buildgen lock` with this buildgen")  # fmt: skip
    cache_root = options.cache or default_cache()
    unpacked = None
    if options.unpacked_limit > 0:
        unpacked = UnpackedCache(cache_root / "unpacked", limit=options.unpacked_limit)
    with RegistryClient(options.registry) as client:
        record = materialize(client, benchmark, others, rootfs=options.rootfs,
                             cache=BlobCache(cache_root), mirrors=options.mirrors,
                             unpacked=unpacked, overlay=options.overlay,
                             pipeline=options.pipeline)  # fmt: skip
    record["platform"] = platform
    return record
