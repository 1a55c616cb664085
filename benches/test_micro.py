"""Micro-benchmarks: gmprt's basic operations against asyncio's, under
pytest-benchmark::

    pytest benches/ --benchmark-only      # measure
    pytest benches/                       # run each once (quick check)

Each benchmark round runs K operations inside a runtime (or event loop) that
stays up for the whole module, so the figures are per K operations, not
runtime start-up: divide by K (the ``ops`` in each test's extra_info) for
one operation. gmprt's runtime runs on a helper thread; a round is one
``gmprt.go(job).join()`` from the test's thread.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("pytest_benchmark")
gmprt = pytest.importorskip("gmprt")

K = 1000
HAS_CHAN = hasattr(gmprt, "Chan")
needs_chan = pytest.mark.skipif(not HAS_CHAN, reason="gmprt.Chan is not available")


@pytest.fixture(scope="module")
def gmprt_rt():
    """Runs a job (an async function) as a G on a runtime that stays up."""
    stop = threading.Event()
    started = threading.Event()
    errors: list[BaseException] = []

    def keeper() -> None:
        started.set()
        stop.wait(600)

    def host() -> None:
        try:
            gmprt.run(keeper)
        except BaseException as e:  # surfaced by the fixture's teardown
            errors.append(e)

    t = threading.Thread(target=host, daemon=True)
    t.start()
    assert started.wait(30), "gmprt runtime did not start"
    yield lambda job, *args: gmprt.go(job, *args).join(timeout=60)
    stop.set()
    t.join(30)
    assert not errors, errors


@pytest.fixture(scope="module")
def asyncio_rt():
    loop = asyncio.new_event_loop()
    yield lambda job, *args: loop.run_until_complete(job(*args))
    loop.close()


@pytest.fixture(params=["gmprt", "asyncio"])
def rt(request):
    """(name, runner) for each contender."""
    return request.param, request.getfixturevalue(f"{request.param}_rt")


def bench(benchmark, runner, job, *args):
    benchmark.extra_info["ops"] = K
    assert benchmark(runner, job, *args) == K


# ---- spawn + join -----------------------------------------------------------------


async def _nothing() -> None:
    pass


async def gmprt_spawn(k: int) -> int:
    gs = [gmprt.go(_nothing) for _ in range(k)]
    for g in gs:
        await g
    return k


async def asyncio_spawn(k: int) -> int:
    await asyncio.gather(*[asyncio.create_task(_nothing()) for _ in range(k)])
    return k


@pytest.mark.benchmark(group=f"spawn+join x{K}")
def test_spawn_join(benchmark, rt):
    name, runner = rt
    bench(benchmark, runner, gmprt_spawn if name == "gmprt" else asyncio_spawn, K)


# ---- yield --------------------------------------------------------------------------


async def gmprt_yield(k: int) -> int:
    for _ in range(k):
        await gmprt.sleep(0)
    return k


async def asyncio_yield(k: int) -> int:
    for _ in range(k):
        await asyncio.sleep(0)
    return k


@pytest.mark.benchmark(group=f"yield (sleep(0)) x{K}")
def test_yield(benchmark, rt):
    name, runner = rt
    bench(benchmark, runner, gmprt_yield if name == "gmprt" else asyncio_yield, K)


# ---- ping-pong over an unbuffered channel -------------------------------------------


async def gmprt_ping_pong(k: int) -> int:
    ping, pong = gmprt.Chan(), gmprt.Chan()

    async def ponger() -> None:
        async for v in ping:
            await pong.send(v)

    g = gmprt.go(ponger)
    for i in range(k):
        await ping.send(i)
        await pong.recv()
    ping.close()
    await g
    return k


async def asyncio_ping_pong(k: int) -> int:
    ping: asyncio.Queue = asyncio.Queue(1)  # as unbuffered as asyncio gets
    pong: asyncio.Queue = asyncio.Queue(1)

    async def ponger() -> None:
        while (v := await ping.get()) is not None:
            await pong.put(v)

    t = asyncio.create_task(ponger())
    for i in range(k):
        await ping.put(i)
        await pong.get()
    await ping.put(None)
    await t
    return k


@needs_chan
@pytest.mark.benchmark(group=f"ping-pong round trip x{K}")
def test_ping_pong(benchmark, rt):
    name, runner = rt
    bench(benchmark, runner, gmprt_ping_pong if name == "gmprt" else asyncio_ping_pong, K)


# ---- send/recv on a buffered channel --------------------------------------------------


async def gmprt_send_recv(k: int) -> int:
    ch = gmprt.Chan(k)
    for i in range(k):
        await ch.send(i)
    for _ in range(k):
        await ch.recv()
    return k


async def asyncio_send_recv(k: int) -> int:
    q: asyncio.Queue = asyncio.Queue(k)
    for i in range(k):
        await q.put(i)
    for _ in range(k):
        await q.get()
    return k


@needs_chan
@pytest.mark.benchmark(group=f"buffered send+recv x{K}")
def test_chan_send_recv(benchmark, rt):
    name, runner = rt
    bench(benchmark, runner, gmprt_send_recv if name == "gmprt" else asyncio_send_recv, K)
