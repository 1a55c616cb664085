"""Type stubs for the native module gmprt._gmprt."""

from collections.abc import Awaitable as _Awaitable
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, final

__all__ = [
    "Awaitable",
    "ChanClosed",
    "Conn",
    "Deadlock",
    "G",
    "Listener",
    "Timeout",
    "dial",
    "go",
    "listen",
    "run",
    "sleep",
    "stats",
    "wait_readable",
    "wait_writable",
]

_T = TypeVar("_T")

class _HasFileno(Protocol):
    def fileno(self) -> int: ...

_Buffer = bytes | bytearray | memoryview

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

def wait_readable(fd: int | _HasFileno, timeout: float | None = None) -> Awaitable[None]: ...
def wait_writable(fd: int | _HasFileno, timeout: float | None = None) -> Awaitable[None]: ...

@final
class Conn:
    """A TCP connection (gmprt.net)."""

    def recv(self, max_bytes: int = 65536, *, timeout: float | None = None) -> Awaitable[bytes]: ...
    def send(self, data: _Buffer, *, timeout: float | None = None) -> Awaitable[int]: ...
    def sendall(self, data: _Buffer, *, timeout: float | None = None) -> Awaitable[None]: ...
    def close(self) -> None: ...
    def close_write(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    @property
    def local_address(self) -> tuple[str, int]: ...
    @property
    def remote_address(self) -> tuple[str, int]: ...
    def __enter__(self) -> Conn: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

@final
class Listener:
    """A listening TCP socket (gmprt.net)."""

    def accept(self, *, timeout: float | None = None) -> Awaitable[Conn]: ...
    @property
    def address(self) -> tuple[str, int]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def __enter__(self) -> Listener: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

def listen(host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False) -> Listener: ...
def dial(host: str, port: int, *, timeout: float | None = None) -> Awaitable[Conn]: ...
