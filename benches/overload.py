"""Overload: a server whose handler waits on a slow upstream (1 s) receives a
flood of requests, with its limits on and off.

The flood comes from a client process (``python benches/overload.py --client
...``, one thread on epoll): R new connections per second for D seconds, each
sending one request line and waiting up to T seconds for the reply. Each
request holds K KiB of state on the server while it waits on the upstream
(benches/servers/overload_servers.py says exactly what each server does).

Reported for gmprt, asyncio and threading, limits off and on:

- the server's RSS over time (psutil, sampled every 50 ms) and its peak
  growth over the RSS it had before the flood;
- what the clients saw: completed (``OK``), refused with a clear error line
  (``ERR 503 overloaded ...``), connection refused, reset, closed without a
  reply, timed out, other errors; latency of the replies.

Goal (BENCHMARKS.md): with limits on, RSS stays flat — its peak growth stays
within ``limit × (state + 64 KiB) + 16 MiB`` whatever the flood — and every
refused request gets a clear error (no resets, silent closes or timeouts).

    python benches/overload.py [--quick]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from harness import percentile, skip_reason

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "benches" / "servers" / "overload_servers.py"
CONTENDERS = ["gmprt", "asyncio", "threading"]
SAMPLE_S = 0.05


# ---- the client -------------------------------------------------------------------


def flood(host: str, port: int, rate: float, duration: float, timeout: float) -> dict[str, Any]:
    """Opens rate × duration connections, evenly spread; one request on each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    total = round(rate * duration)
    sel = selectors.DefaultSelector()
    outcomes: dict[str, int] = {}
    first: dict[str, str] = {}
    lat_ok: list[float] = []
    lat_err: list[float] = []
    lat_tmo: list[float] = []
    deadlines: deque[tuple[float, socket.socket]] = deque()
    live: dict[int, dict[str, Any]] = {}
    max_open = 0

    def finish(s: socket.socket, what: str, detail: str = "") -> None:
        st = live.pop(s.fileno(), None)
        if st is None:
            return
        outcomes[what] = outcomes.get(what, 0) + 1
        if detail and what not in first:
            first[what] = detail
        if what == "ok":
            lat_ok.append(time.monotonic() - st["t0"])
        elif what == "refused_clear":
            lat_err.append(time.monotonic() - st["t0"])
        elif what == "timeout_error":
            lat_tmo.append(time.monotonic() - st["t0"])
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def failed(s: socket.socket, err: int) -> None:
        if err == errno.ECONNREFUSED:
            finish(s, "connection_refused", os.strerror(err))
        elif err in (errno.ECONNRESET, errno.EPIPE):
            finish(s, "reset", os.strerror(err))
        elif err == errno.ETIMEDOUT:
            finish(s, "timed_out", "connect: " + os.strerror(err))
        else:
            finish(s, "other", os.strerror(err))

    start = time.monotonic()
    opened = 0
    while opened < total or live:
        now = time.monotonic()
        while opened < total and start + opened / rate <= now:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            live[s.fileno()] = {"t0": time.monotonic(), "buf": b"", "id": opened}
            err = s.connect_ex((host, port))
            opened += 1
            if err not in (0, errno.EINPROGRESS):
                failed(s, err)
                continue
            sel.register(s, selectors.EVENT_WRITE, "connect")
            deadlines.append((now + timeout, s))
        max_open = max(max_open, len(live))
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].fileno() < 0):
            _, s = deadlines.popleft()
            if s.fileno() >= 0:
                finish(s, "timed_out", f"no reply within {timeout:g} s")
        wait = 0.05
        if opened < total:
            wait = min(wait, max(0.0, start + opened / rate - now))
        for key, _ in sel.select(wait):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            st = live.get(s.fileno())
            if st is None:
                continue
            if key.data == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed(s, err)
                    continue
                try:
                    s.send(f"GET {st['id']}\n".encode())
                except OSError as e:
                    failed(s, e.errno or 0)
                    continue
                sel.modify(s, selectors.EVENT_READ, "reply")
                continue
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                failed(s, e.errno or 0)
                continue
            if data:
                st["buf"] += data
                if b"\n" not in st["buf"]:
                    continue
            line = st["buf"].split(b"\n", 1)[0].decode(errors="replace")
            if line.startswith("OK"):
                finish(s, "ok")
            elif line.startswith("ERR timeout"):  # the deadline scenario's reply
                finish(s, "timeout_error", line)
            elif line.startswith("ERR"):
                finish(s, "refused_clear", line)
            elif not data and not st["buf"]:
                finish(s, "closed_no_reply", "EOF before any reply")
            else:
                finish(s, "other", f"unexpected reply {line[:80]!r}")
    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    return {
        "requests": total,
        "start_monotonic": start,
        "outcomes": outcomes,
        "first": first,
        "max_open": max_open,
        "flood_s": time.monotonic() - start,
        "ok_p50_ms": percentile(ms(lat_ok), 50),
        "ok_p99_ms": percentile(ms(lat_ok), 99),
        "ok_max_ms": max(ms(lat_ok), default=0.0),
        "err_p50_ms": percentile(ms(lat_err), 50),
        "err_p99_ms": percentile(ms(lat_err), 99),
        "timeout_p50_ms": percentile(ms(lat_tmo), 50),
        "timeout_p99_ms": percentile(ms(lat_tmo), 99),
        "timeout_max_ms": max(ms(lat_tmo), default=0.0),
    }


# ---- one run: a server, a flood, RSS sampled ---------------------------------------


def _start(argv: list[str], timeout: float = 30.0) -> tuple[subprocess.Popen, int, Any]:
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"no 'listening on' line within {timeout:.0f} s")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("exited before listening")
            buf += chunk
    except RuntimeError as e:
        proc.kill()
        proc.wait()
        err.seek(0)
        raise RuntimeError(f"{e}: {err.read().decode(errors='replace')[-1500:]}") from None
    finally:
        sel.close()
    line = buf.split(b"\n", 1)[0].decode()
    return proc, int(line.rsplit(":", 1)[1]), err


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_one(kind: str, limit: int, cfg: dict[str, Any], host: str = "127.0.0.1") -> dict:
    import psutil

    argv = [sys.executable, str(SERVERS), kind, "--host", host, "--port", "0"]
    argv += ["--limit", str(limit), "--upstream", str(cfg["upstream_s"])]
    argv += ["--state-kib", str(cfg["state_kib"])]
    try:
        proc, port, err = _start(argv)
    except RuntimeError as e:
        return {"failed": f"server: {e}"}
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(0.3)
        base = ps.memory_info().rss
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", host, str(port)]
            + [str(cfg[k]) for k in ("rate", "flood_s", "client_timeout_s")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        t0 = time.monotonic()
        series: list[list[float]] = []
        while True:
            try:
                series.append(
                    [
                        round(time.monotonic() - t0, 3),
                        round(ps.memory_info().rss / 2**20, 2),
                        ps.num_threads(),
                    ]
                )
            except psutil.Error:
                break
            if client.poll() is not None:
                break
            time.sleep(SAMPLE_S)
        out, cerr = client.communicate(timeout=60)
        if client.returncode != 0:
            return {"failed": f"client exit {client.returncode}: {cerr.strip()[-1500:]}"}
        seen = json.loads(out.strip().splitlines()[-1])
        alive = proc.poll() is None
    finally:
        rc = _stop(proc)
        err.seek(0)
        server_err = err.read().decode(errors="replace")
        err.close()
    peak = max(r[1] for r in series) if series else base / 2**20
    row: dict[str, Any] = {
        "limit": limit,
        "rss_base_mib": round(base / 2**20, 2),
        "rss_peak_mib": peak,
        "rss_growth_mib": round(peak - base / 2**20, 2),
        "threads_peak": max((r[2] for r in series), default=0),
        "series": series,
        "client": seen,
        "server_alive": alive,
        "server_exit": rc,
    }
    limiter = [ln for ln in server_err.splitlines() if ln.startswith("limiter:")]
    if limiter:
        row["limiter"] = limiter[0].removeprefix("limiter:").strip()
    if not alive:
        row["server_stderr"] = server_err[-1500:]
    return row


def config(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "upstream_s": 0.5,
            "rate": 400,
            "flood_s": 0.5,
            "client_timeout_s": 5,
            "limit": 50,
            "state_kib": 64,
        }
    return {
        "upstream_s": 1.0,
        "rate": 2000,
        "flood_s": 4.0,
        "client_timeout_s": 10,
        "limit": 200,
        "state_kib": 64,
    }


def flat_bound_mib(cfg: dict[str, Any]) -> float:
    """The most RSS growth 'flat' allows with limits on."""
    return cfg["limit"] * (cfg["state_kib"] + 64) / 1024 + 16


def run(quick: bool = False, scenarios: object = None) -> dict:
    cfg = config(quick)
    results: dict[str, Any] = {}
    for kind in CONTENDERS:
        why = skip_reason(kind, ("net", "sleep"))
        if why:
            results[kind] = {"skipped": why}
            continue
        results[kind] = {
            "limits_off": run_one(kind, 0, cfg),
            "limits_on": run_one(kind, cfg["limit"], cfg),
        }
    params = cfg | {"requests": round(cfg["rate"] * cfg["flood_s"])}
    params["flat_bound_mib"] = round(flat_bound_mib(cfg), 1)
    return {"overload": {"params": params, "results": results}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--client",
        nargs=5,
        metavar=("HOST", "PORT", "RATE", "SECONDS", "TIMEOUT"),
        help="be the flood's client (internal)",
    )
    args = ap.parse_args()
    if args.client:
        host, port, rate, secs, tmo = args.client
        print(json.dumps(flood(host, int(port), float(rate), float(secs), float(tmo))))
        return 0
    res = run(args.quick)["overload"]
    for kind, r in res["results"].items():
        if "skipped" in r:
            print(f"{kind:10} skipped: {r['skipped']}")
            continue
        for mode in ("limits_off", "limits_on"):
            x = r[mode]
            if "failed" in x:
                print(f"{kind:10} {mode:10} FAILED: {x['failed']}")
                continue
            c = x["client"]
            print(
                f"{kind:10} {mode:10} RSS +{x['rss_growth_mib']:7.1f} MiB  "
                f"threads {x['threads_peak']:5}  {c['outcomes']}  ok p99 {c['ok_p99_ms']:.0f} ms"
            )
    for r in res["results"].values():
        for x in r.values():
            if isinstance(x, dict):
                x.pop("series", None)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
