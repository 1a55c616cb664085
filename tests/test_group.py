"""gmprt.Group: asyncio.TaskGroup's rules (the cases of CPython's
Lib/test/test_asyncio/test_taskgroups.py that apply, ported), errgroup's
limit/try_go, the sync form, cancellation in and out of a group.

Differences from asyncio that these tests pin down, each on purpose:
cancellation is level-triggered (trio), so a body that caught Cancelled
cannot await again outside a shield; a cancel from outside the block
reaches the group's Gs at once; go() into a group that is already
cancelled starts a G that never runs (trio), rather than raising.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time

import gmprt
import pytest
from helpers import spin_until

WAIT = 10.0
SETTLE = 0.02


class MyExc(Exception):
    pass


class MyBaseExc(BaseException):
    pass


def error_types(eg):
    return {type(e) for e in eg.exceptions}


async def settle():
    await gmprt.sleep(SETTLE)


async def wait_thread(t, limit=WAIT):
    end = time.monotonic() + limit
    while t.is_alive():
        assert time.monotonic() < end, "thread did not end"
        await gmprt.sleep(0.002)


# --- asyncio's test_taskgroups, ported ------------------------------------------------


def test_taskgroup_01_results(procs):
    async def foo1():
        await gmprt.sleep(0.01)
        return 42

    async def foo2():
        await gmprt.sleep(0.02)
        return 11

    async def main():
        async with gmprt.Group() as grp:
            t1 = grp.go(foo1)
            t2 = grp.go(foo2)
        # The block waited for both.
        assert t1.done() and t2.done()
        return await t1, await t2

    assert gmprt.run(main, procs=procs) == (42, 11)


def test_taskgroup_02_go_later_in_the_body(procs):
    async def foo(v):
        await gmprt.sleep(0.01)
        return v

    async def main():
        async with gmprt.Group() as grp:
            t1 = grp.go(foo, 42)
            await gmprt.sleep(0.015)
            t2 = grp.go(foo, 11)
        return t1.join(timeout=0), t2.join(timeout=0)

    assert gmprt.run(main, procs=procs) == (42, 11)


def test_taskgroup_03_cancelling_one_child_is_not_an_error(procs):
    async def main():
        async with gmprt.Group() as grp:
            t1 = grp.go(sleeper, WAIT)
            await settle()
            t1.cancel()
            t2 = grp.go(sleeper, 0.001, 11)
        assert t1.cancelled()
        return await t2

    async def sleeper(s, v=None):
        await gmprt.sleep(s)
        return v

    assert gmprt.run(main, procs=procs) == 11


def test_taskgroup_04_child_error_cancels_siblings(procs):
    log = {"num": 0, "t2_cancel": False}

    async def foo1():
        await gmprt.sleep(0.01)
        raise ZeroDivisionError

    async def foo2():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log["t2_cancel"] = True
            raise
        log["num"] += 1

    async def runner():
        async with gmprt.Group() as grp:
            grp.go(foo1)
            log["t2"] = grp.go(foo2)
        log["num"] += 10

    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            await gmprt.go(runner).wait(timeout=WAIT)
        assert error_types(cm.value) == {ZeroDivisionError}
        assert str(cm.value).startswith("errors in a gmprt.Group")
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log["num"] == 0
    assert log["t2_cancel"]
    assert log["t2"].cancelled()


def test_cancel_children_on_child_error_and_the_body(procs):
    log = {"num": 0, "t2_cancel": False, "runner_cancel": False}

    async def foo1():
        await gmprt.sleep(0.01)
        raise ZeroDivisionError

    async def foo2():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log["t2_cancel"] = True
            raise
        log["num"] += 1

    async def runner():
        async with gmprt.Group() as grp:
            for _ in range(3):
                grp.go(foo1)
            grp.go(foo2)
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                log["runner_cancel"] = True
                raise
        log["num"] += 10

    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            await gmprt.go(runner).wait(timeout=WAIT)
        # 1 to 3 of them: the first error may cancel the others before they fail.
        assert error_types(cm.value) == {ZeroDivisionError}
        assert 1 <= len(cm.value.exceptions) <= 3
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log == {"num": 0, "t2_cancel": True, "runner_cancel": True}


def test_cancellation_from_outside_reaches_children(procs):
    num = []

    async def foo():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            num.append(1)
            raise

    async def runner():
        async with gmprt.Group() as grp:
            for _ in range(5):
                grp.go(foo)

    async def main():
        r = gmprt.go(runner)
        await settle()
        assert not r.done()
        r.cancel("from outside")
        with pytest.raises(gmprt.Cancelled, match="from outside"):
            await r.wait(timeout=WAIT)
        assert r.cancelled()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert len(num) == 5


def test_taskgroup_07_outside_cancel_reaches_body_and_children(procs):
    num = []

    async def foo():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            num.append(1)
            raise

    async def runner():
        async with gmprt.Group() as grp:
            for _ in range(5):
                grp.go(foo)
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                num.append(10)
                raise

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(gmprt.Cancelled):
            await r.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert sum(num) == 15


def test_taskgroup_08_errors_while_cancelled_from_outside(procs):
    async def foo():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise ZeroDivisionError

    async def runner():
        async with gmprt.Group() as grp:
            for _ in range(5):
                grp.go(foo)
            await gmprt.sleep(WAIT)

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(ExceptionGroup) as cm:
            await r.wait(timeout=WAIT)
        assert error_types(cm.value) == {ZeroDivisionError}
        assert len(cm.value.exceptions) == 5
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


@pytest.mark.parametrize("after_sleep", [True, False], ids=["09", "10"])
def test_taskgroup_09_10_body_error_cancels_children(procs, after_sleep):
    hs = []

    async def foo(s, v):
        await gmprt.sleep(s)
        return v

    async def main():
        try:
            async with gmprt.Group() as grp:
                hs.append(grp.go(foo, WAIT, 42))
                hs.append(grp.go(foo, WAIT, 11))
                if after_sleep:
                    await settle()
                raise ZeroDivisionError
        except ExceptionGroup as eg:
            assert error_types(eg) == {ZeroDivisionError}
        else:
            raise AssertionError("ExceptionGroup was not raised")
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert all(h.cancelled() for h in hs)


@pytest.mark.parametrize("outer_child", [False, True], ids=["11", "12"])
def test_taskgroup_11_12_nested_groups_cancelled_from_outside(procs, outer_child):
    async def foo():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise ZeroDivisionError

    async def runner():
        async with gmprt.Group() as g1:
            if outer_child:
                g1.go(gmprt_sleep, WAIT)
            async with gmprt.Group() as g2:
                for _ in range(5):
                    g2.go(foo)
                await gmprt.sleep(WAIT)

    async def gmprt_sleep(s):
        await gmprt.sleep(s)

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(ExceptionGroup) as cm:
            await r.wait(timeout=WAIT)
        assert error_types(cm.value) == {ExceptionGroup}
        assert error_types(cm.value.exceptions[0]) == {ZeroDivisionError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


async def crash_after(t):
    await gmprt.sleep(t)
    raise ValueError(t)


def test_taskgroup_13_outer_child_crashes_first(procs):
    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as g1:
                g1.go(crash_after, 0.01)
                async with gmprt.Group() as g2:
                    g2.go(crash_after, WAIT)
        # The inner group was cancelled from outside: no error of its own.
        assert error_types(cm.value) == {ValueError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_14_inner_child_crashes_first(procs):
    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as g1:
                g1.go(crash_after, WAIT)
                async with gmprt.Group() as g2:
                    g2.go(crash_after, 0.01)
        assert error_types(cm.value) == {ExceptionGroup}
        assert error_types(cm.value.exceptions[0]) == {ValueError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_15_body_cleanup_after_outside_cancel_is_shielded(procs):
    # asyncio's body awaits in its except block; in gmprt that await would
    # raise again (level-triggered) unless shielded. The outside cancel has
    # reached the child already, so it never crashes.
    log = []

    async def crash_soon():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log.append("child cancelled")
            raise
        raise ZeroDivisionError

    async def runner():
        async with gmprt.Group() as g1:
            g1.go(crash_soon)
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                try:
                    await gmprt.sleep(0.001)
                except gmprt.Cancelled:
                    log.append("unshielded await raised again")
                with gmprt.shield():
                    await gmprt.sleep(0.001)
                    log.append("shielded await ran")
                raise

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(gmprt.Cancelled):
            await r.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert sorted(log) == [
        "child cancelled",
        "shielded await ran",
        "unshielded await raised again",
    ]


def test_taskgroup_16_cancel_reaches_a_group_in_a_g_awaited_by_the_cancelled(procs):
    # asyncio 16: the cancelled G awaits another G that runs the group; the
    # cancel does not cross `await g` (it is not a link), so the nested
    # runner finishes on its own: its child crashes, and its error surfaces.
    async def crash_soon():
        await gmprt.sleep(0.05)
        raise ZeroDivisionError

    async def nested_runner():
        async with gmprt.Group() as g1:
            g1.go(crash_soon)
            await gmprt.sleep(WAIT)

    async def runner(box):
        box.append(gmprt.go(nested_runner))
        await box[0]

    async def main():
        box = []
        r = gmprt.go(runner, box)
        await settle()
        r.cancel()
        with pytest.raises(gmprt.Cancelled):
            await r.wait(timeout=WAIT)
        with pytest.raises(ExceptionGroup) as cm:
            await box[0].wait(timeout=WAIT)
        assert error_types(cm.value) == {ZeroDivisionError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_17_body_reraises_outside_cancel(procs):
    num = []

    async def runner():
        async with gmprt.Group():
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                num.append(10)
                raise

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(gmprt.Cancelled):
            await r.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert num == [10]


def test_taskgroup_18_body_turns_cancel_into_an_error(procs):
    num = []

    async def runner():
        async with gmprt.Group():
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                num.append(10)
                raise MyExc from None

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(ExceptionGroup) as cm:
            await r.wait(timeout=WAIT)
        assert error_types(cm.value) == {MyExc}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert num == [10]


async def crash_soon():
    await gmprt.sleep(0.01)
    raise ZeroDivisionError


def test_taskgroup_19_child_error_and_body_error(procs):
    async def nested():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise MyExc

    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(crash_soon)
                await nested()
        assert error_types(cm.value) == {MyExc, ZeroDivisionError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_taskgroup_20_keyboard_interrupt_in_body_propagates_as_is(exc):
    async def nested():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise exc

    async def main():
        async with gmprt.Group() as grp:
            grp.go(crash_soon)
            await nested()

    with pytest.raises(exc):
        gmprt.run(main)


def test_taskgroup_20a_base_exception_in_body(procs):
    async def nested():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise MyBaseExc

    async def main():
        with pytest.raises(BaseExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(crash_soon)
                await nested()
        assert not isinstance(cm.value, ExceptionGroup)
        assert error_types(cm.value) == {MyBaseExc, ZeroDivisionError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_21a_base_exception_in_child(procs):
    async def crash_base():
        await gmprt.sleep(0.01)
        raise MyBaseExc

    async def nested():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise TypeError

    async def main():
        with pytest.raises(BaseExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(crash_base)
                await nested()
        assert error_types(cm.value) == {MyBaseExc, TypeError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_22_outside_cancel_while_children_sleep(procs):
    async def foo(s):
        await gmprt.sleep(s)

    async def runner():
        async with gmprt.Group() as grp:
            grp.go(foo, WAIT)
            grp.go(foo, WAIT)

    async def main():
        r = gmprt.go(runner)
        await settle()
        r.cancel()
        with pytest.raises(gmprt.Cancelled):
            await r.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_taskgroup_24_children_start_children(procs):
    done = []

    async def coro1(delay):
        await gmprt.sleep(delay)
        done.append(delay)

    async def root(grp):
        await gmprt.sleep(0.01)
        grp.go(coro1, 0.01)
        grp.go(coro1, 0.02)

    async def main():
        async with gmprt.Group() as grp:
            grp.go(root, grp)
        # The block waited for the grandchildren too.
        return sorted(done)

    assert gmprt.run(main, procs=procs) == [0.01, 0.02]


def test_taskgroup_25_hydra(procs):
    n = [0]

    async def hydra(grp):
        n[0] += 1
        await gmprt.sleep(0.001)
        grp.go(hydra, grp)
        grp.go(hydra, grp)

    async def hercules():
        while n[0] < 10:
            await gmprt.sleep(0.001)
        raise ZeroDivisionError

    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(hydra, grp)
                grp.go(hercules)
        assert error_types(cm.value) == {ZeroDivisionError}
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert n[0] >= 10


def test_taskgroup_task_context(procs):
    cvar = contextvars.ContextVar("cvar", default="unset")

    async def coro(val):
        await gmprt.sleep(0)
        seen = cvar.get()
        cvar.set(val)
        return seen

    async def main():
        cvar.set("parent")
        async with gmprt.Group() as grp:
            t1 = grp.go(coro, 1)
            t2 = grp.go(coro, 2)
        # Each child got a copy of the parent's context; its own set()
        # stays its own.
        return await t1, await t2, cvar.get()

    assert gmprt.run(main, procs=procs) == ("parent", "parent", "parent")


def test_go_into_a_cancelled_group_starts_a_g_that_never_runs(procs):
    # asyncio raises RuntimeError here (no create_task after failure); gmprt
    # follows trio: the G is started cancelled and never runs.
    ran = []

    async def coro1():
        await gmprt.sleep(0.001)
        raise ZeroDivisionError

    async def late():
        ran.append("late")

    async def coro2(grp, box):
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            box.append(grp.go(late))
            raise

    async def main():
        box = []
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(coro1)
                grp.go(coro2, grp, box)
        assert error_types(cm.value) == {ZeroDivisionError}
        assert box[0].cancelled()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert ran == []


def test_taskgroup_context_manager_exit_raises(procs):
    class CustomException(Exception):
        pass

    async def raise_exc():
        raise CustomException

    @contextlib.asynccontextmanager
    async def database():
        try:
            yield
        finally:
            raise CustomException

    async def main():
        try:
            async with gmprt.Group() as grp:
                async with database():
                    grp.go(raise_exc)
                    await gmprt.sleep(WAIT)
        except* CustomException as err:
            assert len(err.exceptions) == 2
        else:
            raise AssertionError("CustomException not raised")
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_group_entered_twice_is_a_runtime_error():
    async def main():
        grp = gmprt.Group()
        async with grp:
            with pytest.raises(RuntimeError, match="entered once"):
                async with grp:
                    pass
        with pytest.raises(RuntimeError, match="entered once"):
            async with grp:
                pass
        return "ok"

    assert gmprt.run(main) == "ok"


def test_go_before_and_after_the_block_is_a_runtime_error():
    async def noop():
        pass

    async def main():
        grp = gmprt.Group()
        with pytest.raises(RuntimeError, match="before its block"):
            grp.go(noop)
        with pytest.raises(RuntimeError, match="before its block"):
            grp.try_go(noop)
        async with grp:
            grp.go(noop)
        with pytest.raises(RuntimeError, match="after its block ended"):
            grp.go(noop)
        with pytest.raises(RuntimeError, match="after its block ended"):
            grp.try_go(noop)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_group_outside_a_runtime_raises_and_leaves_nothing_behind():
    async def noop():
        pass

    # The body's RuntimeError is a body error: wrapped, like any other.
    with pytest.raises(ExceptionGroup) as e:
        with gmprt.Group() as grp:
            grp.go(noop)
    assert error_types(e.value) == {RuntimeError}
    assert "running runtime" in str(e.value.exceptions[0])
    # A scope left entered on this thread would make the next run misbehave.
    assert gmprt.deadline() == math.inf

    async def main():
        with gmprt.Group() as grp:
            g = grp.go(noop)
        return g.done()

    assert gmprt.run(main) is True


def test_group_go_type_errors():
    async def main():
        async with gmprt.Group() as grp:
            with pytest.raises(TypeError, match="callable"):
                grp.go(42)
        return "ok"

    assert gmprt.run(main) == "ok"
    with pytest.raises(ValueError, match="limit"):
        gmprt.Group(limit=0)
    with pytest.raises(TypeError, match="limit"):
        gmprt.Group(limit=1.5)
    with pytest.raises(TypeError, match="limit"):
        gmprt.Group(limit=True)


# --- gmprt's own: grp.cancel(), outside scopes, sync form, threads ---------------------


def test_grp_cancel_ends_the_block_quietly(procs):
    log = []

    async def child():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log.append("child")
            raise

    async def main():
        async with gmprt.Group() as grp:
            g = grp.go(child)
            await settle()
            assert not grp.cancelled
            grp.cancel()
            assert grp.cancelled
            try:
                await gmprt.sleep(WAIT)
            except gmprt.Cancelled:
                log.append("body")
                raise
        log.append("after the block")
        assert g.cancelled()
        # Only the group's scope was cancelled: we can park again.
        await gmprt.sleep(0)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert sorted(log[:2]) == ["body", "child"] and log[2] == "after the block"


def test_grp_cancel_from_a_foreign_thread(procs):
    async def child():
        await gmprt.sleep(WAIT)

    async def main():
        async with gmprt.Group() as grp:
            for _ in range(3):
                grp.go(child)
            t = threading.Thread(target=grp.cancel)
            t.start()
            await gmprt.sleep(WAIT)  # cancelled by the thread
        await wait_thread(t)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_child_catching_cancel_and_returning_is_no_error(procs):
    async def polite():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            return "cleaned up"

    async def main():
        async with gmprt.Group() as grp:
            g = grp.go(polite)
            await settle()
            grp.cancel()
        return await g

    assert gmprt.run(main, procs=procs) == "cleaned up"


def test_error_after_the_body_ended_still_raises(procs):
    async def late_crash():
        await gmprt.sleep(0.02)
        raise MyExc("late")

    async def main():
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group() as grp:
                grp.go(late_crash)
                # the body ends here, the block waits in __aexit__
        assert [str(e) for e in cm.value.exceptions] == ["late"]
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_enclosing_scope_cancels_the_group(procs):
    log = []

    async def child():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log.append("child")
            raise

    async def main():
        with gmprt.move_on_after(math.inf) as sc:
            async with gmprt.Group() as grp:
                grp.go(child)
                grp.go(child)
                await settle()
                sc.cancel()
                await gmprt.sleep(WAIT)
            log.append("not reached: the cancel propagates out of the group")
        return sc.cancelled, grp.cancelled

    # The group itself was not cancelled: the cancel came from outside.
    assert gmprt.run(main, procs=procs) == (True, False)
    assert log == ["child", "child"]


def test_sync_group_in_a_sync_g_with_mixed_children(procs):
    def plain(x):
        return x * 2

    async def coro(x):
        await gmprt.sleep(0)
        return x + 1

    def body():
        with gmprt.Group() as grp:
            a = grp.go(plain, 5)
            b = grp.go(coro, 5)
        return a.join(timeout=0), b.join(timeout=0)

    async def main():
        return await gmprt.go(body).wait(timeout=WAIT)

    assert gmprt.run(main, procs=procs) == (10, 6)


def test_sync_group_error_cancels_body_blocked_in_a_blocking_call(procs):
    def failing():
        raise MyExc("boom")

    def body():
        ch = gmprt.Chan()
        try:
            with gmprt.Group() as grp:
                grp.go(failing)
                ch.recv_blocking(timeout=WAIT)  # cancelled by the error
        except ExceptionGroup as eg:
            return [str(e) for e in eg.exceptions]

    async def main():
        return await gmprt.go(body).wait(timeout=WAIT)

    assert gmprt.run(main, procs=procs) == ["boom"]


def test_sync_group_in_a_foreign_thread():
    out = []

    def sync_child(ch):
        return ch.recv_blocking(timeout=WAIT)

    async def coro_child(ch):
        await ch.send("hi", timeout=WAIT)

    def thread_body():
        ch = gmprt.Chan()
        with gmprt.Group() as grp:
            a = grp.go(sync_child, ch)
            grp.go(coro_child, ch)
        out.append(a.join(timeout=0))
        try:
            with gmprt.Group() as grp:
                grp.go(crash_soon)
                ch.recv_blocking(timeout=WAIT)
        except ExceptionGroup as eg:
            out.append(error_types(eg))

    async def main():
        t = threading.Thread(target=thread_body)
        t.start()
        await wait_thread(t)
        return "ok"

    assert gmprt.run(main) == "ok"
    assert out == ["hi", {ZeroDivisionError}]


def test_many_simultaneous_errors_are_each_collected_once(procs):
    async def fail(i):
        raise MyExc(i)

    async def main():
        for _ in range(20):
            with pytest.raises(ExceptionGroup) as cm:
                async with gmprt.Group() as grp:
                    hs = [grp.go(fail, i) for i in range(30)]
            got = [e.args[0] for e in cm.value.exceptions]
            assert len(got) == len(set(got)) >= 1
            # A child that did not fail was cancelled before it ran.
            for i, h in enumerate(hs):
                assert h.cancelled() == (i not in got)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_group_children_inherit_its_deadline(procs):
    async def child():
        return gmprt.deadline()

    async def main():
        with gmprt.timeout(WAIT) as sc:
            async with gmprt.Group() as grp:
                g = grp.go(child)
        async with gmprt.Group() as grp:
            h = grp.go(child)
        return sc.deadline, await g, await h

    scope_dl, child_dl, free_dl = gmprt.run(main, procs=procs)
    assert math.isclose(child_dl, scope_dl, abs_tol=0.05)
    assert free_dl == math.inf


def test_group_deadline_cancels_children_and_body(procs):
    log = []

    async def child():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log.append("child")
            raise

    async def main():
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0.05):
                async with gmprt.Group() as grp:
                    grp.go(child)
                    grp.go(child)
                    await gmprt.sleep(WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log == ["child", "child"]


def test_deadline_passing_after_the_body_ended_still_raises(procs):
    # The body is done and the block waits for its Gs when the deadline
    # passes: the Gs are cancelled, and the Timeout still surfaces.
    async def forever():
        await gmprt.sleep(WAIT)

    def sync_body():
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0.02):
                with gmprt.Group() as grp:
                    g = grp.go(forever)
        return g.cancelled()

    async def main():
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0.02):
                async with gmprt.Group() as grp:
                    g = grp.go(forever)
        with gmprt.move_on_after(0.02) as m:
            async with gmprt.Group() as grp:
                grp.go(forever)
            raise AssertionError("not reached: the cancel propagates out of the group")
        assert m.expired
        return g.cancelled(), await gmprt.go(sync_body).wait(timeout=WAIT)

    assert gmprt.run(main, procs=procs) == (True, True)


# --- limit and try_go (errgroup's SetLimit, TryGo) -------------------------------------


def test_limit_bounds_how_many_run_at_once(procs):
    state = {"now": 0, "max": 0, "done": 0}
    lock = threading.Lock()

    async def work():
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        await gmprt.sleep(0.001)
        await gmprt.sleep(0)
        with lock:
            state["now"] -= 1
            state["done"] += 1

    def sync_work():
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.001)
        with lock:
            state["now"] -= 1
            state["done"] += 1

    async def main():
        async with gmprt.Group(limit=3) as grp:
            for i in range(40):
                grp.go(work if i % 4 else sync_work)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert state["done"] == 40
    assert 1 <= state["max"] <= 3


def test_limited_go_queues_and_never_waits(procs):
    # If go() waited for a slot, the body would never reach the sends the
    # running children wait for: Deadlock.
    async def child(ch, i):
        await ch.recv()
        return i

    async def main():
        ch = gmprt.Chan()
        async with gmprt.Group(limit=2) as grp:
            hs = [grp.go(child, ch, i) for i in range(10)]
            for _ in range(10):
                await ch.send(None, timeout=WAIT)
        return [await h for h in hs]

    assert gmprt.run(main, procs=procs) == list(range(10))


def test_try_go_returns_none_when_full(procs):
    async def child(ch):
        return await ch.recv(timeout=WAIT)

    async def main():
        ch = gmprt.Chan()
        async with gmprt.Group(limit=2) as grp:
            a = grp.try_go(child, ch)
            b = grp.try_go(child, ch)
            assert a is not None and b is not None
            assert grp.try_go(child, ch) is None
            await ch.send("a", timeout=WAIT)
            # One slot frees once that child ended.
            await spin_until(lambda: a.done() or b.done())
            c = grp.try_go(child, ch)
            assert c is not None
            assert grp.try_go(child, ch) is None
            # go() queues past the limit; try_go counts queued ones too.
            d = grp.go(child, ch)
            await ch.send("b", timeout=WAIT)
            assert grp.try_go(child, ch) is None
            await ch.send("c", timeout=WAIT)
            await ch.send("d", timeout=WAIT)
        return sorted([await a, await b, await c, await d])

    assert gmprt.run(main, procs=procs) == ["a", "b", "c", "d"]


def test_try_go_without_limit_always_starts(procs):
    async def child(i):
        await gmprt.sleep(0)
        return i

    async def main():
        async with gmprt.Group() as grp:
            hs = [grp.try_go(child, i) for i in range(50)]
        assert all(h is not None for h in hs)
        return [await h for h in hs]

    assert gmprt.run(main, procs=procs) == list(range(50))


def test_limited_group_error_cancels_the_queued(procs):
    ran = []

    async def first(ch):
        await ch.recv(timeout=WAIT)
        raise MyExc("first")

    async def queued(i):
        ran.append(i)

    async def main():
        ch = gmprt.Chan()
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group(limit=1) as grp:
                grp.go(first, ch)
                await settle()  # first holds the only slot
                hs = [grp.go(queued, i) for i in range(5)]
                await settle()  # they wait for it, queued
                await ch.send("fail now", timeout=WAIT)
        assert error_types(cm.value) == {MyExc}
        assert all(h.cancelled() for h in hs)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert ran == []


def test_limited_group_handles(procs):
    ran = []

    async def blocker(ch):
        ran.append("blocker")
        return await ch.recv(timeout=WAIT)

    async def queued(v):
        ran.append(v)
        return v

    def sync_fails():
        raise MyExc("sync")

    async def main():
        ch = gmprt.Chan()
        with pytest.raises(ExceptionGroup) as cm:
            async with gmprt.Group(limit=1) as grp:
                b = grp.go(blocker, ch)
                q1 = grp.go(queued, "q1")
                q2 = grp.go(queued, "q2")
                await settle()
                # Cancel a queued one: it never runs; the group goes on.
                q1.cancel()
                await ch.send("unblocked", timeout=WAIT)
                assert await q2.wait(timeout=WAIT) == "q2"
                # A running limited child, cancelled, stops.
                r = grp.go(blocker, ch)
                await spin_until(lambda: ran.count("blocker") == 2)
                await settle()
                r.cancel()
                with pytest.raises(gmprt.Cancelled):
                    await r.wait(timeout=WAIT)
                grp.go(sync_fails)
        assert [str(e) for e in cm.value.exceptions] == ["sync"]
        assert await b == "unblocked"
        assert q1.cancelled()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert "q1" not in ran
