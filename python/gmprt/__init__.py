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

See ``help(gmprt.run)``, ``help(gmprt.go)``, ``help(gmprt.G)`` and
``help(gmprt.net)`` (TCP on the netpoller).
"""

from . import net
from ._gmprt import (
    ChanClosed,
    Deadlock,
    G,
    Timeout,
    go,
    run,
    sleep,
    stats,
    wait_readable,
    wait_writable,
)

__all__ = [
    "ChanClosed",
    "Deadlock",
    "G",
    "Timeout",
    "go",
    "net",
    "run",
    "sleep",
    "stats",
    "wait_readable",
    "wait_writable",
]
