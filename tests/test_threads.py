"""The runtime's OS threads: a burst of blocked sync Gs makes an M each, and
the idle ones beyond `procs` exit after the keep-alive (issue 10, item 8).

`GMPRT_IDLE_KEEPALIVE_MS` (a test knob, README) shortens the keep-alive
from 10 s. Every wait is bounded: the shrinking is polled with a deadline.
"""

import time

import gmprt
import pytest

# The test's keep-alive, and how long the Ms get to retire once idle: far
# more than the keep-alive, so only a runtime that never shrinks fails.
KEEPALIVE_MS = 100
RETIRE_DEADLINE = 20.0


def _blocker():
    time.sleep(0.05)  # a C call: sysmon hands this G's P to another M


async def _burst(n):
    gs = [gmprt.go(_blocker) for _ in range(n)]
    peak = 0
    for g in gs:
        await g
        peak = max(peak, gmprt.stats()["threads"])
    return peak


async def _threads_after_idle(limit):
    """Polls (bounded) until the runtime has at most `limit` threads."""
    deadline = time.monotonic() + RETIRE_DEADLINE
    while True:
        threads = gmprt.stats()["threads"]
        if threads <= limit or time.monotonic() > deadline:
            return threads
        await gmprt.sleep(0.05)


@pytest.fixture
def short_keepalive(monkeypatch):
    monkeypatch.setenv("GMPRT_IDLE_KEEPALIVE_MS", str(KEEPALIVE_MS))


def test_idle_threads_shrink_after_a_burst(procs, short_keepalive):
    # Before idle Ms retired: 389 threads stayed after 1,000 such Gs, and
    # the count never fell until run() returned.
    async def main():
        peak = await _burst(300)
        after = await _threads_after_idle(procs)
        # The Ms left still serve a second burst, making new ones as needed.
        again = await _burst(50)
        after_again = await _threads_after_idle(procs)
        return peak, after, again, after_again

    peak, after, again, after_again = gmprt.run(main, procs=procs)
    assert peak > 20, f"the burst made only {peak} threads"
    assert after <= procs, f"{after} threads still alive, {peak} at the peak"
    assert again > procs
    assert after_again <= procs


def test_default_keepalive_keeps_threads_for_a_while(procs, monkeypatch):
    # Without the knob the keep-alive is 10 s: threads made by a burst are
    # still there a moment later, ready for the next one.
    monkeypatch.delenv("GMPRT_IDLE_KEEPALIVE_MS", raising=False)

    async def main():
        peak = await _burst(30)
        await gmprt.sleep(0.2)
        return peak, gmprt.stats()["threads"]

    peak, later = gmprt.run(main, procs=procs)
    assert later > procs, (peak, later)


def test_bad_keepalive_knob_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GMPRT_IDLE_KEEPALIVE_MS", "soon")
    with pytest.raises(ValueError, match="GMPRT_IDLE_KEEPALIVE_MS"):
        gmprt.run(lambda: None)
