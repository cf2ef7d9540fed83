"""One exception type for every expected failure: its message is one line naming the file/thing and the problem."""
import difflib


class ZooError(Exception):
    """A user-facing failure. `str(exc)` is a single line: '<what>: <problem>'."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line


def one_line(exc: BaseException) -> str:
    """Collapse any exception message to one line (for errors raised by libraries)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def closest(word: str, candidates) -> str | None:
    """The candidate a mistyped `word` most likely meant (difflib, cutoff 0.6), or None: the one
    did-you-mean rule of option, task, model and manifest-key errors."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None
