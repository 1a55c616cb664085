"""A typical user program, checked with ``mypy --strict`` by the test
command (scripts/test.sh): result types must flow through run(), go() and
G without a cast or an ignore. Also run as a test (tests/test_typed.py)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import gmprt
import gmprt.aio
import gmprt.trace


async def square(n: int) -> int:
    await gmprt.sleep(0)
    return n * n


def blocking_sum(gs: list[gmprt.G[int]]) -> int:
    return sum(g.join(timeout=5) for g in gs)


async def producer(ch: gmprt.Chan[str], n: int) -> None:
    for i in range(n):
        await ch.send(f"item {i}")
    ch.close()


async def main() -> tuple[int, int, list[str]]:
    gs: list[gmprt.G[int]] = [gmprt.go(square, i) for i in range(5)]
    first: int = await gs[0]
    total: int = await gmprt.go(blocking_sum, gs)
    ch: gmprt.Chan[str] = gmprt.Chan(2)
    gmprt.go(producer, ch, 3)
    items = [v async for v in ch]
    wg = gmprt.WaitGroup()
    mu = gmprt.Mutex()
    wg.add(1)

    async def locked() -> None:
        async with mu:
            wg.done()

    gmprt.go(locked)
    await wg.wait()
    # Observability: typed as dicts; the dump goes to any text file.
    names: list[str] = [g["name"] for g in gmprt.goroutines()]
    assert "main" in names
    gmprt.dump(io.StringIO())
    return first, total, items


def sync_main() -> str:
    return "sync"


def traced(path: str) -> tuple[int, float]:
    """A recording, a flight recorder's write, and the summary of both."""
    with gmprt.trace.record(path):
        gmprt.run(sync_main)
    rec: gmprt.trace.FlightRecorder = gmprt.trace.flight_recorder(5.0)
    written: int = rec.write(path + ".flight")
    rec.stop()
    s: dict[str, Any] = gmprt.trace.summary(gmprt.trace.load(path))
    p99: float = s["latency_us"]["p99"]
    return written, p99


def run_both() -> tuple[tuple[int, int, list[str]], str]:
    result: tuple[int, int, list[str]] = gmprt.run(main, procs=1)
    text: str = gmprt.run(sync_main)
    return result, text


async def in_g(fut: asyncio.Future[str]) -> str:
    # A G awaits an asyncio future of the running gmprt loop.
    return await fut


async def task_in_loop() -> int:
    await asyncio.sleep(0)
    return 7


async def g_spawns_task() -> int:
    return await gmprt.aio.spawn(task_in_loop())


async def aio_main() -> tuple[int, str, int]:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    g: gmprt.G[str] = gmprt.go(in_g, fut)
    fut.set_result("from asyncio")
    n: int = await gmprt.aio.to_g(sum, [1, 2, 3])
    text: str = await g
    spawned: int = await gmprt.go(g_spawns_task)
    return n, text, spawned


def run_aio() -> tuple[int, str, int]:
    result: tuple[int, str, int] = gmprt.aio.run(aio_main())
    with asyncio.Runner(loop_factory=gmprt.aio.new_event_loop) as runner:
        again: tuple[int, str, int] = runner.run(aio_main())
    assert again == result
    return result


if __name__ == "__main__":
    print(run_both())
    print(run_aio())
