"""gmprt.net: TCP and Unix stream sockets on the netpoller.

A G that waits on a socket parks on gmprt's netpoller (epoll, polled by the
scheduler's own threads as they look for work: there is no poller thread)
and costs no OS thread; the I/O itself is done in Rust::

    import gmprt

    async def handle(conn):
        with conn:
            while data := await conn.recv(65536):
                await conn.sendall(data)

    async def main():
        ln = gmprt.net.listen("127.0.0.1", 0)
        print("listening on", ln.address)
        while True:
            gmprt.go(handle, await ln.accept())

    gmprt.run(main)

- ``listen(host, port, *, backlog=1024, reuse_port=False) -> Listener``
  (IPv4 or IPv6; ``port=0`` picks a free port, see ``Listener.address``).
- ``await Listener.accept(*, timeout=None) -> Conn``; ``Listener.close()``.
- ``await dial(host, port, *, timeout=None) -> Conn``.
- ``listen_unix(path, *, backlog=1024) -> Listener`` and
  ``await dial_unix(path, *, timeout=None) -> Conn``: Unix domain stream
  sockets. ``path`` is a ``str``, ``bytes`` or ``os.PathLike``; a leading
  ``"\\0"`` names Linux's abstract namespace (no file). Closing the
  listener removes its socket file, if it is still the one it bound; an
  existing path (a stale socket file too) fails with ``EADDRINUSE``. A
  dial to a full backlog waits for room, under its ``timeout``.
- ``Conn.from_socket(sock)`` and ``Listener.from_socket(sock)`` adopt a
  TCP or Unix stream socket made elsewhere (a ``socket.socket``, anything
  with ``fileno()``, or an fd, such as one systemd passed): the descriptor
  is duplicated, so closing the gmprt object leaves ``sock`` open, but the
  duplicate shares ``O_NONBLOCK``, which gmprt sets. The wrong kind of
  socket raises ``ValueError``.
- ``await Conn.recv(max_bytes=65536, *, timeout=None) -> bytes`` (``b""`` at
  EOF), ``await Conn.send(data, *, timeout=None) -> int``,
  ``await Conn.sendall(data, *, timeout=None)``, ``Conn.close_write()``
  (half-close), ``Conn.close()``, ``Conn.local_address``,
  ``Conn.remote_address``.

Addresses (``Listener.address``, ``Conn.local_address``,
``Conn.remote_address``) are what Python's ``socket.getsockname()`` returns:
``(host, port)`` for TCP; for a Unix socket the path as a ``str`` (``""``
for an unnamed end, which a dialing end usually is) or ``bytes`` starting
with ``b"\\0"`` for an abstract name.

Deadlines: every blocking call takes ``timeout=`` in seconds, counted from
the call (``None``: no limit). When it passes the call raises
:class:`gmprt.Timeout` (a ``TimeoutError``) and the object stays usable.

Errors are Python's own: ``ConnectionRefusedError`` from ``dial`` (and
from ``dial_unix`` when nothing listens; ``FileNotFoundError`` when there
is no socket file), ``ConnectionResetError`` / ``BrokenPipeError`` when the
peer is gone, and ``OSError`` (``errno.EBADF``) for any call on a closed
``Conn`` or ``Listener``; closing one wakes the Gs blocked on it with that
error.
``TCP_NODELAY`` is on for every TCP connection. When the process runs out of
file descriptors, ``accept`` logs once to stderr and retries with backoff
(5 ms doubling to 1 s): the listener survives. ``gmprt.run()`` raises the
soft ``RLIMIT_NOFILE`` to the hard limit at start, as Go does.

For sockets made elsewhere, ``await gmprt.wait_readable(sock)`` and
``await gmprt.wait_writable(sock)`` park a G until any file descriptor is
ready.
"""

from ._gmprt import Conn, Listener, dial, dial_unix, listen, listen_unix
from ._streams import IncompleteReadError, LimitOverrunError

__all__ = [
    "Conn",
    "IncompleteReadError",
    "LimitOverrunError",
    "Listener",
    "dial",
    "dial_unix",
    "listen",
    "listen_unix",
]
