"""`skiff up`: a whole local cluster in the foreground: a 3-replica store, the API server, the
scheduler, the controller manager, and this host as a node (a CRI runtime and the node agent).

As root the node runs pods with runc (each pod gets its own network namespace on the skiff0
bridge, 10.244.0.0/24); without root the runtime's `process` handler runs containers as plain
host processes. Data, certificates and logs live under the state directory and survive restarts of `skiff up`.
The first run makes the cluster's PKI (`skiff cluster init` in the state directory) and writes
the admin's client config to ~/.skiff/config (or $SKIFF_CONFIG), so `skiff get`, `skiff apply`
work at once. The API server speaks TLS and authenticates bearer tokens. Ctrl-C stops every
process it started (by PID).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import time
from pathlib import Path

from deploy.cli.main import CommandError
from deploy.components import Component

# The first member takes etcd's default client port, so a bare `etcdctl` talks to it.
CLIENT_PORTS = (2379, 2479, 2579)
PEER_PORTS = (2380, 2480, 2580)
API_PORT = 6443
NODE_SERVICE_PORT = 10250
POD_CIDR = "10.244.0.0/24"


def default_state_dir() -> Path:
    return Path(os.environ.get("SKIFF_STATE_DIR", Path.home() / ".skiff" / "state"))


def default_config_path() -> Path:
    return Path(os.environ.get("SKIFF_CONFIG", Path.home() / ".skiff" / "config"))


def local_node_name() -> str:
    """This host's name as a node name (DNS-1123: lower case, letters, digits, '-')."""
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(ch if ch.isalnum() else "-" for ch in raw).strip("-")
    return name or "local"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="where the cluster keeps its data, certificates and logs (default ~/.skiff/state, or $SKIFF_STATE_DIR)")
    p.add_argument("--runtime-handlers", default=None, metavar="NAME,...",
                   help="the local runtime's handlers, the first the default (default: runc,process,fake as root, "
                        "else process,fake; 'fake' alone: a hollow node whose pods run no processes)")
    p.add_argument("--config", type=Path, default=default_config_path(),
                   help="where to write the admin's client config (default ~/.skiff/config, or $SKIFF_CONFIG)")


def run(args: argparse.Namespace) -> int:
    from controlplane.apiserver.auth import authn, certs
    from deploy.components import ApiServerProcess
    from controlplane.client.config import ClientConfig, write_config
    from kvstore.localcluster import LocalCluster

    ports = [p for pair in zip(CLIENT_PORTS, PEER_PORTS) for p in pair] + [API_PORT, NODE_SERVICE_PORT]
    busy = sorted(set(ports) - set(_free(ports)))
    if busy:
        raise CommandError(f"ports {', '.join(map(str, busy))} are in use (another skiff up or an etcd?)")
    pki = certs.init_pki(args.state_dir / "pki", "skiff", ["127.0.0.1"], nodes=[local_node_name()])
    admin_token = {e.user: e.token for e in authn.TokenFile.load(pki.tokens).entries}["admin"]
    write_config(args.config, ClientConfig(server=f"127.0.0.1:{API_PORT}", certificate_authority=pki.ca_cert.resolve(),
                                           token=admin_token))
    store_dir = args.state_dir / "kvstore"
    cluster = LocalCluster(store_dir, size=3, ports=ports[:6])
    api = ApiServerProcess(args.state_dir / "apiserver", [], port=API_PORT, extra_args=(
        "--tls-cert-file", str(pki.apiserver_cert), "--tls-private-key-file", str(pki.apiserver_key),
        "--token-auth-file", str(pki.tokens)))
    node = local_node_name()
    runtime_socket = args.state_dir / "runtime.sock"
    handlers = args.runtime_handlers or ("runc,process,fake" if os.geteuid() == 0 else "process,fake")
    components = [
        Component("runtime", ["runtime", "--socket", str(runtime_socket), "--root", str(args.state_dir / "runtime"),
                              "--pod-cidr", POD_CIDR, "--handlers", handlers], args.state_dir / "logs"),
        Component("agent", ["agent", "--node-name", node, "--config", str(pki.directory / f"node-{node}.conf"),
                            "--runtime-endpoint", f"unix://{runtime_socket}", "--root", str(args.state_dir / "agent"),
                            "--pod-cidr", POD_CIDR, "--node-ip", "127.0.0.1",
                            "--listen-node-service", f"127.0.0.1:{NODE_SERVICE_PORT}",
                            "--node-service-cert", str(pki.directory / f"node-{node}.crt"),
                            "--node-service-key", str(pki.directory / f"node-{node}.key")], args.state_dir / "logs"),
        Component("scheduler", ["scheduler", "--config", str(pki.directory / "kube-scheduler.conf")],
                  args.state_dir / "logs"),
        Component("controller-manager", ["controller-manager", "--config", str(pki.directory / "kube-controller-manager.conf")],
                  args.state_dir / "logs"),
    ]
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        cluster.start(timeout=60)
        api.store_endpoints = cluster.endpoints
        api.start(timeout=60, credentials=_ca_credentials(pki.ca_cert),
                  metadata=(("authorization", f"Bearer {admin_token}"),))
        for component in components:
            component.start()
        _print_banner(cluster.endpoints, api.address, args.config, args.state_dir, node)
        while not stop["now"]:
            _check_alive(cluster, api, components)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        for component in reversed(components):
            component.stop()
        api.stop()
        cluster.stop()
    return 0


def _ca_credentials(ca: Path):  # type: ignore[no-untyped-def]
    import grpc
    return grpc.ssl_channel_credentials(ca.read_bytes())


def _check_alive(cluster, api, components: list[Component]) -> None:  # type: ignore[no-untyped-def]
    for member in cluster.members:
        if not member.alive:
            raise CommandError(f"{member.name} exited; see {member.log_path}")
    if api.process is not None and api.process.poll() is not None:
        raise CommandError(f"the API server exited; see {api.log_path}")
    for component in components:
        if not component.alive:
            raise CommandError(f"the {component.name} exited; see {component.log_path}")


def _print_banner(endpoints: list[str], api_address: str, config: Path, state: Path, node: str) -> None:
    joined = ",".join(endpoints)
    print(f"skiff is up: API server at {api_address} (TLS, tokens); store replicas at {joined}; scheduler; controller manager; node {node}")
    print(f"  client config (admin): {config}")
    print(f"  data, certificates and logs: {state}")
    print("  try: skiff get namespaces")
    print(f"       ETCDCTL_API=3 etcdctl --endpoints {joined} endpoint status -w table")
    print("Ctrl-C stops the cluster.", flush=True)


def _free(ports: list[int]) -> list[int]:
    free = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                free.append(port)
            except OSError:
                pass
    return free
