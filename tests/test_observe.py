"""Observability: the goroutine dump (gmprt.goroutines(), gmprt.dump()),
SIGQUIT, and schedtrace. Tests parse what is printed; every wait is
bounded."""

from __future__ import annotations

import io
import re
import sys
import threading

import gmprt
import pytest
from helpers import http_get, spin_until

HEADER = re.compile(r"^goroutine (\d+) \[([^\]]+)\]: (\S+)$", re.M)


async def wait_parked(n_waiting, cap=200_000):
    """Yield until at least `n_waiting` Gs are parked (bounded)."""
    for _ in range(cap):
        if sum(g["state"] == "waiting" for g in gmprt.goroutines()) >= n_waiting:
            return
        await gmprt.sleep(0.001)
    raise AssertionError(f"never saw {n_waiting} parked Gs: {gmprt.goroutines()}")


def by_name(gs):
    return {g["name"]: g for g in gs}


def test_outside_run_there_are_none():
    assert gmprt.goroutines() == []
    out = io.StringIO()
    gmprt.dump(out)
    assert out.getvalue() == ""


def test_each_kind_of_wait_is_named(procs):
    async def receiver(ch):
        try:
            await ch.recv()
        except gmprt.Cancelled:
            raise

    async def sender(ch):
        await ch.send(1)

    async def selector(a, b):
        await gmprt.select(a.recv_case(), b.recv_case())

    async def sleeper():
        await gmprt.sleep(60)

    async def locker(mu):
        await mu.lock()

    async def acquirer(sem):
        await sem.acquire()

    async def waiter(wg):
        await wg.wait()

    async def joiner(g):
        await g

    async def acceptor(ln):
        await ln.accept()

    async def reader(conn):
        await conn.recv()

    async def main():
        mu, sem, wg = gmprt.Mutex(), gmprt.Semaphore(1), gmprt.WaitGroup()
        await mu.lock()
        await sem.acquire()
        wg.add(1)
        ln = gmprt.net.listen("127.0.0.1", 0)
        host, port = ln.address
        ln2 = gmprt.net.listen("127.0.0.1", 0)
        client = await gmprt.net.dial(*ln2.address)
        server = await ln2.accept()
        s = gmprt.go(sleeper)
        gmprt.go(receiver, gmprt.Chan())
        gmprt.go(sender, gmprt.Chan())
        gmprt.go(selector, gmprt.Chan(), gmprt.Chan())
        gmprt.go(locker, mu)
        gmprt.go(acquirer, sem)
        gmprt.go(waiter, wg)
        gmprt.go(joiner, s)
        gmprt.go(acceptor, ln)
        gmprt.go(reader, server)
        await wait_parked(10)
        gs = by_name(gmprt.goroutines())
        client_addr = client.local_address
        client.close()
        server.close()
        ln.close()
        ln2.close()
        return gs, s.id, (host, port), client_addr

    gs, sid, (host, port), client_addr = gmprt.run(main, procs=procs)
    want = {
        "main.<locals>.receiver": "chan receive",
        "main.<locals>.sender": "chan send",
        "main.<locals>.selector": "select",
        "main.<locals>.sleeper": "sleep",
        "main.<locals>.locker": "Mutex.lock",
        "main.<locals>.acquirer": "Semaphore.acquire",
        "main.<locals>.waiter": "WaitGroup.wait",
        "main.<locals>.joiner": f"join G {sid}",
    }
    names = {k.rsplit(".", 1)[-1]: v for k, v in gs.items()}
    for name, wait in want.items():
        short = name.rsplit(".", 1)[-1]
        g = names[short]
        assert g["state"] == "waiting", g
        assert g["wait"] == wait, g
        assert isinstance(g["wait_seconds"], float) and g["wait_seconds"] >= 0
    assert names["acceptor"]["wait"] == f"net accept on {host}:{port}"
    assert names["reader"]["wait"].startswith("net recv from 127.0.0.1:"), names["reader"]
    assert str(client_addr[1]) in names["reader"]["wait"]
    main_g = names["main"]
    assert main_g["state"] == "running"
    assert main_g["thread"] is not None


def test_stack_follows_the_await_chain_and_creation_site(procs):
    async def inner(ch):
        await ch.recv()

    async def middle(ch):
        await inner(ch)

    async def outer(ch):
        await middle(ch)

    async def main():
        ch = gmprt.Chan()
        line = sys._getframe().f_lineno + 1
        g = gmprt.go(outer, ch)
        await wait_parked(1)
        gs = {x["id"]: x for x in gmprt.goroutines()}
        ch.close()
        try:
            await g
        except gmprt.ChanClosed:
            pass
        return gs, g.id, line

    gs, gid, line = gmprt.run(main, procs=procs)
    g = gs[gid]
    assert [f["function"].rsplit(".", 1)[-1] for f in g["stack"]] == ["outer", "middle", "inner"]
    assert all(f["file"] == __file__ for f in g["stack"])
    assert g["created_by"]["g"] == 1
    assert g["created_by"]["line"] == line
    assert g["created_by"]["file"] == __file__
    assert g["created_by"]["function"].endswith("main")
    assert gs[1]["created_by"] is None  # main: created by run()
    # The running main's own stack comes from its thread.
    assert gs[1]["stack"][-1]["function"].endswith("main")


def test_wait_seconds_grows_while_parked():
    async def sleeper():
        await gmprt.sleep(60)

    async def main():
        g = gmprt.go(sleeper)
        await gmprt.sleep(0.3)
        (entry,) = [x for x in gmprt.goroutines() if x["id"] == g.id]
        g.cancel()
        return entry

    entry = gmprt.run(main)
    # A lower bound only (the clock is coarse, a few ms): it waited 0.3 s.
    assert entry["wait_seconds"] >= 0.2, entry


def test_sync_g_in_a_blocking_call_is_syscall():
    started = threading.Event()

    def blocker(ch):
        started.set()
        try:
            ch.recv_blocking(timeout=20)
        except gmprt.ChanClosed:
            pass

    async def main():
        ch = gmprt.Chan()
        g = gmprt.go(blocker, ch)
        await spin_until(started.is_set)
        for _ in range(2000):
            e = [x for x in gmprt.goroutines() if x["id"] == g.id]
            if e and e[0]["state"] == "syscall":
                break
            await gmprt.sleep(0.005)
        ch.close()
        await g
        return e[0]

    e = gmprt.run(main, procs=1)
    assert e["state"] == "syscall", e
    assert e["wait"] == "chan receive", e
    assert e["wait_seconds"] is None
    assert e["thread"] is not None
    assert any(f["function"].endswith("blocker") for f in e["stack"]), e


def test_runnable_g_not_started_yet():
    async def later():
        pass

    async def main():
        # The new G waits in the run queue until main's step ends (or
        # sysmon hands main's P off, 10 ms into a long step: then try
        # again with a new G; bounded).
        for _ in range(50):
            g = gmprt.go(later)
            gs = gmprt.goroutines()
            e = [x for x in gs if x["id"] == g.id]
            if e and e[0]["state"] == "runnable":
                return e[0]
            await gmprt.sleep(0)
        raise AssertionError("never saw a runnable G")

    e = gmprt.run(main, procs=1)
    assert e["name"].endswith("later")
    assert e["stack"] == []
    assert e["created_by"]["g"] == 1


def test_dump_text_parses_and_matches_goroutines(procs):
    async def worker(ch):
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass

    async def main():
        ch = gmprt.Chan()
        for _ in range(5):
            gmprt.go(worker, ch)
        await wait_parked(5)
        out = io.StringIO()
        gmprt.dump(out)
        gs = gmprt.goroutines()
        ch.close()
        return out.getvalue(), gs

    text, gs = gmprt.run(main, procs=procs)
    headers = HEADER.findall(text)
    assert {int(i) for i, _, _ in headers} == {g["id"] for g in gs}
    waits = [w for _, w, name in headers if name.endswith("worker")]
    assert len(waits) == 5
    assert all(re.fullmatch(r"chan receive, \d+\.\ds", w) for w in waits), waits
    assert len(re.findall(r"^created by \S+main in G 1 at .+:\d+$", text, re.M)) == 5, text
    assert f"{__file__}:" in text


def test_dump_while_gs_churn(procs):
    """Dumps in a loop while other Gs spawn, park, wake and finish on
    other Ms: every entry is whole, and nothing crashes or hangs."""
    N = 3000

    async def child(ch):
        await gmprt.sleep(0)
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass

    async def spawner(ch, wg):
        for _ in range(N):
            gmprt.go(child, ch)
            if _ % 50 == 0:
                await gmprt.sleep(0)
        wg.done()

    async def closer(ch, stop):
        # Keeps Gs ending: each value wakes one child.
        while not stop:
            ch.try_send(None)
            await gmprt.sleep(0)

    async def main():
        ch, wg, stop = gmprt.Chan(16), gmprt.WaitGroup(), []
        wg.add(2)
        gmprt.go(spawner, ch, wg)
        gmprt.go(spawner, ch, wg)
        c = gmprt.go(closer, ch, stop)
        dumps = 0
        while dumps < 200:
            for g in gmprt.goroutines():
                assert g["state"] in ("running", "runnable", "waiting", "syscall")
                assert isinstance(g["id"], int) and g["name"]
                if g["state"] == "waiting":
                    assert g["wait"] and g["wait_seconds"] is not None
            dumps += 1
            await gmprt.sleep(0)
        await wg.wait()
        stop.append(1)
        await c
        ch.close()
        return dumps

    assert gmprt.run(main, procs=procs) == 200


def test_leaked_lists_gs_on_channels_nobody_else_can_reach(procs):
    async def leaky():
        ch = gmprt.Chan()
        await ch.recv()  # nobody else has ch

    async def held(ch):
        await ch.recv()  # main still holds ch

    async def sel(a, b):
        await gmprt.select(a.recv_case(), b.recv_case())

    async def timed():
        await gmprt.Chan().recv(timeout=30)  # its timeout ends it

    async def sender():
        await gmprt.Chan().send(1)

    async def sleeper():
        await gmprt.sleep(30)

    async def main():
        keep = gmprt.Chan()
        gs = {
            "leaky": gmprt.go(leaky),
            "held": gmprt.go(held, keep),
            "sel_lost": gmprt.go(sel, gmprt.Chan(), gmprt.Chan()),
            "sel_kept": gmprt.go(sel, keep, gmprt.Chan()),
            "timed": gmprt.go(timed),
            "sender": gmprt.go(sender),
            "sleeper": gmprt.go(sleeper),
        }
        await wait_parked(len(gs))
        leaked = {g["id"] for g in gmprt.goroutines(leaked=True)}
        keep.close()
        for g in gs.values():
            g.cancel()
        return {name for name, g in gs.items() if g.id in leaked}

    assert gmprt.run(main, procs=procs) == {"leaky", "sel_lost", "sender"}


def test_from_a_foreign_thread():
    got = []

    async def sleeper():
        await gmprt.sleep(60)

    async def main():
        g = gmprt.go(sleeper)
        await wait_parked(1)
        t = threading.Thread(target=lambda: got.append(gmprt.goroutines()))
        t.start()
        t.join(20)
        g.cancel()

    gmprt.run(main)
    (gs,) = got
    assert any(g["wait"] == "sleep" for g in gs)


# ---- SIGQUIT and the Deadlock message ---------------------------------------

SIGQUIT_CHILD = r"""
import io, os, sys, threading
import gmprt

seen = threading.Event()

# main goes on once the whole dump is out (the handler flushes after it),
# not at its first line: the handler runs on the thread in run() while
# main runs on an M. With GMPRT_TRACEBACK=crash it never goes on: the
# handler ends the process.
crash = os.environ.get("GMPRT_TRACEBACK") == "crash"
started = False

class Tee(io.TextIOBase):
    def write(self, s):
        global started
        sys.__stderr__.write(s)
        started = started or "SIGQUIT" in s
        return len(s)

    def flush(self):
        sys.__stderr__.flush()
        if started and not crash:
            seen.set()

sys.stderr = Tee()

async def stuck(ch):
    try:
        await ch.recv()
    except gmprt.ChanClosed:
        pass

async def main():
    ch = gmprt.Chan()
    gmprt.go(stuck, ch)
    await gmprt.sleep(0.05)
    print("READY", flush=True)
    for _ in range(600):  # 30 s at most
        if seen.is_set():
            break
        await gmprt.sleep(0.05)
    ch.close()
    print("DONE", seen.is_set(), flush=True)

gmprt.run(main)
"""


def _sigquit_child(env_extra):
    import os
    import signal
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_extra)
    p = subprocess.Popen(
        [sys.executable, "-c", SIGQUIT_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "READY"
        p.send_signal(signal.SIGQUIT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    return p.returncode, out, err


def test_sigquit_prints_the_dump_and_keeps_running():
    rc, out, err = _sigquit_child({})
    assert rc == 0, err
    assert out.strip() == "DONE True", (out, err)
    assert err.startswith("SIGQUIT: quit\n"), err
    headers = HEADER.findall(err)
    assert "stuck" in {name for _, _, name in headers}, err
    waits = {name: w for _, w, name in headers}
    assert waits["stuck"].startswith("chan receive"), err
    assert waits["main"] in ("running", "runnable") or waits["main"].startswith("sleep"), err
    assert "created by main in G 1 at <string>:" in err, err


def test_gmprt_traceback_crash_prints_and_exits_2():
    rc, out, err = _sigquit_child({"GMPRT_TRACEBACK": "crash"})
    assert rc == 2, (rc, out, err)
    assert "DONE" not in out
    assert "SIGQUIT: quit" in err
    assert any(name == "stuck" for _, _, name in HEADER.findall(err)), err


def test_deadlock_message_has_each_stack():
    async def inner(ch):
        await ch.recv()

    async def one(ch):
        await inner(ch)

    async def main():
        gmprt.go(one, gmprt.Chan())
        await gmprt.Chan().recv()

    with pytest.raises(gmprt.Deadlock) as e:
        gmprt.run(main)
    msg = str(e.value)
    assert msg.startswith("all goroutines are asleep - deadlock!"), msg
    # Each G's line, then its frames, innermost first.
    one_stack = r"G 2 \(\S*one\) \[chan receive\]\n\s+\S*inner\(\.\.\.\)\n\s+\S+:\d+\n\s+\S*one\("
    assert re.search(one_stack, msg), msg
    assert re.search(r"G 1 \(\S*main\) \[chan receive\]\n\s+\S*main\(\.\.\.\)", msg), msg
    assert "created by" in msg


# ---- schedtrace -------------------------------------------------------------

SCHED = re.compile(
    r"^SCHED (?P<ms>\d+)ms: gomaxprocs=(?P<procs>\d+) idleprocs=(?P<idle>\d+) "
    r"threads=(?P<threads>\d+) spinningthreads=\d+ idlethreads=\d+ runqueue=\d+ "
    r"\[(?P<local>[\d ]*)\] gs: running=\d+ runnable=\d+ syscall=\d+ "
    r"waiting=(?P<waiting>\d+)(?: \((?P<reasons>[^)]*)\))? netpoll_waiters=\d+ "
    r"timers=(?P<timers>\d+) handoffs=\+\d+ steals=\+\d+$",
    re.M,
)

SCHED_CHILD = """
import gmprt

async def w(ch):
    try:
        await ch.recv()
    except gmprt.ChanClosed:
        pass

async def main():
    ch = gmprt.Chan()
    for _ in range(3):
        gmprt.go(w, ch)
    await gmprt.sleep(0.6)
    ch.close()

gmprt.run(main, procs=2{kw})
print("DONE")
"""


def _sched_lines(err):
    return [m.groupdict() for m in SCHED.finditer(err)]


def test_schedtrace_env_prints_go_lines(run_script):
    import os

    os.environ["GMPRT_SCHEDTRACE"] = "20"
    try:
        r = run_script(SCHED_CHILD.format(kw=""))
    finally:
        del os.environ["GMPRT_SCHEDTRACE"]
    assert r.returncode == 0 and r.stdout.strip() == "DONE", r.stderr
    lines = _sched_lines(r.stderr)
    assert len(lines) >= 2, r.stderr
    assert [int(x["ms"]) for x in lines] == sorted(int(x["ms"]) for x in lines)
    for x in lines:
        assert x["procs"] == "2" and len(x["local"].split()) == 2, x
    # The three receivers (and main's sleep) show up by reason.
    assert any(x["reasons"] and "chan receive=3" in x["reasons"] for x in lines), r.stderr
    assert any(x["reasons"] and "sleep=1" in x["reasons"] for x in lines), r.stderr
    # Every stderr line is a SCHED line: nothing else was printed.
    assert all(SCHED.match(line) for line in r.stderr.splitlines()), r.stderr


def test_schedtrace_argument(run_script):
    r = run_script(SCHED_CHILD.format(kw=", schedtrace=20"))
    assert r.returncode == 0, r.stderr
    assert len(_sched_lines(r.stderr)) >= 2, r.stderr


def test_scheddetail_adds_p_m_and_g_lines(run_script):
    import os

    os.environ.update(GMPRT_SCHEDTRACE="20", GMPRT_SCHEDDETAIL="1")
    try:
        r = run_script(SCHED_CHILD.format(kw=""))
    finally:
        del os.environ["GMPRT_SCHEDTRACE"], os.environ["GMPRT_SCHEDDETAIL"]
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  P0: status=\d schedtick=\d+ runqsize=\d+$", r.stderr, re.M), r.stderr
    assert re.search(r"^  P1: status=\d ", r.stderr, re.M), r.stderr
    assert re.search(
        r"^  M\d+: curg=-?\d+ blocked=(true|false) thread=0x[0-9a-f]+$", r.stderr, re.M
    )
    assert len(re.findall(r"^  G\d+: status=4\(chan receive\)$", r.stderr, re.M)) >= 3, r.stderr


def test_schedtrace_bad_env_warns_once_and_is_ignored(run_script):
    import os

    code = """
    import gmprt
    async def main():
        await gmprt.sleep(0.05)
    gmprt.run(main)
    gmprt.run(main)
    print("DONE")
    """
    os.environ["GMPRT_SCHEDTRACE"] = "abc"
    try:
        r = run_script(code)
    finally:
        del os.environ["GMPRT_SCHEDTRACE"]
    assert r.returncode == 0 and r.stdout.strip() == "DONE", r.stderr
    assert r.stderr.count("RuntimeWarning: GMPRT_SCHEDTRACE must be a whole number") == 1, r.stderr
    assert "'abc'" in r.stderr or '"abc"' in r.stderr
    assert not re.search(r"^SCHED ", r.stderr, re.M), r.stderr


@pytest.mark.parametrize("bad", [-1, 3_600_001, "10"])
def test_schedtrace_argument_is_checked(bad):
    async def main():
        pass

    with pytest.raises((ValueError, TypeError)):
        gmprt.run(main, schedtrace=bad)


# ---- the debug endpoint -----------------------------------------------------


def _http_get(url):
    """`helpers.http_get` as text, run as a sync G: (status, type, body)."""
    status, ctype, body = http_get(url)
    return status, ctype, body.decode()


def test_debug_endpoint_answers_a_real_http_client(procs):
    import json

    async def worker(ch):
        try:
            await ch.recv()
        except gmprt.ChanClosed:
            pass

    async def main():
        ch = gmprt.Chan()
        w = gmprt.go(worker, ch)
        with gmprt.debug.serve() as srv:
            host, port = srv.address
            base = f"http://{host}:{port}/debug/gmprt"
            text = await gmprt.go(_http_get, base + "/goroutines")
            js = await gmprt.go(_http_get, base + "/goroutines?format=json")
            sched = await gmprt.go(_http_get, base + "/sched")
            missing = await gmprt.go(_http_get, base + "/nope")
        ch.close()
        await w
        return host, w.id, text, js, sched, missing

    host, wid, text, js, sched, missing = gmprt.run(main, procs=procs)
    assert host == "127.0.0.1"
    status, ctype, body = text
    assert status == 200 and ctype.startswith("text/plain"), text
    headers = {int(i): (w, n) for i, w, n in HEADER.findall(body)}
    assert headers[wid][0].startswith("chan receive"), body
    assert headers[1][1].endswith("main")
    status, ctype, body = js
    assert status == 200 and ctype == "application/json"
    gs = {g["id"]: g for g in json.loads(body)}
    assert gs[wid]["state"] == "waiting" and gs[wid]["wait"] == "chan receive"
    assert set(gs) >= {1, wid}
    status, ctype, body = sched
    assert status == 200
    st = json.loads(body)
    assert st["procs"] == procs and st["goroutines"] >= 3
    assert SCHED.match(st["schedtrace"]), st["schedtrace"]
    assert missing[0] == 404


def test_g_name_is_the_function_qualname():
    async def worker():
        pass

    async def main():
        g = gmprt.go(worker)
        await g
        return g.name

    assert gmprt.run(main).endswith("test_g_name_is_the_function_qualname.<locals>.worker")
