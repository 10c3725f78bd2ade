"""Authentication: who is calling, from a bearer token or a verified client certificate.

Two credentials are understood, as Kubernetes' API server understands them:

- a **bearer token** in the `authorization` metadata (`Bearer <token>`), looked up in a static
  token file (Kubernetes' `--token-auth-file` format, see `TokenFile`);
- a **client certificate** verified by the TLS layer against the cluster CA: the user is the
  subject's CN, the groups are its O values (Kubernetes' x509 authenticator).

Decisions and invariants:

- Precedence: a presented token decides. A token that is unknown, or an `authorization` value
  that is not `Bearer <token>`, raises `AuthenticationError` (UNAUTHENTICATED) and never falls
  through to the certificate or to anonymous: a caller who presents a bad credential has a
  configuration error to fix, and silently serving them as someone else hides it. (Kubernetes,
  too, rejects a request with an invalid token unless another credential succeeds.)
- No credential at all is `None`; the caller decides whether that is `ANONYMOUS` or an error
  (`authenticate_rpc` does it for a grpc.aio servicer).
- Every authenticated user also carries the group `system:authenticated`; `ANONYMOUS` carries
  `system:unauthenticated` instead.
- Certificates are trusted only because gRPC verified them. grpc's Python API either does not
  request client certificates at all (`require_client_auth=False`) or requires and verifies them
  (`True`, with the CA as root certificates); there is no "request but do not require". So on a
  port without required client auth the auth context carries no `x509_*` property and only
  tokens identify callers. A certificate without the clientAuth extended key usage (a serving
  certificate) is refused as a client identity.
- Token lookup does not leak, through timing, how much of a guessed token matched: the table is
  keyed by the token's SHA-256, and the stored token is compared with `hmac.compare_digest`.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"


@dataclass(frozen=True)
class UserInfo:
    """An identity: user name, groups, and an optional stable id (the token file's uid)."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""


ANONYMOUS = UserInfo("system:anonymous", (UNAUTHENTICATED_GROUP,))


class AuthenticationError(Exception):
    """A credential was presented and is not valid; the message says which and why."""


@dataclass(frozen=True)
class TokenEntry:
    """One line of a static token file."""

    token: str
    user: str
    uid: str
    groups: tuple[str, ...] = ()

    def to_line(self) -> str:
        """The entry as a CSV line (groups quoted, as Kubernetes' examples write them)."""
        buf = io.StringIO()
        row = [self.token, self.user, self.uid] + ([",".join(self.groups)] if self.groups else [])
        csv.writer(buf, lineterminator="").writerow(row)
        return buf.getvalue()


class TokenFile:
    """Static bearer tokens: Kubernetes' token file, `token,user,uid,"group1,group2"` per line.

    The groups column is optional. Blank lines and lines starting with `#` are ignored. A line
    with fewer than 3 columns, more than 4 (unquoted groups: quote them), an empty token or
    user, or a token already used on an earlier line is a `ValueError` naming the line.
    """

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._by_digest: dict[bytes, TokenEntry] = {}
        for entry in entries:
            digest = _digest(entry.token)
            if digest in self._by_digest:
                raise ValueError(f"token for user {entry.user!r} is already used by {self._by_digest[digest].user!r}")
            self._by_digest[digest] = entry

    @classmethod
    def load(cls, path: str | Path) -> "TokenFile":
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cls(parse_token_lines(text, source=str(path)))

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        return tuple(self._by_digest.values())

    def lookup(self, token: str) -> UserInfo | None:
        """The user for `token`, or None if no entry has it."""
        entry = self._by_digest.get(_digest(token))
        if entry is None or not hmac.compare_digest(entry.token.encode(), token.encode()):
            return None
        return UserInfo(entry.user, entry.groups, entry.uid)


def parse_token_lines(text: str, source: str = "token file") -> list[TokenEntry]:
    """Parse a token file's text; errors name `source` and the line number."""
    entries: list[TokenEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}, line {number}"
        try:
            row = next(csv.reader([line], skipinitialspace=True, strict=True))
        except csv.Error as err:
            raise ValueError(f"{where}: {err}") from None
        if len(row) < 3:
            raise ValueError(f"{where}: needs at least 3 columns (token,user,uid), found {len(row)}")
        if len(row) > 4:
            raise ValueError(f'{where}: {len(row)} columns; quote the groups as one column: "group1,group2"')
        token, user, uid = (v.strip() for v in row[:3])
        if not token or not user:
            raise ValueError(f"{where}: the token and the user name must not be empty")
        if token in seen:
            raise ValueError(f"{where}: this token is already used on line {seen[token]}")
        seen[token] = number
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) == 4 else ()
        entries.append(TokenEntry(token, user, uid, groups))
    return entries


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Turns a call's metadata and TLS auth context into a `UserInfo` (see the module docstring)."""

    def __init__(self, tokens: TokenFile | None, allow_client_certs: bool) -> None:
        self.tokens = tokens
        self.allow_client_certs = allow_client_certs

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]],
                     auth_context: Mapping[str, Sequence[bytes]]) -> UserInfo | None:
        """The caller's identity; None when it presented no credential; raises AuthenticationError."""
        header = _authorization(metadata)
        if header is not None:
            return _with_authenticated(self._from_token(header))
        if self.allow_client_certs:
            user = user_from_auth_context(auth_context)
            if user is not None:
                return _with_authenticated(user)
        return None

    def _from_token(self, header: str) -> UserInfo:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError('the authorization metadata must be "Bearer <token>"')
        if self.tokens is None:
            raise AuthenticationError("this server does not accept bearer tokens; use a client certificate")
        user = self.tokens.lookup(token)
        if user is None:
            raise AuthenticationError("invalid bearer token")
        return user


def _authorization(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED_GROUP in user.groups:
        return user
    return UserInfo(user.name, user.groups + (AUTHENTICATED_GROUP,), user.uid)


def user_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> UserInfo | None:
    """The identity in a verified peer certificate (CN = user, O = groups), or None if none.

    Raises AuthenticationError for a certificate that cannot name a user or is not for clients.
    """
    pems = auth_context.get("x509_pem_cert") or ()
    if not pems:
        names = auth_context.get("x509_common_name") or ()
        if not names:
            return None
        # Without the certificate itself there are no groups to read; the CN still names the user.
        return UserInfo(names[0].decode("utf-8", "replace"), ())
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError as err:
        raise AuthenticationError(f"unreadable client certificate: {err}") from None
    return user_from_certificate(cert)


def user_from_certificate(cert: x509.Certificate) -> UserInfo:
    """CN as the user, every O as a group; refuses certificates not meant for client auth."""
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(common_names[0].value) if common_names else ""
    if not name:
        raise AuthenticationError("the client certificate's subject has no common name (CN) to use as the user")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise AuthenticationError(f"the certificate of {name!r} is not valid for client authentication")
    groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return UserInfo(name, groups)


def call_credentials(context: grpc.aio.ServicerContext) -> tuple[
        Sequence[tuple[str, str | bytes]], Mapping[str, Sequence[bytes]]]:
    """The metadata and TLS auth context of the call being served."""
    return tuple(context.invocation_metadata() or ()), context.auth_context()


async def authenticate_rpc(authenticator: Authenticator, context: grpc.aio.ServicerContext,
                           allow_anonymous: bool = True) -> UserInfo:
    """The caller of this RPC; aborts it with UNAUTHENTICATED when its credential is invalid.

    A caller without credentials is `ANONYMOUS` when `allow_anonymous`, else refused.
    """
    metadata, auth_context = call_credentials(context)
    try:
        user = authenticator.authenticate(metadata, auth_context)
    except AuthenticationError as err:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        raise  # abort raises; this line only satisfies type checkers
    if user is not None:
        return user
    if allow_anonymous:
        return ANONYMOUS
    await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                        "no credentials: pass a bearer token or a client certificate (see the client config)")
    raise AssertionError("unreachable: context.abort raises")
