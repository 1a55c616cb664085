"""gmprt.net and the fd waits: Gs parked on sockets through the netpoller.

Every wait is bounded (socket timeouts, `timeout=` on gmprt calls, and
"did not hang" limits); nothing asserts a timing beyond that.
"""

import errno
import os
import random
import resource
import select
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import gmprt
import pytest
from helpers import LONG
from helpers import free_port as _free_port
from helpers import have_ipv6 as _have_ipv6
from helpers import serve as _serve


async def _settled_counts():
    """(netpoll_waiters, timers) once they reach zero (bounded). A wait stops
    counting just *after* its G is runnable again (so the deadlock check never
    sees a woken G nowhere), so a G that was just woken may still see itself
    counted for an instant."""
    deadline = time.monotonic() + LONG
    while True:
        s = gmprt.stats()
        counts = (s["netpoll_waiters"], s["timers"])
        if counts == (0, 0) or time.monotonic() > deadline:
            return counts
        await gmprt.sleep(0)


async def _wait_thread(t):
    deadline = time.monotonic() + LONG
    while t.is_alive() and time.monotonic() < deadline:
        await gmprt.sleep(0.01)
    assert not t.is_alive(), "thread did not finish"


@pytest.mark.parametrize("procs", [1, 2])
def test_echo_many_connections_and_sizes(procs):
    """Byte-exact echo: 1,000 concurrent gmprt clients with messages from 1 B
    to 64 KiB, a few of 1 MiB, and a plain-socket client in a thread, all
    against one gmprt echo server in the same run()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4200:
        pytest.skip(f"needs ~4,200 file descriptors, the hard limit is {hard}")
    sizes = [1, 2, 100, 1000, 4096, 16 * 1024 + 3, 65536]
    n = 1000
    big = 4
    thread_result = []

    def plain_client(addr):
        try:
            with socket.create_connection(addr, timeout=LONG) as s:
                for size in (1, 1000, 200_000, 1 << 20):
                    msg = random.Random(size).randbytes(size)
                    sender = threading.Thread(target=s.sendall, args=(msg,))
                    sender.start()
                    got = bytearray()
                    while len(got) < size:
                        chunk = s.recv(1 << 16)
                        assert chunk, "EOF from the server"
                        got += chunk
                    sender.join(LONG)
                    assert bytes(got) == msg
            thread_result.append("ok")
        except BaseException as e:  # reported by the main G
            thread_result.append(e)

    connected = [0]

    async def client(i, addr):
        size = (1 << 20) if i < big else sizes[i % len(sizes)]
        msg = random.Random(i).randbytes(size)
        conn = await gmprt.net.dial(*addr, timeout=LONG)
        # Hold every connection open until all are: 1,000 at once.
        connected[0] += 1
        deadline = time.monotonic() + LONG
        while connected[0] < n and time.monotonic() < deadline:
            await gmprt.sleep(0.005)

        async def writer():
            await conn.sendall(msg, timeout=LONG)
            conn.close_write()

        w = gmprt.go(writer)
        got = bytearray()
        while chunk := await conn.recv(1 << 16, timeout=LONG):
            got += chunk
        await w
        conn.close()
        return bytes(got) == msg, len(got)

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        server = gmprt.go(_serve, ln)
        t = threading.Thread(target=plain_client, args=(ln.address,))
        t.start()
        gs = [gmprt.go(client, i, ln.address) for i in range(n)]
        results = [await g for g in gs]
        await _wait_thread(t)
        ln.close()
        await server
        return results

    t0 = time.monotonic()
    results = gmprt.run(main, procs=procs)
    assert time.monotonic() - t0 < 60
    assert thread_result == ["ok"]
    assert connected[0] == n
    bad = [(i, r) for i, r in enumerate(results) if not r[0]]
    assert not bad, f"{len(bad)} echoes differ, e.g. {bad[:5]}"
    assert sum(r[1] for r in results) > big << 20


def test_ipv6_and_address():
    if not _have_ipv6():
        pytest.skip("no IPv6 loopback")

    async def main():
        ln = gmprt.net.listen("::1", 0)
        host, port = ln.address
        assert host == "::1" and port > 0
        server = gmprt.go(_serve, ln)
        conn = await gmprt.net.dial("::1", port, timeout=LONG)
        assert conn.remote_address == ("::1", port)
        await conn.sendall(b"six")
        got = await conn.recv(timeout=LONG)
        conn.close()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"six"


def test_listen_port_zero_picks_a_port_and_needs_no_runtime():
    ln = gmprt.net.listen("127.0.0.1", 0)  # outside run(): registered lazily
    host, port = ln.address
    assert host == "127.0.0.1" and port > 0
    assert repr(ln).startswith("<gmprt.net.Listener 127.0.0.1:")

    async def main():
        server = gmprt.go(_serve, ln)
        conn = await gmprt.net.dial("localhost", port, timeout=LONG)
        await conn.sendall(b"hi")
        got = await conn.recv(timeout=LONG)
        conn.close()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"hi"
    assert ln.closed and ln.fileno() == -1


def test_address_in_use_and_reuse_port():
    ln = gmprt.net.listen("127.0.0.1", 0)
    port = ln.address[1]
    with pytest.raises(OSError) as e:
        gmprt.net.listen("127.0.0.1", port)
    assert e.value.errno == errno.EADDRINUSE
    ln.close()
    a = gmprt.net.listen("127.0.0.1", 0, reuse_port=True)
    b = gmprt.net.listen("127.0.0.1", a.address[1], reuse_port=True)
    assert a.address == b.address
    a.close()
    b.close()
    with pytest.raises(ValueError):
        gmprt.net.listen("127.0.0.1", 0, backlog=-1)


def test_half_close():
    async def handler(conn):
        with conn:
            data = b""
            while chunk := await conn.recv(timeout=LONG):
                data += chunk
            # The client's half-close ended our reads; our side still sends.
            await conn.sendall(b"got " + data)

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        server = gmprt.go(_serve, ln, handler)
        conn = await gmprt.net.dial(*ln.address, timeout=LONG)
        await conn.sendall(b"ping")
        conn.close_write()
        reply = b""
        while chunk := await conn.recv(timeout=LONG):
            reply += chunk
        with pytest.raises(BrokenPipeError):
            await conn.send(b"after close_write")
        conn.close()
        ln.close()
        await server
        return reply

    assert gmprt.run(main) == b"got ping"


def test_peer_reset_mid_stream():
    """A peer that resets (SO_LINGER 0) wakes the G parked in recv with
    ConnectionResetError; sending then fails with a ConnectionError."""
    seen = []

    async def handler(conn):
        with conn:
            try:
                while data := await conn.recv(timeout=LONG):
                    await conn.sendall(data)
                seen.append("eof")
            except ConnectionResetError as e:
                seen.append(e)
                try:
                    await conn.sendall(b"x" * 100_000)
                    seen.append("sent")
                except ConnectionError as e2:
                    seen.append(e2)

    def plain_client(addr):
        s = socket.create_connection(addr, timeout=LONG)
        s.sendall(b"hello")
        assert s.recv(100) == b"hello"
        time.sleep(0.1)  # the server G is parked in recv now
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        server = gmprt.go(_serve, ln, handler)
        t = threading.Thread(target=plain_client, args=(ln.address,))
        t.start()
        await _wait_thread(t)
        deadline = time.monotonic() + LONG
        while len(seen) < 2 and time.monotonic() < deadline:
            await gmprt.sleep(0.01)
        ln.close()
        await server

    gmprt.run(main)
    assert len(seen) == 2, seen
    assert isinstance(seen[0], ConnectionResetError)
    assert seen[0].errno == errno.ECONNRESET
    assert isinstance(seen[1], ConnectionError)


def test_refused_dial():
    port = _free_port()

    async def main():
        with pytest.raises(ConnectionRefusedError) as e:
            await gmprt.net.dial("127.0.0.1", port, timeout=LONG)
        assert e.value.errno == errno.ECONNREFUSED
        assert f"127.0.0.1:{port}" in str(e.value)

    gmprt.run(main)


def test_dial_timeout():
    """A listener with backlog 0 that never accepts: once its accept queue is
    full, the kernel drops new SYNs and a connect hangs."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    addr = full.getsockname()
    fillers = []
    try:
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(addr)
            fillers.append(s)
            _, w, _ = select.select([], [s], [], 0.3)
            if not w:
                break  # this connect hangs: the queue is full
        else:
            pytest.skip("the kernel never stopped completing connections")

        async def main():
            t0 = time.monotonic()
            with pytest.raises(gmprt.Timeout) as e:
                await gmprt.net.dial(*addr, timeout=0.2)
            assert isinstance(e.value, TimeoutError)
            assert "dial" in str(e.value)
            assert time.monotonic() - t0 < LONG
            return await _settled_counts()

        assert gmprt.run(main) == (0, 0)
    finally:
        for s in fillers:
            s.close()
        full.close()


def test_deadlines_raise_timeout_and_leave_the_conn_usable():
    done = []

    async def quiet(ln):
        with await ln.accept(timeout=LONG) as conn:
            # Say nothing until asked, then echo once, then read no more.
            data = await conn.recv(timeout=LONG)
            await conn.sendall(data)
            deadline = time.monotonic() + LONG
            while not done and time.monotonic() < deadline:
                await gmprt.sleep(0.01)

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        with pytest.raises(gmprt.Timeout):
            await ln.accept(timeout=0.05)
        server = gmprt.go(quiet, ln)
        conn = await gmprt.net.dial(*ln.address, timeout=LONG)
        with pytest.raises(gmprt.Timeout, match="recv timed out"):
            await conn.recv(timeout=0.05)
        with pytest.raises(gmprt.Timeout):
            await conn.recv(timeout=0)
        # The connection still works after a timeout.
        await conn.sendall(b"still here", timeout=LONG)
        assert await conn.recv(timeout=LONG) == b"still here"
        # A peer that does not read: sendall runs out of time.
        with pytest.raises(gmprt.Timeout, match="sendall timed out"):
            await conn.sendall(b"x" * (64 << 20), timeout=0.2)
        done.append(1)
        await server
        conn.close()
        ln.close()
        return await _settled_counts()

    assert gmprt.run(main) == (0, 0)


def test_bad_timeouts_and_data():
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        server = gmprt.go(_serve, ln)
        conn = await gmprt.net.dial(*ln.address, timeout=LONG)
        with pytest.raises(ValueError):
            conn.recv(timeout=-1)
        with pytest.raises(ValueError):
            conn.recv(0)
        with pytest.raises(TypeError, match="bytes-like"):
            conn.send("text")
        # bytearray and memoryview go through the buffer protocol.
        assert await conn.send(bytearray(b"ab")) == 2
        await conn.sendall(memoryview(b"cdef")[1:])
        assert await conn.send(b"") == 0
        got = b""
        while len(got) < 5:
            got += await conn.recv(timeout=LONG)
        conn.close()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"abdef"


def test_close_wakes_parked_gs_and_closed_errors():
    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)

        async def accept():
            return await ln.accept(timeout=LONG)

        accepter = gmprt.go(accept)
        conn = await gmprt.net.dial(*ln.address, timeout=LONG)
        peer = await accepter

        async def reader():
            return await conn.recv()

        r = gmprt.go(reader)
        await gmprt.sleep(0.05)  # parked in recv, no deadline
        assert not r.done()
        assert gmprt.stats()["netpoll_waiters"] >= 1
        conn.close()
        with pytest.raises(OSError) as e:
            await r
        assert e.value.errno == errno.EBADF and "closed" in str(e.value)
        with pytest.raises(OSError, match="send on a closed gmprt.net.Conn"):
            await conn.send(b"x")
        assert conn.closed and conn.fileno() == -1
        conn.close()  # idempotent
        # The peer sees EOF.
        assert await peer.recv(timeout=LONG) == b""
        peer.close()

        async def accept_forever():
            return await ln.accept()

        a2 = gmprt.go(accept_forever)
        await gmprt.sleep(0.05)
        ln.close()
        with pytest.raises(OSError, match="closed"):
            await a2

    gmprt.run(main)


def test_tokens_need_a_g():
    ln = gmprt.net.listen("127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="outside a gmprt G"):
        next(ln.accept().__await__())
    ln.close()


def test_wait_readable_writable_on_a_socketpair():
    a, b = socket.socketpair()
    a.setblocking(False)

    async def writer():
        await gmprt.sleep(0.05)
        b.send(b"ping")

    async def main():
        await gmprt.wait_writable(a, timeout=LONG)  # ready at once
        w = gmprt.go(writer)
        await gmprt.wait_readable(a, timeout=LONG)  # parks until the write
        await w
        data = a.recv(100)
        with pytest.raises(gmprt.Timeout, match="wait_readable timed out"):
            await gmprt.wait_readable(a.fileno(), timeout=0.05)
        # A plain fd number works too.
        b.send(b"pong")
        await gmprt.wait_readable(a.fileno(), timeout=LONG)
        data += a.recv(100)
        return data, *await _settled_counts()

    try:
        assert gmprt.run(main) == (b"pingpong", 0, 0)
    finally:
        a.close()
        b.close()
    with pytest.raises(ValueError):
        gmprt.wait_readable(-1)
    with pytest.raises(TypeError):
        gmprt.wait_readable("not an fd")


def test_many_gs_waiting_on_fds():
    pairs = [socket.socketpair() for _ in range(200)]

    async def waiter(s):
        await gmprt.wait_readable(s, timeout=LONG)
        return s.recv(10)

    async def main():
        gs = [gmprt.go(waiter, a) for a, _ in pairs]
        await gmprt.sleep(0.05)
        for i, (_, b) in enumerate(pairs):
            b.send(str(i).encode())
        return [await g for g in gs]

    try:
        assert gmprt.run(main) == [str(i).encode() for i in range(200)]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


_FD_SERVER = textwrap.dedent(
    """
    import resource, sys
    import gmprt

    resource.setrlimit(resource.RLIMIT_NOFILE, (__LIMIT__, __LIMIT__))

    async def handle(conn):
        with conn:
            while data := await conn.recv():
                await conn.sendall(data)

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        print(ln.address[1], flush=True)
        while True:
            gmprt.go(handle, await ln.accept())

    gmprt.run(main)
    """
)


def test_server_out_of_fds_keeps_serving():
    """With RLIMIT_NOFILE at 64 the server runs out of descriptors; accept
    logs once, backs off, and serves the waiting clients once some close."""
    limit = 64
    proc = subprocess.Popen(
        [sys.executable, "-c", _FD_SERVER.replace("__LIMIT__", str(limit))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], LONG)
        assert ready, "the server did not start"
        port = int(proc.stdout.readline())
        for _ in range(limit + 30):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=LONG))
        last = clients[-1]
        # The first clients are served.
        clients[0].sendall(b"first")
        assert clients[0].recv(100) == b"first"
        # The last one waits in the backlog: no descriptor to accept it with.
        last.sendall(b"last")
        last.settimeout(0.3)
        with pytest.raises(socket.timeout):
            last.recv(100)
        # Free descriptors: the server accepts it within its backoff (<= 1 s).
        for s in clients[:40]:
            s.close()
        last.settimeout(LONG)
        assert last.recv(100) == b"last"
        clients[-2].sendall(b"again")
        assert clients[-2].recv(100) == b"again"
    finally:
        for s in clients:
            s.close()
        proc.kill()
        _, err = proc.communicate(timeout=LONG)
    logged = [line for line in err.splitlines() if "retrying with backoff" in line]
    assert len(logged) == 1, err
    assert "Too many open files" in logged[0]


def test_rlimit_nofile_raised_to_hard_at_run():
    code = textwrap.dedent(
        """
        import resource, gmprt
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        gmprt.run(lambda: None)
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=LONG)
    assert out.stdout.strip() == "True", out.stderr


def test_each_run_gets_a_fresh_netpoller():
    # The netpoller's thread and epoll fd belong to one run(); a later run()
    # starts fresh ones, and stats read zeros in between.
    async def nap():
        await gmprt.sleep(0.01)
        return os.getpid()

    assert gmprt.run(nap) == os.getpid()
    s = gmprt.stats()
    assert (s["netpoll_waiters"], s["timers"]) == (0, 0)
    assert gmprt.run(nap) == os.getpid()
