"""Media types, descriptors and manifests, and the digests that name them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# Accept header for manifest requests: without it distribution answers 404 for OCI content.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_digest(reference: str) -> bool:
    """True for a sha256 or sha512 digest ("sha256:" + 64 hex)."""
    return _DIGEST.match(reference) is not None


def check_digest(digest: str) -> str:
    """`digest` itself, or ValueError when it is not a sha256/sha512 digest."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256/sha512 digest: {digest!r}")
    return digest


def check_reference(reference: str) -> str:
    """`reference` itself (a tag or a digest), or ValueError."""
    if not (is_digest(reference) or _TAG.match(reference)):
        raise ValueError(f"not a tag or digest: {reference!r}")
    return reference


def sha256_digest(data: bytes) -> str:
    """The "sha256:<hex>" digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a sha256/sha512 digest; ValueError for anything else."""
    algorithm, hexdigest = check_digest(digest).split(":", 1)
    return algorithm, hexdigest


def hasher(digest: str) -> hashlib._Hash:
    """A fresh hash object for the algorithm of `digest`."""
    return hashlib.new(split_digest(digest)[0])


def digest_of(data: bytes, like: str) -> str:
    """The digest of `data` with the algorithm of the digest `like`."""
    h = hasher(like)
    h.update(data)
    return f"{h.name}:{h.hexdigest()}"


def base_media_type(content_type: str | None) -> str:
    """A Content-Type without its parameters ("; charset=utf-8")."""
    return (content_type or "").split(";", 1)[0].strip()


@dataclass(frozen=True)
class Descriptor:
    """What a registry says about content without sending it: its digest, type and size."""

    digest: str
    media_type: str
    size: int

    def json(self) -> dict[str, Any]:
        """The OCI descriptor object for an index or manifest."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry stores it; `digest` is of these bytes."""

    digest: str
    media_type: str
    data: bytes

    def json(self) -> dict[str, Any]:
        """The parsed document."""
        parsed = json.loads(self.data)
        if not isinstance(parsed, dict):
            raise ValueError(f"manifest {self.digest} is not a JSON object")
        return parsed

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.digest, self.media_type, len(self.data))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES
