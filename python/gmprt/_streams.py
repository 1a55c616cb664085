"""The errors of gmprt.net's buffered reads (``readline``, ``readuntil``,
``readexactly``), on plain and TLS connections alike.

They carry the same attributes as asyncio's ``IncompleteReadError`` and
``LimitOverrunError``, so code ported from asyncio streams reads them the
same way. They are plain Python classes: the Rust side raises them by
importing this module, only on the error path.
"""

from __future__ import annotations


class IncompleteReadError(EOFError):
    """The peer closed before a read was complete.

    ``partial`` holds the bytes read before EOF (they are consumed);
    ``expected`` is the number of bytes ``readexactly`` wanted, or ``None``
    for ``readuntil``.
    """

    partial: bytes
    expected: int | None

    def __init__(self, partial: bytes, expected: int | None) -> None:
        wanted = "undefined" if expected is None else repr(expected)
        super().__init__(f"{len(partial)} bytes read on a total of {wanted} expected bytes")
        self.partial = partial
        self.expected = expected

    def __reduce__(self) -> tuple[type[IncompleteReadError], tuple[bytes, int | None]]:
        return type(self), (self.partial, self.expected)


class LimitOverrunError(ValueError):
    """No separator within ``limit`` bytes.

    The bytes stay buffered: ``recv`` or a read with a larger ``limit`` gets
    them. ``consumed`` is how many bytes were searched (and are buffered).
    """

    consumed: int

    def __init__(self, message: str, consumed: int) -> None:
        super().__init__(message)
        self.consumed = consumed

    def __reduce__(self) -> tuple[type[LimitOverrunError], tuple[str, int]]:
        return type(self), (self.args[0], self.consumed)
