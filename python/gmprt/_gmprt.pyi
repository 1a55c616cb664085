"""Type stubs for the native module gmprt._gmprt."""

from collections.abc import Awaitable as _Awaitable
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar, final

__all__ = [
    "Awaitable",
    "ChanClosed",
    "Deadlock",
    "G",
    "Timeout",
    "go",
    "run",
    "sleep",
    "stats",
]

_T = TypeVar("_T")

class Deadlock(RuntimeError):
    """Raised by gmprt.run() when every G is asleep and nothing can wake one."""

class Timeout(TimeoutError):
    """A gmprt operation's deadline passed."""

class ChanClosed(Exception):
    """Send on a closed channel, or receive on one that is closed and drained."""

@final
class Awaitable(Generic[_T]):
    """A gmprt awaitable. Await it once, inside a G."""

    def __await__(self) -> Generator[Any, None, _T]: ...
    def __iter__(self) -> Awaitable[_T]: ...
    def __next__(self) -> Any: ...

@final
class G(Generic[_T]):
    """A running or finished G, as returned by gmprt.go()."""

    @property
    def id(self) -> int: ...
    def done(self) -> bool: ...
    def __await__(self) -> Generator[Any, None, _T]: ...
    def join(self, timeout: float | None = None) -> _T: ...

def run(
    main: Callable[..., _Awaitable[_T]] | Callable[..., _T],
    /,
    *args: Any,
    procs: int | None = None,
) -> _T: ...
def go(
    fn_: Callable[..., _Awaitable[_T]] | Callable[..., _T], /, *args: Any, **kwargs: Any
) -> G[_T]: ...
def sleep(seconds: float) -> Awaitable[None]: ...
def stats() -> dict[str, Any]: ...
