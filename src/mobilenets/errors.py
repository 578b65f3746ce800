"""How an error reads in one line, for the messages that pass on another library's reason."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type's name when it has none (``EOFError()``)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
