"""Helpers shared by the test modules."""

import socket

import gmprt

# Cap for polling loops that spin on `await gmprt.sleep(0)`: large enough
# never to be reached by a working runtime, small enough to end a broken one.
SPIN_CAP = 5_000_000


async def spin_until(pred, cap=SPIN_CAP):
    """Yield until pred() is true; fail (not hang) after `cap` yields."""
    for _ in range(cap):
        if pred():
            return
        await gmprt.sleep(0)
    raise AssertionError("condition not reached: a G that should run never did")


# Seconds any one socket wait in the tests may take: "did not hang".
LONG = 20


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def have_ipv6():
    """Whether ::1 can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


async def echo(conn):
    """Echoes a stream connection (plain or TLS) until EOF, then closes it."""
    with conn:
        while data := await conn.recv(65536, timeout=LONG):
            await conn.sendall(data, timeout=LONG)


async def serve(ln, handler=echo):
    """Accepts until the listener closes, a G of ``handler`` per connection."""
    while True:
        try:
            conn = await ln.accept()
        except OSError:  # closed
            return
        gmprt.go(handler, conn)


def http_get(url, timeout=LONG):
    """A real HTTP client (urllib), for a sync G or a thread: (status,
    content type, body bytes); an HTTP error status is returned, not
    raised."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()
