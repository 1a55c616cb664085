"""TLS echo: gmprt.net's TLS (TLSConn on the stdlib ssl module) against
asyncio + ssl and uvloop + ssl, all serving TLS 1.3 with the same
certificate.

Two scenarios, each server in a fresh process, driven by one neutral load
client (this file's ``--client`` mode: asyncio protocols on uvloop when it is
installed, else on asyncio) in another process:

- **echo**: C = 100 connections, one 1 KiB message in flight each, started
  after every handshake is done; msgs/s and the **server's CPU per message**
  (utime + stime from /proc/PID/stat over the measured window, divided by the
  messages echoed in it). The client is the same for every server, so msgs/s
  is partly the client's limit on a small machine; CPU per message is the
  server's own cost.
- **handshakes**: full TLS 1.3 handshakes (no resumption), 8 at a time, each
  confirmed by a 1-byte echo; handshakes/s and server CPU per handshake.

Contenders: gmprt (default procs and procs=1: ``TLSConn.recv``/``sendall``
per message), asyncio streams and protocol, and uvloop streams and protocol
when uvloop is installed (``pip install uvloop``; skipped with a note
otherwise). Rounds go round-robin over the contenders; each figure is the
median of the rounds (``--rounds``, default 3), and each round's server
first serves one discarded echo run.

    python benches/tls.py              # 3 rounds, 3 s echo and 2 s handshake windows
    python benches/tls.py --quick      # 3 rounds, 1 s windows
    python benches/tls.py --servers gmprt,uvloop-protocol --json out.json

Certificates are made with the ``openssl`` CLI in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
CONTENDERS = [
    "gmprt",
    "gmprt-procs1",
    "asyncio-streams",
    "asyncio-protocol",
    "uvloop-streams",
    "uvloop-protocol",
]
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of `pid`, seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ---- certificates -----------------------------------------------------------------


def make_certs(d: Path) -> dict[str, str]:
    openssl = shutil.which("openssl")
    if not openssl:
        raise SystemExit("needs the openssl CLI to make the test certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=gmprt bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "srv.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
    )
    run(
        "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return {"ca": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


# ---- servers (--serve NAME) ---------------------------------------------------------


def serve_gmprt(ctx: ssl.SSLContext, host: str, procs: int | None) -> None:
    import gmprt
    from gmprt import net

    async def handle(conn: Any) -> None:
        try:
            while data := await conn.recv(65536):
                await conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    async def main() -> None:
        ln = net.listen(host, 0, ssl=ctx)
        print(f"listening on {host}:{ln.address[1]}", flush=True)
        while True:
            gmprt.go(handle, await ln.accept())

    gmprt.run(main, procs=procs)


def serve_asyncio(ctx: ssl.SSLContext, host: str, loop_name: str, style: str) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            w.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if style == "protocol":
            srv = await loop.create_server(Echo, host, 0, ssl=ctx, backlog=1024)
        else:
            srv = await asyncio.start_server(handle, host, 0, ssl=ctx, backlog=1024)
        port = srv.sockets[0].getsockname()[1]
        print(f"listening on {host}:{port}", flush=True)
        await asyncio.Event().wait()

    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


def serve(name: str, cert: str, key: str, host: str) -> None:
    ctx = server_context(cert, key)
    if name.startswith("gmprt"):
        procs = int(name.removeprefix("gmprt-procs")) if name != "gmprt" else None
        serve_gmprt(ctx, host, procs)
    else:
        loop_name, style = name.split("-")
        serve_asyncio(ctx, host, loop_name, style)


# ---- the load client (--client) -----------------------------------------------------


def client(a: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    msg = os.urandom(a.size)

    class Echo(asyncio.Protocol):
        """One message in flight; counts whole echoes."""

        def __init__(self, state: dict[str, Any]) -> None:
            self.st = state
            self.got = 0

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.got += len(data)
            while self.got >= a.size:
                self.got -= a.size
                self.st["msgs"] += 1
                if not self.st["stop"]:
                    self.transport.write(msg)

    async def echo() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        st: dict[str, Any] = {"msgs": 0, "stop": False}
        conns = []
        for _ in range(a.conns):  # the handshakes, before anything is measured
            t, p = await loop.create_connection(
                lambda: Echo(st), a.host, a.port, ssl=ctx, server_hostname="localhost"
            )
            conns.append((t, p))
        for t, _ in conns:
            t.write(msg)
        await asyncio.sleep(a.warmup)
        m0, c0, t0 = st["msgs"], proc_cpu(a.pid), time.monotonic()
        await asyncio.sleep(a.duration)
        m1, c1, t1 = st["msgs"], proc_cpu(a.pid), time.monotonic()
        st["stop"] = True
        for t, _ in conns:
            t.close()
        msgs = m1 - m0
        return {
            "msgs": msgs,
            "seconds": t1 - t0,
            "msgs_per_s": msgs / (t1 - t0),
            "server_cpu_s": c1 - c0,
            "server_cpu_us_per_msg": (c1 - c0) / msgs * 1e6 if msgs else None,
            "client_cpu": cpu_self(),
        }

    async def handshakes() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        done = [0]
        measuring = [False]
        stop = [False]

        class One(asyncio.Protocol):
            def __init__(self, fut: asyncio.Future[None]) -> None:
                self.fut = fut

            def data_received(self, data: bytes) -> None:
                if not self.fut.done():
                    self.fut.set_result(None)

            def connection_lost(self, exc: Exception | None) -> None:
                if not self.fut.done():
                    self.fut.set_exception(ConnectionError("closed before the echo"))

        async def worker() -> None:
            while not stop[0]:
                fut = loop.create_future()
                t, _ = await loop.create_connection(
                    lambda fut=fut: One(fut), a.host, a.port, ssl=ctx, server_hostname="localhost"
                )
                t.write(b"x")
                await fut
                t.close()
                if measuring[0]:
                    done[0] += 1

        ws = [asyncio.ensure_future(worker()) for _ in range(8)]
        await asyncio.sleep(a.warmup)
        measuring[0] = True
        c0, t0 = proc_cpu(a.pid), time.monotonic()
        await asyncio.sleep(a.duration)
        n, c1, t1 = done[0], proc_cpu(a.pid), time.monotonic()
        stop[0] = True
        await asyncio.gather(*ws, return_exceptions=True)
        return {
            "handshakes": n,
            "seconds": t1 - t0,
            "handshakes_per_s": n / (t1 - t0),
            "server_cpu_s": c1 - c0,
            "server_cpu_us_per_handshake": (c1 - c0) / n * 1e6 if n else None,
        }

    main = echo if a.mode == "echo" else handshakes
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            out = runner.run(main())
        out["client_loop"] = "uvloop"
    except ImportError:
        out = asyncio.run(main())
        out["client_loop"] = "asyncio"
    return out


def cpu_self() -> float:
    t = os.times()
    return t.user + t.system


# ---- the driver -----------------------------------------------------------------------


def start_server(
    name: str, certs: dict[str, str], host: str
) -> tuple[subprocess.Popen[bytes], int]:
    err = tempfile.TemporaryFile()
    argv = [sys.executable, str(HERE), "--serve", name, "--cert", certs["cert"]]
    argv += ["--key", certs["key"], "--host", host]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + 30
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        chunk = os.read(proc.stdout.fileno(), 4096) if left > 0 and sel.select(left) else b""
        if not chunk:
            proc.kill()
            proc.wait()
            err.seek(0)
            raise RuntimeError(f"{name}: did not listen\n{err.read().decode()[-2000:]}")
        buf += chunk
    sel.close()
    return proc, int(buf.split(b"\n", 1)[0].rsplit(b":", 1)[1])


def run_client(mode: str, port: int, pid: int, certs: dict[str, str], a: argparse.Namespace):
    duration = a.duration if mode == "echo" else a.hs_duration
    argv = [sys.executable, str(HERE), "--client", mode, "--port", str(port), "--pid", str(pid)]
    argv += ["--ca", certs["ca"], "--host", a.host, "--conns", str(a.conns)]
    argv += ["--size", str(a.size), "--duration", str(duration), "--warmup", str(a.warmup)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + a.warmup + 120)
    if r.returncode != 0:
        raise RuntimeError(f"client {mode}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def one_round(name: str, certs: dict[str, str], a: argparse.Namespace) -> dict[str, Any]:
    proc, port = start_server(name, certs, a.host)
    try:
        # A discarded echo run first, against the same server: its closes
        # raise glibc's mmap threshold past asyncio's 256 KiB recv buffers,
        # which a fresh server maps and unmaps per message (see
        # benches/lines.py's one_run). Every contender gets the same.
        run_client("echo", port, proc.pid, certs, a)
        return {
            "echo": run_client("echo", port, proc.pid, certs, a),
            "handshake": run_client("handshake", port, proc.pid, certs, a),
        }
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def median(rows: list[dict[str, Any]], part: str, key: str) -> float | None:
    xs = [r[part][key] for r in rows if "failed" not in r and r[part].get(key) is not None]
    return statistics.median(xs) if xs else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 s windows")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    p.add_argument("--servers", default=",".join(CONTENDERS))
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--duration", type=float, help="echo window, s (default 3; --quick 1)")
    p.add_argument("--hs-duration", type=float, help="handshake window, s (default 2; 1)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds (default 0.5; 0.25)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--json", metavar="PATH")
    # internal modes
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--client", choices=["echo", "handshake"], help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--ca", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.duration = a.duration or (1.0 if a.quick else 3.0)
    a.hs_duration = a.hs_duration or (1.0 if a.quick else 2.0)
    a.warmup = a.warmup if a.warmup is not None else (0.25 if a.quick else 0.5)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.serve:
        serve(a.serve, a.cert, a.key, a.host)
        return 0
    if a.client:
        a.mode = a.client
        print(json.dumps(client(a)), flush=True)
        return 0

    summary, runs = bench(a)
    print_table(summary, a)
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "rounds": runs}, indent=2) + "\n")
    failed = any("failed" in r for rs in runs.values() for r in rs)
    return 1 if failed else 0


def bench(a: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Every round for every server; the medians, and the rounds."""
    names = [s.strip() for s in a.servers.split(",") if s.strip()]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        dropped = [n for n in names if n.startswith("uvloop")]
        names = [n for n in names if not n.startswith("uvloop")]
        if dropped:
            print(f"uvloop is not installed: skipping {', '.join(dropped)}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        certs = make_certs(Path(d))
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rnd in range(a.rounds):
            for n in names:
                try:
                    r = one_round(n, certs, a)
                    e, h = r["echo"], r["handshake"]
                    print(
                        f"[{rnd + 1}/{a.rounds}] {n:<17} echo {e['msgs_per_s']:>9,.0f} msgs/s "
                        f"{e['server_cpu_us_per_msg'] or 0:>7.1f} µs CPU/msg   "
                        f"handshakes {h['handshakes_per_s']:>7,.0f}/s "
                        f"{(h['server_cpu_us_per_handshake'] or 0) / 1000:>6.2f} ms CPU/hs",
                        flush=True,
                    )
                except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
                    r = {"failed": str(exc)}
                    print(f"[{rnd + 1}/{a.rounds}] {n}: FAILED {str(exc).splitlines()[0]}")
                runs[n].append(r)
    summary = {
        n: {
            "msgs_per_s": median(rs, "echo", "msgs_per_s"),
            "server_cpu_us_per_msg": median(rs, "echo", "server_cpu_us_per_msg"),
            "handshakes_per_s": median(rs, "handshake", "handshakes_per_s"),
            "server_cpu_us_per_handshake": median(rs, "handshake", "server_cpu_us_per_handshake"),
        }
        for n, rs in runs.items()
    }
    for n, rs in runs.items():
        if all("failed" in r for r in rs):
            summary[n] = {"failed": rs[0]["failed"].splitlines()[0]}
    return summary, runs


def print_table(summary: dict[str, Any], a: argparse.Namespace) -> None:
    g = summary.get("gmprt", {})
    print(
        f"\n### TLS 1.3 echo, C={a.conns} x {a.size} B, median of {a.rounds} rounds "
        f"({a.duration:g} s echo / {a.hs_duration:g} s handshake windows)\n"
    )
    print("| server | msgs/s | server CPU µs/msg | gmprt CPU/msg ratio | handshakes/s "
          "| server CPU ms/handshake |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for n, s in summary.items():
        if s.get("msgs_per_s") is None:
            print(f"| {n} | — | — | — | — | — |")
            continue
        ratio = (
            f"{g['server_cpu_us_per_msg'] / s['server_cpu_us_per_msg']:.2f}×"
            if g.get("server_cpu_us_per_msg") and s["server_cpu_us_per_msg"] and n != "gmprt"
            else "—"
        )
        hs_cpu = s["server_cpu_us_per_handshake"]
        print(
            f"| {n} | {s['msgs_per_s']:,.0f} | {s['server_cpu_us_per_msg']:.1f} | {ratio} | "
            f"{s['handshakes_per_s']:,.0f} | {'—' if hs_cpu is None else f'{hs_cpu / 1000:.2f}'} |"
        )
    print(
        "\nCPU/msg ratio: gmprt's server CPU per message over the contender's (< 1 favours gmprt)."
    )


def run(quick: bool = False, scenarios: object = None) -> dict[str, Any]:
    """The ``tls`` scenario in benches/suite.py's shape: ``{"tls": {"params",
    "results": {server: medians}}}`` (quick: one round of 0.5 s windows)."""
    argv = ["--rounds", "1", "--duration", "0.5", "--hs-duration", "0.5"] if quick else []
    a = parse(argv)
    summary, _ = bench(a)
    params = {k: getattr(a, k) for k in ("conns", "size", "rounds", "duration", "hs_duration")}
    return {"tls": {"params": params, "results": summary}}


if __name__ == "__main__":
    sys.exit(main())
