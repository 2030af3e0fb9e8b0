"""Plain-text rendering helpers for the command line.

Everything printed may come from hostile bytes (an event's fields are only partly checked
before a message is rejected), so strings pass through `safe`, which keeps terminal control
sequences and unencodable characters out of the user's terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def safe(value: object) -> str:
    """`value` as printable ASCII: plain text stays as it is, anything else is escaped."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if text.isascii() and text.isprintable():
        return text
    return ascii(text)[1:-1]


def short(text: str | None, width: int = 12) -> str:
    """The start of a long qb64 value, enough to tell values apart in a table."""
    if text is None:
        return "-"
    text = safe(text)
    return text if len(text) <= width + 2 else text[:width] + ".."


def threshold(value: object) -> str:
    """A threshold in keripy's forms (`"2"`, `["1/2","1/2"]`, lists of lists), unquoted."""
    if isinstance(value, list):
        return "[" + ",".join(threshold(item) for item in value) + "]"
    return safe(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is not padded (it holds free text)."""
    columns = zip(headers, *rows, strict=True)  # a column at a time: cheap for long tables
    widths = [max(map(len, column)) for column in columns][:-1]
    line = indent + "".join(f"{{:<{width}}}  " for width in widths) + "{}"
    return [line.format(*row).rstrip() for row in (headers, *rows)]
