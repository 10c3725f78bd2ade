"""Container root file systems: overlayfs over an image's layer directories.

A container's directory ``<root>/containers/<id>/`` holds ``upper/`` (its writes), ``work/``
(overlayfs' scratch space, same file system as ``upper``) and ``rootfs/`` (the mount point).
The image's layers are read-only lower directories shared by every container of that image.

Invariants:
- ``mount_overlay`` and ``unmount`` are idempotent: mounting what is mounted and unmounting
  what is not are no-ops, so a runtime that crashed between two steps can run them again;
- layer order is the image's: base layer first, as the manifest lists them. overlayfs wants the
  top layer first in ``lowerdir``; the reversal happens here and nowhere else.

Also here: building a busybox root file system from the host's static busybox (the pause
container's root, and the test image), so a node needs no registry to run pods.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

HOST_BUSYBOX = Path("/bin/busybox")


class RootfsError(Exception):
    """A mount or unmount failed; the message carries the command and the kernel's reason."""


def mounted_paths(mountinfo: str | None = None) -> set[Path]:
    """Mount points of this process' mount namespace."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            # mountinfo escapes spaces and friends as octal (\040).
            points.add(Path(fields[4].encode().decode("unicode_escape")))
    return points


def is_mounted(path: Path) -> bool:
    return path.resolve() in mounted_paths()


def overlay_options(layers: Sequence[Path], upper: Path, work: Path) -> str:
    """overlayfs mount options for ``layers`` (base first); pure."""
    if not layers:
        raise RootfsError("an image needs at least one layer directory")
    for layer in layers:
        if "," in str(layer) or ":" in str(layer):
            raise RootfsError(f"layer path {layer} contains ',' or ':' which overlayfs cannot take")
    lower = ":".join(str(layer) for layer in reversed(layers))
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


def mount_overlay(container_dir: Path, layers: Sequence[Path]) -> Path:
    """Mount the container's root at ``container_dir/rootfs``; returns that path."""
    target = container_dir / "rootfs"
    upper, work = container_dir / "upper", container_dir / "work"
    for d in (target, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    if is_mounted(target):
        return target
    options = overlay_options([Path(p).resolve() for p in layers], upper.resolve(), work.resolve())
    if len(options) > 4000:
        # The kernel reads mount options from one page.
        raise RootfsError(f"overlay options for {len(layers)} layers exceed one page; "
                          "use shorter layer paths")
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)])
    return target


def unmount(path: Path) -> None:
    """Unmount ``path`` if it is a mount point (a busy mount is an error, not a lazy detach)."""
    if path.exists() and is_mounted(path):
        _run(["umount", str(path)])


def remove_container_dir(container_dir: Path) -> None:
    """Unmount the rootfs and delete the container's directory (upper layer included)."""
    unmount(container_dir / "rootfs")
    shutil.rmtree(container_dir, ignore_errors=True)
    if container_dir.exists():
        raise RootfsError(f"could not remove {container_dir}; is something still mounted in it?")


def make_busybox_rootfs(target: Path, busybox: Path = HOST_BUSYBOX,
                        applets: Sequence[str] | None = None) -> Path:
    """A minimal root file system: a static busybox with applet links, /etc files, empty dirs.

    ``applets`` None = every applet the binary lists. Idempotent.
    """
    if not busybox.exists():
        raise RootfsError(f"no static busybox at {busybox}: install Debian's busybox-static "
                          "(it is the pause process of every pod)")
    bin_dir = target / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if not (bin_dir / "busybox").exists():
        # Copy then rename: a concurrent caller never sees (or executes) half a binary.
        partial = bin_dir / f".busybox.{os.getpid()}.{id(target)}"
        shutil.copy2(busybox, partial)
        os.replace(partial, bin_dir / "busybox")
    if applets is None:
        listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
        applets = listed.stdout.split()
    for applet in applets:
        link = bin_dir / applet
        if applet != "busybox" and not link.is_symlink():
            try:
                os.symlink("busybox", link)
            except FileExistsError:
                pass  # a concurrent caller made it
    for d in ("proc", "sys", "dev", "etc", "tmp", "root", "run"):
        (target / d).mkdir(exist_ok=True)
    passwd = target / "etc" / "passwd"
    if not passwd.exists():
        passwd.write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name in ("hosts", "hostname", "resolv.conf"):
        (target / "etc" / name).touch()  # bind-mount targets on a read-only root
    os.chmod(target / "tmp", 0o1777)
    return target


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RootfsError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
