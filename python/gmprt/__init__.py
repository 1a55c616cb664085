"""gmprt: Go's G/M/P scheduler for Python.

A G is a coroutine (``async def``) or a plain function, scheduled by a Rust
runtime that spreads Gs over OS threads the way Go does::

    import gmprt

    async def worker(n):
        await gmprt.sleep(0)
        return n * n

    async def main():
        gs = [gmprt.go(worker, i) for i in range(10)]
        return [await g for g in gs]

    print(gmprt.run(main))

Gs talk over channels, Go-style::

    async def producer(ch):
        for i in range(3):
            await ch.send(i)
        ch.close()

    async def main():
        ch = gmprt.Chan()
        gmprt.go(producer, ch)
        return [v async for v in ch]

Blocking forms for synchronous code (plain-function Gs and any thread) share
one naming rule: the ``_blocking`` suffix and an optional ``timeout`` that
raises ``gmprt.Timeout``: ``ch.send_blocking(v)``, ``ch.recv_blocking()``,
``gmprt.select_blocking(...)``, ``wg.wait_blocking()``,
``mu.lock_blocking()``, ``sem.acquire_blocking()``, ``g.join()``. While
they wait, the M gives its P to another M and the GIL is released.

Cancellation and deadlines: ``g.cancel()`` raises ``gmprt.Cancelled`` at
the G's park point; ``async with gmprt.Group() as grp:`` ends its Gs
together; ``with gmprt.timeout(1.0):`` bounds everything inside, including
the Gs it starts.

asyncio programs run on gmprt with ``import gmprt.aio`` and
``gmprt.aio.run(main())`` (or ``asyncio.Runner(loop_factory=
gmprt.aio.new_event_loop)``): asyncio tasks and Gs then share the runtime,
await each other, and blocking code moves to a G with
``await gmprt.aio.to_g(fn)``.

See ``help(gmprt.run)``, ``help(gmprt.go)``, ``help(gmprt.G)``,
``help(gmprt.Chan)``, ``help(gmprt.select)``, ``help(gmprt.WaitGroup)``,
``help(gmprt.Mutex)``, ``help(gmprt.Semaphore)``, ``help(gmprt.net)``
(TCP and UDP on the netpoller) and ``help(gmprt.aio)``. Debugging:
``gmprt.dump()`` prints every G with its stack and what it waits on
(``gmprt.goroutines()`` as data; ``leaked=True`` for the Gs parked
forever), ``kill -QUIT`` prints it, ``GMPRT_SCHEDTRACE=<ms>`` prints Go's
schedtrace line, ``help(gmprt.trace)`` records a timeline of every G
step, and ``help(gmprt.debug)`` serves the dump, the schedtrace line and
traces over HTTP.
"""

from typing import TYPE_CHECKING, Any

from . import debug, net
from ._gmprt import (
    CLOSED,
    Cancelled,
    CancelScope,
    Chan,
    ChanClosed,
    ChanEmpty,
    Deadlock,
    G,
    Mutex,
    RecvCase,
    Semaphore,
    SendCase,
    Shutdown,
    Timeout,
    WaitGroup,
    deadline,
    go,
    move_on_after,
    run,
    select,
    select_blocking,
    shield,
    sleep,
    stats,
    timeout,
    wait_readable,
    wait_writable,
)
from ._group import Group
from ._traceback import dump, goroutines

if TYPE_CHECKING:
    from . import aio as aio
    from . import trace as trace

# Submodules loaded on first use: neither is needed to run Gs (gmprt.aio
# imports asyncio), and `python -m gmprt.trace` must not find its module
# imported already.
_LAZY = ("aio", "trace")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gmprt' has no attribute {name!r}")


__all__ = [
    "CLOSED",
    "CancelScope",
    "Cancelled",
    "Chan",
    "ChanClosed",
    "ChanEmpty",
    "Deadlock",
    "G",
    "Group",
    "Mutex",
    "RecvCase",
    "Semaphore",
    "SendCase",
    "Shutdown",
    "Timeout",
    "WaitGroup",
    "aio",
    "deadline",
    "debug",
    "dump",
    "go",
    "goroutines",
    "move_on_after",
    "net",
    "run",
    "select",
    "select_blocking",
    "shield",
    "sleep",
    "stats",
    "timeout",
    "trace",
    "wait_readable",
    "wait_writable",
]
