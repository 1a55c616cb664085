"""Name resolution off the P and Happy Eyeballs dialing (gmprt.net.resolve,
gmprt.net.dial of a name, gmprt._dial.dial_addrs).

A "blackhole" address is a loopback listener with backlog 0 whose one
accept-queue slot is taken: Linux then drops further SYNs, so a connect to
it hangs as one to an unreachable host would. Every wait is bounded.
"""

import errno
import socket
import time

import gmprt
import pytest
from gmprt import _dial
from helpers import LONG


@pytest.fixture
def blackhole():
    """(host, port, listener) of a loopback address that drops SYNs."""
    ln = socket.socket()
    ln.bind(("127.0.0.2", 0))
    ln.listen(0)
    filler = socket.create_connection(ln.getsockname(), timeout=LONG)
    try:
        yield ln.getsockname()[1], ln
    finally:
        filler.close()
        ln.close()


def test_interleave_alternates_families_starting_with_the_first():
    addrs = ["::1", "fe80::1", "::2", "127.0.0.1", "10.0.0.1"]
    assert _dial.interleave(addrs) == ["::1", "127.0.0.1", "fe80::1", "10.0.0.1", "::2"]
    assert _dial.interleave(["1.1.1.1", "::1"]) == ["1.1.1.1", "::1"]
    assert _dial.interleave([]) == []


def test_resolve_names_and_literals():
    async def main():
        local = await gmprt.net.resolve("localhost", timeout=LONG)
        lit = await gmprt.net.resolve("127.0.0.1")
        lit6 = await gmprt.net.resolve("[::1]")
        return local, lit, lit6

    local, lit, lit6 = gmprt.run(main)
    assert local and set(local) <= {"127.0.0.1", "::1"}
    assert len(local) == len(set(local))
    assert lit == ["127.0.0.1"] and lit6 == ["::1"]


def test_an_unknown_name_raises_gaierror_from_resolve_and_dial():
    async def main():
        with pytest.raises(socket.gaierror):
            await gmprt.net.resolve("no-such-host.invalid", timeout=LONG)
        with pytest.raises(socket.gaierror):
            await gmprt.net.dial("no-such-host.invalid", 80, timeout=LONG)
        return True

    assert gmprt.run(main)


def test_a_slow_lookup_blocks_no_p(monkeypatch):
    """procs=1: while getaddrinfo blocks for 0.3 s, another G keeps
    ticking, and a timeout reaches the caller before the lookup ends."""
    real = socket.getaddrinfo

    ended = []

    def slow(*args, **kwargs):
        time.sleep(0.3)
        ended.append(1)
        return real("127.0.0.1", *args[1:], **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    ticks = [0]

    async def ticker(stop):
        while not stop:
            ticks[0] += 1
            await gmprt.sleep(0.01)

    async def main():
        stop = []
        t = gmprt.go(ticker, stop)
        got = await gmprt.net.resolve("slow.test", timeout=LONG)
        during = ticks[0]
        start = time.monotonic()
        with pytest.raises(gmprt.Timeout):
            await gmprt.net.resolve("slow.test", timeout=0.05)
        gave_up_after = time.monotonic() - start
        # The abandoned lookup still runs in its sync G: let it end before
        # run() does, or run() abandons that G's thread (by design).
        deadline = time.monotonic() + LONG
        while len(ended) < 2 and time.monotonic() < deadline:
            await gmprt.sleep(0.01)
        stop.append(1)
        await t
        return got, during, gave_up_after

    got, during, gave_up_after = gmprt.run(main, procs=1)
    assert got == ["127.0.0.1"]
    assert during >= 3, "the ticker G did not run while the lookup blocked"
    assert gave_up_after < 0.29, "the timeout waited for the lookup to finish"


def test_dial_of_a_name_connects():
    async def main():
        with gmprt.net.listen("127.0.0.1", 0) as ln:
            port = ln.address[1]
            conn = await gmprt.net.dial("localhost", port, timeout=LONG)
            srv = await ln.accept(timeout=LONG)
            await conn.sendall(b"hi", timeout=LONG)
            got = await srv.recv(timeout=LONG)
            conn.close()
            srv.close()
            return got

    assert gmprt.run(main) == b"hi"


def test_a_blackholed_first_address_falls_back_after_the_delay(blackhole):
    port, _ = blackhole

    async def main():
        with gmprt.net.listen("127.0.0.1", port) as ln:
            conn = await _dial.dial_addrs(["127.0.0.2", "127.0.0.1"], port)
            peer = conn.remote_address
            conn.close()
            (await ln.accept(timeout=LONG)).close()
        # The abandoned connect was withdrawn: nothing left on the netpoller.
        for _ in range(1000):
            if gmprt.stats()["netpoll_waiters"] == 0:
                break
            await gmprt.sleep(0.001)
        return peer, gmprt.stats()["netpoll_waiters"]

    peer, waiters = gmprt.run(main, procs=2)
    assert peer[0] == "127.0.0.1"
    assert waiters == 0


def test_a_refused_first_address_falls_back_at_once():
    async def main():
        with gmprt.net.listen("127.0.0.1", 0) as ln:
            port = ln.address[1]
            # Nothing listens on 127.0.0.3 at that port: refused at once, so
            # the fallback needs no attempt delay (one far above the wait).
            conn = await _dial.dial_addrs(["127.0.0.3", "127.0.0.1"], port, delay=LONG)
            peer = conn.remote_address
            conn.close()
            return peer

    assert gmprt.run(main)[0] == "127.0.0.1"


def test_all_refused_raises_the_first_error_with_the_rest_as_notes():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        with pytest.raises(ConnectionRefusedError) as ei:
            await _dial.dial_addrs(["127.0.0.1", "127.0.0.3"], port)
        return ei.value

    e = gmprt.run(main)
    assert e.errno == errno.ECONNREFUSED
    assert any("127.0.0.3" in n for n in e.__notes__)


def test_losers_that_connect_too_are_closed(procs):
    """With no attempt delay both connects succeed; one wins, the other is
    closed by the dialer (the server reads EOF on it), 20 times over."""

    async def main():
        with gmprt.net.listen("127.0.0.1", 0) as ln:
            port = ln.address[1]
            # The same port on 127.0.0.2 is almost surely free too.
            with gmprt.net.listen("127.0.0.2", port) as other:
                for _ in range(20):
                    conn = await _dial.dial_addrs(["127.0.0.1", "127.0.0.2"], port, delay=0)
                    won = conn.remote_address[0]
                    winner_ln, loser_ln = (ln, other) if won == "127.0.0.1" else (other, ln)
                    w = await winner_ln.accept(timeout=LONG)
                    await conn.sendall(b"x", timeout=LONG)
                    assert await w.recv(timeout=LONG) == b"x"
                    # The loser, if it connected, reads EOF: it was closed.
                    try:
                        lose = await loser_ln.accept(timeout=0.05)
                    except gmprt.Timeout:
                        lose = None
                    if lose is not None:
                        assert await lose.recv(timeout=LONG) == b""
                        lose.close()
                    w.close()
                    conn.close()
        return True

    assert gmprt.run(main, procs=procs)


def test_a_dial_timeout_covers_blackholed_addresses(blackhole):
    port, _ = blackhole

    async def main():
        start = time.monotonic()
        with pytest.raises(gmprt.Timeout):
            with gmprt.timeout(0.3):
                await _dial.dial_addrs(["127.0.0.2", "127.0.0.2"], port, delay=0.05)
        return time.monotonic() - start

    assert gmprt.run(main) < LONG


def test_cancelling_a_dialing_g_cancels_its_attempts(blackhole):
    port, _ = blackhole

    async def main():
        g = gmprt.go(_dial.dial_addrs, ["127.0.0.2"] * 3, port, 0.01)
        await gmprt.sleep(0.1)
        assert g.cancel()
        with pytest.raises(gmprt.Cancelled):
            await g
        for _ in range(1000):
            if gmprt.stats()["netpoll_waiters"] == 0:
                break
            await gmprt.sleep(0.001)
        return gmprt.stats()["netpoll_waiters"], gmprt.stats()["goroutines"]

    waiters, gs = gmprt.run(main)
    assert waiters == 0
    assert gs == 1


def test_bad_input_raises_at_the_call_not_the_await():
    with pytest.raises(ValueError, match="port"):
        gmprt.net.dial("localhost", 0)
    with pytest.raises(TypeError, match="port"):
        gmprt.net.dial("localhost", "80")
    with pytest.raises(ValueError, match="port"):
        gmprt.net.resolve("localhost", 70000)
    with pytest.raises(ValueError, match="timeout"):
        gmprt.net.dial("localhost", 80, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        gmprt.net.resolve("localhost", timeout=float("nan"))
