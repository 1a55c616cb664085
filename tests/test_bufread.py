"""Buffered reads on gmprt.net.Conn: readline, readuntil, readexactly.

The peer is a plain Python socket the test writes to in pieces, so the
lines arrive split and merged every way. Every wait is bounded
(``timeout=`` on gmprt calls, socket timeouts); nothing asserts a timing.
"""

import hashlib
import random
import socket

import gmprt
import pytest
from gmprt.net import IncompleteReadError, LimitOverrunError
from helpers import LONG


def _bg(method, *args, **kwargs):
    """Starts a G that awaits ``method(*args, **kwargs)``."""

    async def call():
        return await method(*args, **kwargs)

    return gmprt.go(call)


def _with_peer(body, procs=1):
    """Runs ``await body(conn, peer)``: ``conn`` a gmprt Conn accepted from a
    listener, ``peer`` the connected plain socket at the other end."""

    async def main():
        with gmprt.net.listen("127.0.0.1", 0) as ln:
            peer = socket.create_connection(ln.address, timeout=LONG)
            try:
                with await ln.accept(timeout=LONG) as conn:
                    return await body(conn, peer)
            finally:
                peer.close()

    return gmprt.run(main, procs=procs)


def test_lines_split_and_merged_across_sends():
    async def body(conn, peer):
        peer.sendall(b"ab")
        got = []
        g = _bg(conn.readline, timeout=LONG)
        await gmprt.sleep(0.01)
        peer.sendall(b"c\nde")
        got.append(await g)
        peer.sendall(b"f\ng\nh\n")
        for _ in range(3):
            got.append(await conn.readline(timeout=LONG))
        peer.sendall(b"partial")
        peer.shutdown(socket.SHUT_WR)
        got.append(await conn.readline(timeout=LONG))
        got.append(await conn.readline(timeout=LONG))
        return got

    assert _with_peer(body) == [b"abc\n", b"def\n", b"g\n", b"h\n", b"partial", b""]


def test_readuntil_a_multibyte_separator_split_between_sends():
    async def body(conn, peer):
        peer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
        g = _bg(conn.readuntil, b"\r\n\r\n", timeout=LONG)
        await gmprt.sleep(0.01)
        peer.sendall(b"\nbody")
        head = await g
        rest = await conn.recv(100, timeout=LONG)
        return head, rest

    assert _with_peer(body) == (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"body")


def test_readuntil_at_eof_raises_incomplete_with_the_partial_bytes():
    async def body(conn, peer):
        peer.sendall(b"no separator")
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(IncompleteReadError) as ei:
            await conn.readuntil(b";", timeout=LONG)
        assert isinstance(ei.value, EOFError)
        assert ei.value.partial == b"no separator" and ei.value.expected is None
        # The partial bytes were consumed: only EOF is left.
        return await conn.recv(timeout=LONG)

    assert _with_peer(body) == b""


def test_readexactly_and_its_incomplete_error():
    async def body(conn, peer):
        peer.sendall(b"0123456789")
        a = await conn.readexactly(4, timeout=LONG)
        b = await conn.readexactly(0, timeout=LONG)
        peer.sendall(b"ab")
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(IncompleteReadError) as ei:
            await conn.readexactly(100, timeout=LONG)
        return a, b, ei.value.partial, ei.value.expected

    assert _with_peer(body) == (b"0123", b"", b"456789ab", 100)


def test_a_huge_readexactly_costs_only_what_arrived():
    """A length read off the wire (2**40) must not size an allocation."""

    async def body(conn, peer):
        peer.sendall(b"x" * 1000)
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(IncompleteReadError) as ei:
            await conn.readexactly(1 << 40, timeout=LONG)
        return len(ei.value.partial)

    assert _with_peer(body) == 1000


def test_an_overrun_keeps_the_bytes_and_memory_is_bounded():
    """A peer that never sends the separator: LimitOverrunError after about
    ``limit`` bytes, not all 8 MiB buffered; the bytes stay for recv."""
    limit = 64 * 1024

    async def body(conn, peer):
        blob = b"y" * (8 << 20)
        sender = gmprt.go(lambda: peer.sendall(blob))
        with pytest.raises(LimitOverrunError) as ei:
            await conn.readline(limit=limit, timeout=LONG)
        consumed = ei.value.consumed
        assert isinstance(ei.value, ValueError)
        assert limit < consumed <= limit + 64 * 1024 + 1
        # The buffered bytes come back first, then the rest of the stream.
        first = await conn.recv(1 << 20, timeout=LONG)
        assert len(first) == consumed
        total = len(first)
        while total < len(blob):
            total += len(await conn.recv(1 << 20, timeout=LONG))
        sender.join(LONG)
        peer.sendall(b"tail\n")
        return total, await conn.readline(limit=limit, timeout=LONG)

    assert _with_peer(body) == (8 << 20, b"tail\n")


def test_a_separator_past_the_limit_is_an_overrun_and_a_larger_limit_reads_it():
    async def body(conn, peer):
        peer.sendall(b"abcdefgh\n")
        with pytest.raises(LimitOverrunError) as ei:
            await conn.readline(limit=4, timeout=LONG)
        return ei.value.consumed, await conn.readline(limit=100, timeout=LONG)

    # Only limit + 1 bytes were read to decide ("abcde"): memory stays bounded.
    assert _with_peer(body) == (5, b"abcdefgh\n")


def test_a_timeout_loses_nothing():
    async def body(conn, peer):
        peer.sendall(b"par")
        with pytest.raises(gmprt.Timeout):
            await conn.readline(timeout=0.05)
        with pytest.raises(gmprt.Timeout):
            await conn.readexactly(10, timeout=0.05)
        peer.sendall(b"tial\n")
        return await conn.readline(timeout=LONG)

    assert _with_peer(body) == b"partial\n"


def test_a_cancelled_readline_loses_nothing(procs):
    async def body(conn, peer):
        peer.sendall(b"half")
        g = _bg(conn.readline, timeout=LONG)
        await gmprt.sleep(0.02)
        assert g.cancel()
        with pytest.raises(gmprt.Cancelled):
            await g
        peer.sendall(b" a line\n")
        return await conn.readline(timeout=LONG)

    assert _with_peer(body, procs) == b"half a line\n"


def test_recv_returns_the_buffered_remainder_first():
    async def body(conn, peer):
        peer.sendall(b"line\nrest of it")
        line = await conn.readline(timeout=LONG)
        a = await conn.recv(4, timeout=LONG)
        b = await conn.recv(100, timeout=LONG)
        return line, a, b

    assert _with_peer(body) == (b"line\n", b"rest", b" of it")


def test_bad_arguments_name_themselves():
    async def body(conn, peer):
        with pytest.raises(ValueError, match="separator"):
            conn.readuntil(b"")
        with pytest.raises(ValueError, match="limit"):
            conn.readline(limit=0)
        with pytest.raises(ValueError, match="n must be"):
            conn.readexactly(-1)
        with pytest.raises(TypeError, match="bytes-like"):
            conn.readuntil("\n")
        return True

    assert _with_peer(body)


def test_reads_on_a_closed_conn_raise_ebadf_and_close_wakes_a_reader():
    async def body(conn, peer):
        g = _bg(conn.readline, timeout=LONG)
        await gmprt.sleep(0.02)
        conn.close()
        with pytest.raises(OSError) as ei:
            await g
        with pytest.raises(OSError):
            await conn.readexactly(1, timeout=LONG)
        return ei.value.errno

    import errno

    assert _with_peer(body) == errno.EBADF


@pytest.mark.parametrize("procs", [1, 2])
def test_many_line_streams_exactly_once(procs):
    """100 connections, each sending 200 lines of random length in random
    pieces; the server G per connection echoes a digest of the lines it read.
    Every line arrives exactly once and whole."""
    n_conns, n_lines = 100, 200

    def lines_of(i):
        r = random.Random(i)
        return [
            bytes(r.randrange(97, 123) for _ in range(r.randrange(0, 300))) + b"\n"
            for _ in range(n_lines)
        ]

    async def handle(conn):
        h = hashlib.sha256()
        count = 0
        with conn:
            while line := await conn.readline(limit=1024, timeout=LONG):
                h.update(line)
                count += 1
            await conn.sendall(f"{count} {h.hexdigest()}\n".encode(), timeout=LONG)

    async def client(i, addr):
        lines = lines_of(i)
        blob = b"".join(lines)
        r = random.Random(-i)
        conn = await gmprt.net.dial(*addr, timeout=LONG)
        with conn:
            pos = 0
            while pos < len(blob):
                k = r.randrange(1, 2000)
                await conn.sendall(blob[pos : pos + k], timeout=LONG)
                pos += k
                if r.random() < 0.1:
                    await gmprt.sleep(0)
            conn.close_write()
            reply = await conn.readline(timeout=LONG)
        want = f"{len(lines)} {hashlib.sha256(blob).hexdigest()}\n".encode()
        return reply == want

    async def main():
        with gmprt.net.listen("127.0.0.1", 0) as ln:

            async def serve():
                for _ in range(n_conns):
                    gmprt.go(handle, await ln.accept(timeout=LONG))

            s = gmprt.go(serve)
            cs = [gmprt.go(client, i, ln.address) for i in range(n_conns)]
            ok = [await c for c in cs]
            await s
            return ok

    assert gmprt.run(main, procs=procs) == [True] * n_conns
