"""Line-echo servers for benches/lines.py, one per process: each reads a
line (``readline``) and writes it back, as a line protocol server does.

    python benches/servers/line_servers.py KIND [--host H] [--port P] [--unix PATH]

KIND is gmprt (one G per connection, ``conn.readline`` / ``sendall``),
gmprt-procs1, asyncio-streams or uvloop-streams (``reader.readline`` /
``writer.write`` + ``drain``). ``--unix PATH`` serves on a Unix socket
instead (gmprt only), for the Unix-vs-TCP comparison, which then echoes
with ``recv`` / ``sendall``. Each prints ``listening on HOST:PORT`` (flushed)
once it accepts, serves until SIGTERM or SIGINT, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

KINDS = ["gmprt", "gmprt-procs1", "asyncio-streams", "uvloop-streams"]


async def stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve_async(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(stream_handler, host, port, backlog=1024)
    h, p = server.sockets[0].getsockname()[:2]
    print(f"listening on {h}:{p}", flush=True)
    await stop.wait()
    server.close()


def run_gmprt(host: str, port: int, procs: int | None, unix: str | None) -> None:
    import gmprt

    async def lines(conn: gmprt.net.Conn) -> None:
        with conn:
            try:
                while line := await conn.readline():
                    await conn.sendall(line)
            except ConnectionError:
                pass

    async def raw(conn: gmprt.net.Conn) -> None:
        with conn:
            try:
                while data := await conn.recv(65536):
                    await conn.sendall(data)
            except ConnectionError:
                pass

    async def serve() -> None:
        if unix:
            ln = gmprt.net.listen_unix(unix)
            handler = raw
            print(f"listening on {unix}:0", flush=True)
        else:
            ln = gmprt.net.listen(host, port)
            handler = lines
            h, p = ln.address
            print(f"listening on {h}:{p}", flush=True)
        with ln:
            while True:
                gmprt.go(handler, await ln.accept())

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        gmprt.run(serve, procs=procs)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--unix", default=None)
    args = p.parse_args(argv)
    if args.kind.startswith("gmprt"):
        procs = 1 if args.kind == "gmprt-procs1" else None
        run_gmprt(args.host, args.port, procs, args.unix)
    elif args.kind == "uvloop-streams":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_async(args.host, args.port))
    else:
        asyncio.run(serve_async(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
