"""gmprt.net's UDP: PacketConn, listen_udp, dial_udp.

Every wait is bounded (`timeout=` on gmprt calls, socket timeouts, and
"did not hang" limits); nothing asserts a timing beyond that. UDP on
loopback can still drop a datagram under load, so the tests that count on
each datagram arriving resend after a short timeout, and check what
arrived rather than that nothing was ever lost.
"""

import errno
import inspect
import os
import socket
import threading
import time

import gmprt
import pytest

LONG = 20  # seconds: "did not hang"
RETRY = 0.5  # seconds before a round trip is resent
TRIES = 20


def _have_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def _free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def _echo(pc):
    """Echoes each datagram to its sender until `pc` is closed."""
    while True:
        try:
            data, addr = await pc.recvfrom(timeout=LONG)
        except OSError:  # closed
            return
        await pc.sendto(data, addr, timeout=LONG)


async def _round_trip(pc, msg, addr=None):
    """Sends `msg` (to `addr`, or the connected peer) until its echo comes
    back; skips late echoes of earlier messages."""
    for _ in range(TRIES):
        if addr is None:
            await pc.send(msg, timeout=LONG)
        else:
            await pc.sendto(msg, addr, timeout=LONG)
        deadline = time.monotonic() + RETRY
        while time.monotonic() < deadline:
            try:
                if addr is None:
                    got, frm = await pc.recv(timeout=RETRY), None
                else:
                    got, frm = await pc.recvfrom(timeout=RETRY)
            except gmprt.Timeout:
                break
            if got == msg:
                return frm
    raise AssertionError(f"no echo of {msg[:20]!r} after {TRIES} tries")


async def _settled_counts():
    """(netpoll_waiters, timers) once they reach zero (bounded)."""
    deadline = time.monotonic() + LONG
    while True:
        s = gmprt.stats()
        counts = (s["netpoll_waiters"], s["timers"])
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts
        await gmprt.sleep(0)


def test_echo_many_clients(procs):
    """20 client Gs on their own bound sockets, 10 round trips each, against
    one gmprt echo G: every reply is the request's, from the server."""
    clients, rounds = 20, 10

    async def client(i, addr):
        with gmprt.net.listen_udp("127.0.0.1", 0) as pc:
            for r in range(rounds):
                msg = f"{i}:{r}:".encode() * (1 + (i * r) % 50)
                frm = await _round_trip(pc, msg, addr)
                assert frm == addr
        return i

    async def main():
        server = gmprt.net.listen_udp("127.0.0.1", 0)
        addr = server.local_address
        echo = gmprt.go(_echo, server)
        gs = [gmprt.go(client, i, addr) for i in range(clients)]
        done = [await g for g in gs]
        server.close()
        await echo
        return done, await _settled_counts()

    assert gmprt.run(main, procs=procs) == (list(range(clients)), (0, 0))


def test_connected_form(procs):
    async def main():
        server = gmprt.net.listen_udp("127.0.0.1", 0)
        host, port = server.local_address
        assert host == "127.0.0.1" and port > 0
        echo = gmprt.go(_echo, server)
        pc = gmprt.net.dial_udp("127.0.0.1", port)
        assert pc.remote_address == ("127.0.0.1", port)
        assert pc.local_address[1] > 0
        assert repr(pc) == (
            f"<gmprt.net.PacketConn 127.0.0.1:{pc.local_address[1]} -> 127.0.0.1:{port}>"
        )
        for i in range(5):
            await _round_trip(pc, b"ping %d" % i)
        # A name resolves like dial's; sendto the peer itself is allowed.
        named = gmprt.net.dial_udp("localhost", port)
        await _round_trip(named, b"by name")
        await _round_trip(named, b"to the peer", ("127.0.0.1", port))
        named.close()
        pc.close()
        server.close()
        await echo

    gmprt.run(main, procs=procs)


def test_ipv6():
    if not _have_ipv6():
        pytest.skip("no IPv6 loopback")

    async def main():
        server = gmprt.net.listen_udp("::1", 0)
        host, port = server.local_address
        assert host == "::1" and port > 0
        assert repr(server) == f"<gmprt.net.PacketConn [::1]:{port}>"
        echo = gmprt.go(_echo, server)
        pc = gmprt.net.dial_udp("::1", port)
        assert pc.remote_address == ("::1", port)
        await _round_trip(pc, b"six")
        bound = gmprt.net.listen_udp("::1", 0)
        assert await _round_trip(bound, b"v6", ("::1", port)) == ("::1", port)
        # A Python IPv6 peer.
        py = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        py.bind(("::1", 0))
        py.settimeout(LONG)
        await bound.sendto(b"to python", py.getsockname()[:2], timeout=LONG)
        data, frm = py.recvfrom(100)
        assert data == b"to python" and frm[:2] == bound.local_address
        py.close()
        for s in (bound, pc, server):
            s.close()
        await echo

    gmprt.run(main)


def test_truncation_empty_and_big_datagrams():
    """A datagram longer than max_bytes is cut, the rest dropped; b"" is a
    datagram; the default max holds the biggest loopback datagram."""
    py = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    py.bind(("127.0.0.1", 0))

    async def main():
        pc = gmprt.net.listen_udp("127.0.0.1", 0)
        addr = pc.local_address
        # Loopback does not drop datagrams sent to an idle socket with room
        # in its receive buffer; each is read before the next is sent.
        py.sendto(b"0123456789", addr)
        assert await pc.recvfrom(4, timeout=LONG) == (b"0123", py.getsockname())
        py.sendto(b"", addr)
        assert await pc.recv(timeout=LONG) == b""
        py.sendto(b"next", addr)
        assert await pc.recv(timeout=LONG) == b"next"  # nothing left of 0123456789
        big = bytes(range(256)) * 255 + b"x" * 255  # 65,535 > any UDP payload
        with pytest.raises(OSError) as e:
            await pc.sendto(big, py.getsockname(), timeout=LONG)
        assert e.value.errno == errno.EMSGSIZE
        biggest = big[:65507]  # the IPv4 maximum
        py.sendto(biggest, addr)
        assert await pc.recv(timeout=LONG) == biggest
        py.sendto(biggest, addr)
        assert await pc.recv(1 << 40, timeout=LONG) == biggest  # a huge ask is fine
        assert await pc.sendto(b"", py.getsockname(), timeout=LONG) == 0
        pc.close()

    py.settimeout(LONG)
    try:
        gmprt.run(main)
        assert py.recv(10) == b""
    finally:
        py.close()


def test_timeout_keeps_the_socket_usable():
    async def main():
        pc = gmprt.net.listen_udp("127.0.0.1", 0)
        with pytest.raises(gmprt.Timeout, match="recvfrom timed out") as e:
            await pc.recvfrom(timeout=0.05)
        assert isinstance(e.value, TimeoutError)
        with pytest.raises(gmprt.Timeout, match="recv timed out"):
            await pc.recv(timeout=0)
        # Still usable: a datagram to itself.
        assert await pc.sendto(b"self", pc.local_address, timeout=LONG) == 4
        assert await pc.recvfrom(timeout=LONG) == (b"self", pc.local_address)
        pc.close()
        return await _settled_counts()

    assert gmprt.run(main) == (0, 0)


def test_close_wakes_a_parked_g_and_closed_errors():
    async def main():
        pc = gmprt.net.listen_udp("127.0.0.1", 0)

        async def reader():
            return await pc.recvfrom()  # no deadline

        r = gmprt.go(reader)
        deadline = time.monotonic() + LONG
        while gmprt.stats()["netpoll_waiters"] < 1 and time.monotonic() < deadline:
            await gmprt.sleep(0.001)
        assert not r.done()
        pc.close()
        with pytest.raises(OSError) as e:
            await r
        assert e.value.errno == errno.EBADF and "closed" in str(e.value)
        with pytest.raises(OSError, match="sendto on a closed gmprt.net.PacketConn"):
            await pc.sendto(b"x", ("127.0.0.1", 9))
        with pytest.raises(OSError, match="recv on a closed"):
            await pc.recv(timeout=LONG)
        with pytest.raises(OSError) as e:
            _ = pc.local_address
        assert e.value.errno == errno.EBADF
        assert pc.closed and pc.fileno() == -1
        assert repr(pc) == "<gmprt.net.PacketConn closed>"
        pc.close()  # idempotent
        with gmprt.net.dial_udp("127.0.0.1", 9) as c:
            assert not c.closed
        assert c.closed

    gmprt.run(main)


def test_connected_socket_to_a_closed_port_is_refused():
    """Linux: the ICMP port unreachable for a connected socket's datagram
    makes its next recv raise ConnectionRefusedError (waking it)."""
    port = _free_udp_port()

    async def main():
        pc = gmprt.net.dial_udp("127.0.0.1", port)
        for _ in range(TRIES):  # ICMP, like the datagram, may be lost
            await pc.send(b"anyone?", timeout=LONG)
            try:
                await pc.recv(timeout=RETRY)
            except ConnectionRefusedError as e:
                assert e.errno == errno.ECONNREFUSED
                break
            except gmprt.Timeout:
                continue
        else:
            raise AssertionError("never refused")
        # The error was reported once; the socket is still usable.
        with pytest.raises(gmprt.Timeout):
            await pc.recv(timeout=0.05)
        pc.close()

    gmprt.run(main)


def test_interop_with_python_sockets():
    """A plain SOCK_DGRAM client in a thread against a gmprt echo G, and a
    gmprt client against a plain echo thread."""
    results = []

    def py_client(addr):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(RETRY)
                for i in range(10):
                    msg = b"py %d" % i
                    for _ in range(TRIES):
                        s.sendto(msg, addr)
                        try:
                            data, frm = s.recvfrom(100)
                        except TimeoutError:
                            continue
                        if data == msg:
                            assert frm == addr
                            break
                    else:
                        raise AssertionError(f"no echo of {msg!r}")
            results.append("client ok")
        except BaseException as e:  # reported by the main G
            results.append(e)

    py_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    py_server.bind(("127.0.0.1", 0))
    py_server.settimeout(0.05)
    stop = threading.Event()

    def py_echo():
        while not stop.is_set():
            try:
                data, frm = py_server.recvfrom(65536)
            except TimeoutError:
                continue
            py_server.sendto(data, frm)

    async def main():
        server = gmprt.net.listen_udp("127.0.0.1", 0)
        echo = gmprt.go(_echo, server)
        t = threading.Thread(target=py_client, args=(server.local_address,))
        t.start()
        with gmprt.net.listen_udp("127.0.0.1", 0) as pc:
            for i in range(10):
                frm = await _round_trip(pc, b"gmprt %d" % i, py_server.getsockname())
                assert frm == py_server.getsockname()
        with gmprt.net.dial_udp(*py_server.getsockname()) as pc:
            await _round_trip(pc, bytearray(b"connected"))
        deadline = time.monotonic() + LONG
        while t.is_alive() and time.monotonic() < deadline:
            await gmprt.sleep(0.01)
        assert not t.is_alive()
        server.close()
        await echo

    e = threading.Thread(target=py_echo)
    e.start()
    try:
        gmprt.run(main)
    finally:
        stop.set()
        e.join(LONG)
        py_server.close()
    assert results == ["client ok"]


def test_from_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(LONG)

    async def main():
        pc = gmprt.net.PacketConn.from_socket(s)
        assert pc.fileno() not in (-1, s.fileno())  # a dup
        assert pc.local_address == s.getsockname()
        with pytest.raises(OSError) as e:
            _ = pc.remote_address
        assert e.value.errno == errno.ENOTCONN
        peer.sendto(b"via the dup", s.getsockname())
        assert await pc.recvfrom(timeout=LONG) == (b"via the dup", peer.getsockname())
        pc.close()
        # A connected one, from an fd number.
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect(peer.getsockname())
        with gmprt.net.PacketConn.from_socket(c.fileno()) as cpc:
            assert cpc.remote_address == peer.getsockname()
            await cpc.send(b"connected dup", timeout=LONG)
        c.close()

    try:
        gmprt.run(main)
        # The caller's socket is open, and still blocking.
        assert s.fileno() != -1 and s.getblocking()
        peer.sendto(b"still mine", s.getsockname())
        s.settimeout(LONG)
        assert s.recv(100) == b"still mine"
        assert peer.recv(100) == b"connected dup"
    finally:
        s.close()
        peer.close()
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for bad in (tcp, unix):
            with pytest.raises(ValueError, match="not a UDP socket"):
                gmprt.net.PacketConn.from_socket(bad)
    finally:
        tcp.close()
        unix.close()
    with pytest.raises(TypeError):
        gmprt.net.PacketConn.from_socket("not a socket")
    with pytest.raises(ValueError):
        gmprt.net.PacketConn.from_socket(s)  # closed: fileno() is -1
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as e:
        gmprt.net.PacketConn.from_socket(r)  # a closed fd: the dup fails
    assert e.value.errno == errno.EBADF


def test_many_gs_receiving_on_one_socket(procs):
    """8 Gs receive on one socket; a sender sends 100 numbered datagrams,
    resending those not acked. Each datagram (id, attempt) reaches exactly
    one G; every id arrives; closing the socket wakes all 8."""
    n, receivers = 100, 8

    async def receiver(pc, got):
        while True:
            try:
                data, frm = await pc.recvfrom(timeout=LONG)
            except OSError:  # closed: done
                return
            got.append(data)
            await pc.sendto(data.split(b":")[0], frm, timeout=LONG)

    async def main():
        pc = gmprt.net.listen_udp("127.0.0.1", 0)
        gots = [[] for _ in range(receivers)]
        gs = [gmprt.go(receiver, pc, got) for got in gots]
        sender = gmprt.net.dial_udp(*pc.local_address)
        unacked = set(range(n))
        for attempt in range(TRIES):
            if not unacked:
                break
            for i in sorted(unacked):
                await sender.send(b"%d:%d" % (i, attempt), timeout=LONG)
            deadline = time.monotonic() + RETRY
            while unacked and time.monotonic() < deadline:
                try:
                    unacked.discard(int(await sender.recv(timeout=RETRY)))
                except gmprt.Timeout:
                    break
        assert not unacked, f"{len(unacked)} never acked"
        pc.close()
        for g in gs:
            await g
        sender.close()
        return gots

    gots = gmprt.run(main, procs=procs)
    every = [d for got in gots for d in got]
    assert len(every) == len(set(every)), "a datagram reached two Gs"
    assert {int(d.split(b":")[0]) for d in every} == set(range(n))


def test_bad_input():
    async def main():
        pc = gmprt.net.listen_udp("127.0.0.1", 0)
        with pytest.raises(ValueError, match="max_bytes"):
            pc.recvfrom(0)
        with pytest.raises(ValueError, match="max_bytes"):
            pc.recv(-1)
        with pytest.raises(ValueError):
            pc.recvfrom(timeout=-1)
        with pytest.raises(TypeError, match="bytes-like"):
            pc.sendto("text", ("127.0.0.1", 9))
        with pytest.raises(TypeError, match="host, port"):
            pc.sendto(b"x", "127.0.0.1:9")
        with pytest.raises(ValueError, match="port"):
            pc.sendto(b"x", ("127.0.0.1", 0))
        with pytest.raises(ValueError, match="port"):
            pc.sendto(b"x", ("127.0.0.1", 70000))
        with pytest.raises(OSError, match="sendto"):
            pc.sendto(b"x", ("no-such-host.invalid", 9))
        with pytest.raises(OSError) as e:
            await pc.send(b"not connected", timeout=LONG)
        assert e.value.errno == errno.EDESTADDRREQ
        # bytearray and memoryview go through the buffer protocol.
        me = pc.local_address
        assert await pc.sendto(bytearray(b"ab"), me, timeout=LONG) == 2
        assert await pc.sendto(memoryview(b"xcd")[1:], me, timeout=LONG) == 2
        assert await pc.recv(timeout=LONG) == b"ab"
        assert await pc.recv(timeout=LONG) == b"cd"
        # A connected socket sends to its peer only (Go's rule; Linux
        # itself would send it).
        c = gmprt.net.dial_udp(*me)
        with pytest.raises(OSError) as e:
            await c.sendto(b"x", ("127.0.0.1", 9), timeout=LONG)
        assert e.value.errno == errno.EISCONN
        c.close()
        pc.close()

    gmprt.run(main)
    with pytest.raises(ValueError, match="port"):
        gmprt.net.listen_udp("127.0.0.1", -1)
    with pytest.raises(ValueError, match="port"):
        gmprt.net.dial_udp("127.0.0.1", 0)
    with pytest.raises(TypeError):
        gmprt.net.dial_udp("127.0.0.1", "53")
    with pytest.raises(OSError, match="dial_udp"):
        gmprt.net.dial_udp("no-such-host.invalid", 53)


def test_address_in_use_and_reuse_port():
    a = gmprt.net.listen_udp("127.0.0.1", 0)
    port = a.local_address[1]
    with pytest.raises(OSError) as e:
        gmprt.net.listen_udp("127.0.0.1", port)
    assert e.value.errno == errno.EADDRINUSE
    a.close()
    a = gmprt.net.listen_udp("", 0, reuse_port=True)
    assert a.local_address[0] == "0.0.0.0"
    b = gmprt.net.listen_udp("0.0.0.0", a.local_address[1], reuse_port=True)
    assert a.local_address == b.local_address
    a.close()
    b.close()


def test_tokens_need_a_g_and_signatures():
    pc = gmprt.net.listen_udp("127.0.0.1", 0)  # outside run(): registered lazily
    try:
        with pytest.raises(RuntimeError, match="outside a gmprt G"):
            next(pc.recvfrom().__await__())
    finally:
        pc.close()
    sig = inspect.signature(gmprt.net.PacketConn.recvfrom)
    assert sig.parameters["max_bytes"].default == 65536
    assert "truncated" in gmprt.net.PacketConn.recvfrom.__doc__
    assert "ConnectionRefusedError" in gmprt.net.PacketConn.__doc__
    assert "PacketConn" in gmprt.net.__doc__
