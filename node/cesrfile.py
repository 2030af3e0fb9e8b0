"""Reading a CESR file (or stdin) into frames, in bounded chunks.

`read_frames` yields every frame the stream reader finishes, then raises the reader's
`ParseError` if the bytes stop being framable, or `OSError` if the file cannot be read.

The reader discards the frames of a `feed`/`close` call that raises (and it holds back the
last message of each call), so messages just before bad bytes would be lost: with one chunk,
all of them. We keep the bytes the reader has not delivered frames for yet, and on a
`ParseError` frame them again, up to the error offset, with a fresh reader, so the user sees
everything that was readable ("still printing what was found").
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO, Final

from dkms.protocol.errors import ParseError
from dkms.protocol.stream import BadFrame, Frame, Message, StreamReader

CHUNK: Final = 64 * 1024
STDIN: Final = "-"
_BASE64: Final = frozenset(
    bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)


def read_frames(path: str) -> Iterator[Frame]:
    """Frames of the file at `path` (`-` is stdin, read as bytes)."""
    if path == STDIN:
        yield from _frames(sys.stdin.buffer)
        return
    with open(path, "rb") as source:
        yield from _frames(source)


def _frames(source: BinaryIO) -> Iterator[Frame]:
    reader = StreamReader()
    tail = bytearray()  # bytes fed to the reader that no delivered frame covers yet
    tail_at = 0  # stream offset of tail[0]
    try:
        while chunk := source.read(CHUNK):
            tail += chunk
            frames = reader.feed(chunk)
            if frames:
                end = frames[-1].offset + frames[-1].length
                del tail[: end - tail_at]
                tail_at = end
            yield from frames
        yield from reader.close()
    except ParseError as err:
        yield from _salvage(bytes(tail), tail_at, err)
        raise


def _salvage(tail: bytes, tail_at: int, err: ParseError) -> list[Frame]:
    """Frames in `tail` before the error that the failed reader call dropped."""
    if err.offset is None or err.offset <= tail_at:
        return []
    cut = err.offset - tail_at
    frames: list[Frame] = []
    reader = StreamReader()
    try:
        frames = reader.feed(tail[:cut])  # holds back the message that runs up to the error
        # Attachments are base64 text. An error at any other byte is where the next message
        # should have begun, so the one before it is whole; an error at a base64 byte lies
        # inside its attachments (bad counter, junk, truncated item): we leave it out.
        if tail[cut : cut + 1] not in _BASE64:
            frames += reader.close()
    except ParseError:
        pass  # keep what framed before it (feed failing too would mean no frames at all)
    return [_shift(frame, tail_at) for frame in frames]


def _shift(frame: Frame, by: int) -> Frame:
    if isinstance(frame, BadFrame):
        return BadFrame(frame.offset + by, frame.length, frame.error.at(by))
    return Message(frame.event, frame.attachments, frame.offset + by, frame.length)
