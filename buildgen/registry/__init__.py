"""An OCI distribution client (manifests, blobs, tags) with Docker credentials and retries.

    with RegistryClient(RegistryOptions(insecure=("registry.internal:5000",))) as client:
        client.ensure_blob("registry.internal:5000/evals/x", digest, size, source_repository=...)
        digest = client.put_manifest("registry.internal:5000/evals/x", "v1", data, OCI_INDEX)

Modules, one concern each: `client` (the facade), `options`; the registry API in `manifests`,
`blobs`, `tags`; one request in `remote`, on `session` (the httpx.Client, the bound on requests
in flight, the retry loop), `ping` (scheme and challenge per host) and `auth` (tokens), with
`challenges` and `credentials` (Docker's stored logins); `retry` (the retry policy), `media`
(media types, descriptors, digests), `reference` (repository names, hosts), `errors`
(exceptions, error messages and redaction).
"""

from .client import RegistryClient
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
from .options import RegistryOptions
from .reference import Reference, Repository, parse_reference, parse_repository
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
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryOptions",
    "Repository",
    "RetryPolicy",
    "parse_reference",
    "parse_repository",
    "redact",
    "sha256_digest",
]
