"""Token handling: the Authorization header each request carries, and the tokens behind it.

Per registry host, `Authenticator` keeps the challenge the host answered with (learnt from its
ping, updated by a later 401) and, for Bearer, the tokens its token service gave, cached per
scope set until shortly before they expire; for Basic, the stored credentials go with every
request. A 401/403 gets one renewal (a new challenge, or a token the registry stopped taking)
before it is an error that says how to log in.

Nothing here logs or formats a secret: `Token` keeps its value out of repr, each token and
password seen is added to the client's `Redactor`, and error messages name where credentials
came from, never what they are.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx

from .challenges import Challenge, Scopes, challenge_of, merge_scopes, without_scope
from .credentials import Credentials, DockerCredentials
from .errors import AuthError, Redactor, RegistryError, error_details, url_path
from .reference import allows_plain_http, login_hint
from .session import Session

CLIENT_ID = "buildgen"
DEFAULT_TOKEN_LIFETIME = 60.0
# Tokens are dropped this long before they expire (at most half their lifetime), so a request
# never starts with a token that runs out on the way.
TOKEN_EXPIRY_MARGIN = 10.0


@dataclass(frozen=True)
class Token:
    """A bearer token and the monotonic time after which it is not reused."""

    value: str = field(repr=False)
    expires_at: float

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at


def token_request(
    challenge: Challenge, scopes: Scopes, credentials: Credentials | None
) -> httpx.Request:
    """The request that asks the challenge's realm for a token with `scopes`.

    With an identity token: the OAuth2 refresh-token grant (POST, form). Otherwise a GET with
    the scopes as repeated `scope` parameters, with Basic auth when we have a password.
    """
    realm = challenge.realm
    if not realm:
        raise ValueError("a bearer challenge without a realm")
    service = challenge.service
    if credentials is not None and credentials.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.identity_token,
            "client_id": CLIENT_ID,
            # The OAuth2 endpoint takes one space-delimited scope parameter.
            "scope": " ".join(scopes),
        }
        if service:
            form["service"] = service
        return httpx.Request("POST", realm, data=form)
    params: list[tuple[str, str | int | float | bool | None]] = []
    if service:
        params.append(("service", service))
    params.extend(("scope", scope) for scope in scopes)
    params.append(("client_id", CLIENT_ID))
    headers: dict[str, str] = {}
    basic = credentials.basic_header() if credentials is not None else None
    if basic is not None and credentials is not None and credentials.username is not None:
        params.append(("account", credentials.username))
        headers["Authorization"] = basic
    return httpx.Request("GET", realm, params=params, headers=headers)


def parse_token_response(body: bytes, now: float | None = None) -> Token:
    """The token (`token` or `access_token`) and its expiry from a token service's JSON reply."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError("the token service did not answer with a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise ValueError("the token service's answer has no token")
    lifetime = data.get("expires_in")
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    margin = min(TOKEN_EXPIRY_MARGIN, lifetime / 2)
    start = time.monotonic() if now is None else now
    return Token(value=value, expires_at=start + float(lifetime) - margin)


class TokenCache:
    """Tokens per (registry, scopes), with one lock per key so one thread fetches; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, Scopes], Token] = {}
        self._locks: dict[tuple[str, Scopes], threading.Lock] = {}

    def lock(self, registry: str, scopes: Scopes) -> threading.Lock:
        """The lock to hold while fetching the token for this key."""
        with self._lock:
            return self._locks.setdefault((registry, scopes), threading.Lock())

    def get(self, registry: str, scopes: Scopes) -> Token | None:
        with self._lock:
            token = self._tokens.get((registry, scopes))
        return token if token is not None and token.fresh() else None

    def put(self, registry: str, scopes: Scopes, token: Token) -> None:
        with self._lock:
            self._tokens[(registry, scopes)] = token


class Authenticator:
    """The Authorization header of each request to a registry host (see above); thread-safe."""

    def __init__(
        self,
        session: Session,
        credentials: DockerCredentials,
        redactor: Redactor,
        insecure: tuple[str, ...],
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._redact = redactor
        self._insecure = insecure
        self._challenges: dict[str, Challenge] = {}
        self._tokens = TokenCache()

    def learn(self, registry: str, response: httpx.Response) -> None:
        """Take the challenge of a 401 to the registry's ping as the host's."""
        challenge = challenge_of(response)
        if challenge is not None:
            self._challenges[registry] = without_scope(challenge)

    def scheme(self, registry: str) -> str | None:
        """The auth scheme the registry asked for ("bearer", "basic"), if any."""
        challenge = self._challenges.get(registry)
        return challenge.scheme if challenge is not None else None

    def authorization(self, registry: str, scopes: Scopes) -> tuple[str | None, str | None]:
        """The Authorization header to send (or None), and the bearer token in it."""
        challenge = self._challenges.get(registry)
        if challenge is None:
            return None, None
        if challenge.scheme == "basic":
            credentials = self._creds(registry)
            return (credentials.basic_header() if credentials else None), None
        token = self._tokens.get(registry, scopes)
        if token is None and len(scopes) == 1 and scopes[0].endswith(":pull"):
            # A pull,push token of the same repository serves reads too.
            token = self._tokens.get(registry, (scopes[0] + ",push",))
        if token is None:
            value = self._token(registry, challenge, scopes, stale=None)
        else:
            value = token.value
        return f"Bearer {value}", value

    def reauthenticate(
        self, registry: str, scopes: Scopes, response: httpx.Response, used_token: str | None
    ) -> bool:
        """After a 401/403: learn the challenge and get fresh auth. False when nothing changes."""
        previous = self._challenges.get(registry)
        challenge = challenge_of(response)
        if challenge is None:
            if response.status_code == 403 and used_token is not None and previous is not None:
                challenge = previous  # the token may have been revoked: try a new one
            else:
                return False
        learnt = self._challenges[registry] = without_scope(challenge)
        if challenge.scheme == "basic":
            # Worth another try only if we were not already sending our credentials.
            already_sent = previous is not None and previous.scheme == "basic"
            return not already_sent and self._creds(registry) is not None
        self._token(registry, learnt, scopes, stale=used_token, extra=challenge.scopes)
        return True

    def error(
        self, registry: str, scopes: Scopes, response: httpx.Response, method: str, url: str
    ) -> AuthError:
        """The error for a refusal that renewed auth did not cure: what we had, how to log in."""
        codes, text = error_details(response)
        credentials = self._creds(registry)
        if credentials is None:
            config = self._credentials.config_file
            how = f"no credentials for {registry} were found in {config}"
        else:
            how = f"the credentials for {registry} from {credentials.source} were not enough"
        verb = "refused" if response.status_code == 403 else "requires authentication for"
        message = (
            f"{method} {url_path(url)}: {registry} {verb} {' '.join(scopes)} "
            f"(HTTP {response.status_code}{': ' + text if text else ''}); {how}. "
            f"Log in with `{login_hint(registry)}`, or set DOCKER_CONFIG to a directory "
            "whose config.json has credentials for it."
        )
        return AuthError(
            self._redact(message),
            status=response.status_code,
            code=codes[0] if codes else None,
            codes=codes,
            method=method,
            path=url_path(url),
        )

    def _creds(self, registry: str) -> Credentials | None:
        credentials = self._credentials.get(registry)
        if credentials is not None:
            self._redact.add(*credentials.secrets)
        return credentials

    def _token(
        self,
        registry: str,
        challenge: Challenge,
        scopes: Scopes,
        *,
        stale: str | None,
        extra: Scopes = (),
    ) -> str:
        """A token for `scopes`: cached, or fetched by one thread while the others wait.

        `stale` is a token the registry refused: it is replaced even when not expired. `extra`
        are scopes a registry's challenge asked for beyond ours.
        """
        with self._tokens.lock(registry, scopes):
            cached = self._tokens.get(registry, scopes)
            if cached is not None and cached.value != stale:
                return cached.value
            token = self._fetch_token(registry, challenge, merge_scopes(scopes, extra))
            self._tokens.put(registry, scopes, token)
            return token.value

    def _fetch_token(self, registry: str, challenge: Challenge, scopes: Scopes) -> Token:
        credentials = self._creds(registry)
        realm = httpx.URL(challenge.realm or "")
        realm_host = realm.netloc.decode("ascii")
        plain_ok = allows_plain_http(realm_host, self._insecure) or credentials is None
        if realm.scheme not in ("http", "https") or (realm.scheme == "http" and not plain_ok):
            raise AuthError(
                f"{registry} sends clients for tokens to {realm.scheme}://{realm_host}, "
                "which is not https: refusing to send credentials there (list that host in the "
                "insecure option if this is intended)."
            )
        template = token_request(challenge, scopes, credentials)

        def attempt() -> httpx.Response:
            request = self._session.request(
                template.method, template.url, headers=template.headers, content=template.content
            )
            return self._session.send(request, kind="token")

        try:
            response = self._session.retrying(attempt)
        except RegistryError:
            raise
        except Exception as exc:
            raise AuthError(
                f"cannot reach the token service of {registry} at {realm_host}: "
                f"{type(exc).__name__}: {self._redact(str(exc))}"
            ) from None
        if response.status_code in (401, 403):
            raise self.error(registry, scopes, response, template.method, str(realm))
        if not response.is_success:
            codes, text = error_details(response)
            raise AuthError(
                f"the token service of {registry} at {realm_host} answered HTTP "
                f"{response.status_code}{': ' + self._redact(text) if text else ''}",
                status=response.status_code,
                code=codes[0] if codes else None,
                codes=codes,
            )
        try:
            token = parse_token_response(response.content)
        except ValueError as exc:
            raise AuthError(f"the token service of {registry} at {realm_host}: {exc}") from None
        self._redact.add(token.value)
        return token
