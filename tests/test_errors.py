"""Bad input and error reporting: foreign awaitables, tokens outside a G,
and exceptions that nobody awaits."""

from __future__ import annotations

import asyncio
import gc

import gmprt
import pytest
from helpers import spin_until


class Boom(Exception):
    pass




# --- foreign awaitables -----------------------------------------------------------


def test_await_asyncio_future_in_g_raises_type_error(procs):
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def main():
            with pytest.raises(TypeError) as info:
                await fut
            return str(info.value)

        msg = gmprt.run(main, procs=procs)
        assert "asyncio" in msg
    finally:
        loop.close()


def test_await_asyncio_future_error_is_catchable_and_g_continues():
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def child():
            try:
                await fut
            except TypeError:
                pass
            await gmprt.sleep(0)
            return "continued"

        async def main():
            return await gmprt.go(child)

        assert gmprt.run(main) == "continued"
    finally:
        loop.close()


def test_await_asyncio_future_uncaught_reaches_awaiter():
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def child():
            await fut

        async def main():
            with pytest.raises(TypeError, match="asyncio"):
                await gmprt.go(child)
            return "ok"

        assert gmprt.run(main) == "ok"
    finally:
        loop.close()


def test_await_asyncio_future_in_main_raises_from_run():
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def main():
            await fut

        with pytest.raises(TypeError, match="asyncio"):
            gmprt.run(main)
    finally:
        loop.close()


def test_await_gmprt_token_under_asyncio_raises_runtime_error():
    async def coro():
        await gmprt.sleep(0)

    with pytest.raises(RuntimeError):
        asyncio.run(coro())


def test_await_g_handle_under_asyncio_raises_runtime_error():
    async def child():
        return 1

    async def main():
        g = gmprt.go(child)
        await g
        return g

    g = gmprt.run(main)

    async def coro():
        return await g

    with pytest.raises(RuntimeError):
        asyncio.run(coro())


def test_await_gmprt_token_in_plain_thread_raises_runtime_error():
    # Driving the coroutine by hand, outside any G.
    async def coro():
        await gmprt.sleep(0)

    c = coro()
    try:
        with pytest.raises(RuntimeError):
            c.send(None)
    finally:
        c.close()


# --- unobserved exceptions ------------------------------------------------------------


def test_unobserved_exception_dropped_handle_is_reported(capfd, procs):
    ran = []

    async def doomed():
        ran.append(1)
        raise Boom("nobody-awaits-me-1")

    async def main():
        gmprt.go(doomed)  # handle dropped at once
        await spin_until(lambda: ran)
        for _ in range(10):
            await gmprt.sleep(0)

    gmprt.run(main, procs=procs)
    gc.collect()
    err = capfd.readouterr().err
    assert "Traceback" in err
    assert "Boom" in err
    assert "nobody-awaits-me-1" in err
    assert "doomed" in err


def test_unobserved_exception_kept_handle_is_reported(capfd, procs):
    async def doomed():
        await gmprt.sleep(0)
        raise Boom("nobody-awaits-me-2")

    async def main():
        g = gmprt.go(doomed)
        await spin_until(g.done)
        return None  # g is dropped here, never awaited

    gmprt.run(main, procs=procs)
    gc.collect()
    err = capfd.readouterr().err
    assert "Traceback" in err
    assert "Boom" in err
    assert "nobody-awaits-me-2" in err


def test_unobserved_exception_in_plain_g_is_reported(capfd):
    ran = []

    def doomed():
        ran.append(1)
        raise ValueError("plain-nobody-awaits")

    async def main():
        gmprt.go(doomed)
        await spin_until(lambda: ran)
        for _ in range(10):
            await gmprt.sleep(0)

    gmprt.run(main)
    gc.collect()
    err = capfd.readouterr().err
    assert "Traceback" in err
    assert "ValueError" in err
    assert "plain-nobody-awaits" in err


def test_unobserved_exception_reported_once(capfd):
    ran = []

    async def doomed():
        ran.append(1)
        raise Boom("report-me-once")

    async def main():
        gmprt.go(doomed)
        await spin_until(lambda: ran)
        for _ in range(10):
            await gmprt.sleep(0)

    gmprt.run(main)
    gc.collect()
    err = capfd.readouterr().err
    assert err.count("Boom: report-me-once") == 1, err
    assert err.count("Traceback") == 1, err


def test_unobserved_exception_does_not_stop_runtime(capfd):
    ran = []

    async def doomed():
        ran.append(1)
        raise Boom("not-fatal")

    async def main():
        gmprt.go(doomed)
        await spin_until(lambda: ran)
        await gmprt.sleep(0)
        return "main still ran"

    assert gmprt.run(main) == "main still ran"
    gc.collect()
    assert "not-fatal" in capfd.readouterr().err


def test_awaited_exception_not_reported(capfd, procs):
    async def doomed():
        await gmprt.sleep(0)
        raise Boom("awaited-so-silent")

    async def main():
        g = gmprt.go(doomed)
        try:
            await g
        except Boom:
            return "caught"

    assert gmprt.run(main, procs=procs) == "caught"
    gc.collect()
    err = capfd.readouterr().err
    assert "awaited-so-silent" not in err
    assert "Traceback" not in err


def test_awaited_after_finish_exception_not_reported(capfd):
    async def doomed():
        raise Boom("finished-then-awaited")

    async def main():
        g = gmprt.go(doomed)
        await spin_until(g.done)
        with pytest.raises(Boom):
            await g

    gmprt.run(main)
    gc.collect()
    assert "finished-then-awaited" not in capfd.readouterr().err


def test_joined_exception_not_reported(capfd, procs):
    async def doomed():
        await gmprt.sleep(0)
        raise Boom("joined-so-silent")

    def main():
        g = gmprt.go(doomed)
        with pytest.raises(Boom):
            g.join(timeout=20)
        return "caught"

    assert gmprt.run(main, procs=procs) == "caught"
    gc.collect()
    err = capfd.readouterr().err
    assert "joined-so-silent" not in err
    assert "Traceback" not in err


def test_main_exception_not_reported_as_unobserved(capfd):
    async def main():
        raise Boom("main-raises")

    with pytest.raises(Boom):
        gmprt.run(main)
    gc.collect()
    err = capfd.readouterr().err
    assert "never awaited" not in err
    assert "main-raises" not in err


def test_successful_unawaited_g_not_reported(capfd):
    ran = []

    async def fine():
        ran.append(1)
        return "ok"

    async def main():
        gmprt.go(fine)
        await spin_until(lambda: ran)
        await gmprt.sleep(0)

    gmprt.run(main)
    gc.collect()
    assert capfd.readouterr().err == ""


# --- silent misuse says what went wrong (issue 10, item 9) ----------------------


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda ch: gmprt.go(ch.send, 1), "chan send"),
        (lambda ch: gmprt.go(gmprt.sleep, 0.01), "sleep"),
        (lambda ch: gmprt.go(ch.recv), "chan receive"),
    ],
)
def test_go_of_a_function_returning_a_gmprt_awaitable_raises_type_error(make, named):
    # Used to return the unawaited awaitable as the G's result and do nothing.
    async def main():
        ch = gmprt.Chan(1)
        g = make(ch)
        with pytest.raises(TypeError, match="unawaited gmprt awaitable") as e:
            await g
        return str(e.value), len(ch)

    msg, queued = gmprt.run(main)
    assert "async def" in msg
    assert named in msg, msg
    assert queued == 0


async def _agen():
    yield 1


def test_go_of_an_async_generator_function_raises_type_error():
    async def main():
        with pytest.raises(TypeError, match="async generator"):
            await gmprt.go(_agen)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_run_of_an_async_generator_function_raises_type_error():
    with pytest.raises(TypeError, match="async generator function"):
        gmprt.run(_agen)


def test_a_g_awaiting_its_own_handle_raises_instead_of_hanging():
    box = []

    async def selfish():
        await gmprt.sleep(0)
        await box[0]

    async def main():
        box.append(gmprt.go(selfish))
        with pytest.raises(RuntimeError, match="cannot await itself"):
            await box[0]
        return "ok"

    assert gmprt.run(main) == "ok"


# --- issue 10, item 9: misuse says what went wrong ----------------------------------


def test_a_never_awaited_token_warns(run_script):
    proc = run_script(
        """
        import gmprt
        async def main():
            ch = gmprt.Chan(1)
            ch.send(1)            # forgot the await: nothing is sent
            return len(ch)
        print(gmprt.run(main))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert "RuntimeWarning" in proc.stderr, proc.stderr
    assert "chan send" in proc.stderr and "never awaited" in proc.stderr, proc.stderr


def test_a_never_awaited_token_warns_in_process():
    async def main():
        gmprt.sleep(1)
        return "ok"

    with pytest.warns(RuntimeWarning, match=r"\(sleep\) was never awaited"):
        assert gmprt.run(main) == "ok"
        gc.collect()


def test_one_awaitable_awaited_by_two_gs_is_refused(procs):
    ch = gmprt.Chan()
    tok = ch.recv()

    async def first():
        return await tok

    async def second():
        with pytest.raises(RuntimeError, match="already awaited by G"):
            await tok
        return "refused"

    async def main():
        g1 = gmprt.go(first)
        await gmprt.sleep(0.01)  # g1 is parked on tok
        assert await gmprt.go(second) == "refused"
        await ch.send("v")
        return await g1.wait(timeout=10)

    assert gmprt.run(main, procs=procs) == "v"


def test_a_failure_still_referenced_at_the_end_of_run_is_reported(run_script):
    proc = run_script(
        """
        import gmprt
        kept = []
        async def fails():
            raise ValueError("nobody looked")
        async def main():
            kept.append(gmprt.go(fails))
            await gmprt.sleep(0.01)
        gmprt.run(main)
        print("returned", len(kept))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "returned 1" in proc.stdout
    assert proc.stderr.count("nobody looked") == 1, proc.stderr
    assert "never awaited or joined" in proc.stderr


def test_a_failure_awaited_later_is_not_reported(capfd):
    async def fails():
        raise ValueError("seen")

    async def main():
        g = gmprt.go(fails)
        await gmprt.sleep(0.01)
        with pytest.raises(ValueError):
            await g

    gmprt.run(main)
    assert "seen" not in capfd.readouterr().err
