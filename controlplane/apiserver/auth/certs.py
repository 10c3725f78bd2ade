"""The cluster's certificates: a CA, the API server's serving certificate, client identities.

`make_ca` and `issue` are the primitives (EC P-256 keys, SHA-256 signatures, PEM bytes in and
out). `init_pki` lays out a whole cluster's PKI in one directory, as kubeadm's `init` does:

    ca.crt ca.key                       the cluster CA (reused when present)
    apiserver.crt apiserver.key         serving cert: localhost, 127.0.0.1, ::1, the API addresses
    admin.crt admin.key admin.conf      O=system:masters
    kube-scheduler.{crt,key,conf}       CN=system:kube-scheduler
    kube-controller-manager.{...}       CN=system:kube-controller-manager
    node-<name>.{crt,key,conf}          CN=system:node:<name>, O=system:nodes; also serves the
                                        node's node service (SANs: <name>, localhost, 127.0.0.1)
    tokens.csv                          a random bearer token per identity (authn.TokenFile)

Identities follow Kubernetes: the user is the subject's CN, the groups are its O values. Every
client config carries both the identity's token and its certificate, so it works whether the API
server requires client certificates (then both name the same user) or not (then the token does).

Invariants: private keys, the token file and the configs are written mode 0600 (atomically,
through a temporary file and rename) in a directory created 0700. `init_pki` is idempotent: an
existing CA is never overwritten; an existing leaf certificate is kept while it is signed by the
CA, not about to expire and (for the API server) covers every requested address; an existing
identity keeps its token. So re-running with more `nodes` adds them and changes nothing else.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.apiserver.auth.authn import TokenEntry, TokenFile
from controlplane.client.config import ClientConfig, render_config, write_config

DEFAULT_API_PORT = 6443
# Kubernetes' conventional names for the API server, so in-cluster clients can verify it.
APISERVER_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local")
APISERVER_IPS = ("127.0.0.1", "::1")
# Clock skew between hosts: certificates are valid from a little before they are made.
BACKDATE = datetime.timedelta(minutes=5)
# A kept certificate must stay valid at least this long, else init_pki renews it.
RENEW_BEFORE = datetime.timedelta(days=30)
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its key, as PEM: (cert_pem, key_pem)."""
    if days < 1:
        raise ValueError("a CA must be valid for at least one day")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{ca.subject.rfc4514_string()} is not a CA certificate (basicConstraints CA:FALSE)")
    if key.public_key() != ca.public_key():
        raise ValueError("the CA key does not belong to the CA certificate")
    return ca, key


def issue(ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, organizations: Sequence[str] = (),
          dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (), server: bool = False,
          client: bool = False, days: int = 365) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA, and its new key, as PEM: (cert_pem, key_pem).

    Subject CN=common_name, one O per organization; SANs from dns_names and ip_addresses;
    extendedKeyUsage serverAuth and/or clientAuth. It never outlives the CA.
    """
    if not (server or client):
        raise ValueError("a certificate must be for server or client authentication, or both")
    if server and not (dns_names or ip_addresses):
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    ca, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    ips = [ipaddress.ip_address(a) for a in ip_addresses]
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca.not_valid_after_utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder().subject_name(_name(common_name, organizations)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if dns_names or ips:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(i) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


@dataclass(frozen=True)
class Identity:
    """A client identity's files: its certificate, key and client config."""

    user: str
    groups: tuple[str, ...]
    cert: Path
    key: Path
    config: Path


@dataclass(frozen=True)
class PkiLayout:
    """Where init_pki put everything; `identities` is keyed by user name."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    tokens: Path
    identities: Mapping[str, Identity]
    written: tuple[Path, ...] = ()
    kept: tuple[Path, ...] = ()

    @property
    def admin(self) -> Identity:
        return self.identities["admin"]


def cluster_identities(nodes: Sequence[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(file stem, user, groups) for every client identity of a cluster with these nodes."""
    out = [("admin", "admin", ("system:masters",)),
           ("kube-scheduler", "system:kube-scheduler", ()),
           ("kube-controller-manager", "system:kube-controller-manager", ())]
    for node in nodes:
        if not NODE_NAME.match(node):
            raise ValueError(f"node name {node!r}: use lower-case letters, digits, '-' and '.' (a DNS name)")
        out.append((f"node-{node}", f"system:node:{node}", ("system:nodes",)))
    return out


def split_addresses(addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) from a list of host names and IPs, without duplicates."""
    dns: list[str] = []
    ips: list[str] = []
    for a in addresses:
        try:
            ip = str(ipaddress.ip_address(a.strip("[]")))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$", a):
                raise ValueError(f"API address {a!r} is neither an IP address nor a host name "
                                 "(give it without a port)") from None
            if a.lower() not in dns:
                dns.append(a.lower())
            continue
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def server_url(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"


def init_pki(directory: str | Path, cluster_name: str, api_addresses: Sequence[str], nodes: Sequence[str],
             api_port: int = DEFAULT_API_PORT, ca_days: int = 3650, cert_days: int = 365) -> PkiLayout:
    """Write (or complete) a cluster's PKI in `directory`; see the module docstring."""
    d = Path(directory)
    identities = cluster_identities(nodes)
    dns, ips = split_addresses(list(APISERVER_DNS_NAMES) + list(APISERVER_IPS) + list(api_addresses))
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[Path] = []
    kept: list[Path] = []
    ca_cert, ca_key = _ensure_ca(d, f"{cluster_name}-ca", ca_days, written, kept)
    ca_pem, ca_key_pem = ca_cert.read_bytes(), ca_key.read_bytes()

    def leaf(stem: str, cn: str, orgs: tuple[str, ...], server: bool, client: bool,
             sans: tuple[Sequence[str], Sequence[str]] = ((), ())) -> tuple[Path, Path]:
        cert, key = d / f"{stem}.crt", d / f"{stem}.key"
        if _still_good(cert, key, ca_pem, _name(cn, orgs), *sans):
            kept.extend([cert, key])
        else:
            cert_pem, key_pem = issue(ca_pem, ca_key_pem, cn, orgs, *sans, server=server, client=client,
                                      days=cert_days)
            _write(cert, cert_pem, 0o644)
            _write(key, key_pem, 0o600)
            written.extend([cert, key])
        return cert, key

    api_cert, api_key = leaf("apiserver", "kube-apiserver", (), server=True, client=False, sans=(dns, ips))
    tokens = _ensure_tokens(d / "tokens.csv", [(user, groups) for _, user, groups in identities], written)
    first = api_addresses[0] if api_addresses else "127.0.0.1"
    out: dict[str, Identity] = {}
    for stem, user, groups in identities:
        # A node's certificate also serves its node service (logs, exec), named by the node.
        node = user.removeprefix("system:node:") if user.startswith("system:node:") else ""
        cert, key = leaf(stem, user, groups, server=bool(node), client=True,
                         sans=((node, "localhost"), ("127.0.0.1",)) if node else ((), ()))
        config = d / f"{stem}.conf"
        cfg = ClientConfig(server=server_url(first, api_port), certificate_authority=ca_cert,
                           token=tokens[user], client_certificate=cert, client_key=key)
        if config.exists() and config.read_text(encoding="utf-8") == render_config(config, cfg):
            kept.append(config)
        else:
            write_config(config, cfg)
            written.append(config)
        out[user] = Identity(user, groups, cert, key, config)
    return PkiLayout(d, ca_cert, ca_key, api_cert, api_key, d / "tokens.csv", out, tuple(written), tuple(kept))


def _ensure_ca(d: Path, common_name: str, days: int, written: list[Path], kept: list[Path]) -> tuple[Path, Path]:
    cert, key = d / "ca.crt", d / "ca.key"
    if cert.exists() or key.exists():
        if not (cert.exists() and key.exists()):
            missing = key if cert.exists() else cert
            raise ValueError(f"{missing} is missing but its pair exists; restore it or remove both to make a new CA")
        _load_ca(cert.read_bytes(), key.read_bytes())  # refuse a broken pair now, not at first use
        kept.extend([cert, key])
        return cert, key
    cert_pem, key_pem = make_ca(common_name, days)
    _write(key, key_pem, 0o600)
    _write(cert, cert_pem, 0o644)
    written.extend([cert, key])
    return cert, key


def _still_good(cert_path: Path, key_path: Path, ca_pem: bytes, subject: x509.Name, dns: Sequence[str],
                ips: Sequence[str]) -> bool:
    """An existing leaf is kept if signed by this CA for this subject, matching its key, far from expiry
    and covering the SANs."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.subject != subject or key.public_key() != cert.public_key():
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if not (dns or ips):
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    return set(dns) <= set(san.get_values_for_type(x509.DNSName)) and set(ips) <= have_ips


def _ensure_tokens(path: Path, users: Sequence[tuple[str, tuple[str, ...]]], written: list[Path]) -> dict[str, str]:
    """Tokens per user: existing lines kept, a new random token for each user without one."""
    entries = list(TokenFile.load(path).entries) if path.exists() else []
    by_user = {e.user: e for e in entries}
    added = False
    for user, groups in users:
        if user not in by_user:
            entry = TokenEntry(secrets.token_urlsafe(32), user, str(uuid.uuid4()), groups)
            entries.append(entry)
            by_user[user] = entry
            added = True
    if added or not path.exists():
        header = "# skiff static tokens: token,user,uid,\"groups\" (Kubernetes' token file format)\n"
        _write(path, (header + "".join(e.to_line() + "\n" for e in entries)).encode(), 0o600)
        written.append(path)
    return {e.user: e.token for e in entries}


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start (a key is never readable by others, even briefly)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
