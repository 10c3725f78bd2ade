"""`skiff lab ...`: simulated hosts in network namespaces, and the faults to inject into them.

Every subcommand needs root. Each prints one line on error (deploy.cli.main.CommandError).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploy.lab.state import DEFAULT_DIR, DEFAULT_PREFIX, DEFAULT_SUBNET, LabError

NO_NETEM = ("This kernel has no tc netem: there is no delay or loss emulation; faults are "
            "cuts (nftables drops, both directions), process kill/pause, and tbf bandwidth limits.")


COMMANDS = ("up", "down", "status", "exec", "partition", "isolate", "bridge", "ring", "heal", "kill", "start",
            "pause", "resume", "slow")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + ". " + NO_NETEM
    # Not required: as non-root, bare `skiff lab` must still say (in one line) that it needs root.
    sub = parser.add_subparsers(dest="lab_command", metavar="COMMAND")

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory (default {DEFAULT_DIR}, or $SKIFF_LAB_DIR)")
        return p

    p = cmd("up", "create N hosts on a bridge and start the store on the first 3 or 5")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--store-replicas", type=int, default=None, help="3 or 5 (default: 3, or 1 with fewer than 3 hosts)")
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help=f"private IPv4 subnet for the hosts (default {DEFAULT_SUBNET})")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="name prefix of namespaces and links (default %(default)s)")
    p.add_argument("--store", choices=("skiff", "etcd"), default="skiff", help="store replicas: skiff kvstore, or Debian's etcd for comparison")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a leader (0: do not wait)")
    p = cmd("down", "remove every process, namespace, link, rule and mount of the lab (safe twice)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="prefix to sweep when the state file is lost")
    p.add_argument("--purge", action="store_true", help="also delete the lab directory (logs, data, fault log)")
    cmd("status", "hosts, addresses, processes, each replica's role/term/applied index, faults in force")
    p = cmd("exec", "run a command inside a host: skiff lab exec n1 -- etcdctl get foo")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p = cmd("partition", "cut the network into groups that reach only each other: n1,n2/n3,n4,n5")
    p.add_argument("groups", help="groups of hosts separated by '/', hosts by ','")
    p = cmd("isolate", "cut one host off from every other host")
    p.add_argument("host")
    p = cmd("bridge", "two halves sharing the middle host (n1,n2,n3 | n3,n4,n5)")
    p.add_argument("hosts", nargs="?", help="comma-separated hosts in order (default: all)")
    p = cmd("ring", "each host reaches only its two ring neighbours")
    p.add_argument("hosts", nargs="?", help="comma-separated hosts in order (default: all)")
    cmd("heal", "lift every network cut and bandwidth limit")
    for name, help_text in (("kill", "SIGKILL every process of the hosts"),
                            ("start", "restart the hosts' stopped processes with their data"),
                            ("pause", "SIGSTOP every process of the hosts"),
                            ("resume", "SIGCONT every process of the hosts")):
        p = cmd(name, help_text)
        p.add_argument("hosts", help="comma-separated host names, e.g. n1,n2")
    p = cmd("slow", "limit a host's bandwidth with tbf, both ways (no delay/loss: no netem here)")
    p.add_argument("host")
    p.add_argument("rate", help="tc rate such as 1mbit or 200kbit, or 'off'")


def run(args: argparse.Namespace) -> int:
    from deploy.cli.errors import CommandError

    if os.geteuid() != 0:
        raise CommandError("skiff lab needs root (network namespaces, bridges and firewall rules)")
    if not getattr(args, "lab_command", None):
        raise CommandError("lab: name a command: " + ", ".join(COMMANDS) + " (see skiff lab --help)", status=2)
    try:
        return _dispatch(args)
    except LabError as err:
        raise CommandError(str(err)) from None


def _hosts(spec: str) -> list[str]:
    names = [h.strip() for h in spec.split(",") if h.strip()]
    if not names:
        raise LabError("no host named")
    return names


def _dispatch(args: argparse.Namespace) -> int:
    from deploy.lab import faults, hosts, status

    cmd, lab_dir = args.lab_command, args.dir
    if cmd == "up":
        replicas = args.store_replicas or (3 if args.hosts >= 3 else 1)
        lab = hosts.up(lab_dir, args.hosts, replicas, args.subnet, args.prefix, args.store, args.wait)
        print(status.render(lab))
        return 0
    if cmd == "down":
        removed = hosts.down(lab_dir, prefix=args.prefix, purge=args.purge)
        print(f"lab down: removed {', '.join(removed) if removed else 'nothing (no leftovers)'}")
        return 0
    if cmd == "status":
        print(status.render(hosts.load(lab_dir)))
        return 0
    if cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return hosts.exec_in(hosts.load(lab_dir), args.host, argv)
    if cmd == "partition":
        entry = faults.partition(lab_dir, faults.parse_groups(args.groups))
    elif cmd == "isolate":
        entry = faults.isolate(lab_dir, args.host)
    elif cmd == "bridge":
        entry = faults.bridge(lab_dir, _hosts(args.hosts) if args.hosts else None)
    elif cmd == "ring":
        entry = faults.ring(lab_dir, _hosts(args.hosts) if args.hosts else None)
    elif cmd == "heal":
        entry = faults.heal(lab_dir)
    elif cmd == "slow":
        entry = faults.slow(lab_dir, args.host, args.rate)
    elif cmd in ("kill", "start", "pause", "resume"):
        entry = getattr(faults, cmd)(lab_dir, _hosts(args.hosts))
    else:
        raise LabError(f"unknown lab command {cmd}")
    print(f"{entry['wall']} {entry['fault']} {','.join(entry['hosts'])} {entry['detail']}".rstrip())
    return 0
