"""Deadlines: gmprt.timeout(), move_on_after(), shield(), deadline(), the
timeout= of every await form, and deadline inheritance by go() and Group.

Ported from CPython's Lib/test/test_asyncio/test_timeouts.py where the
semantics carry over (gmprt scopes have no reschedule()); level-triggered
cancellation (trio) is where gmprt differs, and those tests say so. No test
asserts a duration: where a deadline must have passed, the test waits on
time.monotonic() against the scope's own deadline.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time

import gmprt
import pytest

WAIT = 10.0
SHORT = 0.02


def busy_until(t):
    """Burn time (no park point) until time.monotonic() passes t."""
    while time.monotonic() <= t:
        pass


async def wait_thread(t, limit=WAIT):
    end = time.monotonic() + limit
    while t.is_alive():
        assert time.monotonic() < end, "thread did not end"
        await gmprt.sleep(0.002)


def in_thread(fn):
    """Run fn() in a fresh thread (scopes are per thread: a failing test must
    not leave one entered on pytest's thread); return or raise its result."""
    out = {}

    def body():
        try:
            out["r"] = fn()
        except BaseException as e:
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join(WAIT * 3)
    assert not t.is_alive()
    if "e" in out:
        raise out["e"]
    return out["r"]


# --- timeout / move_on_after, from test_timeouts.py ----------------------------------


def test_timeout_basic(procs):
    async def main():
        with pytest.raises(gmprt.Timeout, match=r"gmprt.timeout\(0.02\)") as e:
            with gmprt.timeout(SHORT) as cm:
                await gmprt.sleep(WAIT)
        assert cm.expired and cm.cancelled
        assert isinstance(e.value, TimeoutError)
        assert isinstance(e.value.__cause__, gmprt.Cancelled)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_move_on_after_basic(procs):
    async def main():
        log = []
        with gmprt.move_on_after(SHORT) as cm:
            await gmprt.Chan().recv()
            log.append("not reached")
        log.append("after")
        assert cm.expired and cm.cancelled
        # Only the scope was cancelled: the G parks fine afterwards.
        await gmprt.sleep(0.001)
        return log

    assert gmprt.run(main, procs=procs) == ["after"]


def test_waiter_sees_cancelled_inside_the_scope():
    async def main():
        seen = []
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(SHORT):
                try:
                    await gmprt.sleep(WAIT)
                except gmprt.Cancelled:
                    seen.append(True)
                    raise
        return seen

    assert gmprt.run(main) == [True]


def test_timeout_not_reached():
    async def main():
        t0 = time.monotonic()
        with gmprt.timeout(WAIT) as cm:
            await gmprt.sleep(0.001)
        assert not cm.expired and not cm.cancelled
        assert cm.deadline > t0
        return "ok"

    assert gmprt.run(main) == "ok"


@pytest.mark.parametrize("seconds", [None, math.inf])
def test_timeout_disabled(seconds):
    async def main():
        with gmprt.timeout(seconds) as cm:
            assert gmprt.deadline() == math.inf
            await gmprt.sleep(0.001)
        with gmprt.move_on_after(seconds) as mo:
            await gmprt.sleep(0.001)
        assert not cm.expired and not mo.expired
        assert cm.deadline == math.inf == mo.deadline
        return "ok"

    assert gmprt.run(main) == "ok"


@pytest.mark.parametrize("first_park", ["sleep", "sleep0", "recv"])
def test_timeout_zero(first_park):
    async def main():
        log = []
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0) as cm:
                log.append("runs up to the first park point")
                if first_park == "sleep":
                    await gmprt.sleep(WAIT)
                elif first_park == "sleep0":
                    await gmprt.sleep(0)
                else:
                    await gmprt.Chan().recv()
                log.append("not reached")
        assert cm.expired
        with gmprt.move_on_after(0) as mo:
            await gmprt.sleep(0)
            log.append("not reached")
        assert mo.expired
        return log

    assert gmprt.run(main) == ["runs up to the first park point"]


def test_deadline_is_fixed_when_the_scope_is_made():
    async def main():
        cm = gmprt.timeout(SHORT)
        busy_until(cm.deadline)
        with pytest.raises(gmprt.Timeout):
            with cm:
                await gmprt.sleep(0)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_foreign_exception_passes():
    async def main():
        with pytest.raises(KeyError):
            with gmprt.timeout(WAIT) as cm:
                raise KeyError
        assert not cm.expired and not cm.cancelled
        return "ok"

    assert gmprt.run(main) == "ok"


def test_foreign_exception_on_timeout():
    async def crash():
        try:
            await gmprt.sleep(WAIT)
        finally:
            raise ZeroDivisionError

    async def main():
        with pytest.raises(ZeroDivisionError):
            with gmprt.timeout(SHORT) as cm:
                await crash()
        assert cm.cancelled
        return "ok"

    assert gmprt.run(main) == "ok"


def test_foreign_cancel_does_not_time_out_if_not_expired():
    async def me(box):
        with gmprt.timeout(WAIT) as cm:
            box[0].cancel("by hand")
            try:
                await gmprt.sleep(WAIT)
            finally:
                box.append(cm)

    async def main():
        box = []
        g = gmprt.go(me, box)
        box.append(g)
        with pytest.raises(gmprt.Cancelled, match="by hand"):
            await g.wait(timeout=WAIT)
        assert not box[1].expired
        return "ok"

    assert gmprt.run(main) == "ok"


def test_the_g_is_not_cancelled_by_its_timeout():
    async def outer():
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(SHORT):
                await gmprt.sleep(WAIT)
        await gmprt.sleep(0.001)  # parks fine afterwards
        return "went on"

    async def main():
        g = gmprt.go(outer)
        assert await g.wait(timeout=WAIT) == "went on"
        assert not g.cancelled()
        return "ok"

    assert gmprt.run(main) == "ok"


def test_cancel_scope_by_hand_ends_quietly(procs):
    async def main():
        with gmprt.timeout(WAIT) as cm:
            cm.cancel()
            await gmprt.sleep(WAIT)
        assert cm.cancelled and not cm.expired
        early = gmprt.move_on_after(WAIT)
        early.cancel()
        assert early.cancelled
        log = []
        with early:
            log.append("body starts")
            await gmprt.sleep(0)
            log.append("not reached")
        # From a foreign thread:
        with gmprt.move_on_after(math.inf) as sc:
            t = threading.Thread(target=sc.cancel)
            t.start()
            await gmprt.Chan().recv()
        await wait_thread(t)
        assert sc.cancelled and not sc.expired
        return log

    assert gmprt.run(main, procs=procs) == ["body starts"]


# --- nesting: the earliest deadline wins, surfacing at its own scope ------------------


def test_nested_inner_earlier_surfaces_at_inner():
    async def main():
        with gmprt.timeout(WAIT) as outer:
            with pytest.raises(gmprt.Timeout, match=r"timeout\(0.02\)"):
                with gmprt.timeout(SHORT) as inner:
                    assert gmprt.deadline() == pytest.approx(inner.deadline, abs=0.01)
                    await gmprt.sleep(WAIT)
            assert gmprt.deadline() == pytest.approx(outer.deadline, abs=0.01)
            await gmprt.sleep(0.001)  # the outer scope goes on
        assert inner.expired and not outer.expired and not outer.cancelled
        return "ok"

    assert gmprt.run(main) == "ok"


def test_nested_outer_earlier_surfaces_at_outer():
    async def main():
        seen = []
        with pytest.raises(gmprt.Timeout, match=r"timeout\(0.02\)"):
            with gmprt.timeout(SHORT) as outer:
                try:
                    with gmprt.timeout(WAIT) as inner:
                        # The inner scope's effective deadline is the outer's.
                        assert gmprt.deadline() == pytest.approx(outer.deadline, abs=0.01)
                        await gmprt.sleep(WAIT)
                except BaseException as e:
                    seen.append(type(e))
                    raise
        assert seen == [gmprt.Cancelled], "the inner scope let the Cancelled through"
        assert outer.expired and not inner.expired and not inner.cancelled
        return "ok"

    assert gmprt.run(main) == "ok"


def test_nested_timeouts_concurrent():
    # asyncio's: the outer deadline passes while the G computes.
    async def main():
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0.002) as outer:
                with gmprt.timeout(WAIT):
                    busy_until(outer.deadline)
                    await gmprt.sleep(WAIT)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_nested_timeouts_loop_busy():
    # Both deadlines passed by the time of the first park: the inner one
    # raises at the inner scope, then the outer one at the next park.
    async def main():
        with pytest.raises(gmprt.Timeout, match=r"timeout\(0.004\)"):
            with gmprt.timeout(0.004) as outer:
                with pytest.raises(gmprt.Timeout, match=r"timeout\(0.002\)"):
                    with gmprt.timeout(0.002) as inner:
                        busy_until(outer.deadline)
                        await gmprt.sleep(WAIT)
                assert inner.expired
                await gmprt.sleep(WAIT)
        assert outer.expired
        return "ok"

    assert gmprt.run(main) == "ok"


def test_move_on_inside_timeout_and_timeout_inside_move_on():
    async def main():
        with gmprt.timeout(WAIT) as t:
            with gmprt.move_on_after(SHORT) as m:
                await gmprt.sleep(WAIT)
        assert m.expired and not t.expired
        with gmprt.move_on_after(SHORT) as m2:
            try:
                with gmprt.timeout(WAIT) as t2:
                    await gmprt.sleep(WAIT)
            except gmprt.Timeout:
                raise AssertionError("the inner timeout did not expire") from None
        assert m2.expired and not t2.expired
        return "ok"

    assert gmprt.run(main) == "ok"


def test_nested_timeout_in_finally_raises_cancelled_at_once():
    # asyncio's test_nested_timeout_in_finally expects the inner timeout to
    # raise TimeoutError; gmprt is level-triggered (trio): inside the expired
    # outer scope, the inner block's first park raises Cancelled, at once.
    async def main():
        seen = []
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(SHORT):
                try:
                    await gmprt.sleep(WAIT)
                finally:
                    try:
                        with gmprt.timeout(WAIT) as inner:
                            await gmprt.sleep(WAIT)
                    except BaseException as e:
                        seen.append(type(e))
                        raise
        assert seen == [gmprt.Cancelled] and not inner.expired
        return "ok"

    assert gmprt.run(main) == "ok"


def test_timeout_after_cancellation():
    async def me(box):
        try:
            box[0].cancel()
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            pass
        # Still cancelled (level-triggered): a timeout scope whose own
        # deadline passed raises Timeout; one whose deadline has not raises
        # the G's Cancelled.
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0):
                await gmprt.sleep(WAIT)
        with pytest.raises(gmprt.Cancelled):
            with gmprt.timeout(WAIT):
                await gmprt.sleep(WAIT)
        with gmprt.shield():
            with gmprt.move_on_after(SHORT) as m:
                await gmprt.sleep(WAIT)
        assert m.expired
        return "done"

    async def main():
        box = []
        g = gmprt.go(me, box)
        box.append(g)
        return await g.wait(timeout=WAIT)

    assert gmprt.run(main) == "done"


def test_shield_hides_the_deadline_around_it():
    async def child():
        return gmprt.deadline()

    async def main():
        with gmprt.move_on_after(SHORT) as m:
            with gmprt.shield():
                assert gmprt.deadline() == math.inf
                g = gmprt.go(child)
                await gmprt.sleep(SHORT * 2)  # past the deadline, shielded
            await gmprt.sleep(WAIT)  # the deadline lands here
        assert m.expired
        return await g

    assert gmprt.run(main) == math.inf


def test_scope_repr_and_reuse():
    assert repr(gmprt.timeout(0.5)) == "<gmprt.timeout(0.5)>"
    assert repr(gmprt.move_on_after(math.inf)) == "<gmprt.move_on_after(inf)>"
    assert repr(gmprt.shield()) == "<gmprt.shield()>"
    assert repr(gmprt.timeout(None)) == "<gmprt.timeout()>"

    def body():
        cm = gmprt.timeout(WAIT)
        with cm:
            with pytest.raises(RuntimeError, match="already entered"):
                with cm:
                    pass
        with pytest.raises(RuntimeError, match="already entered"):
            with cm:
                pass
        a, b = gmprt.move_on_after(WAIT), gmprt.move_on_after(WAIT)
        a.__enter__()
        b.__enter__()
        with pytest.raises(RuntimeError, match="reverse order"):
            a.__exit__(None, None, None)
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)
        with pytest.raises(RuntimeError, match="never entered"):
            gmprt.timeout(1).__exit__(None, None, None)
        return gmprt.deadline()

    assert in_thread(body) == math.inf


def test_exit_in_another_g_is_a_runtime_error():
    async def other(cm):
        with pytest.raises(RuntimeError, match="reverse order"):
            cm.__exit__(None, None, None)

    async def main():
        cm = gmprt.move_on_after(WAIT)
        with cm:
            await gmprt.go(other, cm).wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main) == "ok"


# --- bad input ------------------------------------------------------------------------


def _calls_with(t):
    ch = gmprt.Chan()
    return {
        "Chan.send": lambda: ch.send(1, timeout=t),
        "Chan.recv": lambda: ch.recv(timeout=t),
        "Chan.send_blocking": lambda: ch.send_blocking(1, timeout=t),
        "Chan.recv_blocking": lambda: ch.recv_blocking(timeout=t),
        "select": lambda: gmprt.select(ch.recv_case(), timeout=t),
        "select_blocking": lambda: gmprt.select_blocking(ch.recv_case(), timeout=t),
        "WaitGroup.wait": lambda: gmprt.WaitGroup().wait(timeout=t),
        "WaitGroup.wait_blocking": lambda: gmprt.WaitGroup().wait_blocking(timeout=t),
        "Mutex.lock": lambda: gmprt.Mutex().lock(timeout=t),
        "Mutex.lock_blocking": lambda: gmprt.Mutex().lock_blocking(timeout=t),
        "Semaphore.acquire": lambda: gmprt.Semaphore(1).acquire(timeout=t),
        "Semaphore.acquire_blocking": lambda: gmprt.Semaphore(1).acquire_blocking(timeout=t),
        "wait_readable": lambda: gmprt.wait_readable(0, timeout=t),
        "wait_writable": lambda: gmprt.wait_writable(0, timeout=t),
        "dial": lambda: gmprt.net.dial("127.0.0.1", 1, timeout=t),
    }


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, -math.inf], ids=repr)
@pytest.mark.parametrize("name", sorted(_calls_with(1)))
def test_bad_timeout_is_a_value_error_naming_it(name, bad):
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds >= 0"):
        _calls_with(bad)[name]()


@pytest.mark.parametrize("name", sorted(_calls_with(1)))
def test_non_numeric_timeout_is_a_type_error_naming_it(name):
    with pytest.raises(TypeError) as e:
        _calls_with("1")[name]()
    # PyO3 names the argument in a note (printed with the traceback).
    assert "'timeout'" in " ".join(getattr(e.value, "__notes__", []))


def test_bad_input_in_g_and_conn_methods():
    async def noop():
        pass

    async def main():
        g = gmprt.go(noop)
        await g
        for call in (lambda: g.wait(timeout=-1), lambda: g.join(timeout=math.nan)):
            with pytest.raises(ValueError, match="^timeout must"):
                call()
        ln = gmprt.net.listen("127.0.0.1", 0)
        c = await gmprt.net.dial(*ln.address, timeout=WAIT)
        s = await ln.accept(timeout=WAIT)
        with ln, c, s:
            for call in (
                lambda: ln.accept(timeout=-1),
                lambda: c.recv(timeout=-1),
                lambda: c.send(b"x", timeout=math.nan),
                lambda: c.sendall(b"x", timeout=-1),
            ):
                with pytest.raises(ValueError, match="^timeout must"):
                    call()
        return "ok"

    assert gmprt.run(main) == "ok"


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_bad_scope_seconds_name_the_function(bad):
    with pytest.raises(ValueError, match=r"^gmprt.timeout\(\)'s seconds must be"):
        gmprt.timeout(bad)
    with pytest.raises(ValueError, match=r"^gmprt.move_on_after\(\)'s seconds must be"):
        gmprt.move_on_after(bad)
    with pytest.raises(ValueError, match="^sleep length must be"):
        gmprt.sleep(bad)
    with pytest.raises(TypeError):
        gmprt.timeout("1")


# --- math.inf is no limit, everywhere ----------------------------------------------


def test_inf_timeout_everywhere_waits_and_completes(procs):
    inf = math.inf

    async def main():
        ch = gmprt.Chan()

        async def feeder():
            await gmprt.sleep(0.001)
            await ch.send("a", timeout=inf)
            assert await ch.recv(timeout=inf) == "b"
            await ch.send("c", timeout=inf)

        f = gmprt.go(feeder)
        assert await ch.recv(timeout=inf) == "a"
        await ch.send("b", timeout=inf)
        assert await gmprt.select(ch.recv_case(), timeout=inf) == (0, "c")
        await f.wait(timeout=inf)
        assert f.join(timeout=inf) is None
        wg = gmprt.WaitGroup()
        await wg.wait(timeout=inf)
        mu = gmprt.Mutex()
        await mu.lock(timeout=inf)
        mu.unlock()
        mu.lock_blocking(timeout=inf)
        mu.unlock()
        sem = gmprt.Semaphore(1)
        await sem.acquire(timeout=inf)
        sem.release()
        a, b = socket.socketpair()
        with a, b:
            a.send(b"x")
            await gmprt.wait_readable(b, timeout=inf)
            await gmprt.wait_writable(a, timeout=inf)
        ln = gmprt.net.listen("127.0.0.1", 0)
        c = await gmprt.net.dial(*ln.address, timeout=inf)
        s = await ln.accept(timeout=inf)
        with ln, c, s:
            await c.sendall(b"hi", timeout=inf)
            assert await s.recv(timeout=inf) == b"hi"
        # sleep(inf) sleeps until something ends it.
        with gmprt.move_on_after(SHORT) as m:
            await gmprt.sleep(inf)
        assert m.expired
        with gmprt.timeout(inf), gmprt.move_on_after(inf):
            assert gmprt.deadline() == inf
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


# --- per-call timeout= on every await form, composing with scopes ----------------------


def await_forms():
    """name -> (make, check): make() (in a G) returns an awaitable that
    waits forever unless bounded, given a timeout; check() proves the
    expired call left nothing behind."""

    def recv():
        ch = gmprt.Chan()
        return (lambda t: ch.recv(timeout=t)), (lambda: ch.try_send(1) is False)

    def send():
        ch = gmprt.Chan()

        def check():
            try:
                ch.try_recv()
            except gmprt.ChanEmpty:
                return True
            return False

        return (lambda t: ch.send("v", timeout=t)), check

    def select():
        a = gmprt.Chan()
        return (lambda t: gmprt.select(a.recv_case(), timeout=t)), (
            lambda: a.try_send(1) is False
        )

    def wait():
        wg = gmprt.WaitGroup()
        wg.add(1)
        return (lambda t: wg.wait(timeout=t)), (lambda: wg.count == 1)

    def lock():
        mu = gmprt.Mutex()
        mu.try_lock()

        def check():
            mu.unlock()
            return not mu.locked()

        return (lambda t: mu.lock(timeout=t)), check

    def acquire():
        sem = gmprt.Semaphore(1)
        sem.try_acquire()

        def check():
            sem.release()
            return sem.value == 1

        return (lambda t: sem.acquire(timeout=t)), check

    def join():
        ch = gmprt.Chan(1)

        async def other():
            return await ch.recv()

        g = gmprt.go(other)

        def check():
            ok = not g.done()
            ch.try_send("end")
            return ok

        return (lambda t: g.wait(timeout=t)), check

    return {
        "Chan.recv": recv,
        "Chan.send": send,
        "select": select,
        "WaitGroup.wait": wait,
        "Mutex.lock": lock,
        "Semaphore.acquire": acquire,
        "G.wait": join,
    }


AWAIT_FORMS = sorted(await_forms())


@pytest.mark.parametrize("form", AWAIT_FORMS)
def test_per_call_timeout_raises_timeout_and_leaves_nothing(form, procs):
    async def main():
        make, check = await_forms()[form]()
        if form == "select":
            # select's timeout returns (None, None), it does not raise.
            assert await make(SHORT) == (None, None)
        else:
            with pytest.raises(gmprt.Timeout) as e:
                await make(SHORT)
            assert e.value.__cause__ is None, "the call's own timeout, not a scope's"
        assert check()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


@pytest.mark.parametrize("form", AWAIT_FORMS)
def test_call_timeout_earlier_than_the_scope_wins(form):
    async def main():
        make, check = await_forms()[form]()
        with gmprt.timeout(WAIT) as sc:
            if form == "select":
                assert await make(SHORT) == (None, None)
            else:
                with pytest.raises(gmprt.Timeout):
                    await make(SHORT)
            await gmprt.sleep(0)  # the scope goes on
        assert not sc.expired and not sc.cancelled
        assert check()
        return "ok"

    assert gmprt.run(main) == "ok"


@pytest.mark.parametrize("form", AWAIT_FORMS)
def test_scope_earlier_than_the_call_wins(form, procs):
    async def main():
        make, check = await_forms()[form]()
        with pytest.raises(gmprt.Timeout) as e:
            with gmprt.timeout(SHORT) as sc:
                await make(WAIT)
        assert sc.expired
        assert isinstance(e.value.__cause__, gmprt.Cancelled), "the scope's Timeout"
        assert check()
        make, check = await_forms()[form]()
        with gmprt.move_on_after(SHORT) as m:
            await make(math.inf)
        assert m.expired
        assert check()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_net_call_timeouts_compose_with_scopes():
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        c = await gmprt.net.dial(*ln.address, timeout=WAIT)
        s = await ln.accept(timeout=WAIT)
        with ln, c, s:
            with gmprt.timeout(WAIT) as sc:
                with pytest.raises(gmprt.Timeout):
                    await c.recv(timeout=SHORT)
                with pytest.raises(gmprt.Timeout):
                    await ln.accept(timeout=SHORT)
                with pytest.raises(gmprt.Timeout):
                    await gmprt.wait_readable(c, timeout=SHORT)
            assert not sc.expired
            with gmprt.move_on_after(SHORT) as m1:
                await c.recv(timeout=WAIT)
            with gmprt.move_on_after(SHORT) as m2:
                await ln.accept(timeout=WAIT)
            with gmprt.move_on_after(SHORT) as m3:
                await gmprt.wait_readable(c, timeout=WAIT)
            assert m1.expired and m2.expired and m3.expired
            # Nothing was lost meanwhile: the Conn works.
            await s.sendall(b"still here")
            assert await c.recv(timeout=WAIT) == b"still here"
        return "ok"

    assert gmprt.run(main) == "ok"


# --- sync Gs and threads ------------------------------------------------------------


def blocking_calls():
    ch = gmprt.Chan()
    wg = gmprt.WaitGroup()
    wg.add(1)
    mu = gmprt.Mutex()
    mu.try_lock()
    sem = gmprt.Semaphore(1)
    sem.try_acquire()
    return {
        "recv_blocking": lambda t: ch.recv_blocking(timeout=t),
        "send_blocking": lambda t: ch.send_blocking(1, timeout=t),
        "select_blocking": lambda t: gmprt.select_blocking(ch.recv_case(), timeout=t),
        "wait_blocking": lambda t: wg.wait_blocking(timeout=t),
        "lock_blocking": lambda t: mu.lock_blocking(timeout=t),
        "acquire_blocking": lambda t: sem.acquire_blocking(timeout=t),
    }


BLOCKING = sorted(blocking_calls())


def _scopes_around_blocking(call):
    """The composition rules, for synchronous code (a sync G or a thread)."""
    log = []
    with pytest.raises(gmprt.Timeout) as e:
        with gmprt.timeout(SHORT) as sc:
            call(WAIT)
    assert sc.expired and isinstance(e.value.__cause__, gmprt.Cancelled)
    log.append("scope timeout")
    with gmprt.move_on_after(SHORT) as m:
        call(math.inf)
    assert m.expired
    log.append("move_on")
    with gmprt.timeout(WAIT) as sc2:
        r = None
        try:
            r = call(SHORT)
        except gmprt.Timeout as e2:
            assert e2.__cause__ is None
        assert r in (None, (None, None))
    assert not sc2.expired
    log.append("call timeout")
    return log


@pytest.mark.parametrize("name", BLOCKING)
def test_scopes_in_a_sync_g(name):
    def body():
        return _scopes_around_blocking(blocking_calls()[name])

    async def main():
        return await gmprt.go(body).wait(timeout=WAIT)

    assert gmprt.run(main, procs=2) == ["scope timeout", "move_on", "call timeout"]


@pytest.mark.parametrize("name", BLOCKING)
def test_scopes_in_a_thread(name):
    def body():
        return _scopes_around_blocking(blocking_calls()[name])

    async def main():
        out = []
        t = threading.Thread(target=lambda: out.append(body()))
        t.start()
        await wait_thread(t)
        return out

    assert gmprt.run(main) == [["scope timeout", "move_on", "call timeout"]]


def test_scopes_in_a_thread_without_a_runtime():
    def body():
        return _scopes_around_blocking(blocking_calls()["recv_blocking"])

    assert in_thread(body) == ["scope timeout", "move_on", "call timeout"]


def test_join_under_a_scope():
    def body(g):
        with gmprt.move_on_after(SHORT) as m:
            g.join(timeout=WAIT)
        assert m.expired
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(SHORT):
                g.join()
        return "ok"

    async def forever(ch):
        await ch.recv()

    async def main():
        ch = gmprt.Chan(1)
        g = gmprt.go(forever, ch)
        r = await gmprt.go(body, g).wait(timeout=WAIT)
        out = []
        t = threading.Thread(target=lambda: out.append(body(g)))
        t.start()
        await wait_thread(t)
        ch.try_send(None)
        await g.wait(timeout=WAIT)
        return r, out

    assert gmprt.run(main) == ("ok", ["ok"])


# --- deadline inheritance -------------------------------------------------------


def test_go_inherits_the_deadline(procs):
    async def child():
        d = gmprt.deadline()
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled as e:
            return d, str(e)
        return d, "not cancelled"

    async def main():
        with gmprt.timeout(SHORT) as sc:
            g = gmprt.go(child)
        # The scope is left at once; the child keeps its deadline.
        d, msg = await g.wait(timeout=WAIT)
        assert d == pytest.approx(sc.deadline, abs=0.01)
        assert "inherited" in msg
        assert g.done() and not sc.expired
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_go_inherits_the_earliest_deadline_and_not_cancellation(procs):
    async def child(ch):
        return gmprt.deadline(), await ch.recv(timeout=WAIT)

    async def parent(ch, box):
        with gmprt.timeout(WAIT):
            with gmprt.move_on_after(WAIT / 2) as m:
                box.append(gmprt.go(child, ch))
                box.append(m.deadline)
                await gmprt.sleep(WAIT)

    async def main():
        ch = gmprt.Chan()
        box = []
        p = gmprt.go(parent, ch, box)
        while len(box) < 2:
            await gmprt.sleep(0.001)
        p.cancel()
        with pytest.raises(gmprt.Cancelled):
            await p.wait(timeout=WAIT)
        # The parent's cancel did not reach the child.
        await ch.send("child still running", timeout=WAIT)
        d, v = await box[0].wait(timeout=WAIT)
        assert d == pytest.approx(box[1], abs=0.01)
        return v

    assert gmprt.run(main, procs=procs) == "child still running"


def test_go_inherits_no_deadline_outside_a_scope_or_in_a_shield():
    async def child():
        return gmprt.deadline()

    async def main():
        a = await gmprt.go(child)
        with gmprt.timeout(WAIT), gmprt.shield():
            b = await gmprt.go(child)
        return a, b

    assert gmprt.run(main) == (math.inf, math.inf)


def test_sync_child_inherits_the_deadline():
    def child():
        try:
            gmprt.Chan().recv_blocking(timeout=WAIT)
        except gmprt.Cancelled:
            return "cancelled at the inherited deadline"

    async def main():
        with gmprt.move_on_after(SHORT):
            g = gmprt.go(child)
        return await g.wait(timeout=WAIT)

    assert gmprt.run(main, procs=2) == "cancelled at the inherited deadline"


def test_go_from_a_thread_inherits_the_threads_deadline():
    async def child():
        return gmprt.deadline()

    async def main():
        out = []

        def thread_body():
            with gmprt.timeout(WAIT) as sc:
                out.append((gmprt.go(child), sc.deadline))

        t = threading.Thread(target=thread_body)
        t.start()
        await wait_thread(t)
        g, d = out[0]
        return await g.wait(timeout=WAIT), d

    got, want = gmprt.run(main)
    assert got == pytest.approx(want, abs=0.01)


def test_grandchildren_inherit_through_go(procs):
    async def grandchild():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            return "grandchild cancelled"

    async def child():
        g = gmprt.go(grandchild)  # inherits the deadline the child has
        with gmprt.shield():
            return await g

    async def main():
        with gmprt.move_on_after(SHORT):
            g = gmprt.go(child)
        return await g.wait(timeout=WAIT)

    assert gmprt.run(main, procs=procs) == "grandchild cancelled"


def test_request_tree_is_bounded_by_its_deadline(procs):
    # The overload story: a handler under a per-request deadline starts
    # helpers (go() and a Group); when the deadline passes, every G of the
    # request ends, and the handler's caller sees a Timeout.
    ended = []

    async def upstream(name):
        try:
            await gmprt.sleep(WAIT)
        finally:
            ended.append(name)

    async def handler():
        with gmprt.timeout(SHORT):
            side = gmprt.go(upstream, "go")
            async with gmprt.Group() as grp:
                grp.go(upstream, "group-1")
                grp.go(upstream, "group-2")
                await upstream("handler")
        del side

    async def main():
        h = gmprt.go(handler)
        with pytest.raises(gmprt.Timeout):
            await h.wait(timeout=WAIT)
        while len(ended) < 4:
            await gmprt.sleep(0.001)
        return sorted(ended)

    assert gmprt.run(main, procs=procs) == ["go", "group-1", "group-2", "handler"]


# --- a deadline racing a completion -------------------------------------------------

RACE_ROUNDS = 200


def test_race_deadline_vs_recv_handoff(procs):
    rng = random.Random(3)

    async def receiver(ch, d):
        with gmprt.move_on_after(d) as m:
            return ("got", await ch.recv())
        return ("moved on", m.expired)

    async def main():
        counts = {"got": 0, "moved on": 0}
        for i in range(RACE_ROUNDS):
            ch = gmprt.Chan(1)
            g = gmprt.go(receiver, ch, 0.0005)
            await gmprt.sleep(rng.choice([0, 0.0003, 0.0005, 0.0008]))
            ch.try_send(i)
            kind, v = await g.wait(timeout=WAIT)
            counts[kind] += 1
            if kind == "got":
                assert v == i
                with pytest.raises(gmprt.ChanEmpty):
                    ch.try_recv()
            else:
                assert v is True
                assert ch.try_recv() == i, "the cut-short recv took the value"
        return counts

    out = gmprt.run(main, procs=procs)
    assert sum(out.values()) == RACE_ROUNDS


def test_race_deadline_vs_send_handoff(procs):
    rng = random.Random(4)

    async def sender(ch, v, d):
        with gmprt.move_on_after(d):
            await ch.send(v)
            return "sent"
        return "moved on"

    async def main():
        for i in range(RACE_ROUNDS):
            ch = gmprt.Chan()
            g = gmprt.go(sender, ch, i, 0.0005)
            await gmprt.sleep(rng.choice([0, 0.0003, 0.0005, 0.0008]))
            try:
                got = [ch.try_recv()]
            except gmprt.ChanEmpty:
                got = []
            r = await g.wait(timeout=WAIT)
            assert (r == "sent") == (got == [i]), (r, got)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
