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

See ``help(gmprt.run)``, ``help(gmprt.go)``, ``help(gmprt.G)``,
``help(gmprt.Chan)``, ``help(gmprt.select)``, ``help(gmprt.WaitGroup)``,
``help(gmprt.Mutex)``, ``help(gmprt.Semaphore)`` and ``help(gmprt.net)``
(TCP on the netpoller).
"""

from . import net
from ._gmprt import (
    CLOSED,
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
    go,
    run,
    select,
    select_blocking,
    sleep,
    stats,
    wait_readable,
    wait_writable,
)

__all__ = [
    "CLOSED",
    "Chan",
    "ChanClosed",
    "ChanEmpty",
    "Deadlock",
    "G",
    "Mutex",
    "RecvCase",
    "Semaphore",
    "SendCase",
    "Shutdown",
    "Timeout",
    "WaitGroup",
    "go",
    "net",
    "run",
    "select",
    "select_blocking",
    "sleep",
    "stats",
    "wait_readable",
    "wait_writable",
]
