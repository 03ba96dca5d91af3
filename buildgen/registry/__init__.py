"""An OCI distribution client (manifests, blobs, tags) with Docker credentials and retries.

    with RegistryClient(RegistryOptions(insecure=("registry.internal:5000",))) as client:
        client.ensure_blob("registry.internal:5000/evals/x", digest, size, source_repository=...)
        digest = client.put_manifest("registry.internal:5000/evals/x", "v1", data, OCI_INDEX)

Modules: `client` (requests), `auth` (credentials, challenges, tokens), `retry` (the retry
policy), `media` (media types, descriptors, digests), `reference` (repository names, hosts),
`errors` (exceptions and redaction).
"""

from .client import RegistryClient, RegistryOptions
from .errors import AuthError, NotFound, RegistryError, redact
from .media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    sha256_digest,
)
from .reference import Repository, parse_repository
from .retry import RetryPolicy

__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "AuthError",
    "Descriptor",
    "Manifest",
    "NotFound",
    "RegistryClient",
    "RegistryError",
    "RegistryOptions",
    "Repository",
    "RetryPolicy",
    "parse_repository",
    "redact",
    "sha256_digest",
]
