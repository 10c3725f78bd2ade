"""What every long-running `skiff` command does the same way: stop on SIGTERM or SIGINT, and
announce itself once it is ready."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from deploy.cli.errors import CommandError


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets (call it inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_stopped(run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], ready: asyncio.Event,
                            announce: Callable[[], None]) -> int:
    """Run `run(stop)` until a signal sets `stop`; call `announce()` once `ready` is set (not if
    `run` ends first). An OSError from `run` (a port in use, a socket it cannot reach) is a
    one-line CommandError."""
    runner = asyncio.create_task(run(stop_on_signals()))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait([runner, waiting], return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        announce()
    else:
        waiting.cancel()
    try:
        await runner
    except OSError as err:
        raise CommandError(str(err)) from None
    return 0
