"""Inputs that used to panic, abort or hang the process (issue 10, items 4
and 5): each must now be a clear exception or simply work."""

from __future__ import annotations

import socket

import gmprt
import pytest

# --- item 4: no input may panic; a timeout too long for a Duration --------------


def test_join_with_an_enormous_timeout_waits_without_limit():
    # Used to panic ("cannot convert float seconds to Duration") inside the
    # sync G, which then left run() waiting forever.
    def joiner(g):
        return g.join(timeout=1e20)

    async def main():
        child = gmprt.go(lambda: 7)
        return await gmprt.go(joiner, child)

    assert gmprt.run(main) == 7


def test_join_with_an_infinite_timeout_waits_without_limit():
    def joiner(g):
        return g.join(timeout=float("inf"))

    async def main():
        return await gmprt.go(joiner, gmprt.go(lambda: "done"))

    assert gmprt.run(main) == "done"


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_join_with_a_bad_timeout_names_it(bad):
    def joiner(g):
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            g.join(timeout=bad)
        return g.join(timeout=5)

    async def main():
        return await gmprt.go(joiner, gmprt.go(lambda: 1))

    assert gmprt.run(main) == 1


# --- item 5: a peer's number must not size an allocation ------------------------


@pytest.mark.parametrize("asked", [2**36, 2**62])
def test_recv_of_a_huge_length_returns_what_is_there(asked):
    # recv(2**36) aborted the process ("memory allocation of 68719476736
    # bytes failed"); recv(2**63) gave "capacity overflow".
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        peer = socket.create_connection(ln.address, timeout=5)
        try:
            conn = await ln.accept(timeout=5)
            peer.sendall(b"hello")
            got = await conn.recv(asked, timeout=5)
            # The Conn stays usable for a normal read afterwards.
            peer.sendall(b"!")
            more = await conn.recv(timeout=5)
            conn.close()
            return got, more
        finally:
            peer.close()
            ln.close()

    assert gmprt.run(main) == (b"hello", b"!")


def test_recv_returns_at_most_one_mib_per_call():
    size = 3 << 20

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        conn = await gmprt.net.dial(*ln.address, timeout=5)
        srv = await ln.accept(timeout=5)

        async def writer():
            await srv.sendall(b"x" * size, timeout=10)
            srv.close_write()

        w = gmprt.go(writer)
        chunks = []
        while data := await conn.recv(size, timeout=10):
            chunks.append(len(data))
        await w
        conn.close()
        srv.close()
        ln.close()
        return chunks

    chunks = gmprt.run(main)
    assert sum(chunks) == size
    assert max(chunks) <= 1 << 20


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"procs": 2**40}, "procs must be an integer from 1 to 1024"),
        ({"procs": 0}, "procs must be an integer from 1 to 1024"),
        ({"procs": -3}, "procs must be an integer from 1 to 1024"),
        ({"max_threads": 0}, "max_threads must be an integer from 1 to 1000000"),
        ({"max_threads": -1}, "max_threads must be an integer from 1 to 1000000"),
        ({"max_threads": 2**40}, "max_threads must be an integer from 1 to 1000000"),
        ({"procs": 2**70}, "procs must be an integer from 1 to 1024, got 1180591620717411303424"),
    ],
)
def test_absurd_procs_and_max_threads_are_rejected_by_name(kwargs, named):
    async def main():
        return None

    with pytest.raises(ValueError, match=named):
        gmprt.run(main, **kwargs)
    # Nothing was left running: a correct call still works.
    assert gmprt.run(main) is None


# --- item 10 (part): a bad argument names itself and the accepted range ---------


@pytest.mark.parametrize(
    ("call", "exc", "named"),
    [
        (
            lambda: gmprt.net.listen("127.0.0.1", 70000),
            ValueError,
            "port must be an integer from 0 to 65535, got 70000",
        ),
        (
            lambda: gmprt.net.listen("127.0.0.1", -1),
            ValueError,
            "port must be an integer from 0 to 65535",
        ),
        (
            lambda: gmprt.net.listen("127.0.0.1", 2**80),
            ValueError,
            "port must be an integer from 0 to 65535",
        ),
        (lambda: gmprt.net.listen("127.0.0.1", "80"), TypeError, "port must be an integer"),
        (
            lambda: gmprt.net.listen("127.0.0.1", 0, backlog=-1),
            ValueError,
            "backlog must be an integer from 0",
        ),
        (
            lambda: gmprt.net.dial("127.0.0.1", 0),
            ValueError,
            "port must be an integer from 1 to 65535",
        ),
        (
            lambda: gmprt.net.dial("127.0.0.1", 65536),
            ValueError,
            "port must be an integer from 1 to 65535",
        ),
        (lambda: gmprt.Chan(-1), ValueError, "channel capacity must be an integer from 0"),
        (lambda: gmprt.Semaphore(0), ValueError, "permits must be an integer from 1"),
        (lambda: gmprt.Semaphore(2**70), ValueError, "permits must be an integer from 1"),
    ],
)
def test_bad_arguments_name_themselves_and_the_range(call, exc, named):
    # listen(port=70000) used to say "OverflowError: out of range integral
    # type conversion attempted", naming nothing.
    with pytest.raises(exc, match=named.replace("(", r"\(")):
        call()


def test_recv_of_zero_or_negative_bytes_names_max_bytes():
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        conn = await gmprt.net.dial(*ln.address, timeout=5)
        try:
            for bad in (0, -5):
                with pytest.raises(ValueError, match="max_bytes must be an integer from 1"):
                    conn.recv(bad)
        finally:
            conn.close()
            ln.close()

    gmprt.run(main)


# --- item 10: defaulted integer arguments name themselves too --------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: gmprt.Chan(2**70), "channel capacity"),
        (lambda: gmprt.Chan(-1), "channel capacity"),
        (lambda: gmprt.WaitGroup().add(2**70), "WaitGroup.add"),
        (lambda: gmprt.net.listen("127.0.0.1", 0, backlog=2**70), "backlog"),
    ],
)
def test_huge_defaulted_ints_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_huge_recv_size_names_max_bytes():
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        c = await gmprt.net.dial(*ln.address)
        s = await ln.accept()
        try:
            with pytest.raises(ValueError, match="max_bytes"):
                c.recv(2**70)
            with pytest.raises(TypeError, match="max_bytes"):
                c.recv("10")
            await s.sendall(b"hi")
            return await c.recv()
        finally:
            c.close()
            s.close()
            ln.close()

    assert gmprt.run(main) == b"hi"
