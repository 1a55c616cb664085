"""Run CPython's own asyncio test suite against gmprt's loop.

``Lib/test/test_asyncio`` ships with the interpreter. This adapter runs its
loop-generic tests with every loop they make being a ``gmprt.aio`` loop:

- the event loop policy is ``gmprt.aio.EventLoopPolicy`` (and stays so when a
  test resets it), so ``asyncio.new_event_loop()``, ``asyncio.run()`` and
  ``IsolatedAsyncioTestCase`` get gmprt loops;
- ``test_utils.TestCase.new_test_loop()`` without a virtual-time generator
  returns a gmprt loop (with one, the test needs asyncio's fake clock and
  keeps its ``TestLoop``);
- the mixins of ``test_events`` and ``test_sock_lowlevel`` are subclassed
  with ``create_event_loop`` returning a gmprt loop, and ``test_subprocess``
  runs its child-watcher tests (the multi-loop watcher's are skipped by
  CPython itself).

A test counts for gmprt only if it made a gmprt loop; the others (tests of
asyncio's fake-clock loop, of policies, of helpers) are reported apart.

Each module runs in a child process, one test at a time, each under a
timeout (``faulthandler`` ends a hung child; the test is recorded as a hang
and the child restarts after it). Every test that does not pass must be in
``expected_failures.txt`` with its reason; one that is not fails the run.

Usage: ``python tests/aio_cpython/run.py [MODULE ...]`` (default: all).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = os.path.join(HERE, "expected_failures.txt")

MODULES = [
    "test_events",
    "test_protocols",
    "test_streams",
    "test_sock_lowlevel",
    "test_server",
    "test_tasks",
    "test_taskgroups",
    "test_timeouts",
    "test_locks",
    "test_queues",
    "test_futures",
    "test_waitfor",
    "test_runners",
    "test_subprocess",
    "test_ssl",
]

# Per test, and per module (a child restarted after hangs included).
TEST_TIMEOUT = 30.0
MODULE_TIMEOUT = 300.0


# -- the child: one module, tests in order, one JSON line per event ----------


def _install() -> None:
    import asyncio
    from asyncio import events

    import gmprt.aio

    real_set = events.set_event_loop_policy

    def set_policy(policy):  # a test's reset keeps gmprt's loops
        real_set(policy if policy is not None else gmprt.aio.EventLoopPolicy())

    real_set(gmprt.aio.EventLoopPolicy())
    events.set_event_loop_policy = set_policy
    asyncio.set_event_loop_policy = set_policy

    init = gmprt.aio.GmprtEventLoop.__init__

    def counting_init(self, *a, **kw):
        global _loops_made
        _loops_made += 1
        init(self, *a, **kw)

    gmprt.aio.GmprtEventLoop.__init__ = counting_init

    from test.test_asyncio import utils as test_utils

    real_new = test_utils.TestCase.new_test_loop

    def new_test_loop(self, gen=None):
        if gen is not None:
            return real_new(self, gen)
        loop = gmprt.aio.new_event_loop()
        self.set_event_loop(loop)
        return loop

    test_utils.TestCase.new_test_loop = new_test_loop


_loops_made = 0


def _suite(module: str) -> list[unittest.TestCase]:
    import importlib

    import gmprt.aio

    mod = importlib.import_module(f"test.test_asyncio.{module}")
    from test.test_asyncio import utils as test_utils

    loader = unittest.TestLoader()
    classes: list[type] = []
    if module == "test_events":
        import asyncio

        class GmprtEventLoopTests(
            mod.EventLoopTestsMixin, mod.SubprocessTestsMixin, test_utils.TestCase
        ):
            def setUp(self):
                super().setUp()
                # SafeChildWatcher (test_events' own) needs SIGCHLD.
                watcher = asyncio.ThreadedChildWatcher()
                watcher.attach_loop(self.loop)
                asyncio.set_child_watcher(watcher)

            def tearDown(self):
                asyncio.set_child_watcher(None)
                super().tearDown()

            def create_event_loop(self):
                return gmprt.aio.new_event_loop()

        classes = [GmprtEventLoopTests]
    elif module == "test_sock_lowlevel":

        class GmprtSockTests(mod.BaseSockTestsMixin, test_utils.TestCase):
            def create_event_loop(self):
                return gmprt.aio.new_event_loop()

        classes = [GmprtSockTests]
    elif module == "test_subprocess":
        classes = [
            mod.SubprocessThreadedWatcherTests,
            mod.SubprocessSafeWatcherTests,
            mod.SubprocessFastWatcherTests,
        ]
        if hasattr(mod, "SubprocessPidfdWatcherTests"):
            classes.append(mod.SubprocessPidfdWatcherTests)
    elif module == "test_server":

        class GmprtStartServerTests(mod.SelectorStartServerTests):
            def new_loop(self):
                return gmprt.aio.new_event_loop()

        classes = [GmprtStartServerTests]
    elif module == "test_runners":
        # Its tests run asyncio.Runner on a policy of mock loops; they get
        # a gmprt loop that records the asyncgens shutdown the same way.
        def new_loop(self):
            loop = gmprt.aio.new_event_loop()
            loop.shutdown_ag_run = False
            real_shutdown = loop.shutdown_asyncgens

            async def shutdown_asyncgens():
                loop.shutdown_ag_run = True
                await real_shutdown()

            loop.shutdown_asyncgens = shutdown_asyncgens
            return loop

        mod.BaseTest.new_loop = new_loop
    if classes:
        tests = [loader.loadTestsFromTestCase(c) for c in classes]
        suite = unittest.TestSuite(tests)
    else:
        suite = loader.loadTestsFromModule(mod)
    return list(_flatten(suite))


def _flatten(s):
    for t in s:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _name(module: str, t: unittest.TestCase) -> str:
    cls = type(t).__name__
    return f"{module}.{cls}.{t._testMethodName}"


def child(module: str, skip: int, out: str) -> None:
    import faulthandler

    _install()
    tests = _suite(module)
    # Module-level fixtures (setUpModule / tearDownModule) are not run: the
    # ones of these modules only reset the policy, which _install owns.
    with open(out, "a", buffering=1) as f:
        for i, t in enumerate(tests):
            if i < skip:
                continue
            name = _name(module, t)
            f.write(json.dumps({"start": i, "name": name}) + "\n")
            global _loops_made
            _loops_made = 0
            result = unittest.TestResult()
            faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True)
            t0 = time.monotonic()
            try:
                t.run(result)
            finally:
                faulthandler.cancel_dump_traceback_later()
            if result.errors or result.failures:
                status = "fail"
                tb = (result.errors + result.failures)[0][1]
                reason = tb.strip().splitlines()[-1][:200]
            elif result.skipped:
                status, reason = "skip", result.skipped[0][1][:200]
            elif result.unexpectedSuccesses:
                status, reason = "pass", ""
            else:
                status, reason = "pass", ""
            rec = {
                "done": i,
                "name": name,
                "status": status,
                "reason": reason,
                "gmprt": _loops_made > 0,
                "secs": round(time.monotonic() - t0, 3),
            }
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({"end": True}) + "\n")


# -- the parent ---------------------------------------------------------------


def run_module(module: str, tmpdir: str) -> list[dict]:
    out = os.path.join(tmpdir, f"{module}.jsonl")
    if os.path.exists(out):
        os.remove(out)
    skip = 0
    results: list[dict] = []
    deadline = time.monotonic() + MODULE_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            results.append({"name": f"{module}.*", "status": "fail", "reason": "module timeout"})
            return results
        cmd = [sys.executable, os.path.abspath(__file__), "--child", module, "--skip", str(skip)]
        cmd += ["--out", out]
        try:
            subprocess.run(
                cmd,
                timeout=left,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            pass
        started = None
        ended = False
        results = []
        with open(out) as f:
            for line in f:
                rec = json.loads(line)
                if "start" in rec:
                    started = rec
                elif "done" in rec:
                    results.append(rec)
                    started = None
                elif "end" in rec:
                    ended = True
        if ended:
            return results
        if started is None:
            results.append(
                {"name": f"{module}.*", "status": "fail", "reason": "child died outside a test"}
            )
            return results
        # A hang or crash inside `started`: record it, go on after it.
        with open(out, "a") as f:
            rec = {
                "done": started["start"],
                "name": started["name"],
                "status": "fail",
                "reason": f"hang or crash (over {TEST_TIMEOUT:.0f} s, or the process died)",
                "gmprt": True,
                "secs": TEST_TIMEOUT,
            }
            f.write(json.dumps(rec) + "\n")
        skip = started["start"] + 1


def load_expected() -> dict[str, str]:
    exp: dict[str, str] = {}
    with open(EXPECTED) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition(" ")
            exp[name] = reason.strip().lstrip("#").strip()
    return exp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("modules", nargs="*")
    ap.add_argument("--child")
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--write-expected", action="store_true", help="list current failures")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.skip, args.out)
        return 0
    import tempfile

    expected = load_expected()
    modules = args.modules or MODULES
    unexpected: list[str] = []
    now_pass: list[str] = []
    failing: list[tuple[str, str]] = []
    total_pass = total_fail = 0
    with tempfile.TemporaryDirectory() as tmp:
        for m in modules:
            t0 = time.monotonic()
            res = run_module(m, tmp)
            gm = [r for r in res if r.get("gmprt")]
            p = sum(r["status"] == "pass" for r in gm)
            fl = [r for r in gm if r["status"] == "fail"]
            fl += [r for r in res if r["name"].endswith(".*")]
            sk = sum(r["status"] == "skip" for r in gm)
            other = len(res) - len(gm)
            total_pass += p
            total_fail += len(fl)
            print(
                f"{m:20} on gmprt: {p:4} passed {len(fl):4} failed {sk:3} skipped"
                f"   (+{other} not using a loop of ours)   {time.monotonic() - t0:5.1f} s",
                flush=True,
            )
            for r in fl:
                failing.append((r["name"], r["reason"]))
                if r["name"] not in expected:
                    unexpected.append(f"{r['name']}: {r['reason']}")
            for r in gm:
                if r["status"] == "pass" and r["name"] in expected:
                    now_pass.append(r["name"])
    print(f"CPython asyncio suite on gmprt.aio: {total_pass} passed, {total_fail} failed")
    if args.write_expected:
        for name, reason in failing:
            print(f"{name} {reason}")
    for n in now_pass:
        print(f"now passes (remove it from expected_failures.txt): {n}")
    if unexpected:
        print("FAILED, not in expected_failures.txt:")
        for u in unexpected:
            print("  " + u)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
