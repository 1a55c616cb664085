"""gmprt.net: TCP, Unix stream sockets, UDP and TLS on the netpoller.

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
- ``await dial(host, port, *, timeout=None) -> Conn``: a name resolves
  without blocking a P and, with several addresses, is dialed with Happy
  Eyeballs (RFC 8305): IPv6 and IPv4 alternate, a new attempt every 250 ms
  or as soon as one fails, first to connect wins.
- ``await resolve(host, port=0, *, timeout=None) -> list[str]``: the
  addresses of a name, looked up in a sync G (``getaddrinfo`` blocks its M,
  never a P).
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
- Buffered reads, asyncio's ``StreamReader`` helpers on the same ``Conn``:
  ``await conn.readline(*, limit=65536)``, ``await conn.readuntil(sep,
  *, limit=65536)`` (the bytes up to and including ``sep``) and ``await
  conn.readexactly(n)``. The buffer is bounded: no separator within
  ``limit`` bytes raises :class:`LimitOverrunError` with the bytes kept
  (``recv`` returns them), and ``readexactly`` grows only as bytes arrive.
  EOF first raises :class:`IncompleteReadError` (``.partial``);
  ``readline`` returns the partial last line instead. A timeout or a cancel
  loses nothing: what arrived stays buffered. ``recv`` returns buffered
  bytes first, so the styles mix.

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
``Conn``, ``Listener`` or ``PacketConn``; closing one wakes the Gs blocked on it with that
error.
``TCP_NODELAY`` is on for every TCP connection. When the process runs out of
file descriptors, ``accept`` logs once to stderr and retries with backoff
(5 ms doubling to 1 s): the listener survives. ``gmprt.run()`` raises the
soft ``RLIMIT_NOFILE`` to the hard limit at start, as Go does.

UDP: a ``PacketConn`` sends and receives one datagram per call::

    async def echo(pc):
        with pc:
            while True:
                data, addr = await pc.recvfrom()
                await pc.sendto(data, addr)

- ``listen_udp(host, port, *, reuse_port=False) -> PacketConn``: bound,
  exchanges datagrams with any peer (``port=0`` picks a free port, see
  ``PacketConn.local_address``).
- ``dial_udp(host, port) -> PacketConn``: connected to one peer, bound to
  an ephemeral port. Not awaited: a UDP connect sends nothing.
- ``await PacketConn.recvfrom(max_bytes=65536, *, timeout=None) ->
  (bytes, (host, port))``, ``await PacketConn.sendto(data, (host, port), *,
  timeout=None) -> int``; connected: ``await PacketConn.recv(max_bytes=65536,
  *, timeout=None) -> bytes``, ``await PacketConn.send(data, *,
  timeout=None) -> int``; ``PacketConn.close()``, ``local_address``,
  ``remote_address`` (connected only), ``PacketConn.from_socket(sock)`` (on
  a dup of a UDP ``socket.socket``'s descriptor, like Go's
  ``FilePacketConn``).

UDP keeps datagram semantics: ``b""`` is an empty datagram, not an end of
stream; a datagram longer than ``max_bytes`` is truncated and the rest
discarded (the default, 64 KiB, truncates none); a send sends the whole
datagram or raises (``EMSGSIZE`` when too long). Datagrams may be lost,
duplicated or reordered, even on loopback under load. Several Gs may
receive on one socket; each datagram goes to exactly one. On a connected
socket, a datagram the peer's host refuses (ICMP port unreachable) makes
the next ``recv`` or ``send`` raise ``ConnectionRefusedError`` (Linux
semantics; a bound socket never sees these), and ``sendto`` an address
other than the peer raises ``OSError`` (``errno.EISCONN``), as in Go.

TLS (on the standard library's ``ssl``; OpenSSL does the crypto)::

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain("cert.pem", "key.pem")
    ln = gmprt.net.listen("0.0.0.0", 8443, ssl=ctx)   # a TLSListener
    conn = await ln.accept()                          # a TLSConn, handshake pending

    conn = await gmprt.net.dial_tls("example.com", 443, timeout=10)

- ``listen(host, port, *, backlog=1024, reuse_port=False, ssl=ctx) ->
  TLSListener``: ``await accept()`` returns a :class:`TLSConn` at once; its
  handshake runs on its first I/O or ``await conn.handshake()``, in the G
  that serves it, so a slow client never stalls ``accept``.
- ``await dial_tls(host, port, *, ssl=None, server_hostname=None,
  timeout=None) -> TLSConn``: ``ssl=None`` uses
  ``ssl.create_default_context()``; the handshake is done when it returns.
- ``await conn.start_tls(ctx, *, server_side=False, server_hostname=None,
  timeout=None) -> TLSConn`` upgrades a plain ``Conn`` (STARTTLS); the
  ``Conn`` then belongs to the ``TLSConn``.
- :class:`TLSConn` has ``recv``/``send``/``sendall``, the buffered
  ``readline``/``readuntil``/``readexactly``, ``await handshake()``,
  ``await shutdown()`` (two-way close_notify, then close), ``close()``,
  ``getpeercert()``, ``selected_alpn_protocol()``, ``version()``,
  ``cipher()``; ``recv`` returns ``b""`` at close_notify or at a bare TCP
  EOF (``ssl.SSLSocket``'s default ``suppress_ragged_eofs=True``). A
  certificate that does not verify raises ``ssl.SSLCertVerificationError``
  from the handshake; other TLS failures raise ``ssl.SSLError``.

For sockets made elsewhere, ``await gmprt.wait_readable(sock)`` and
``await gmprt.wait_writable(sock)`` park a G until any file descriptor is
ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from . import _gmprt
from ._dial import dial, resolve
from ._gmprt import Conn, Listener, PacketConn, dial_udp, dial_unix, listen_udp, listen_unix
from ._streams import IncompleteReadError, LimitOverrunError

if TYPE_CHECKING:
    import ssl as _ssl

    from ._tls import TLSConn, TLSListener, dial_tls

# The TLS names load `ssl` (about 40 ms, OpenSSL included) on first use,
# not at `import gmprt` (PEP 562).
_TLS_NAMES = frozenset({"TLSConn", "TLSListener", "dial_tls"})


def __getattr__(name: str) -> Any:
    if name in _TLS_NAMES:
        from . import _tls

        return getattr(_tls, name)
    raise AttributeError(f"module 'gmprt.net' has no attribute {name!r}")


__all__ = [
    "Conn",
    "IncompleteReadError",
    "LimitOverrunError",
    "Listener",
    "PacketConn",
    "TLSConn",
    "TLSListener",
    "dial",
    "dial_tls",
    "dial_udp",
    "dial_unix",
    "listen",
    "listen_udp",
    "listen_unix",
    "resolve",
]


@overload
def listen(
    host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False, ssl: None = None
) -> Listener: ...
@overload
def listen(
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    ssl: _ssl.SSLContext,
) -> TLSListener: ...
def listen(
    host: str,
    port: int,
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    ssl: _ssl.SSLContext | None = None,
) -> Listener | TLSListener:
    """Listen on ``host``:``port`` (IPv4 or IPv6; ``port=0`` picks a free
    one, see ``address``). Needs no running runtime.

    ``backlog`` is the kernel's accept queue; ``reuse_port`` sets
    ``SO_REUSEPORT`` (several listeners on one port). With ``ssl=ctx`` (a
    server ``ssl.SSLContext``) it returns a :class:`TLSListener`, whose
    ``accept`` returns :class:`TLSConn`; otherwise a plain :class:`Listener`.

    Raises:
        OSError: the address is in use or cannot be bound.
        TypeError: ``ssl`` is not an ``ssl.SSLContext``.
    """
    if ssl is None:
        return _gmprt.listen(host, port, backlog=backlog, reuse_port=reuse_port)
    import ssl as ssl_module

    from ._tls import TLSListener

    if not isinstance(ssl, ssl_module.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__name__}")
    ln = _gmprt.listen(host, port, backlog=backlog, reuse_port=reuse_port)
    return TLSListener(ln, ssl)
