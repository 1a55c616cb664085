"""The overload and deadline scenarios' servers (benches/overload.py,
benches/deadline.py), one per process.

    python benches/servers/overload_servers.py KIND [--limit N] [--upstream S]
        [--deadline D] [--samples FILE] [--state-kib K] [--host H] [--port P]
        [--procs N]

KIND is gmprt, asyncio, uvloop (the asyncio server on uvloop's loop) or
threading. Each connection carries one request, a
line (``GET <id>\\n``). Serving it means holding K KiB of per-request state
(a buffer the handler fills, standing in for a parsed request or a response
being built) while waiting S seconds on a slow upstream (``gmprt.sleep``,
``asyncio.sleep``, ``time.sleep``), then replying ``OK <id>\\n`` and closing.

``--limit 0`` (the default) serves every connection at once: a G, task or
thread each, however many arrive. ``--limit N`` bounds the requests in flight
at N, decided when the connection is accepted: gmprt with a
``gmprt.Semaphore`` (a non-blocking acquire), asyncio with an
``asyncio.Semaphore``, threading with a pool of N threads behind a bounded
semaphore. A connection over the bound still has its request line read, then
gets ``ERR 503 overloaded: ...`` and is closed: every refused request gets a
clear error, never a reset or a silent close.

``--deadline D`` (0, the default: none) bounds each request's upstream wait
at D seconds, the way each runtime bounds work: gmprt with ``with
gmprt.timeout(D):`` around the upstream call, asyncio with ``async with
asyncio.timeout(D):``. Threads cannot be cancelled: the threading server can
only pass the time left to the blocking call itself (a per-call timeout, as
``socket.settimeout`` would), here ``threading.Event().wait(timeout)`` in
place of the upstream sleep. A request whose deadline passes gets
``ERR timeout: ...`` and is closed.

``--samples FILE``: every 50 ms the server appends ``<monotonic time> <tasks
alive>`` to FILE: ``gmprt.stats()["goroutines"]``,
``len(asyncio.all_tasks())``, ``threading.active_count()``.

Each prints ``listening on HOST:PORT`` once it accepts, serves until SIGINT
or SIGTERM and exits 0.
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
from concurrent.futures import ThreadPoolExecutor

BACKLOG = 1024
KINDS = ["gmprt", "asyncio", "uvloop", "threading"]
SAMPLE_S = 0.05


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def announce(host: str, port: int) -> None:
    print(f"listening on {host}:{port}", flush=True)


def reply_ok(line: bytes, state: bytes) -> bytes:
    rid = line.split(b" ", 1)[-1].strip()
    return b"OK " + rid + b" " + str(len(state)).encode() + b"\n"


def reply_err(limit: int) -> bytes:
    return (
        f"ERR 503 overloaded: {limit} requests already in flight (the limit); retry later\n"
    ).encode()


def reply_timeout(deadline: float) -> bytes:
    return f"ERR timeout: the upstream did not answer within the {deadline:g} s deadline\n".encode()


class Samples:
    """Appends ``<monotonic time> <tasks alive>`` lines to a file (``--samples``)."""

    def __init__(self, path: str | None) -> None:
        self.f = open(path, "a", buffering=1) if path else None

    def add(self, alive: int) -> None:
        if self.f is not None:
            self.f.write(f"{time.monotonic():.4f} {alive}\n")


class Args(argparse.Namespace):
    kind: str
    host: str
    port: int
    limit: int
    upstream: float
    deadline: float
    samples: str | None
    state_kib: int
    procs: int | None


# -- gmprt ------------------------------------------------------------------------


class _TryLimiter:
    """A non-blocking counting limiter: ``gmprt.Semaphore`` when gmprt has it,
    else a ``threading.BoundedSemaphore`` used only without blocking (safe in
    a G: neither call ever waits)."""

    def __init__(self, n: int) -> None:
        import gmprt

        sem = getattr(gmprt, "Semaphore", None)
        if sem is not None:
            self.sem = sem(n)
            self.kind = "gmprt.Semaphore"
            self._try = _gmprt_try_acquire(self.sem)
        else:
            self.sem = threading.BoundedSemaphore(n)
            self.kind = "threading.BoundedSemaphore (gmprt.Semaphore not available)"
            self._try = lambda: self.sem.acquire(blocking=False)

    def try_acquire(self) -> bool:
        return self._try()

    def release(self) -> None:
        self.sem.release()


def _gmprt_try_acquire(sem):
    for name in ("try_acquire", "acquire_nowait"):
        if hasattr(sem, name):
            return getattr(sem, name)
    return lambda: sem.acquire(blocking=False)


def serve_gmprt(a: Args) -> None:
    import gmprt
    from gmprt import net

    limiter = _TryLimiter(a.limit) if a.limit else None
    err = reply_err(a.limit)

    async def read_line(conn) -> bytes:
        buf = b""
        while b"\n" not in buf and len(buf) < 4096:
            data = await conn.recv(4096, timeout=30)
            if not data:
                break
            buf += data
        return buf

    late = reply_timeout(a.deadline)

    async def handle(conn) -> None:
        try:
            line = await read_line(conn)
            state = b"x" * (a.state_kib * 1024)
            if a.deadline:
                try:
                    with gmprt.timeout(a.deadline):
                        await gmprt.sleep(a.upstream)
                    reply = reply_ok(line, state)
                except gmprt.Timeout:
                    reply = late
            else:
                await gmprt.sleep(a.upstream)
                reply = reply_ok(line, state)
            await conn.sendall(reply)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            conn.close()
            if limiter:
                limiter.release()

    async def reject(conn) -> None:
        try:
            await read_line(conn)
            await conn.sendall(err)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            conn.close()

    samples = Samples(a.samples)

    async def sampler() -> None:
        while True:
            samples.add(gmprt.stats()["goroutines"])
            await gmprt.sleep(SAMPLE_S)

    async def main() -> None:
        ln = net.listen(a.host, a.port, backlog=BACKLOG)
        if a.samples:
            gmprt.go(sampler)
        announce(*ln.address[:2])
        if limiter:
            print(f"limiter: {limiter.kind}", file=sys.stderr, flush=True)
        while True:
            conn = await ln.accept()
            if limiter is None or limiter.try_acquire():
                gmprt.go(handle, conn)
            else:
                gmprt.go(reject, conn)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        gmprt.run(main, procs=a.procs)
    except KeyboardInterrupt:
        pass


# -- asyncio ----------------------------------------------------------------------


def serve_asyncio(a: Args, loop: str = "asyncio") -> None:
    err = reply_err(a.limit)
    late = reply_timeout(a.deadline)
    samples = Samples(a.samples)

    async def main() -> None:
        sem = asyncio.Semaphore(a.limit) if a.limit else None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if sem is not None and sem.locked():
                    await reader.readline()
                    writer.write(err)
                    await writer.drain()
                    return
                if sem is not None:
                    await sem.acquire()
                try:
                    line = await reader.readline()
                    state = b"x" * (a.state_kib * 1024)
                    if a.deadline:
                        try:
                            async with asyncio.timeout(a.deadline):
                                await asyncio.sleep(a.upstream)
                            reply = reply_ok(line, state)
                        except TimeoutError:
                            reply = late
                    else:
                        await asyncio.sleep(a.upstream)
                        reply = reply_ok(line, state)
                    writer.write(reply)
                    await writer.drain()
                finally:
                    if sem is not None:
                        sem.release()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def sampler() -> None:
            while True:
                samples.add(len(asyncio.all_tasks()))
                await asyncio.sleep(SAMPLE_S)

        server = await asyncio.start_server(handle, a.host, a.port, backlog=BACKLOG)
        tick = asyncio.create_task(sampler()) if a.samples else None
        announce(*server.sockets[0].getsockname()[:2])
        await stop.wait()
        if tick is not None:
            tick.cancel()
        server.close()

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


# -- threading ----------------------------------------------------------------------


def serve_threading(a: Args) -> None:
    err = reply_err(a.limit)
    late = reply_timeout(a.deadline)
    samples = Samples(a.samples)

    def read_line(conn: socket.socket) -> bytes:
        buf = b""
        while b"\n" not in buf and len(buf) < 4096:
            data = conn.recv(4096)
            if not data:
                break
            buf += data
        return buf

    def handle(conn: socket.socket, sem: threading.BoundedSemaphore | None) -> None:
        try:
            with conn:
                conn.settimeout(30)
                line = read_line(conn)
                state = b"x" * (a.state_kib * 1024)
                if a.deadline and a.deadline < a.upstream:
                    # No way to cancel a thread: the deadline has to be a
                    # timeout on the blocking call itself.
                    threading.Event().wait(a.deadline)
                    reply = late
                else:
                    time.sleep(a.upstream)
                    reply = reply_ok(line, state)
                conn.sendall(reply)
        except OSError:
            pass
        finally:
            if sem is not None:
                sem.release()

    def reject(conn: socket.socket) -> None:
        # On the acceptor thread: the request line is already there or
        # close behind the handshake.
        try:
            with conn:
                conn.settimeout(1.0)
                read_line(conn)
                conn.sendall(err)
        except OSError:
            pass

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sem = threading.BoundedSemaphore(a.limit) if a.limit else None
    pool = ThreadPoolExecutor(a.limit) if a.limit else None

    def sampler() -> None:
        while True:
            samples.add(threading.active_count())
            time.sleep(SAMPLE_S)

    if a.samples:
        threading.Thread(target=sampler, daemon=True).start()
    with socket.create_server((a.host, a.port), backlog=BACKLOG) as ln:
        announce(*ln.getsockname()[:2])
        try:
            while True:
                try:
                    conn, _ = ln.accept()
                except OSError:  # EMFILE and friends: back off, keep the listener
                    time.sleep(0.01)
                    continue
                if sem is None:
                    threading.Thread(target=handle, args=(conn, None), daemon=True).start()
                elif sem.acquire(blocking=False):
                    assert pool is not None
                    pool.submit(handle, conn, sem)
                else:
                    reject(conn)
        except KeyboardInterrupt:
            pass
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="requests in flight; 0: no limit")
    p.add_argument("--upstream", type=float, default=1.0, help="seconds the upstream takes")
    p.add_argument(
        "--deadline", type=float, default=0.0, help="per-request upstream deadline; 0: none"
    )
    p.add_argument("--samples", default=None, help="append 'time tasks-alive' lines here")
    p.add_argument("--state-kib", type=int, default=64, help="per-request state held, KiB")
    p.add_argument("--procs", type=int, default=None, help="gmprt's Ps (default: its choice)")
    a = p.parse_args(argv, namespace=Args())
    raise_nofile_limit()
    if a.kind == "uvloop":
        serve_asyncio(a, "uvloop")
    else:
        {"gmprt": serve_gmprt, "asyncio": serve_asyncio, "threading": serve_threading}[a.kind](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
