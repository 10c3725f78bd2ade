"""The kubectl-like client commands of `skiff`: apply, get, describe, delete, create, label,
scale, rollout, set, logs, exec.

Each command is a module with `add_arguments(parser)` and `run(args) -> int`, as every `skiff`
subcommand is (see deploy/cli/main.py). `COMMANDS` lists them in main.py's shape (command words
-> (module, one-line help)) so the entry point and tests can register them from one place.
Importing this package imports nothing else, so `skiff --help` stays fast.
"""
from __future__ import annotations

COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("apply",): ("deploy.cli.kubectl.apply_cmd", "create or update objects from manifests (-f FILE|DIR|-)"),
    ("get",): ("deploy.cli.kubectl.get_cmd", "list objects as a table, or print them as YAML, JSON or names"),
    ("describe",): ("deploy.cli.kubectl.describe_cmd", "show an object in detail, with its events"),
    ("delete",): ("deploy.cli.kubectl.delete_cmd", "delete objects by kind and name, selector or manifest"),
    ("create",): ("deploy.cli.kubectl.create_cmd", "create a namespace, or objects from manifests (-f)"),
    ("label",): ("deploy.cli.kubectl.label_cmd", "add, change or remove labels of objects"),
    ("scale",): ("deploy.cli.kubectl.scale_cmd", "set the replicas of a deployment, replica set, replication controller or stateful set"),
    ("rollout",): ("deploy.cli.kubectl.rollout_cmd", "a deployment's rollout: status, history, undo, pause, resume, restart"),
    ("set",): ("deploy.cli.kubectl.set_cmd", "change a field of objects: set image"),
    ("logs",): ("deploy.cli.kubectl.logs_cmd", "a container's log, from its node (-f to follow, --previous)"),
    ("exec",): ("deploy.cli.kubectl.exec_cmd", "run a command in a container (skiff exec POD [-c C] -- CMD...)"),
}
