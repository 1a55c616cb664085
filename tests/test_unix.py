"""gmprt.net over Unix domain stream sockets, and adopting sockets made
elsewhere with Conn.from_socket / Listener.from_socket.

Every wait is bounded (socket timeouts, `timeout=` on gmprt calls, and
"did not hang" limits); nothing asserts a timing beyond that.
"""

import errno
import fcntl
import gc
import os
import pathlib
import random
import shutil
import socket
import tempfile
import threading
import time

import gmprt
import pytest
from helpers import LONG
from helpers import echo as _echo
from helpers import serve as _serve


@pytest.fixture
def sockdir():
    """A short directory for socket files (sun_path holds 107 bytes, and
    pytest's tmp_path can be longer than that)."""
    d = tempfile.mkdtemp(prefix="gu-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _abstract(tag):
    return f"\0gmprt-test-{os.getpid()}-{tag}-{random.randrange(1 << 30)}"


async def _wait_thread(t):
    deadline = time.monotonic() + LONG
    while t.is_alive() and time.monotonic() < deadline:
        await gmprt.sleep(0.01)
    assert not t.is_alive(), "thread did not finish"


async def _roundtrip(conn, msg):
    """Send `msg` from a writer G, then half-close; read the echo to EOF."""

    async def writer():
        await conn.sendall(msg, timeout=LONG)
        conn.close_write()

    w = gmprt.go(writer)
    got = bytearray()
    while chunk := await conn.recv(1 << 16, timeout=LONG):
        got += chunk
    await w
    return bytes(got)


# ===== echo and addresses =====


def test_echo_over_a_path(procs, sockdir):
    """Echo over a socket file, sizes 1 B to 1 MiB (more than the socket
    buffers hold, so both sides park), and the addresses of every end."""
    path = os.path.join(sockdir, "echo.sock")
    seen = {}

    async def handler(conn):
        seen["server"] = (conn.local_address, conn.remote_address)
        await _echo(conn)

    async def main():
        ln = gmprt.net.listen_unix(path)
        assert ln.address == path
        server = gmprt.go(_serve, ln, handler)
        out = []
        for size in (1, 1000, 65536, 1 << 20):
            msg = random.Random(size).randbytes(size)
            conn = await gmprt.net.dial_unix(path, timeout=LONG)
            seen["client"] = (conn.local_address, conn.remote_address)
            out.append(await _roundtrip(conn, msg) == msg)
            conn.close()
        ln.close()
        await server
        return out

    assert gmprt.run(main, procs=procs) == [True] * 4
    assert seen["client"] == ("", path)
    assert seen["server"] == (path, "")
    assert not os.path.exists(path)


def test_path_like_and_bytes_paths(sockdir):
    p = pathlib.Path(sockdir) / "pl.sock"

    async def main():
        ln = gmprt.net.listen_unix(p)
        assert ln.address == str(p)
        server = gmprt.go(_serve, ln)
        a = await gmprt.net.dial_unix(os.fsencode(p), timeout=LONG)
        b = await gmprt.net.dial_unix(p, timeout=LONG)
        out = (await _roundtrip(a, b"bytes"), await _roundtrip(b, b"pathlike"))
        a.close()
        b.close()
        ln.close()
        await server
        return out

    assert gmprt.run(main) == (b"bytes", b"pathlike")


def test_abstract_namespace():
    """A leading NUL names the abstract namespace: no file; the address is
    bytes with the NUL, as Python's getsockname gives it."""
    name = _abstract("echo")

    async def main():
        ln = gmprt.net.listen_unix(name)
        assert ln.address == name.encode()
        assert not os.path.exists(name[1:])
        server = gmprt.go(_serve, ln)
        conn = await gmprt.net.dial_unix(name, timeout=LONG)
        assert conn.remote_address == name.encode()
        assert conn.local_address == ""
        got = await _roundtrip(conn, b"abstract")
        conn.close()
        # A Python socket reaches it too.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(LONG)
            s.connect(name)
            assert s.getpeername() == name.encode()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"abstract"
    # The name went with the socket: binding it again works.
    gmprt.net.listen_unix(name).close()


def test_the_empty_path_autobinds_an_abstract_name():
    ln = gmprt.net.listen_unix("")
    addr = ln.address
    assert isinstance(addr, bytes) and addr.startswith(b"\0") and len(addr) > 1

    async def main():
        server = gmprt.go(_serve, ln)
        conn = await gmprt.net.dial_unix(addr, timeout=LONG)
        got = await _roundtrip(conn, b"auto")
        conn.close()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"auto"


def test_repr(sockdir):
    path = os.path.join(sockdir, "repr.sock")
    ln = gmprt.net.listen_unix(path)
    assert repr(ln) == f"<gmprt.net.Listener unix {path}>"

    async def main():
        conn = await gmprt.net.dial_unix(path, timeout=LONG)
        r = repr(conn)
        conn.close()
        return r

    assert gmprt.run(main) == f"<gmprt.net.Conn unix (unnamed) -> {path}>"
    ln.close()
    assert repr(ln) == f"<gmprt.net.Listener unix {path} closed>"
    name = _abstract("repr")
    with gmprt.net.listen_unix(name) as ab:
        assert repr(ab) == f"<gmprt.net.Listener unix @{name[1:]}>"


# ===== the socket file =====


def test_socket_file_removed_on_close_and_on_collect(sockdir):
    path = os.path.join(sockdir, "gone.sock")
    ln = gmprt.net.listen_unix(path)
    assert os.path.exists(path)
    ln.close()
    assert not os.path.exists(path)
    ln.close()  # idempotent

    with gmprt.net.listen_unix(path):
        assert os.path.exists(path)
    assert not os.path.exists(path)

    ln = gmprt.net.listen_unix(path)
    del ln
    gc.collect()
    assert not os.path.exists(path)


def test_socket_file_not_removed_if_replaced(sockdir):
    """A file put in the socket file's place is not the listener's to remove:
    a regular file, or another process's socket bound to the same path."""
    path = os.path.join(sockdir, "replaced.sock")
    ln = gmprt.net.listen_unix(path)
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(b"mine")
    ln.close()
    with open(path, "rb") as f:
        assert f.read() == b"mine"
    os.unlink(path)

    ln = gmprt.net.listen_unix(path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    other.listen()
    ln.close()
    assert os.path.exists(path)
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(LONG)
        c.connect(path)  # still the other socket's
    other.close()


def test_address_in_use(sockdir):
    path = os.path.join(sockdir, "inuse.sock")
    ln = gmprt.net.listen_unix(path)
    with pytest.raises(OSError) as e:
        gmprt.net.listen_unix(path)
    assert e.value.errno == errno.EADDRINUSE
    assert path in str(e.value)
    ln.close()
    # A stale socket file (its socket closed without removing it), or any
    # other file: also EADDRINUSE; nothing is removed.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    with pytest.raises(OSError) as e:
        gmprt.net.listen_unix(path)
    assert e.value.errno == errno.EADDRINUSE
    assert os.path.exists(path)
    name = _abstract("inuse")
    with gmprt.net.listen_unix(name):
        with pytest.raises(OSError) as e:
            gmprt.net.listen_unix(name)
        assert e.value.errno == errno.EADDRINUSE


def test_bad_arguments(sockdir):
    with pytest.raises(TypeError):
        gmprt.net.listen_unix(3)
    with pytest.raises(ValueError):
        gmprt.net.listen_unix(os.path.join(sockdir, "a\0b"))
    with pytest.raises(ValueError):
        gmprt.net.listen_unix(os.path.join(sockdir, "b.sock"), backlog=-1)
    with pytest.raises(OSError):
        gmprt.net.listen_unix(os.path.join(sockdir, "x" * 200))
    with pytest.raises(FileNotFoundError):
        gmprt.net.listen_unix(os.path.join(sockdir, "no", "such", "dir.sock"))
    with pytest.raises(TypeError):
        gmprt.net.dial_unix(None)
    with pytest.raises(OSError):
        gmprt.net.dial_unix("/" + "x" * 200)


# ===== dial errors and waits =====


def test_dial_errors(sockdir):
    missing = os.path.join(sockdir, "missing.sock")
    stale = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)  # bound, never listening
    bound_closed = os.path.join(sockdir, "closed.sock")
    c = socket.socket(socket.AF_UNIX)
    c.bind(bound_closed)
    c.listen()
    c.close()  # the file stays

    async def main():
        with pytest.raises(FileNotFoundError) as e:
            await gmprt.net.dial_unix(missing, timeout=LONG)
        assert e.value.errno == errno.ENOENT
        assert missing in str(e.value)
        for p in (stale, bound_closed, _abstract("nobody")):
            with pytest.raises(ConnectionRefusedError) as e:
                await gmprt.net.dial_unix(p, timeout=LONG)
            assert e.value.errno == errno.ECONNREFUSED

    gmprt.run(main)
    s.close()


def _fill_backlog(path):
    """Nonblocking connects until the listener's backlog is full."""
    queued = []
    while True:
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            return queued
        queued.append(c)
        assert len(queued) < 4096, "the backlog never filled"


def test_dial_waits_out_a_full_backlog(procs, sockdir):
    """A dial to a listener whose backlog is full neither fails nor
    connects; it times out under its timeout, and connects once an accept
    makes room."""
    path = os.path.join(sockdir, "full.sock")
    ln = gmprt.net.listen_unix(path, backlog=0)
    queued = _fill_backlog(path)
    assert queued

    async def main():
        with pytest.raises(gmprt.Timeout):
            await gmprt.net.dial_unix(path, timeout=0.05)
        done = []

        async def dialer():
            conn = await gmprt.net.dial_unix(path, timeout=LONG)
            done.append(conn)

        g = gmprt.go(dialer)
        await gmprt.sleep(0.1)
        assert not done, "connected past a full backlog"
        first = await ln.accept(timeout=LONG)
        await g
        assert len(done) == 1
        # The dialed conn works once accepted in turn.
        accepted = [await ln.accept(timeout=LONG) for _ in range(len(queued))]
        for q in queued:
            q.close()
        conn = done[0]
        await conn.sendall(b"late")
        conn.close_write()
        got = None
        for a in accepted:
            data = await a.recv(timeout=LONG)
            if data:
                got = data
            a.close()
        first.close()
        conn.close()
        ln.close()
        return got

    assert gmprt.run(main, procs=procs) == b"late"


# ===== timeouts and close =====


def test_timeouts_leave_the_objects_usable(sockdir):
    path = os.path.join(sockdir, "to.sock")

    async def main():
        ln = gmprt.net.listen_unix(path)
        with pytest.raises(gmprt.Timeout):
            await ln.accept(timeout=0.02)
        conn = await gmprt.net.dial_unix(path, timeout=LONG)
        srv = await ln.accept(timeout=LONG)
        with pytest.raises(gmprt.Timeout):
            await srv.recv(timeout=0.02)
        await conn.sendall(b"after")
        got = await srv.recv(timeout=LONG)
        conn.close()
        srv.close()
        ln.close()
        return got

    assert gmprt.run(main) == b"after"


def test_close_wakes_gs_parked_in_accept_and_recv(procs, sockdir):
    path = os.path.join(sockdir, "wake.sock")

    async def main():
        ln = gmprt.net.listen_unix(path)
        conn = await gmprt.net.dial_unix(path, timeout=LONG)
        srv = await ln.accept(timeout=LONG)
        woke = []

        async def accept():
            try:
                await ln.accept(timeout=LONG)
            except OSError as e:
                woke.append(("accept", e.errno))

        async def recv():
            try:
                await srv.recv(timeout=LONG)
            except OSError as e:
                woke.append(("recv", e.errno))

        gs = [gmprt.go(accept), gmprt.go(recv)]
        deadline = time.monotonic() + LONG
        while gmprt.stats()["netpoll_waiters"] < 2 and time.monotonic() < deadline:
            await gmprt.sleep(0.005)
        ln.close()
        srv.close()
        for g in gs:
            await g
        conn.close()
        return sorted(woke)

    assert gmprt.run(main, procs=procs) == [("accept", errno.EBADF), ("recv", errno.EBADF)]
    assert not os.path.exists(path)


def test_half_close(sockdir):
    path = os.path.join(sockdir, "half.sock")

    async def handler(conn):
        with conn:
            data = b""
            while chunk := await conn.recv(timeout=LONG):
                data += chunk
            await conn.sendall(b"got " + data)

    async def main():
        ln = gmprt.net.listen_unix(path)
        server = gmprt.go(_serve, ln, handler)
        conn = await gmprt.net.dial_unix(path, timeout=LONG)
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


def test_peer_gone_is_broken_pipe_not_sigpipe(sockdir):
    """Sending to a closed Unix peer raises BrokenPipeError (MSG_NOSIGNAL):
    even with SIGPIPE at its default action, the process survives."""
    import signal

    path = os.path.join(sockdir, "pipe.sock")
    old = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:

        async def main():
            ln = gmprt.net.listen_unix(path)
            conn = await gmprt.net.dial_unix(path, timeout=LONG)
            (await ln.accept(timeout=LONG)).close()
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(100):
                    await conn.sendall(b"x" * 65536, timeout=LONG)
            conn.close()
            ln.close()

        gmprt.run(main)
    finally:
        signal.signal(signal.SIGPIPE, old)


# ===== interop with Python's own AF_UNIX sockets =====


def test_interop_with_python_sockets(procs, sockdir):
    """A Python AF_UNIX client against a gmprt listener, and a gmprt client
    against a Python AF_UNIX server (each in a thread)."""
    gpath = os.path.join(sockdir, "g.sock")
    ppath = os.path.join(sockdir, "p.sock")
    results = []
    psrv = socket.socket(socket.AF_UNIX)
    psrv.bind(ppath)
    psrv.listen()
    psrv.settimeout(LONG)

    def python_client():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(LONG)
                s.connect(gpath)
                msg = random.Random(1).randbytes(300_000)
                sender = threading.Thread(target=s.sendall, args=(msg,))
                sender.start()
                got = bytearray()
                while len(got) < len(msg):
                    chunk = s.recv(1 << 16)
                    assert chunk, "EOF from the gmprt server"
                    got += chunk
                sender.join(LONG)
                results.append(("client", bytes(got) == msg))
        except BaseException as e:
            results.append(("client", e))

    def python_server():
        try:
            c, addr = psrv.accept()
            with c:
                c.settimeout(LONG)
                results.append(("peer addr", addr))
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                c.sendall(data[::-1])
        except BaseException as e:
            results.append(("server", e))

    async def main():
        ln = gmprt.net.listen_unix(gpath)
        server = gmprt.go(_serve, ln)
        t1 = threading.Thread(target=python_client)
        t2 = threading.Thread(target=python_server)
        t1.start()
        t2.start()
        conn = await gmprt.net.dial_unix(ppath, timeout=LONG)
        got = await _roundtrip(conn, b"0123456789")
        conn.close()
        await _wait_thread(t1)
        await _wait_thread(t2)
        ln.close()
        await server
        return got

    assert gmprt.run(main, procs=procs) == b"9876543210"
    psrv.close()
    assert sorted(results, key=str) == sorted([("client", True), ("peer addr", "")], key=str)


# ===== many connections =====


def test_many_concurrent_clients_exactly_once(procs, sockdir):
    """200 clients at once, each with its own message; every byte comes
    back exactly once, on its own connection, and the server's count of
    bytes echoed matches."""
    path = os.path.join(sockdir, "many.sock")
    n = 200
    echoed = [0]
    accepted = [0]

    async def handler(conn):
        accepted[0] += 1
        with conn:
            while data := await conn.recv(65536, timeout=LONG):
                await conn.sendall(data, timeout=LONG)
                echoed[0] += len(data)

    connected = [0]

    async def client(i):
        msg = random.Random(i).randbytes(1 + (i * 997) % 40_000)
        conn = await gmprt.net.dial_unix(path, timeout=LONG)
        connected[0] += 1
        deadline = time.monotonic() + LONG
        while connected[0] < n and time.monotonic() < deadline:
            await gmprt.sleep(0.005)
        got = await _roundtrip(conn, msg)
        conn.close()
        return got == msg, len(msg)

    async def main():
        ln = gmprt.net.listen_unix(path, backlog=16)
        server = gmprt.go(_serve, ln, handler)
        gs = [gmprt.go(client, i) for i in range(n)]
        results = [await g for g in gs]
        ln.close()
        await server
        return results

    results = gmprt.run(main, procs=procs)
    assert connected[0] == n and accepted[0] == n
    assert all(ok for ok, _ in results), [i for i, (ok, _) in enumerate(results) if not ok]
    assert echoed[0] == sum(size for _, size in results)


# ===== from_socket =====


def test_from_socket_tcp_conn_and_listener():
    """A TCP listener made by socket.socket() (systemd style) and a TCP
    client socket, both adopted; the originals stay open after the gmprt
    objects close."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    addr = lsock.getsockname()
    ln = gmprt.net.Listener.from_socket(lsock)  # no runtime running
    assert ln.address == addr
    assert ln.fileno() != lsock.fileno()
    csock = socket.create_connection(addr, timeout=LONG)
    conn = gmprt.net.Conn.from_socket(csock)
    assert conn.local_address == csock.getsockname()
    assert conn.remote_address == addr

    async def main():
        server = gmprt.go(_serve, ln)
        got = await _roundtrip(conn, b"tcp adopted")
        conn.close()
        ln.close()
        await server
        return got

    assert gmprt.run(main) == b"tcp adopted"
    assert ln.closed and conn.closed
    # The originals are still open and usable (they share O_NONBLOCK, so
    # use them with a timeout).
    assert lsock.fileno() >= 0 and csock.fileno() >= 0
    lsock.settimeout(LONG)
    with socket.create_connection(addr, timeout=LONG) as late:
        a, _ = lsock.accept()
        with a:
            late.sendall(b"still")
            a.settimeout(LONG)
            assert a.recv(5) == b"still"
    csock.close()
    lsock.close()


def test_from_socket_unix_conn_and_listener_and_an_fd(sockdir):
    path = os.path.join(sockdir, "adopt.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen()
    ln = gmprt.net.Listener.from_socket(lsock.fileno())  # an int fd
    assert ln.address == path
    a, b = socket.socketpair()
    conn = gmprt.net.Conn.from_socket(a)
    assert conn.local_address == "" and conn.remote_address == ""
    assert repr(conn) == "<gmprt.net.Conn unix (unnamed) -> (unnamed)>"

    async def main():
        server = gmprt.go(_serve, ln)
        d = await gmprt.net.dial_unix(path, timeout=LONG)
        echoed = await _roundtrip(d, b"unix adopted")
        d.close()
        b.settimeout(LONG)
        b.sendall(b"pair")
        got = await conn.recv(timeout=LONG)
        await conn.sendall(b"back")
        conn.close()
        ln.close()
        await server
        return echoed, got

    assert gmprt.run(main) == (b"unix adopted", b"pair")
    assert b.recv(4) == b"back"
    # Adopted: the socket file is the original owner's, and stays.
    assert os.path.exists(path)
    # The original end still works after the gmprt Conn is closed.
    a.settimeout(LONG)
    b.sendall(b"again")
    assert a.recv(5) == b"again"
    a.sendall(b"reply")
    assert b.recv(5) == b"reply"
    for s in (a, b, lsock):
        s.close()


def test_from_socket_in_a_child_like_systemd(run_script):
    """A child process that inherits a listening socket as fd 3 (as systemd
    passes LISTEN_FDS) adopts it and serves."""
    code = r"""
        import os, socket, subprocess, sys, textwrap
        import gmprt

        parent = socket.socket()
        parent.bind(("127.0.0.1", 0))
        parent.listen()
        port = parent.getsockname()[1]
        child = textwrap.dedent('''
            import gmprt
            ln = gmprt.net.Listener.from_socket(3)
            async def main():
                conn = await ln.accept(timeout=20)
                await conn.sendall(await conn.recv(timeout=20))
                conn.close()
                ln.close()
            gmprt.run(main)
        ''')
        if parent.fileno() != 3:
            os.dup2(parent.fileno(), 3)
        p = subprocess.Popen([sys.executable, "-c", child], pass_fds=[3])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            c.sendall(b"socket activated")
            print(c.recv(100).decode())
        assert p.wait(timeout=30) == 0
    """
    r = run_script(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "socket activated"


def test_from_socket_wrong_kinds(sockdir):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            gmprt.net.Conn.from_socket(udp)
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            gmprt.net.Listener.from_socket(udp)
    with socket.socket() as fresh:
        with pytest.raises(ValueError, match="not connected"):
            gmprt.net.Conn.from_socket(fresh)
        with pytest.raises(ValueError, match="not listening"):
            gmprt.net.Listener.from_socket(fresh)
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        with pytest.raises(ValueError, match="listening"):
            gmprt.net.Conn.from_socket(lst)
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="not listening"):
            gmprt.net.Listener.from_socket(a)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as seq:
        with pytest.raises(ValueError, match="SOCK_SEQPACKET"):
            gmprt.net.Conn.from_socket(seq)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a socket"):
            gmprt.net.Conn.from_socket(r)
    finally:
        os.close(r)
        os.close(w)
    # Not an open descriptor, or not a descriptor at all.
    with pytest.raises(OSError) as e:
        gmprt.net.Conn.from_socket(r)
    assert e.value.errno == errno.EBADF
    with pytest.raises(TypeError):
        gmprt.net.Listener.from_socket("not a socket")
    # A refused socket was not touched: it is still the caller's, blocking.
    with socket.socket() as s:
        with pytest.raises(ValueError):
            gmprt.net.Conn.from_socket(s)
        assert fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK == 0
