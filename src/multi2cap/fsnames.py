"""File names that are not UTF-8, shown and written without failing.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 into lone surrogates
(`surrogateescape`), which `open` and `os.stat` accept but a strict UTF-8 encoder (a terminal,
`json.dumps` written as UTF-8, a CSV) refuses with `UnicodeEncodeError`. This module imports
nothing of multi2cap, so every layer may use it.
"""

from __future__ import annotations


def printable(text: object) -> str:
    """`str(text)` as valid UTF-8: the bytes of a non-UTF-8 name become `\\xNN` escapes
    (`caf\\xe9.ogg`), everything else is unchanged."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
