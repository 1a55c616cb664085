"""g.cancel(): Cancelled at every park point, in coroutine Gs, sync Gs and
threads; exactly-once (a cancelled operation consumes, delivers and holds
nothing); level-triggered cancellation and shield; cancel from a foreign
thread and before a G starts; the cancel at shutdown.

Whether the G has reached its park point when the cancel lands does not
change what these tests assert (a cancel landing before the park raises at
it just the same); the short sleeps before a cancel only make the parked
path the one usually taken. Every wait is bounded (WAIT).
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time

import gmprt
import pytest
from helpers import spin_until

WAIT = 10.0
# Long enough for a G or thread to reach its park point in practice; the
# assertions hold whether or not it did.
SETTLE = 0.02


async def settle():
    await gmprt.sleep(SETTLE)


async def wait_thread(t, limit=WAIT):
    """Poll (parked, so the runtime keeps running) until thread t ends."""
    end = time.monotonic() + limit
    while t.is_alive():
        assert time.monotonic() < end, "thread did not end"
        await gmprt.sleep(0.002)


async def cancel_parked(start, msg="stop it"):
    """Run `start()` (it returns the awaitable to park on) in a new G, let it
    park, cancel it with `msg`; check it ended with Cancelled(msg)."""
    started = []

    async def body():
        aw = start()
        started.append(True)
        return await aw

    g = gmprt.go(body)
    await spin_until(lambda: started)
    await settle()
    assert not g.done(), "the G should be parked, not finished"
    assert g.cancel(msg) is True
    with pytest.raises(gmprt.Cancelled, match=msg):
        await g.wait(timeout=WAIT)
    assert g.cancelled()
    assert g.done()
    assert g.cancel() is False, "cancel of a finished G returns False"
    return g


async def conn_pair():
    ln = gmprt.net.listen("127.0.0.1", 0)
    host, port = ln.address
    client = await gmprt.net.dial(host, port, timeout=WAIT)
    server = await ln.accept(timeout=WAIT)
    ln.close()
    return client, server


async def fill_conn(conn):
    """Send until the socket buffers are full (the peer does not read)."""
    chunk = b"x" * 65536
    total = 0
    for _ in range(100_000):
        try:
            total += await conn.send(chunk, timeout=0.05)
        except gmprt.Timeout:
            return total
    raise AssertionError("the socket never filled up")


async def recv_exactly(conn, n):
    got = bytearray()
    while len(got) < n:
        b = await conn.recv(1 << 20, timeout=WAIT)
        assert b, "EOF before all bytes arrived"
        got += b
    return bytes(got)


def fill_socket(s):
    s.setblocking(False)
    try:
        while True:
            s.send(b"x" * 65536)
    except BlockingIOError:
        pass


# --- cancel a coroutine G at every park point ------------------------------------------


def test_cancel_parked_chan_recv_unbuffered_and_buffered(procs):
    async def main():
        ch0 = gmprt.Chan()
        ch1 = gmprt.Chan(1)
        await cancel_parked(ch0.recv)
        await cancel_parked(ch1.recv)
        await cancel_parked(lambda: ch0.recv(timeout=WAIT))
        # async for is a receive too
        async def drain():
            return [v async for v in ch1]

        await cancel_parked(lambda: drain())
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_chan_send_unbuffered_and_full(procs):
    async def main():
        ch0 = gmprt.Chan()
        ch1 = gmprt.Chan(1)
        assert ch1.try_send("first")
        await cancel_parked(lambda: ch0.send("x"))
        await cancel_parked(lambda: ch1.send("y"))
        await cancel_parked(lambda: ch1.send("z", timeout=WAIT))
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_select(procs):
    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        full = gmprt.Chan(1)
        full.try_send(0)
        await cancel_parked(lambda: gmprt.select(a.recv_case(), b.recv_case()))
        await cancel_parked(lambda: gmprt.select(a.recv_case(), full.send_case(1)))
        await cancel_parked(lambda: gmprt.select(a.recv_case(), timeout=WAIT))
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_sleep(procs):
    async def main():
        await cancel_parked(lambda: gmprt.sleep(WAIT))
        await cancel_parked(lambda: gmprt.sleep(math.inf))
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_sync_primitives(procs):
    async def main():
        wg = gmprt.WaitGroup()
        wg.add(1)
        await cancel_parked(wg.wait)
        assert wg.count == 1, "a cancelled wait leaves the counter alone"
        await cancel_parked(lambda: wg.wait(timeout=WAIT))

        mu = gmprt.Mutex()
        assert mu.try_lock()
        await cancel_parked(mu.lock)
        await cancel_parked(lambda: mu.lock(timeout=WAIT))
        await cancel_parked(lambda: mu.__aenter__())

        sem = gmprt.Semaphore(1)
        assert sem.try_acquire()
        await cancel_parked(sem.acquire)
        await cancel_parked(lambda: sem.acquire(timeout=WAIT))
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_join(procs):
    async def main():
        ch = gmprt.Chan()

        async def slow():
            return await ch.recv(timeout=WAIT)

        other = gmprt.go(slow)
        await cancel_parked(lambda: other)
        await cancel_parked(lambda: other.wait(timeout=WAIT))
        # Cancelling the waiter does not cancel the G it waited for.
        assert not other.done()
        await ch.send("still running")
        assert await other.wait(timeout=WAIT) == "still running"
        assert not other.cancelled()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_net(procs):
    async def main():
        client, server = await conn_pair()
        try:
            await cancel_parked(client.recv)
            await cancel_parked(lambda: client.recv(10, timeout=WAIT))
            await fill_conn(client)
            await cancel_parked(lambda: client.send(b"more"))
            await cancel_parked(lambda: client.sendall(b"y" * (1 << 20)))
            await cancel_parked(lambda: client.sendall(b"y", timeout=WAIT))
        finally:
            client.close()
            server.close()
        ln = gmprt.net.listen("127.0.0.1", 0)
        try:
            await cancel_parked(ln.accept)
            await cancel_parked(lambda: ln.accept(timeout=WAIT))
            # The listener still works.
            host, port = ln.address
            c = await gmprt.net.dial(host, port, timeout=WAIT)
            s = await ln.accept(timeout=WAIT)
            c.close()
            s.close()
        finally:
            ln.close()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_parked_dial():
    # No blackholed address on loopback: a listener with a full accept queue
    # (backlog 0 lets one connection queue on Linux) drops the next SYN, so
    # the next dial waits for the kernel's SYN retransmit. If this kernel
    # completes it anyway, there is no way to park a dial here: skip.
    async def main():
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen(0)
            host, port = srv.getsockname()
            first = await gmprt.net.dial(host, port, timeout=WAIT)
            try:
                try:
                    probe = await gmprt.net.dial(host, port, timeout=0.2)
                except gmprt.Timeout:
                    pass
                else:
                    probe.close()
                    return "skip"
                await cancel_parked(lambda: gmprt.net.dial(host, port))
                await cancel_parked(lambda: gmprt.net.dial(host, port, timeout=WAIT))
            finally:
                first.close()
        return "ok"

    r = gmprt.run(main)
    if r == "skip":
        pytest.skip("loopback completed a dial past a full backlog: cannot park one")
    assert r == "ok"


def test_cancel_parked_wait_readable_writable(procs):
    async def main():
        a, b = socket.socketpair()
        with a, b:
            await cancel_parked(lambda: gmprt.wait_readable(b))
            await cancel_parked(lambda: gmprt.wait_readable(b.fileno(), timeout=WAIT))
            fill_socket(a)
            await cancel_parked(lambda: gmprt.wait_writable(a))
            await cancel_parked(lambda: gmprt.wait_writable(a, timeout=WAIT))
            # The fds still work with gmprt afterwards.
            assert b.recv(1 << 20)
            await gmprt.wait_writable(a, timeout=WAIT)
            c, d = socket.socketpair()
            with c, d:
                c.send(b"ping")
                await gmprt.wait_readable(d, timeout=WAIT)
                assert d.recv(10) == b"ping"
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_a_running_g_lands_at_its_next_park_point(procs):
    log = []

    async def worker():
        x = 0
        for i in range(1000):
            x += i  # no park point: the cancel waits
        log.append("computed")
        await gmprt.sleep(0)  # the next park point raises
        log.append("never")

    async def main():
        g = gmprt.go(worker)
        # procs=1: the worker has not started; procs=2: it may be running.
        g.cancel("next park")
        with pytest.raises(gmprt.Cancelled, match="next park"):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert "never" not in log


# --- sync Gs and foreign threads in every _blocking call --------------------------------


def blocking_forms():
    """name -> factory; a factory, called inside a G, makes the objects and
    returns (call, check): call() blocks in the named form, check() (in the
    main G, after the cancel) proves nothing was consumed or held."""

    def send():
        ch = gmprt.Chan()

        def check():
            with pytest.raises(gmprt.ChanEmpty):
                ch.try_recv()

        return (lambda: ch.send_blocking("v", timeout=WAIT)), check

    def recv():
        ch = gmprt.Chan()

        def check():
            assert ch.try_send("v") is False, "the cancelled receiver is still queued"

        return (lambda: ch.recv_blocking(timeout=WAIT)), check

    def select():
        a, b = gmprt.Chan(), gmprt.Chan()

        def check():
            assert a.try_send(1) is False
            with pytest.raises(gmprt.ChanEmpty):
                b.try_recv()

        return (
            lambda: gmprt.select_blocking(a.recv_case(), b.send_case(2), timeout=WAIT)
        ), check

    def wait():
        wg = gmprt.WaitGroup()
        wg.add(1)

        def check():
            assert wg.count == 1
            wg.done()

        return (lambda: wg.wait_blocking(timeout=WAIT)), check

    def lock():
        mu = gmprt.Mutex()
        mu.try_lock()

        def check():
            mu.unlock()
            assert not mu.locked(), "a cancelled lock_blocking took the mutex"

        return (lambda: mu.lock_blocking(timeout=WAIT)), check

    def with_lock():
        mu = gmprt.Mutex()
        mu.try_lock()

        def call():
            with mu:
                raise AssertionError("got a lock that is held")

        def check():
            mu.unlock()
            assert not mu.locked()

        return call, check

    def acquire():
        sem = gmprt.Semaphore(1)
        sem.try_acquire()

        def check():
            sem.release()
            assert sem.value == 1, "a cancelled acquire_blocking kept a permit"

        return (lambda: sem.acquire_blocking(timeout=WAIT)), check

    def with_sem():
        sem = gmprt.Semaphore(1)
        sem.try_acquire()

        def call():
            with sem:
                raise AssertionError("got a permit that is taken")

        def check():
            sem.release()
            assert sem.value == 1

        return call, check

    def join():
        ch = gmprt.Chan(1)

        async def other():
            return await ch.recv(timeout=WAIT)

        g = gmprt.go(other)

        def check():
            assert not g.done(), "the joined G is not cancelled with its joiner"
            assert ch.try_send("done")
            assert g.join(timeout=WAIT) == "done"

        return (lambda: g.join(timeout=WAIT)), check

    return {
        "send_blocking": send,
        "recv_blocking": recv,
        "select_blocking": select,
        "wait_blocking": wait,
        "lock_blocking": lock,
        "with_mutex": with_lock,
        "acquire_blocking": acquire,
        "with_semaphore": with_sem,
        "join": join,
    }


FORMS = sorted(blocking_forms())


@pytest.mark.parametrize("form", FORMS)
def test_cancel_sync_g_in_blocking_call(form, procs):
    async def main():
        call, check = blocking_forms()[form]()
        started = []

        def body():
            started.append(True)
            call()
            return "returned"

        g = gmprt.go(body)
        await spin_until(lambda: started)
        await settle()
        assert g.cancel(f"cancel {form}")
        with pytest.raises(gmprt.Cancelled, match=f"cancel {form}"):
            await g.wait(timeout=WAIT)
        assert g.cancelled()
        check()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


@pytest.mark.parametrize("form", FORMS)
def test_cancel_thread_in_blocking_call_through_its_scope(form):
    # A thread has no G handle: its scope is what gets cancelled, here from
    # a G. The scope catches its own Cancelled: the block ends quietly.
    async def main():
        call, check = blocking_forms()[form]()
        st = {}

        def body():
            with gmprt.move_on_after(math.inf) as sc:
                st["scope"] = sc
                try:
                    call()
                except gmprt.Cancelled as e:
                    st["raised"] = e
                    raise
                st["returned"] = True
            st["after"] = True

        t = threading.Thread(target=body, daemon=True)
        t.start()
        await spin_until(lambda: "scope" in st)
        await settle()
        st["scope"].cancel()
        await wait_thread(t)
        assert isinstance(st.get("raised"), gmprt.Cancelled)
        assert "returned" not in st
        assert st.get("after") is True
        assert st["scope"].cancelled and not st["scope"].expired
        check()
        return "ok"

    assert gmprt.run(main) == "ok"


def test_cancel_sync_g_that_joins_a_cancelled_g():
    # g.join() of a cancelled G raises Cancelled in the joiner (which is
    # not itself cancelled, and can keep going).
    async def main():
        ch = gmprt.Chan()

        async def victim():
            await ch.recv(timeout=WAIT)

        v = gmprt.go(victim)

        def joiner():
            r = None
            try:
                v.join(timeout=WAIT)
            except gmprt.Cancelled as e:
                r = str(e)
            ch2 = gmprt.Chan(1)
            ch2.send_blocking("joiner still works", timeout=WAIT)
            return r, ch2.recv_blocking(timeout=WAIT)

        j = gmprt.go(joiner)
        await settle()
        v.cancel("victim cancelled")
        return await j.wait(timeout=WAIT)

    assert gmprt.run(main, procs=2) == ("victim cancelled", "joiner still works")


def test_join_from_a_thread_of_a_cancelled_g():
    out = []

    async def main():
        ch = gmprt.Chan()

        async def victim():
            await ch.recv(timeout=WAIT)

        v = gmprt.go(victim)

        def joiner():
            try:
                v.join(timeout=WAIT)
            except gmprt.Cancelled as e:
                out.append(str(e))

        t = threading.Thread(target=joiner, daemon=True)
        t.start()
        await settle()
        v.cancel("bye")
        await wait_thread(t)
        with pytest.raises(gmprt.Cancelled):
            v.join(timeout=0)
        return "ok"

    assert gmprt.run(main) == "ok"
    assert out == ["bye"]


@pytest.mark.parametrize("pairs", [4, 6])
def test_cancel_lands_on_sync_gs_whose_every_wait_is_matched_at_once(procs, pairs):
    # With many sync senders and receivers on one channel, each operation
    # finds its counterpart already queued, or is matched before its wait
    # even begins. A cancel must still land (it once never did: the
    # blocking form queued first and looked for a cancel only after).
    def worker(ch, send):
        for _ in range(200_000):
            if send:
                ch.send_blocking(1, timeout=WAIT)
            else:
                ch.recv_blocking(timeout=WAIT)
        return "never cancelled"

    async def main():
        ch = gmprt.Chan()
        gs = [gmprt.go(worker, ch, i % 2 == 0) for i in range(2 * pairs)]
        await settle()
        for g in gs:
            g.cancel("stop")
        outcomes = []
        for g in gs:
            try:
                outcomes.append(await g.wait(timeout=WAIT))
            except gmprt.Cancelled:
                outcomes.append("cancelled")
        return outcomes

    assert gmprt.run(main, procs=procs) == ["cancelled"] * (2 * pairs)


# --- who cancels, and when -------------------------------------------------------------


def test_cancel_from_a_foreign_thread(procs):
    async def main():
        ch = gmprt.Chan()
        started = []

        async def waiter():
            started.append(True)
            return await ch.recv()

        g = gmprt.go(waiter)
        await spin_until(lambda: started)
        await settle()
        results = []
        t = threading.Thread(target=lambda: results.append(g.cancel("from a thread")))
        t.start()
        await wait_thread(t)
        assert results == [True]
        with pytest.raises(gmprt.Cancelled, match="from a thread"):
            await g.wait(timeout=WAIT)
        assert ch.try_send(1) is False
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancel_before_first_step_never_runs():
    # procs=1: main keeps the only P until it parks, so the new Gs have not
    # started when they are cancelled.
    ran = []

    async def coro():
        ran.append("coro")

    def plain():
        ran.append("plain")

    async def main():
        g1 = gmprt.go(coro)
        g2 = gmprt.go(plain)
        assert g1.cancel("early") and g2.cancel("early")
        for g in (g1, g2):
            with pytest.raises(gmprt.Cancelled, match="early"):
                await g.wait(timeout=WAIT)
            assert g.cancelled()
        return "ok"

    assert gmprt.run(main, procs=1) == "ok"
    assert ran == []


def test_cancel_right_after_go_from_a_thread(procs):
    # From a thread the new G may start before the cancel lands (the P is
    # free): then it runs to its end (it has no park point); otherwise it
    # never runs. Never both, never twice.
    async def main():
        outcomes = set()
        for _ in range(50):
            ran = []
            handles = []

            async def coro(ran=ran):
                ran.append(1)
                return "ran"

            def spawn_and_cancel(handles=handles, coro=coro):
                g = gmprt.go(coro)
                g.cancel("thread")
                handles.append(g)

            t = threading.Thread(target=spawn_and_cancel)
            t.start()
            await wait_thread(t)
            g = handles[0]
            try:
                r = await g.wait(timeout=WAIT)
            except gmprt.Cancelled:
                assert ran == [] and g.cancelled()
                outcomes.add("never ran")
            else:
                assert r == "ran" and ran == [1] and not g.cancelled()
                outcomes.add("ran")
        return outcomes

    assert gmprt.run(main, procs=procs) <= {"never ran", "ran"}


def test_cancel_finished_g_returns_false():
    async def quick():
        return 7

    async def main():
        g = gmprt.go(quick)
        assert await g == 7
        assert g.cancel() is False
        assert g.cancel("again") is False
        assert not g.cancelled()
        assert await g == 7, "a late cancel does not change the outcome"

        async def fails():
            raise ValueError("x")

        f = gmprt.go(fails)
        with pytest.raises(ValueError):
            await f
        assert f.cancel() is False
        assert not f.cancelled()
        return "ok"

    assert gmprt.run(main) == "ok"


def test_cancel_twice_first_message_wins(procs):
    async def main():
        g = gmprt.go(gmprt.Chan().recv_blocking, WAIT)
        await settle()
        assert g.cancel("first")
        assert g.cancel("second") is True or g.done()
        with pytest.raises(gmprt.Cancelled, match="first"):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_default_message_names_the_g():
    async def main():
        async def parked():
            await gmprt.sleep(WAIT)

        g = gmprt.go(parked)
        await settle()
        g.cancel()
        with pytest.raises(gmprt.Cancelled) as e:
            await g.wait(timeout=WAIT)
        assert str(e.value) == f"G {g.id} was cancelled"
        return "ok"

    assert gmprt.run(main) == "ok"


def test_cancelled_is_a_base_exception():
    assert issubclass(gmprt.Cancelled, BaseException)
    assert not issubclass(gmprt.Cancelled, Exception)

    async def careless():
        try:
            await gmprt.sleep(WAIT)
        except Exception:
            return "swallowed"

    async def main():
        g = gmprt.go(careless)
        await settle()
        g.cancel()
        with pytest.raises(gmprt.Cancelled):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_self_cancel():
    async def me(box):
        await spin_until(lambda: box)
        assert box[0].cancel("myself")
        x = 1 + 1  # still running: the cancel waits for a park point
        await gmprt.sleep(0)
        return x

    async def main():
        box = []
        g = gmprt.go(me, box)
        box.append(g)
        with pytest.raises(gmprt.Cancelled, match="myself"):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main) == "ok"


def test_g_that_handles_cancel_decides_its_outcome():
    async def returns():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            return "cleaned up"

    async def raises():
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled as e:
            raise ValueError("failed in cleanup") from e

    async def main():
        a, b = gmprt.go(returns), gmprt.go(raises)
        await settle()
        a.cancel()
        b.cancel()
        assert await a.wait(timeout=WAIT) == "cleaned up"
        assert not a.cancelled()
        with pytest.raises(ValueError, match="failed in cleanup") as e:
            await b.wait(timeout=WAIT)
        assert isinstance(e.value.__cause__, gmprt.Cancelled)
        assert not b.cancelled()
        return "ok"

    assert gmprt.run(main) == "ok"


def test_awaiting_a_cancelled_g_does_not_cancel_the_waiter(procs):
    async def victim():
        await gmprt.sleep(WAIT)

    async def main():
        v = gmprt.go(victim)
        await settle()
        v.cancel("v")
        with pytest.raises(gmprt.Cancelled, match="v"):
            await v
        # The Cancelled was v's outcome, not ours: we still park fine.
        await gmprt.sleep(0)
        await gmprt.sleep(0.001)
        ch = gmprt.Chan(1)
        await ch.send(1)
        return await ch.recv()

    assert gmprt.run(main, procs=procs) == 1


# --- level-triggered, and shield -------------------------------------------------------


def test_level_triggered_every_park_point_raises_again(procs):
    log = []

    async def body(ch):
        for what in ("sleep", "sleep0", "recv", "select", "lock"):
            try:
                if what == "sleep":
                    await gmprt.sleep(WAIT)
                elif what == "sleep0":
                    await gmprt.sleep(0)
                elif what == "recv":
                    await ch.recv()
                elif what == "select":
                    await gmprt.select(ch.recv_case(), timeout=WAIT)
                else:
                    mu = gmprt.Mutex()
                    mu.try_lock()
                    await mu.lock()
                log.append((what, "completed"))
            except gmprt.Cancelled:
                log.append((what, "cancelled"))
        return "done"

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(body, ch)
        await settle()
        g.cancel()
        # It caught every Cancelled and returned normally.
        assert await g.wait(timeout=WAIT) == "done"
        assert ch.try_send(1) is False
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log == [
        ("sleep", "cancelled"),
        ("sleep0", "cancelled"),
        ("recv", "cancelled"),
        ("select", "cancelled"),
        ("lock", "cancelled"),
    ]


def test_a_g_that_swallows_every_cancel_does_not_keep_its_m():
    # Level-triggered: every await of a cancelled G raises. One that
    # catches each Cancelled and awaits again must still let the other Gs
    # of its P run between two catches (it once caught them all in one
    # step, holding its M until sysmon took the P away).
    log = []

    async def stubborn():
        for i in range(1, 1001):  # parked at i=1 when cancelled
            try:
                if i % 2:
                    await gmprt.sleep(WAIT)
                else:
                    await gmprt.sleep(0)
            except gmprt.Cancelled:
                log.append("s")
        return "gave up"

    async def main():
        g = gmprt.go(stubborn)
        await settle()
        g.cancel()
        for _ in range(100_000):
            if g.done():
                break
            log.append("t")
            await gmprt.sleep(0)
        return await g.wait(timeout=WAIT)

    assert gmprt.run(main, procs=1) == "gave up"
    assert log.count("s") == 1000
    longest = max(len(run) for run in "".join(log).split("t"))
    assert longest <= 2, f"{longest} catches in a row without the other G running"


def test_ready_operations_complete_in_a_cancelled_g():
    # DESIGN §6: a ready operation never looks at cancellation; only a
    # park point raises.
    async def body(ch):
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            pass
        v = await ch.recv()  # a value is buffered: no park
        assert ch.try_send("back")
        return v

    async def main():
        ch = gmprt.Chan(1)
        g = gmprt.go(body, ch)
        await settle()
        ch.try_send("buffered")
        g.cancel()
        assert await g.wait(timeout=WAIT) == "buffered"
        return ch.try_recv()

    assert gmprt.run(main) == "back"


def test_shield_holds_back_a_cancel_until_it_ends(procs):
    log = []

    async def body(ch):
        try:
            await gmprt.sleep(WAIT)
        except gmprt.Cancelled:
            log.append("cancelled")
        with gmprt.shield():
            await gmprt.sleep(0)
            await gmprt.sleep(0.001)
            log.append(await ch.recv(timeout=WAIT))
        try:
            await gmprt.sleep(0)
        except gmprt.Cancelled:
            log.append("cancelled again after the shield")
            raise

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(body, ch)
        await settle()
        g.cancel()
        await ch.send("shielded recv", timeout=WAIT)
        with pytest.raises(gmprt.Cancelled):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log == ["cancelled", "shielded recv", "cancelled again after the shield"]


def test_cancel_while_shielded_lands_after_the_shield(procs):
    log = []

    async def body(ch):
        with gmprt.shield():
            log.append(await ch.recv(timeout=WAIT))  # parked when cancelled
        log.append("left shield")
        await gmprt.sleep(0)
        log.append("never")

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(body, ch)
        await settle()
        assert g.cancel("held back")
        await settle()
        assert not g.done(), "a shielded G is not woken by a cancel"
        await ch.send("delivered", timeout=WAIT)
        with pytest.raises(gmprt.Cancelled, match="held back"):
            await g.wait(timeout=WAIT)
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"
    assert log == ["delivered", "left shield"]


def test_shield_in_sync_g_and_thread():
    out = {}

    def sync_g(ch):
        with gmprt.shield():
            out["sync"] = ch.recv_blocking(timeout=WAIT)
        try:
            ch.recv_blocking(timeout=WAIT)
        except gmprt.Cancelled:
            out["sync after"] = "cancelled"
            raise

    def thread_body(ch, box):
        with gmprt.move_on_after(math.inf) as sc:
            box.append(sc)
            with gmprt.shield():
                out["thread"] = ch.recv_blocking(timeout=WAIT)
            ch.recv_blocking(timeout=WAIT)
            out["thread"] = "not cut short"
        out["thread scope cancelled"] = sc.cancelled

    async def main():
        ch1, ch2 = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(sync_g, ch1)
        box = []
        t = threading.Thread(target=thread_body, args=(ch2, box), daemon=True)
        t.start()
        await spin_until(lambda: box)
        await settle()
        g.cancel()
        box[0].cancel()
        await settle()
        assert not g.done() and t.is_alive()
        await ch1.send("s", timeout=WAIT)
        await ch2.send("t", timeout=WAIT)
        with pytest.raises(gmprt.Cancelled):
            await g.wait(timeout=WAIT)
        await wait_thread(t)
        return "ok"

    assert gmprt.run(main, procs=2) == "ok"
    assert out == {
        "sync": "s",
        "sync after": "cancelled",
        "thread": "t",
        "thread scope cancelled": True,
    }


def test_cleanup_awaits_under_shield_after_cancel():
    async def worker(ch, log):
        try:
            await gmprt.sleep(WAIT)
        finally:
            with gmprt.shield():
                await gmprt.sleep(0.001)
                await ch.send("goodbye", timeout=WAIT)
            log.append("cleanup done")

    async def main():
        ch = gmprt.Chan(1)
        log = []
        g = gmprt.go(worker, ch, log)
        await settle()
        g.cancel()
        with pytest.raises(gmprt.Cancelled):
            await g.wait(timeout=WAIT)
        return ch.try_recv(), log

    assert gmprt.run(main) == ("goodbye", ["cleanup done"])


# --- exactly once: a cancelled operation consumes, delivers and holds nothing ----------


def test_cancelled_recv_consumes_nothing(procs):
    async def main():
        ch0, ch1 = gmprt.Chan(), gmprt.Chan(1)
        await cancel_parked(ch0.recv)
        assert ch0.try_send("x") is False, "a cancelled receiver is still queued"
        await cancel_parked(ch1.recv)
        assert ch1.try_send("kept")
        assert ch1.try_recv() == "kept"
        await cancel_parked(lambda: gmprt.select(ch1.recv_case()))
        assert ch1.try_send("kept too")
        assert ch1.try_recv() == "kept too"
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancelled_send_delivers_nothing(procs):
    async def main():
        ch0, ch1 = gmprt.Chan(), gmprt.Chan(1)
        await cancel_parked(lambda: ch0.send("lost?"))
        with pytest.raises(gmprt.ChanEmpty):
            ch0.try_recv()
        ch1.try_send("first")
        await cancel_parked(lambda: ch1.send("second"))
        await cancel_parked(lambda: gmprt.select(ch1.send_case("third")))
        assert ch1.try_recv() == "first"
        with pytest.raises(gmprt.ChanEmpty):
            ch1.try_recv()
        ch1.close()
        with pytest.raises(gmprt.ChanClosed):
            ch1.try_recv()
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancelled_lock_and_acquire_hold_nothing(procs):
    async def main():
        mu = gmprt.Mutex()
        await mu.lock()
        await cancel_parked(mu.lock)
        mu.unlock()
        assert not mu.locked(), "the cancelled waiter got the mutex"
        assert mu.try_lock()
        mu.unlock()

        sem = gmprt.Semaphore(2)
        await sem.acquire()
        await sem.acquire()
        await cancel_parked(sem.acquire)
        await cancel_parked(sem.acquire)
        sem.release()
        sem.release()
        assert sem.value == 2, "a cancelled acquire kept a permit"
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancelled_conn_recv_leaves_bytes_and_conn_usable(procs):
    async def main():
        client, server = await conn_pair()
        with client, server:
            await cancel_parked(lambda: client.recv(100))
            await server.sendall(b"hello")
            assert await recv_exactly(client, 5) == b"hello"
            await client.sendall(b"back")
            assert await recv_exactly(server, 4) == b"back"
            # A cancelled send on a full socket: the Conn still works once
            # the peer drains it.
            sent = await fill_conn(client)
            await cancel_parked(lambda: client.send(b"z"))
            got = await recv_exactly(server, sent)
            assert got == b"x" * sent
            await client.sendall(b"after")
            assert await recv_exactly(server, 5) == b"after"
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_cancelled_sendall_stops_sending_and_conn_stays_usable():
    big = b"s" * (32 << 20)

    async def main():
        client, server = await conn_pair()
        with client, server:

            async def sender():
                await client.sendall(big)

            g = gmprt.go(sender)
            await settle()
            g.cancel()
            with pytest.raises(gmprt.Cancelled):
                await g.wait(timeout=WAIT)
            # What was sent stays sent (a prefix); the rest never goes;
            # the Conn still works.
            async def reader():
                got = bytearray()
                while not got.endswith(b"after"):
                    b = await server.recv(1 << 20, timeout=WAIT)
                    assert b, "EOF"
                    got += b
                return got

            r = gmprt.go(reader)
            await client.sendall(b"after", timeout=WAIT)
            got = await r.wait(timeout=WAIT)
            prefix = bytes(got[:-5])
            assert 0 < len(prefix) < len(big)
            assert prefix == big[: len(prefix)]
        return "ok"

    assert gmprt.run(main) == "ok"


# --- a cancel racing a completion resolves to exactly one of the two ------------------

RACE_ROUNDS = 300


@pytest.mark.parametrize("capacity", [0, 1])
def test_race_cancel_vs_recv_handoff(procs, capacity):
    rng = random.Random(1234 + capacity)

    async def receiver(ch, started):
        started.append(True)
        return ("got", await ch.recv())

    async def main():
        outcomes = {"got": 0, "cancelled": 0}
        for i in range(RACE_ROUNDS):
            ch = gmprt.Chan(capacity)
            started = []
            g = gmprt.go(receiver, ch, started)
            await spin_until(lambda started=started: started)
            for _ in range(rng.randrange(3)):
                await gmprt.sleep(0)
            if rng.random() < 0.5:
                g.cancel()
                sent = ch.try_send(i)
            else:
                sent = ch.try_send(i)
                g.cancel()
            try:
                r = await g.wait(timeout=WAIT)
            except gmprt.Cancelled:
                outcomes["cancelled"] += 1
                # Not received: it is still in the buffer, or was never
                # taken by a (gone) receiver.
                if capacity:
                    assert sent and ch.try_recv() == i
                else:
                    assert not sent
                    with pytest.raises(gmprt.ChanEmpty):
                        ch.try_recv()
            else:
                outcomes["got"] += 1
                assert sent and r == ("got", i)
                with pytest.raises(gmprt.ChanEmpty):
                    ch.try_recv()
        return outcomes

    out = gmprt.run(main, procs=procs)
    assert sum(out.values()) == RACE_ROUNDS


def test_race_cancel_vs_send_handoff(procs):
    rng = random.Random(99)

    async def sender(ch, v, started):
        started.append(True)
        await ch.send(v)
        return "sent"

    async def main():
        for i in range(RACE_ROUNDS):
            ch = gmprt.Chan()
            started = []
            g = gmprt.go(sender, ch, i, started)
            await spin_until(lambda started=started: started)
            for _ in range(rng.randrange(3)):
                await gmprt.sleep(0)
            got = []
            order = rng.random() < 0.5
            if order:
                g.cancel()
            try:
                got.append(ch.try_recv())
            except gmprt.ChanEmpty:
                pass
            if not order:
                g.cancel()
            try:
                r = await g.wait(timeout=WAIT)
            except gmprt.Cancelled:
                assert got == [], "a cancelled send delivered its value"
            else:
                assert r == "sent" and got == [i]
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_race_cancel_from_thread_vs_handoff():
    # The cancel comes from a foreign thread while the main G hands off: a
    # real race at procs=2 (the GIL is released in the blocking parts).
    rng = random.Random(7)

    async def receiver(ch, started):
        started.append(True)
        return await ch.recv()

    async def main():
        stats = {"got": 0, "cancelled": 0}
        for i in range(RACE_ROUNDS // 2):
            ch = gmprt.Chan()
            started = []
            g = gmprt.go(receiver, ch, started)
            await spin_until(lambda started=started: started)
            go_ = threading.Event()

            def canceller(g=g, go_=go_):
                go_.wait(WAIT)
                if rng.random() < 0.5:
                    time.sleep(0)
                g.cancel()

            t = threading.Thread(target=canceller)
            t.start()
            go_.set()
            for _ in range(rng.randrange(4)):
                await gmprt.sleep(0)
            sent = ch.try_send(i)
            await wait_thread(t)
            try:
                r = await g.wait(timeout=WAIT)
            except gmprt.Cancelled:
                stats["cancelled"] += 1
                assert not sent
            else:
                stats["got"] += 1
                assert sent and r == i
        return stats

    out = gmprt.run(main, procs=2)
    assert sum(out.values()) == RACE_ROUNDS // 2


def test_race_cancel_vs_unlock_handoff(procs):
    rng = random.Random(5)

    async def locker(mu, started):
        started.append(True)
        try:
            await mu.lock()
        except gmprt.Cancelled:
            return "cancelled"
        mu.unlock()
        return "locked"

    async def main():
        seen = set()
        for _ in range(RACE_ROUNDS):
            mu = gmprt.Mutex()
            mu.try_lock()
            started = []
            g = gmprt.go(locker, mu, started)
            await spin_until(lambda started=started: started)
            for _ in range(rng.randrange(3)):
                await gmprt.sleep(0)
            if rng.random() < 0.5:
                g.cancel()
                mu.unlock()
            else:
                mu.unlock()
                g.cancel()
            seen.add(await g.wait(timeout=WAIT))
            assert not mu.locked(), "the mutex is left held"
            assert mu.try_lock()
        return seen

    assert gmprt.run(main, procs=procs) <= {"cancelled", "locked"}


def test_race_cancel_vs_release_handoff(procs):
    rng = random.Random(6)

    async def acquirer(sem, started):
        started.append(True)
        try:
            await sem.acquire()
        except gmprt.Cancelled:
            return "cancelled"
        sem.release()
        return "acquired"

    async def main():
        for _ in range(RACE_ROUNDS):
            sem = gmprt.Semaphore(1)
            sem.try_acquire()
            started = []
            g = gmprt.go(acquirer, sem, started)
            await spin_until(lambda started=started: started)
            for _ in range(rng.randrange(3)):
                await gmprt.sleep(0)
            if rng.random() < 0.5:
                g.cancel()
                sem.release()
            else:
                sem.release()
                g.cancel()
            await g.wait(timeout=WAIT)
            assert sem.value == 1, "a permit leaked"
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


def test_race_cancel_vs_select_win(procs):
    rng = random.Random(11)

    async def selector(a, b, started):
        started.append(True)
        return await gmprt.select(a.recv_case(), b.recv_case())

    async def main():
        for i in range(RACE_ROUNDS):
            a, b = gmprt.Chan(), gmprt.Chan()
            started = []
            g = gmprt.go(selector, a, b, started)
            await spin_until(lambda started=started: started)
            for _ in range(rng.randrange(3)):
                await gmprt.sleep(0)
            first = rng.random() < 0.5
            if first:
                g.cancel()
            sa = a.try_send(("a", i))
            sb = b.try_send(("b", i))
            if not first:
                g.cancel()
            try:
                idx, v = await g.wait(timeout=WAIT)
            except gmprt.Cancelled:
                assert not sa and not sb
            else:
                # exactly one case won, and only its value left its channel
                assert (sa, sb) == ((True, False) if idx == 0 else (False, True))
                assert v == (("a", i) if idx == 0 else ("b", i))
        return "ok"

    assert gmprt.run(main, procs=procs) == "ok"


# --- shutdown cancels leftovers ---------------------------------------------------------

def test_shutdown_cancels_a_parked_leftover_at_its_park_point(procs):
    log = []

    async def leftover(ch):
        try:
            await ch.recv()
        except gmprt.Cancelled:
            log.append("cancelled")
            raise
        except GeneratorExit:
            log.append("closed")
            raise

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(leftover, ch)
        await settle()
        return g

    g = gmprt.run(main, procs=procs)
    assert g.cancelled()
    assert log == ["cancelled"]


def test_shutdown_leftover_cleanup_awaits_under_shield(procs):
    log = []

    async def leftover():
        try:
            await gmprt.sleep(WAIT)
        finally:
            try:
                with gmprt.shield():
                    await gmprt.sleep(0.001)
                    log.append("shielded cleanup")
            except RuntimeError as e:  # today: "awaited while ... closing it"
                log.append(f"refused: {e}")

    async def main():
        g = gmprt.go(leftover)
        await settle()
        return g

    g = gmprt.run(main, procs=procs)
    assert log == ["shielded cleanup"]
    assert g.cancelled()


def test_shutdown_cancels_a_sync_leftover_in_a_blocking_call(procs):
    log = []

    def sync_leftover(ch):
        try:
            ch.recv_blocking(timeout=WAIT)
        except gmprt.Cancelled:
            log.append("cancelled")
            raise

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(sync_leftover, ch)
        await settle()
        return g, ch

    g, ch = gmprt.run(main, procs=procs)
    assert log == ["cancelled"]
    assert g.cancelled()
    assert ch.try_send(1) is False, "the cancelled receive is still queued"


def test_a_new_run_starts_with_nothing_cancelled():
    async def main():
        async def p():
            await gmprt.sleep(WAIT)

        g = gmprt.go(p)
        await settle()
        g.cancel()
        with pytest.raises(gmprt.Cancelled):
            await g
        return gmprt.deadline()

    assert gmprt.run(main) == math.inf
    assert gmprt.run(main) == math.inf
