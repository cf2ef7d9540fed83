"""One exception type for every expected failure: its message is one line naming the file/thing and the problem."""


class ZooError(Exception):
    """A user-facing failure. `str(exc)` is a single line: '<what>: <problem>'."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line


def one_line(exc: BaseException) -> str:
    """Collapse any exception message to one line (for errors raised by libraries)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
