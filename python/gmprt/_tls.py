"""TLS for gmprt.net, on the standard library's ``ssl`` module.

A :class:`TLSConn` drives an ``ssl.SSLObject`` over two ``ssl.MemoryBIO``
(the ``ctx.wrap_bio`` API asyncio uses) and moves the ciphertext with the
raw :class:`gmprt.net.Conn`'s ``recv`` and ``send``, so a G waiting for TLS
data parks on the netpoller like any other. OpenSSL does the crypto; this
module only shuttles bytes.

Concurrency: one G may receive while another sends. Gs run on several OS
threads, and ``SSLObject`` calls release the GIL inside OpenSSL, so every
call on the ``SSLObject`` and its BIOs happens under a ``threading.Lock``
(held only for the in-memory call, never across a wait); readers are queued
on one :class:`gmprt.Mutex` and writers on another, so ciphertext goes out in
the order it was made and comes in in the order it arrived.

Nothing is lost on a timeout or a cancel: a read that stops while waiting
keeps what was decrypted in the buffer, and ciphertext that a timed-out send
could not push stays queued and goes out first with the next send (TLS
records cannot be dropped half-way without breaking the stream).
"""

from __future__ import annotations

import errno
import os
import ssl as _ssl
import threading
from time import monotonic
from types import TracebackType
from typing import Any, Literal, overload

from ._dial import dial
from ._gmprt import Conn, Listener, Mutex
from ._streams import IncompleteReadError, LimitOverrunError

__all__ = ["TLSConn", "TLSListener", "dial_tls", "start_tls"]

_WantRead = _ssl.SSLWantReadError
_ZeroReturn = _ssl.SSLZeroReturnError
_EOF = _ssl.SSLEOFError
# Ciphertext read from the socket at once, and plaintext encrypted at once by a
# send (bounds the ciphertext a large sendall holds in memory).
_RAW_READ = 65536
_WRITE_CHUNK = 256 * 1024
_LINE_LIMIT = 65536
# The most one recv returns: a TLS record holds at most 16 KiB, and
# SSLObject.read(n) allocates n bytes before it knows how many came.
_READ_CAP = 256 * 1024


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "TLS connection is closed")


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(
            "timeout must be a number of seconds >= 0 (math.inf or None for no limit), "
            f"got {timeout!r}"
        )
    return monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - monotonic()
    return left if left > 0.0 else 0.0


class TLSConn:
    """A TLS connection over a :class:`gmprt.net.Conn`: from
    :func:`gmprt.net.dial_tls`, :meth:`TLSListener.accept` or
    :meth:`gmprt.net.Conn.start_tls`.

    The same awaitable methods as a plain ``Conn`` (``recv``, ``send``,
    ``sendall``, with ``timeout=`` in seconds raising :class:`gmprt.Timeout`)
    plus the buffered reads (``readline``, ``readuntil``, ``readexactly``).
    The handshake runs on the first ``recv``/``send`` if
    :meth:`handshake` was not awaited first (as Go's ``tls.Conn`` does).

    EOF: ``recv`` returns ``b""`` once the peer sent close_notify, and also
    when the TCP stream ends without one (a "ragged" EOF), as
    ``ssl.SSLSocket`` does with its default ``suppress_ragged_eofs=True``.

    Closing: :meth:`close` sends close_notify if it can without waiting, then
    closes the socket; ``await`` :meth:`shutdown` does the clean two-way
    close_notify exchange first. ``with`` and ``async with`` close on exit
    (``async with`` through :meth:`shutdown`, bounded by 5 s).

    Errors: ``ssl.SSLCertVerificationError`` from the handshake for a
    certificate that does not verify, ``ssl.SSLError`` for a TLS alert or a
    protocol error, :class:`gmprt.Timeout` when ``timeout`` passes (the
    connection stays usable), ``OSError`` (EBADF) once closed, and the raw
    connection's ``ConnectionResetError`` / ``BrokenPipeError``.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_conn",
        "_eof",
        "_handshaken",
        "_in",
        "_lock",
        "_out",
        "_pending",
        "_rmu",
        "_ssl",
        "_wmu",
    )

    def __init__(
        self,
        conn: Conn,
        context: _ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        if not isinstance(context, _ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
        self._conn = conn
        self._in = _ssl.MemoryBIO()
        self._out = _ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._lock = threading.Lock()  # every SSLObject / BIO call
        self._rmu = Mutex()  # one reader at a time (the handshake holds both)
        self._wmu = Mutex()  # one writer at a time: records go out in order
        self._buf = bytearray()  # decrypted, not yet returned
        self._pending = b""  # ciphertext a timed-out or cancelled send left
        self._eof = False
        self._closed = False
        self._handshaken = False

    # ----- locking

    @staticmethod
    async def _acquire(mu: Mutex, deadline: float | None) -> None:
        if not mu.try_lock():
            await mu.lock(_left(deadline))

    def _check(self) -> None:
        if self._closed:
            raise _closed_error()

    # ----- the raw socket

    async def _push(self, data: bytes, deadline: float | None) -> None:
        """Send ciphertext; whatever a timeout or cancel leaves unsent is
        queued in ``_pending``. Holds ``_wmu``."""
        conn = self._conn
        n = 0
        try:
            n = await conn.send(data, timeout=None if deadline is None else _left(deadline))
            if n == len(data):
                return
            view = memoryview(data)
            while n < len(data):
                n += await conn.send(view[n:], timeout=_left(deadline))
        except BaseException:
            if n < len(data):
                self._pending = data[n:]
            raise

    async def _flush(self, deadline: float | None) -> None:
        """Send what a previous send left, then whatever the SSLObject wrote.
        Holds ``_wmu``."""
        if self._pending:
            data, self._pending = self._pending, b""
            await self._push(data, deadline)
        with self._lock:
            data = self._out.read()
        if data:
            await self._push(data, deadline)

    async def _flush_locked(self, deadline: float | None) -> None:
        await self._acquire(self._wmu, deadline)
        try:
            await self._flush(deadline)
        finally:
            self._wmu.unlock()

    async def _feed(self, deadline: float | None) -> None:
        """Read ciphertext into the incoming BIO (EOF included). Holds ``_rmu``."""
        data = await self._conn.recv(_RAW_READ, timeout=_left(deadline))
        with self._lock:
            if data:
                self._in.write(data)
            else:
                self._in.write_eof()

    # ----- the handshake

    async def handshake(self, *, timeout: float | None = None) -> None:
        """Run the TLS handshake (idempotent): ``await conn.handshake()``.

        ``recv`` and ``send`` run it themselves when it was not done; awaiting
        it first is how a server sees a bad client (and the peer's
        certificate) before it reads.

        Raises:
            ssl.SSLCertVerificationError: the peer's certificate did not verify.
            ssl.SSLError: a TLS alert or a protocol error (``ssl.SSLEOFError``
                if the peer closed during the handshake).
            gmprt.Timeout: not done within ``timeout`` seconds.
            OSError: the connection is closed.
        """
        if self._handshaken:
            return
        self._check()
        await self._handshake(_deadline(timeout))

    async def _handshake(self, deadline: float | None) -> None:
        await self._acquire(self._rmu, deadline)
        try:
            await self._acquire(self._wmu, deadline)
            try:
                while not self._handshaken:
                    failed: _ssl.SSLError | None = None
                    with self._lock:
                        try:
                            self._ssl.do_handshake()
                            self._handshaken = True
                        except _WantRead:
                            pass
                        except _ssl.SSLError as e:
                            failed = e
                    if failed is not None:
                        # Tell the peer why (the alert), without waiting for it.
                        with self._lock:
                            alert = self._out.read()
                        if alert:
                            await self._best_effort(alert)
                        raise failed
                    await self._flush(deadline)
                    if not self._handshaken:
                        await self._feed(deadline)
            finally:
                self._wmu.unlock()
        finally:
            self._rmu.unlock()

    async def _best_effort(self, data: bytes) -> None:
        try:
            await self._conn.send(data, timeout=0)
        except Exception:
            pass

    # ----- reading

    async def _read(self, n: int, deadline: float | None) -> bytes:
        """Up to ``n`` decrypted bytes (``b""`` at EOF). Holds ``_rmu``."""
        sslobj = self._ssl
        lock = self._lock
        incoming = self._in
        while True:
            if self._eof:
                return b""
            with lock:
                # Nothing to decrypt (no ciphertext, no decrypted bytes held,
                # no EOF): straight to the socket. SSLWantReadError costs
                # more than the whole check, and an echo server's every
                # recv would raise it once.
                if not (incoming.pending or sslobj.pending() or incoming.eof):
                    data = None
                    pending = 0
                else:
                    try:
                        data = sslobj.read(n)
                        if not data:  # close_notify: read() returns b"" for it
                            self._eof = True
                    except _WantRead:
                        data = None
                    except (_ZeroReturn, _EOF):
                        self._eof = True
                        data = b""
                    pending = self._out.pending
            if pending:
                # The read made records to send (a KeyUpdate reply, an alert).
                try:
                    await self._flush_locked(deadline)
                except BaseException:
                    if data:
                        self._buf += data  # after what was buffered: order kept
                    raise
            if data is not None:
                return data
            raw = await self._conn.recv(
                _RAW_READ, timeout=None if deadline is None else _left(deadline)
            )
            with lock:
                if raw:
                    incoming.write(raw)
                else:
                    incoming.write_eof()

    async def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> bytes:
        """Receive up to ``max_bytes`` decrypted bytes: ``await conn.recv()``.

        Returns buffered bytes first (left by a buffered read), then as soon
        as a record arrives; ``b""`` at EOF (close_notify, or the TCP stream
        ended). One call returns at most 256 KiB, however large
        ``max_bytes`` is. Nothing is lost on a timeout or a cancel.

        Raises:
            gmprt.Timeout: nothing arrived within ``timeout`` seconds.
            ssl.SSLError: a TLS alert or a protocol error (or from the
                implicit handshake).
            OSError: the connection is closed.
            ValueError: ``max_bytes < 1``.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if max_bytes > _READ_CAP:
            max_bytes = _READ_CAP  # the SSLObject allocates what it is asked for
        if self._closed:
            raise _closed_error()
        buf = self._buf
        if buf:
            data = bytes(buf[:max_bytes])
            del buf[:max_bytes]
            return data
        deadline = None if timeout is None else _deadline(timeout)
        if not self._handshaken:
            await self._handshake(deadline)
        mu = self._rmu
        if not mu.try_lock():
            await mu.lock(_left(deadline))
        try:
            if buf:  # another reader left some while this one queued
                data = bytes(buf[:max_bytes])
                del buf[:max_bytes]
                return data
            return await self._read(max_bytes, deadline)
        finally:
            mu.unlock()

    async def _fill(self, deadline: float | None) -> bool:
        """Append one chunk to the buffer; False at EOF. Holds ``_rmu``."""
        data = await self._read(_RAW_READ, deadline)
        if not data:
            return False
        self._buf += data
        return True

    async def _start_read(self, timeout: float | None) -> float | None:
        self._check()
        deadline = _deadline(timeout)
        if not self._handshaken:
            await self._handshake(deadline)
        await self._acquire(self._rmu, deadline)
        return deadline

    async def readuntil(
        self,
        separator: bytes = b"\n",
        *,
        limit: int = _LINE_LIMIT,
        timeout: float | None = None,
    ) -> bytes:
        """Read up to and including ``separator``: ``await conn.readuntil(b"\\r\\n")``.

        Raises:
            IncompleteReadError: EOF came first; ``partial`` holds the bytes
                read (they are consumed), ``expected`` is ``None``.
            LimitOverrunError: no separator within the first ``limit``
                bytes; the bytes stay buffered (``recv`` returns them).
            gmprt.Timeout: not complete within ``timeout`` seconds (what
                was read stays buffered).
            ValueError: an empty separator, or ``limit < 1``.
        """
        sep = bytes(separator)
        if not sep:
            raise ValueError("separator must not be empty")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        deadline = await self._start_read(timeout)
        try:
            return await self._until(sep, limit, deadline, eof_ok=False)
        finally:
            self._rmu.unlock()

    async def _until(self, sep: bytes, limit: int, deadline: float | None, eof_ok: bool) -> bytes:
        buf = self._buf
        start = 0
        seplen = len(sep)
        while True:
            i = buf.find(sep, start, limit)
            if i >= 0:
                end = i + seplen
                line = bytes(buf[:end])
                del buf[:end]
                return line
            if len(buf) >= limit:
                raise LimitOverrunError(
                    f"separator not found within the first {limit} bytes", len(buf)
                )
            start = max(0, len(buf) - seplen + 1)
            if not await self._fill(deadline):
                partial = bytes(buf)
                buf.clear()
                if eof_ok:
                    return partial
                raise IncompleteReadError(partial, None)

    async def readline(self, *, limit: int = _LINE_LIMIT, timeout: float | None = None) -> bytes:
        """Read one line, ``b"\\n"`` included: ``await conn.readline()``. At
        EOF the partial line, ``b""`` if none.

        Raises:
            LimitOverrunError: no ``b"\\n"`` within the first ``limit``
                bytes; the bytes stay buffered.
            gmprt.Timeout: not complete within ``timeout`` seconds (what
                was read stays buffered).
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        deadline = await self._start_read(timeout)
        try:
            return await self._until(b"\n", limit, deadline, eof_ok=True)
        finally:
            self._rmu.unlock()

    async def readexactly(self, n: int, *, timeout: float | None = None) -> bytes:
        """Read exactly ``n`` bytes: ``await conn.readexactly(4)``. The
        buffer grows only by what the peer sends, so ``n`` read off the wire
        can be passed as is.

        Raises:
            IncompleteReadError: EOF came first; ``partial`` holds the bytes
                read (consumed), ``expected`` is ``n``.
            gmprt.Timeout: not complete within ``timeout`` seconds (what
                was read stays buffered).
            ValueError: ``n < 0``.
        """
        if n < 0:
            raise ValueError(f"readexactly size can not be less than zero, got {n}")
        if n == 0:
            self._check()
            return b""
        deadline = await self._start_read(timeout)
        try:
            buf = self._buf
            while len(buf) < n:
                if not await self._fill(deadline):
                    partial = bytes(buf)
                    buf.clear()
                    raise IncompleteReadError(partial, n)
            data = bytes(buf[:n])
            del buf[:n]
            return data
        finally:
            self._rmu.unlock()

    # ----- writing

    async def send(self, data: Any, *, timeout: float | None = None) -> int:
        """Send some of ``data`` (bytes or any contiguous buffer): ``await
        conn.send(data)`` encrypts up to 256 KiB of it, sends the records
        and returns how many plaintext bytes that was.

        Raises: as :meth:`sendall`.
        """
        view = memoryview(data)
        if view.nbytes > _WRITE_CHUNK:
            view = view.cast("B")[:_WRITE_CHUNK]
        await self.sendall(view, timeout=timeout)
        return view.nbytes

    async def sendall(self, data: Any, *, timeout: float | None = None) -> None:
        """Send all of ``data`` (bytes or any contiguous buffer): ``await
        conn.sendall(data)``.

        On a timeout or a cancel the data is encrypted but some of it may not
        have left: it stays queued and goes out first with the next send
        (or :meth:`shutdown`), so the stream is never cut mid-record and the
        connection stays usable.

        Raises:
            gmprt.Timeout: not all sent within ``timeout`` seconds.
            ssl.SSLError: from the implicit handshake.
            BrokenPipeError, ConnectionResetError: the peer is gone.
            OSError: the connection is closed.
        """
        if self._closed:
            raise _closed_error()
        deadline = None if timeout is None else _deadline(timeout)
        if not self._handshaken:
            await self._handshake(deadline)
        mu = self._wmu
        if not mu.try_lock():
            await mu.lock(_left(deadline))
        try:
            if self._pending:
                data2, self._pending = self._pending, b""
                await self._push(data2, deadline)
            if type(data) is bytes and len(data) <= _WRITE_CHUNK:
                with self._lock:
                    self._ssl.write(data)
                    out = self._out.read()
                try:
                    n = await self._conn.send(
                        out, timeout=None if deadline is None else _left(deadline)
                    )
                except BaseException:
                    self._pending = out  # none of it left: it goes first next time
                    raise
                if n < len(out):
                    await self._push(out[n:], deadline)
                return
            with memoryview(data) as view:
                if view.nbytes <= _WRITE_CHUNK:
                    with self._lock:
                        self._ssl.write(view)
                        out = self._out.read()
                    await self._push(out, deadline)
                    return
                flat = view.cast("B")
                for i in range(0, len(flat), _WRITE_CHUNK):
                    with self._lock:
                        self._ssl.write(flat[i : i + _WRITE_CHUNK])
                        out = self._out.read()
                    await self._push(out, deadline)
        finally:
            mu.unlock()

    # ----- closing

    def close(self) -> None:
        """Close the connection (idempotent). Sends close_notify first if it
        can go out at once (nothing else is being sent and the socket takes
        it without waiting), then closes the socket. Gs blocked on it wake
        and raise ``OSError``."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._handshaken and not self._pending and self._wmu.try_lock():
                try:
                    with self._lock:
                        try:
                            self._ssl.unwrap()
                        except _ssl.SSLError:
                            pass
                        data = self._out.read()
                    fd = self._conn.fileno()
                    if data and fd >= 0:
                        try:
                            os.write(fd, data)  # the socket is non-blocking
                        except OSError:
                            pass
                finally:
                    self._wmu.unlock()
        finally:
            self._conn.close()

    async def shutdown(self, *, timeout: float | None = None) -> None:
        """Close cleanly: send close_notify, wait for the peer's, then close
        the socket (also on an error or a timeout). Data the peer sends
        before its close_notify is discarded. Does nothing more than
        :meth:`close` if the handshake never ran.

        Raises:
            gmprt.Timeout: the peer's close_notify did not come within
                ``timeout`` seconds (the socket is closed all the same).
            OSError: the connection is closed.
        """
        self._check()
        try:
            if not self._handshaken:
                return
            deadline = _deadline(timeout)
            await self._acquire(self._rmu, deadline)
            try:
                await self._acquire(self._wmu, deadline)
                try:
                    while True:
                        with self._lock:
                            try:
                                self._ssl.unwrap()
                                done = True
                            except _WantRead:
                                done = False
                            except (_ZeroReturn, _EOF):
                                done = True
                        await self._flush(deadline)
                        if done:
                            return
                        data = await self._conn.recv(_RAW_READ, timeout=_left(deadline))
                        with self._lock:
                            if not data:
                                return  # the peer closed without close_notify: done too
                            self._in.write(data)
                finally:
                    self._wmu.unlock()
            finally:
                self._rmu.unlock()
        finally:
            self._closed = True
            self._conn.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or :meth:`shutdown`) was called."""
        return self._closed

    # ----- what was negotiated

    @overload
    def getpeercert(self, binary_form: Literal[False] = False) -> dict[str, Any] | None: ...
    @overload
    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...
    @overload
    def getpeercert(self, binary_form: bool) -> dict[str, Any] | bytes | None: ...
    def getpeercert(self, binary_form: bool = False) -> dict[str, Any] | bytes | None:
        """The peer's certificate, as ``ssl.SSLSocket.getpeercert`` returns
        it (``None`` if the peer sent none; ``{}`` for an unverified one
        unless ``binary_form``).

        Raises:
            ValueError: the handshake is not done.
        """
        if not self._handshaken:
            raise ValueError("handshake not done yet")
        with self._lock:
            return self._ssl.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        """The ALPN protocol agreed on, or ``None``."""
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        """The TLS version, e.g. ``"TLSv1.3"`` (``None`` before the handshake)."""
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """``(name, protocol, secret bits)`` of the cipher (``None`` before the handshake)."""
        return self._ssl.cipher()

    @property
    def server_hostname(self) -> str | None:
        """The host name the client checks the certificate against (``None`` on a server)."""
        return self._ssl.server_hostname

    @property
    def server_side(self) -> bool:
        """Whether this is the server's end."""
        return self._ssl.server_side

    @property
    def context(self) -> _ssl.SSLContext:
        """The ``ssl.SSLContext`` of the connection."""
        return self._ssl.context

    @property
    def handshake_done(self) -> bool:
        """Whether the handshake has completed."""
        return self._handshaken

    @property
    def raw(self) -> Conn:
        """The TCP :class:`gmprt.net.Conn` underneath (do not read or write it)."""
        return self._conn

    @property
    def local_address(self) -> tuple[str, int] | str | bytes:
        """``(host, port)`` of this end (a path for a Unix socket)."""
        return self._conn.local_address

    @property
    def remote_address(self) -> tuple[str, int] | str | bytes:
        """``(host, port)`` of the peer (a path for a Unix socket)."""
        return self._conn.remote_address

    def fileno(self) -> int:
        """The socket's file descriptor, or -1 once closed."""
        return self._conn.fileno()

    def __enter__(self) -> TLSConn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> TLSConn:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc is not None:
            self.close()
            return
        try:
            await self.shutdown(timeout=5.0)
        except (OSError, _ssl.SSLError, TimeoutError):
            pass  # closed all the same

    def __repr__(self) -> str:
        if self._closed:
            return "<gmprt.net.TLSConn closed>"
        side = "server" if self._ssl.server_side else "client"
        state = self._ssl.version() or "handshake pending"
        try:
            here, there = self._conn.local_address, self._conn.remote_address
            if isinstance(here, tuple) and isinstance(there, tuple):
                where = f" {here[0]}:{here[1]} -> {there[0]}:{there[1]}"
            else:
                where = f" unix {here!r} -> {there!r}"
        except OSError:
            where = ""
        return f"<gmprt.net.TLSConn {side}{where} {state}>"


class TLSListener:
    """A listening TCP socket whose connections speak TLS: from
    ``gmprt.net.listen(host, port, ssl=ctx)``.

    ``await accept()`` returns a :class:`TLSConn` as soon as the TCP
    connection is accepted; its handshake runs on its first I/O (or
    ``await conn.handshake()``) in the G that serves it, so a slow or broken
    client never holds up ``accept`` (Go's ``tls.NewListener``).
    """

    __slots__ = ("_context", "_listener")

    def __init__(self, listener: Listener, context: _ssl.SSLContext) -> None:
        if not isinstance(context, _ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
        self._listener = listener
        self._context = context

    async def accept(self, *, timeout: float | None = None) -> TLSConn:
        """Accept a connection: ``conn = await ln.accept()`` (the handshake is left to it).

        Raises:
            gmprt.Timeout: none within ``timeout`` seconds.
            OSError: the listener is closed.
        """
        raw = await self._listener.accept(timeout=timeout)
        return TLSConn(raw, self._context, server_side=True)

    @property
    def address(self) -> tuple[str, int] | str | bytes:
        """``(host, port)`` the listener is bound to (a path for a Unix
        socket)."""
        return self._listener.address

    @property
    def context(self) -> _ssl.SSLContext:
        """The server's ``ssl.SSLContext``."""
        return self._context

    @property
    def listener(self) -> Listener:
        """The TCP :class:`gmprt.net.Listener` underneath."""
        return self._listener

    def close(self) -> None:
        """Close the listener (idempotent); Gs in ``accept`` raise ``OSError``."""
        self._listener.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._listener.closed

    def fileno(self) -> int:
        """The socket's file descriptor, or -1 once closed."""
        return self._listener.fileno()

    def __enter__(self) -> TLSListener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._listener.close()

    def __repr__(self) -> str:
        if self._listener.closed:
            return "<gmprt.net.TLSListener closed>"
        addr = self._listener.address
        if isinstance(addr, tuple):
            return f"<gmprt.net.TLSListener {addr[0]}:{addr[1]}>"
        return f"<gmprt.net.TLSListener unix {addr!r}>"


async def start_tls(
    conn: Conn,
    context: _ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> TLSConn:
    """Upgrade ``conn`` to TLS and run the handshake (``Conn.start_tls``).
    The raw connection then belongs to the returned :class:`TLSConn`; it is
    closed if the handshake fails."""
    tls = TLSConn(conn, context, server_side=server_side, server_hostname=server_hostname)
    try:
        await tls.handshake(timeout=timeout)
    except BaseException:
        tls.close()
        raise
    return tls


async def dial_tls(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> TLSConn:
    """Connect and run the TLS handshake: ``conn = await
    gmprt.net.dial_tls("example.com", 443)``.

    ``ssl`` is the client's ``ssl.SSLContext`` (``None``:
    ``ssl.create_default_context()``, which verifies the certificate and the
    host name); ``server_hostname`` (default: ``host``) is what the
    certificate is checked against and what SNI sends. ``timeout`` bounds
    the connect and the handshake together.

    Raises:
        ssl.SSLCertVerificationError: the server's certificate did not verify.
        ssl.SSLError: a TLS alert or a protocol error.
        gmprt.Timeout: not connected and handshaken within ``timeout`` seconds.
        ConnectionRefusedError, OSError: as :func:`gmprt.net.dial`.
    """
    ctx = _ssl.create_default_context() if ssl is None else ssl
    deadline = _deadline(timeout)
    raw = await dial(host, port, timeout=_left(deadline))
    hostname = host if server_hostname is None else server_hostname
    return await start_tls(raw, ctx, server_hostname=hostname, timeout=_left(deadline))


# Shown as gmprt.net's, where they are exported (as the Rust Conn is).
for _obj in (TLSConn, TLSListener, dial_tls):
    _obj.__module__ = "gmprt.net"
del _obj
