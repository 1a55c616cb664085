"""A TCP echo server on gmprt: one G per connection, streams style.

    python examples/echo_server.py --host 127.0.0.1 --port 25000 [--procs N]

Prints ``listening on HOST:PORT`` once it accepts connections (``--port 0``
picks a free port and prints it), then serves until SIGINT or SIGTERM and
exits 0. ``benches/echo.py`` drives it with ``gmprt-loadgen``.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gmprt
from gmprt import net


async def handle(conn):
    try:
        while data := await conn.recv(65536):
            await conn.sendall(data)
    except ConnectionError:
        pass  # the client reset the connection: nothing left to echo
    finally:
        conn.close()


async def serve(host, port):
    ln = net.listen(host, port)
    try:
        bound_host, bound_port = ln.address[:2]
        print(f"listening on {bound_host}:{bound_port}", flush=True)
        while True:
            gmprt.go(handle, await ln.accept())
    finally:
        ln.close()


def _stop(signum, frame):
    # Turns SIGTERM into the same clean stop as Ctrl-C: gmprt.run() wakes on
    # the signal, runs this handler and raises KeyboardInterrupt.
    raise KeyboardInterrupt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=25000, help="0 picks a free port")
    p.add_argument("--procs", type=int, default=None, help="Ps (default: gmprt's choice)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C stops it even where SIGINT came in ignored (a `&` job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        gmprt.run(serve, args.host, args.port, procs=args.procs)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
