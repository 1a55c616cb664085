"""The contenders' echo servers for benches/echo.py, one per process.

    python benches/servers/echo_servers.py KIND [--host H] [--port P]

KIND is one of asyncio-streams, asyncio-protocol, threading (a thread per
connection), uvloop-streams, uvloop-protocol, gmprt.aio-streams,
gmprt.aio-protocol (the same asyncio code on gmprt's asyncio loop). Each prints ``listening on
HOST:PORT`` (flushed) once it accepts (``--port 0`` picks a free port),
serves until SIGINT or SIGTERM, and exits 0. gmprt's own server is
examples/echo_server.py. All listen with a backlog of 1,024 and use
TCP_NODELAY (asyncio and uvloop set it on TCP transports themselves).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import socket
import sys
import threading
import time

BACKLOG = 1024
KINDS = [
    "asyncio-streams",
    "asyncio-protocol",
    "threading",
    "uvloop-streams",
    "uvloop-protocol",
    "gmprt.aio-streams",
    "gmprt.aio-protocol",
]


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def announce(sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)


# -- asyncio / uvloop ---------------------------------------------------------


async def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    except asyncio.CancelledError:
        # Shutting down. End quietly: with 10k connections, 3.11's
        # start_server would log a traceback for every cancelled handler.
        pass
    finally:
        writer.close()


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def serve_async(style: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if style == "streams":
        server = await asyncio.start_server(stream_handler, host, port, backlog=BACKLOG)
    else:
        server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG)
    announce(server.sockets[0])
    await stop.wait()
    server.close()


def run_async(kind: str, host: str, port: int) -> None:
    lib, style = kind.split("-")
    if lib == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_async(style, host, port))
    elif lib == "gmprt.aio":
        import gmprt.aio

        with asyncio.Runner(loop_factory=gmprt.aio.new_event_loop) as runner:
            runner.run(serve_async(style, host, port))
    else:
        asyncio.run(serve_async(style, host, port))


# -- threading -------------------------------------------------------------------


def thread_handler(conn: socket.socket) -> None:
    with conn:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_threading(host: str, port: int) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    with socket.create_server((host, port), backlog=BACKLOG) as ln:
        announce(ln)
        try:
            while True:
                try:
                    conn, _ = ln.accept()
                except OSError:  # EMFILE and friends: back off, keep the listener
                    time.sleep(0.01)
                    continue
                threading.Thread(target=thread_handler, args=(conn,), daemon=True).start()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    raise_nofile_limit()
    if args.kind == "threading":
        run_threading(args.host, args.port)
    else:
        run_async(args.kind, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
