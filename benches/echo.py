"""TCP echo: gmprt's echo server against asyncio, threading and uvloop.

Every server runs in its own process and every one is driven by the same
native client, ``gmprt-loadgen`` (rust/gmprt-loadgen): C connections, one
S-byte message in flight each, every echoed byte checked. Two scenarios:

- **echo**: C = 100 and 1,000, S = 1 KiB and 16 KiB; msgs/s, p50/p99
  latency, and gmprt's ratio to each contender (msgs/s ratio > 1 and p99
  ratio < 1 favour gmprt);
- **idle**: N idle connections (10,000 by default) held open to each server;
  the server's RSS growth per connection (psutil), from a baseline taken
  after it listens to a reading taken once every connection has been
  accepted, has echoed one byte (so each has its task/thread/G set up) and
  the process has settled.

Contenders: gmprt (examples/echo_server.py, default procs and procs=1),
asyncio streams and protocol, threading (a thread per connection), and
uvloop streams and protocol when uvloop is installed (benches/servers/).
gmprt is skipped, with a note, while ``gmprt.net`` is not available.

    python benches/echo.py                    # ~3 min: 3 s per run, 10k idle connections
    python benches/echo.py --quick            # ~1 s per run, 2k idle connections
    python benches/echo.py --json results.json --servers gmprt,uvloop-protocol
    python benches/echo.py --repeat 3 --idle 0  # echo only, best of 3 rounds, round-robin

The load generator is built with ``cargo build --release -p gmprt-loadgen``
when cargo is on PATH (a no-op when it is up to date), and found under
``$CARGO_TARGET_DIR`` or ``target/`` (or pass ``--loadgen PATH``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benches" / "servers" / "echo_servers.py"
GMPRT_SERVER = ROOT / "examples" / "echo_server.py"

GMPRT = "gmprt"
CONTENDERS = [
    GMPRT,
    "gmprt-procs1",
    "asyncio-streams",
    "asyncio-protocol",
    "threading",
    "uvloop-streams",
    "uvloop-protocol",
]


@dataclass
class Contender:
    name: str
    argv: list[str]
    skip: str | None = None  # why it cannot run here (short, for the tables)
    skip_detail: str | None = None


def probe(code: str) -> str | None:
    """Runs `code` in a fresh interpreter; the error's last line, or None if it ran."""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    if r.returncode == 0:
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {r.returncode}"


def contenders(names: list[str]) -> list[Contender]:
    gmprt_err = probe("import gmprt\nfrom gmprt import net\nnet.listen, net.dial")
    uvloop_err = probe("import uvloop")
    out = []
    for name in names:
        if name.startswith(GMPRT):
            argv = [sys.executable, str(GMPRT_SERVER)]
            if name != GMPRT:
                argv += ["--procs", name.removeprefix("gmprt-procs")]
            err = gmprt_err
            skip = "gmprt.net not available" if err else None
        else:
            argv = [sys.executable, str(SERVERS), name]
            err = uvloop_err if name.startswith("uvloop") else None
            skip = "uvloop not installed" if err else None
        out.append(Contender(name, argv, skip, err))
    return out


# -- processes -------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stderr: Any = field(repr=False)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]


def start_server(c: Contender, host: str, timeout: float = 30.0) -> Server:
    """Starts `c` on a free port and waits for its ``listening on H:P`` line."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*c.argv, "--host", host, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=err,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"{c.name}: no 'listening on' line within {timeout:.0f} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{c.name}: exited before listening")
            buf += chunk
    except RuntimeError as e:
        proc.kill()
        proc.wait()
        err.seek(0)
        raise RuntimeError(f"{e}\n{err.read().decode(errors='replace')[-2000:]}") from None
    finally:
        sel.close()
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{c.name}: unexpected first line {line!r}")
    return Server(c.name, proc, int(line.rsplit(":", 1)[1]), err)


def stop_server(s: Server) -> dict[str, Any]:
    """SIGTERM, then SIGKILL after 5 s; how long it took and how it ended."""
    t0 = time.monotonic()
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        rc = s.proc.wait()
    if s.proc.stdout:
        s.proc.stdout.close()
    out = {"exit_code": rc, "stop_s": round(time.monotonic() - t0, 3)}
    if rc != 0:
        out["stderr"] = s.stderr_tail()
    s.stderr.close()
    return out


def cpu_seconds(pid: int) -> float | None:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the load generator -----------------------------------------------------------


def find_loadgen(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "gmprt-loadgen"], cwd=ROOT, check=True
        )
    targets = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    targets.append(ROOT / "target")
    for t in targets:
        exe = (ROOT / t / "release" / "gmprt-loadgen").resolve()
        if exe.is_file():
            return exe
    raise SystemExit(
        "gmprt-loadgen not found: run `cargo build --release -p gmprt-loadgen` "
        "or pass --loadgen PATH"
    )


def run_echo(
    loadgen: Path, c: Contender, host: str, conns: int, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": c.name, "connections": conns, "size": size}
    if c.skip:
        return row | {"skipped": c.skip, "skip_detail": c.skip_detail}
    try:
        srv = start_server(c, host)
    except RuntimeError as e:
        return row | {"failed": str(e)}
    try:
        cmd = [str(loadgen), "--host", host, "--port", str(srv.port)]
        cmd += ["-c", str(conns), "-s", str(size), "-t", str(args.threads)]
        # One discarded run first, ended by its closes: a fresh asyncio
        # server's recv(256 KiB) buffers sit above glibc's initial mmap
        # threshold and cost an mmap + mremap + munmap per message (3-4x
        # the CPU) until a connection's EOF frees a whole one and raises
        # the threshold. Every contender gets the same warm-up.
        warm = [*cmd, "-d", str(min(args.duration, 1.0)), "--warmup", "0"]
        subprocess.run(warm, capture_output=True, timeout=args.duration + 60)
        cmd += ["-d", str(args.duration), "--warmup", str(args.warmup), "--json"]
        srv_cpu0, cli_cpu0, t0 = cpu_seconds(srv.proc.pid), children_cpu(), time.monotonic()
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 60
        )
        wall = time.monotonic() - t0
        srv_cpu1 = cpu_seconds(srv.proc.pid)
        srv_cpu = srv_cpu1 - srv_cpu0 if srv_cpu0 is not None and srv_cpu1 is not None else None
        cli_cpu = children_cpu() - cli_cpu0
        if r.returncode not in (0, 1) or not r.stdout.strip():
            return row | {"failed": f"gmprt-loadgen exit {r.returncode}: {r.stderr.strip()}"}
        lg = json.loads(r.stdout)
    finally:
        stop = stop_server(srv)
    row |= {
        "msgs_per_s": lg["msgs_per_s"],
        "mib_per_s": lg["mib_per_s"],
        "p50_us": lg["latency_us"]["p50"],
        "p99_us": lg["latency_us"]["p99"],
        "max_us": lg["latency_us"]["max"],
        "errors": lg["errors"]["total"],
        "first_error": lg["first_error"],
        "server_cpu": None if srv_cpu is None else round(srv_cpu / wall, 3),
        "client_cpu": round(cli_cpu / wall, 3),
        "loadgen": lg,
        "stop": stop,
    }
    return row


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most msgs/s (or the first, if none ran), all rounds attached."""
    ran = [r for r in rows if "msgs_per_s" in r]
    top = dict(max(ran, key=lambda r: r["msgs_per_s"]) if ran else rows[0])
    if len(rows) > 1:
        top["rounds"] = [
            {k: r.get(k) for k in ("msgs_per_s", "p50_us", "p99_us", "errors", "failed")}
            for r in rows
        ]
    return top


# -- idle connections -------------------------------------------------------------


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def open_idle(host: str, port: int, n: int) -> list[socket.socket]:
    """N connections, each echoing one byte once so the server has set it up."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=30)
            socks.append(s)
            s.sendall(b"!")
            if s.recv(1) != b"!":
                raise ConnectionError(f"connection {len(socks)}: no echo")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def run_idle(c: Contender, host: str, n: int, settle: float) -> dict[str, Any]:
    row: dict[str, Any] = {"server": c.name, "connections": n}
    if c.skip:
        return row | {"skipped": c.skip, "skip_detail": c.skip_detail}
    try:
        srv = start_server(c, host)
    except RuntimeError as e:
        return row | {"failed": str(e)}
    socks: list[socket.socket] = []
    try:
        time.sleep(settle)
        base = rss(srv.proc.pid)
        t0 = time.monotonic()
        try:
            socks = open_idle(host, srv.port, n)
        except OSError as e:
            return row | {"failed": f"opening connections: {e}"}
        open_s = time.monotonic() - t0
        time.sleep(settle)
        after = rss(srv.proc.pid)
        # Still served? A handful of pings across the range.
        for s in socks[:: max(1, n // 8)]:
            s.sendall(b"?")
            if s.recv(1) != b"?":
                return row | {"failed": "an idle connection stopped echoing"}
        row |= {
            "rss_base_mib": round(base / 2**20, 2),
            "rss_after_mib": round(after / 2**20, 2),
            "bytes_per_conn": round((after - base) / n),
            "open_s": round(open_s, 2),
        }
    finally:
        # The server goes first so the TIME_WAITs land on its side.
        stop = stop_server(srv) if srv.proc.returncode is None else None
        for s in socks:
            s.close()
    return row | {"stop": stop}


# -- report ------------------------------------------------------------------------


def fmt_ratio(x: float | None, y: float | None) -> str:
    if not x or not y:
        return "—"
    return f"{x / y:.2f}×"


def note(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "failed" in row:
        return "FAILED: " + row["failed"].splitlines()[0]
    if row.get("errors"):
        return f"{row['errors']} errors: {row['first_error']}"
    return ""


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def echo_table(rows: list[dict[str, Any]], conns: int, size: int, args) -> str:
    sel = [r for r in rows if r["connections"] == conns and r["size"] == size]
    g = next((r for r in sel if r["server"] == GMPRT and "msgs_per_s" in r), None)
    lines = [
        f"### echo: {conns} connections, {size_label(size)} messages "
        f"({args.duration:g} s after {args.warmup:g} s warmup"
        f"{f', best of {args.repeat}' if args.repeat > 1 else ''}, gmprt-loadgen "
        f"{args.threads} thread{'s' if args.threads > 1 else ''})",
        "",
        "| server | msgs/s | p50 µs | p99 µs | server CPU | client CPU "
        "| gmprt msgs/s ratio | gmprt p99 ratio | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sel:
        if "msgs_per_s" not in r:
            lines.append(f"| {r['server']} | — | — | — | — | — | — | — | {note(r)} |")
            continue
        cpu = "—" if r["server_cpu"] is None else f"{r['server_cpu']:.0%}"
        is_g = r is g
        lines.append(
            f"| {r['server']} | {r['msgs_per_s']:,.0f} | {r['p50_us']:,.0f} | "
            f"{r['p99_us']:,.0f} | {cpu} | {r['client_cpu']:.0%} | "
            f"{'—' if is_g or not g else fmt_ratio(g['msgs_per_s'], r['msgs_per_s'])} | "
            f"{'—' if is_g or not g else fmt_ratio(g['p99_us'], r['p99_us'])} | {note(r)} |"
        )
    lines += ["", RATIO_NOTE]
    if g:
        lines += ["", echo_goal(g, sel)]
    return "\n".join(lines)


RATIO_NOTE = (
    "Ratios are gmprt's figure divided by the contender's: above 1 for msgs/s and "
    "below 1 for p99 and bytes favour gmprt."
)


def echo_goal(g: dict[str, Any], sel: list[dict[str, Any]]) -> str:
    """BENCHMARKS.md: >= 1.3x uvloop streams and >= asyncio protocol msgs/s, p99 no worse."""
    by = {r["server"]: r for r in sel if "msgs_per_s" in r}
    checks = []
    for name, want in (("uvloop-streams", 1.3), ("asyncio-protocol", 1.0)):
        r = by.get(name)
        if not r:
            checks.append(f"{name}: not run")
            continue
        ratio = g["msgs_per_s"] / r["msgs_per_s"] if r["msgs_per_s"] else float("inf")
        ok = ratio >= want and g["p99_us"] <= r["p99_us"]
        checks.append(
            f"{'met' if ok else 'NOT MET'} vs {name} (msgs/s {ratio:.2f}×, want ≥ {want}×; "
            f"p99 {g['p99_us']:,.0f} vs {r['p99_us']:,.0f} µs)"
        )
    return "Goal: " + "; ".join(checks) + "."


def idle_table(rows: list[dict[str, Any]], args) -> str:
    g = next((r for r in rows if r["server"] == GMPRT and "bytes_per_conn" in r), None)
    n = rows[0]["connections"] if rows else args.idle
    lines = [
        f"### idle connections: server RSS growth with {n:,} idle connections",
        "",
        "| server | RSS before MiB | RSS after MiB | bytes/conn | gmprt ratio | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "bytes_per_conn" not in r:
            lines.append(f"| {r['server']} | — | — | — | — | {note(r)} |")
            continue
        ratio = "—" if r is g or not g else fmt_ratio(g["bytes_per_conn"], r["bytes_per_conn"])
        lines.append(
            f"| {r['server']} | {r['rss_base_mib']:.1f} | {r['rss_after_mib']:.1f} | "
            f"{r['bytes_per_conn']:,} | {ratio} | {note(r)} |"
        )
    lines += ["", RATIO_NOTE]
    if g:
        ok = g["bytes_per_conn"] <= 2048
        lines += [
            "",
            f"Goal (≤ 2 KB per connection): {'met' if ok else 'NOT MET'} "
            f"({g['bytes_per_conn']:,} bytes).",
        ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    for mod in ("uvloop", "psutil"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="~1 s runs, 2,000 idle connections")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 3)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds per run (default 1)")
    p.add_argument("--connections", default="100,1000", help="comma-separated C values")
    p.add_argument("--sizes", default="1024,16384", help="comma-separated message sizes")
    p.add_argument("--servers", default=",".join(CONTENDERS), help="comma-separated contenders")
    p.add_argument("--idle", type=int, help="idle connections (default 10,000; 0 skips)")
    p.add_argument("--no-echo", action="store_true", help="only the idle scenario")
    p.add_argument("--threads", type=int, default=1, help="gmprt-loadgen threads (default 1)")
    p.add_argument(
        "--repeat", type=int, default=1, help="echo rounds per contender, best kept (default 1)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--loadgen", help="path of the gmprt-loadgen binary")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    args = p.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 1.0)
    args.idle = args.idle if args.idle is not None else (2000 if args.quick else 10_000)
    args.names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.names) - set(CONTENDERS) - {f"gmprt-procs{i}" for i in range(1, 65)}
    if unknown:
        p.error(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(CONTENDERS)})")

    try:
        import psutil  # noqa: F401  (server CPU and RSS)
    except ImportError:
        p.error("needs psutil: pip install psutil")
    return args


def bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Runs what `args` asks for; every figure, and the report's sections."""
    # Inherited by every server too.
    nofile = raise_nofile_limit()
    if args.idle and args.idle + 64 > nofile:
        print(f"RLIMIT_NOFILE is {nofile}: idle connections cut to {nofile - 64}", flush=True)
        args.idle = nofile - 64

    cs = contenders(args.names)
    for c in cs:
        if c.skip:
            print(f"{c.name}: skipped, {c.skip}: {c.skip_detail}", flush=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            k: getattr(args, k)
            for k in (
                "quick",
                "duration",
                "warmup",
                "repeat",
                "connections",
                "sizes",
                "idle",
                "threads",
            )
        },
        "echo": [],
        "idle": [],
    }
    sections = []
    if not args.no_echo:
        loadgen = find_loadgen(args.loadgen)
        results["config"]["loadgen"] = str(loadgen)
        conns_list = [int(x) for x in args.connections.split(",")]
        sizes = [int(x) for x in args.sizes.split(",")]
        for conns in conns_list:
            for size in sizes:
                # Rounds go round-robin over the contenders, so a slow spell of
                # the (shared) machine hits them all alike; each keeps its best.
                runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in cs}
                for rnd in range(args.repeat):
                    for c in cs:
                        if c.skip and runs[c.name]:
                            continue  # said once is enough
                        row = run_echo(loadgen, c, args.host, conns, size, args)
                        runs[c.name].append(row)
                        brief = (
                            f"{row['msgs_per_s']:>9,.0f} msgs/s  p99 {row['p99_us']:>8,.0f} µs"
                            if "msgs_per_s" in row
                            else note(row)
                        )
                        label = f"echo c={conns:<5} {size_label(size):>6}  {c.name:<17}"
                        rep = f" [{rnd + 1}/{args.repeat}]" if args.repeat > 1 else ""
                        print(f"{label} {brief}{rep}", flush=True)
                for c in cs:
                    results["echo"].append(best(runs[c.name]))
                sections.append(echo_table(results["echo"], conns, size, args))
    if args.idle:
        for c in cs:
            gc.collect()
            row = run_idle(c, args.host, args.idle, settle=0.5 if args.quick else 1.0)
            results["idle"].append(row)
            brief = (
                f"{row['bytes_per_conn']:>8,} bytes/conn" if "bytes_per_conn" in row else note(row)
            )
            print(f"idle n={args.idle:<6} {c.name:<17} {brief}", flush=True)
        sections.append(idle_table(results["idle"], args))

    return results, sections


SCENARIOS = ("echo", "idle")


def case_key(conns: int, size: int) -> str:
    return f"c{conns}-{size}"


def run(quick: bool = False, scenarios: object = None) -> dict:
    """Both scenarios (or those named in `scenarios`) for every server, in the
    suite's shape: ``{"echo": {"params", "results": {server: {case: row}}},
    "idle": {"params", "results": {server: row}}}``."""
    want = set(scenarios or SCENARIOS)
    if quick:
        argv = ["--quick", "--connections", "50", "--sizes", "1024"]
        argv += ["--duration", "0.5", "--warmup", "0.1", "--idle", "300"]
    else:
        argv = ["--connections", "10,100,1000", "--sizes", "1024,16384"]
    if "echo" not in want:
        argv.append("--no-echo")
    if "idle" not in want:
        argv += ["--idle", "0"]
    args = parse(argv)
    results, _ = bench(args)
    out: dict = {}
    if "echo" in want:
        cases = [
            [int(c), int(s)] for c in args.connections.split(",") for s in args.sizes.split(",")
        ]
        by: dict = {name: {} for name in args.names}
        for row in results["echo"]:
            by[row["server"]][case_key(row["connections"], row["size"])] = row
        params = {k: results["config"][k] for k in ("duration", "warmup", "repeat", "threads")}
        out["echo"] = {"params": params | {"cases": cases}, "results": by}
    if "idle" in want:
        out["idle"] = {
            "params": {"connections": args.idle},
            "results": {row["server"]: row for row in results["idle"]},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results, sections = bench(args)
    print()
    print("\n\n".join(sections))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    failed = [r for r in results["echo"] + results["idle"] if "failed" in r or r.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
