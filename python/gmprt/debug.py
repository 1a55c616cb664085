"""gmprt.debug: a tiny HTTP endpoint for looking inside a running server,
like Go's ``net/http/pprof``.

**Not for the public internet.** It shows every G's stack, file names and
what each waits on, to anyone who can connect, with no authentication.
It listens on loopback by default; keep it there (reach it over SSH or a
port forward)::

    async def main():
        srv = gmprt.debug.serve()          # 127.0.0.1, a free port
        print("debug on", srv.address)
        ...

    $ curl http://127.0.0.1:PORT/debug/gmprt/goroutines
    $ curl http://127.0.0.1:PORT/debug/gmprt/goroutines?format=json
    $ curl http://127.0.0.1:PORT/debug/gmprt/sched
    $ curl -o trace.json http://127.0.0.1:PORT/debug/gmprt/trace?seconds=5

- ``/debug/gmprt/goroutines``: :func:`gmprt.dump`'s text;
  ``?format=json``: :func:`gmprt.goroutines` as JSON (``?leaked=1`` only
  the leaked Gs).
- ``/debug/gmprt/sched``: :func:`gmprt.stats` as JSON, with the
  schedtrace line under ``"schedtrace"`` (handoffs and steals since the
  previous request).
- ``/debug/gmprt/trace?seconds=N``: records an execution trace for N
  seconds (default 1, at most 60) and answers with its JSON
  (:mod:`gmprt.trace`; open it in Perfetto). 409 while another recording
  runs: there is one tracer per process.

The server is one G on ``gmprt.net``: it answers one request at a time
(each bounded by a timeout), so a slow client cannot pile up Gs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import _gmprt, net
from ._gmprt import sleep
from ._traceback import format_dump, goroutines

__all__ = ["DebugServer", "serve"]

# A request's line and headers must arrive within this many seconds and
# bytes; the answer must be taken within the same time.
_TIMEOUT = 10.0
_MAX_REQUEST = 16 * 1024
# The longest /trace recording a request may ask for.
_MAX_TRACE_S = 60.0
# Events kept per thread while /trace records (gmprt.trace's default ring).
_TRACE_RING = 1 << 18


class DebugServer:
    """The running endpoint (:func:`serve`): ``address`` and ``close()``."""

    def __init__(self, ln: net.Listener) -> None:
        self._ln = ln
        addr = ln.address
        assert isinstance(addr, tuple), "a TCP listener"
        self.address: tuple[str, int] = addr
        self._g: _gmprt.G[None] = _gmprt.go(self._serve)

    def close(self) -> None:
        """Stop answering (the listener closes; the server G ends)."""
        self._ln.close()
        self._g.cancel()

    def __enter__(self) -> DebugServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self) -> None:
        while True:
            try:
                conn = await self._ln.accept()
            except OSError:
                return  # closed
            try:
                await _answer(conn)
            except (OSError, net.IncompleteReadError, net.LimitOverrunError):
                pass  # the client went away, was too slow or sent too much
            finally:
                conn.close()


def serve(host: str = "127.0.0.1", port: int = 0) -> DebugServer:
    """Start the debug endpoint on ``host:port`` (default: loopback, a free
    port) in one G; call it inside ``gmprt.run()``. Returns the server
    (``.address``, ``.close()``).

    Not for the public internet: see the module docstring.

    Raises:
        OSError: the address cannot be listened on.
        RuntimeError: no runtime is running.
    """
    return DebugServer(net.listen(host, port))


async def _answer(conn: net.Conn) -> None:
    head = await conn.readuntil(b"\r\n\r\n", limit=_MAX_REQUEST, timeout=_TIMEOUT)
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return await _reply(conn, 400, "text/plain", "bad request\n")
    method, target = parts[0], parts[1]
    if method not in ("GET", "HEAD"):
        return await _reply(conn, 405, "text/plain", "only GET\n")
    url = urlsplit(target)
    query = parse_qs(url.query)
    body: str
    if url.path == "/debug/gmprt/goroutines":
        leaked = query.get("leaked", ["0"])[0] not in ("", "0")
        gs = goroutines(leaked=leaked)
        if query.get("format", [""])[0] == "json":
            return await _reply(conn, 200, "application/json", json.dumps(gs, indent=1) + "\n")
        body = format_dump(gs)
        return await _reply(conn, 200, "text/plain; charset=utf-8", body)
    if url.path == "/debug/gmprt/sched":
        st: dict[str, Any] = dict(_gmprt.stats())
        st["schedtrace"] = _gmprt._schedtrace()
        return await _reply(conn, 200, "application/json", json.dumps(st, indent=1) + "\n")
    if url.path == "/debug/gmprt/trace":
        try:
            seconds = float(query.get("seconds", ["1"])[0])
        except ValueError:
            seconds = -1.0
        if not 0 < seconds <= _MAX_TRACE_S:
            return await _reply(
                conn, 400, "text/plain", f"seconds must be in (0, {_MAX_TRACE_S:g}]\n"
            )
        if _gmprt._trace_enabled():
            return await _reply(conn, 409, "text/plain", "a trace is already being recorded\n")
        _gmprt._trace_start(_TRACE_RING)
        try:
            await sleep(seconds)
        finally:
            data = _gmprt._trace_stop() or b""
        return await _reply(conn, 200, "application/json", data)
    if url.path in ("/debug/gmprt", "/debug/gmprt/"):
        body = (
            "/debug/gmprt/goroutines[?format=json][&leaked=1]\n/debug/gmprt/sched\n"
            "/debug/gmprt/trace[?seconds=1]\n"
        )
        return await _reply(conn, 200, "text/plain", body)
    return await _reply(conn, 404, "text/plain", "not found\n")


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
}


async def _reply(conn: net.Conn, status: int, ctype: str, body: str | bytes) -> None:
    data = body.encode("utf-8") if isinstance(body, str) else body
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    await conn.sendall(head + data, timeout=_TIMEOUT)
