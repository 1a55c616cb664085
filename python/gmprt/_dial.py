"""Name resolution off the P, and dialing a name with Happy Eyeballs.

``getaddrinfo`` blocks in C for as long as the resolver takes (seconds, for
a slow DNS server). It runs in a sync G: the G's M blocks with the GIL
released and sysmon hands its P to another M, so the Gs behind it keep
running, and the caller awaits the G, so ``timeout=`` and ``cancel()``
reach the caller at once even though the lookup itself cannot be
interrupted (it finishes on its own and its answer is dropped).

A name with several addresses is dialed as RFC 8305 says: the addresses are
interleaved by family (the first family getaddrinfo returned, then the
other, alternating: §4), one connect starts, and each further one starts
when the previous fails or after the Connection Attempt Delay (250 ms, §5)
without an answer, while the earlier ones keep going. The first to connect
wins; the others are cancelled, waited for, and any that connected anyway
is closed, so no socket leaks. Each attempt is a G, as in Go's
``dialParallel``; a literal address skips all of this and dials in Rust.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from typing import Any

from . import _gmprt
from ._gmprt import CancelScope, Chan, ChanEmpty, Conn, Timeout, go, shield
from ._gmprt import timeout as _timeout

# RFC 8305 §5: "A simple implementation can have a fixed delay for how long
# to wait before starting the next connection attempt [...] The recommended
# value for a default delay is 250 milliseconds."
ATTEMPT_DELAY = 0.25


def _literal(host: str) -> bool:
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, bare)
            return True
        except OSError:
            pass
    return False


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an integer from 1 to 65535, got {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port}")
    return port


def _getaddrinfo(host: str, port: int) -> tuple[bool, Any]:
    # A sync G's body: the outcome is returned, never raised, so a lookup
    # whose caller gave up (timeout, cancel) is not reported as a failed G.
    try:
        return True, socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except Exception as e:
        return False, e


async def _lookup(host: str, port: int) -> list[str]:
    """The addresses of ``host``, in getaddrinfo's order (RFC 6724), once
    each."""
    ok, found = await go(_getaddrinfo, host, port)
    if not ok:
        raise found
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def resolve(host: str, port: int = 0, *, timeout: float | None = None) -> Awaitable[list[str]]:
    """The addresses of ``host``: ``await gmprt.net.resolve("example.org")``
    returns IP address strings in the order ``getaddrinfo`` gives them
    (RFC 6724: the ones to try first first), each once. A literal address
    is returned as is.

    The lookup runs in a sync G, so it blocks no P: other Gs keep running
    however long the resolver takes. A lookup the caller gave up on (a
    timeout, a cancel) still runs to its end in its G.

    Raises:
        socket.gaierror: the name does not resolve.
        gmprt.Timeout: no answer within ``timeout`` seconds.
        ValueError: ``port`` outside 0 to 65535, or a bad ``timeout``
            (at the call, not at the await).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
    # The scope is made now, so a bad timeout raises here and the
    # deadline counts from the call.
    scope = _timeout(timeout)
    return _resolve(host, port, scope)


async def _resolve(host: str, port: int, scope: CancelScope) -> list[str]:
    if _literal(host):
        return [host[1:-1] if host.startswith("[") else host]
    with scope:
        return await _lookup(host, port)
    raise AssertionError("unreachable: the timeout scope re-raises")  # pragma: no cover


def interleave(addrs: list[str]) -> list[str]:
    """RFC 8305 §4: alternate families, starting with the first one."""
    if not addrs:
        return []
    first = ":" in addrs[0]
    same = [a for a in addrs if (":" in a) == first]
    other = [a for a in addrs if (":" in a) != first]
    out: list[str] = []
    for i in range(max(len(same), len(other))):
        out += same[i : i + 1] + other[i : i + 1]
    return out


def dial(host: str, port: int, *, timeout: float | None = None) -> Awaitable[Conn]:
    """Connect to ``host``:``port`` over TCP: ``conn = await
    gmprt.net.dial(host, port)``.

    ``host`` is an IPv4 or IPv6 address, or a name (``""`` means
    ``"localhost"``). A name is resolved without blocking a P (see
    :func:`resolve`) and, when it has several addresses, dialed with Happy
    Eyeballs (RFC 8305): the addresses alternate between IPv6 and IPv4, and
    a new attempt starts every 250 ms, or as soon as one fails, until one
    connects; the rest are then abandoned. ``timeout`` (seconds) bounds the
    whole dial, the lookup included.

    Raises:
        ConnectionRefusedError: nothing listens there (for a name, the first
            address's error; the others are in its ``__notes__``).
        socket.gaierror: the name does not resolve.
        gmprt.Timeout: not connected within ``timeout`` seconds.
        OSError: another connect error.
        ValueError: ``port`` outside 1 to 65535, or a bad ``timeout`` (at
            the call, not at the await).
    """
    if host and _literal(host):
        # Straight to Rust: a token, no coroutine frame, validated now.
        return _gmprt.dial(host, port, timeout=timeout)
    port = _check_port(port)
    return _dial_name(host or "localhost", port, _timeout(timeout))


async def _dial_name(host: str, port: int, scope: CancelScope) -> Conn:
    with scope:
        addrs = interleave(await _lookup(host, port))
        if len(addrs) == 1:
            return await _gmprt.dial(addrs[0], port)
        return await dial_addrs(addrs, port)
    raise AssertionError("unreachable: the timeout scope re-raises")  # pragma: no cover


async def dial_addrs(addrs: list[str], port: int, delay: float = ATTEMPT_DELAY) -> Conn:
    """Happy Eyeballs over literal ``addrs``, in the order given (module
    docs). Public for tests: a name with an address that drops SYNs cannot
    be made on a loopback-only machine without editing /etc/hosts."""
    if not addrs:
        raise OSError(f"no address to dial on port {port}")
    outcomes: Chan[tuple[int, Conn | None, BaseException | None]] = Chan(len(addrs))

    async def attempt(i: int) -> None:
        try:
            conn = await _gmprt.dial(addrs[i], port)
        except Exception as e:
            outcomes.try_send((i, None, e))
            return
        outcomes.try_send((i, conn, None))

    gs = []
    errors: dict[int, BaseException] = {}
    winner: Conn | None = None
    try:
        for i in range(len(addrs)):
            gs.append(go(attempt, i))
            last = i == len(addrs) - 1
            while True:
                try:
                    idx, conn, err = await outcomes.recv(timeout=None if last else delay)
                except Timeout:
                    break  # no answer yet: start the next attempt meanwhile
                if conn is not None:
                    winner = conn
                    return conn
                assert err is not None
                errors[idx] = err
                if len(errors) == len(gs):
                    if last:
                        raise _first_error(addrs, port, errors)
                    break  # every attempt so far failed: the next one now
        raise AssertionError("unreachable: the last attempt ends the loop")  # pragma: no cover
    finally:
        for g in gs:
            g.cancel()
        with shield():
            for g in gs:
                try:
                    await g
                except BaseException:
                    pass  # each loser's outcome is in `outcomes`
        while True:
            try:
                _, conn, _err = outcomes.try_recv()
            except ChanEmpty:
                break
            if conn is not None and conn is not winner:
                conn.close()


def _first_error(addrs: list[str], port: int, errors: dict[int, BaseException]) -> BaseException:
    """The first address's error (Go's rule), the others as notes on it."""
    first = errors[min(errors)]
    for i in sorted(errors):
        if errors[i] is not first:
            first.add_note(f"dial {addrs[i]} port {port}: {errors[i]}")
    return first
