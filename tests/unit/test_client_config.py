"""The client config file: where it is found, what it may say, overrides, credentials, writing."""
from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest

from controlplane.client.config import ClientConfig, ConfigError, load_config, render_config, write_config


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Neither the developer's $SKIFF_CONFIG nor their ~/.skiff/config leaks into a test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("SKIFF_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "cfg" / "admin.conf", "server: 10.0.0.1:6443\ncertificate-authority: ca.crt\n"
              "client-certificate: sub/admin.crt\nclient-key: /abs/admin.key\ntoken: t0k\nnamespace: web\n")
    cfg = load_config(f)
    assert cfg == ClientConfig(server="10.0.0.1:6443", certificate_authority=tmp_path / "cfg" / "ca.crt",
                               token="t0k", client_certificate=tmp_path / "cfg" / "sub" / "admin.crt",
                               client_key=Path("/abs/admin.key"), namespace="web")
    assert cfg.source == f


def test_path_from_env_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_ambient_config: Path) -> None:
    write(no_ambient_config / ".skiff" / "config", "server: default:1\n")
    assert load_config().server == "default:1"
    monkeypatch.setenv("SKIFF_CONFIG", str(write(tmp_path / "env.conf", "server: env:2\n")))
    assert load_config().server == "env:2"
    assert load_config(write(tmp_path / "arg.conf", "server: arg:3\n")).server == "arg:3"


def test_overrides(tmp_path: Path) -> None:
    f = write(tmp_path / "c", "server: a:1\ntoken: old\ncertificate-authority: ca.crt\n")
    cfg = load_config(f, server="b:2", token="new")
    assert (cfg.server, cfg.token, cfg.certificate_authority) == ("b:2", "new", tmp_path / "ca.crt")


def test_missing_default_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value) == 'no client config: run "skiff up" or pass --server'
    assert load_config(server="127.0.0.1:6443", token="t") == ClientConfig(server="127.0.0.1:6443", token="t")


def test_missing_explicit_file_is_an_error_even_with_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope", server="a:1")


@pytest.mark.parametrize("text,message", [
    ("server: a:1\nsevrer: b\n", "unknown field 'sevrer'"),
    ("namespace: x\n", "server is required"),
    ("server: localhost\n", "'localhost' is not HOST:PORT"),
    ("server: a:1\nclient-certificate: c.crt\n", "client-certificate and client-key go together"),
    ("server: a:1\ntoken: 123\n", "token must be a string"),
    ("- a\n- b\n", "expected a mapping"),
    ("server: [a\n", "not valid YAML"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "c", text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(f)
    assert str(f) in str(err.value)


def test_bad_server_override() -> None:
    with pytest.raises(ConfigError, match="--server: 'host' is not HOST:PORT"):
        load_config(server="host")


def test_plain_text_only_without_credentials(tmp_path: Path) -> None:
    assert ClientConfig(server="a:1").channel_credentials() is None
    assert ClientConfig(server="a:1").call_credentials() is None
    with pytest.raises(ConfigError, match="needs TLS; set certificate-authority"):
        ClientConfig(server="a:1", token="t").channel_credentials()
    with pytest.raises(ConfigError, match="needs TLS"):
        ClientConfig(server="a:1", client_certificate=Path("c"), client_key=Path("k")).channel_credentials()


def test_tls_credentials(tmp_path: Path) -> None:
    for name in ("ca.crt", "c.crt", "c.key"):
        write(tmp_path / name, "pem")
    cfg = ClientConfig(server="a:1", certificate_authority=tmp_path / "ca.crt", token="t",
                       client_certificate=tmp_path / "c.crt", client_key=tmp_path / "c.key")
    assert isinstance(cfg.channel_credentials(), grpc.ChannelCredentials)
    assert isinstance(cfg.call_credentials(), grpc.CallCredentials)
    assert cfg.metadata() == (("authorization", "Bearer t"),)


def test_missing_ca_file_names_the_field(tmp_path: Path) -> None:
    f = write(tmp_path / "c", "server: a:1\ncertificate-authority: missing.crt\n")
    with pytest.raises(ConfigError, match=r"certificate-authority .*missing.crt: No such file"):
        load_config(f).channel_credentials()


def test_tls_server_name_becomes_a_channel_option(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c", "server: 10.0.0.1:6443\ntls-server-name: kubernetes\n"))
    assert cfg.channel_options() == [("grpc.ssl_target_name_override", "kubernetes")]


def test_write_round_trips_with_mode_0600(tmp_path: Path) -> None:
    cfg = ClientConfig(server="[::1]:6443", certificate_authority=tmp_path / "pki" / "ca.crt", token="secret",
                       client_certificate=Path("/elsewhere/u.crt"), client_key=tmp_path / "pki" / "u.key",
                       namespace="web", tls_server_name="kubernetes")
    path = tmp_path / "pki" / "u.conf"
    write_config(path, cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "certificate-authority: ca.crt\n" in text and "client-certificate: /elsewhere/u.crt\n" in text
    assert load_config(path) == cfg
    assert render_config(path, cfg) == text
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_none_reads_no_file_even_when_the_default_exists(no_ambient_config: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write(no_ambient_config / ".skiff" / "config", "server: 10.0.0.1:6443\ntoken: t\ncertificate-authority: ca.crt\n")
    monkeypatch.setenv("SKIFF_CONFIG", "none")
    cfg = load_config(server="127.0.0.1:7000")
    assert cfg == ClientConfig(server="127.0.0.1:7000")
    assert load_config("none", server="127.0.0.1:7001").token is None
    with pytest.raises(ConfigError, match="no client config"):
        load_config()
