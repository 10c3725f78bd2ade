"""A runnable image built offline and served from a local registry, for benchmarks (no internet).

- `busybox_image_blobs()`: the three blobs of a one-layer OCI image - busybox-static at
  /bin/busybox with a symlink per applet, /etc/passwd and /etc/group, /tmp - its gzip layer
  (mtime 0, so digests are reproducible), config (Cmd ["sh"], Env PATH) and manifest.
- `LocalRegistry(workdir)`: Debian's `docker-registry` on 127.0.0.1:<free port>, storage under
  `workdir`, started as a child and stopped by its PID (a context manager); `push_busybox(repo,
  tag)` uploads the image over the Registry HTTP API v2 and returns `HOST:PORT/repo:tag`, which
  skiff's runtime pulls over plain HTTP (loopback registries are always plain HTTP).

The tests' richer builder (tests/imagebuild.py: whiteouts, indexes, archives) stays with the
tests; this module is the part a benchmark needs, so deploy/ does not import tests/.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Self

from kvstore.localcluster import free_ports

BUSYBOX = Path("/bin/busybox")
REGISTRY = Path("/usr/bin/docker-registry")
MTIME = 1_700_000_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(archive: tarfile.TarFile, name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, target
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data) if data else None)


def busybox_layer() -> bytes:
    """An uncompressed layer tar with busybox and its applets; FileNotFoundError without it."""
    if not BUSYBOX.exists():
        raise FileNotFoundError("/bin/busybox is missing: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("proc", 0o755),
                        ("sys", 0o755), ("dev", 0o755)):
            _add(archive, d + "/", tarfile.DIRTYPE, mode)
        _add(archive, "bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        for name in sorted(set(applets) - {"busybox"}):
            _add(archive, f"bin/{name}", tarfile.SYMTYPE, 0o777, target="busybox")
        _add(archive, "etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        _add(archive, "etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return out.getvalue()


def busybox_image_blobs() -> tuple[bytes, bytes, bytes]:
    """(gzip layer, config, manifest) of the busybox image."""
    raw = busybox_layer()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(raw)]}}, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest_of(layer), "size": len(layer)}]},
                          sort_keys=True).encode()
    return layer, config, manifest


class LocalRegistry:
    """`docker-registry` serving plain HTTP on loopback (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.storage = self.workdir / "storage"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.access(REGISTRY, os.X_OK)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        config = self.workdir / "config.yml"
        config.write_text("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                          f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
                          f"http:\n  addr: {self.host}\n")
        with open(self.workdir / "registry.log", "wb") as log:
            self.proc = subprocess.Popen([str(REGISTRY), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self._request("GET", "/v2/")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        tail = (self.workdir / "registry.log").read_text(errors="replace")[-1000:]
        raise RuntimeError(f"docker-registry did not start on {self.host}: {tail}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def _push_blob(self, repository: str, data: bytes) -> None:
        status, headers, body = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"registry upload for {repository}: HTTP {status}: {body[:200]!r}")
        location = headers["location"]
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        sep = "&" if "?" in location else "?"
        status, _, body = self._request("PUT", f"{location}{sep}digest={digest_of(data)}", data,
                                        {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"registry blob upload: HTTP {status}: {body[:200]!r}")

    def push_busybox(self, repository: str = "library/busybox", tag: str = "bench") -> str:
        """Upload the busybox image as repository:tag; its pullable reference."""
        layer, config, manifest = busybox_image_blobs()
        self._push_blob(repository, layer)
        self._push_blob(repository, config)
        status, _, body = self._request("PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                                        {"Content-Type": OCI_MANIFEST})
        if status != 201:
            raise RuntimeError(f"registry manifest {repository}:{tag}: HTTP {status}: {body[:200]!r}")
        return f"{self.host}/{repository}:{tag}"
