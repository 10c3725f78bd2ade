"""Processes of lab hosts: start inside a namespace, signal, inspect, find leftovers.

Contract:
- `start(netns, proc)` launches `proc.argv` inside the host's network namespace as a session
  leader detached from the caller (it outlives `skiff lab up`), with stdout/stderr appended to
  `proc.log`, and fills in `proc.pid` and `proc.start_time`. `ip netns exec` execs the command
  in place (no fork for a single namespace), so the pid we get is the command's own pid.
- A process is identified by (pid, start time): before any signal the start time is checked
  against /proc, so a pid recycled by an unrelated process is never signalled.
- Every process carries `SKIFF_LAB=<prefix>/<host>/<role>` in its environment; `tagged_pids`
  finds them from /proc when the state file is lost.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from deploy.lab.state import ENV_TAG, LabError, ProcState

REPO_ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def state_of(proc: ProcState) -> str:
    """'alive', 'paused' (SIGSTOPped) or 'stopped' (dead, zombie, or never started)."""
    if not proc.pid:
        return "stopped"
    st = _stat(proc.pid)
    if st is not None and st[0] == "Z":
        _reap(proc.pid)
    if st is None or st[1] != proc.start_time or st[0] in ("Z", "X", "x"):
        return "stopped"
    return "paused" if st[0] in ("T", "t") else "alive"


def start(netns: str, proc: ProcState, tag: str) -> None:
    """Launch `proc` in `netns` (see module doc). Raises LabError if it dies at once."""
    Path(proc.log).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # The lab's processes run skiff from this checkout even when it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(proc.env)
    env[ENV_TAG] = tag
    with open(proc.log, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(proc.argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            ["ip", "netns", "exec", netns, *proc.argv],
            cwd=proc.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed by the terminal's ^C aimed at the lab CLI
        )
    # Popen returns after exec, so /proc/<pid>/stat exists; read its start time to pin identity.
    st = _stat(child.pid)
    proc.pid = child.pid
    proc.start_time = st[1] if st else 0
    # The Popen object is dropped on purpose: the process belongs to the lab, not to this CLI.
    # Mark it as already reaped-by-someone-else so Python does not warn about it.
    child.returncode = 0


def signal_proc(proc: ProcState, sig: int) -> bool:
    """Send `sig` if `proc` is still the incarnation we started. True if it was sent."""
    if state_of(proc) == "stopped":
        return False
    try:
        os.kill(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids: list[tuple[int, int]], timeout: float = 5.0) -> bool:
    """Wait until none of (pid, start_time) is alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, _ in pids:
            _reap(pid)
        left = [p for p in pids if (st := _stat(p[0])) is not None and st[1] == p[1] and st[0] not in ("Z", "X")]
        if not left:
            return True
        time.sleep(0.02)
    return False


def _reap(pid: int) -> None:
    # Processes started by this Python process become our zombies when they die; reap them
    # (only these pids: waitpid(-1) would steal the exit status of unrelated subprocesses).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tagged_pids(prefix: str) -> list[int]:
    """Pids whose environment carries SKIFF_LAB=<prefix>/... (the leftovers of a lab)."""
    needle = f"{ENV_TAG}={prefix}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if any(var.startswith(needle) for var in environ.split(b"\0")):
            found.append(int(entry))
    return found


def kill_all(pids: list[int], timeout: float = 5.0) -> None:
    """SIGKILL (after SIGCONT is irrelevant: SIGKILL ends stopped processes too) and wait."""
    ident = [(p, st[1]) for p in pids if (st := _stat(p)) is not None]
    for pid, _ in ident:
        signal_pid(pid, signal.SIGKILL)
    if not wait_gone(ident, timeout):
        raise LabError(f"processes {sorted(p for p, _ in ident)} did not die after SIGKILL")
