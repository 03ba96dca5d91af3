"""The options of a `RegistryClient`: how it connects, retries and authenticates."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryOptions:
    """How a `RegistryClient` connects, retries and authenticates."""

    insecure: tuple[str, ...] = ()
    """Extra host[:port]s allowed over plain http (loopback hosts always are)."""
    ca_bundle: str | None = None
    """A PEM file of CA certificates to verify TLS with (default: the system's store)."""
    timeout: float = 30.0
    """Seconds for connecting, and between bytes read or written."""
    max_connections: int = 16
    """Connection pool size, and the number of requests in flight at once."""
    retries: int = 6
    """Retries of a transient failure, after the first attempt."""
    backoff: float = 0.2
    """Base of the exponential backoff, in seconds."""
    max_backoff: float = 10.0
    """Ceiling of one backoff sleep, in seconds."""
    max_retry_after: float = 60.0
    """Ceiling on a registry's Retry-After, in seconds."""
    docker_config: str | None = None
    """Directory with Docker's config.json (default: $DOCKER_CONFIG, else ~/.docker)."""
    tags_page_size: int = 1000
    """Tags asked for per page (`?n=`) when listing tags."""

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        if self.tags_page_size < 1:
            raise ValueError("tags_page_size must be at least 1")
