"""A tiny HTTP endpoint for a daemon's metrics: GET /metrics (Prometheus text format 0.0.4),
/healthz, /readyz. asyncio.start_server, no dependency; shared by the scheduler and the
controller manager (each brings its own `render`).
"""
from __future__ import annotations

import asyncio
from typing import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192


class MetricsServer:
    """GET /metrics, /healthz, /readyz on host:port (port 0: any free port, see `port`)."""

    def __init__(self, render: Callable[[], str], host: str = "127.0.0.1", port: int = 0,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.render = render
        self.host = host
        self.requested_port = port
        self.ready = ready
        self._server: asyncio.base_events.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for one request; pure apart from reading state."""
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", "only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.render()
        if path == "/healthz":
            return 200, "text/plain", "ok\n"
        if path == "/readyz":
            return (200, "text/plain", "ok\n") if self.ready() else (503, "text/plain", "not ready\n")
        return 404, "text/plain", f"no such path {path}; try /metrics, /healthz or /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10.0)
            request_line = head[:MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) < 2:
                status, ctype, body = 400, "text/plain", "bad request\n"
            else:
                status, ctype, body = self.respond(parts[0], parts[1])
            data = body.encode()
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
            if parts[:1] != ["HEAD"]:
                writer.write(data)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
