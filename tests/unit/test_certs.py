"""Certificates, the cluster PKI layout (files, modes, identities, idempotence) and `skiff cluster init`."""
from __future__ import annotations

import argparse
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.apiserver.auth import certs
from controlplane.apiserver.auth.authn import TokenFile, user_from_certificate
from controlplane.client.config import load_config
from deploy.cli import cluster_cmd
from deploy.cli.errors import CommandError


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return certs.make_ca("unit-ca", days=30)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_a_self_signed_p256_ca(ca: tuple[bytes, bytes]) -> None:
    cert = load(ca[0])
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign


def test_server_certificate(ca: tuple[bytes, bytes]) -> None:
    pem, key_pem = certs.issue(ca[0], ca[1], "kube-apiserver", dns_names=["localhost", "api.example"],
                               ip_addresses=["127.0.0.1", "::1"], server=True, days=10)
    cert = load(pem)
    cert.verify_directly_issued_by(load(ca[0]))
    assert b"PRIVATE KEY" in key_pem
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "api.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_client_certificate_carries_user_and_groups(ca: tuple[bytes, bytes]) -> None:
    pem, _ = certs.issue(ca[0], ca[1], "jane", organizations=["dev", "ops"], client=True)
    cert = load(pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["jane"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["dev", "ops"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert user_from_certificate(cert).groups == ("dev", "ops")


def test_leaf_never_outlives_its_ca(ca: tuple[bytes, bytes]) -> None:
    pem, _ = certs.issue(ca[0], ca[1], "long", client=True, days=10_000)
    assert load(pem).not_valid_after_utc <= load(ca[0]).not_valid_after_utc


def test_issue_refuses_nonsense(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="server or client"):
        certs.issue(ca[0], ca[1], "x")
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        certs.issue(ca[0], ca[1], "x", server=True)
    leaf, leaf_key = certs.issue(ca[0], ca[1], "leaf", client=True)
    with pytest.raises(ValueError, match="is not a CA certificate"):
        certs.issue(leaf, leaf_key, "x", client=True)
    other = certs.make_ca("other", days=1)
    with pytest.raises(ValueError, match="does not belong to the CA certificate"):
        certs.issue(ca[0], other[1], "x", client=True)


@pytest.fixture
def pki(tmp_path: Path) -> certs.PkiLayout:
    return certs.init_pki(tmp_path / "pki", "demo", ["10.0.0.5", "api.demo"], ["n1"])


def test_init_pki_layout_and_modes(pki: certs.PkiLayout) -> None:
    d = pki.directory
    assert mode(d) == 0o700
    for name in ["ca.key", "apiserver.key", "admin.key", "kube-scheduler.key", "kube-controller-manager.key",
                 "node-n1.key", "tokens.csv", "admin.conf", "node-n1.conf"]:
        assert mode(d / name) == 0o600, name
    assert mode(d / "ca.crt") == 0o644
    assert set(pki.identities) == {"admin", "system:kube-scheduler", "system:kube-controller-manager",
                                   "system:node:n1"}
    assert not list(d.glob(".*")), "no temporary files left behind"


def test_init_pki_apiserver_names(pki: certs.PkiLayout) -> None:
    cert = load(pki.apiserver_cert.read_bytes())
    cert.verify_directly_issued_by(load(pki.ca_cert.read_bytes()))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "api.demo", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1", "10.0.0.5"} <= {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    assert load(pki.ca_cert.read_bytes()).subject.rfc4514_string() == "CN=demo-ca"


@pytest.mark.parametrize("user,groups", [
    ("admin", ("system:masters",)), ("system:kube-scheduler", ()), ("system:kube-controller-manager", ()),
    ("system:node:n1", ("system:nodes",)),
])
def test_init_pki_identities(pki: certs.PkiLayout, user: str, groups: tuple[str, ...]) -> None:
    ident = pki.identities[user]
    cert = load(ident.cert.read_bytes())
    cert.verify_directly_issued_by(load(pki.ca_cert.read_bytes()))
    assert user_from_certificate(cert).name == user and user_from_certificate(cert).groups == groups
    cfg = load_config(ident.config)
    assert cfg.server == "10.0.0.5:6443"
    assert cfg.certificate_authority == pki.ca_cert
    assert (cfg.client_certificate, cfg.client_key) == (ident.cert, ident.key)
    assert cfg.token
    token_user = TokenFile.load(pki.tokens).lookup(cfg.token)
    assert token_user is not None and (token_user.name, token_user.groups) == (user, groups)


def test_init_pki_is_idempotent_and_adds_nodes(pki: certs.PkiLayout) -> None:
    before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    again = certs.init_pki(pki.directory, "demo", ["10.0.0.5", "api.demo"], ["n1"])
    assert again.written == ()
    assert {p.name: p.read_bytes() for p in pki.directory.iterdir()} == before
    more = certs.init_pki(pki.directory, "demo", ["10.0.0.5", "api.demo"], ["n1", "n2"])
    assert {p.name for p in more.written} == {"node-n2.crt", "node-n2.key", "node-n2.conf", "tokens.csv"}
    for name, data in before.items():
        if name != "tokens.csv":
            assert (pki.directory / name).read_bytes() == data, name
    tokens = TokenFile.load(more.tokens)
    assert {e.user for e in tokens.entries} >= {"admin", "system:node:n1", "system:node:n2"}
    assert load_config(pki.identities["admin"].config).token == load_config(more.admin.config).token


def test_init_pki_reissues_the_server_cert_for_a_new_address(pki: certs.PkiLayout) -> None:
    ca_before = pki.ca_cert.read_bytes()
    admin_before = pki.admin.cert.read_bytes()
    again = certs.init_pki(pki.directory, "demo", ["10.0.0.5", "api.demo", "10.0.0.6"], ["n1"])
    assert {p.name for p in again.written} == {"apiserver.crt", "apiserver.key"}
    assert pki.ca_cert.read_bytes() == ca_before and pki.admin.cert.read_bytes() == admin_before
    san = load(again.apiserver_cert.read_bytes()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "10.0.0.6" in {str(i) for i in san.value.get_values_for_type(x509.IPAddress)}


def test_init_pki_renews_a_leaf_from_another_ca(pki: certs.PkiLayout) -> None:
    other = certs.make_ca("other", days=1)
    pem, key = certs.issue(other[0], other[1], "admin", ["system:masters"], client=True)
    pki.admin.cert.write_bytes(pem)
    pki.admin.key.write_bytes(key)
    again = certs.init_pki(pki.directory, "demo", ["10.0.0.5", "api.demo"], ["n1"])
    assert {p.name for p in again.written} == {"admin.crt", "admin.key"}
    load(pki.admin.cert.read_bytes()).verify_directly_issued_by(load(pki.ca_cert.read_bytes()))


def test_init_pki_renews_a_leaf_with_the_wrong_subject(pki: certs.PkiLayout) -> None:
    node = pki.identities["system:node:n1"]
    ca_pem, ca_key = pki.ca_cert.read_bytes(), pki.ca_key.read_bytes()
    pem, key = certs.issue(ca_pem, ca_key, "system:node:n1", client=True)  # no O=system:nodes
    node.cert.write_bytes(pem)
    node.key.write_bytes(key)
    again = certs.init_pki(pki.directory, "demo", ["10.0.0.5", "api.demo"], ["n1"])
    assert {p.name for p in again.written} == {"node-n1.crt", "node-n1.key"}
    assert user_from_certificate(load(node.cert.read_bytes())).groups == ("system:nodes",)


def test_init_pki_refuses_half_a_ca(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(certs.make_ca("x", 1)[0])
    with pytest.raises(ValueError, match="ca.key is missing"):
        certs.init_pki(tmp_path, "demo", [], [])


def test_init_pki_defaults_and_ipv6(tmp_path: Path) -> None:
    layout = certs.init_pki(tmp_path / "a", "demo", [], [])
    assert load_config(layout.admin.config).server == "127.0.0.1:6443"
    layout = certs.init_pki(tmp_path / "b", "demo", ["fd00::1"], [], api_port=7443)
    assert load_config(layout.admin.config).server == "[fd00::1]:7443"


@pytest.mark.parametrize("nodes,addresses,message", [
    (["Bad_Name"], [], "node name 'Bad_Name'"),
    (["a:b"], [], "node name 'a:b'"),
    ([], ["10.0.0.1:6443"], "neither an IP address nor a host name"),
])
def test_init_pki_refuses_bad_names(tmp_path: Path, nodes: list[str], addresses: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        certs.init_pki(tmp_path, "demo", addresses, nodes)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cluster_cmd.add_arguments(parser)
    return parser.parse_args(argv)


def test_cluster_init_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert cluster_cmd.run(parse(["--dir", str(d), "--node", "n1", "--api-address", "10.1.1.1"])) == 0
    out = capsys.readouterr().out
    assert "wrote ca.key" in out and "wrote node-n1.conf" in out
    assert f"admin config: {d / 'admin.conf'}" in out
    assert cluster_cmd.run(parse(["--dir", str(d), "--node", "n1", "--node", "n2"])) == 0
    out = capsys.readouterr().out
    assert "wrote node-n2.key" in out and "wrote ca.key" not in out and "kept" in out


def test_cluster_init_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="node name 'N_1'"):
        cluster_cmd.run(parse(["--dir", str(tmp_path), "--node", "N_1"]))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CommandError, match="File exists|Not a directory"):
        cluster_cmd.run(parse(["--dir", str(blocker / "pki")]))
    with pytest.raises(CommandError, match="not a TCP port"):
        cluster_cmd.run(parse(["--dir", str(tmp_path), "--api-port", "70000"]))
