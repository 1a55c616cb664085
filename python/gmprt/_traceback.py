"""Goroutine dumps: :func:`gmprt.goroutines` and :func:`gmprt.dump`.

The runtime walks every live G (``_gmprt._goroutines``: Go's ``forEachG``,
each runnable or parked G held still for a moment while references to its
coroutine, handle and park token are taken). This module turns those into
dicts and text: a parked coroutine's stack is its ``cr_await`` chain, which
needs no thread; a running G's is its M's live frame
(``sys._current_frames``).
"""

from __future__ import annotations

import gc
import os
import sys
import types
from typing import IO, Any

from . import _gmprt

__all__ = ["dump", "format_dump", "goroutines"]

_THIS_FILE = __file__


def _frame_entry(code: types.CodeType, line: int | None) -> dict[str, Any]:
    return {
        "function": getattr(code, "co_qualname", code.co_name),
        "file": code.co_filename,
        "line": line,
    }


def _await_chain(coro: Any) -> list[dict[str, Any]]:
    """A suspended coroutine's frames, outermost first: ``cr_frame`` of
    each coroutine down the ``cr_await`` chain (``gi_yieldfrom`` for
    generator-based awaitables). Only the built-in types are followed:
    their attributes are C slots, so reading them runs no user code."""
    out: list[dict[str, Any]] = []
    obj = coro
    for _ in range(1000):  # a cycle cannot happen, but bound the walk anyway
        if isinstance(obj, types.CoroutineType):
            frame, nxt = obj.cr_frame, obj.cr_await
        elif isinstance(obj, types.GeneratorType):
            frame, nxt = obj.gi_frame, obj.gi_yieldfrom
        else:
            break
        if frame is not None:
            out.append(_frame_entry(frame.f_code, frame.f_lineno))
        obj = nxt
    return out


def _thread_stack(frame: types.FrameType | None) -> list[dict[str, Any]]:
    """A live thread's frames, outermost first, without this module's."""
    out: list[dict[str, Any]] = []
    while frame is not None:
        if frame.f_code.co_filename != _THIS_FILE:
            out.append(_frame_entry(frame.f_code, frame.f_lineno))
        frame = frame.f_back
    out.reverse()
    return out


def goroutines(leaked: bool = False) -> list[dict[str, Any]]:
    """Every live G of the running runtime, as dicts (empty when none runs).

    Go's goroutine dump (``SIGQUIT``, ``/debug/pprof/goroutine?debug=2``)
    as data. Each dict has:

    - ``id`` (int) and ``name``: the G's function (``__qualname__``);
    - ``state``: ``"running"``, ``"runnable"``, ``"waiting"`` (parked), or
      ``"syscall"`` (a sync G inside a blocking call: a ``_blocking``
      method, a C call that released the GIL);
    - ``wait``: what a waiting G waits on (``"chan receive"``, ``"chan
      send"``, ``"select"``, ``"sleep"``, ``"net recv from
      127.0.0.1:5000"``, ``"Mutex.lock"``, ``"WaitGroup.wait"``,
      ``"Semaphore.acquire"``, ``"join G 7"``, ...); for a sync G in a
      ``_blocking`` call, what that call waits on; else None;
      ``wait_seconds`` (float): for how long, else None;
    - ``stack``: the G's Python frames, outermost first, each a dict with
      ``function``, ``file`` and ``line`` (a parked G's await chain; a
      running G's live frames; empty for a G that has not started);
    - ``created_by``: ``{"g": creator id or None, "function", "file",
      "line"}``, where ``go()`` was called (None for a running G: only a
      G held still can be asked);
    - ``thread``: a running G's OS thread (``threading.get_ident()``).

    The walk is consistent per G (an entry never mixes two Gs), not a
    snapshot of all Gs at one instant: the runtime keeps running. It costs
    about 10 µs per G (a second for 100,000 parked Gs), mostly building
    the dicts; the Gs are held still only for the reference-taking part.

    Args:
        leaked: list only the Gs that wait forever: parked on channel
            operations (receive, send, select without a timeout or
            default) on channels that nothing outside the waiting Gs
            themselves can reach any more, so no one can ever complete
            them (Go 1.26's goroutine leak profile). This walks the whole
            Python heap with the other Gs paused (it holds the GIL), so it
            costs about as much as a full ``gc.collect()``; see
            ``_leaked_ids`` for what it can and cannot see.
    """
    only = _leaked_ids() if leaked else None
    raw = _gmprt._goroutines()
    frames: dict[int, types.FrameType] | None = None
    out: list[dict[str, Any]] = []
    for gid, state, wait, wait_s, thread, handle, coro, creator, ocode, oline, _ch in raw:
        if only is not None and gid not in only:
            continue
        if coro is not None:
            stack = _await_chain(coro)
        elif thread is not None:
            if frames is None:
                frames = sys._current_frames()
            stack = _thread_stack(frames.get(thread))
        else:
            stack = []
        if handle is not None:
            name = handle.name
        elif stack:
            name = stack[0]["function"]
        else:
            name = "?"
        created_by = None
        if ocode is not None:
            created_by = {"g": creator, **_frame_entry(ocode, oline)}
        elif handle is not None and creator is not None:
            created_by = {"g": creator, "function": "?", "file": "?", "line": None}
        out.append(
            {
                "id": gid,
                "name": name,
                "state": state,
                "wait": wait,
                "wait_seconds": wait_s,
                "stack": stack,
                "created_by": created_by,
                "thread": thread,
            }
        )
    out.sort(key=lambda g: g["id"])
    return out


def _leak_candidates() -> tuple[dict[int, list[int]], set[int]]:
    """Parked Gs whose wait only channels can end: G id -> the ids of
    those channels; and the ids of those Gs' coroutines. Only ids leave
    this function, so that no reference to a coroutine or a channel stays
    on the stack of the walk in ``_leaked_ids``."""
    cands: dict[int, list[int]] = {}
    coros: set[int] = set()
    for t in _gmprt._goroutines():
        gid, state, coro, chans = t[0], t[1], t[6], t[10]
        if state == "waiting" and chans is not None and coro is not None:
            cands[gid] = [id(c) for c in chans]
            coros.add(id(coro))
    return cands, coros


def _leaked_ids() -> set[int]:
    """The ids of the Gs that wait forever on channels nothing else can
    reach (``goroutines(leaked=True)``).

    Go 1.26 marks the heap from the roots without the blocked
    goroutines' stacks; a goroutine blocked on a channel the marking did
    not reach is leaked. This does the same with the Python heap:

    1. The roots are the objects referenced from outside the heap: the
       cyclic GC's own rule, refcount minus the references from other
       tracked objects (``gc.get_referents``). That counts everything the
       interpreter holds (modules, thread stacks, running frames) and
       everything Rust holds: a running or runnable G's coroutine (its
       body holds it) is a root, with its locals.
    2. Except the candidates' coroutines: the body's reference to a
       parked G's coroutine is the G's own stack, which Go does not count
       either; and the references each candidate's park token holds to its
       channels (invisible to ``gc``: Rust-held) are subtracted.
    3. Mark from the roots through ``gc.get_referents``; a candidate none
       of whose channels is marked is leaked.

    Approximate, and says so: Python objects whose references live in
    Rust are opaque (a G's function, held by its handle, is a root, so a
    closure or ``functools.partial`` capturing the channel keeps it
    reachable); a channel kept only in a contextvar of the G is reachable
    through its context. Both err towards "not leaked". The walk runs
    with the switch interval raised, so that on GIL builds no other G
    runs Python meanwhile and the heap holds still; on free-threaded
    builds it is a best effort.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        cands, coro_ids = _leak_candidates()
        if not cands:
            return set()
        objs = gc.get_objects()
        ext: dict[int, int] = {}
        for o in objs:
            # -3: the list, the loop variable, getrefcount's argument.
            ext[id(o)] = sys.getrefcount(o) - 3
        for o in objs:
            for r in gc.get_referents(o):
                k = id(r)
                if k in ext:
                    ext[k] -= 1
        for chans in cands.values():
            for k in chans:
                if k in ext:
                    ext[k] -= 1
        stack: list[object] = []
        for o in objs:
            k = id(o)
            if ext[k] <= 0 or k in coro_ids:
                continue
            if isinstance(o, types.FrameType) and o.f_code.co_filename == _THIS_FILE:
                continue  # this walk's own frames hold everything
            stack.append(o)
        del objs, o
        marked: set[int] = set()
        while stack:
            o = stack.pop()
            k = id(o)
            if k in marked:
                continue
            marked.add(k)
            stack.extend(gc.get_referents(o))
        return {gid for gid, chans in cands.items() if not any(k in marked for k in chans)}
    finally:
        sys.setswitchinterval(old)


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)} minutes"
    return f"{s / 3600:.1f} hours"


def _format_stack(g: dict[str, Any]) -> list[str]:
    lines = []
    for f in reversed(g["stack"]):  # innermost first, as Go prints
        lines.append(f"  {f['function']}(...)")
        lines.append(f"      {f['file']}:{f['line']}")
    if not g["stack"]:
        lines.append("  (no Python frame: not started, or between steps)")
    c = g["created_by"]
    if c is not None:
        who = f" in G {c['g']}" if c["g"] is not None else ""
        lines.append(f"created by {c['function']}{who} at {c['file']}:{c['line']}")
    return lines


def format_dump(gs: list[dict[str, Any]] | None = None) -> str:
    """The text :func:`dump` prints, from :func:`goroutines` (or ``gs``)."""
    if gs is None:
        gs = goroutines()
    parts = []
    for g in gs:
        what = g["wait"] if g["state"] == "waiting" else g["state"]
        if g["state"] == "syscall" and g["wait"]:
            what = f"syscall: {g['wait']}"  # a sync G in a _blocking call
        if g["wait_seconds"] is not None:
            what = f"{what}, {_duration(g['wait_seconds'])}"
        lines = [f"goroutine {g['id']} [{what}]: {g['name']}", *_format_stack(g)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + ("\n" if parts else "")


def dump(file: IO[str] | None = None) -> None:
    """Print every live G, Go's goroutine dump, to ``file`` (default
    ``sys.stderr``)::

        goroutine 7 [chan receive, 3.2s]: worker
          worker(...)
              /srv/app.py:12
        created by main in G 1 at /srv/app.py:20

    Innermost frame first, as Go prints them. See :func:`goroutines` for
    the fields and for what is consistent.
    """
    out = sys.stderr if file is None else file
    out.write(format_dump())
    out.flush()


# ---- hooks the runtime calls (registered with _gmprt._set_traceback) ----


def _stacks() -> dict[int, str]:
    """Each live G's formatted stack by id, for the ``gmprt.Deadlock``
    message (called by ``run()`` while the deadlocked Gs still sleep)."""
    return {g["id"]: "\n".join("  " + line for line in _format_stack(g)) for g in goroutines()}


def _on_sigquit(signum: int, frame: object) -> None:
    """``kill -QUIT``: the dump to stderr, and the program goes on (Go
    dumps and exits; ``GMPRT_TRACEBACK=crash`` does that: exit status 2).
    Installed by ``run()`` for its duration, on the main thread, unless
    the program has its own SIGQUIT handler."""
    crash = os.environ.get("GMPRT_TRACEBACK", "").strip().lower() == "crash"
    err = sys.stderr
    try:
        err.write("SIGQUIT: quit\n\n")
        err.write(format_dump())
        err.flush()
    finally:
        if crash:
            err.write("\ngmprt: GMPRT_TRACEBACK=crash: exit status 2\n")
            err.flush()
            os._exit(2)


_gmprt._set_traceback(sys.modules[__name__])
