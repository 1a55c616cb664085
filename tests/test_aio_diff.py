"""Differential tests, the uvloop way: one scenario, two loops, same result.

Each scenario is a coroutine function returning plain data (what arrived,
in which order, with which errors); it runs on asyncio's own selector loop
and on gmprt.aio, and the two results must be equal. That catches where
gmprt.aio differs from asyncio in behaviour a program can see, without the
test spelling out every detail of asyncio's behaviour itself.

Every wait is bounded: each run is under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
import sys

import gmprt.aio
import pytest

T = 20.0  # the bound on each run


def run_on(loop_factory, scenario):
    async def bounded():
        async with asyncio.timeout(T):
            return await scenario()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


def same_on_both(scenario):
    """Runs ``scenario`` on asyncio's loop and on gmprt.aio; asserts equal."""
    ref = run_on(asyncio.SelectorEventLoop, scenario)
    got = run_on(gmprt.aio.new_event_loop, scenario)
    assert got == ref
    return got


def test_tcp_stream_echo():
    async def scenario():
        async def echo(reader, writer):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.write(b"bye\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = []
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for msg in [b"a\n", b"hello\n", b"x" * 50_000 + b"\n"]:
                writer.write(msg)
                await writer.drain()
                line = await reader.readline()
                got.append((len(line), line[:8]))
            writer.write_eof()
            got.append(await reader.read())  # the server's last words, then EOF
            got.append(reader.at_eof())
            writer.close()
            await writer.wait_closed()
        return got

    assert same_on_both(scenario)[-2:] == [b"bye\n", True]


def test_call_soon_call_later_call_at_order():
    async def scenario():
        loop = asyncio.get_running_loop()
        seen = []
        done = loop.create_future()
        t0 = loop.time()
        loop.call_later(0.03, seen.append, "later-30ms")
        loop.call_later(0.01, seen.append, "later-10ms")
        loop.call_at(t0 + 0.02, seen.append, "at-20ms")
        loop.call_later(0, seen.append, "later-0")
        loop.call_soon(seen.append, "soon-1")
        loop.call_soon(seen.append, "soon-2")
        loop.call_later(0.015, seen.append, "cancelled").cancel()
        loop.call_soon(seen.append, "cancelled-soon").cancel()
        loop.call_later(0.05, done.set_result, None)
        await done
        return seen

    assert same_on_both(scenario) == [
        "soon-1",
        "soon-2",
        "later-0",
        "later-10ms",
        "at-20ms",
        "later-30ms",
    ]


def test_subprocess_output_and_exit_status():
    async def scenario():
        code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await p.communicate()
        exec_result = (out, err, p.returncode)

        p = await asyncio.create_subprocess_shell(
            "read x; echo got:$x; exit 5",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await p.communicate(b"hi\n")
        return exec_result, (out, p.returncode)

    assert same_on_both(scenario) == ((b"out\n", b"err\n", 3), (b"got:hi\n", 5))


def test_exception_handler_calls():
    async def scenario():
        loop = asyncio.get_running_loop()
        calls = []

        def handler(loop, context):
            exc = context.get("exception")
            calls.append((context["message"], type(exc).__name__, str(exc)))

        loop.set_exception_handler(handler)

        def boom():
            raise ValueError("from a callback")

        loop.call_soon(boom)
        await asyncio.sleep(0.01)

        # A future whose exception nobody retrieved, collected.
        fut = loop.create_future()
        fut.set_exception(KeyError("never retrieved"))
        del fut
        gc.collect()
        await asyncio.sleep(0)

        loop.call_exception_handler({"message": "by hand"})
        loop.set_exception_handler(None)
        return calls

    calls = same_on_both(scenario)
    assert [c[1] for c in calls] == ["ValueError", "KeyError", "NoneType"]


def test_connection_refused_and_reset_errors():
    async def scenario():
        # A port with nothing listening: refused, the same errno either way.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = []
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            out.append((type(e).__name__, e.errno))

        # A peer that closes at once: the reader sees EOF, not an error.
        async def close_at_once(reader, writer):
            writer.close()

        server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            out.append(await reader.read())
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionResetError:
                pass  # either loop may see the reset; not what is compared
        return out

    assert same_on_both(scenario) == [("ConnectionRefusedError", errno.ECONNREFUSED), b""]


def test_datagram_echo():
    async def scenario():
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(data[::-1], addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.got = asyncio.Queue()

            def datagram_received(self, data, addr):
                self.got.put_nowait(data)

        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        client, proto = await loop.create_datagram_endpoint(Client, remote_addr=addr)
        try:
            got = []
            for msg in [b"abc", b"x" * 1000, b"1"]:
                client.sendto(msg)
                got.append(await proto.got.get())
            return got
        finally:
            client.close()
            server.close()

    assert same_on_both(scenario) == [b"cba", b"x" * 1000, b"1"]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_task_cancellation_outcomes(how):
    async def scenario():
        log = []

        async def worker():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            finally:
                log.append("finally")

        if how == "cancel":
            t = asyncio.create_task(worker())
            await asyncio.sleep(0)
            t.cancel("why")
            try:
                await t
            except asyncio.CancelledError as e:
                log.append(("raised", e.args))
            log.append(t.cancelled())
        else:
            try:
                async with asyncio.timeout(0.01):
                    await worker()
            except TimeoutError:
                log.append("TimeoutError")
        return log

    same_on_both(scenario)
