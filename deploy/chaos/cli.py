"""`skiff chaos run`: a Jepsen-style run against the store of the lab in --dir.

Prints the verdict lines; exit status 0 only when every check holds (see deploy.chaos.runner).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploy.lab.state import DEFAULT_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deploy.chaos.nemesis import CHOICES

    parser.description = (parser.description or "") + (
        ". Needs a lab (`skiff lab up`). Faults are network cuts, kill and pause: this kernel has "
        "no tc netem, so there is no delay or loss emulation.")
    parser.add_argument("--workload", choices=("register", "set", "watch"), default="register")
    parser.add_argument("--nemesis", choices=CHOICES, default="partition")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of workload (default %(default)s)")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="seeds the schedule and the ops (default: random, printed)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default <lab dir>/runs/<id>)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory (default {DEFAULT_DIR})")
    parser.add_argument("--rate", type=float, default=20.0, help="ops/s per client (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=1.0, help="gRPC deadline per op, seconds (default %(default)s)")
    parser.add_argument("--keys", type=int, default=3, help="keys for register/watch (default %(default)s)")
    parser.add_argument("--no-timeline", action="store_true", help="skip the PNG")


def run(args: argparse.Namespace) -> int:
    from deploy.cli.errors import CommandError
    from deploy.lab.state import LabError

    if os.geteuid() != 0:
        raise CommandError("skiff chaos needs root (it drives the lab's faults)")
    if args.duration <= 0 or args.clients < 1:
        raise CommandError("--duration must be > 0 and --clients >= 1")
    from deploy.chaos import runner

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    config = runner.RunConfig(lab_dir=args.dir, workload=args.workload, nemesis=args.nemesis, duration=args.duration,
                              clients=args.clients, seed=seed, out=args.out, rate=args.rate, timeout=args.timeout,
                              keys=args.keys, timeline=not args.no_timeline)
    print(f"chaos run: {args.workload} under {args.nemesis} for {args.duration:.0f}s, {args.clients} clients, seed {seed}")
    try:
        result = runner.run(config)
    except (LabError, ValueError) as err:
        raise CommandError(str(err)) from None
    print(runner.summary(result))
    return 0 if result.ok else 1
