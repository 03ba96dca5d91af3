"""Per registry host, what one GET /v2/ tells: the scheme it answers on, and its auth challenge.

Transport security: https always; plain http only for loopback hosts and hosts listed in
`RegistryOptions.insecure`, which are asked over https first (as docker does) and over http
when https fails. A certificate that does not verify is an error, never a reason to fall back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import httpx

from .auth import Authenticator
from .errors import Redactor, RegistryError, raise_transport
from .reference import Repository, allows_plain_http
from .retry import RETRYABLE_STATUSES, certificate_error, is_transient_error
from .session import Session

log = logging.getLogger(__name__)


@dataclass
class Host:
    """A registry host: its names, whether it may be spoken to over http, and once pinged,
    `base`, the scheme and host[:port] its API answers on."""

    registry: str
    api_host: str
    plain_ok: bool
    base: str = ""
    ready: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Hosts:
    """The hosts a client has spoken to, each pinged once (by one thread); thread-safe."""

    def __init__(
        self,
        session: Session,
        auth: Authenticator,
        redactor: Redactor,
        insecure: tuple[str, ...],
    ) -> None:
        self._session = session
        self._auth = auth
        self._redact = redactor
        self._insecure = insecure
        self._hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def get(self, repo: Repository) -> Host:
        """The host of `repo`, pinged."""
        host = self._hosts.get(repo.registry)  # hosts are only ever added
        if host is None:
            plain_ok = allows_plain_http(repo.api_host, self._insecure)
            with self._lock:
                host = self._hosts.setdefault(
                    repo.registry, Host(repo.registry, repo.api_host, plain_ok)
                )
        if not host.ready:
            with host.lock:
                if not host.ready:
                    self._ping(host)
                    host.ready = True
        return host

    def _ping(self, host: Host) -> None:
        """Learn a host's scheme and auth challenge from GET /v2/, under the retry policy."""

        def transient(exc: Exception) -> bool:
            # A host allowed plain http is often a local registry that is not up yet: any
            # failure to reach it is worth another try.
            return not isinstance(exc, RegistryError) and (is_transient_error(exc) or host.plain_ok)

        try:
            response = self._session.retrying(lambda: self._probe(host), transient=transient)
        except RegistryError:
            raise
        except Exception as exc:
            raise_transport(
                exc,
                "GET",
                f"https://{host.api_host}/v2/",
                host.registry,
                plain_ok=host.plain_ok,
                redactor=self._redact,
            )
        host.base = f"{response.url.scheme}://{host.api_host}"
        if response.status_code == 401:
            self._auth.learn(host.registry, response)
        log.debug("%s: %s, auth %s", host.registry, host.base, self._auth.scheme(host.registry))

    def _probe(self, host: Host) -> httpx.Response:
        """One GET /v2/ over https, then (where allowed) over http when https failed; the
        https failure is raised when neither answers. A certificate that does not verify is
        raised at once: it must never lead to plain http."""
        url = f"https://{host.api_host}/v2/"
        try:
            return self._get(url)
        except Exception as exc:
            if certificate_error(exc) is not None:
                raise_transport(
                    exc, "GET", url, host.registry, plain_ok=host.plain_ok, redactor=self._redact
                )
            if not host.plain_ok:
                raise
            failure = exc
        try:
            response: httpx.Response | None = self._get(f"http://{host.api_host}/v2/")
        except Exception:
            response = None
        # A TLS server asked in plain http answers 400; only take what a registry would say.
        if response is not None and (
            response.status_code in (200, 401, *RETRYABLE_STATUSES)
            or "Docker-Distribution-Api-Version" in response.headers
        ):
            log.debug("%s does not answer https; using http", host.api_host)
            return response
        raise failure

    def _get(self, url: str) -> httpx.Response:
        return self._session.send(self._session.request("GET", url), kind="ping")
