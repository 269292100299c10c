"""Errors a user fixes by changing a value, shown by the `talkinghead` command as one line with exit status 2.

Raise :class:`ConfigError` (a ValueError) from any check of a configured value: ``talkinghead fit`` finds it even
when jsonargparse wraps it while instantiating a class, prints ``talkinghead fit: <message>`` and exits 2, with the
traceback only under ``--debug`` or ``TALKINGHEAD_DEBUG=1``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "find_cause", "one_line"]


class ConfigError(ValueError):
    """A configured value the package cannot use; the message names the value and what to use instead."""


def find_cause(error: BaseException | None,
               kinds: tuple[type[BaseException], ...] = (ConfigError,)) -> BaseException | None:
    """The error of one of ``kinds`` that ``error`` is or was raised from (its __cause__ / __context__ chain)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message, of which the last line is the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
