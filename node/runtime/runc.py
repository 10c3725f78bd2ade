"""Driving ``runc``, with one small supervising shim process per container.

Why a shim: a container must outlive the runtime process (a runtime upgrade or crash must not
kill pods), yet someone has to hold its stdout/stderr, turn them into the CRI log, and learn its
exit status. containerd solves this with a shim per container; skiff does the same in Python:

    runtime --spawns--> shim (own session) --runs--> runc create (returns once init is set up)
                          |  subreaper: the container's init is re-parented to the shim
                          |  pipes: the container's stdout/stderr -> logs.LogWriter (CRI format)
                          '- on init's exit: <bundle>/exit.json (code, time, OOM) atomically

``runc create`` puts the container in ``created`` state with its stdio on the shim's pipes
(runc's pass-through mode); ``Runc.start`` (plain ``runc start``) lets it run. The shim is a
child of the runtime that started it (reaped by ``reap_shims``); a restarted runtime finds the
status on disk: ``runc state`` while it runs, ``exit.json`` after. Files in a bundle:
``config.json`` (the spec), ``init.pid`` (runc's pid file), ``shim.pid``, ``shim.log`` (the
shim's own errors), ``exit.json``.

Invariants: ``exit.json`` is written once, atomically, after the container's output has been
drained into the log (or after a 2 s grace period when orphaned processes keep the pipes open),
so a reader that sees the exit status also sees the final log lines. Exit codes follow the
shell's convention: a death by signal N is ``128 + N`` (SIGKILL, the OOM killer: 137).
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from node.network.ipam import atomic_write
from node.runtime import cgroups, logs

PR_SET_CHILD_SUBREAPER = 36
SHIM_REPORT_TIMEOUT = 30.0
DRAIN_GRACE = 2.0
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the node package

# Shims this process started, by pid: reaped once they exit so none is left a zombie (the
# runtime is their parent; module-level so that re-created manager objects share it).
_SHIMS: dict[int, subprocess.Popen[bytes]] = {}
_SHIMS_LOCK = threading.Lock()


class RuncError(Exception):
    """A runc command failed; the message carries runc's own words."""


@dataclass(frozen=True)
class RuncState:
    id: str
    pid: int
    status: str  # created | running | paused | stopped
    bundle: str
    created: str


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    finished_ns: int
    oom_killed: bool
    signal: int | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


def exit_code_of(wait_status: int) -> tuple[int, int | None]:
    """A ``waitpid`` status as (shell-style exit code, terminating signal or None)."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return 128 + sig, sig
    return os.WEXITSTATUS(wait_status), None


def read_exit_status(bundle: Path) -> ExitStatus | None:
    try:
        raw = json.loads((bundle / "exit.json").read_text())
    except (OSError, ValueError):
        return None
    return ExitStatus(raw["exit_code"], raw["finished_ns"], raw["oom_killed"], raw.get("signal"))


def reap_shims() -> None:
    """Collect exited shims of this process (no zombies)."""
    with _SHIMS_LOCK:
        for pid, proc in list(_SHIMS.items()):
            if proc.poll() is not None:
                del _SHIMS[pid]


class Runc:
    """``runc --root <root>`` for one runtime; ``root`` is the runtime's ``<root>/runc``."""

    def __init__(self, root: Path, binary: str = "runc", python: str = sys.executable) -> None:
        self.root = root
        self.binary = binary
        self.python = python
        root.mkdir(parents=True, exist_ok=True)

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def _run(self, *args: str, timeout: float = 30.0) -> str:
        result = subprocess.run(self._argv(*args), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuncError(f"runc {' '.join(args)}: {result.stderr.strip() or result.returncode}")
        return result.stdout

    def create(self, container_id: str, bundle: Path, log_path: Path, cgroups_path: str) -> int:
        """``runc create`` under a new shim; returns the container's init pid (host view)."""
        shim_log = open(bundle / "shim.log", "ab")
        argv = [self.python, "-m", "node.runtime.runc", "shim", "--runc", self.binary,
                "--root", str(self.root), "--id", container_id, "--bundle", str(bundle),
                "--log", str(log_path), "--cgroups-path", cgroups_path]
        # The shim must import this package whether or not skiff is installed.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=shim_log, start_new_session=True, close_fds=True,
                                    cwd="/", env=env)
        finally:
            shim_log.close()
        with _SHIMS_LOCK:
            _SHIMS[proc.pid] = proc
        assert proc.stdout is not None
        report = _read_line(proc.stdout, SHIM_REPORT_TIMEOUT)
        proc.stdout.close()
        if report.startswith("ok "):
            return int(report.split()[1])
        if not report:
            proc.kill()
            reason = (bundle / "shim.log").read_text(errors="replace").strip()[-2000:]
            report = f"the shim reported nothing: {reason or 'no output'}"
        raise RuncError(f"runc create {container_id}: {report.removeprefix('error ')}")

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def state(self, container_id: str) -> RuncState | None:
        """runc's view, or None when runc does not know the container."""
        result = subprocess.run(self._argv("state", container_id), capture_output=True, text=True)
        if result.returncode != 0:
            if "does not exist" in result.stderr or "not exist" in result.stderr:
                return None
            raise RuncError(f"runc state {container_id}: {result.stderr.strip()}")
        raw = json.loads(result.stdout)
        return RuncState(raw["id"], raw["pid"], raw["status"], raw["bundle"], raw["created"])

    def list(self) -> list[RuncState]:
        raw = json.loads(self._run("list", "--format", "json") or "null") or []
        return [RuncState(r["id"], r["pid"], r["status"], r["bundle"], r["created"]) for r in raw]

    def kill(self, container_id: str, sig: int = signal.SIGTERM, all_processes: bool = False) -> None:
        """Signal the container's init (``all_processes``: every process in its cgroup, needed
        when the container shares the pod's PID namespace and init is not its PID 1)."""
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, str(int(sig))]
        try:
            self._run(*args)
        except RuncError as exc:
            if "not running" in str(exc) or "process already finished" in str(exc):
                return  # already dead: the goal of a kill
            raise

    def delete(self, container_id: str) -> None:
        """``runc delete --force``; deleting an unknown container is a no-op."""
        try:
            self._run("delete", "--force", container_id)
        except RuncError as exc:
            if "does not exist" not in str(exc):
                raise

    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None,
                  bundle: Path) -> ExecResult:
        """Run ``argv`` in the container, capture output and exit code (CRI ExecSync).

        On timeout the process is SIGKILLed (through its pid file: killing runc alone would
        leave it running) and the result says ``timed_out``.
        """
        pid_file = bundle / f"exec-{threading.get_ident()}-{time.monotonic_ns()}.pid"
        proc = subprocess.Popen(self._argv("exec", "--pid-file", str(pid_file), container_id, *argv),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
            code = proc.returncode
            return ExecResult(code if code >= 0 else 128 - code, out, err)
        except subprocess.TimeoutExpired:
            _kill_pid_file(pid_file)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            return ExecResult(137, out, err, timed_out=True)
        finally:
            pid_file.unlink(missing_ok=True)


def _kill_pid_file(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    except (OSError, ValueError):
        pass  # not started yet or already gone


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from a pipe, or what came before EOF/timeout."""
    fileno = stream.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fileno, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fileno, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        selector.close()
    return data.decode(errors="replace").strip()


# --- the shim (runs as ``python -m node.runtime.runc shim ...``) ---------------------------


def _shim(runc: str, root: str, container_id: str, bundle: Path, log_path: Path,
          cgroups_path: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}", file=sys.stderr)
        return 1
    # fd 1 is the runtime's pipe: keep it only as the report channel, so that nothing we start
    # inherits it (the runtime reads the report until EOF).
    report = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    (bundle / "shim.pid").write_text(str(os.getpid()))
    created = _create(runc, root, container_id, bundle, devnull)
    if isinstance(created, str):
        os.write(report, f"error {created}\n".encode())
        return 1
    init_pid, out_r, err_r = created
    os.write(report, f"ok {init_pid}\n".encode())
    os.close(report)
    _supervise(init_pid, {out_r: logs.STDOUT, err_r: logs.STDERR}, bundle, log_path, cgroups_path)
    return 0


def _create(runc: str, root: str, container_id: str, bundle: Path,
            devnull: int) -> tuple[int, int, int] | str:
    """``runc create`` with the container's stdout/stderr on new pipes: (init pid, stdout read
    end, stderr read end), or runc's error message."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    create = subprocess.run([runc, "--root", root, "create", "--bundle", str(bundle),
                             "--pid-file", str(bundle / "init.pid"), container_id],
                            stdin=devnull, stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    if create.returncode != 0:
        os.close(out_r)
        # No container holds the pipe now, so this read ends at runc's last word.
        message = os.read(err_r, 65536).decode(errors="replace").strip().replace("\n", "; ")
        return message or f"runc create failed with status {create.returncode}"
    return int((bundle / "init.pid").read_text().strip()), out_r, err_r


def _supervise(init_pid: int, pipes: dict[int, str], bundle: Path, log_path: Path,
               cgroups_path: str) -> None:
    """Copy output to the CRI log until the container's init exits; then record its status."""
    writer = logs.LogWriter(log_path)
    pump = threading.Thread(target=logs.pump, args=(pipes, writer), daemon=True)
    pump.start()
    status = _wait_for(init_pid)
    finished_ns = time.time_ns()
    code, sig = exit_code_of(status)
    # Read before anyone runs `runc delete`, which removes the cgroup and its counters.
    oom_kills = cgroups.Cgroups().oom_kills(cgroups_path) or 0
    pump.join(DRAIN_GRACE)
    doc = {"exit_code": code, "signal": sig, "finished_ns": finished_ns, "oom_killed": oom_kills > 0}
    atomic_write(bundle / "exit.json", json.dumps(doc).encode())


def _wait_for(pid: int) -> int:
    """Reap children (we are a subreaper) until ``pid`` exits; its wait status."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            # Not our child (re-parenting failed?): poll until it is gone; status unknown.
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.1)
            return 255 << 8
        if reaped == pid:
            return status


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m node.runtime.runc")
    sub = parser.add_subparsers(dest="command", required=True)
    shim = sub.add_parser("shim", help="supervise one container (started by the runtime)")
    for flag in ("--runc", "--root", "--id", "--bundle", "--log", "--cgroups-path"):
        shim.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    return _shim(args.runc, args.root, args.id, Path(args.bundle), Path(args.log),
                 args.cgroups_path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
