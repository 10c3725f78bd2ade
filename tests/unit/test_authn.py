"""The static token file, the authenticator's precedence rules, and the grpc.aio helper (with a fake context)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Mapping, Sequence

import grpc
import pytest

from controlplane.apiserver.auth import certs
from controlplane.apiserver.auth.authn import (
    ANONYMOUS, AuthenticationError, Authenticator, TokenEntry, TokenFile, UserInfo, authenticate_rpc,
    parse_token_lines,
)

TOKENS = """\
# a comment, then a blank line

tok-admin,admin,uid-1,"system:masters,extra"
 tok-node , system:node:n1 , uid-2 , "system:nodes"
tok-bob,bob,uid-3
"""


@pytest.fixture
def tokens(tmp_path: Path) -> TokenFile:
    path = tmp_path / "tokens.csv"
    path.write_text(TOKENS)
    return TokenFile.load(path)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return certs.make_ca("test-ca", days=1)


def test_token_file_parses_kubernetes_format(tokens: TokenFile) -> None:
    assert tokens.lookup("tok-admin") == UserInfo("admin", ("system:masters", "extra"), "uid-1")
    assert tokens.lookup("tok-node") == UserInfo("system:node:n1", ("system:nodes",), "uid-2")
    assert tokens.lookup("tok-bob") == UserInfo("bob", (), "uid-3")


@pytest.mark.parametrize("guess", ["", "tok", "tok-admi", "tok-admin ", "TOK-ADMIN", "tok-admin2"])
def test_token_lookup_refuses_near_misses(tokens: TokenFile, guess: str) -> None:
    assert tokens.lookup(guess) is None


@pytest.mark.parametrize("text,message", [
    ("a,b,c\nonly,two\n", "line 2: needs at least 3 columns"),
    ("\n\nt,u,id,g1,g2\n", 'line 3: 5 columns; quote the groups'),
    (",user,uid\n", "line 1: the token and the user name must not be empty"),
    ("tok,,uid\n", "line 1: the token and the user name must not be empty"),
    ("t,a,1\n# c\nt,b,2\n", "line 3: this token is already used on line 1"),
    ('t,a,1,"unterminated\n', "line 1:"),
])
def test_bad_token_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_token_lines(text, source="tokens.csv")


def test_token_file_load_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,y\n")
    with pytest.raises(ValueError, match=f"{path}, line 1"):
        TokenFile.load(path)


def test_token_entry_line_round_trips() -> None:
    entries = [TokenEntry("t1", "u1", "id1", ("g1", "g2")), TokenEntry("t2", "u2", "id2")]
    text = "".join(e.to_line() + "\n" for e in entries)
    assert 't1,u1,id1,"g1,g2"' in text
    assert parse_token_lines(text) == entries


def cert_context(ca: tuple[bytes, bytes], cn: str, orgs: Sequence[str] = (), server: bool = False,
                 client: bool = True) -> dict[str, list[bytes]]:
    """What grpc puts in the auth context for a verified client certificate."""
    pem, _ = certs.issue(ca[0], ca[1], cn, orgs, dns_names=["localhost"] if server else [], server=server,
                         client=client, days=1)
    return {"transport_security_type": [b"ssl"], "x509_common_name": [cn.encode()], "x509_pem_cert": [pem]}


def test_bearer_token_identifies_and_adds_authenticated(tokens: TokenFile) -> None:
    authn = Authenticator(tokens, allow_client_certs=True)
    user = authn.authenticate([("authorization", "Bearer tok-admin")], {})
    assert user == UserInfo("admin", ("system:masters", "extra", "system:authenticated"), "uid-1")
    assert authn.authenticate([("Authorization", b"bearer tok-bob")], {}) == UserInfo(
        "bob", ("system:authenticated",), "uid-3")


def test_client_certificate_identifies_with_groups(ca: tuple[bytes, bytes]) -> None:
    authn = Authenticator(None, allow_client_certs=True)
    user = authn.authenticate([], cert_context(ca, "system:node:n1", ["system:nodes", "g2"]))
    assert user == UserInfo("system:node:n1", ("system:nodes", "g2", "system:authenticated"))


def test_common_name_alone_still_names_the_user() -> None:
    authn = Authenticator(None, allow_client_certs=True)
    assert authn.authenticate([], {"x509_common_name": [b"alice"]}) == UserInfo("alice", ("system:authenticated",))


def test_certificates_ignored_when_not_allowed(ca: tuple[bytes, bytes]) -> None:
    assert Authenticator(None, allow_client_certs=False).authenticate([], cert_context(ca, "admin")) is None


def test_no_credentials_is_none(tokens: TokenFile) -> None:
    assert Authenticator(tokens, True).authenticate([("user-agent", "x")], {"transport_security_type": [b"ssl"]}) is None


def test_invalid_token_never_falls_through_to_the_certificate(tokens: TokenFile, ca: tuple[bytes, bytes]) -> None:
    authn = Authenticator(tokens, allow_client_certs=True)
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        authn.authenticate([("authorization", "Bearer wrong")], cert_context(ca, "admin", ["system:masters"]))


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "tok-admin"])
def test_malformed_authorization_is_refused(tokens: TokenFile, header: str) -> None:
    with pytest.raises(AuthenticationError, match='must be "Bearer <token>"'):
        Authenticator(tokens, True).authenticate([("authorization", header)], {})


def test_token_on_a_server_without_tokens_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="does not accept bearer tokens"):
        Authenticator(None, True).authenticate([("authorization", "Bearer x")], {})


def test_serving_certificate_is_not_a_client_identity(ca: tuple[bytes, bytes]) -> None:
    context = cert_context(ca, "kube-apiserver", server=True, client=False)
    with pytest.raises(AuthenticationError, match="not valid for client authentication"):
        Authenticator(None, True).authenticate([], context)


def test_unreadable_certificate_is_refused() -> None:
    with pytest.raises(AuthenticationError, match="unreadable client certificate"):
        Authenticator(None, True).authenticate([], {"x509_pem_cert": [b"not a pem"]})


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class FakeContext:
    """The two grpc.aio.ServicerContext calls the helper uses, plus abort (which raises, as grpc's does)."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = (), auth: Mapping[str, list[bytes]] | None = None) -> None:
        self._metadata = tuple(metadata)
        self._auth = dict(auth or {})

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def run_helper(authn: Authenticator, context: FakeContext, allow_anonymous: bool = True) -> UserInfo:
    return asyncio.run(authenticate_rpc(authn, context, allow_anonymous))  # type: ignore[arg-type]


def test_helper_returns_the_user(tokens: TokenFile) -> None:
    user = run_helper(Authenticator(tokens, True), FakeContext([("authorization", "Bearer tok-bob")]))
    assert user.name == "bob"


def test_helper_anonymous_or_refused_without_credentials(tokens: TokenFile) -> None:
    assert run_helper(Authenticator(tokens, True), FakeContext()) == ANONYMOUS
    with pytest.raises(Aborted) as err:
        run_helper(Authenticator(tokens, True), FakeContext(), allow_anonymous=False)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in err.value.details


def test_helper_aborts_unauthenticated_on_a_bad_token(tokens: TokenFile) -> None:
    with pytest.raises(Aborted) as err:
        run_helper(Authenticator(tokens, True), FakeContext([("authorization", "Bearer nope")]))
    assert (err.value.code, err.value.details) == (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
