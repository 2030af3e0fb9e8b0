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


def _frames(source: BinaryIO) -> Iterator[Frame]:
    reader = StreamReader()
    while chunk := source.read(CHUNK):
        yield from reader.feed(chunk)
    yield from reader.close()
