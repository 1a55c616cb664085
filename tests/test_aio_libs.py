"""Real asyncio libraries, end to end, on gmprt.aio (issue 12).

Each test runs a library's client and/or server on the gmprt loop over
loopback, and meanwhile a G blocks in ``time.sleep`` (started with
``gmprt.aio.to_g``): the test asserts that requests completed *inside* the
window in which that G slept, which is what gmprt.aio promises and what a
plain asyncio loop calling ``time.sleep`` could not do.

The libraries and servers are installed by ``scripts/test.sh``. A missing
one fails its test with what to install, never skips: CI must not go green
by running nothing.

Every wait is bounded: each test's coroutine runs under ``asyncio.timeout``,
server processes are started and stopped with timeouts, and fixtures stop
what they started in ``finally``.
"""

from __future__ import annotations

import asyncio
import glob
import importlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import gmprt.aio
import pytest

T = 20.0  # the bound on each test's coroutine
BLOCK_S = 0.5  # how long the G blocks
MIN_INSIDE = 3  # requests that must complete while it blocks


def need(module: str):
    """Imports a library the tests need, failing (not skipping) without it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not installed ({e}); scripts/test.sh pip-installs it")


def arun(coro):
    """Runs ``coro`` on a gmprt loop, the way an application would switch."""

    async def bounded():
        async with asyncio.timeout(T):
            return await coro

    with asyncio.Runner(loop_factory=gmprt.aio.new_event_loop) as runner:
        return runner.run(bounded())


async def serves_while_a_g_blocks(op, *, what: str):
    """Repeats ``await op()`` while a G sleeps BLOCK_S s; asserts it kept going.

    The G records the window in which it really slept; an op counts only if
    it completed inside that window, so a loop stalled by the G (or a G that
    did not run concurrently) fails the assertion instead of passing by
    completing everything afterwards.
    """
    assert isinstance(asyncio.get_running_loop(), gmprt.aio.GmprtEventLoop)
    window: dict[str, float] = {}

    def block() -> None:
        window["start"] = time.monotonic()
        time.sleep(BLOCK_S)
        window["end"] = time.monotonic()

    blocker = asyncio.create_task(gmprt.aio.to_g(block))
    done_at = []
    while not blocker.done():
        await op()
        done_at.append(time.monotonic())
    await blocker
    inside = [t for t in done_at if window["start"] < t < window["end"]]
    assert len(inside) >= MIN_INSIDE, (
        f"{what}: {len(inside)} of {len(done_at)} completed while a G slept "
        f"{BLOCK_S} s (wanted >= {MIN_INSIDE}): the loop stopped serving"
    )
    return len(inside)


def free_port() -> int:
    """A port nothing listens on now (a server started next may still race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stops a server this module started, by its PID, within bounds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (scripts/test.sh does)")
    return path


# -- aiohttp server and client ----------------------------------------------


async def start_aiohttp_app(web):
    """An aiohttp.web app on 127.0.0.1:<free>; returns (runner, base URL)."""

    async def hello(request):
        return web.Response(text="hello")

    async def echo(request):
        body = await request.read()
        return web.Response(body=body, headers={"X-Len": str(len(body))})

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def test_aiohttp_server_and_client():
    # Imported before the loop runs: a first import takes long enough for
    # gmprt to report the loop step as blocking.
    aiohttp = need("aiohttp")
    web = need("aiohttp.web")

    async def main():
        runner, base = await start_aiohttp_app(web)
        try:
            async with aiohttp.ClientSession() as session:
                payload = bytes(range(256)) * 64  # 16 KiB, so it takes more than one read

                async def one():
                    async with session.get(base + "/") as r:
                        assert r.status == 200
                        assert await r.text() == "hello"
                    async with session.post(base + "/echo", data=payload) as r:
                        assert r.status == 200
                        assert r.headers["X-Len"] == str(len(payload))
                        assert await r.read() == payload

                await one()
                await serves_while_a_g_blocks(one, what="aiohttp requests")
                # Many at once, so the server holds several connections.
                await asyncio.gather(*(one() for _ in range(20)))
        finally:
            await runner.cleanup()

    arun(main())


# -- httpx ----------------------------------------------------------------


def test_httpx_async_client_against_aiohttp_server():
    httpx = need("httpx")
    web = need("aiohttp.web")

    async def main():
        runner, base = await start_aiohttp_app(web)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:

                async def one():
                    r = await client.get("/")
                    assert r.status_code == 200 and r.text == "hello"
                    r = await client.post("/echo", content=b"x" * 20000)
                    assert r.status_code == 200 and r.content == b"x" * 20000

                await one()
                await serves_while_a_g_blocks(one, what="httpx requests")
                await asyncio.gather(*(one() for _ in range(20)))
        finally:
            await runner.cleanup()

    arun(main())


# -- uvicorn serving a Starlette app ----------------------------------------


def test_uvicorn_serves_starlette_app_to_httpx():
    uvicorn = need("uvicorn")
    httpx = need("httpx")
    applications = need("starlette.applications")
    responses = need("starlette.responses")
    routing = need("starlette.routing")

    async def hello(request):
        return responses.PlainTextResponse("hello")

    async def slow(request):
        # A handler doing blocking work the gmprt way: the loop (and so
        # uvicorn's other connections) keeps going while the G sleeps.
        await gmprt.aio.to_g(time.sleep, BLOCK_S)
        return responses.JSONResponse({"slept": True})

    app = applications.Starlette(routes=[routing.Route("/", hello), routing.Route("/slow", slow)])

    async def main():
        # loop="none": the loop is already ours; lifespan="off": the app
        # has no startup/shutdown handlers to run.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, loop="none", lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not serving.done(), "uvicorn stopped before it started"
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=10.0
            ) as client:

                async def one():
                    r = await client.get("/")
                    assert r.status_code == 200 and r.text == "hello"

                await one()
                await serves_while_a_g_blocks(one, what="uvicorn requests")
                # A handler blocking in to_g does not hold up the others: a
                # few quick requests (milliseconds each) finish before it.
                slow_r = asyncio.create_task(client.get("/slow"))
                for _ in range(3):
                    await one()
                assert not slow_r.done()
                r = await slow_r
                assert r.status_code == 200 and r.json() == {"slept": True}
        finally:
            server.should_exit = True
            await serving
        assert serving.result() is None

    arun(main())


# -- redis.asyncio against a real redis-server ------------------------------


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as c:
            c.sendall(b"PING\r\n")
            return c.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_port():
    """A redis-server on 127.0.0.1, no persistence, in a temp dir; its port."""
    exe = need_binary("redis-server", "redis-server")
    with tempfile.TemporaryDirectory(prefix="gmprt-redis-") as tmp:
        log_path = os.path.join(tmp, "redis.log")
        # A free port can be taken before redis binds it: try a few.
        for _ in range(3):
            port = free_port()
            argv = [exe, "--save", "", "--appendonly", "no", "--dir", tmp]
            argv += ["--port", str(port), "--bind", "127.0.0.1"]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + 15
                while proc.poll() is None and time.monotonic() < deadline:
                    if _redis_ping(port):
                        break
                    time.sleep(0.05)
                else:
                    continue  # exited (port taken?) or never answered: retry
                yield port
                return
            finally:
                stop(proc)
        with open(log_path) as f:
            pytest.fail(f"redis-server did not start; its log:\n{f.read()}")


def test_redis_asyncio_against_redis_server(redis_port):
    redis_asyncio = need("redis.asyncio")

    async def main():
        r = redis_asyncio.Redis(
            host="127.0.0.1", port=redis_port, socket_timeout=10, socket_connect_timeout=10
        )
        sub = redis_asyncio.Redis(
            host="127.0.0.1", port=redis_port, socket_timeout=10, socket_connect_timeout=10
        )
        try:
            assert await r.ping()
            await r.delete("gmprt:n", "gmprt:k")
            assert await r.set("gmprt:k", b"v" * 10000)
            assert await r.get("gmprt:k") == b"v" * 10000

            async def one():
                await r.incr("gmprt:n")

            await one()
            inside = await serves_while_a_g_blocks(one, what="redis commands")
            assert int(await r.get("gmprt:n")) >= inside + 1

            async with r.pipeline(transaction=True) as p:
                p.incr("gmprt:n").get("gmprt:k")
                n, k = await p.execute()
            assert n >= inside + 2 and k == b"v" * 10000

            # Pub/sub: a message crosses two connections of one loop.
            pubsub = sub.pubsub()
            await pubsub.subscribe("gmprt:ch")
            try:
                msg = await pubsub.get_message(timeout=5.0)
                assert msg is not None and msg["type"] == "subscribe"
                assert await r.publish("gmprt:ch", "hi") == 1
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                assert msg is not None and msg["data"] == b"hi"
            finally:
                await pubsub.unsubscribe("gmprt:ch")
                await pubsub.aclose()
        finally:
            await r.aclose()
            await sub.aclose()

    arun(main())


# -- asyncpg against a real PostgreSQL --------------------------------------


def _pg_bindir() -> str:
    """The newest Debian PostgreSQL's bin dir, else wherever initdb is."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    return os.path.dirname(need_binary("initdb", "postgresql"))


@pytest.fixture(scope="module")
def pg_port():
    """A PostgreSQL server on 127.0.0.1 in a temp data dir; its port.

    PostgreSQL refuses to run as root, so as root it runs as the
    ``postgres`` user that Debian's package creates (scripts/test.sh
    installs it), and the temp dir is given to that user.
    """
    bindir = _pg_bindir()
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root and there is no postgres user to run PostgreSQL as: "
                "apt-get install postgresql (scripts/test.sh does), or run as non-root"
            )
        as_user = [need_binary("runuser", "util-linux"), "-u", "postgres", "--"]
    # mkdtemp under /tmp, not pytest's tmp_path: pytest's base dir is
    # private to the user running pytest, so the postgres user could not
    # reach a data dir inside it.
    tmp = tempfile.mkdtemp(prefix="gmprt-pg-")
    try:
        if owner is not None:
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
        data = os.path.join(tmp, "data")
        log = os.path.join(tmp, "pg.log")

        def pg(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
            # cwd=tmp: the postgres user may not be able to enter ours.
            return subprocess.run(
                [*as_user, *argv], cwd=tmp, capture_output=True, text=True, timeout=timeout
            )

        initdb = os.path.join(bindir, "initdb")
        r = pg(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
        if r.returncode != 0:
            pytest.fail(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        pg_ctl = os.path.join(bindir, "pg_ctl")
        # A free port can be taken before the server binds it: try a few.
        for _ in range(3):
            port = free_port()
            opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
            start = [pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start"]
            r = pg(*start, timeout=90)
            if r.returncode == 0:
                break
        else:
            with open(log) as f:
                pytest.fail(f"PostgreSQL did not start:\n{r.stdout}\n{r.stderr}\n{f.read()}")
        try:
            yield port
        finally:
            r = pg(pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
            if r.returncode != 0 and os.path.exists(os.path.join(data, "postmaster.pid")):
                # The server this fixture started, by the PID it wrote.
                with open(os.path.join(data, "postmaster.pid")) as f:
                    os.kill(int(f.readline()), 9)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_asyncpg_against_postgresql(pg_port):
    asyncpg = need("asyncpg")

    async def main():
        kw = dict(host="127.0.0.1", port=pg_port, user="postgres", database="postgres")
        conn = await asyncpg.connect(**kw, timeout=10, command_timeout=10)
        try:
            assert await conn.fetchval("SELECT 1 + 1") == 2
            await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, name text)")
            await conn.executemany(
                "INSERT INTO t VALUES ($1, $2)", [(i, f"n{i}") for i in range(100)]
            )
            rows = await conn.fetch("SELECT id, name FROM t WHERE id < $1 ORDER BY id", 3)
            assert [tuple(r) for r in rows] == [(0, "n0"), (1, "n1"), (2, "n2")]

            i = 0

            async def one():
                nonlocal i
                i += 1
                assert await conn.fetchval("SELECT name FROM t WHERE id = $1", i % 100) == (
                    f"n{i % 100}"
                )

            await serves_while_a_g_blocks(one, what="asyncpg queries")
        finally:
            await conn.close(timeout=10)

        # A pool: a slow query on one connection does not hold up the
        # others, all on the one loop.
        async with asyncpg.create_pool(**kw, min_size=2, max_size=4, timeout=10) as pool:
            slow = asyncio.create_task(pool.fetchval("SELECT pg_sleep(0.5)::text"))
            quick = [await pool.fetchval("SELECT $1::int * 2", n) for n in range(3)]
            assert quick == [0, 2, 4] and not slow.done()
            assert await slow == ""

    arun(main())
