"""Reading a CESR file (or stdin) into frames, in bounded chunks.

`read_frames` yields every frame the stream reader finishes, then raises the reader's
`ParseError` if the bytes stop being framable (the reader hands over every message framed
before the bad bytes first), or `OSError` if the file cannot be read.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO, Final

from dkms.protocol.stream import Frame, StreamReader

CHUNK: Final = 64 * 1024
STDIN: Final = "-"


def read_frames(path: str) -> Iterator[Frame]:
    """Frames of the file at `path` (`-` is stdin, read as bytes)."""
    if path == STDIN:
        yield from _frames(sys.stdin.buffer)
        return
    with open(path, "rb") as source:
        yield from _frames(source)


def read_upto(path: str, limit: int = -1) -> bytes:
    """The file at `path` (`-` is stdin), at most `limit + 1` bytes of it when `limit` is not
    -1 (so that a caller sees a file over `limit`); `OSError` if it cannot be read."""
    if path == STDIN:
        return sys.stdin.buffer.read(limit + 1 if limit >= 0 else -1)
    with open(path, "rb") as source:
        return source.read(limit + 1 if limit >= 0 else -1)


def _frames(source: BinaryIO) -> Iterator[Frame]:
    reader = StreamReader()
    while chunk := source.read(CHUNK):
        yield from reader.feed(chunk)
    yield from reader.close()
