"""One request to a repository: on the scheme its host answers, with the Authorization the host
asks for (renewed once on a 401/403), under the retry policy; a request that gets no reply is
a RegistryError."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TypeAlias

import httpx

from . import errors
from .auth import Authenticator
from .challenges import Scopes, repository_scope
from .errors import NotFound, Redactor, RegistryError
from .ping import Host, Hosts
from .reference import Repository, parse_repository
from .session import Session

# A request body: bytes, or a callable giving a fresh iterator of chunks for every attempt.
Body: TypeAlias = bytes | Callable[[], Iterable[bytes]]


def pull(repo: Repository) -> Scopes:
    return (repository_scope(repo.path, "pull"),)


def push(repo: Repository) -> Scopes:
    return (repository_scope(repo.path, "pull,push"),)


def api_url(host: Host, repo: Repository, suffix: str) -> str:
    """The API URL of `suffix` ("manifests/v1", "blobs/uploads/", ...) under `repo`."""
    return f"{host.base}/v2/{repo.path}/{suffix}"


class Remote:
    """Requests to registries for one client: `session` below, `hosts` and `auth` beside it."""

    def __init__(
        self, session: Session, hosts: Hosts, auth: Authenticator, redactor: Redactor
    ) -> None:
        self.session = session
        self._hosts = hosts
        self._auth = auth
        self._redact = redactor

    def target(self, repository: str) -> tuple[Repository, Host]:
        """The repository a full name names, and its host (pinged)."""
        repo = parse_repository(repository)
        return repo, self._hosts.get(repo)

    def call(
        self,
        method: str,
        host: Host,
        url: str,
        *,
        kind: str,
        scopes: Scopes,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
        retries: int | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """A request with auth and retries, read whole (`Session.send` says how `stream`
        differs); `kind` is what `stats` counts it as. GETs and HEADs follow redirects (blob
        stores), without our Authorization when they leave the host."""
        same_host = url.startswith(host.base + "/")
        reauthenticated = False

        def attempt() -> httpx.Response:
            nonlocal reauthenticated
            while True:
                sent, used_token = headers, None
                if same_host:
                    authorization, used_token = self._auth.authorization(host.registry, scopes)
                    if authorization:
                        sent = {**(headers or {}), "Authorization": authorization}
                content = body if body is None or isinstance(body, bytes) else body()
                request = self.session.request(method, url, headers=sent, content=content)
                response = self.session.send(
                    request, kind=kind, stream=stream, follow_redirects=method in ("GET", "HEAD")
                )
                if response.status_code not in (401, 403) or not same_host:
                    return response
                renewed = not reauthenticated and self._auth.reauthenticate(
                    host.registry, scopes, response, used_token
                )
                if not renewed:
                    raise self._auth.error(host.registry, scopes, response, method, url)
                reauthenticated = True

        try:
            return self.session.retrying(attempt, retries=retries)
        except RegistryError:
            raise
        except Exception as exc:
            errors.raise_transport(
                exc, method, url, host.registry, plain_ok=host.plain_ok, redactor=self._redact
            )

    def redact(self, text: str) -> str:
        """`text` without the secrets this client has seen, or anything shaped like one."""
        return self._redact(text)

    def status_error(self, response: httpx.Response, method: str, url: str) -> RegistryError:
        """The error for an unexpected reply (NotFound for 404 and *_UNKNOWN codes)."""
        return errors.status_error(response, method, url, self._redact)

    def not_found(self, response: httpx.Response, method: str, url: str, what: str) -> NotFound:
        return errors.not_found(response, method, url, what, self._redact)

    def expect(
        self, response: httpx.Response, statuses: Collection[int], method: str, url: str
    ) -> None:
        """Nothing when the reply has one of `statuses`; else raise its `status_error`."""
        errors.expect(response, statuses, method, url, self._redact)
