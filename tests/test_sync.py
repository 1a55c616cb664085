"""gmprt.WaitGroup, gmprt.Mutex and gmprt.Semaphore, from coroutine Gs, sync Gs
and foreign threads. Every wait is bounded (timeouts, or Deadlock)."""

from __future__ import annotations

import threading

import gmprt
import pytest

WAIT = 10.0


# --- WaitGroup ---------------------------------------------------------------


def test_waitgroup_waits_for_every_g(procs):
    done = []

    async def worker(wg, i):
        await gmprt.sleep(0)
        done.append(i)
        wg.done()

    async def main():
        wg = gmprt.WaitGroup()
        wg.add(50)
        for i in range(50):
            gmprt.go(worker, wg, i)
        await wg.wait()
        assert wg.count == 0
        await wg.wait()  # zero: returns at once
        return len(done)

    assert gmprt.run(main, procs=procs) == 50


def test_waitgroup_negative_counter_is_a_value_error():
    wg = gmprt.WaitGroup()
    with pytest.raises(ValueError, match=r"negative \(0 -1\).*done\(\) was called more"):
        wg.done()
    wg.add(2)
    with pytest.raises(ValueError, match="negative"):
        wg.add(-3)
    assert wg.count == 2, "a refused add leaves the counter alone"
    assert repr(wg) == "<gmprt.WaitGroup count=2>"


def test_waitgroup_blocking_from_threads_and_sync_gs(procs):
    def sync_waiter(wg):
        wg.wait_blocking(timeout=WAIT)
        return "released"

    async def main():
        wg = gmprt.WaitGroup()
        wg.add(1)
        g = gmprt.go(sync_waiter, wg)
        out = []
        t = threading.Thread(target=lambda: out.append(wg.wait_blocking(timeout=WAIT)))
        t.start()
        for _ in range(3):
            await gmprt.sleep(0)
        wg.done()
        r = await g
        t.join(WAIT)
        return r, out

    assert gmprt.run(main, procs=procs) == ("released", [None])
    wg = gmprt.WaitGroup()
    wg.add()
    with pytest.raises(gmprt.Timeout, match="WaitGroup.wait timed out"):
        wg.wait_blocking(timeout=0.01)


# --- Mutex ---------------------------------------------------------------------


def test_mutex_excludes_across_awaits(procs):
    state = {"inside": 0, "max": 0, "n": 0}

    async def worker(mu, rounds):
        for _ in range(rounds):
            async with mu:
                state["inside"] += 1
                state["max"] = max(state["max"], state["inside"])
                await gmprt.sleep(0)  # others run while we hold it
                state["n"] += 1
                state["inside"] -= 1

    async def main():
        mu = gmprt.Mutex()
        gs = [gmprt.go(worker, mu, 50) for _ in range(20)]
        for g in gs:
            await g
        return mu

    mu = gmprt.run(main, procs=procs)
    assert state == {"inside": 0, "max": 1, "n": 1000}
    assert not mu.locked()


def test_mutex_lock_unlock_try_lock_and_errors():
    async def main():
        mu = gmprt.Mutex()
        await mu.lock()
        assert mu.locked() and not mu.try_lock()
        assert "locked" in repr(mu)
        mu.unlock()
        assert mu.try_lock()
        mu.unlock()
        with pytest.raises(RuntimeError, match="unlock of an unlocked gmprt.Mutex"):
            mu.unlock()

    gmprt.run(main)


def test_mutex_from_threads_and_sync_gs(procs):
    counter = [0]

    def sync_worker(mu, n):
        for _ in range(n):
            with mu:
                v = counter[0]
                counter[0] = v + 1

    def thread_worker(mu, n):
        for _ in range(n):
            mu.lock_blocking(timeout=WAIT)
            try:
                counter[0] += 1
            finally:
                mu.unlock()

    async def main():
        mu = gmprt.Mutex()
        ts = [threading.Thread(target=thread_worker, args=(mu, 500)) for _ in range(2)]
        for t in ts:
            t.start()
        gs = [gmprt.go(sync_worker, mu, 500) for _ in range(2)]
        for _ in range(500):
            async with mu:
                counter[0] += 1
        for g in gs:
            await g
        for t in ts:
            t.join(WAIT)

    gmprt.run(main, procs=procs)
    assert counter[0] == 2500
    mu = gmprt.Mutex()
    mu.lock_blocking()
    with pytest.raises(gmprt.Timeout, match="Mutex.lock timed out"):
        mu.lock_blocking(timeout=0.01)
    mu.unlock()


def test_mutex_is_fifo():
    # Waiters get the lock in the order they queued for it (the order the
    # scheduler ran them in, which is not spawn order: runnext).
    queued, order = [], []

    async def waiter(mu, i):
        queued.append(i)
        async with mu:
            order.append(i)

    async def main():
        mu = gmprt.Mutex()
        await mu.lock()
        gs = [gmprt.go(waiter, mu, i) for i in range(10)]
        for _ in range(3):
            await gmprt.sleep(0)  # all ten queue behind main
        assert len(queued) == 10
        mu.unlock()
        for g in gs:
            await g

    gmprt.run(main, procs=1)
    assert order == queued


# --- Semaphore -----------------------------------------------------------------


def test_semaphore_bounds_concurrency(procs):
    state = {"inside": 0, "max": 0}

    async def worker(sem):
        async with sem:
            state["inside"] += 1
            state["max"] = max(state["max"], state["inside"])
            for _ in range(3):
                await gmprt.sleep(0)
            state["inside"] -= 1

    async def main():
        sem = gmprt.Semaphore(3)
        gs = [gmprt.go(worker, sem) for _ in range(100)]
        for g in gs:
            await g
        return sem

    sem = gmprt.run(main, procs=procs)
    assert state["max"] == 3
    assert sem.value == 3 and sem.permits == 3


def test_semaphore_errors_and_try_acquire():
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"permits must be an integer from 1 to .*got {bad}"):
            gmprt.Semaphore(bad)
    sem = gmprt.Semaphore(2)
    assert sem.try_acquire() and sem.try_acquire() and not sem.try_acquire()
    assert sem.value == 0
    sem.release()
    sem.release()
    with pytest.raises(ValueError, match="released more times than it was acquired"):
        sem.release()
    assert repr(sem) == "<gmprt.Semaphore value=2/2 waiting=0>"


def test_semaphore_blocking_forms(procs):
    def sync_user(sem, log):
        with sem:
            log.append("sync")

    async def main():
        sem = gmprt.Semaphore(1)
        log = []
        await sem.acquire()
        g = gmprt.go(sync_user, sem, log)
        t = threading.Thread(target=sync_user, args=(sem, log))
        t.start()
        for _ in range(3):
            await gmprt.sleep(0)
        assert log == []
        sem.release()
        await g
        t.join(WAIT)
        return log

    assert gmprt.run(main, procs=procs) == ["sync", "sync"]
    sem = gmprt.Semaphore(1)
    sem.acquire_blocking()
    with pytest.raises(gmprt.Timeout, match="Semaphore.acquire timed out"):
        sem.acquire_blocking(timeout=0.01)


def test_abandoned_acquire_does_not_leak_the_permit():
    # A G parked on acquire is closed at shutdown: if the permit was handed
    # to it meanwhile, it goes back.
    async def stuck(sem):
        await sem.acquire()

    async def main():
        sem = gmprt.Semaphore(1)
        await sem.acquire()
        for _ in range(5):
            gmprt.go(stuck, sem)
        for _ in range(3):
            await gmprt.sleep(0)
        return sem

    sem = gmprt.run(main)
    # main still holds its permit; the parked waits were withdrawn.
    assert sem.value == 0
    sem.release()
    assert sem.value == 1


def test_sync_docstrings_reach_help():
    for obj in (
        gmprt.WaitGroup,
        gmprt.WaitGroup.add,
        gmprt.WaitGroup.wait_blocking,
        gmprt.Mutex,
        gmprt.Mutex.lock_blocking,
        gmprt.Semaphore,
        gmprt.Semaphore.acquire_blocking,
        gmprt.Semaphore.release,
    ):
        assert obj.__doc__ and len(obj.__doc__) > 30, obj
