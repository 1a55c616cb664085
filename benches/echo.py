"""TCP echo: gmprt's echo server against asyncio, threading, uvloop and Go.

Every server runs in its own process and every one is driven by the same
native client, ``gmprt-loadgen`` (rust/gmprt-loadgen): C connections, one
S-byte message in flight each, every echoed byte checked. On a 2-core
machine the client shares the CPU with the server, so msgs/s mostly
measures the client; the figure that compares servers is the **server's
CPU time per message**: its utime + stime, which the load generator reads
from /proc/PID/stat (``--pid``) as the measured window opens and as it
closes, divided by the messages echoed in the window. Two scenarios:

- **echo**: C = 100 and 1,000, S = 1 KiB and 16 KiB; server CPU µs per
  message (the goal: gmprt's ≤ 0.9× uvloop protocol's and ≤ 0.9× Go's at
  C=100 × 1 KiB and C=1000 × 16 KiB), msgs/s, p50/p99 latency and the
  server's and client's CPU share, and gmprt's CPU per message divided by
  each contender's (below 1 favours gmprt);
- **idle**: N idle connections (10,000 by default) held open to each server;
  the server's RSS growth per connection (psutil), from a baseline taken
  after it listens to a reading taken once every connection has been
  accepted, has echoed one byte (so each has its task/thread/G set up) and
  the process has settled.

Every figure is the median of ``--rounds`` rounds (3; 1 with ``--quick``),
min and max kept. The rounds interleave the contenders, the order rotating
each round, so a slow spell of the shared machine falls on all alike; each
round starts a fresh server, and an echo round first gives it a discarded
load run (see ``one_run``). Before round 1 every contender runs one
discarded warm-up round.

Contenders: gmprt (examples/echo_server.py, default procs and procs=1),
asyncio streams and protocol, threading (a thread per connection), uvloop
streams and protocol when uvloop is installed, the same asyncio streams and
protocol servers on gmprt's asyncio loop (``gmprt.aio-*``; benches/servers/
echo_servers.py), and ``go`` (benches/servers/echo_server.go, a goroutine
per connection, GOMAXPROCS at Go's default) when a Go toolchain is on PATH:
it is built into target/go-echo/. gmprt is skipped, with a note, while
``gmprt.net`` is not available.

``--syscalls`` is a diagnostic instead of the scenarios: for each contender
a fresh, warmed server runs a 2 s load with ``strace -c -f`` attached to all
its threads, and the syscalls it made are printed per message echoed
(strace slows the server a lot: the counts hold, the speed does not).

    python benches/echo.py                    # ~12 min: 3 rounds of 3 s runs, 10k idle connections
    python benches/echo.py --quick            # < 1 min: 1 round of 0.5 s runs, 2k idle connections
    python benches/echo.py --json results.json --servers gmprt,uvloop-protocol,go
    python benches/echo.py --rounds 5 --idle 0  # echo only, median of 5 rounds
    python benches/echo.py --syscalls --servers gmprt,uvloop-protocol,go

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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benches" / "servers" / "echo_servers.py"
GMPRT_SERVER = ROOT / "examples" / "echo_server.py"
GO_SERVER = ROOT / "benches" / "servers" / "echo_server.go"
GO_BUILD = ROOT / "target" / "go-echo"

GMPRT = "gmprt"
GO = "go"
CONTENDERS = [
    GMPRT,
    "gmprt-procs1",
    "asyncio-streams",
    "asyncio-protocol",
    "threading",
    "uvloop-streams",
    "uvloop-protocol",
    "gmprt.aio-streams",
    "gmprt.aio-protocol",
    GO,
]
# BENCHMARKS.md: gmprt's server CPU per message against these, in these cases.
GOAL_RIVALS = (("uvloop-protocol", 0.9), (GO, 0.9))
GOAL_CASES = ((100, 1024), (1000, 16384))
GOAL_TEXT = (
    "server CPU/msg ≤ 0.9× uvloop protocol's and ≤ 0.9× Go's, at C=100 × 1 KiB and C=1000 × 16 KiB"
)


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


def build_go() -> tuple[Path | None, str | None, str | None]:
    """Builds the Go echo server into target/go-echo/ (go build's cache makes
    a rebuild cheap): (the binary, None, None), or (None, why, detail)."""
    go = shutil.which("go")
    if not go:
        return None, "no Go toolchain: install golang-go", "`go` is not on PATH"
    exe = GO_BUILD / "echo_server"
    # Its caches under target/, not $HOME; no cgo, so no C compiler is needed.
    env = os.environ | {
        "GOCACHE": str(GO_BUILD / "cache"),
        "GOPATH": str(GO_BUILD / "gopath"),
        "CGO_ENABLED": "0",
    }
    try:
        r = subprocess.run(
            [go, "build", "-o", str(exe), str(GO_SERVER)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return None, "go build timed out", None
    if r.returncode != 0:
        return None, "go build failed", (r.stderr or r.stdout).strip()[-2000:]
    return exe, None, None


def go_procs() -> int:
    """GOMAXPROCS as Go picks it by default: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def contenders(names: list[str]) -> list[Contender]:
    gmprt_err = probe("import gmprt\nfrom gmprt import net\nnet.listen, net.dial")
    uvloop_err = probe("import uvloop") if any(n.startswith("uvloop") for n in names) else None
    out = []
    for name in names:
        if name.startswith(GMPRT) and not name.startswith("gmprt.aio"):
            argv = [sys.executable, str(GMPRT_SERVER)]
            if name != GMPRT:
                argv += ["--procs", name.removeprefix("gmprt-procs")]
            err = gmprt_err
            skip = "gmprt.net not available" if err else None
        elif name == GO:
            exe, skip, err = build_go()
            argv = [str(exe)] if exe else []
        else:
            argv = [sys.executable, str(SERVERS), name]
            err = uvloop_err if name.startswith("uvloop") else None
            skip = "uvloop not installed" if err else None
            if name.startswith("gmprt.aio"):
                err = gmprt_err
                skip = "gmprt not available" if err else None
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


def loadgen_argv(
    loadgen: Path,
    srv: Server,
    host: str,
    conns: int,
    size: int,
    threads: int = 1,
    lines: bool = False,
    unix: str | None = None,
) -> list[str]:
    """The load generator's command line against `srv`, less the timings."""
    to = ["--unix", unix] if unix else ["--host", host, "--port", str(srv.port)]
    argv = [str(loadgen), *to, "-c", str(conns), "-s", str(size), "-t", str(threads)]
    return argv + (["--lines"] if lines else [])


def warm_server(base: list[str], secs: float) -> None:
    """One discarded load run, ended by its closes.

    A fresh asyncio server's recv(256 KiB) buffers sit above glibc's
    initial 128 KiB mmap threshold, so each message maps, remaps and unmaps
    pages (strace: 1 mmap + 1 mremap + 1 munmap per message, 3-4x the CPU)
    until a whole buffer is freed, which first happens when a connection
    closes and raises glibc's dynamic threshold. This run's closes put
    every contender in its steady state before anything is measured.
    """
    subprocess.run(
        [*base, "-d", str(min(secs, 1.0)), "--warmup", "0"], capture_output=True, timeout=secs + 60
    )


def figures(lg: dict[str, Any]) -> dict[str, Any]:
    """One measured run's figures from the load generator's JSON report."""
    window = lg["duration_s"]
    row = {
        "cpu_us_per_msg": lg["server_cpu_us_per_msg"],
        "msgs_per_s": lg["msgs_per_s"],
        "mib_per_s": lg["mib_per_s"],
        "messages": lg["messages"],
        "p50_us": lg["latency_us"]["p50"],
        "p99_us": lg["latency_us"]["p99"],
        "max_us": lg["latency_us"]["max"],
        # Shares of one core over the window.
        "server_cpu": None if lg["server_cpu_s"] is None else round(lg["server_cpu_s"] / window, 3),
        "client_cpu": round(lg["client_cpu_s"] / window, 3),
        "errors": lg["errors"]["total"],
        "first_error": lg["first_error"],
    }
    if row["cpu_us_per_msg"] is None:
        row["failed"] = "no server CPU figure: " + (
            lg["server_cpu_error"] or "no message completed in the window"
        )
    return row


def one_run(
    loadgen: Path,
    c: Contender,
    conns: int,
    size: int,
    duration: float,
    warmup: float,
    host: str = "127.0.0.1",
    threads: int = 1,
    lines: bool = False,
    unix: str | None = None,
) -> dict[str, Any]:
    """One round for one contender: a fresh server, a discarded load run
    (``warm_server``), then the measured run; its figures, or why not."""
    if c.skip:
        return {"skipped": c.skip, "skip_detail": c.skip_detail}
    try:
        srv = start_server(c, host)
    except RuntimeError as e:
        return {"failed": str(e)}
    try:
        base = loadgen_argv(loadgen, srv, host, conns, size, threads, lines, unix)
        warm_server(base, duration)
        cmd = [*base, "-d", str(duration), "--warmup", str(warmup)]
        cmd += ["--json", "--pid", str(srv.proc.pid)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
        except subprocess.TimeoutExpired:
            return {"failed": "gmprt-loadgen did not finish"}
    finally:
        stop = stop_server(srv)
    if r.returncode not in (0, 1) or not r.stdout.strip():
        return {"failed": f"gmprt-loadgen exit {r.returncode}: {r.stderr.strip()}"}
    return figures(json.loads(r.stdout)) | {"stop": stop}


def _median(rows: list[dict[str, Any]], key: str, digits: int) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return round(m) if digits == 0 else round(m, digits)


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of the rounds that measured CPU per message, with its min
    and max (and msgs/s's); errors summed over those rounds. Where no round
    did, the first round's reason (skipped or failed)."""
    ran = [r for r in rows if r.get("cpu_us_per_msg") is not None and "failed" not in r]
    if not ran:
        return dict(rows[0]) if rows else {"failed": "no round ran"}
    cpu = [r["cpu_us_per_msg"] for r in ran]
    rates = [r["msgs_per_s"] for r in ran]
    out: dict[str, Any] = {
        "cpu_us_per_msg": round(statistics.median(cpu), 3),
        "cpu_min": round(min(cpu), 3),
        "cpu_max": round(max(cpu), 3),
        "msgs_per_s": round(statistics.median(rates)),
        "msgs_min": round(min(rates)),
        "msgs_max": round(max(rates)),
        "rounds": len(ran),
    }
    for key, digits in (
        ("mib_per_s", 2),
        ("p50_us", 0),
        ("p99_us", 0),
        ("max_us", 0),
        ("server_cpu", 3),
        ("client_cpu", 3),
    ):
        if any(key in r for r in ran):
            out[key] = _median(ran, key, digits)
    if any("errors" in r for r in ran):
        out["errors"] = sum(r.get("errors") or 0 for r in ran)
        out["first_error"] = next((r["first_error"] for r in ran if r.get("first_error")), None)
    failed = [r["failed"] for r in rows if "failed" in r]
    if failed:
        out["rounds_failed"] = failed
    return out


def rotated(names: list[str], rnd: int) -> list[str]:
    """`names` starting at the `rnd`-th (mod len): interleaved rounds whose
    order rotates, so a drift in the machine's load falls on each alike."""
    k = rnd % len(names) if names else 0
    return names[k:] + names[:k]


def run_rounds(
    names: list[str],
    rounds: int,
    one: Callable[[str], dict[str, Any]],
    show: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """`rounds` rounds of ``one(name)`` over `names`, interleaved (see
    ``rotated``); each name's rows in round order. A skipped contender is
    asked once, not every round."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(rounds):
        for n in rotated(names, rnd):
            if runs[n] and "skipped" in runs[n][0]:
                continue
            row = one(n)
            runs[n].append(row)
            if show:
                show(n, rnd, row)
    return runs


# -- syscalls per message (--syscalls) ----------------------------------------------


def parse_strace_summary(text: str) -> dict[str, int]:
    """``{syscall: calls}`` from the table ``strace -c`` prints: rows of
    ``% time  seconds  usecs/call  calls  [errors]  syscall`` between dashed
    rules, the ``total`` row left out."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[-1] == "total" or not parts[0][0].isdigit():
            continue
        try:
            calls[parts[-1]] = calls.get(parts[-1], 0) + int(parts[3])
        except ValueError:
            continue
    return calls


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def count_syscalls(
    loadgen: Path,
    strace: str,
    c: Contender,
    host: str,
    conns: int,
    size: int,
    secs: float,
    threads: int = 1,
) -> dict[str, Any]:
    """Syscalls per message of one fresh, warmed server, counted by strace
    attached to every thread it has (``-f`` with ``-p`` walks
    /proc/PID/task, and follows threads started later) during a
    ``secs``-second load run with no unmeasured warm-up, so the run's
    message count covers the whole time strace watched."""
    row: dict[str, Any] = {"server": c.name, "connections": conns, "size": size}
    if c.skip:
        return row | {"skipped": c.skip, "skip_detail": c.skip_detail}
    try:
        srv = start_server(c, host)
    except RuntimeError as e:
        return row | {"failed": str(e)}
    try:
        base = loadgen_argv(loadgen, srv, host, conns, size, threads)
        warm_server(base, 1.0)
        with tempfile.TemporaryDirectory(prefix="gmprt-strace-") as d:
            table, log = Path(d) / "summary", Path(d) / "log"
            with open(log, "wb") as err:
                st = subprocess.Popen(
                    [strace, "-c", "-f", "-o", str(table), "-p", str(srv.proc.pid)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            try:
                if not _wait_for(log, "attached", st, 10):
                    why = log.read_text(errors="replace").strip().splitlines()
                    return row | {"failed": "strace did not attach: " + (why[-1] if why else "")}
                r = subprocess.run(
                    [*base, "-d", str(secs), "--warmup", "0", "--json"],
                    capture_output=True,
                    text=True,
                    timeout=secs + 120,
                )
            finally:
                # SIGINT detaches and makes strace write its summary.
                st.send_signal(signal.SIGINT)
                try:
                    st.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    st.kill()
                    st.wait()
            calls = parse_strace_summary(table.read_text(errors="replace"))
    finally:
        stop_server(srv)
    if r.returncode not in (0, 1) or not r.stdout.strip():
        return row | {"failed": f"gmprt-loadgen exit {r.returncode}: {r.stderr.strip()}"}
    lg = json.loads(r.stdout)
    msgs = lg["messages"]
    if not msgs or not calls:
        return row | {"failed": f"{msgs} messages, {len(calls)} syscalls counted"}
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])
    return row | {
        "messages": msgs,
        "errors": lg["errors"]["total"],
        "first_error": lg["first_error"],
        "calls": dict(ranked),
        "per_msg": {k: round(v / msgs, 4) for k, v in ranked},
        "total_per_msg": round(sum(calls.values()) / msgs, 3),
    }


def syscalls_line(row: dict[str, Any], top: int = 6) -> str:
    if "per_msg" not in row:
        return f"{row['server']:<17} {note(row)}"
    shown = list(row["per_msg"].items())[:top]
    body = "  ".join(f"{k} {v:.2f}/msg" for k, v in shown)
    return f"{row['server']:<17} {body}  (all: {row['total_per_msg']:.2f}/msg)"


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
    """One idle round: a fresh server, `n` idle connections, its RSS growth."""
    if c.skip:
        return {"skipped": c.skip, "skip_detail": c.skip_detail}
    try:
        srv = start_server(c, host)
    except RuntimeError as e:
        return {"failed": str(e)}
    socks: list[socket.socket] = []
    row: dict[str, Any] = {}
    try:
        time.sleep(settle)
        base = rss(srv.proc.pid)
        t0 = time.monotonic()
        try:
            socks = open_idle(host, srv.port, n)
        except OSError as e:
            return {"failed": f"opening connections: {e}"}
        open_s = time.monotonic() - t0
        time.sleep(settle)
        after = rss(srv.proc.pid)
        # Still served? A handful of pings across the range.
        for s in socks[:: max(1, n // 8)]:
            s.sendall(b"?")
            if s.recv(1) != b"?":
                return {"failed": "an idle connection stopped echoing"}
        row = {
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


def median_idle(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round by bytes per connection, min and max kept."""
    ran = [r for r in rows if "bytes_per_conn" in r]
    if not ran:
        return dict(rows[0]) if rows else {"failed": "no round ran"}
    per = [r["bytes_per_conn"] for r in ran]
    out: dict[str, Any] = {
        "bytes_per_conn": round(statistics.median(per)),
        "bytes_min": min(per),
        "bytes_max": max(per),
        "rounds": len(ran),
    }
    for key in ("rss_base_mib", "rss_after_mib", "open_s"):
        out[key] = round(statistics.median(r[key] for r in ran), 2)
    failed = [r["failed"] for r in rows if "failed" in r]
    if failed:
        out["rounds_failed"] = failed
    return out


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
    parts = []
    if row.get("errors"):
        parts.append(f"{row['errors']} errors: {row['first_error']}")
    if row.get("rounds_failed"):
        parts.append(f"{len(row['rounds_failed'])} round(s) failed: {row['rounds_failed'][0]}")
    return "; ".join(parts)


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def rounds_label(args: argparse.Namespace) -> str:
    if args.rounds == 1:
        return "1 round, a fresh server"
    return f"median of {args.rounds} interleaved rounds, a fresh server each"


def echo_table(rows: list[dict[str, Any]], conns: int, size: int, args) -> str:
    sel = [r for r in rows if r["connections"] == conns and r["size"] == size]
    g = next((r for r in sel if r["server"] == GMPRT and "cpu_us_per_msg" in r), None)
    lines = [
        f"### echo: {conns} connections, {size_label(size)} messages "
        f"({rounds_label(args)}; {args.duration:g} s measured after {args.warmup:g} s "
        f"warmup; gmprt-loadgen {args.threads} thread{'s' if args.threads > 1 else ''})",
        "",
        "| server | server CPU µs/msg (min–max) | msgs/s | p50 µs | p99 µs | server CPU "
        "| client CPU | gmprt ÷ this, CPU/msg | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sel:
        if "cpu_us_per_msg" not in r:
            lines.append(f"| {r['server']} | — | — | — | — | — | — | — | {note(r)} |")
            continue
        cpu = "—" if r.get("server_cpu") is None else f"{r['server_cpu']:.0%}"
        ratio = "—" if r is g or not g else fmt_ratio(g["cpu_us_per_msg"], r["cpu_us_per_msg"])
        lines.append(
            f"| {r['server']} | {r['cpu_us_per_msg']:.2f} ({r['cpu_min']:.2f}–{r['cpu_max']:.2f}) "
            f"| {r['msgs_per_s']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {cpu} "
            f"| {r['client_cpu']:.0%} | {ratio} | {note(r)} |"
        )
    lines += ["", ECHO_NOTE]
    if any(r["server"] == GO and "cpu_us_per_msg" in r for r in sel):
        lines += ["", go_note()]
    if g:
        lines += ["", echo_goal(g, sel, conns, size)]
    return "\n".join(lines)


ECHO_NOTE = (
    "Server CPU µs/msg: the server's utime + stime over the measured window ÷ the "
    "messages echoed in it (read by gmprt-loadgen --pid). CPU shares are of one core "
    "over the window. gmprt ÷ this: gmprt's CPU per message over the contender's; "
    "below 1 favours gmprt."
)


def go_note() -> str:
    return (
        "go: benches/servers/echo_server.go, a goroutine per connection reading and "
        f"writing through a 64 KiB buffer; GOMAXPROCS left at Go's default ({go_procs()} here)."
    )


def echo_goal(g: dict[str, Any], sel: list[dict[str, Any]], conns: int, size: int) -> str:
    """BENCHMARKS.md: gmprt's CPU/msg ≤ 0.9× uvloop protocol's and ≤ 0.9× Go's."""
    if (conns, size) not in GOAL_CASES:
        return f"Goal ({GOAL_TEXT}): not judged in this case."
    by = {r["server"]: r for r in sel if "cpu_us_per_msg" in r}
    checks = []
    for name, want in GOAL_RIVALS:
        r = by.get(name)
        if not r:
            why = next((note(x) for x in sel if x["server"] == name), "") or "not run"
            checks.append(f"not measured vs {name} ({why})")
            continue
        ratio = g["cpu_us_per_msg"] / r["cpu_us_per_msg"]
        checks.append(
            f"{'met' if ratio <= want else 'NOT MET'} vs {name} ({ratio:.2f}× its CPU/msg, "
            f"want ≤ {want}×: {g['cpu_us_per_msg']:.2f} vs {r['cpu_us_per_msg']:.2f} µs)"
        )
    return f"Goal ({GOAL_TEXT}): " + "; ".join(checks) + "."


def idle_table(rows: list[dict[str, Any]], args) -> str:
    g = next((r for r in rows if r["server"] == GMPRT and "bytes_per_conn" in r), None)
    n = rows[0]["connections"] if rows else args.idle
    lines = [
        f"### idle connections: server RSS growth with {n:,} idle connections "
        f"({rounds_label(args)})",
        "",
        "| server | bytes/conn (min–max) | RSS before MiB | RSS after MiB | gmprt ratio | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "bytes_per_conn" not in r:
            lines.append(f"| {r['server']} | — | — | — | — | {note(r)} |")
            continue
        ratio = "—" if r is g or not g else fmt_ratio(g["bytes_per_conn"], r["bytes_per_conn"])
        lines.append(
            f"| {r['server']} | {r['bytes_per_conn']:,} ({r['bytes_min']:,}–{r['bytes_max']:,}) "
            f"| {r['rss_base_mib']:.1f} | {r['rss_after_mib']:.1f} | {ratio} | {note(r)} |"
        )
    lines += [
        "",
        "gmprt ratio: gmprt's bytes per connection over the contender's; below 1 favours gmprt.",
    ]
    if any(r["server"] == GO and "bytes_per_conn" in r for r in rows):
        lines += ["", "go allocates its 64 KiB buffer when a connection is accepted."]
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
    go = shutil.which("go")
    if go:
        r = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60)
        info["go"] = r.stdout.strip() or None
    return info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round of 0.5 s runs, 2,000 idle")
    p.add_argument(
        "--rounds", type=int, help="rounds per figure, median kept (default 3; --quick 1)"
    )
    p.add_argument("--duration", type=float, help="measured seconds per run (default 3)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds per run (default 1)")
    p.add_argument(
        "--connections", help="comma-separated C values (default 100,1000; --syscalls 100)"
    )
    p.add_argument(
        "--sizes", help="comma-separated message sizes (default 1024,16384; --syscalls 1024)"
    )
    p.add_argument("--servers", default=",".join(CONTENDERS), help="comma-separated contenders")
    p.add_argument("--idle", type=int, help="idle connections (default 10,000; 0 skips)")
    p.add_argument("--no-echo", action="store_true", help="only the idle scenario")
    p.add_argument(
        "--syscalls",
        action="store_true",
        help="instead of the scenarios: syscalls per message under strace (2 s runs)",
    )
    p.add_argument("--threads", type=int, default=1, help="gmprt-loadgen threads (default 1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--loadgen", help="path of the gmprt-loadgen binary")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    args = p.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.rounds = args.rounds or (1 if args.quick else 3)
    default_duration = 2.0 if args.syscalls else 0.5 if args.quick else 3.0
    args.duration = args.duration or default_duration
    args.warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 1.0)
    args.idle = args.idle if args.idle is not None else (2000 if args.quick else 10_000)
    args.connections = args.connections or ("100" if args.syscalls else "100,1000")
    args.sizes = args.sizes or ("1024" if args.syscalls else "1024,16384")
    args.names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.names) - set(CONTENDERS) - {f"gmprt-procs{i}" for i in range(1, 65)}
    if unknown:
        p.error(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(CONTENDERS)})")

    try:
        import psutil  # noqa: F401  (RSS of the idle scenario)
    except ImportError:
        p.error("needs psutil: pip install psutil")
    return args


def cases(args: argparse.Namespace) -> list[tuple[int, int]]:
    return [(int(c), int(s)) for c in args.connections.split(",") for s in args.sizes.split(",")]


def bench_syscalls(args: argparse.Namespace, cs: list[Contender]) -> tuple[list, list[str]]:
    """The --syscalls diagnostic: a row per contender and case, and the printout."""
    strace = shutil.which("strace")
    if not strace:
        raise SystemExit("--syscalls needs strace: apt-get install strace")
    loadgen = find_loadgen(args.loadgen)
    rows, out = [], []
    for conns, size in cases(args):
        head = (
            f"### syscalls per message: {conns} connections, {size_label(size)} messages "
            f"({args.duration:g} s under strace -c -f; its slowdown leaves the counts alone)"
        )
        print(head, flush=True)
        out += [head, ""]
        for c in cs:
            row = count_syscalls(loadgen, strace, c, args.host, conns, size, args.duration)
            rows.append(row)
            line = syscalls_line(row)
            print(line, flush=True)
            out.append(line)
        out.append("")
    return rows, ["\n".join(out).rstrip()]


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
    keys = ("quick", "rounds", "duration", "warmup", "connections", "sizes", "idle", "threads")
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {k: getattr(args, k) for k in keys},
        "echo": [],
        "idle": [],
    }
    if args.syscalls:
        results["syscalls"], sections = bench_syscalls(args, cs)
        return results, sections
    sections = []
    by_name = {c.name: c for c in cs}
    names = list(by_name)
    if not args.no_echo:
        loadgen = find_loadgen(args.loadgen)
        results["config"]["loadgen"] = str(loadgen)
        all_cases = cases(args)
        # Discarded: the first run of each contender pays for cold caches
        # (the page cache, .pyc files, the CPU's clock ramping up).
        c0, s0 = all_cases[0]
        for c in cs:
            one_run(
                loadgen, c, c0, s0, min(args.duration, 0.5), min(args.warmup, 0.25),
                args.host, args.threads,
            )  # fmt: skip
        for conns, size in all_cases:
            label = f"echo c={conns:<5} {size_label(size):>6}"

            def one(name: str, conns: int = conns, size: int = size) -> dict[str, Any]:
                return one_run(
                    loadgen, by_name[name], conns, size, args.duration, args.warmup,
                    args.host, args.threads,
                )  # fmt: skip

            def show(name: str, rnd: int, row: dict[str, Any], label: str = label) -> None:
                brief = (
                    f"{row['cpu_us_per_msg']:>7.2f} µs/msg {row['msgs_per_s']:>9,.0f} msgs/s  "
                    f"p99 {row['p99_us']:>8,.0f} µs"
                    if "failed" not in row and "cpu_us_per_msg" in row
                    else note(row)
                )
                rep = f" [{rnd + 1}/{args.rounds}]" if args.rounds > 1 else ""
                print(f"{label}  {name:<17} {brief}{rep}", flush=True)

            runs = run_rounds(names, args.rounds, one, show)
            for name in names:
                head = {"server": name, "connections": conns, "size": size}
                results["echo"].append(head | median_of(runs[name]) | {"runs": runs[name]})
            sections.append(echo_table(results["echo"], conns, size, args))
    if args.idle:
        settle = 0.5 if args.quick else 1.0

        def one_idle(name: str) -> dict[str, Any]:
            gc.collect()
            return run_idle(by_name[name], args.host, args.idle, settle)

        def show_idle(name: str, rnd: int, row: dict[str, Any]) -> None:
            brief = (
                f"{row['bytes_per_conn']:>8,} bytes/conn" if "bytes_per_conn" in row else note(row)
            )
            rep = f" [{rnd + 1}/{args.rounds}]" if args.rounds > 1 else ""
            print(f"idle n={args.idle:<6} {name:<17} {brief}{rep}", flush=True)

        runs = run_rounds(names, args.rounds, one_idle, show_idle)
        for name in names:
            head = {"server": name, "connections": args.idle}
            results["idle"].append(head | median_idle(runs[name]) | {"runs": runs[name]})
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
        # 2 s windows: the CPU figure comes from the window alone, and
        # three rounds of every case must fit the suite's time.
        argv = ["--connections", "100,1000", "--sizes", "1024,16384", "--duration", "2"]
    if "echo" not in want:
        argv.append("--no-echo")
    if "idle" not in want:
        argv += ["--idle", "0"]
    args = parse(argv)
    results, _ = bench(args)
    out: dict = {}
    if "echo" in want:
        by: dict = {name: {} for name in args.names}
        for row in results["echo"]:
            by[row["server"]][case_key(row["connections"], row["size"])] = row
        params = {k: results["config"][k] for k in ("duration", "warmup", "rounds", "threads")}
        params["go_maxprocs"] = go_procs()
        out["echo"] = {
            "params": params | {"cases": [list(c) for c in cases(args)]},
            "results": by,
        }
    if "idle" in want:
        out["idle"] = {
            "params": {"connections": args.idle, "rounds": args.rounds},
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
    rows = results["echo"] + results["idle"] + results.get("syscalls", [])
    failed = [r for r in rows if "failed" in r or r.get("errors")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
