"""The errors a user can cause, and the one formatter that bounds what they echo.

Every mistake a user can make (a wrong config, a path that cannot be
written, a sweep directory that holds something else) is a
:class:`UserError`. The command line prints ``str(err)`` as one line on
stderr and exits with status 2; nothing is written and nothing is lost.
A run that started and then failed (a full disk, a numerical failure) is a
:class:`RunFailed`: one line, exit status 1.

Messages echo the values a user gave, so they must stay readable whatever
the value: :func:`brief` shows at most :data:`VALUE_CHARS` characters of any
value (without ever building the whole ``repr`` of a huge or deeply nested
one), and :func:`one_line` caps a whole message at :data:`MESSAGE_CHARS`.
"""

from __future__ import annotations

import reprlib

#: characters of a value that an error message shows
VALUE_CHARS = 80
#: characters of a whole error message
MESSAGE_CHARS = 600


class UserError(Exception):
    """A user's mistake: ``str(err)`` is one line naming the key or path, the value and what is allowed."""


class RunFailed(RuntimeError):
    """A run or sweep that started could not finish (exit status 1); ``str(err)`` says what was kept."""


class DiskFull(RunFailed):
    """The disk filled up while engraft wrote; ``str(err)`` says what was kept and how to go on."""


class NumericalFailure(RunFailed):
    """A run produced a number that is not one (NaN, infinity); no read-out is made from it."""


class _Brief(reprlib.Repr):
    """``repr`` with every container and string cut short; never expands shared (aliased) structure."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 6
        self.maxstring = self.maxother = self.maxlong = VALUE_CHARS


_BRIEF = _Brief()


def brief(value) -> str:
    """A short ``repr`` of ``value`` for an error message (at most about :data:`VALUE_CHARS` characters)."""
    text = _BRIEF.repr(value)
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 3] + "..."
    return one_line(text)


def one_line(message: str, limit: int = MESSAGE_CHARS) -> str:
    """``message`` on one line (line breaks and control characters shown escaped), at most ``limit`` chars.

    Surrounding white space is dropped first: a library's message that ends in a line break ends here
    without a visible ``\\n``.
    """
    text = str(message).strip()
    if len(text) > 4 * limit:  # do not escape megabytes only to cut them
        text = text[: 4 * limit]
    text = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
