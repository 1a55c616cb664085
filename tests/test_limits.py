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
        with pytest.raises(ValueError, match="timeout must be >= 0"):
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
        ({"procs": 2**40}, "procs must be between 1 and 1024"),
        ({"procs": 0}, "procs must be between 1 and 1024"),
        ({"procs": -3}, "procs must be between 1 and 1024"),
        ({"max_threads": 0}, "max_threads must be between 1 and 1000000"),
        ({"max_threads": -1}, "max_threads must be between 1 and 1000000"),
        ({"max_threads": 2**40}, "max_threads must be between 1 and 1000000"),
    ],
)
def test_absurd_procs_and_max_threads_are_rejected_by_name(kwargs, named):
    async def main():
        return None

    with pytest.raises(ValueError, match=named):
        gmprt.run(main, **kwargs)
    # Nothing was left running: a correct call still works.
    assert gmprt.run(main) is None
