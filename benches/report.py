"""Turns the suite's results.json into report.md, PNG charts and the README
snippet (benches/suite.py calls it; it also runs on its own)::

    python benches/report.py [benches/results/results.json] [--readme]

Every ratio is gmprt's *advantage*: how many times better gmprt's figure is
than the contender's (the contender's time over gmprt's, or gmprt's rate over
the contender's), so above 1× favours gmprt and below 1× favours the
contender, whatever the unit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

GMPRT, GMPRT_1 = "gmprt", "gmprt-procs1"

ORDER = [
    "spawn",
    "ping_pong",
    "fan_out",
    "parked_memory",
    "echo",
    "idle",
    "blocking",
    "cpu_hog",
    "parallel_c",
    "overload",
    "cancel",
    "deadline",
    "lines",
    "tls",
    "tracing",
    "aio_blocking",
    "aio_http",
]

TITLES = {
    "spawn": "spawn: start N trivial tasks and wait for all",
    "ping_pong": "ping-pong: two tasks pass a value back and forth",
    "fan_out": "fan-out: producer → 8 workers → collector",
    "parked_memory": "parked memory: N tasks blocked on one channel / event",
    "echo": "echo: TCP echo server under gmprt-loadgen (closed loop)",
    "idle": "idle connections: server memory per idle connection",
    "blocking": "blocking call: one task calls time.sleep(0.2) ten times while others tick",
    "cpu_hog": "CPU hog: one task loops 1 s in pure Python while others tick",
    "parallel_c": "parallel C work: tasks hash 1 MiB buffers with hashlib.sha256",
    "overload": "overload: slow upstream (1 s) and a flood of requests",
    "cancel": "cancel: N tasks parked on a channel / queue, cancel all, wait for all",
    "deadline": "deadline: a per-request deadline over a slow upstream, under a flood",
    "lines": "line echo: readline / write per 100 B line under gmprt-loadgen --lines",
    "tls": "TLS echo: server CPU per 1 KiB message and TLS 1.3 handshakes/s",
    "tracing": "tracing cost: ping-pong and spawn with gmprt.trace.record off and on",
    "aio_blocking": "asyncio blocking handler: aiohttp, 1 request in 100 sleeps 0.2 s",
    "aio_http": "HTTP hello-world: uvicorn + Starlette and aiohttp under wrk, on each loop",
}

GOALS = {
    "spawn": "≥ 6× faster than asyncio, ≥ 50× than threading",
    "ping_pong": "≥ 10× faster than asyncio",
    "fan_out": "≥ 3× asyncio's items/s",
    "parked_memory": "≤ 512 B per G at 1M",
    "echo": (
        "server CPU/msg ≤ 0.9× uvloop protocol's and ≤ 0.9× Go's, at C=100 × 1 KiB and "
        "C=1000 × 16 KiB"
    ),
    "idle": "≤ 2 KB per connection in the server process",
    "blocking": "p99 tick delay < 25 ms",
    "cpu_hog": "p99 tick delay < 50 ms",
    "parallel_c": "≥ 1.6× asyncio and within 10% of a 2-thread pool, at gmprt's default procs",
    "overload": "RSS stays flat with limits on; every refused request gets a clear error",
    "cancel": "≥ 5× asyncio (µs per cancel to completion)",
    "deadline": (
        "tasks alive and RSS bounded by rate × deadline; every late request answered "
        "with a timeout error"
    ),
    "lines": "≥ 2× asyncio streams (server CPU per line)",
    "tls": "server CPU per message no higher than asyncio + ssl's and uvloop + ssl's",
    "tracing": "with a recording on, ping-pong costs ≤ 2× its figure with none",
    "aio_blocking": "the other requests' p99 with gmprt.aio.to_g ≤ with asyncio.to_thread",
    "aio_http": (
        "gmprt.aio ≥ uvloop: server CPU per request ≤ uvloop's, requests/s ≥ uvloop's, "
        "p99 no worse, on each framework"
    ),
}

ADVANTAGE_NOTE = (
    "*adv.* = gmprt's advantage: how many times better gmprt's figure is than the "
    "contender's (their time ÷ gmprt's, or gmprt's rate ÷ theirs); above 1× favours gmprt."
)


# ---- small helpers --------------------------------------------------------------------


def num(v: float | None, digits: int | None = None) -> str:
    if v is None:
        return "—"
    if digits is not None:
        return f"{v:,.{digits}f}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def adv(g: float | None, other: float | None, lower_better: bool) -> float | None:
    if not g or not other:
        return None
    return other / g if lower_better else g / other


def xfmt(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def why_not(fig: dict[str, Any] | None) -> str:
    if not fig:
        return "not run"
    if "skipped" in fig:
        return f"skipped: {fig['skipped']}"
    if "failed" in fig:
        return f"FAILED: {fig['failed']}"
    return ""


def table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "".join("l" if h == "note" else "r" for h in headers[1:])
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


class Goal:
    """The verdict on one scenario's goal: checks that pass (True), fail (False)
    or could not be made (None)."""

    def __init__(self) -> None:
        self.checks: list[tuple[bool | None, str]] = []

    def check(self, ok: bool | None, text: str) -> None:
        self.checks.append((ok, text))

    @property
    def status(self) -> str:
        if any(ok is False for ok, _ in self.checks):
            return "NOT MET"
        if self.checks and all(ok for ok, _ in self.checks):
            return "met"
        return "not measured"

    def line(self, goal: str) -> str:
        parts = []
        for ok, text in self.checks:
            mark = "met" if ok else "NOT MET" if ok is False else "not measured"
            parts.append(f"{mark}: {text}")
        body = "; ".join(parts) if parts else "no gmprt figures"
        return f"**Goal** ({goal}): **{self.status}** — {body}."

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [{"ok": ok, "text": t} for ok, t in self.checks]}


# ---- the scenarios --------------------------------------------------------------------
# Each renderer takes the scenario's entry from results.json and returns
# (markdown section, Goal, headline) where headline is what the summary table shows:
# {"gmprt": str, "others": str}.


def n_of(sc: dict[str, Any], name: str, fig: dict[str, Any]) -> str:
    """How many tasks or operations a contender's figure came from."""
    if "n" in fig:
        return f"{fig['n']:,}"
    p = sc.get("params", {})
    for k in ("n", "round_trips", "items"):
        v = p.get(f"threading_{k}" if name == "threading" else k)
        if isinstance(v, int):
            return f"{v:,}"
    return ""


def simple(
    sc: dict[str, Any],
    key: str,
    label: str,
    lower_better: bool,
    goal_fn: Callable[[dict[str, dict], Goal], None],
) -> tuple[str, Goal, dict[str, str]]:
    res = sc["results"]
    g = res.get(GMPRT, {}).get(key)
    g1 = res.get(GMPRT_1, {}).get(key)
    rows = []
    for name, fig in res.items():
        if key not in fig:
            rows.append([name, "—", "—", "—", "—", why_not(fig)])
            continue
        rows.append(
            [
                name,
                num(fig[key]),
                n_of(sc, name, fig),
                "—" if name == GMPRT else xfmt(adv(g, fig[key], lower_better)),
                "—" if name == GMPRT_1 else xfmt(adv(g1, fig[key], lower_better)),
                "",
            ]
        )
    md = table(["contender", label, "n", "gmprt adv.", "gmprt-procs1 adv.", "note"], rows)
    md += threading_note(sc)
    goal = Goal()
    goal_fn(res, goal)
    others = ", ".join(
        f"{n} {num(f[key])} ({xfmt(adv(g, f[key], lower_better))})"
        for n, f in res.items()
        if not n.startswith(GMPRT) and key in f
    )
    return md, goal, {"gmprt": f"{num(g)} {label}" if g else "—", "others": others}


def threading_note(sc: dict[str, Any]) -> str:
    """Says so when threading ran a smaller N than the others."""
    p = sc.get("params", {})
    small = [v for k, v in p.items() if k.startswith("threading_")]
    if not small:
        return ""
    return (
        "\n\nthreading runs a smaller N (column n): OS threads are too slow, or too big, "
        "for the others' N; its figure is per task or per operation all the same."
    )


def ratio_check(
    res: dict[str, dict], goal: Goal, key: str, other: str, want: float, lower_better: bool
) -> None:
    g = res.get(GMPRT, {}).get(key)
    o = res.get(other, {}).get(key)
    if g is None or o is None:
        why = why_not(res.get(GMPRT)) or why_not(res.get(other))
        goal.check(None, f"vs {other}: {why}")
        return
    r = adv(g, o, lower_better)
    g1 = res.get(GMPRT_1, {}).get(key)
    extra = f"; procs=1: {xfmt(adv(g1, o, lower_better))}" if g1 else ""
    goal.check(
        r is not None and r >= want,
        f"{xfmt(r)} {other} (want ≥ {want:g}×; {num(g)} vs {num(o)}{extra})",
    )


def r_spawn(sc):
    def goal(res, g):
        ratio_check(res, g, "us_per_task", "asyncio", 6, True)
        ratio_check(res, g, "us_per_task", "threading", 50, True)

    return simple(sc, "us_per_task", "µs/task", True, goal)


def r_ping_pong(sc):
    def goal(res, g):
        ratio_check(res, g, "us_per_rtt", "asyncio", 10, True)

    return simple(sc, "us_per_rtt", "µs/round trip", True, goal)


def r_fan_out(sc):
    def goal(res, g):
        ratio_check(res, g, "items_per_s", "asyncio", 3, False)

    return simple(sc, "items_per_s", "items/s", False, goal)


def r_parked_memory(sc):
    res = sc["results"]
    gby = res.get(GMPRT, {}).get("by_n", {})
    rows = []
    for name, fig in res.items():
        if "by_n" not in fig:
            rows.append([name, "—", "—", "—", "—", "—", why_not(fig)])
            continue
        for n, f in fig["by_n"].items():
            if "bytes_per_task" not in f:
                rows.append([name, f"{int(n):,}", "—", "—", "—", "—", why_not(f)])
                continue
            gf = gby.get(n) or (gby[max(gby, key=int)] if gby else None)
            gb = gf.get("bytes_per_task") if gf else None
            note = "" if not gf or n in gby else f"gmprt at its largest N ({gf['n']:,})"
            rows.append(
                [
                    name,
                    f"{int(n):,}",
                    num(f["bytes_per_task"], 0),
                    num(f.get("rss_base_mib"), 1),
                    num(f.get("rss_parked_mib"), 1),
                    "—" if name == GMPRT else xfmt(adv(gb, f["bytes_per_task"], True)),
                    note,
                ]
            )
    md = table(
        ["contender", "N", "bytes/task", "RSS base MiB", "RSS parked MiB", "gmprt adv.", "note"],
        rows,
    )
    md += threading_note(sc)
    goal = Goal()
    head = {"gmprt": "—", "others": ""}
    b = None
    if gby:
        top = max(gby, key=int)
        b = gby[top].get("bytes_per_task")
        at = f"at N = {int(top):,}" + ("" if int(top) >= 1_000_000 else " (the goal is at 1M)")
        goal.check(b is not None and b <= 512, f"{num(b, 0)} B per G {at}")
        head["gmprt"] = f"{num(b, 0)} B/task at {int(top):,}"
    else:
        goal.check(None, why_not(res.get(GMPRT)))
    others = []
    for name, fig in res.items():
        if name.startswith(GMPRT) or "by_n" not in fig:
            continue
        m = max(fig["by_n"], key=int)
        v = fig["by_n"][m].get("bytes_per_task")
        if v is not None:
            others.append(f"{name} {num(v, 0)} at {int(m):,} ({xfmt(adv(b, v, True))})")
    head["others"] = ", ".join(others)
    return md, goal, head


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def r_echo(sc):
    res = sc["results"]
    parts = []
    goal = Goal()
    head = {"gmprt": "—", "others": ""}
    cases = sc["params"]["cases"]
    p = sc["params"]
    for conns, size in cases:
        key = f"c{conns}-{size}"
        g = res.get(GMPRT, {}).get(key, {})
        rows = []
        for name, by in res.items():
            r = by.get(key, {})
            if "cpu_us_per_msg" not in r:
                rows.append([name] + ["—"] * 7 + [why_not(r) or r.get("note", "")])
                continue
            errs = f"{r['errors']} errors: {r['first_error']}" if r.get("errors") else ""
            cpu = "—" if r.get("server_cpu") is None else f"{r['server_cpu']:.0%}"
            spread = f" ({num(r['cpu_min'])}–{num(r['cpu_max'])})" if "cpu_min" in r else ""
            rows.append(
                [
                    name,
                    num(r["cpu_us_per_msg"]) + spread,
                    num(r["msgs_per_s"], 0),
                    num(r["p50_us"], 0),
                    num(r["p99_us"], 0),
                    cpu,
                    f"{r['client_cpu']:.0%}",
                    "—"
                    if name == GMPRT
                    else xfmt(adv(g.get("cpu_us_per_msg"), r["cpu_us_per_msg"], True)),
                    errs,
                ]
            )
        parts.append(
            f"#### {conns:,} connections, {size_label(size)} messages\n\n"
            + table(
                [
                    "server",
                    "server CPU µs/msg (min–max)",
                    "msgs/s",
                    "p50 µs",
                    "p99 µs",
                    "server CPU",
                    "client CPU",
                    "gmprt CPU/msg adv.",
                    "note",
                ],
                rows,
            )
        )
        if [conns, size] not in ([100, 1024], [1000, 16384]) and len(cases) > 1:
            continue
        for other, want in (("uvloop-protocol", 0.9), ("go", 0.9)):
            o = res.get(other, {}).get(key, {})
            if "cpu_us_per_msg" not in g or "cpu_us_per_msg" not in o:
                goal.check(None, f"C={conns} {size_label(size)} vs {other}: {why_not(g or o)}")
                continue
            r = g["cpu_us_per_msg"] / o["cpu_us_per_msg"]
            goal.check(
                r <= want,
                f"C={conns} {size_label(size)}: {r:.2f}× {other}'s CPU/msg (want ≤ {want:g}×; "
                f"{num(g['cpu_us_per_msg'])} vs {num(o['cpu_us_per_msg'])} µs)",
            )
    # Headline: the C=100, 1 KiB case (or the first measured).
    key = "c100-1024" if [100, 1024] in cases else f"c{cases[0][0]}-{cases[0][1]}"
    g = res.get(GMPRT, {}).get(key, {})
    if "cpu_us_per_msg" in g:
        c, s = key[1:].split("-")
        head["gmprt"] = f"{num(g['cpu_us_per_msg'])} µs CPU/msg (C={c}, {size_label(int(s))})"
        head["others"] = ", ".join(
            f"{n} {num(v)} ({xfmt(adv(g['cpu_us_per_msg'], v, True))})"
            for n, by in res.items()
            if not n.startswith(GMPRT) and (v := by.get(key, {}).get("cpu_us_per_msg"))
        )
    rounds = p.get("rounds", 1)
    go = f" Go's server runs at GOMAXPROCS={p['go_maxprocs']}." if "go_maxprocs" in p else ""
    intro = (
        "The figure that compares servers is the **server's CPU time per message** "
        "(its utime + stime over the measured window, read from /proc by gmprt-loadgen "
        "--pid, ÷ the messages echoed in it): on a 2-core machine the client shares the "
        "CPU, so msgs/s mostly measures the client. "
        f"Median of {rounds} interleaved round(s), a fresh server each, which first gets a "
        f"discarded load run; {p['duration']:g} s measured after {p['warmup']:g} s warmup, "
        f"gmprt-loadgen with {p['threads']} thread(s), one message in flight per "
        f"connection.{go}"
    )
    return intro + "\n\n" + "\n\n".join(parts), goal, head


def r_idle(sc):
    res = sc["results"]
    g = res.get(GMPRT, {}).get("bytes_per_conn")
    rows = []
    for name, r in res.items():
        if "bytes_per_conn" not in r:
            rows.append([name, "—", "—", "—", "—", why_not(r)])
            continue
        rows.append(
            [
                name,
                num(r["bytes_per_conn"], 0),
                num(r["rss_base_mib"], 1),
                num(r["rss_after_mib"], 1),
                "—" if name == GMPRT else xfmt(adv(g, r["bytes_per_conn"], True)),
                "",
            ]
        )
    md = f"{sc['params']['connections']:,} idle connections held open, each echoed once.\n\n"
    md += table(
        ["server", "bytes/conn", "RSS before MiB", "RSS after MiB", "gmprt adv.", "note"], rows
    )
    goal = Goal()
    if g is None:
        goal.check(None, why_not(res.get(GMPRT)))
    else:
        goal.check(g <= 2048, f"{num(g, 0)} bytes per connection")
    others = ", ".join(
        f"{n} {num(r['bytes_per_conn'], 0)} ({xfmt(adv(g, r['bytes_per_conn'], True))})"
        for n, r in res.items()
        if not n.startswith(GMPRT) and "bytes_per_conn" in r
    )
    return md, goal, {"gmprt": f"{num(g, 0)} B/conn" if g else "—", "others": others}


def r_ticks(limit_ms: float):
    def render(sc):
        res = sc["results"]
        p = sc["params"]
        g = res.get(GMPRT, {}).get("p99_ms")
        rows = []
        stuck = []
        for name, r in res.items():
            if "p99_ms" not in r:
                rows.append([name] + ["—"] * 5 + [why_not(r)])
                continue
            exp = r.get("expected_ticks")
            note = ""
            if exp and r["ticks"] < 0.5 * exp:
                note = f"stalled: {r['ticks']:,} of ~{exp:,} ticks happened"
                stuck.append(
                    f"{name} ({r['ticks']:,} of ~{exp:,} ticks, worst {num(r['max_ms'])} ms)"
                )
            rows.append(
                [
                    name,
                    f"{r['ticks']:,}" + (f" / {exp:,}" if exp else ""),
                    num(r["p50_ms"]),
                    num(r["p99_ms"]),
                    num(r["max_ms"]),
                    "—" if name == GMPRT else xfmt(adv(g, r["p99_ms"], True)),
                    note,
                ]
            )
        what = (
            f"{p['tickers']} tickers every {p['tick_ms']:g} ms; "
            + (
                f"the stuck task calls {p['call']} {p['calls']} times"
                if "call" in p
                else f"the stuck task loops {p['hog_s']:g} s in Python"
            )
            + " (on the event loop for asyncio and uvloop, which have nowhere else to run it)."
        )
        md = (
            what
            + "\n\n"
            + table(
                [
                    "contender",
                    "ticks / expected",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "gmprt adv.",
                    "note",
                ],
                rows,
            )
        )
        if stuck:
            md += (
                "\n\nWhat happens to the contenders that cannot do it: "
                + "; ".join(stuck)
                + " — every ticker sat frozen until the stuck task let go of the loop."
            )
        goal = Goal()
        if g is None:
            goal.check(None, why_not(res.get(GMPRT)))
        else:
            g1 = res.get(GMPRT_1, {}).get("p99_ms")
            extra = f"; procs=1: {num(g1)} ms" if g1 is not None else ""
            goal.check(g < limit_ms, f"p99 {num(g)} ms (want < {limit_ms:g} ms{extra})")
        others = ", ".join(
            f"{n} {num(r['p99_ms'])} ms"
            for n, r in res.items()
            if not n.startswith(GMPRT) and "p99_ms" in r
        )
        return md, goal, {"gmprt": f"p99 {num(g)} ms" if g is not None else "—", "others": others}

    return render


def r_parallel_c(sc):
    res = sc["results"]
    p = sc["params"]
    cores = p.get("cores", 1)
    pool = f"threading-{cores}"
    g = res.get(GMPRT, {}).get("elapsed_s")
    base = res.get(GMPRT_1, {}).get("elapsed_s")
    rows = []
    for name, r in res.items():
        if "elapsed_s" not in r:
            rows.append([name, "—", "—", "—", why_not(r)])
            continue
        rows.append(
            [
                name,
                num(r["elapsed_s"], 3),
                xfmt(adv(r["elapsed_s"], base, True)),
                "—" if name == GMPRT else xfmt(adv(g, r["elapsed_s"], True)),
                "",
            ]
        )
    md = f"{p['tasks']:,} tasks, each hashing a {p['buffer']} buffer; {cores} cores.\n\n"
    md += table(["contender", "seconds", "speedup vs gmprt-procs1", "gmprt adv.", "note"], rows)
    md += (
        "\n\nThe goal compares gmprt at its default procs with asyncio (which hashes one "
        f"buffer at a time) and with a {cores}-thread pool, not procs={cores} with procs=1: "
        "each hashing G is a plain function, so sysmon hands the P of an M sitting in the C "
        "call to another M after 20 µs, and procs=1 already hashes on every core."
    )
    goal = Goal()
    if g is None:
        goal.check(None, why_not(res.get(GMPRT)))
    else:
        a = res.get("asyncio", {}).get("elapsed_s")
        if a is None:
            goal.check(None, f"asyncio: {why_not(res.get('asyncio'))}")
        else:
            goal.check(a / g >= 1.6, f"{xfmt(a / g)} asyncio (want ≥ 1.6×; {num(g, 3)} s)")
        t = res.get(pool, {}).get("elapsed_s")
        if t is None:
            goal.check(None, f"{pool}: {why_not(res.get(pool))}")
        else:
            goal.check(
                g <= 1.1 * t,
                f"{g / t:.2f}× the {cores}-thread pool's time (want ≤ 1.10×; "
                f"{num(g, 3)} vs {num(t, 3)} s)",
            )
    others = ", ".join(
        f"{n} {num(r['elapsed_s'], 3)} s ({xfmt(adv(g, r['elapsed_s'], True))})"
        for n, r in res.items()
        if not n.startswith(GMPRT) and "elapsed_s" in r
    )
    return md, goal, {"gmprt": f"{num(g, 3)} s" if g else "—", "others": others}


OUTCOMES = [
    ("ok", "OK"),
    ("refused_clear", "refused, clear error"),
    ("connection_refused", "conn. refused"),
    ("reset", "reset"),
    ("closed_no_reply", "closed, no reply"),
    ("timed_out", "timed out"),
    ("other", "other"),
]


def overload_ok(run: dict[str, Any], bound: float) -> tuple[bool, bool, int]:
    """(flat, clear) for a limits-on run, and how many requests failed unclearly."""
    out = run["client"]["outcomes"]
    unclear = sum(v for k, v in out.items() if k not in ("ok", "refused_clear"))
    return run["rss_growth_mib"] <= bound, unclear == 0, unclear


def r_overload(sc):
    res = sc["results"]
    p = sc["params"]
    bound = p["flat_bound_mib"]
    rows = []
    for name, modes in res.items():
        if "skipped" in modes or "failed" in modes:
            rows.append([name, "—"] + ["—"] * (len(OUTCOMES) + 4) + [why_not(modes)])
            continue
        for mode in ("limits_off", "limits_on"):
            r = modes.get(mode, {})
            label = "off" if mode == "limits_off" else f"on ({p['limit']})"
            if "client" not in r:
                rows.append([name, label] + ["—"] * (len(OUTCOMES) + 4) + [why_not(r)])
                continue
            c = r["client"]
            out = c["outcomes"]
            note = "; ".join(
                f"{k}: {v}" for k, v in c.get("first", {}).items() if k != "refused_clear"
            )
            if not r.get("server_alive", True):
                note = "SERVER DIED; " + note
            if r.get("limiter") and mode == "limits_on" and "not available" in r["limiter"]:
                note = f"limiter: {r['limiter']}; " + note
            rows.append(
                [name, label, f"{c['requests']:,}"]
                + [f"{out.get(k, 0):,}" for k, _ in OUTCOMES]
                + [
                    f"{num(c['ok_p50_ms'], 0)} / {num(c['ok_p99_ms'], 0)}",
                    num(r["rss_growth_mib"], 1),
                    f"{r['threads_peak']:,}",
                    note.strip("; "),
                ]
            )
    md = (
        f"{p['requests']:,} requests: {p['rate']:,} new connections/s for {p['flood_s']:g} s, "
        f"each sending one request line; the handler holds {p['state_kib']} KiB of state "
        f"while it waits {p['upstream_s']:g} s on the upstream; clients give up after "
        f"{p['client_timeout_s']:g} s. Limits on = at most {p['limit']} requests in flight "
        "(gmprt: a Semaphore, asyncio: an asyncio.Semaphore, threading: a pool of that many "
        "threads), the rest answered `ERR 503 overloaded ...` at once. 'Flat' means the peak "
        f"RSS growth stays within limit × (state + 64 KiB) + 16 MiB = {bound:g} MiB.\n\n"
    )
    md += table(
        ["server", "limits", "requests"]
        + [h for _, h in OUTCOMES]
        + ["OK p50 / p99 ms", "peak RSS growth MiB", "peak threads", "note"],
        rows,
    )
    goal = Goal()
    verdicts = []
    for name, modes in res.items():
        on = modes.get("limits_on", {}) if isinstance(modes, dict) else {}
        if "client" not in on:
            if name == GMPRT:
                goal.check(None, why_not(on) or why_not(modes))
            continue
        flat, clear, unclear = overload_ok(on, bound)
        off = modes.get("limits_off", {})
        off_g = (
            f" (limits off: {num(off['rss_growth_mib'], 1)} MiB)" if "rss_growth_mib" in off else ""
        )
        text = (
            f"peak RSS growth {num(on['rss_growth_mib'], 1)} MiB with limits on{off_g}, "
            f"bound {bound:g}; {on['client']['outcomes'].get('refused_clear', 0):,} refused with "
            f"a clear error, {unclear:,} failed otherwise"
        )
        if name == GMPRT:
            goal.check(flat, "gmprt " + text.split(";")[0])
            goal.check(clear, "gmprt " + text.split("; ")[1])
        else:
            verdicts.append(f"{name}: {'met' if flat and clear else 'NOT MET'} ({text})")
    if verdicts:
        md += "\n\nThe same goal for the others: " + "; ".join(verdicts) + "."
    g = res.get(GMPRT, {})
    head = {"gmprt": "—", "others": ""}
    if "client" in g.get("limits_on", {}):
        head["gmprt"] = (
            f"+{num(g['limits_on']['rss_growth_mib'], 1)} MiB limits on, "
            f"+{num(g['limits_off']['rss_growth_mib'], 1)} off"
        )
    head["others"] = ", ".join(
        f"{n} +{num(m['limits_on']['rss_growth_mib'], 1)} on / "
        f"+{num(m['limits_off']['rss_growth_mib'], 1)} off MiB"
        for n, m in res.items()
        if n != GMPRT and "client" in m.get("limits_on", {}) and "client" in m.get("limits_off", {})
    )
    return md, goal, head


def r_cancel(sc):
    res = sc["results"]
    p = sc["params"]
    g = res.get(GMPRT, {}).get("us_per_cancel")
    rows = []
    for name, fig in res.items():
        if "us_per_cancel" not in fig:
            rows.append([name, fig.get("how", ""), "—", "—", "—", "—", why_not(fig)])
            continue
        note = "; ".join(f"round failed: {f}" for f in fig.get("failed_rounds", []))
        rows.append(
            [
                name,
                fig.get("how", ""),
                num(fig["us_per_cancel"]),
                " / ".join(num(x) for x in fig.get("rounds_us", [])),
                n_of(sc, name, fig),
                "—" if name == GMPRT else xfmt(adv(g, fig["us_per_cancel"], True)),
                note,
            ]
        )
    md = (
        "N tasks each parked on one channel (gmprt: `await ch.recv()` on a `gmprt.Chan`; "
        "asyncio, uvloop: `await q.get()` on an `asyncio.Queue`); the clock runs from the "
        "first cancel to the moment every task has finished, ÷ N. "
        + (
            f"Median of {p['rounds']} interleaved rounds, each contender in a fresh process "
            "per round (all rounds shown). "
            if p.get("rounds", 1) > 1
            else "One round, each contender in a fresh process. "
        )
        + "Threads cannot be cancelled: the threading row wakes N "
        "threads blocked on an Event each (set, then join), a cooperative stand-in that "
        "could not stop a thread blocked anywhere else.\n\n"
    )
    md += table(
        ["contender", "how", "µs/cancel", "rounds µs", "n", "gmprt adv.", "note"],
        rows,
        "llrrrrl",
    )
    md += threading_note(sc)
    goal = Goal()
    ratio_check(res, goal, "us_per_cancel", "asyncio", 5, True)
    grp = res.get("gmprt-group", {}).get("us_per_cancel")
    a = res.get("asyncio", {}).get("us_per_cancel")
    if grp and a:
        md += (
            f"\n\nOne `grp.cancel()` of a Group holding all N: {num(grp)} µs per G, "
            f"{xfmt(adv(grp, a, True))} asyncio."
        )
    others = ", ".join(
        f"{n} {num(f['us_per_cancel'])} ({xfmt(adv(g, f['us_per_cancel'], True))})"
        for n, f in res.items()
        if not n.startswith(GMPRT) and "us_per_cancel" in f
    )
    return md, goal, {"gmprt": f"{num(g)} µs/cancel" if g else "—", "others": others}


DEADLINE_OUTCOMES = [
    ("timeout_error", "ERR timeout"),
    ("ok", "OK"),
    ("timed_out", "gave up, no reply"),
    ("reset", "reset"),
    ("closed_no_reply", "closed, no reply"),
    ("other", "other"),
]


def r_deadline(sc):
    res = sc["results"]
    p = sc["params"]
    rows = []
    width = len(DEADLINE_OUTCOMES) + 7
    for name, modes in res.items():
        if "skipped" in modes or "failed" in modes:
            rows.append([name, "—"] + ["—"] * width + [why_not(modes)])
            continue
        for mode in ("deadline", "no_deadline"):
            r = modes.get(mode, {})
            label = f"{p['deadline_s']:g} s" if mode == "deadline" else "none"
            if "client" not in r:
                rows.append([name, label] + ["—"] * width + [why_not(r)])
                continue
            c = r["client"]
            out = c["outcomes"]
            known = {k for k, _ in DEADLINE_OUTCOMES}
            extra = {k: v for k, v in out.items() if k not in known}
            note = "; ".join(
                f"{k}: {v}"
                for k, v in c.get("first", {}).items()
                if k not in ("ok", "timeout_error")
            )
            if extra:
                note = f"also {extra}; " + note
            if not r.get("server_alive", True):
                note = "SERVER DIED; " + note
            tmo = (
                f"{num(c.get('timeout_p50_ms'), 0)} / {num(c.get('timeout_p99_ms'), 0)}"
                if out.get("timeout_error")
                else "—"
            )
            rows.append(
                [name, label, f"{c['requests']:,}"]
                + [f"{out.get(k, 0):,}" for k, _ in DEADLINE_OUTCOMES]
                + [
                    tmo,
                    f"{r['tasks_peak']:,}" if r.get("tasks_peak") is not None else "—",
                    f"{r['tasks_at_flood_end']:,}"
                    if r.get("tasks_at_flood_end") is not None
                    else "—",
                    num(r["rss_growth_mib"], 1),
                    num(r.get("rss_late_growth_mib"), 1),
                    f"{r['threads_peak']:,}",
                    note.strip("; "),
                ]
            )
    md = (
        f"{p['requests']:,} requests: {p['rate']:,} new connections/s for {p['flood_s']:g} s, "
        f"one request line each; the handler holds {p['state_kib']} KiB of state while it "
        f"waits on a {p['upstream_s']:g} s upstream (a sleep), under a {p['deadline_s']:g} s "
        "deadline (gmprt: `with gmprt.timeout()`; asyncio, uvloop: `async with "
        "asyncio.timeout()`; threading, which cannot cancel a thread: a timeout passed to the "
        "blocking call itself) or none; a late request is answered `ERR timeout: the upstream "
        "did not answer within the ... deadline`. "
        f"Clients give up after {p['client_timeout_s']:g} s. Tasks alive: "
        '`gmprt.stats()["goroutines"]`, `len(asyncio.all_tasks())`, '
        "`threading.active_count()`, sampled in the server every 50 ms (they include the "
        "server's own one or two). Bounded means peak tasks ≤ "
        f"{p['tasks_bound']:,} and peak RSS growth ≤ {p['rss_bound_mib']:g} MiB "
        "(2 × rate × deadline requests in flight, state + 64 KiB each, + 16 MiB). "
        "'RSS 2nd half' is how much the RSS still grew in the flood's second half "
        "(about 0 when flat)."
    )
    if p.get("contenders"):
        md += f" ({p['contenders']}.)"
    md += "\n\n" + table(
        ["server", "deadline", "requests"]
        + [h for _, h in DEADLINE_OUTCOMES]
        + [
            "ERR timeout p50 / p99 ms",
            "peak tasks",
            "tasks at flood end",
            "peak RSS growth MiB",
            "RSS 2nd half MiB",
            "peak threads",
            "note",
        ],
        rows,
    )
    goal = Goal()
    verdicts = []
    for name, modes in res.items():
        d = modes.get("deadline", {}) if isinstance(modes, dict) else {}
        v = d.get("verdict")
        if v is None:
            if name == GMPRT:
                goal.check(None, why_not(d) or why_not(modes))
            continue
        nd = modes.get("no_deadline", {})
        nd_t = f" (none: {nd['tasks_peak']:,})" if nd.get("tasks_peak") is not None else ""
        nd_r = f" (none: {num(nd['rss_growth_mib'], 1)})" if "rss_growth_mib" in nd else ""
        tasks = f"peak tasks {d['tasks_peak']:,}{nd_t}, bound {p['tasks_bound']:,}"
        rss = (
            f"peak RSS growth {num(d['rss_growth_mib'], 1)} MiB{nd_r}, bound {p['rss_bound_mib']:g}"
        )
        n_tmo = d["client"]["outcomes"].get("timeout_error", 0)
        ans = (
            f"{n_tmo:,} of {d['client']['requests']:,} answered ERR timeout, "
            f"{v['unclear']:,} otherwise"
        )
        if name == GMPRT:
            goal.check(v["tasks_bounded"], "gmprt " + tasks)
            goal.check(v["rss_bounded"], rss)
            goal.check(v["all_answered"], ans)
        else:
            ok = v["tasks_bounded"] and v["rss_bounded"] and v["all_answered"]
            verdicts.append(f"{name}: {'met' if ok else 'NOT MET'} ({tasks}; {rss}; {ans})")
    if verdicts:
        md += "\n\nThe same goal for the others: " + "; ".join(verdicts) + "."
    g = res.get(GMPRT, {})
    head = {"gmprt": "—", "others": ""}
    if g.get("deadline", {}).get("tasks_peak") is not None and "client" in g.get("no_deadline", {}):
        head["gmprt"] = (
            f"{g['deadline']['tasks_peak']:,} Gs / +{num(g['deadline']['rss_growth_mib'], 1)} MiB"
            f" with the deadline, {g['no_deadline']['tasks_peak']:,} / "
            f"+{num(g['no_deadline']['rss_growth_mib'], 1)} without"
        )
    head["others"] = ", ".join(
        f"{n} {m['deadline']['tasks_peak']:,} / +{num(m['deadline']['rss_growth_mib'], 1)} MiB"
        for n, m in res.items()
        if n != GMPRT and m.get("deadline", {}).get("tasks_peak") is not None
    )
    return md, goal, head


def r_lines(sc):
    res = sc["results"]
    p = sc["params"]
    key = "cpu_us_per_msg"
    g = res.get(GMPRT, {}).get(key)
    rows = []
    for name, fig in res.items():
        if key not in fig:
            rows.append([name, "—", "—", "—", "—", why_not(fig)])
            continue
        rows.append(
            [
                name,
                f"{num(fig[key])} ({num(fig['cpu_min'])}–{num(fig['cpu_max'])})",
                f"{fig['msgs_per_s']:,}",
                f"{fig['p99_us']:,}",
                "—" if name == GMPRT else xfmt(adv(g, fig[key], True)),
                "",
            ]
        )
    md = (
        f"C = {p['connections']} connections, each with one {p['size']} B line in flight "
        "(`gmprt-loadgen --lines`); gmprt reads with `conn.readline()` and answers with "
        "`sendall`, asyncio and uvloop with `reader.readline()` / `writer.write()` + "
        "`drain()`. Headline: the server's own CPU time per line (utime + stime from /proc "
        f"÷ lines), median of {p['rounds']} interleaved rounds with a fresh server each "
        "(min–max shown); msgs/s is mostly the client's speed on this machine.\n\n"
    )
    md += table(
        ["server", "CPU µs/line (min–max)", "lines/s", "p99 µs", "gmprt adv.", "note"],
        rows,
        "lrrrrl",
    )
    goal = Goal()
    ratio_check(res, goal, key, "asyncio-streams", 2, True)
    others = ", ".join(
        f"{n} {num(f[key])} ({xfmt(adv(g, f[key], True))})"
        for n, f in res.items()
        if not n.startswith(GMPRT) and key in f
    )
    return md, goal, {"gmprt": f"{num(g)} µs/line" if g else "—", "others": others}


def r_tls(sc):
    res = sc["results"]
    p = sc["params"]
    g = res.get(GMPRT, {}).get("server_cpu_us_per_msg")
    rows = []
    for name, r in res.items():
        if r.get("server_cpu_us_per_msg") is None:
            rows.append([name, "—", "—", "—", "—", "—", why_not(r) or "no messages"])
            continue
        hs = r.get("server_cpu_us_per_handshake")
        rows.append(
            [
                name,
                num(r["msgs_per_s"], 0),
                num(r["server_cpu_us_per_msg"], 1),
                "—" if name == GMPRT else xfmt(adv(g, r["server_cpu_us_per_msg"], True)),
                num(r.get("handshakes_per_s"), 0),
                "—" if hs is None else num(hs / 1000, 2),
                "",
            ]
        )
    md = (
        f"{p['conns']} TLS 1.3 connections, one {p['size']} B message in flight each, "
        "after the handshakes; the same uvloop client for every server. Median of "
        f"{p['rounds']} interleaved rounds.\n\n"
    )
    md += table(
        [
            "server",
            "msgs/s",
            "server CPU µs/msg",
            "gmprt adv.",
            "handshakes/s",
            "server CPU ms/handshake",
            "note",
        ],
        rows,
    )
    goal = Goal()
    if g is None:
        goal.check(None, why_not(res.get(GMPRT)))
    for other in ("asyncio-protocol", "uvloop-protocol"):
        o = res.get(other, {}).get("server_cpu_us_per_msg")
        if g is not None and o is not None:
            goal.check(g <= o, f"{num(g, 1)} vs {other} {num(o, 1)} µs/msg")
    others = ", ".join(
        f"{n} {num(r['server_cpu_us_per_msg'], 1)} µs"
        for n, r in res.items()
        if not n.startswith(GMPRT) and r.get("server_cpu_us_per_msg") is not None
    )
    return md, goal, {"gmprt": f"{num(g, 1)} µs CPU/msg" if g else "—", "others": others}


def r_tracing(sc):
    res = sc["results"]
    rows = []
    for kind, fig in res.items():
        off, on = fig.get("off", {}), fig.get("on", {})
        rows.append(
            [
                kind.replace("_", "-"),
                num(off.get("us")) if "us" in off else why_not(off) or why_not(fig),
                num(on.get("us")) if "us" in on else why_not(on) or why_not(fig),
                xfmt(fig.get("on_over_off")),
                f"{fig['n']:,}" if "n" in fig else "—",
                f"{on.get('file_bytes', 0) / 1e6:,.1f} MB" if on.get("file_bytes") else "—",
            ]
        )
    md = (
        "µs per round trip (ping-pong) or per G (spawn+join), best of 3 runs in a "
        f"process, median of {sc['params']['rounds']} interleaved rounds. off: nothing "
        "records (each event site is one relaxed load and a branch); on: inside "
        "`gmprt.trace.record()`, default ring of 262,144 events per thread (10 MiB).\n\n"
    )
    md += table(["scenario", "off µs", "on µs", "on ÷ off", "n", "trace file"], rows)
    goal = Goal()
    pp = res.get("ping_pong", {})
    r = pp.get("on_over_off")
    goal.check(
        None if r is None else r <= 2.0,
        f"ping-pong on ÷ off {xfmt(r)} (want ≤ 2×)" if r else f"ping-pong: {why_not(pp)}",
    )
    head = {
        "gmprt": f"ping-pong on ÷ off {xfmt(r)}",
        "others": f"spawn on ÷ off {xfmt(res.get('spawn', {}).get('on_over_off'))}",
    }
    return md, goal, head


def r_aio_blocking(sc):
    res = sc["results"]
    p = sc["params"]
    rows = []
    for name, fig in res.items():
        if "p99_ms" not in fig:
            rows.append([name, "—", "—", "—", "—", why_not(fig)])
            continue
        rows.append(
            [
                name,
                num(fig["p50_ms"]),
                num(fig["p99_ms"]),
                num(fig["max_ms"]),
                num(fig["seconds"]),
                "",
            ]
        )
    md = (
        f"An aiohttp server; {p['requests']:,} requests, {p['concurrency']} in flight, from an "
        f"aiohttp client in another process; {p['blocking']} in its handler, run by "
        "`gmprt.aio.to_g`, by `asyncio.to_thread`, or inline (blocking the loop). Latency of "
        "the other requests, ms.\n\n"
    )
    md += table(["contender", "p50 ms", "p99 ms", "max ms", "total s", "note"], rows)
    goal = Goal()
    g = res.get("gmprt.aio + to_g", {}).get("p99_ms")
    t = res.get("asyncio + to_thread", {}).get("p99_ms")
    goal.check(
        None if g is None or t is None else g <= t,
        f"to_g p99 {num(g)} ms vs to_thread {num(t)} ms",
    )
    head = {
        "gmprt": f"to_g p99 {num(g)} ms",
        "others": ", ".join(
            f"{n} p99 {num(f['p99_ms'])} ms"
            for n, f in res.items()
            if "p99_ms" in f and n != "gmprt.aio + to_g"
        ),
    }
    return md, goal, head


def _mid(fig: dict[str, Any], key: str, digits: int | None = None) -> str:
    """A median with its (min–max) when there was more than one round."""
    v = fig.get(key)
    lo, hi = fig.get(f"{key}_min"), fig.get(f"{key}_max")
    if v is None:
        return "—"
    if fig.get("rounds", 1) > 1 and lo is not None and hi is not None:
        return f"{num(v, digits)} ({num(lo, digits)}–{num(hi, digits)})"
    return num(v, digits)


def r_aio_http(sc):
    res = sc["results"]
    p = sc["params"]
    md = (
        f"A hello-world `GET /` (13 bytes of text) loaded by `{p['client']}` on 127.0.0.1; "
        f"uvicorn with its {p.get('uvicorn_http', 'default')} parser and no access log, "
        "aiohttp's AppRunner under `asyncio.Runner(loop_factory=...)`. **Server CPU µs per "
        "request** (utime + stime of the server process from /proc over the measured run ÷ "
        "requests): wrk shares the 2 cores, so req/s measures the pair. Median (min–max) of "
        f"{p['rounds']} interleaved rounds, a fresh server each, after a discarded "
        f"{p['warmup_s']} s warm-up.\n\n"
    )
    goal = Goal()
    if "skipped" in sc:
        md += f"skipped: {sc['skipped']}"
        goal.check(None, f"skipped: {sc['skipped']}")
        return md, goal, {"gmprt": "—", "others": ""}
    rows = []
    for name, fig in res.items():
        if "cpu_us_per_req" not in fig:
            rows.append([name, "—", "—", "—", "—", "—", why_not(fig)])
            continue
        fw = name.split(" / ")[0]
        u = res.get(f"{fw} / uvloop", {}).get("cpu_us_per_req")
        note = f"{fig['errors']} errors" if fig.get("errors") else ""
        rows.append(
            [
                name,
                _mid(fig, "cpu_us_per_req"),
                _mid(fig, "req_per_s", 0),
                _mid(fig, "p99_ms"),
                num(fig.get("server_cpu", 0) * 100, 0) + " %",
                xfmt(adv(fig["cpu_us_per_req"], u, True)) if u else "—",
                note,
            ]
        )
    md += table(
        ["contender", "server CPU µs/req", "req/s", "p99 ms", "server CPU", "vs uvloop", "note"],
        rows,
    )
    md += "\n\n*vs uvloop*: uvloop's CPU per request ÷ this one's (above 1× beats uvloop)."
    heads = []
    for fw in sorted({n.split(" / ")[0] for n in res}):
        g = res.get(f"{fw} / gmprt.aio", {})
        u = res.get(f"{fw} / uvloop", {})
        if "cpu_us_per_req" not in g or "cpu_us_per_req" not in u:
            goal.check(None, f"{fw}: {why_not(g) or why_not(u) or 'no figures'}")
            continue
        ok = (
            g["cpu_us_per_req"] <= u["cpu_us_per_req"]
            and g["req_per_s"] >= u["req_per_s"]
            and g.get("p99_ms", 0) <= u.get("p99_ms", 0)
        )
        goal.check(
            ok,
            f"{fw}: {num(g['cpu_us_per_req'])} vs uvloop {num(u['cpu_us_per_req'])} µs/req, "
            f"{num(g['req_per_s'], 0)} vs {num(u['req_per_s'], 0)} req/s, p99 "
            f"{num(g.get('p99_ms'))} vs {num(u.get('p99_ms'))} ms",
        )
        heads.append(f"{fw} {num(g['cpu_us_per_req'])} µs/req")
    head = {
        "gmprt": "; ".join(heads) or "—",
        "others": ", ".join(
            f"{n} {num(f['cpu_us_per_req'])} µs/req"
            for n, f in res.items()
            if "cpu_us_per_req" in f and not n.endswith("gmprt.aio")
        ),
    }
    return md, goal, head


RENDER = {
    "spawn": r_spawn,
    "ping_pong": r_ping_pong,
    "fan_out": r_fan_out,
    "parked_memory": r_parked_memory,
    "echo": r_echo,
    "idle": r_idle,
    "blocking": r_ticks(25),
    "cpu_hog": r_ticks(50),
    "parallel_c": r_parallel_c,
    "overload": r_overload,
    "cancel": r_cancel,
    "deadline": r_deadline,
    "lines": r_lines,
    "tls": r_tls,
    "tracing": r_tracing,
    "aio_blocking": r_aio_blocking,
    "aio_http": r_aio_http,
}


# ---- charts -----------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {
    GMPRT: "#d62728",
    GMPRT_1: "#ff7f0e",
    "asyncio": "#1f77b4",
    "asyncio-streams": "#1f77b4",
    "asyncio-protocol": "#17becf",
    "uvloop": "#9467bd",
    "uvloop-streams": "#9467bd",
    "uvloop-protocol": "#e377c2",
    "threading": "#2ca02c",
}


def chart_parked(sc, path: Path, title: str) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, r in sc["results"].items():
        pts = sorted(
            (int(n), f["bytes_per_task"])
            for n, f in r.get("by_n", {}).items()
            if "bytes_per_task" in f
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name, color=COLORS.get(name))
            drawn = True
    ax.axhline(512, ls="--", color="grey", lw=1, label="goal: 512 B")
    ax.set(
        xscale="log", yscale="log", xlabel="parked tasks N", ylabel="RSS growth per task (bytes)"
    )
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def chart_echo(sc, path: Path, title: str) -> bool:
    plt = _plt()
    sizes = sorted({s for _, s in sc["params"]["cases"]})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    drawn = False
    for ax, size in zip(axes[0], sizes, strict=True):
        conns = sorted(c for c, s in sc["params"]["cases"] if s == size)
        for name, by in sc["results"].items():
            pts = [(c, by.get(f"c{c}-{size}", {}).get("cpu_us_per_msg")) for c in conns]
            pts = [(c, v) for c, v in pts if v]
            if pts:
                style = "o-" if not name.startswith("uvloop") else "s--"
                ax.plot(*zip(*pts, strict=True), style, label=name, color=COLORS.get(name))
                drawn = True
        ax.set(xscale="log", xlabel="connections", ylabel="server CPU µs per message")
        ax.set_title(f"{size_label(size)} messages")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def chart_ticks(sc, path: Path, title: str, limit_ms: float) -> bool:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, r in sc["results"].items():
        cdf = r.get("cdf_ms")
        if cdf:
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            xs = [max(x, 1e-3) for x in cdf]
            ax.step(xs, ys, where="post", label=name, color=COLORS.get(name))
            drawn = True
    ax.axvline(limit_ms, ls="--", color="grey", lw=1, label=f"goal: p99 < {limit_ms:g} ms")
    ax.axhline(0.99, ls=":", color="grey", lw=1)
    ax.set(xscale="log", xlabel="tick delay (ms, log)", ylabel="fraction of ticks ≤ delay")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def chart_overload(sc, path: Path, title: str) -> bool:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    drawn = False
    for ax, mode in zip(axes, ("limits_off", "limits_on"), strict=True):
        for name, modes in sc["results"].items():
            r = modes.get(mode, {}) if isinstance(modes, dict) else {}
            if r.get("series"):
                xs = [s[0] for s in r["series"]]
                ys = [s[1] - r["rss_base_mib"] for s in r["series"]]
                ax.plot(xs, ys, label=name, color=COLORS.get(name))
                drawn = True
        if mode == "limits_on":
            ax.axhline(
                sc["params"]["flat_bound_mib"], ls="--", color="grey", lw=1, label="flat bound"
            )
        ax.set(xlabel="seconds since the flood began", ylabel="server RSS growth (MiB)")
        ax.set_title(mode.replace("_", " "))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def chart_deadline(sc, path: Path, title: str) -> bool:
    plt = _plt()
    p = sc["params"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    for name, modes in sc["results"].items():
        if not isinstance(modes, dict):
            continue
        for mode, style in (("deadline", "-"), ("no_deadline", "--")):
            r = modes.get(mode, {})
            label = f"{name}, {'deadline' if mode == 'deadline' else 'no deadline'}"
            # The contenders' lines mostly coincide: gmprt's on top, thicker.
            kw = {"color": COLORS.get(name), "lw": 2.2 if name == GMPRT else 1.2}
            kw["zorder"] = 3 if name == GMPRT else 2
            if r.get("tasks_series"):
                xs = [s[0] for s in r["tasks_series"]]
                ys = [s[1] for s in r["tasks_series"]]
                axes[0].plot(xs, ys, style, label=label, **kw)
                drawn = True
            if r.get("series"):
                xs = [s[0] for s in r["series"]]
                ys = [s[1] - r["rss_base_mib"] for s in r["series"]]
                axes[1].plot(xs, ys, style, label=label, **kw)
                drawn = True
    axes[0].axhline(p["tasks_bound"], ls=":", color="grey", lw=1, label="bound")
    axes[1].axhline(p["rss_bound_mib"], ls=":", color="grey", lw=1, label="bound")
    for ax, ylabel in zip(
        axes, ("tasks alive in the server", "server RSS growth (MiB)"), strict=True
    ):
        ax.axvline(p["flood_s"], color="black", lw=0.8, alpha=0.5)
        ax.set(xlabel="seconds since the flood began (line: flood ends)", ylabel=ylabel)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title(
        f"tasks alive ({p['deadline_s']:g} s deadline, {p['upstream_s']:g} s upstream)"
    )
    axes[1].set_title(f"RSS ({p['rate']:,} requests/s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def chart_summary(summary: list[dict[str, Any]], path: Path, title: str) -> bool:
    """gmprt's advantage over asyncio in each scenario where both ran."""
    label = {"echo": "echo (vs asyncio streams)", "idle": "idle (vs asyncio streams)"}
    pts = [
        (label.get(s["scenario"], s["scenario"]), s["vs_asyncio"])
        for s in summary
        if s.get("vs_asyncio")
    ]
    if not pts:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pts) + 1.5))
    names = [p[0] for p in pts][::-1]
    vals = [p[1] for p in pts][::-1]
    colors = ["#d62728" if v >= 1 else "#7f7f7f" for v in vals]
    ax.barh(names, vals, color=colors)
    ax.axvline(1, color="black", lw=1)
    ax.set(xscale="log", xlabel="gmprt's advantage over asyncio (×, log; > 1 favours gmprt)")
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.0f}×" if v >= 10 else f" {v:.2f}×", va="center", fontsize=8)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def vs_asyncio(name: str, sc: dict[str, Any]) -> float | None:
    """gmprt's advantage over asyncio in one scenario's headline figure."""
    res = sc.get("results", {})

    def pair(key: str, other: str = "asyncio", lower: bool = True):
        return adv(res.get(GMPRT, {}).get(key), res.get(other, {}).get(key), lower)

    if name == "spawn":
        return pair("us_per_task")
    if name == "ping_pong":
        return pair("us_per_rtt")
    if name == "cancel":
        return pair("us_per_cancel")
    if name == "fan_out":
        return pair("items_per_s", lower=False)
    if name == "idle":
        return pair("bytes_per_conn", "asyncio-streams")
    if name in ("blocking", "cpu_hog"):
        return pair("p99_ms")
    if name == "parallel_c":
        return pair("elapsed_s")
    if name == "parked_memory":
        g, a = res.get(GMPRT, {}).get("by_n", {}), res.get("asyncio", {}).get("by_n", {})
        common = sorted(set(g) & set(a), key=int)
        if common:
            n = common[-1]
            return adv(g[n].get("bytes_per_task"), a[n].get("bytes_per_task"), True)
    if name == "aio_http":
        return adv(
            res.get("aiohttp / gmprt.aio", {}).get("cpu_us_per_req"),
            res.get("aiohttp / asyncio", {}).get("cpu_us_per_req"),
            True,
        )
    if name == "echo":
        cases = sc["params"]["cases"]
        key = "c100-1024" if [100, 1024] in cases else f"c{cases[0][0]}-{cases[0][1]}"
        return adv(
            res.get(GMPRT, {}).get(key, {}).get("cpu_us_per_msg"),
            res.get("asyncio-streams", {}).get(key, {}).get("cpu_us_per_msg"),
            True,
        )
    return None


# ---- the report -------------------------------------------------------------------------


def load_max(m: dict[str, Any]) -> float:
    """The highest 1-minute load average seen at the start, between scenarios or at the end."""
    seen = [m.get("loadavg_start", [0])[0], m.get("loadavg_end", [0])[0]]
    return max(seen + [x[0] for x in m.get("loadavg_during", [])])


def machine_line(m: dict[str, Any]) -> str:
    ram = f"{m['ram_gib']:.0f} GiB RAM" if m.get("ram_gib") else ""
    gil = "" if m.get("gil", True) else ", free-threaded"
    load = f"1-min load average {m.get('loadavg_start', [0])[0]:.1f} at the start"
    if "loadavg_end" in m:
        load += f", up to {load_max(m):.1f} during the run"
    return (
        f"{m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, {ram}; {m.get('os', '?')}; "
        f"CPython {m.get('python', '?')}{gil}; gmprt {m.get('gmprt_commit', '?')[:12]}"
        f"{' (dirty)' if m.get('gmprt_dirty') else ''}; {m.get('date', '?')}; {load}"
    )


def busy_note(m: dict[str, Any]) -> str:
    """A warning when other work shared the machine when the run began.

    The load during the run is no guide: the contenders' own threads count
    toward it (the thread-per-connection echo server runs 1,000 of them).
    """
    cores = m.get("cores") or 1
    start = m.get("loadavg_start", [0])[0]
    if start <= cores:
        return (
            f"The machine was quiet at the start (load {start:.1f} on {cores} cores); the "
            "load average during the run counts the contenders' own threads."
        )
    return (
        f"**The machine was busy** (load average {start:.0f} on {cores} cores at the "
        "start, from other processes): every figure is noisy, ratios less so; rerun on a "
        "quiet machine before quoting them."
    )


def render(results: dict[str, Any], out: Path, draw: bool = True) -> dict[str, Any]:
    """Writes report.md, the charts and README-snippet.md into `out`; returns
    {"summary": [...], "charts": [...], "goals": {scenario: Goal dict}}."""
    m = results["machine"]
    cfg = results.get("config", {})
    sections = []
    summary = []
    goals: dict[str, Any] = {}
    charts: list[str] = []
    scenarios = results["scenarios"]
    for name in ORDER:
        sc = scenarios.get(name)
        if sc is None:
            continue
        title = TITLES[name]
        if "error" in sc:
            sections.append(f"## {title}\n\nFAILED: the scenario raised\n\n```\n{sc['error']}\n```")
            summary.append(
                {
                    "scenario": name,
                    "gmprt": "—",
                    "others": "",
                    "goal": GOALS[name],
                    "status": "FAILED",
                }
            )
            goals[name] = {"status": "FAILED", "checks": []}
            continue
        md, goal, head = RENDER[name](sc)
        goals[name] = goal.as_dict()
        params = ", ".join(f"{k} = {v}" for k, v in sc.get("params", {}).items() if k != "cases")
        took = f"{sc.get('elapsed_s', 0):.0f} s"
        body = f"## {title}\n\n{md}\n\n{goal.line(GOALS[name])}\n\n<sub>{params}; {took}</sub>"
        if draw:
            png = None
            if name == "parked_memory":
                png = (
                    "parked_memory.png"
                    if chart_parked(sc, out / "parked_memory.png", title)
                    else None
                )
            elif name == "echo":
                png = "echo.png" if chart_echo(sc, out / "echo.png", title) else None
            elif name in ("blocking", "cpu_hog"):
                lim = 25 if name == "blocking" else 50
                png = f"{name}.png" if chart_ticks(sc, out / f"{name}.png", title, lim) else None
            elif name == "overload":
                png = "overload.png" if chart_overload(sc, out / "overload.png", title) else None
            elif name == "deadline":
                png = "deadline.png" if chart_deadline(sc, out / "deadline.png", title) else None
            if png:
                charts.append(png)
                body += f"\n\n![{name}]({png})"
        sections.append(body)
        summary.append(
            {
                "scenario": name,
                "gmprt": head["gmprt"],
                "others": head["others"],
                "goal": GOALS[name],
                "status": goal.status,
                "vs_asyncio": vs_asyncio(name, sc),
            }
        )
    if draw and chart_summary(summary, out / "summary.png", "gmprt vs asyncio, one run"):
        charts.insert(0, "summary.png")
    summary_md = table(
        ["scenario", "gmprt", "others (gmprt's advantage)", "goal", "status"],
        [
            [s["scenario"], s["gmprt"], s["others"], s["goal"], f"**{s['status']}**"]
            for s in summary
        ],
        "lllll",
    )
    kind = (
        "quick run (small sizes: checks the suite works, says little about speed)"
        if cfg.get("quick")
        else "full run"
    )
    head = [
        "# gmprt benchmark report",
        "",
        f"Generated by `python benches/suite.py{' --quick' if cfg.get('quick') else ''}` — {kind}.",
        "",
        f"Machine: {machine_line(m)}.",
        "",
        busy_note(m),
        "",
        "Every contender ran in its own process; figures from one run, so compare ratios, not "
        "absolute numbers, across machines. " + ADVANTAGE_NOTE,
        "",
        "## Summary",
        "",
        summary_md,
    ]
    if "summary.png" in charts:
        head += ["", "![summary](summary.png)"]
    not_met = [s for s in summary if s["status"] != "met"]
    if not_met:
        head += [
            "",
            "Goals not met or not measured: "
            + ", ".join(f"{s['scenario']} ({s['status']})" for s in not_met)
            + ".",
        ]
    report = "\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(report)
    snippet = readme_snippet(m, cfg, summary_md, charts)
    (out / "README-snippet.md").write_text(snippet)
    return {"summary": summary, "charts": charts, "goals": goals}


def readme_snippet(
    m: dict[str, Any], cfg: dict[str, Any], summary_md: str, charts: list[str]
) -> str:
    chart = "echo.png" if "echo.png" in charts else (charts[0] if charts else None)
    lines = [
        f"Taken on {machine_line(m)}, with `python benches/suite.py"
        f"{' --quick' if cfg.get('quick') else ''}` "
        f"({cfg.get('duration_s', 0) / 60:.0f} min). Full tables: "
        "[benches/results/report.md](benches/results/report.md). " + ADVANTAGE_NOTE,
        "",
    ]
    if busy_note(m):
        lines += [busy_note(m), ""]
    lines += [summary_md]
    if chart:
        lines += ["", f"![{chart[:-4]}](benches/results/{chart})"]
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- benchmarks:begin (generated by benches/suite.py --readme) -->"
README_END = "<!-- benchmarks:end -->"


def update_readme(snippet: str, readme: Path = Path(__file__).parents[1] / "README.md") -> bool:
    """Replaces the README's generated benchmark block with `snippet`."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        print(f"{readme} has no {README_BEGIN!r} ... {README_END!r} block", file=sys.stderr)
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{snippet}{README_END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", type=Path, help="default benches/results/results.json")
    ap.add_argument("--readme", action="store_true", help="paste the summary into README.md")
    args = ap.parse_args(argv)
    path = args.results or Path(__file__).parent / "results" / "results.json"
    results = json.loads(path.read_text())
    out = render(results, path.parent)
    print(f"wrote {path.parent / 'report.md'} and {len(out['charts'])} charts")
    if args.readme and update_readme((path.parent / "README-snippet.md").read_text()):
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
