"""gmprt.Group: structured concurrency (asyncio.TaskGroup's rules, trio's
nurseries, Go's errgroup), on the runtime's cancel scopes.

The group owns a cancel scope on the task that opens it. Its Gs are started
with their root scope *inside* that scope (``_go_linked``), so cancelling
the group, or any scope around it, reaches every one of them, and they
inherit its deadline. The runtime calls ``_child_done`` on the M that
finishes each G; that is where errors are collected and the first one
cancels the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _gmprt
from ._gmprt import Cancelled, G, Semaphore, WaitGroup

_NEW, _OPEN, _CLOSED = range(3)


class Group:
    """A set of Gs that ends together: ``async with gmprt.Group() as grp:``
    (or ``with`` in synchronous code).

    ``grp.go(fn, *args, **kwargs)`` starts a G in the group and returns its
    :class:`gmprt.G`. Leaving the block waits for every G of the group. The
    first G that raises (anything but :class:`gmprt.Cancelled`) cancels the
    others and the block's body; the block then raises an
    ``ExceptionGroup`` of the real errors (a body that raised is one of
    them). ``grp.cancel()`` cancels the group: its Gs and the body get
    ``Cancelled``, and the block ends quietly once they are done. A cancel
    from outside the block (the G's own ``cancel()``, a deadline scope
    around it) reaches the group's Gs too, and propagates out of the block.

    ``Group(limit=N)`` runs at most ``N`` of its Gs at once (errgroup's
    ``SetLimit``). ``go()`` never waits: past the limit the new G is queued
    (a parked G, a few hundred bytes) and starts when a running one ends.
    ``try_go()`` starts one only if fewer than ``N`` are running or queued
    and returns ``None`` otherwise (errgroup's ``TryGo``).
    """

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(
                    f"Group's limit must be an integer >= 1 or None, got {type(limit).__name__}"
                )
            if limit < 1:
                raise ValueError(f"Group's limit must be an integer >= 1 or None, got {limit}")
        self._limit = limit
        self._sem = Semaphore(limit) if limit is not None else None
        self._scope = _gmprt._group_scope()
        self._wg = WaitGroup()
        self._errors: list[BaseException] = []
        self._active = 0
        self._lock = threading.Lock()
        self._state = _NEW

    # ----- entering and leaving

    def _enter(self) -> Group:
        if self._state != _NEW:
            raise RuntimeError("a gmprt.Group can be entered once; make a new one")
        self._scope.__enter__()
        self._state = _OPEN
        return self

    def _settle(self, exc: BaseException | None) -> None:
        """Before the wait: a body that failed cancels the group."""
        if exc is not None and not isinstance(exc, Cancelled):
            with self._lock:
                self._errors.append(exc)
            self._scope.cancel()

    def _finish(self, exc: BaseException | None) -> bool:
        """After every G ended: what leaving the block raises."""
        self._state = _CLOSED
        # A cancel from outside the block (a scope around it, the G's own
        # cancel()), or None; it may have come while the block waited.
        outer = self._scope._leave()
        with self._lock:
            errors = list(self._errors)
        # KeyboardInterrupt and SystemExit are not wrapped (asyncio's rule).
        for e in errors:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                if e is exc:
                    return False
                raise e
        if errors:
            raise BaseExceptionGroup("errors in a gmprt.Group", errors) from None
        if outer is not None:
            # It propagates, even when the body had ended before it came.
            if isinstance(exc, Cancelled):
                return False
            raise outer
        # The group's own cancel (grp.cancel(), or a G's error, reported
        # above) ends the block quietly.
        return isinstance(exc, Cancelled) and self._scope.cancelled

    async def __aenter__(self) -> Group:
        return self._enter()

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._settle(exc)
        # Shielded: a cancel from outside reaches the Gs through their
        # scopes, and the block must still wait for them to end.
        with _gmprt.shield():
            await self._wg.wait()
        return self._finish(exc)

    def __enter__(self) -> Group:
        return self._enter()

    def __exit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._settle(exc)
        with _gmprt.shield():
            self._wg.wait_blocking()
        return self._finish(exc)

    # ----- starting Gs

    def go(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> G[Any]:
        """Start ``fn(*args, **kwargs)`` as a G of this group (queued past
        the group's ``limit``) and return its handle.

        Raises:
            RuntimeError: the group's block is not running (not entered
                yet, or already ended).
        """
        self._check_open()
        with self._lock:
            self._active += 1
        return self._spawn(fn, args, kwargs)

    def try_go(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> G[Any] | None:
        """Like :meth:`go`, but only if fewer than ``limit`` Gs of the group
        are running or queued; otherwise start nothing and return ``None``.
        Without a limit it always starts the G."""
        self._check_open()
        with self._lock:
            if self._limit is not None and self._active >= self._limit:
                return None
            self._active += 1
        return self._spawn(fn, args, kwargs)

    def cancel(self) -> None:
        """Cancel every G of the group and the block's body. Any thread."""
        self._scope.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether the group was cancelled (by ``cancel()`` or an error)."""
        return bool(self._scope.cancelled)

    def _check_open(self) -> None:
        if self._state != _OPEN:
            when = "before its block started" if self._state == _NEW else "after its block ended"
            raise RuntimeError(f"Group.go() {when}: call it inside `async with Group() as grp:`")

    def _spawn(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> G[Any]:
        self._wg.add(1)
        try:
            if self._sem is None:
                return _gmprt._go_linked(self._scope, self._child_done, fn, *args, **kwargs)
            return _gmprt._go_linked(
                self._scope, self._child_done, _queued, self._sem, fn, args, kwargs
            )
        except BaseException:
            self._wg.done()
            with self._lock:
                self._active -= 1
            raise

    def _child_done(self, g: G[Any]) -> None:
        # On the M that finished `g`, holding the GIL.
        exc = g._exception()
        failed = exc is not None and not isinstance(exc, Cancelled)
        with self._lock:
            self._active -= 1
            if exc is not None and failed:
                self._errors.append(exc)
        if failed:
            self._scope.cancel()
        self._wg.done()

    def __repr__(self) -> str:
        state = ("new", "open", "closed")[self._state]
        limit = f" limit={self._limit}" if self._limit is not None else ""
        return f"<gmprt.Group {state} active={self._active}{limit}>"


async def _queued(sem: Semaphore, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """A limited group's G: waits (parked) for a slot, then runs ``fn`` as a
    G of its own (a sync function keeps its own thread rules) inside this
    one's scope, and hands back its result."""
    await sem.acquire()
    try:
        inner = _gmprt._go_linked(None, _ignore, fn, *args, **kwargs)
        try:
            return await inner
        except Cancelled:
            # Cancelled here means cancelled there too (its scope is inside
            # ours): the group must not end before it does.
            with _gmprt.shield():
                try:
                    await inner
                except BaseException:
                    pass
            real = inner._exception()
            if real is not None and not isinstance(real, Cancelled):
                raise real from None
            raise
    finally:
        sem.release()


def _ignore(g: G[Any]) -> None:
    """The inner G's outcome reaches the group through ``await inner``."""
