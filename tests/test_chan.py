"""gmprt.Chan and gmprt.select: Go's semantics, from coroutine Gs, sync Gs and
foreign threads.

Every wait is bounded: blocking calls take timeouts, and a G that waits
forever ends run() with gmprt.Deadlock instead of hanging the suite.
"""

from __future__ import annotations

import threading
import time

import gmprt
import pytest

WAIT = 10.0  # seconds; an upper bound for blocking calls that must succeed


# --- basics -----------------------------------------------------------------


def test_unbuffered_rendezvous_hands_values_over_in_order(procs):
    async def producer(ch, n):
        for i in range(n):
            await ch.send(i)
        ch.close()

    async def main():
        ch = gmprt.Chan()
        gmprt.go(producer, ch, 100)
        return [v async for v in ch]

    assert gmprt.run(main, procs=procs) == list(range(100))


def test_buffered_is_fifo_and_len_counts_buffered_values():
    async def main():
        ch = gmprt.Chan(3)
        assert ch.capacity == 3 and len(ch) == 0 and not ch.closed
        for v in "abc":
            await ch.send(v)
        assert len(ch) == 3
        assert not ch.try_send("d"), "a full buffer refuses try_send"
        got = [await ch.recv() for _ in range(3)]
        assert len(ch) == 0
        return got

    assert gmprt.run(main) == ["a", "b", "c"]


def test_try_send_and_try_recv_never_wait():
    ch = gmprt.Chan()
    assert not ch.try_send(1), "nobody receives on an unbuffered channel"
    with pytest.raises(gmprt.ChanEmpty, match="nothing to receive"):
        ch.try_recv()
    b = gmprt.Chan(1)
    assert b.try_send("x")
    assert b.try_recv() == "x"
    b.close()
    with pytest.raises(gmprt.ChanClosed):
        b.try_recv()
    with pytest.raises(gmprt.ChanClosed, match="send on a closed channel"):
        b.try_send(1)


def test_recv_after_close_drains_the_buffer_then_raises():
    async def main():
        ch = gmprt.Chan(2)
        await ch.send(1)
        await ch.send(2)
        ch.close()
        assert ch.closed
        got = [await ch.recv(), await ch.recv()]
        with pytest.raises(gmprt.ChanClosed, match="receive on a closed channel"):
            await ch.recv()
        return got

    assert gmprt.run(main) == [1, 2]


def test_send_on_closed_and_double_close_raise():
    async def main():
        ch = gmprt.Chan(1)
        ch.close()
        with pytest.raises(gmprt.ChanClosed, match="send on a closed channel"):
            await ch.send(1)
        with pytest.raises(gmprt.ChanClosed, match="close of a closed channel"):
            ch.close()

    gmprt.run(main)


@pytest.mark.parametrize("cap", [-1, -100])
def test_negative_capacity_is_a_value_error(cap):
    with pytest.raises(ValueError, match=f"capacity must be an integer from 0 to .*got {cap}"):
        gmprt.Chan(cap)


def test_bad_timeouts_are_value_errors():
    ch = gmprt.Chan()
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout must be"):
            ch.recv_blocking(timeout=bad)
        with pytest.raises(ValueError, match="timeout must be"):
            ch.send_blocking(1, timeout=bad)


def test_async_for_ends_at_close():
    async def main():
        ch = gmprt.Chan(10)
        for i in range(5):
            await ch.send(i)
        ch.close()
        return [v async for v in ch]

    assert gmprt.run(main) == [0, 1, 2, 3, 4]


def test_repr_and_generic_alias():
    ch = gmprt.Chan(2)
    ch.try_send(1)
    assert repr(ch) == "<gmprt.Chan capacity=2 len=1>"
    ch.close()
    assert repr(ch) == "<gmprt.Chan capacity=2 len=1 closed>"
    assert gmprt.Chan[int] is gmprt.Chan
    assert "RecvCase" in repr(ch.recv_case())


def test_blocked_sender_moves_into_the_buffer_in_order():
    async def sender(ch, v):
        await ch.send(v)

    async def main():
        ch = gmprt.Chan(1)
        await ch.send("first")
        g = gmprt.go(sender, ch, "second")
        await gmprt.sleep(0)  # the sender runs and parks: the buffer is full
        assert not g.done()
        assert await ch.recv() == "first"
        await g  # its value moved into the buffer and it was woken
        assert len(ch) == 1
        return await ch.recv()

    assert gmprt.run(main) == "second"


def test_handoff_readies_the_receiver_next():
    # A send to a parked receiver puts it in the sender's runnext: it runs
    # before Gs that were already queued.
    order = []

    async def receiver(ch):
        order.append(("received", await ch.recv()))

    async def bystander():
        order.append(("bystander",))

    async def main():
        ch = gmprt.Chan()
        gmprt.go(receiver, ch)
        await gmprt.sleep(0)  # the receiver parks
        gmprt.go(bystander)
        await ch.send(1)
        await gmprt.sleep(0)
        await gmprt.sleep(0)

    gmprt.run(main, procs=1)
    assert order[0] == ("received", 1), order


def test_ping_pong_through_runnext_does_not_starve_a_runnable_g(procs):
    # Each hand-off readies the partner into the sender's runnext, which
    # inherits the time slice (Go) and wakes no other M: without the cap on
    # runnext runs in a row, the pair would keep the P, and a G waiting in
    # the ring (here: one that yields in a loop) would never run again.
    rounds = []

    async def ponger(a, b):
        while (v := await a.recv()) is not None:
            await b.send(v)

    async def other(done):
        for _ in range(100):
            await gmprt.sleep(0)  # back to the ring's tail, each time
        done.append(True)

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        done = []
        gmprt.go(ponger, a, b)
        g = gmprt.go(other, done)
        deadline = time.monotonic() + WAIT
        n = 0
        while not done and time.monotonic() < deadline:
            await a.send(n)
            assert await b.recv() == n
            n += 1
        await a.send(None)
        rounds.append(n)
        await g
        return bool(done)

    assert gmprt.run(main, procs=procs), f"starved for {WAIT} s ({rounds} round trips)"


def test_docstrings_reach_help():
    for obj in (
        gmprt.Chan,
        gmprt.Chan.send,
        gmprt.Chan.recv,
        gmprt.Chan.recv_blocking,
        gmprt.Chan.send_blocking,
        gmprt.Chan.try_recv,
        gmprt.select,
        gmprt.select_blocking,
    ):
        assert obj.__doc__ and len(obj.__doc__) > 40, obj


# --- close with parked waiters -----------------------------------------------


def test_close_wakes_parked_receivers_and_senders(procs):
    async def receiver(ch):
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            return "closed"
        return "value?"

    async def sender(ch, v):
        try:
            await ch.send(v)
        except gmprt.ChanClosed as e:
            return str(e)
        return "sent?"

    async def main():
        rx, tx = gmprt.Chan(), gmprt.Chan()
        receivers = [gmprt.go(receiver, rx) for _ in range(20)]
        senders = [gmprt.go(sender, tx, i) for i in range(20)]
        for _ in range(5):
            await gmprt.sleep(0)
        rx.close()
        tx.close()
        r = [await g for g in receivers]
        s = [await g for g in senders]
        return r, s

    r, s = gmprt.run(main, procs=procs)
    assert r == ["closed"] * 20
    assert all("closed while the send waited" in m or "closed channel" in m for m in s), s


def test_close_wakes_a_blocked_foreign_thread():
    ch = gmprt.Chan()
    out = []

    def reader():
        try:
            ch.recv_blocking(timeout=WAIT)
        except gmprt.ChanClosed:
            out.append("closed")

    t = threading.Thread(target=reader)
    t.start()
    # Bounded poll until the thread is queued on the channel.
    for _ in range(1000):
        if t.is_alive():
            break
    ch.close()
    t.join(WAIT)
    assert out == ["closed"]


# --- exactly once ------------------------------------------------------------


@pytest.mark.parametrize("procs_n", [1, 2, 4], ids=lambda p: f"procs={p}")
@pytest.mark.parametrize("cap", [0, 64], ids=lambda c: f"cap={c}")
def test_mpmc_exactly_once(procs_n, cap):
    # 8 producers and 8 consumers move 1M values; every value arrives once.
    n = 1_000_000
    counts = bytearray(n)

    async def producer(ch, wg, lo, hi):
        for i in range(lo, hi):
            await ch.send(i)
        wg.done()

    async def consumer(ch):
        k = 0
        async for v in ch:
            counts[v] += 1
            k += 1
        return k

    async def closer(ch, wg):
        await wg.wait()
        ch.close()

    async def main():
        ch = gmprt.Chan(cap)
        wg = gmprt.WaitGroup()
        wg.add(8)
        consumers = [gmprt.go(consumer, ch) for _ in range(8)]
        for p in range(8):
            gmprt.go(producer, ch, wg, p * n // 8, (p + 1) * n // 8)
        gmprt.go(closer, ch, wg)
        return [await g for g in consumers]

    per_consumer = gmprt.run(main, procs=procs_n)
    assert sum(per_consumer) == n
    assert counts == b"\x01" * n, "some value was lost or duplicated"


def test_mixed_async_and_sync_gs_on_one_channel(procs):
    # Coroutine Gs and plain-function Gs (blocking forms) send and receive
    # on the same channel.
    n = 2_000
    got = []
    lock = threading.Lock()

    async def async_sender(ch, lo, hi):
        for i in range(lo, hi):
            await ch.send(i)

    def sync_sender(ch, lo, hi):
        for i in range(lo, hi):
            ch.send_blocking(i, timeout=WAIT)

    async def async_receiver(ch, k):
        for _ in range(k):
            v = await ch.recv()
            with lock:
                got.append(v)

    def sync_receiver(ch, k):
        for _ in range(k):
            v = ch.recv_blocking(timeout=WAIT)
            with lock:
                got.append(v)

    async def main():
        ch = gmprt.Chan()
        gs = [
            gmprt.go(async_sender, ch, 0, n // 2),
            gmprt.go(sync_sender, ch, n // 2, n),
            gmprt.go(async_receiver, ch, n // 2),
            gmprt.go(sync_receiver, ch, n // 2),
        ]
        for g in gs:
            await g

    gmprt.run(main, procs=procs)
    assert sorted(got) == list(range(n))


def test_foreign_threads_send_and_receive_with_blocking_calls(procs):
    n = 3_000
    received = []

    def thread_sender(ch):
        for i in range(n):
            ch.send_blocking(i, timeout=WAIT)

    def thread_receiver(ch, out):
        for _ in range(n):
            out.append(ch.recv_blocking(timeout=WAIT))

    async def main():
        to_g, from_g = gmprt.Chan(), gmprt.Chan(4)
        ts = threading.Thread(target=thread_sender, args=(to_g,))
        tr = threading.Thread(target=thread_receiver, args=(from_g, received))
        ts.start()
        tr.start()
        for _ in range(n):
            # Relay: a G receives from one thread and sends to the other.
            await from_g.send(await to_g.recv())
        return ts, tr

    ts, tr = gmprt.run(main, procs=procs)
    ts.join(WAIT)
    tr.join(WAIT)
    assert received == list(range(n))


def test_channels_work_between_threads_without_a_runtime():
    ch = gmprt.Chan()
    out = []
    t = threading.Thread(target=lambda: out.append(ch.recv_blocking(timeout=WAIT)))
    t.start()
    ch.send_blocking("hello", timeout=WAIT)
    t.join(WAIT)
    assert out == ["hello"]


def test_blocking_timeouts_raise_timeout():
    ch = gmprt.Chan()
    with pytest.raises(gmprt.Timeout, match="chan receive timed out after 0.01 s"):
        ch.recv_blocking(timeout=0.01)
    with pytest.raises(gmprt.Timeout, match="chan send timed out"):
        ch.send_blocking(1, timeout=0)
    assert issubclass(gmprt.Timeout, TimeoutError)
    # The timed-out send left nothing behind.
    with pytest.raises(gmprt.ChanEmpty):
        ch.try_recv()


def test_sync_g_blocking_gives_up_its_p():
    # procs=1: a sync G blocked in recv_blocking must not stop the coroutine
    # G that will send to it.
    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(ch.recv_blocking, timeout=WAIT)
        for _ in range(3):
            await gmprt.sleep(0)
        await ch.send("x")
        return await g

    assert gmprt.run(main, procs=1) == "x"


def test_awaiting_outside_a_g_is_an_error():
    ch = gmprt.Chan(1)
    ch.try_send(1)
    tok = ch.recv()
    with pytest.raises(RuntimeError, match="outside a gmprt G"):
        tok.__next__()


# --- select ------------------------------------------------------------------


def test_select_fairness_among_ready_cases():
    n = 30_000

    async def main():
        chans = [gmprt.Chan(1) for _ in range(3)]
        cases = [c.recv_case() for c in chans]
        hits = [0, 0, 0]
        for _ in range(n):
            for c in chans:
                c.try_send(1)
            i, v = await gmprt.select(*cases)
            assert v == 1
            hits[i] += 1
        return hits

    hits = gmprt.run(main)
    for h in hits:
        assert abs(h / n - 1 / 3) < 0.03, hits


def test_select_default_and_timeout():
    async def main():
        a, b = gmprt.Chan(), gmprt.Chan(1)
        assert await gmprt.select(a.recv_case(), b.recv_case(), default=True) == (None, None)
        assert await gmprt.select(a.recv_case(), timeout=0.02) == (None, None)
        assert await gmprt.select(a.recv_case(), timeout=0) == (None, None)
        assert await gmprt.select(timeout=0.01) == (None, None)
        await b.send("x")
        assert await gmprt.select(a.recv_case(), b.recv_case(), timeout=5) == (1, "x")
        assert await gmprt.select(a.recv_case(), b.send_case("y"), default=True) == (1, None)
        assert await b.recv() == "y"

    gmprt.run(main)


def test_select_timeout_leaves_no_trace():
    # The values of unsent send cases are not sent later; dead entries do not
    # stop a later plain send/receive.
    async def main():
        ch = gmprt.Chan()
        for i in range(100):
            assert await gmprt.select(ch.send_case(i), timeout=0.001) == (None, None)
        assert not ch.try_send("later"), "no stale receiver left behind"
        with pytest.raises(gmprt.ChanEmpty):
            ch.try_recv()

    gmprt.run(main)


def test_select_waits_for_the_first_case_and_only_one_fires(procs):
    async def sender(ch, v):
        await ch.send(v)

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        res = []
        for k in range(200):
            ga = gmprt.go(sender, a, ("a", k))
            gb = gmprt.go(sender, b, ("b", k))
            i, v = await gmprt.select(a.recv_case(), b.recv_case())
            res.append(v)
            # The other sender is still parked: exactly one case fired.
            other = b if i == 0 else a
            assert await other.recv() == (("b", k) if i == 0 else ("a", k))
            await ga
            await gb
        return res

    res = gmprt.run(main, procs=procs)
    assert len(res) == 200


def test_select_send_case_hands_over():
    async def receiver(ch):
        return await ch.recv()

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(receiver, b)
        i, v = await gmprt.select(a.send_case("to a"), b.send_case("to b"), timeout=WAIT)
        assert (i, v) == (1, None)
        return await g

    assert gmprt.run(main) == "to b"


def test_select_on_closed_channels():
    async def main():
        a = gmprt.Chan()
        a.close()
        i, v = await gmprt.select(a.recv_case())
        assert (i, v) == (0, gmprt.CLOSED) and v is gmprt.CLOSED and not v
        with pytest.raises(gmprt.ChanClosed, match="select case 0"):
            await gmprt.select(a.send_case(1))

    gmprt.run(main)
    assert repr(gmprt.CLOSED) == "gmprt.CLOSED"


def test_select_woken_by_close(procs):
    async def waiter(a, b):
        return await gmprt.select(a.recv_case(), b.recv_case())

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(waiter, a, b)
        for _ in range(3):
            await gmprt.sleep(0)
        b.close()
        return await g

    assert gmprt.run(main, procs=procs) == (1, gmprt.CLOSED)


def test_select_same_channel_twice_and_mixed_directions():
    async def main():
        ch = gmprt.Chan(1)
        i, _ = await gmprt.select(ch.recv_case(), ch.send_case(5), ch.recv_case())
        assert i == 1, "only the send is ready"
        i, v = await gmprt.select(ch.recv_case(), ch.send_case(6), ch.recv_case())
        assert i in (0, 2) and v == 5, "only a receive is ready"

    gmprt.run(main)


def test_select_argument_errors():
    ch = gmprt.Chan()
    with pytest.raises(TypeError, match="case 1 must be ch.recv_case"):
        gmprt.select(ch.recv_case(), ch)
    with pytest.raises(ValueError, match="not both"):
        gmprt.select(ch.recv_case(), default=True, timeout=1)
    with pytest.raises(ValueError, match="wait forever"):
        gmprt.select()
    with pytest.raises(ValueError, match="timeout must be"):
        gmprt.select(ch.recv_case(), timeout=-1)


def test_select_blocking_from_threads_and_sync_gs(procs):
    def sync_g(a, b):
        return gmprt.select_blocking(a.recv_case(), b.recv_case(), timeout=WAIT)

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        g = gmprt.go(sync_g, a, b)
        await a.send("via a")
        first = await g
        out = []
        t = threading.Thread(
            target=lambda: out.append(gmprt.select_blocking(b.send_case("from thread")))
        )
        t.start()
        got = await b.recv()
        t.join(WAIT)
        return first, got, out

    first, got, out = gmprt.run(main, procs=procs)
    assert first == (0, "via a")
    assert got == "from thread" and out == [(0, None)]
    ch = gmprt.Chan()
    assert gmprt.select_blocking(ch.recv_case(), timeout=0.01) == (None, None)
    assert gmprt.select_blocking(ch.recv_case(), default=True) == (None, None)


def test_parked_gs_are_cancelled_cleanly_at_shutdown():
    # main returns while Gs wait on channels and selects: their finally
    # blocks run and the waits are withdrawn.
    cleaned = []

    async def stuck(ch, how):
        try:
            if how == "recv":
                await ch.recv()
            elif how == "send":
                await ch.send(object())
            else:
                await gmprt.select(ch.recv_case(), ch.send_case(1))
        finally:
            cleaned.append(how)

    async def main():
        ch = gmprt.Chan()
        for how in ("recv", "send", "select") * 3:
            gmprt.go(stuck, ch, how)
        for _ in range(3):
            await gmprt.sleep(0)
        return ch

    ch = gmprt.run(main)
    assert sorted(cleaned) == sorted(["recv", "send", "select"] * 3)
    assert not ch.try_send(1), "no receiver left queued"
    with pytest.raises(gmprt.ChanEmpty):
        ch.try_recv()
