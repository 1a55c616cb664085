"""gmprt.net TLS: TLSConn over the stdlib ssl module, against gmprt itself,
the openssl CLI (s_server, s_client) and Python's ssl.SSLSocket.

The certificates are made once per session with the `openssl` CLI: a
throwaway CA, a server certificate for localhost / 127.0.0.1 signed by it,
and a second CA the clients do not trust. Every wait is bounded (`timeout=`
on gmprt calls, socket and subprocess timeouts); nothing asserts a timing.
"""

import errno
import hashlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time

import gmprt
import pytest
from gmprt import net
from helpers import LONG, spin_until
from helpers import echo as _echo
from helpers import free_port as _free_port
from helpers import serve as _serve

OPENSSL = shutil.which("openssl")

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")


def _openssl(*args, cwd):
    subprocess.run(
        [OPENSSL, *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=LONG,
        stdin=subprocess.DEVNULL,
    )


def _make_ca(d, name):
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=gmprt test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d, ca, name):
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / f"{name}.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    if OPENSSL is None:
        pytest.skip("the openssl CLI is not installed")
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_leaf(d, "ca", "server")
    _make_ca(d, "otherca")
    _make_leaf(d, "otherca", "stranger")
    return {
        "ca": str(d / "ca.pem"),
        "cert": str(d / "server.pem"),
        "key": str(d / "server.key"),
        "stranger_cert": str(d / "stranger.pem"),
        "stranger_key": str(d / "stranger.key"),
    }


def server_ctx(certs, *, cert="cert", key="key", version=None, alpn=None):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs[cert], certs[key])
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def client_ctx(certs, *, version=None, alpn=None):
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def _wait_thread(t):
    deadline = time.monotonic() + LONG
    while t.is_alive() and time.monotonic() < deadline:
        await gmprt.sleep(0.01)
    assert not t.is_alive(), "thread did not finish"


async def _pair(certs, **kw):
    """A connected (client, server) TLSConn pair, handshakes done."""
    ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs, **kw))
    host, port = ln.address
    dialing = gmprt.go(net.dial_tls, host, port, ssl=client_ctx(certs, **kw), timeout=LONG)
    server = await ln.accept(timeout=LONG)
    await server.handshake(timeout=LONG)
    client = await dialing
    ln.close()
    return client, server


# ----- gmprt <-> gmprt


def test_echo_gmprt_client_and_server(certs, procs):
    """50 gmprt TLS clients, 1 B to 200 KB messages, against one gmprt TLS
    echo server in the same run(); what was negotiated is seen by both."""
    sizes = [1, 100, 1000, 16 * 1024 + 1, 200_000]

    async def client(i, port):
        msg = random.Random(i).randbytes(sizes[i % len(sizes)])
        conn = await net.dial_tls("localhost", port, ssl=client_ctx(certs), timeout=LONG)
        async with conn:
            assert conn.version() == "TLSv1.3"
            assert conn.server_hostname == "localhost"
            assert not conn.server_side
            assert conn.getpeercert()["subject"] == ((("commonName", "localhost"),),)
            await conn.sendall(msg, timeout=LONG)
            got = await conn.readexactly(len(msg), timeout=LONG)
        assert conn.closed
        return got == msg

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs))
        assert isinstance(ln, net.TLSListener)
        assert "TLSListener" in repr(ln)
        srv = gmprt.go(_serve, ln)
        gs = [gmprt.go(client, i, ln.address[1]) for i in range(50)]
        results = [await g for g in gs]
        ln.close()
        await srv
        return results

    assert all(gmprt.run(main, procs=procs))


def test_plain_listen_unchanged_and_bad_ssl():
    ln = net.listen("127.0.0.1", 0)
    assert isinstance(ln, net.Listener)
    ln.close()
    with pytest.raises(TypeError):
        net.listen("127.0.0.1", 0, ssl="yes")


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_tls_versions_and_alpn(certs, version):
    """Both sides see the version, the cipher and the ALPN protocol agreed on."""
    want = "TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3"

    async def main():
        ln = net.listen(
            "127.0.0.1", 0, ssl=server_ctx(certs, version=version, alpn=["h2", "http/1.1"])
        )
        dialing = gmprt.go(
            net.dial_tls,
            "127.0.0.1",
            ln.address[1],
            ssl=client_ctx(certs, alpn=["http/1.1", "spdy/3"]),
            timeout=LONG,
        )
        s = await ln.accept(timeout=LONG)
        # Nothing runs the server's handshake until its first I/O.
        assert s.server_side and not s.handshake_done and s.version() is None
        with pytest.raises(ValueError):
            s.getpeercert()
        await s.handshake(timeout=LONG)
        c = await dialing
        out = (
            c.version(),
            s.version(),
            c.selected_alpn_protocol(),
            s.selected_alpn_protocol(),
            c.cipher()[1] if c.cipher() else None,
            s.getpeercert(),  # the client sent no certificate
            len(c.getpeercert(binary_form=True)) > 100,
        )
        await c.sendall(b"ping", timeout=LONG)
        assert await s.recv(timeout=LONG) == b"ping"
        c.close()
        s.close()
        ln.close()
        return out

    v1, v2, a1, a2, proto, peer, der = gmprt.run(main)
    assert v1 == v2 == want
    assert a1 == a2 == "http/1.1"
    assert proto in (want, "TLSv1/SSLv3")
    assert peer is None
    assert der


# ----- certificate errors


@pytest.mark.parametrize("case", ["wrong-hostname", "untrusted-ca"])
def test_bad_certificate(certs, case):
    """The client's handshake raises SSLCertVerificationError; the server's
    sees the alert as an SSLError; nothing hangs."""
    if case == "wrong-hostname":
        sctx, hostname = server_ctx(certs), "example.com"
    else:
        sctx, hostname = server_ctx(certs, cert="stranger_cert", key="stranger_key"), None
    server_err = []

    async def handler(conn):
        try:
            await conn.handshake(timeout=LONG)
        except (ssl.SSLError, OSError) as e:
            server_err.append(e)
        finally:
            conn.close()

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=sctx)
        srv = gmprt.go(_serve, ln, handler)
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await net.dial_tls(
                "127.0.0.1", ln.address[1], ssl=client_ctx(certs), server_hostname=hostname,
                timeout=LONG,
            )  # fmt: skip
        await spin_until(lambda: server_err)
        ln.close()
        await srv
        return ei.value

    err = gmprt.run(main)
    assert err.verify_code != 0
    assert isinstance(server_err[0], ssl.SSLError)


# ----- handshakes do not stall accept


def test_client_that_never_handshakes_does_not_stall_accept(certs):
    """A raw TCP client that connects and sends nothing: the server's accept
    goes on, other TLS clients are served, and the silent one's handshake
    times out in its own G."""
    outcome = []

    async def handler(conn):
        try:
            await conn.handshake(timeout=1.0)
        except gmprt.Timeout:
            outcome.append("timeout")
            conn.close()
            return
        await _echo(conn)

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs))
        srv = gmprt.go(_serve, ln, handler)
        silent = [await net.dial("127.0.0.1", ln.address[1], timeout=LONG) for _ in range(3)]
        for i in range(3):
            c = await net.dial_tls("localhost", ln.address[1], ssl=client_ctx(certs), timeout=LONG)
            await c.sendall(b"hi %d" % i, timeout=LONG)
            assert await c.recv(timeout=LONG) == b"hi %d" % i
            c.close()
        await spin_until(lambda: len(outcome) == 3)
        for s in silent:
            assert await s.recv(timeout=LONG) == b"", "the server closed the silent client"
            s.close()
        ln.close()
        await srv
        return outcome

    assert gmprt.run(main) == ["timeout"] * 3


# ----- the openssl CLI


def _popen(args, **kw):
    return subprocess.Popen(
        [OPENSSL, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@needs_openssl
def test_gmprt_client_vs_openssl_s_server(certs):
    """openssl s_server -rev (reverses each line) serves a gmprt client."""
    port = _free_port()
    proc = _popen(
        ["s_server", "-accept", f"127.0.0.1:{port}", "-cert", certs["cert"], "-key", certs["key"],
         "-rev", "-naccept", "1"]
    )  # fmt: skip

    async def main():
        deadline = time.monotonic() + LONG
        while True:
            try:
                conn = await net.dial_tls("localhost", port, ssl=client_ctx(certs), timeout=LONG)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, "s_server exited"
                assert time.monotonic() < deadline, "s_server never listened"
                await gmprt.sleep(0.05)
        with conn:
            await conn.sendall(b"hello gmprt\n", timeout=LONG)
            # -rev sends a banner line first; the reversed line comes after.
            lines = []
            while b"trpmg olleh" not in b"".join(lines):
                line = await conn.readline(timeout=LONG)
                assert line, f"EOF before the reply: {lines!r}"
                lines.append(line)
            return conn.version(), lines

    try:
        version, lines = gmprt.run(main)
    finally:
        proc.kill()
        proc.communicate(timeout=LONG)
    assert version == "TLSv1.3"
    assert lines[-1].strip() == b"trpmg olleh"


@needs_openssl
def test_gmprt_server_vs_openssl_s_client(certs):
    """openssl s_client verifies gmprt's certificate, sends a line and reads
    the reply; gmprt's shutdown() ends its session cleanly."""
    seen = []

    async def handler(conn):
        line = await conn.readline(timeout=LONG)
        seen.append(line)
        await conn.sendall(line.upper(), timeout=LONG)
        await conn.shutdown(timeout=LONG)

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs))
        srv = gmprt.go(_serve, ln, handler)
        proc = _popen(
            ["s_client", "-connect", f"127.0.0.1:{ln.address[1]}", "-CAfile", certs["ca"],
             "-verify_return_error", "-verify_hostname", "localhost", "-quiet"]
        )  # fmt: skip
        proc.stdin.write(b"openssl says hi\n")
        proc.stdin.flush()
        out = []

        def wait():
            out.append(proc.communicate(timeout=LONG))

        t = threading.Thread(target=wait)
        t.start()
        await _wait_thread(t)
        ln.close()
        await srv
        return proc.returncode, out[0]

    rc, (stdout, stderr) = gmprt.run(main)
    assert seen == [b"openssl says hi\n"]
    assert b"OPENSSL SAYS HI" in stdout, stderr
    assert rc == 0, stderr


# ----- Python's ssl.SSLSocket in a thread


def test_gmprt_server_vs_python_sslsocket(certs, procs):
    """A blocking ssl.SSLSocket client: echo, then unwrap() (its close_notify,
    answered by gmprt's) succeeds."""
    result = []

    def client(port):
        try:
            ctx = client_ctx(certs, alpn=["x"])
            with socket.create_connection(("127.0.0.1", port), timeout=LONG) as raw:
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(b"from python")
                got = s.recv(100)
                s.unwrap()  # raises unless gmprt answers the close_notify
                s.close()
                result.append((got, "unwrapped"))
        except BaseException as e:
            result.append(e)

    async def handler(conn):
        data = await conn.recv(timeout=LONG)
        await conn.sendall(data, timeout=LONG)
        assert await conn.recv(timeout=LONG) == b"", "close_notify reads as EOF"
        await conn.shutdown(timeout=LONG)
        result.append(conn.selected_alpn_protocol())

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs, alpn=["x"]))
        srv = gmprt.go(_serve, ln, handler)
        t = threading.Thread(target=client, args=(ln.address[1],))
        t.start()
        await _wait_thread(t)
        await spin_until(lambda: len(result) == 2)
        ln.close()
        await srv

    gmprt.run(main, procs=procs)
    assert (b"from python", "unwrapped") in result
    assert "x" in result


def test_gmprt_client_vs_python_sslsocket(certs, procs):
    """A blocking ssl.SSLSocket server: gmprt's shutdown() sends close_notify,
    the server's unwrap() succeeds, and gmprt receives the server's."""
    ready = threading.Event()
    box = {}

    def server():
        try:
            ctx = server_ctx(certs)
            with socket.create_server(("127.0.0.1", 0)) as ls:
                ls.settimeout(LONG)
                box["port"] = ls.getsockname()[1]
                ready.set()
                raw, _ = ls.accept()
                raw.settimeout(LONG)
                s = ctx.wrap_socket(raw, server_side=True)
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    s.sendall(data)
                plain = s.unwrap()
                box["unwrapped"] = True
                plain.close()
        except BaseException as e:
            box["error"] = e
            ready.set()

    async def main():
        t = threading.Thread(target=server)
        t.start()
        deadline = time.monotonic() + LONG
        while not ready.is_set():
            assert time.monotonic() < deadline, "the SSLSocket server never got ready"
            await gmprt.sleep(0.01)
        c = await net.dial_tls("127.0.0.1", box["port"], ssl=client_ctx(certs), timeout=LONG)
        msg = os.urandom(300_000)
        w = gmprt.go(c.sendall, msg, timeout=LONG)
        got = await c.readexactly(len(msg), timeout=LONG)
        await w
        await c.shutdown(timeout=LONG)
        assert c.closed
        await _wait_thread(t)
        return got == msg

    assert gmprt.run(main, procs=procs)
    assert "error" not in box, box.get("error")
    assert box.get("unwrapped")


# ----- STARTTLS


def test_start_tls_after_plaintext(certs, procs):
    """A plaintext exchange, then both ends upgrade with Conn.start_tls."""

    async def server(ln):
        conn = await ln.accept(timeout=LONG)
        assert await conn.recv(timeout=LONG) == b"STARTTLS\r\n"
        await conn.sendall(b"220 go ahead\r\n", timeout=LONG)
        tls = await conn.start_tls(server_ctx(certs), server_side=True, timeout=LONG)
        assert isinstance(tls, net.TLSConn) and tls.raw is conn
        await _echo(tls)

    async def main():
        ln = net.listen("127.0.0.1", 0)
        srv = gmprt.go(server, ln)
        conn = await net.dial("127.0.0.1", ln.address[1], timeout=LONG)
        await conn.sendall(b"STARTTLS\r\n", timeout=LONG)
        assert await conn.recv(timeout=LONG) == b"220 go ahead\r\n"
        tls = await conn.start_tls(client_ctx(certs), server_hostname="localhost", timeout=LONG)
        await tls.sendall(b"secret", timeout=LONG)
        got = await tls.recv(timeout=LONG)
        tls.close()
        assert conn.closed, "the raw Conn belongs to the TLSConn"
        await srv
        ln.close()
        return got, tls.version()

    assert gmprt.run(main, procs=procs) == (b"secret", "TLSv1.3")


def test_start_tls_over_a_unix_socket(certs, tmp_path):
    """TLS runs over any Conn: here a Unix socket from listen_unix/dial_unix."""
    path = str(tmp_path / "tls.sock")

    async def server(ln):
        conn = await ln.accept(timeout=LONG)
        tls = await conn.start_tls(server_ctx(certs), server_side=True, timeout=LONG)
        await _echo(tls)

    async def main():
        with net.listen_unix(path) as ln:
            srv = gmprt.go(server, ln)
            conn = await net.dial_unix(path, timeout=LONG)
            tls = await conn.start_tls(client_ctx(certs), server_hostname="localhost", timeout=LONG)
            assert tls.remote_address == path and "unix" in repr(tls)
            await tls.sendall(b"over unix", timeout=LONG)
            got = await tls.recv(timeout=LONG)
            tls.close()
            await srv
            return got

    assert gmprt.run(main) == b"over unix"


# ----- buffered reads


def test_buffered_reads(certs):
    async def main():
        c, s = await _pair(certs)
        await c.sendall(b"line one\nline two\r\nABCD" + b"x" * 100 + b"!tail", timeout=LONG)
        assert await s.readline(timeout=LONG) == b"line one\n"
        assert await s.readuntil(b"\r\n", timeout=LONG) == b"line two\r\n"
        assert await s.readexactly(4, timeout=LONG) == b"ABCD"
        # No separator within the limit: the data stays buffered.
        with pytest.raises(net.LimitOverrunError) as ei:
            await s.readuntil(b"!", limit=50, timeout=LONG)
        assert ei.value.consumed >= 50
        with pytest.raises(net.LimitOverrunError):
            await s.readline(limit=10, timeout=LONG)
        assert await s.recv(10, timeout=LONG) == b"x" * 10, "recv returns buffered bytes first"
        assert await s.readuntil(b"!", limit=1000, timeout=LONG) == b"x" * 90 + b"!"
        assert await s.readexactly(4, timeout=LONG) == b"tail"
        # A huge n allocates only what came; EOF ends it.
        await c.sendall(b"partial", timeout=LONG)
        # close_notify, and c reads on (the server's session tickets, then its
        # close_notify): a socket closed with unread bytes would send a RST,
        # which can beat the close_notify to s.
        closing = gmprt.go(c.shutdown, timeout=LONG)
        with pytest.raises(net.IncompleteReadError) as ei:
            await s.readexactly(1 << 40, timeout=LONG)
        assert ei.value.partial == b"partial" and ei.value.expected == 1 << 40
        assert await s.readline(timeout=LONG) == b""
        with pytest.raises(net.IncompleteReadError) as ei:
            await s.readuntil(b"\n", timeout=LONG)
        assert ei.value.partial == b"" and ei.value.expected is None
        assert await s.recv(timeout=LONG) == b""
        s.close()
        await closing

    gmprt.run(main)


def test_readline_partial_at_eof_and_readuntil_incomplete(certs):
    async def main():
        c, s = await _pair(certs)
        await c.sendall(b"no newline", timeout=LONG)
        closing = [gmprt.go(c.shutdown, timeout=LONG)]  # see test_buffered_reads
        assert await s.readline(timeout=LONG) == b"no newline"
        c2, s2 = await _pair(certs)
        await c2.sendall(b"abc", timeout=LONG)
        closing.append(gmprt.go(c2.shutdown, timeout=LONG))
        with pytest.raises(net.IncompleteReadError) as ei:
            await s2.readuntil(b"\n", timeout=LONG)
        s.close()
        s2.close()
        for g in closing:
            await g
        return ei.value.partial

    assert gmprt.run(main) == b"abc"


# ----- large transfers, timeouts, cancel, close


def test_large_transfer_concurrent_reader_and_writer(certs, procs):
    """8 MiB each way at once, a reader and a writer G on each end; hashes match."""
    size = 8 << 20

    async def pump(conn, data):
        view = memoryview(data)
        for i in range(0, len(data), 100_003):
            await conn.sendall(view[i : i + 100_003], timeout=LONG)

    async def drain(conn, n):
        h = hashlib.sha256()
        got = 0
        while got < n:
            chunk = await conn.recv(1 << 20, timeout=LONG)
            assert chunk, "early EOF"
            h.update(chunk)
            got += len(chunk)
        return h.hexdigest()

    async def main():
        c, s = await _pair(certs)
        a, b = random.Random(1).randbytes(size), random.Random(2).randbytes(size)
        gs = [
            gmprt.go(pump, c, a),
            gmprt.go(pump, s, b),
            gmprt.go(drain, s, size),
            gmprt.go(drain, c, size),
        ]
        _, _, at_s, at_c = [await g for g in gs]
        c.close()
        s.close()
        return at_s == hashlib.sha256(a).hexdigest(), at_c == hashlib.sha256(b).hexdigest()

    assert gmprt.run(main, procs=procs) == (True, True)


def test_timeouts_keep_the_connection_usable(certs):
    async def main():
        c, s = await _pair(certs)
        with pytest.raises(gmprt.Timeout):
            await s.recv(timeout=0.05)
        # Half a line: readline times out, the half stays buffered.
        await c.sendall(b"half", timeout=LONG)
        with pytest.raises(gmprt.Timeout):
            await s.readline(timeout=0.2)
        await c.sendall(b" and half\n", timeout=LONG)
        assert await s.readline(timeout=LONG) == b"half and half\n"
        with pytest.raises(ValueError):
            await s.recv(timeout=-1)
        # A sendall that cannot finish (the peer does not read): a prefix of
        # the data was encrypted, and what of it did not leave stays queued
        # and goes out first with the next send: the stream stays whole.
        big = random.Random(3).randbytes(16 << 20)
        with pytest.raises(gmprt.Timeout):
            await c.sendall(big, timeout=0.3)

        async def read_to_eof():
            got = bytearray()
            while chunk := await s.recv(1 << 20, timeout=LONG):
                got += chunk
            s.close()
            return bytes(got)

        r = gmprt.go(read_to_eof)
        await c.sendall(b"MARK", timeout=LONG)
        await c.shutdown(timeout=LONG)
        got = await r
        assert got.endswith(b"MARK")
        assert 0 < len(got) - 4 < len(big)
        assert got[:-4] == big[: len(got) - 4]

    gmprt.run(main)


def test_cancel_a_g_parked_in_tls_recv(certs, procs):
    async def main():
        c, s = await _pair(certs)
        started = []

        async def reader():
            started.append(1)
            return await s.recv(timeout=LONG)

        g = gmprt.go(reader)
        await spin_until(lambda: started)
        await gmprt.sleep(0.05)
        assert g.cancel("stop") is True
        with pytest.raises(gmprt.Cancelled):
            await g.wait(timeout=LONG)
        # Nothing lost, nothing stuck: the next reader gets the data.
        await c.sendall(b"after cancel", timeout=LONG)
        assert await s.recv(timeout=LONG) == b"after cancel"
        with gmprt.move_on_after(0.05):
            await s.readexactly(100, timeout=LONG)
        await c.sendall(b"x" * 100, timeout=LONG)
        assert await s.readexactly(100, timeout=LONG) == b"x" * 100
        c.close()
        s.close()

    gmprt.run(main, procs=procs)


def test_close_wakes_readers_and_closed_errors(certs):
    async def main():
        c, s = await _pair(certs)
        g = gmprt.go(s.recv, timeout=LONG)
        await gmprt.sleep(0.05)
        s.close()
        s.close()  # idempotent
        with pytest.raises(OSError) as e1:
            await g
        with pytest.raises(OSError) as e2:
            await s.recv(timeout=LONG)
        with pytest.raises(OSError) as e3:
            await s.sendall(b"x", timeout=LONG)
        with pytest.raises(OSError):
            await s.readline(timeout=LONG)
        assert s.closed and "closed" in repr(s)
        assert s.fileno() == -1
        assert await c.recv(timeout=LONG) == b"", "the peer sees EOF"
        c.close()
        return e1.value.errno, e2.value.errno, e3.value.errno

    assert gmprt.run(main) == (errno.EBADF,) * 3


def test_handshake_eof_and_context_managers(certs):
    """A peer that closes mid-handshake: SSLError (SSLEOFError), no hang."""

    async def main():
        ln = net.listen("127.0.0.1", 0, ssl=server_ctx(certs))
        raw = await net.dial("127.0.0.1", ln.address[1], timeout=LONG)
        s = await ln.accept(timeout=LONG)
        raw.close()
        with s, pytest.raises(ssl.SSLError):
            await s.handshake(timeout=LONG)
        assert s.closed
        c, s2 = await _pair(certs)

        async def peer():
            got = [await s2.recv(timeout=LONG), await s2.recv(timeout=LONG)]
            s2.close()  # sends close_notify, which c's shutdown waits for
            return got

        p = gmprt.go(peer)
        async with c:
            assert "TLSv1.3" in repr(c) and "client" in repr(c)
            await c.sendall(b"x", timeout=LONG)
        assert c.closed
        assert await p == [b"x", b""]
        ln.close()

    gmprt.run(main)


def test_client_certificate_seen_by_the_server(certs):
    """Mutual TLS: the server requires a client certificate and sees it in
    getpeercert(); a client without one fails the handshake."""

    async def main():
        sctx = server_ctx(certs)
        sctx.verify_mode = ssl.CERT_REQUIRED
        sctx.load_verify_locations(certs["ca"])
        ln = net.listen("127.0.0.1", 0, ssl=sctx)
        cctx = client_ctx(certs)
        cctx.load_cert_chain(certs["cert"], certs["key"])
        dialing = gmprt.go(net.dial_tls, "localhost", ln.address[1], ssl=cctx, timeout=LONG)
        s = await ln.accept(timeout=LONG)
        await s.handshake(timeout=LONG)
        c = await dialing
        subject = s.getpeercert()["subject"]
        c.close()
        s.close()
        # No client certificate: the server's handshake fails; in TLS 1.3 the
        # client learns it at its first read.
        c2 = gmprt.go(net.dial_tls, "localhost", ln.address[1], ssl=client_ctx(certs), timeout=LONG)
        s2 = await ln.accept(timeout=LONG)
        with pytest.raises(ssl.SSLError):
            await s2.handshake(timeout=LONG)
        s2.close()
        c2 = await c2
        with pytest.raises((ssl.SSLError, OSError)):
            await c2.recv(timeout=LONG)
        c2.close()
        ln.close()
        return subject

    assert gmprt.run(main) == ((("commonName", "localhost"),),)


def test_concurrent_writers_keep_records_whole(certs, procs):
    """Four Gs sendall on one TLSConn at once: every length-prefixed frame
    arrives whole (records are never interleaved mid-way), each writer's in
    its order."""
    per, writers = 300, 4

    async def writer(conn, w):
        for i in range(per):
            body = b"%d:%d;" % (w, i) * random.Random(w * per + i).randint(1, 400)
            await conn.sendall(len(body).to_bytes(4, "big") + body, timeout=LONG)

    async def main():
        c, s = await _pair(certs)
        gs = [gmprt.go(writer, c, w) for w in range(writers)]
        seen = {w: -1 for w in range(writers)}
        for _ in range(per * writers):
            n = int.from_bytes(await s.readexactly(4, timeout=LONG), "big")
            body = await s.readexactly(n, timeout=LONG)
            unit = body.split(b";", 1)[0] + b";"
            assert body == unit * (n // len(unit)), "a frame was torn"
            w, i = map(int, unit[:-1].split(b":"))
            assert i == seen[w] + 1, "a writer's frames out of order"
            seen[w] = i
        for g in gs:
            await g
        c.close()
        s.close()
        return seen

    assert gmprt.run(main, procs=procs) == {w: per - 1 for w in range(writers)}
