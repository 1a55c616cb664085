"""asyncio on gmprt: an event loop whose callbacks run in one G.

Switch an asyncio program over with one line::

    import gmprt.aio
    gmprt.aio.run(main())          # instead of asyncio.run(main())

or ``asyncio.Runner(loop_factory=gmprt.aio.new_event_loop)``, or
``asyncio.set_event_loop_policy(gmprt.aio.EventLoopPolicy())``.

How it works. Every callback and task step of a loop runs in one G, the
*loop G*, one at a time and in order, so asyncio's single-threaded rules
hold. ``call_soon`` (Rust: ``_gmprt.CallSoon``, the same ``asyncio.Handle``
asyncio's makes) appends to the loop's ready queue, which the loop G
drains; the loop G parks on one wait (``_gmprt.Poller``) until the earliest
``call_later`` timer is due (a gmprt timer), a watched fd is ready, or
something wakes it: ``call_soon_threadsafe`` from another thread or G
pushes, then wakes that wait. File descriptors watched with ``add_reader`` /
``add_writer`` are waited on by small watcher Gs written in Rust, parked
in gmprt's netpoller (level-triggered, like ``gmprt.wait_readable``), which
post readiness back to the loop G. There is no Python ``selectors`` object and
no thread of the loop's own: asyncio tasks and Gs share one netpoller and
one set of Ms.

This version reuses asyncio's own code above the readiness layer: the loop
is ``asyncio``'s Unix selector loop (``SelectorEventLoop``) given a
selector-shaped object, ``_NetpollSelector``, that is backed by gmprt's
netpoller (not by ``selectors``), and ``_run_once`` (asyncio's algorithm)
runs each iteration after the loop G's wait. So asyncio's ``Task``,
``Future``, socket and SSL transports, servers, subprocesses and streams
are asyncio's, except the paths every message takes, which are Rust
(``_gmprt.Poller``): handing the ready fds' handles to the ready queue
(``process``), the callback loop (``run_ready``), and a socket transport's
read callback and ``write`` (``_gmprt.SockIO``, set on the transport in
place of asyncio's methods, so no Python frame of the loop's runs per
message): one ``recv``, the bytes to ``data_received``, the watcher told
when the socket was drained, so it waits again with no ``poll(2)``; one
``send`` before asyncio's own ``write``. The timers are asyncio's
``TimerHandle`` objects, kept in a Rust heap (``_gmprt.TimerHeap``, the
loop's ``_scheduled``) ordered by deadline, then by scheduling order, with
no ``TimerHandle.__lt__`` calls; asyncio's rules for cancelled timers
hold (dropped at the head, purged when they are over half of 100 or more).

Gs and asyncio in one program:

- inside a G, ``await fut`` works for any future or task of the running
  gmprt loop (the G parks until the future is done; cancelling the G
  cancels the future). A G is not asyncio code: ``asyncio.sleep`` or
  ``asyncio.wait_for`` need the running loop, which only the loop G has;
  start such coroutines on the loop with ``spawn`` and await the result;
- in asyncio code, ``await g`` waits for a G handle (cancelling the task
  that awaits cancels the G); ``await gmprt.aio.to_g(fn, *args)`` runs
  blocking code as a G, so the loop keeps going while it blocks, and
  ``loop.run_in_executor(None, fn)`` runs ``fn`` as a G too;
- from a G, ``gmprt.aio.spawn(coro)`` starts ``coro`` as a task on the loop
  and returns a future the G can await.

Signals: ``add_signal_handler`` / ``remove_signal_handler`` work as on
asyncio, from the main thread and from the loop's own callbacks and tasks
(which run in a G, on an M): Python lets only the main thread set a
handler, so the loop hands that call to the thread in ``gmprt.run()``, the
main thread; the handler Python runs there when the signal arrives
schedules the callback on the loop (``call_soon_threadsafe``).

A loop's callbacks run *as the thread that called* ``run_forever`` /
``run_until_complete``, as on asyncio: ``threading.current_thread()`` is
that thread while they run (the M they run on is lent to it), and while a
loop run from the main thread runs, ``signal.signal()`` called in its
callbacks is handed to the main thread too. So code that sets its handlers
only "when on the main thread" sets them: uvicorn does, and its Ctrl-C and
SIGTERM shut it down gracefully on this loop.

One loop runs per gmprt runtime. ``run_forever`` / ``run_until_complete``
called outside a runtime start one (``gmprt.run``) for the duration of the
call; called from a G (or any thread while a runtime runs) they start the
loop G in that runtime and block until it stops.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import signal
import sys
import threading
import weakref
from asyncio import base_events, events, format_helpers, selector_events
from collections.abc import Callable, Coroutine, Mapping
from selectors import EVENT_READ, EVENT_WRITE, SelectorKey
from typing import Any, TypeVar

from . import _gmprt
from ._gmprt import G, go

__all__ = [
    "EventLoopPolicy",
    "GmprtEventLoop",
    "new_event_loop",
    "run",
    "spawn",
    "to_g",
]

_T = TypeVar("_T")

# asyncio's cap on one selector wait (base_events.MAXIMUM_SELECT_TIMEOUT). A
# loop with nothing to do still waits on a timer, so gmprt's deadlock check
# never mistakes it for a deadlock: a foreign thread may wake it any time.
_MAX_WAIT = 24 * 3600.0

# The loop running in this process's gmprt runtime (one runtime runs at a
# time, and one loop in it).
_running: GmprtEventLoop | None = None
_running_lock = threading.Lock()

def _on_main_thread(fn: Callable[[], _T]) -> _T:
    """``fn()`` on the main thread: called directly there (or when no
    runtime runs); from a G, handed to the thread in ``gmprt.run()``. Only
    the main thread may set signal handlers; a loop G runs on an M.

    Raises:
        RuntimeError: ``gmprt.run()`` runs on another thread (the handler
            cannot be set there either), as asyncio's loop raises off the
            main thread.
    """
    if threading.get_ident() == threading.main_thread().ident or not _gmprt._in_runtime():
        return fn()
    try:
        return _gmprt._call_in_run_thread(fn)
    except ValueError as exc:  # run() is not on the main thread
        raise RuntimeError(
            f"gmprt.aio: signal handlers are set on the main thread, and gmprt.run() "
            f"is not running there ({exc})"
        ) from None


def _signal_from_loop(set_signal: Callable[..., Any]) -> Callable[..., Any]:
    """The ``signal.signal`` a loop run from the main thread puts in place
    while it runs, over ``set_signal`` (what was there): its callbacks run as
    the main thread (``threading.current_thread()``), so a call from them
    is done on the main thread."""

    @functools.wraps(set_signal)
    def from_loop(signalnum: int, handler: Any) -> Any:
        return _on_main_thread(functools.partial(set_signal, signalnum, handler))

    return from_loop


def _fileobj_to_fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _NetpollSelector:
    """The ``selectors.BaseSelector`` interface over gmprt's netpoller.

    ``register`` / ``modify`` / ``unregister`` keep asyncio's key map and
    start or stop one watcher G (Rust, no Python) per (fd, direction) while
    the loop G runs; ``wait`` (awaited by the loop G) parks until a watcher
    posts readiness, a thread-safe wake arrives or the timeout passes;
    asyncio's ``_run_once`` then calls ``select``, which returns nothing
    and never blocks, and ``_process_events``, which the loop overrides to
    hand what was posted (``take``) to its ready queue; ``rearm`` lets
    those watchers wait again once the callbacks ran (level-triggered, like
    ``select``).
    """

    def __init__(self) -> None:
        self._keys: dict[int, SelectorKey] = {}
        # The watcher Gs and the loop G's wait, in Rust (aio_poll.rs).
        self._poller = _gmprt.Poller()
        # What the last wait returned: (fd, event) pairs.
        self._pending: list[tuple[int, int]] = []
        self._live = False

    # -- the selectors.BaseSelector interface asyncio uses -------------------

    def register(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._watch(fd, events)
        return key

    def unregister(self, fileobj: Any) -> SelectorKey:
        fd = self._lookup(fileobj)
        key = self._keys.pop(fd)
        self._unwatch(fd, key.events)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> SelectorKey:
        fd = self._lookup(fileobj)
        old = self._keys[fd]
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = SelectorKey(old.fileobj, fd, events, data)
        self._keys[fd] = key
        self._unwatch(fd, old.events & ~events)
        self._watch(fd, events & ~old.events)
        return key

    def get_key(self, fileobj: Any) -> SelectorKey:
        return self._keys[self._lookup(fileobj)]

    def get_map(self) -> Mapping[Any, SelectorKey]:
        return dict(self._keys)

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        # Never blocks: the loop G already waited (`wait`). What it took is
        # handed to the loop's ready queue by GmprtEventLoop._process_events
        # (in Rust), which asyncio's `_run_once` calls right after this.
        return []

    def take(self) -> list[tuple[int, int]]:
        """What the last wait returned, as (fd, event) pairs, once."""
        pending, self._pending = self._pending, []
        return pending

    def close(self) -> None:
        self.stop()
        self._keys.clear()

    # -- the loop G's side ---------------------------------------------------

    async def wait(self, timeout: float | None) -> None:
        """Parks the loop G until there is work, at most ``timeout`` s."""
        if timeout is None or timeout > _MAX_WAIT:
            timeout = _MAX_WAIT
        busy = timeout <= 0
        if busy:
            # Busy: look for I/O now (epoll_wait(0), which asyncio's loop
            # makes every iteration), then give the Gs already runnable a
            # turn, watchers first: they hold readiness that epoll would
            # have reported in this same iteration. A Gosched, which is a
            # local yield while the global queue is empty: a streams server
            # is busy at every iteration (each message's task step), and
            # with a local yield the watchers an M blocked in the netpoller
            # readied waited for the 61st-tick check (at 1,000 connections
            # some were served 4x as often as others, p99 226-525 ms).
            self._poller.poll_io()
            await _gmprt._gosched()
            timeout = 0
        pending = await self._poller.wait(timeout)
        if pending and not busy:
            # The first watcher to post woke the loop G into its P's
            # runnext, ahead of the other watchers: look for I/O and let
            # them all post first, so one iteration serves every fd that is
            # ready, as one epoll_wait would. A Gosched, not sleep(0): the
            # watchers an M blocked in the netpoller readied wait in the
            # global queue, and behind a local yield they would wait for
            # the P's 61st-tick check while the watchers whose fd was
            # ready again when their gate opened went round and round
            # (p99 at 1,000 connections 2-4x asyncio's).
            self._poller.poll_io()
            await _gmprt._gosched()
            pending += await self._poller.wait(0)
        self._pending = pending

    def wake(self) -> None:
        """Wakes the loop G's wait; any thread, any G."""
        self._poller.wake()

    def start(self) -> None:
        """The loop G starts: a watcher G for each registered direction."""
        self._live = True
        for fd, key in self._keys.items():
            self._poller.watch(fd, key.events)

    def stop(self) -> None:
        """The loop G stops (its runtime may end): no watcher G is left."""
        self._live = False
        self._poller.stop()
        self._pending = []

    def rearm(self) -> None:
        """The callbacks of the fds handed out by ``take`` ran."""
        self._poller.rearm()

    def _lookup(self, fileobj: Any) -> int:
        fd = _fileobj_to_fd(fileobj)
        if fd not in self._keys:
            raise KeyError(f"{fileobj!r} is not registered")
        return fd

    def _watch(self, fd: int, events: int) -> None:
        if self._live:
            self._poller.watch(fd, events)

    def _unwatch(self, fd: int, events: int) -> None:
        self._poller.unwatch(fd, events)


_HANDLE_TYPES = (asyncio.Handle, asyncio.TimerHandle)


def _callback_failed(handle: asyncio.Handle, exc: BaseException) -> None:
    """A callback run by `Poller.run_ready` raised: what `Handle._run` does."""
    cb = format_helpers._format_callback_source(handle._callback, handle._args)  # type: ignore[attr-defined]
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:  # type: ignore[attr-defined]
        context["source_traceback"] = handle._source_traceback  # type: ignore[attr-defined]
    handle._loop.call_exception_handler(context)  # type: ignore[attr-defined]


class _GmSocketTransport(selector_events._SelectorSocketTransport):  # type: ignore[name-defined,misc]
    """asyncio's socket transport, whose read callback and ``write`` are
    the poller's (Rust, ``_gmprt.SockIO``): instance attributes that shadow
    asyncio's methods, so a message costs no Python frame of the loop's."""

    def __init__(self, loop: GmprtEventLoop, sock: Any, *args: Any) -> None:
        io = _gmprt.SockIO(loop._gm_selector._poller, self, sock.fileno(), _SELECTOR_WRITE)
        self._gm_io = io
        # Before asyncio's __init__, which hands `_read_ready` to the reader.
        self._read_ready = io
        self.write = io.write
        super().__init__(loop, sock, *args)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        super().set_protocol(protocol)
        # Its data_received, once (or a BufferedProtocol: asyncio's reads).
        self._gm_io.set_protocol(protocol)

    def _read_ready__data_received(self) -> None:
        self._gm_io.read()


# What `SockIO.write` hands what its one `send` left (buffering, the writer).
_SELECTOR_WRITE = selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]


class GmprtEventLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """An asyncio event loop run by gmprt (see the module docstring).

    Use :func:`new_event_loop` (or ``asyncio.Runner(loop_factory=
    gmprt.aio.new_event_loop)``). ``procs`` is passed to ``gmprt.run`` when
    the loop starts a runtime of its own.
    """

    def __init__(self, *, procs: int | None = None) -> None:
        self._gm_procs = procs
        # The id of the loop G while the loop runs.
        self._gm_gid: int | None = None
        # The thread that called run_forever (outside a runtime): the loop's
        # callbacks run as that thread, as on asyncio (`_gm_enter`).
        self._gm_as_thread: threading.Thread | None = None
        # What `_gm_enter` replaced in threading's table: (ident, entry).
        self._gm_lent: tuple[int, threading.Thread | None] | None = None
        self._gm_selector = _NetpollSelector()
        super().__init__(self._gm_selector)
        # asyncio's heap of TimerHandles, ordered in Rust instead of by
        # `TimerHandle.__lt__` (`_gmprt.TimerHeap`); it counts the cancelled
        # ones itself, so `_timer_cancelled_count` stays 0.
        self._scheduled = _gmprt.TimerHeap()
        # asyncio's call_soon, without its five Python frames
        # (`_gmprt.CallSoon`; asyncio's own in debug mode).
        self.call_soon = _gmprt.CallSoon(  # type: ignore[method-assign]
            self, self._ready.append, events.Handle, super().call_soon
        ).call

    # -- timers: the heap is Rust's ----------------------------------------------

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Like asyncio's: ``callback(*args)`` at loop time ``when``."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        self._scheduled.push(timer._when, timer)
        timer._scheduled = True
        return timer

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if handle._scheduled:
            self._scheduled.note_cancelled()

    # -- no self-pipe: the loop G's wake channel does its job -----------------

    def _make_self_pipe(self) -> None:
        self._ssock = None
        self._csock = None

    def _close_self_pipe(self) -> None:
        pass

    def _write_to_self(self) -> None:
        # Any thread, any G, a signal handler: push (done by the caller)
        # plus this wake.
        self._gm_selector.wake()

    def _run_once(self) -> None:
        # asyncio's, with its timer heap (`TimerHeap`, which drops cancelled
        # timers as asyncio's rules say) and its callback loop
        # (`Poller.run_ready`) in Rust; the loop G already waited, so
        # `select` is not asked to.
        self._process_events(self._selector.select(0))
        ready = self._ready
        self._scheduled.pop_due(self.time() + self._clock_resolution, ready)
        if self._debug:
            self._gm_run_ready_debug()
        else:
            self._gm_selector._poller.run_ready(ready, len(ready), _HANDLE_TYPES, _callback_failed)

    def _gm_run_ready_debug(self) -> None:
        # asyncio's debug-mode callback loop: each callback timed, a slow
        # one logged.
        ready = self._ready
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            try:
                self._current_handle = handle
                t0 = self.time()
                handle._run()
                dt = self.time() - t0
                if dt >= self.slow_callback_duration:
                    base_events.logger.warning(
                        "Executing %s took %.3f seconds", base_events._format_handle(handle), dt
                    )
            finally:
                self._current_handle = None
        handle = None  # asyncio's: breaks the cycle through a raised exception

    def _process_events(self, event_list: Any) -> None:
        # Our selector's `select` returns nothing: the fds the loop G's wait
        # took go to the ready queue here, asyncio's rules in one Rust call
        # (a Python loop per ready fd in asyncio).
        sel = self._gm_selector
        sel._poller.process(self, sel._keys, self._ready, sel.take())
        if event_list:
            super()._process_events(event_list)

    def _make_socket_transport(
        self,
        sock: Any,
        protocol: Any,
        waiter: Any = None,
        *,
        extra: Any = None,
        server: Any = None,
    ) -> Any:
        return _GmSocketTransport(self, sock, protocol, waiter, extra, server)

    # -- running ---------------------------------------------------------------

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called, in a loop G (see the module
        docstring for where that G runs)."""
        self._check_closed()
        self._check_running()
        if _gmprt._in_runtime():
            # Called from a G or a thread while a runtime runs: the loop G
            # joins that runtime; join() gives the caller's P away meanwhile.
            go(self._gm_main).join()
        else:
            self._gm_as_thread = threading.current_thread()
            try:
                _gmprt.run(self._gm_main, procs=self._gm_procs)
            finally:
                self._gm_as_thread = None

    async def _gm_main(self) -> None:
        global _running
        with _running_lock:
            if _running is not None:
                raise RuntimeError(
                    f"gmprt.aio: {_running!r} is already running in this gmprt runtime; "
                    "one asyncio loop runs per runtime: schedule the work on that loop "
                    "(gmprt.aio.spawn from a G, loop.call_soon_threadsafe from a thread)"
                )
            _running = self
        sel = self._gm_selector
        self._gm_gid = _gmprt._current_g()
        self._thread_id = threading.get_ident()
        old_hooks = sys.get_asyncgen_hooks()
        sel.start()
        # A callback that blocks the loop over 100 ms is reported once, with
        # its stack, even if it sleeps in C (asyncio's debug mode only warns
        # afterwards, and only when asked).
        _gmprt._watch_loop_g(True)
        # Run from the main thread: signal.signal() in a callback is done
        # there (uvicorn sets its handlers so, having seen it is "on the
        # main thread").
        set_signal = signal.signal
        from_loop = None
        if self._gm_as_thread is threading.main_thread():
            from_loop = signal.signal = _signal_from_loop(set_signal)
        try:
            while True:
                await sel.wait(self._gm_timeout())
                self._gm_enter()
                try:
                    self._run_once()
                finally:
                    self._gm_leave(old_hooks)
                sel.rearm()
                if self._stopping:
                    break
        finally:
            if from_loop is not None and signal.signal is from_loop:
                signal.signal = set_signal
            sel.stop()
            self._stopping = False
            self._thread_id = None
            self._gm_gid = None
            _gmprt._set_aio_loop_g(0)
            _gmprt._watch_loop_g(False)
            with _running_lock:
                _running = None

    def _gm_enter(self) -> None:
        # The loop G may resume on another M (OS thread) after each wait,
        # and asyncio keeps its running loop, async generator hooks and
        # coroutine origin tracking per thread: set them for this stretch
        # of callbacks, on this thread.
        self._thread_id = threading.get_ident()
        events._set_running_loop(self)
        as_thread = self._gm_as_thread
        if as_thread is not None:
            # Lend this M to the thread that runs the loop, for this stretch:
            # threading.current_thread() is that thread, as on asyncio (only
            # this G runs on this M until `_gm_leave`).
            ident = self._thread_id
            active = threading._active  # type: ignore[attr-defined]
            self._gm_lent = (ident, active.get(ident))
            active[ident] = as_thread
        # The loop G now runs asyncio code: a gmprt wait there must raise
        # (it would reach asyncio's Task), unlike the loop G's own waits.
        _gmprt._set_aio_loop_g(self._gm_gid or 0)
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook,
        )
        if self._debug:
            self._coroutine_origin_tracking_enabled = False
            self._set_coroutine_origin_tracking(True)

    def _gm_leave(self, old_hooks: Any) -> None:
        # The next G this M runs is no asyncio code of this loop.
        if self._debug:
            self._set_coroutine_origin_tracking(False)
        sys.set_asyncgen_hooks(*old_hooks)
        lent = self._gm_lent
        if lent is not None:
            self._gm_lent = None
            ident, entry = lent
            active = threading._active  # type: ignore[attr-defined]
            if entry is None:
                active.pop(ident, None)
            else:
                active[ident] = entry
        events._set_running_loop(None)
        _gmprt._set_aio_loop_g(0)

    def _gm_timeout(self) -> float | None:
        """How long the loop G may wait: asyncio's `_run_once` rule."""
        if self._ready or self._stopping:
            return 0
        when = self._scheduled.next_when()
        if when is not None:
            return max(0.0, when - self.time())
        return None

    def _check_thread(self) -> None:
        # asyncio's debug-mode check, by G instead of by thread: the loop G
        # moves between threads, and a G on the loop's last thread is no
        # more the loop than any other.
        if self._thread_id is None:
            return
        if _gmprt._current_g() != self._gm_gid:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def is_running(self) -> bool:
        return self._thread_id is not None

    # -- executors: Gs instead of a thread pool ---------------------------------

    def run_in_executor(
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """Like asyncio's; with ``executor=None`` and no default executor
        set, ``func(*args)`` runs as a plain G, not in a thread pool (sysmon
        hands the loop's P off once work waits; :func:`to_g` hands it off
        before the call)."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None and self._default_executor is None and _gmprt._in_runtime():
            # A plain G, not to_g's hand-off: asyncio itself runs every
            # getaddrinfo this way, and a hand-off there leaves an M blocked
            # in the netpoller, whose finds then queue globally, behind a
            # busy loop G (CPython's test_streams.test_unhandled_exceptions
            # saw the server's accept come after the client had finished).
            return self._gm_future_of(go(func, *args))
        return super().run_in_executor(executor, func, *args)  # type: ignore[no-any-return]

    def _gm_future_of(self, g: G[_T]) -> asyncio.Future[_T]:
        """A future of this loop completed when ``g`` ends; cancelling it
        cancels ``g``."""
        fut: asyncio.Future[_T] = self.create_future()

        def cancel_g(f: asyncio.Future[_T]) -> None:
            if f.cancelled():
                g.cancel()

        fut.add_done_callback(cancel_g)
        go(_settle_from_g, self, g, fut)
        return fut

    # -- signals ---------------------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Like asyncio's: ``callback(*args)`` runs in the loop, as a
        callback, when ``sig`` arrives. From the main thread or from the
        loop's own code (a loop callback or task): the handler is set on the
        main thread, the thread in ``gmprt.run()``. gmprt.run() owns
        ``signal.set_wakeup_fd``; the Python handler it runs on the main
        thread as the signal arrives hands the signal to the loop.

        Raises:
            RuntimeError: ``sig`` cannot be caught, or the handler cannot be
                set from here (another thread, with ``gmprt.run()`` not on
                the main thread), as asyncio's.
        """
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        loop_ref = weakref.ref(self)

        def on_signal(signum: int, frame: object) -> None:
            loop = loop_ref()
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(loop._handle_signal, signum)

        def install() -> None:
            signal.signal(sig, on_signal)
            # Set the SA_RESTART flag (asyncio does too): a system call
            # the signal interrupts is restarted.
            signal.siginterrupt(sig, False)

        try:
            _on_main_thread(install)
        except (OSError, RuntimeError, ValueError) as exc:
            del self._signal_handlers[sig]
            if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            if isinstance(exc, ValueError):
                raise RuntimeError(str(exc)) from None
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Like asyncio's, from the same places as ``add_signal_handler``:
        the default handler is back; True if a handler was removed."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            _on_main_thread(functools.partial(signal.signal, sig, handler))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise
        except ValueError as exc:
            # Not the main thread: asyncio's own loop cannot do this either.
            raise RuntimeError(str(exc)) from None
        return True

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )


async def _settle_from_g(loop: GmprtEventLoop, g: G[_T], fut: asyncio.Future[_T]) -> None:
    """A G: waits for ``g`` and completes ``fut`` on its loop. A cancelled
    G raises ``gmprt.Cancelled`` from the future, as ``await g`` does in a
    G (an asyncio ``CancelledError`` would cancel the awaiting task)."""
    try:
        value = await g
    except BaseException as e:  # noqa: BLE001 - the awaiter re-raises it
        _post(loop, _settle, fut, None, e)
    else:
        _post(loop, _settle, fut, value, None)


def _post(loop: GmprtEventLoop, fn: Callable[..., object], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop closed: nobody awaits the future any more


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return  # cancelled by its awaiter, which cancelled the G
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


# -- the bridge the driver and G handles call (rust/gmprt-py/src/aio.rs) --------


def _bridge(fut: Any) -> Any:
    """The driver: a G yielded the asyncio future ``fut``. Returns the
    token the G parks on until ``fut`` is done, or raises (into the G)."""
    loop = fut.get_loop() if hasattr(fut, "get_loop") else getattr(fut, "_loop", None)
    if not isinstance(loop, GmprtEventLoop):
        raise TypeError(
            f"a gmprt G awaited {type(fut).__name__} of {loop!r}, which is not a gmprt "
            "loop (asyncio's own?); a G can await only the futures of a running gmprt.aio "
            "loop: run the asyncio code on it (gmprt.aio.run(main()), or "
            "asyncio.Runner(loop_factory=gmprt.aio.new_event_loop))"
        )
    if not loop.is_running() or loop.is_closed():
        raise RuntimeError(
            f"a gmprt G awaited {type(fut).__name__} of {loop!r}, which is not running: "
            "nothing would ever complete it"
        )
    # What asyncio's Task does with a future its coroutine yields.
    fut._asyncio_future_blocking = False

    def cancel() -> None:
        _post(loop, fut.cancel)

    tok, wake = _gmprt._future_wait(cancel, f"asyncio {type(fut).__name__} {id(fut):#x}")
    # add_done_callback is not thread-safe: the loop G adds it.
    loop.call_soon_threadsafe(fut.add_done_callback, wake)
    return tok


def _await_g(g: G[Any]) -> Any:
    """``await g`` in asyncio code: a future of the running gmprt loop, or
    None when the running loop is not one (the G's own token then)."""
    loop = events._get_running_loop()
    if not isinstance(loop, GmprtEventLoop):
        return None
    return loop._gm_future_of(g)


_gmprt._set_aio_hooks(_bridge, _await_g)


# -- the public functions --------------------------------------------------------


def new_event_loop(*, procs: int | None = None) -> GmprtEventLoop:
    """A new gmprt asyncio event loop (``asyncio.Runner(loop_factory=
    gmprt.aio.new_event_loop)``). ``procs``: see :func:`gmprt.run`."""
    return GmprtEventLoop(procs=procs)


def run(
    main: Coroutine[Any, Any, _T], *, procs: int | None = None, debug: bool | None = None
) -> _T:
    """``asyncio.run(main)`` on a gmprt loop: runs the coroutine ``main``
    in a new loop (in a new gmprt runtime), closes the loop afterwards, and
    returns ``main``'s result or raises its exception."""
    factory = functools.partial(new_event_loop, procs=procs)
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


async def to_g(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Run ``fn(*args, **kwargs)`` as a G and wait for its result:
    ``asyncio.to_thread``'s job without a thread pool. While ``fn`` blocks
    (in a C call, ``time.sleep``), the loop's P is with another M, so the
    loop keeps running. ``fn`` runs in a copy of the
    caller's context. Cancelling the awaiting task cancels the G (a sync G
    sees it at its next gmprt call). ``fn`` is expected to block: its P is
    handed to another M before it is called (Go's ``entersyscallblock``),
    which costs a thread wake-up, as a thread pool's hand-off does."""
    loop = events.get_running_loop()
    if not isinstance(loop, GmprtEventLoop):
        raise RuntimeError("gmprt.aio.to_g() needs a running gmprt.aio loop")
    ctx = contextvars.copy_context()
    # Known to block: its M hands the loop's P to another M before calling
    # it, so the loop runs on at once (not when sysmon next looks).
    g = _gmprt._go_blocking(ctx.run, functools.partial(fn, *args, **kwargs))
    return await loop._gm_future_of(g)


def spawn(coro: Coroutine[Any, Any, _T], *, name: str | None = None) -> asyncio.Future[_T]:
    """Start ``coro`` as a task of the running gmprt loop, from a G (or any
    thread), and return a future of that loop that a G can ``await``. It
    completes with the task; cancelling it (or the G awaiting it) cancels
    the task. Called from the loop's own code, it is ``loop.create_task``.

    Raises:
        RuntimeError: no gmprt loop is running.
    """
    loop = _running
    if loop is None or not loop.is_running():
        if hasattr(coro, "close"):
            coro.close()
        raise RuntimeError("gmprt.aio.spawn() needs a running gmprt.aio loop")
    if _gmprt._current_g() == loop._gm_gid:
        return loop.create_task(coro, name=name)
    fut: asyncio.Future[_T] = asyncio.Future(loop=loop)

    def start() -> None:
        if fut.done():
            coro.close()
            return
        task = loop.create_task(coro, name=name)

        def copy(t: asyncio.Task[_T]) -> None:
            if fut.done():
                return
            if t.cancelled():
                fut.cancel()
            elif (e := t.exception()) is not None:
                fut.set_exception(e)
            else:
                fut.set_result(t.result())

        def cancel_task(f: asyncio.Future[_T]) -> None:
            if f.cancelled():
                task.cancel()

        task.add_done_callback(copy)
        fut.add_done_callback(cancel_task)

    loop.call_soon_threadsafe(start)
    return fut


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):  # type: ignore[misc,valid-type]
    """An event loop policy whose loops are gmprt loops:
    ``asyncio.set_event_loop_policy(gmprt.aio.EventLoopPolicy())``."""

    def new_event_loop(self) -> GmprtEventLoop:
        return new_event_loop()
