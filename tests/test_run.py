"""gmprt.run(): results, exceptions, re-entry and argument checking."""

from __future__ import annotations

import threading

import gmprt
import pytest


class Boom(Exception):
    pass


def test_async_main_result():
    async def main():
        return 42

    assert gmprt.run(main) == 42


def test_async_main_with_args():
    async def main(a, b, c):
        await gmprt.sleep(0)
        return (a, b, c)

    assert gmprt.run(main, 1, "two", [3]) == (1, "two", [3])


def test_plain_main_result():
    def main():
        return "plain"

    assert gmprt.run(main) == "plain"


def test_plain_main_with_args():
    def main(*args):
        return sum(args)

    assert gmprt.run(main, 1, 2, 3, 4) == 10


def test_main_returning_none():
    async def main():
        await gmprt.sleep(0)

    assert gmprt.run(main) is None


def test_main_returns_same_object():
    sentinel = object()

    async def main(x):
        return x

    assert gmprt.run(main, sentinel) is sentinel


@pytest.mark.parametrize("n", [1, 2, 4])
def test_procs(n):
    async def child(i):
        await gmprt.sleep(0)
        return i * 2

    async def main():
        assert gmprt.stats()["procs"] == n
        gs = [gmprt.go(child, i) for i in range(100)]
        return [await g for g in gs]

    assert gmprt.run(main, procs=n) == [i * 2 for i in range(100)]


@pytest.mark.parametrize("n", [1, 2, 4])
def test_procs_plain_main(n):
    def main(x):
        return x + 1

    assert gmprt.run(main, 41, procs=n) == 42


def test_default_procs_is_positive():
    async def main():
        return gmprt.stats()["procs"]

    assert gmprt.run(main) >= 1


def test_async_main_exception_reraised(procs):
    async def main():
        await gmprt.sleep(0)
        raise Boom("from async main")

    with pytest.raises(Boom, match="from async main"):
        gmprt.run(main, procs=procs)


def test_plain_main_exception_reraised(procs):
    def main():
        raise Boom("from plain main")

    with pytest.raises(Boom, match="from plain main"):
        gmprt.run(main, procs=procs)


def test_main_exception_is_the_same_object():
    err = Boom("identity")

    async def main():
        raise err

    with pytest.raises(Boom) as info:
        gmprt.run(main)
    assert info.value is err


def test_main_builtin_exception_types():
    async def main(exc):
        raise exc

    for exc in (ValueError("v"), KeyError("k"), ZeroDivisionError("z"), OSError(2, "e")):
        with pytest.raises(type(exc)):
            gmprt.run(main, exc)


def test_main_exception_then_run_again():
    async def bad():
        raise Boom("first")

    async def good():
        return "second"

    with pytest.raises(Boom):
        gmprt.run(bad)
    assert gmprt.run(good) == "second"


def test_run_several_times_in_a_row(procs):
    async def child(i):
        await gmprt.sleep(0)
        return i

    async def main(k):
        gs = [gmprt.go(child, i) for i in range(50)]
        return k, sum([await g for g in gs])

    for k in range(10):
        assert gmprt.run(main, k, procs=procs) == (k, sum(range(50)))


def test_run_alternating_procs():
    async def main():
        return gmprt.stats()["procs"]

    for n in (1, 4, 2, 1, 3):
        assert gmprt.run(main, procs=n) == n


def test_run_inside_running_runtime_from_g(procs):
    async def inner():
        return "inner"

    async def main():
        with pytest.raises(RuntimeError):
            gmprt.run(inner)
        return "outer"

    assert gmprt.run(main, procs=procs) == "outer"


def test_run_inside_running_runtime_from_sync_g():
    async def inner():
        return "inner"

    def main():
        with pytest.raises(RuntimeError):
            gmprt.run(inner)
        return "outer"

    assert gmprt.run(main) == "outer"


def test_run_inside_running_runtime_from_foreign_thread():
    async def inner():
        return "inner"

    outcome = []

    def other_thread():
        try:
            gmprt.run(inner)
        except RuntimeError as e:
            outcome.append(("RuntimeError", str(e)))
        except BaseException as e:  # report anything else to the test
            outcome.append((type(e).__name__, str(e)))
        else:
            outcome.append(("returned", None))

    async def main():
        t = threading.Thread(target=other_thread)
        t.start()
        for _ in range(10_000_000):
            if not t.is_alive():
                break
            await gmprt.sleep(0)
        t.join(timeout=10)
        return not t.is_alive()

    assert gmprt.run(main) is True
    assert len(outcome) == 1
    assert outcome[0][0] == "RuntimeError", outcome


def test_unused_runtime_can_start_after_nested_refusal():
    async def inner():
        return 1

    async def main():
        with pytest.raises(RuntimeError):
            gmprt.run(inner)

    gmprt.run(main)
    assert gmprt.run(inner) == 1


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_bad_procs_raise_value_error(bad):
    called = []

    async def main():
        called.append(1)

    with pytest.raises(ValueError):
        gmprt.run(main, procs=bad)
    assert called == []


def test_bad_procs_then_run_works():
    async def main():
        return "ok"

    with pytest.raises(ValueError):
        gmprt.run(main, procs=0)
    assert gmprt.run(main) == "ok"


@pytest.mark.parametrize("bad", [42, "main", None, 3.5, [1, 2], object()])
def test_run_non_callable_raises_type_error(bad):
    with pytest.raises(TypeError):
        gmprt.run(bad)


def test_run_non_callable_then_run_works():
    async def main():
        return "ok"

    with pytest.raises(TypeError):
        gmprt.run(123)
    assert gmprt.run(main) == "ok"


def test_run_main_that_is_a_callable_object():
    class Main:
        def __call__(self, x):
            return x * 3

    assert gmprt.run(Main(), 5) == 15


def test_stats_outside_runtime_does_not_raise():
    s = gmprt.stats()
    assert isinstance(s, dict)
    assert s["goroutines"] == 0


def test_deadlock_raises(procs):
    # Every G asleep and nothing can wake one: run() raises gmprt.Deadlock
    # (a RuntimeError) instead of hanging.
    holder = {}

    async def a():
        while "b" not in holder:
            await gmprt.sleep(0)
        await holder["b"]

    async def b():
        while "a" not in holder:
            await gmprt.sleep(0)
        await holder["a"]

    async def main():
        holder["a"] = gmprt.go(a)
        holder["b"] = gmprt.go(b)
        await holder["a"]

    with pytest.raises(gmprt.Deadlock):
        gmprt.run(main, procs=procs)
    assert issubclass(gmprt.Deadlock, RuntimeError)


def test_run_works_after_deadlock():
    async def main():
        holder = {}

        async def selfish():
            while "g" not in holder:
                await gmprt.sleep(0)
            await gmprt.Chan().recv()  # nobody can ever send: asleep for good

        holder["g"] = gmprt.go(selfish)
        await holder["g"]

    with pytest.raises(gmprt.Deadlock):
        gmprt.run(main)

    async def ok():
        return "ok"

    assert gmprt.run(ok) == "ok"
