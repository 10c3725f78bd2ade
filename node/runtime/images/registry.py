"""A Docker Registry HTTP API v2 client (the subset pulling needs), on the standard library.

- ``get_manifest(ref, target)``: ``GET /v2/<repository>/manifests/<tag or digest>`` asking for
  OCI manifests and indexes and Docker schema 2 manifests and manifest lists. The content's
  sha256 is computed here: asked by digest, it must equal that digest; asked by tag, it must equal
  the ``Docker-Content-Digest`` header when the registry sends one.
- ``fetch_blob(ref, descriptor, sink)``: ``GET /v2/<repository>/blobs/<digest>``, streamed in
  1 MiB chunks into ``sink.write`` (the store's ``BlobWriter`` verifies the digest and deletes a
  partial blob on mismatch). Redirects (to object storage) are followed; credentials are not
  sent along to the redirect target.
- Authentication: a ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
  gets a token from the realm (anonymously, or with basic credentials when given) and the
  request is retried once with it; tokens are cached per host and scope for this client. A
  ``Basic`` challenge is answered with the credentials, if any. A token given as
  ``Credentials(token=...)`` (CRI's ``registry_token``) is sent as is.
- Transport: HTTPS with certificate verification, except for registries reached over plain
  HTTP. **Decision**: plain HTTP is used for hosts named in ``RegistryConfig.insecure_http``
  (``host`` or ``host:port``) and, as Docker does by default, for loopback registries
  (``localhost``, ``127.0.0.0/8``, ``[::1]``); everything else is HTTPS. Proxies from the
  environment are used except for loopback.

Errors are ``RegistryError`` subclasses whose message names the registry, the repository and
what the registry said; ``NotFound`` and ``Unauthorized`` let callers map them to gRPC codes.
The client is synchronous (call it from a worker thread); it keeps no connection state besides
the token cache.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPResponse
from typing import Mapping, Protocol

from node.runtime.images.manifest import ACCEPT, Descriptor, Platform, document_media_type
from node.runtime.images.reference import Reference

__all__ = ["Credentials", "Fetched", "ManifestDigestMismatch", "NotFound", "RegistryClient", "RegistryConfig", "RegistryError", "Unauthorized"]

_CHUNK = 1 << 20
_MAX_MANIFEST = 4 << 20  # the distribution spec's recommended ceiling for manifests


class RegistryError(Exception):
    """A registry request failed; the message says which and why."""


class NotFound(RegistryError):
    """The registry does not have the repository, tag, manifest or blob."""


class Unauthorized(RegistryError):
    """The registry refused us: credentials are missing or wrong."""


class ManifestDigestMismatch(RegistryError):
    """A manifest's content does not hash to the digest it was asked for or announced with."""


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""  # a bearer token sent as is (CRI AuthConfig.registry_token)

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.token)


@dataclass(frozen=True)
class RegistryConfig:
    insecure_http: frozenset[str] = frozenset()
    platform: Platform = field(default_factory=Platform.host)
    timeout: float = 60.0
    credentials: Mapping[str, Credentials] = field(default_factory=dict)

    def scheme(self, host: str) -> str:
        return "http" if host in self.insecure_http or _is_loopback(host) else "https"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Fetched:
    data: bytes
    media_type: str
    digest: str


class Sink(Protocol):
    def write(self, chunk: bytes) -> None: ...


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """Pulls manifests and blobs; see the module docstring for auth and transport rules."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._proxied = urllib.request.build_opener()

    def get_manifest(self, ref: Reference, target: str, credentials: Credentials | None = None) -> Fetched:
        """The manifest or index ``target`` (a tag or a digest) of ``ref``'s repository."""
        with self._open(ref, f"manifests/{target}", {"Accept": ACCEPT}, credentials) as resp:
            data = resp.read(_MAX_MANIFEST + 1)
            declared = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        if len(data) > _MAX_MANIFEST:
            raise RegistryError(f"{ref.name}: manifest {target} is larger than {_MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = target if target.startswith("sha256:") else header_digest
        if expected and expected.startswith("sha256:") and expected != digest:
            raise ManifestDigestMismatch(f"digest mismatch: {ref.name} manifest {target} was announced as {expected} "
                                f"but hashes to {digest}; nothing was stored")
        try:
            media_type = document_media_type(data, declared)
        except ValueError as err:
            raise RegistryError(f"{ref.name}: manifest {target}: {err}") from None
        return Fetched(data=data, media_type=media_type, digest=digest)

    def fetch_blob(self, ref: Reference, descriptor: Descriptor, sink: Sink,
                   credentials: Credentials | None = None) -> None:
        """Stream blob ``descriptor.digest`` into ``sink`` (which verifies it)."""
        with self._open(ref, f"blobs/{descriptor.digest}", {}, credentials) as resp:
            while chunk := resp.read(_CHUNK):
                sink.write(chunk)

    # -- HTTP and auth -----------------------------------------------------------------------

    def _open(self, ref: Reference, path: str, headers: dict[str, str],
              credentials: Credentials | None) -> HTTPResponse:
        host = ref.api_host
        creds = credentials or self.config.credentials.get(ref.registry) or Credentials()
        url = f"{self.config.scheme(host)}://{host}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:pull"
        authorization = f"Bearer {creds.token}" if creds.token else self._cached(host, scope)
        try:
            return self._send(url, headers, authorization)
        except urllib.error.HTTPError as err:
            if err.code != 401 or creds.token:
                raise self._error(err, ref, path) from None
            challenge = err.headers.get("WWW-Authenticate", "")
            err.close()
            authorization = self._answer(challenge, host, scope, creds, ref)
        try:
            return self._send(url, headers, authorization)
        except urllib.error.HTTPError as err:
            raise self._error(err, ref, path) from None

    def _send(self, url: str, headers: dict[str, str], authorization: str | None) -> HTTPResponse:
        request = urllib.request.Request(url, headers=headers)
        if authorization:
            # Unredirected: a redirect to object storage must not carry the registry's token.
            request.add_unredirected_header("Authorization", authorization)
        opener = self._direct if _is_loopback(urllib.parse.urlsplit(url).netloc) else self._proxied
        try:
            resp: HTTPResponse = opener.open(request, timeout=self.config.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RegistryError(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}") from None
        return resp

    def _cached(self, host: str, scope: str) -> str | None:
        with self._lock:
            token = self._tokens.get((host, scope))
        return f"Bearer {token}" if token else None

    def _answer(self, challenge: str, host: str, scope: str, creds: Credentials, ref: Reference) -> str:
        scheme, _, rest = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        if scheme.lower() == "basic":
            if not (creds.username or creds.password):
                raise Unauthorized(f"{ref.registry} requires a username and password to pull {ref.repository}")
            return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise Unauthorized(f"{ref.registry} refused the request and sent no usable challenge ({challenge!r})")
        scope = params.get("scope", scope)
        token = self._fetch_token(params["realm"], params.get("service"), scope, creds, ref)
        with self._lock:
            self._tokens[(host, scope)] = token
        return f"Bearer {token}"

    def _fetch_token(self, realm: str, service: str | None, scope: str, creds: Credentials, ref: Reference) -> str:
        query = urllib.parse.urlencode({k: v for k, v in (("service", service), ("scope", scope)) if v})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}"
        basic = None
        if creds.username or creds.password:
            basic = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        try:
            with self._send(url, {}, basic) as resp:
                body = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as err:
            err.close()
            raise Unauthorized(f"{ref.registry}: the token service {realm} refused to grant {scope} "
                               f"(HTTP {err.code}); check the credentials") from None
        except json.JSONDecodeError:
            raise Unauthorized(f"{ref.registry}: the token service {realm} answered with something that is not JSON") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized(f"{ref.registry}: the token service {realm} sent no token")
        return token

    def _error(self, err: urllib.error.HTTPError, ref: Reference, path: str) -> RegistryError:
        try:
            body = err.read(64 << 10)
        finally:
            err.close()
        detail = ""
        try:
            errors = json.loads(body).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError):
            pass
        what = f"{ref.registry}/{ref.repository} {path.replace('/', ' ', 1)}"
        message = f"{what}: HTTP {err.code}{' (' + detail + ')' if detail else ''}"
        if err.code == 404:
            return NotFound(message)
        if err.code in (401, 403):
            return Unauthorized(message)
        return RegistryError(message)
