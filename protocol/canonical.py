"""Whether CBOR bytes are exactly what `cbor2.dumps` writes for the value they decode to.

Theory of operation: `parse_event` refuses a body that is not in keripy's canonical form,
since its SAID is only meaningful over those bytes. The reference check re-serializes the
decoded body and compares. `surely_canonical` reaches the same verdict by walking the bytes
once beside the decoded value, which, compiled (setup.py), costs a fraction of encoding
again. It answers True only when certain: every header minimal and of definite length, every
map as long as its decoded dict (so no key repeated), and nothing but integers, byte and text
strings, arrays, maps with integer or text keys, false, true and null. Anything else (tags,
floats, other simple values, deep nesting) answers False, meaning "not shown": the caller
then falls back to the reference check, so this never refuses anything by itself.
"""

from __future__ import annotations

from typing import Final

MAX_DEPTH: Final = 32  # deeper than any KERI body; beyond it the reference check decides
_FAIL: Final = -1


def surely_canonical(raw: bytes, value: object) -> bool:
    """True only if `cbor2.dumps(value) == raw` is certain; False means "check the slow way"."""
    return _item(raw, 0, value, 0) == len(raw)


def _item(raw: bytes, pos: int, value: object, depth: int) -> int:
    """End of the item at `pos` if it is canonical and shaped like `value`, else -1."""
    size = len(raw)
    if pos >= size or depth > MAX_DEPTH:
        return _FAIL
    head = raw[pos]
    major = head >> 5
    info = head & 0x1F
    pos += 1
    if major == 7:  # false, true, null; floats and other simple values are not shown here
        return pos if 20 <= info <= 22 else _FAIL
    if info < 24:
        arg = info
    elif info == 24:
        if pos >= size or raw[pos] < 24:
            return _FAIL
        arg = raw[pos]
        pos += 1
    elif 25 <= info <= 27:
        width = 1 << (info - 24)  # 2, 4 or 8 bytes
        if pos + width > size:
            return _FAIL
        arg = int.from_bytes(raw[pos : pos + width], "big")
        if arg < 1 << (4 * width):  # would fit the next narrower width
            return _FAIL
        pos += width
    else:  # 28-30 reserved, 31 indefinite length
        return _FAIL
    if major <= 1:
        return pos if type(value) is int else _FAIL
    if major <= 3:  # byte or text string
        end = pos + arg
        expected = bytes if major == 2 else str
        return end if end <= size and type(value) is expected else _FAIL
    if major == 4:
        if type(value) is not list or len(value) != arg:
            return _FAIL
        for element in value:
            pos = _item(raw, pos, element, depth + 1)
            if pos < 0:
                return _FAIL
        return pos
    if major == 5:
        if type(value) is not dict or len(value) != arg:
            return _FAIL
        for key, element in value.items():
            if type(key) is not str and type(key) is not int:
                return _FAIL
            pos = _item(raw, pos, key, depth + 1)
            if pos < 0:
                return _FAIL
            pos = _item(raw, pos, element, depth + 1)
            if pos < 0:
                return _FAIL
        return pos
    return _FAIL  # tags
