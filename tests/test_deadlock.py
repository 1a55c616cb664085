"""Deadlock detection with channels and sync primitives: when every G is
asleep on something only another G could do, run() raises gmprt.Deadlock,
and the report names what each G waits on, Go-style; while anything can
still wake a G (a running G, a thread in a blocking call, a timer), it
does not."""

from __future__ import annotations

import threading
import time

import gmprt
import pytest


def test_main_receives_on_a_channel_nobody_sends_on(procs):
    async def main():
        await gmprt.Chan().recv()

    with pytest.raises(gmprt.Deadlock, match="all goroutines are asleep") as e:
        gmprt.run(main, procs=procs)
    assert "chan receive" in str(e.value)


def test_two_gs_each_waiting_for_the_other(procs):
    async def one(a, b):
        await a.recv()
        await b.send(1)

    async def main():
        a, b = gmprt.Chan(), gmprt.Chan()
        gmprt.go(one, a, b)
        await b.recv()  # one waits on a, main on b: nobody sends first
        await a.send(1)

    with pytest.raises(gmprt.Deadlock) as e:
        gmprt.run(main, procs=procs)
    assert str(e.value).count("chan receive") == 2, str(e.value)


def test_waitgroup_never_done(procs):
    async def worker(wg):
        pass  # forgets wg.done()

    async def main():
        wg = gmprt.WaitGroup()
        wg.add(1)
        gmprt.go(worker, wg)
        await wg.wait()

    with pytest.raises(gmprt.Deadlock) as e:
        gmprt.run(main, procs=procs)
    assert "WaitGroup.wait" in str(e.value)


def test_report_names_each_kind_of_wait():
    async def sender(ch):
        await ch.send(1)

    async def selector(a, b):
        await gmprt.select(a.recv_case(), b.recv_case())

    async def locker(mu):
        await mu.lock()

    async def acquirer(sem):
        await sem.acquire()

    async def main():
        mu, sem = gmprt.Mutex(), gmprt.Semaphore(1)
        await mu.lock()
        await sem.acquire()
        gmprt.go(sender, gmprt.Chan())
        gmprt.go(selector, gmprt.Chan(), gmprt.Chan())
        gmprt.go(locker, mu)
        gmprt.go(acquirer, sem)
        await gmprt.Chan().recv()

    with pytest.raises(gmprt.Deadlock) as e:
        gmprt.run(main)
    msg = str(e.value)
    for what in ("chan send", "[select]", "Mutex.lock", "Semaphore.acquire", "chan receive"):
        assert what in msg, (what, msg)


def test_a_g_in_a_select_with_a_timeout_is_not_deadlocked(procs):
    async def main():
        return await gmprt.select(gmprt.Chan().recv_case(), timeout=0.2)

    assert gmprt.run(main, procs=procs) == (None, None)


def test_a_sync_g_blocked_in_a_sync_call_is_not_deadlocked(procs):
    # main waits on a channel that a sync G fills after a blocking sleep.
    def sleeper(ch):
        time.sleep(0.2)
        ch.send_blocking("awake", timeout=10)

    async def main():
        ch = gmprt.Chan()
        gmprt.go(sleeper, ch)
        return await ch.recv()

    assert gmprt.run(main, procs=procs) == "awake"


def test_a_foreign_thread_in_a_blocking_call_is_not_deadlocked(procs):
    # A thread blocked in recv_blocking will send once it gets a value; the
    # G waiting for its reply is not deadlocked meanwhile.
    def echo(inbox, outbox):
        outbox.send_blocking(inbox.recv_blocking(timeout=10), timeout=10)

    async def main():
        inbox, outbox = gmprt.Chan(), gmprt.Chan()
        t = threading.Thread(target=echo, args=(inbox, outbox))
        t.start()
        time.sleep(0.05)  # the thread is now blocked in recv_blocking
        await inbox.send("ping")
        r = await outbox.recv()
        t.join(10)
        return r

    assert gmprt.run(main, procs=procs) == "ping"


def test_a_sleeping_g_is_not_deadlocked():
    async def sleeper(ch):
        await gmprt.sleep(0.2)
        await ch.send("slept")

    async def main():
        ch = gmprt.Chan()
        gmprt.go(sleeper, ch)
        return await ch.recv()

    assert gmprt.run(main) == "slept"


def test_a_g_waiting_on_accept_is_not_deadlocked(procs):
    # main waits on a socket that a thread connects to later: a G parked on
    # the netpoller can be woken from outside.
    import socket

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        host, port = ln.address

        def connect():
            time.sleep(0.2)
            socket.create_connection((host, port), timeout=10).close()

        t = threading.Thread(target=connect)
        t.start()
        conn = await ln.accept()
        conn.close()
        ln.close()
        t.join(10)
        return "accepted"

    assert gmprt.run(main, procs=procs) == "accepted"


# --- a plain Python thread may still wake a G (issue 10, item 3) ----------------


def _later(delay, fn):
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()
    return t


@pytest.mark.parametrize(
    "wake",
    ["try_send", "send_blocking", "close", "wg_done", "unlock", "release"],
)
def test_a_thread_that_will_wake_main_later_is_not_a_deadlock(wake, procs):
    # Each used to raise gmprt.Deadlock about 20 ms in: only a thread
    # already inside a _blocking call counted as alive.
    ch = gmprt.Chan()
    wg = gmprt.WaitGroup()
    mu = gmprt.Mutex()
    sem = gmprt.Semaphore(1)
    wakers = {
        "try_send": lambda: ch.try_send(1),
        "send_blocking": lambda: ch.send_blocking(1, timeout=5),
        "close": ch.close,
        "wg_done": wg.done,
        "unlock": mu.unlock,
        "release": sem.release,
    }

    async def main():
        if wake in ("try_send", "send_blocking", "close"):
            try:
                return await ch.recv()
            except gmprt.ChanClosed:
                return "closed"
        if wake == "wg_done":
            wg.add(1)
            await wg.wait()
        elif wake == "unlock":
            await mu.lock()
            await mu.lock()  # held by main itself: only the thread frees it
        else:
            await sem.acquire()
            await sem.acquire()
        return "woken"

    t = _later(0.3, wakers[wake])
    result = gmprt.run(main, procs=procs)
    t.join(timeout=5)
    assert result in (1, "closed", "woken")


def test_deadlock_is_still_reported_once_the_thread_has_ended(procs):
    done = threading.Event()
    t = _later(0.1, done.set)

    async def main():
        await gmprt.Chan().recv()

    with pytest.raises(gmprt.Deadlock, match="chan receive"):
        gmprt.run(main, procs=procs)
    t.join(timeout=5)
    assert done.is_set()


# --- issue 10, item 3: a sync G asleep on a gmprt primitive is asleep -------------


@pytest.mark.parametrize("form", ["recv", "send", "join", "wait", "lock", "acquire"])
def test_sync_g_blocked_on_an_unreachable_primitive_is_a_deadlock(procs, form):
    ch = gmprt.Chan()
    wg = gmprt.WaitGroup()
    mu = gmprt.Mutex()
    sem = gmprt.Semaphore(1)

    def stuck():
        if form == "recv":
            ch.recv_blocking()
        elif form == "send":
            ch.send_blocking(1)
        elif form == "join":
            gmprt.go(lambda: ch.recv_blocking()).join()
        elif form == "wait":
            wg.add(1)
            wg.wait_blocking()
        elif form == "lock":
            mu.lock_blocking()
            mu.lock_blocking()
        else:
            sem.acquire_blocking()
            sem.acquire_blocking()

    async def main():
        await gmprt.go(stuck)

    with pytest.raises(gmprt.Deadlock) as info:
        gmprt.run(main, procs=procs)
    assert "in a sync G" in str(info.value), str(info.value)


def test_sync_g_waiting_with_a_timeout_is_not_a_deadlock(procs):
    def waits():
        with pytest.raises(gmprt.Timeout):
            gmprt.Chan().recv_blocking(timeout=0.2)
        return "timed out"

    async def main():
        return await gmprt.go(waits)

    assert gmprt.run(main, procs=procs) == "timed out"
