"""Client configuration: where the API server is and how to prove who we are (kubeconfig-like).

skiff's own small YAML shape, one cluster and one identity per file:

    server: 127.0.0.1:6443                  # HOST:PORT of the API server (required)
    certificate-authority: ca.crt           # CA that signed the server's certificate; TLS when set
    tls-server-name: kubernetes             # optional: the name to verify the server's certificate for
    token: 3q2-...                          # optional bearer token
    client-certificate: admin.crt           # optional client certificate ...
    client-key: admin.key                   # ... and its key (the two go together)
    namespace: default                      # optional, default "default"

Relative paths are relative to the file's directory (so a directory of configs can move);
`~` is expanded. Unknown keys are an error naming the key, as kubectl's strict decoding is.

Where the file is: the `path` argument, else `$SKIFF_CONFIG`, else `~/.skiff/config`; "none"
means no file at all. `--server` and `--token` override what the file says (kubectl's habit: the
file's CA and token stay); with `--server`, a missing default file is fine.

Invariants: with no certificate authority the channel is plain text, and then no credential is
ever sent (a token or a client certificate without TLS is a `ConfigError`, not a leak). Files are
written mode 0600, since they may hold a token.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import grpc
import yaml

DEFAULT_PATH = Path("~/.skiff/config")
ENV_VAR = "SKIFF_CONFIG"
NO_FILE = "none"  # SKIFF_CONFIG=none / --config none: read no file, only --server and --token
KEYS = ("server", "certificate-authority", "tls-server-name", "token", "client-certificate", "client-key",
        "namespace")
PATH_KEYS = ("certificate-authority", "client-certificate", "client-key")


class ConfigError(Exception):
    """The client config is missing or wrong; the message says what to do."""


@dataclass(frozen=True)
class ClientConfig:
    server: str
    certificate_authority: Path | None = None
    token: str | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    namespace: str = "default"
    tls_server_name: str | None = None
    source: Path | None = field(default=None, compare=False)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (with the client certificate if any); None means plain text."""
        if self.certificate_authority is None:
            if self.token or self.client_certificate:
                raise ConfigError(f"{self._where()}: a token or client certificate needs TLS; "
                                  "set certificate-authority (the cluster's ca.crt)")
            return None
        root = _read(self.certificate_authority, "certificate-authority", self._where())
        if self.client_certificate is None or self.client_key is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=_read(self.client_key, "client-key", self._where()),
            certificate_chain=_read(self.client_certificate, "client-certificate", self._where()))

    def call_credentials(self) -> grpc.CallCredentials | None:
        """The bearer token as per-call credentials (`authorization: Bearer <token>`), or None."""
        return grpc.access_token_call_credentials(self.token) if self.token else None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The bearer token as call metadata, for callers that attach metadata themselves."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.tls_server_name)] if self.tls_server_name else []

    def open_channel(self, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A grpc.aio channel to the server carrying this config's TLS and token."""
        opts = self.channel_options() + list(options)
        creds = self.channel_credentials()
        if creds is None:
            return grpc.aio.insecure_channel(self.server, options=opts)
        call = self.call_credentials()
        if call is not None:
            creds = grpc.composite_channel_credentials(creds, call)
        return grpc.aio.secure_channel(self.server, creds, options=opts)

    def _where(self) -> str:
        return f"client config {self.source}" if self.source else "client config"


def config_path(path: str | os.PathLike[str] | None = None) -> tuple[Path | None, bool]:
    """(the config file's path — None for "none" —, whether it was asked for explicitly)."""
    chosen = str(path) if path else os.environ.get(ENV_VAR, "")
    if chosen == NO_FILE:
        return None, False
    if chosen:
        return Path(chosen).expanduser(), True
    return DEFAULT_PATH.expanduser(), False


def load_config(path: str | os.PathLike[str] | None = None, server: str | None = None,
                token: str | None = None) -> ClientConfig:
    """The client config from its file (see the module docstring), with --server/--token applied."""
    file, explicit = config_path(path)
    if file is None or not file.exists():
        if explicit:
            raise ConfigError(f"client config {file}: no such file")
        if not server:
            raise ConfigError('no client config: run "skiff up" or pass --server')
        _check_server(server, "--server")
        return ClientConfig(server=server, token=token or None)
    cfg = parse_config(file)
    if server:
        _check_server(server, "--server")
        cfg = replace(cfg, server=server)
    if token:
        cfg = replace(cfg, token=token)
    return cfg


def parse_config(file: Path) -> ClientConfig:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"client config {file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"client config {file}: not valid YAML: {err}") from None
    return config_from_dict(data, file)


def config_from_dict(data: object, file: Path) -> ClientConfig:
    where = f"client config {file}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(KEYS)}")
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown field {key!r} (known: {', '.join(KEYS)})")
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, not {type(value).__name__}")
    server = data.get("server")
    if not server:
        raise ConfigError(f"{where}: server is required (HOST:PORT of the API server)")
    _check_server(server, f"{where}: server")
    paths = {k: _resolve(data[k], file.parent) if data.get(k) else None for k in PATH_KEYS}
    if bool(paths["client-certificate"]) != bool(paths["client-key"]):
        raise ConfigError(f"{where}: client-certificate and client-key go together")
    return ClientConfig(server=server, certificate_authority=paths["certificate-authority"],
                        token=data.get("token") or None, client_certificate=paths["client-certificate"],
                        client_key=paths["client-key"], namespace=data.get("namespace") or "default",
                        tls_server_name=data.get("tls-server-name") or None, source=file)


def render_config(path: str | os.PathLike[str], cfg: ClientConfig) -> str:
    """The YAML text of `cfg` as written at `path` (paths inside its directory written relative)."""
    base = Path(path).parent.resolve()
    values: dict[str, str | None] = {
        "server": cfg.server,
        "certificate-authority": _relative(cfg.certificate_authority, base),
        "tls-server-name": cfg.tls_server_name,
        "token": cfg.token,
        "client-certificate": _relative(cfg.client_certificate, base),
        "client-key": _relative(cfg.client_key, base),
        "namespace": cfg.namespace,
    }
    return yaml.safe_dump({k: v for k, v in values.items() if v}, sort_keys=False, default_flow_style=False)


def write_config(path: str | os.PathLike[str], cfg: ClientConfig) -> None:
    """Write `cfg` to `path` atomically, mode 0600, making the directory (0700) if needed."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_config(target, cfg))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_server(server: str, where: str) -> None:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {server!r} is not HOST:PORT (e.g. 127.0.0.1:6443)")


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _relative(p: Path | None, base: Path) -> str | None:
    if p is None:
        return None
    resolved = p.expanduser().resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)


def _read(p: Path, key: str, where: str) -> bytes:
    try:
        return p.read_bytes()
    except OSError as err:
        raise ConfigError(f"{where}: {key} {p}: {err.strerror}") from None
