"""Signals on gmprt.aio: ``add_signal_handler`` from the loop's own code (a
G on an M, not the main thread), the loop's callbacks running as the thread
that runs the loop, and uvicorn's graceful shutdown on SIGINT and SIGTERM.

Every scenario that delivers a signal runs in a child process (a handler
that is not in place would end pytest itself), each bounded by a timeout.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import gmprt
import gmprt.aio
import pytest

T = 60.0  # the bound on every child process


def child(code: str, timeout: float = T) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter; its result (bounded)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout.split()


# -- add_signal_handler from inside the loop ----------------------------------------


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_handler_added_in_a_task_runs_as_a_loop_callback(sig):
    r = child(
        f"""
        import asyncio, os, signal, gmprt, gmprt.aio

        SIG = signal.{sig}

        async def main():
            loop = asyncio.get_running_loop()
            got = loop.create_future()

            def on_signal(tag):
                # A loop callback: the running loop is this one, in its G.
                in_loop = asyncio.get_running_loop() is loop
                in_g = gmprt._gmprt._current_g() == loop._gm_gid
                got.set_result((tag, in_loop, in_g))

            loop.add_signal_handler(SIG, on_signal, "tag")
            os.kill(os.getpid(), SIG)
            tag, in_loop, in_g = await asyncio.wait_for(got, 10)
            print("callback", tag, in_loop, in_g)
            # A second signal runs it again.
            got = loop.create_future()
            os.kill(os.getpid(), SIG)
            print("again", (await asyncio.wait_for(got, 10))[0])
            print("removed", loop.remove_signal_handler(SIG), loop.remove_signal_handler(SIG))
            dfl = signal.default_int_handler if SIG == signal.SIGINT else signal.SIG_DFL
            print("restored", signal.getsignal(SIG) is dfl)

        gmprt.aio.run(main())
        print("done")
        """
    )
    assert lines(r) == [
        "callback",
        "tag",
        "True",
        "True",
        "again",
        "tag",
        "removed",
        "True",
        "False",
        "restored",
        "True",
        "done",
    ]


def test_handler_added_in_a_loop_run_from_a_g():
    # The loop runs in a G of the program's own gmprt.run(): no thread of
    # its own to act as; the handler is still set on the main thread.
    r = child(
        """
        import asyncio, os, signal, gmprt, gmprt.aio

        async def main():
            loop = asyncio.get_running_loop()
            got = loop.create_future()
            loop.call_soon(
                loop.add_signal_handler, signal.SIGTERM, lambda: got.set_result("term")
            )
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
            print(await asyncio.wait_for(got, 10))
            print(loop.remove_signal_handler(signal.SIGTERM))

        def g():
            loop = gmprt.aio.new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        gmprt.run(g)
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """
    )
    assert lines(r) == ["term", "True", "True"]


def test_handlers_left_are_removed_when_the_loop_closes():
    r = child(
        """
        import asyncio, signal, gmprt.aio

        async def main():
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: None)
            loop.add_signal_handler(signal.SIGINT, lambda: None)

        gmprt.aio.run(main())  # asyncio.Runner closes the loop
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """
    )
    assert lines(r) == ["True", "True"]


def test_bad_signals_are_refused_as_asyncio_refuses_them():
    async def main():
        loop = __import__("asyncio").get_running_loop()
        with pytest.raises(RuntimeError, match="cannot be caught"):
            loop.add_signal_handler(signal.SIGKILL, lambda: None)
        with pytest.raises(ValueError):
            loop.add_signal_handler(0, lambda: None)
        with pytest.raises(TypeError, match="coroutines"):
            loop.add_signal_handler(signal.SIGUSR1, main)
        assert signal.SIGKILL not in loop._signal_handlers
        return "ok"

    assert gmprt.aio.run(main()) == "ok"


def test_off_the_main_thread_it_fails_clearly_not_hangs():
    # gmprt.run() on another thread: no thread may set the handler (on
    # asyncio's loop, a RuntimeError too).
    out = []

    async def main():
        loop = __import__("asyncio").get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as e:
            out.append(str(e))

    t = threading.Thread(target=gmprt.aio.run, args=(main(),))
    t.start()
    t.join(T)
    assert not t.is_alive()
    assert len(out) == 1 and "main thread" in out[0]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


# -- the loop's callbacks run as the thread that runs the loop ------------------------


def test_callbacks_run_as_the_thread_that_runs_the_loop():
    seen = []

    async def main():
        seen.append(threading.current_thread())
        await __import__("asyncio").sleep(0)
        seen.append(threading.current_thread())

    gmprt.aio.run(main())
    assert seen == [threading.main_thread()] * 2
    # Outside the loop's callbacks, a G is on an M, as before.
    assert gmprt.run(threading.current_thread) is not threading.main_thread()


def test_signal_signal_from_a_callback_sets_a_main_thread_handler():
    # uvicorn's way: seen "on the main thread", it calls signal.signal().
    r = child(
        """
        import asyncio, os, signal, threading, gmprt.aio

        ORIGINAL = signal.signal

        async def main():
            loop = asyncio.get_running_loop()
            print(threading.current_thread() is threading.main_thread())
            got = loop.create_future()

            def handler(signum, frame):
                # Python runs it on the main thread (in gmprt.run()).
                print(threading.get_ident() == threading.main_thread().ident, flush=True)
                loop.call_soon_threadsafe(got.set_result, signum)

            old = signal.signal(signal.SIGTERM, handler)
            os.kill(os.getpid(), signal.SIGTERM)
            print(await asyncio.wait_for(got, 10) == signal.SIGTERM)
            print(signal.signal(signal.SIGTERM, old) is handler)
            print(signal.signal is not ORIGINAL)  # the loop's stand-in

        gmprt.aio.run(main())
        print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        print(signal.signal is ORIGINAL)  # put back when the loop stopped
        """
    )
    assert lines(r) == ["True", "True", "True", "True", "True", "True", "True"]


def test_call_in_run_thread():
    main_ident = threading.get_ident()

    def g():
        ident = gmprt._gmprt._call_in_run_thread(threading.get_ident)
        with pytest.raises(KeyError, match="boom"):
            gmprt._gmprt._call_in_run_thread(lambda: {}["boom"])
        return ident

    assert gmprt.run(g) == main_ident
    with pytest.raises(RuntimeError, match="no gmprt runtime"):
        gmprt._gmprt._call_in_run_thread(lambda: None)


# -- uvicorn: Ctrl-C and SIGTERM shut it down gracefully --------------------------------

APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and the child
    # would inherit that: Python then leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def uvicorn_stopped_by(sig: int, loop: str, tmp_path) -> tuple[int, str]:
    """Starts `uvicorn app:app --loop LOOP`, gets one response, sends `sig`;
    returns (exit status, output). Every wait bounded."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--loop", loop],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"hello", f"uvicorn did not serve (exit {proc.poll()})"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_uvicorn_shuts_down_gracefully(sig, tmp_path):
    rc, out = uvicorn_stopped_by(sig, "gmprt.aio:new_event_loop", tmp_path)
    assert "Shutting down" in out, out
    assert "Application shutdown complete" in out, out
    assert "Finished server process" in out, out
    assert "Traceback" not in out, out
    assert "CancelledError" not in out, out
    # As on asyncio's loop: uvicorn raises the signal again once it shut
    # down, with the handler it found, so Ctrl-C exits 0 and SIGTERM ends
    # the process by SIGTERM (-15).
    rc_asyncio, out_asyncio = uvicorn_stopped_by(sig, "asyncio", tmp_path)
    assert "Finished server process" in out_asyncio, out_asyncio
    assert rc == rc_asyncio
    assert rc == (0 if sig == signal.SIGINT else -signal.SIGTERM)

