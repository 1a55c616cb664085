"""The whole benchmark suite, one command: every scenario of BENCHMARKS.md for
every contender, in one run; results in benches/results/.

    python benches/suite.py                 # the full run (~7 min on 2 cores)
    python benches/suite.py --quick         # every scenario, small (< 1 min); CI runs it
    python benches/suite.py --only echo idle aio_http
    python benches/suite.py --readme        # also paste the summary into README.md

Contenders: gmprt (default procs, and procs=1), asyncio, uvloop (when
installed) and threading; each scenario runs each contender in its own
process. Writes into ``--out`` (default benches/results/, or
benches/results/quick/ with --quick):

- ``results.json``: every figure, the machine (CPU, cores, RAM, OS, Python,
  gmprt's git commit, date), and each scenario's goal verdict;
- ``report.md``: a table per scenario with gmprt's advantage over each
  contender and whether the BENCHMARKS.md goal is met;
- PNG charts: summary, parked memory vs N, echo msgs/s vs connections, tick
  delay distributions (blocking call, CPU hog), overload RSS over time,
  deadline tasks alive and RSS over time;
- ``README-snippet.md``: the summary table and a chart, as the README shows
  them (``--readme`` replaces the README's benchmark section with it).

Scenarios that need a gmprt feature not built in (gmprt.net, timed sleep,
gmprt.Chan) run for the other contenders and say, for gmprt, what is missing.
A scenario whose outside tool is missing here (``wrk`` for aio_http) is
skipped with a note. With ``--quick`` the exit status is non-zero when a
scenario produced no figures at all (and was not skipped so) or a contender
crashed; nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import report  # noqa: E402

# scenario -> the module whose run(quick, scenarios) measures it
MODULES = {
    "spawn": "spawn",
    "ping_pong": "chan",
    "fan_out": "chan",
    "parked_memory": "chan",
    "echo": "echo",
    "idle": "echo",
    "blocking": "blocking",
    "cpu_hog": "blocking",
    "parallel_c": "blocking",
    "overload": "overload",
    "cancel": "cancel",
    "deadline": "deadline",
    "lines": "lines",
    "tls": "tls",
    "tracing": "tracing",
    "aio_blocking": "aio_blocking",
    "aio_http": "aio_http",
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
        "gmprt_commit": _git("rev-parse", "HEAD"),
        "gmprt_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "gmprt_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["physical_cores"] = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    for mod in ("uvloop", "psutil", "matplotlib"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import gmprt\nprint(gmprt.run(lambda: gmprt.stats()['procs']))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        info["gmprt_default_procs"] = int(r.stdout.strip()) if r.returncode == 0 else None
    except (subprocess.SubprocessError, ValueError):
        info["gmprt_default_procs"] = None
    return info


def _figures(r: Any) -> bool:
    """Whether `r` holds a measured figure: a number in a dict that is not
    marked skipped or failed, at any depth."""
    if not isinstance(r, dict) or "skipped" in r or "failed" in r:
        return False
    return any(
        (isinstance(v, int | float) and not isinstance(v, bool)) or _figures(v) for v in r.values()
    )


def has_figures(sc: dict[str, Any]) -> bool:
    """Whether any contender produced a figure in this scenario."""
    return "error" not in sc and any(_figures(r) for r in sc.get("results", {}).values())


def crashes(sc: dict[str, Any]) -> list[str]:
    """What failed in a scenario, as 'contender[/part]: why': a contender that
    crashed or timed out, or an echo run whose load generator saw errors."""
    out = []

    def walk(name: str, r: Any) -> None:
        if not isinstance(r, dict):
            return
        if "failed" in r:
            out.append(f"{name}: {r['failed']}")
        elif isinstance(r.get("errors"), int) and r["errors"] > 0 and "msgs_per_s" in r:
            out.append(f"{name}: {r['errors']} errors, the first: {r.get('first_error')}")
        for k, v in r.items():
            walk(f"{name}/{k}", v)

    for name, r in sc.get("results", {}).items():
        walk(name, r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 min; CI runs this")
    ap.add_argument(
        "--only", nargs="+", metavar="SCENARIO", help=f"run only these: {', '.join(MODULES)}"
    )
    ap.add_argument("--out", type=Path, help="results folder (default benches/results[/quick])")
    ap.add_argument("--readme", action="store_true", help="paste the summary into README.md")
    args = ap.parse_args(argv)
    wanted = [s.replace("-", "_") for s in (args.only or MODULES)]
    unknown = [s for s in wanted if s not in MODULES]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(MODULES)})")
    out = args.out or (BENCH_DIR / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)

    t_start = time.monotonic()
    load_seen: list[list[float]] = []
    done = threading.Event()

    def watch_load() -> None:
        # Other processes' load skews every figure: keep a record of it.
        while not done.wait(5):
            load_seen.append([round(x, 2) for x in os.getloadavg()])

    threading.Thread(target=watch_load, daemon=True).start()
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {"quick": args.quick, "only": args.only, "argv": sys.argv[1:]},
        "scenarios": {},
    }
    print(f"machine: {report.machine_line(results['machine'])}", flush=True)
    modules: dict[str, list[str]] = {}
    for s in report.ORDER:
        if s in wanted:
            modules.setdefault(MODULES[s], []).append(s)
    for mod_name, scenarios in modules.items():
        print(f"== {', '.join(scenarios)}", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(mod_name)
            got = mod.run(args.quick, scenarios)
        except Exception:  # report it, go on with the others
            err = traceback.format_exc()
            print(err, file=sys.stderr, flush=True)
            got = {s: {"error": err[-4000:]} for s in scenarios}
        took = time.monotonic() - t0
        for s in scenarios:
            sc = got.get(s, {"error": f"{mod_name}.run() returned no {s!r}"})
            sc["elapsed_s"] = round(took / len(scenarios), 1)
            results["scenarios"][s] = sc
            if "skipped" in sc:
                print(f"   {s}: skipped, {sc['skipped']}", flush=True)
                continue
            for name, r in sc.get("results", {}).items():
                if isinstance(r, dict) and ("skipped" in r or "failed" in r):
                    print(f"   {s}/{name}: {report.why_not(r)}", flush=True)
        print(f"   {took:.1f} s", flush=True)

        # Written as we go: a crash later keeps what was measured.
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    results["config"]["duration_s"] = round(time.monotonic() - t_start, 1)
    done.set()
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["loadavg_during"] = load_seen
    rendered = report.render(results, out)
    results["goals"] = rendered["goals"]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    for s in rendered["summary"]:
        print(f"{s['scenario']:14} {s['status']:13} gmprt {s['gmprt']}")
    charts = ", ".join(rendered["charts"])
    print(f"\nwrote {out}/: results.json, report.md, README-snippet.md, {charts}")
    print(f"suite took {results['config']['duration_s']:.0f} s")
    if args.readme and report.update_readme((out / "README-snippet.md").read_text()):
        print("updated README.md")

    if args.quick:
        bad = []
        for s in wanted:
            sc = results["scenarios"].get(s, {})
            if "skipped" in sc:
                # A tool the scenario needs is missing here (wrk): said, not failed.
                print(f"quick suite: {s} skipped: {sc['skipped']}")
                continue
            if not has_figures(sc):
                bad.append(f"{s}: no figures")
            bad += [f"{s}/{c}" for c in crashes(sc)]
        if bad:
            print("\nquick suite FAILED:\n  " + "\n  ".join(bad), file=sys.stderr)
            return 1
        skipped = [s for s in wanted if "skipped" in results["scenarios"].get(s, {})]
        print(
            "quick suite: every scenario produced figures"
            + (f" (skipped with a note: {', '.join(skipped)})" if skipped else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
