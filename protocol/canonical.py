"""Whether a body's bytes are exactly keripy's serialization of the value they decode to.

Theory of operation: `parse_event` refuses a body that is not in keripy's canonical form,
since its SAID is only meaningful over those bytes. The reference check re-serializes the
decoded body and compares. These functions reach the same verdict by walking the bytes once
beside the decoded value, which, compiled (setup.py), costs a fraction of encoding again.
They answer True only when certain, and False means "not shown": the caller then runs the
reference check, so nothing here refuses anything by itself. `decode_canonical_cbor` goes one
step further for CBOR: it decodes the body itself while walking it, so a canonical body costs
one walk instead of a decode and a walk; it answers None for anything it cannot vouch for, and
the caller then decodes with cbor2 and checks the slow way.

- CBOR (`cbor2.dumps`): every header minimal and of definite length, every map as long as its
  decoded dict (so no key repeated), and nothing but integers, byte and text strings, arrays,
  maps with integer or text keys, false, true and null. Tags, floats, other simple values and
  deep nesting are not shown.
  `decode_canonical_cbor` vouches for the same forms (text keys only, top level a map) and
  returns what `cbor2.loads` would: dicts, lists, str (strict UTF-8, as cbor2 decodes),
  bytes, int, False, True and None.
- JSON (`json.dumps` with `(",", ":")` separators and `ensure_ascii=False`, as UTF-8): no
  whitespace, members in the decoded order (so no key repeated), strings with no escapes,
  integers, true, false and null. Escaped strings, floats and deep nesting are not shown.
"""

from __future__ import annotations

from typing import Final, cast

MAX_DEPTH: Final = 32  # deeper than any KERI body; beyond it the reference check decides
_FAIL: Final = -1


def surely_canonical_cbor(raw: bytes, value: object) -> bool:
    """True only if `cbor2.dumps(value) == raw` is certain; False means "check the slow way"."""
    return _cbor_item(raw, 0, value, 0) == len(raw)


def _cbor_item(raw: bytes, pos: int, value: object, depth: int) -> int:
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
            pos = _cbor_item(raw, pos, element, depth + 1)
            if pos < 0:
                return _FAIL
        return pos
    if major == 5:
        if type(value) is not dict or len(value) != arg:
            return _FAIL
        for key, element in value.items():
            if type(key) is not str and type(key) is not int:
                return _FAIL
            pos = _cbor_item(raw, pos, key, depth + 1)
            if pos < 0:
                return _FAIL
            pos = _cbor_item(raw, pos, element, depth + 1)
            if pos < 0:
                return _FAIL
        return pos
    return _FAIL  # tags


_ASCII_CHARS: Final = [chr(code) for code in range(0x80)]
_NOT_SHOWN: Final = object()  # the decoder's "not vouched for": the caller decodes the slow way


def decode_canonical_cbor(raw: bytes) -> dict[str, object] | None:
    """`cbor2.loads(raw)` if `raw` is a map that is certainly `cbor2.dumps` of it, else None."""
    if not raw or raw[0] >> 5 != 5:
        return None
    reader = _CborReader(raw)
    value = reader.item(0)
    if value is _NOT_SHOWN or reader.pos != len(raw):
        return None
    return value  # type: ignore[return-value]  # a map at the top: a dict with text keys


class _CborReader:
    """Cursor for `decode_canonical_cbor`: `item` decodes the item at `pos` and moves past it,
    or returns `_NOT_SHOWN` (`pos` is then meaningless)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def head(self) -> int:
        """The argument of the header at `pos` (its major type is the caller's), minimal in
        width, or -1; `pos` moves past the header."""
        raw = self.raw
        pos = self.pos
        info = raw[pos] & 0x1F
        pos += 1
        if info < 24:
            self.pos = pos
            return info
        if info == 24:
            if pos >= len(raw) or raw[pos] < 24:
                return _FAIL
            self.pos = pos + 1
            return raw[pos]
        if 25 <= info <= 27:
            width = 1 << (info - 24)  # 2, 4 or 8 bytes
            if pos + width > len(raw):
                return _FAIL
            arg = int.from_bytes(raw[pos : pos + width], "big")
            if arg < 1 << (4 * width):  # would fit the next narrower width
                return _FAIL
            self.pos = pos + width
            return arg
        return _FAIL  # 28-30 reserved, 31 indefinite length

    def text(self) -> object:
        """The text string at `pos` (its major type checked by the caller)."""
        size = self.head()
        start = self.pos
        end = start + size
        if size < 0 or end > len(self.raw):
            return _NOT_SHOWN
        if size == 1 and self.raw[start] < 0x80:  # most keys: CPython's cached 1-char strs
            self.pos = end
            return _ASCII_CHARS[self.raw[start]]
        try:
            text = self.raw[start:end].decode("utf-8")
        except UnicodeDecodeError:
            return _NOT_SHOWN
        self.pos = end
        return text

    def item(self, depth: int) -> object:
        raw = self.raw
        pos = self.pos
        if pos >= len(raw) or depth > MAX_DEPTH:
            return _NOT_SHOWN
        major = raw[pos] >> 5
        if major == 3:
            return self.text()
        if major == 7:  # false, true, null; floats and other simple values are not shown
            info = raw[pos] & 0x1F
            self.pos = pos + 1
            if info == 20:
                return False
            if info == 21:
                return True
            return None if info == 22 else _NOT_SHOWN
        arg = self.head()
        if arg < 0:
            return _NOT_SHOWN
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            start = self.pos
            if start + arg > len(raw):
                return _NOT_SHOWN
            self.pos = start + arg
            return raw[start : start + arg]
        if arg > len(raw) - self.pos:  # each element takes a byte at least
            return _NOT_SHOWN
        if major == 4:
            items: list[object] = []
            for _ in range(arg):
                element = self.item(depth + 1)
                if element is _NOT_SHOWN:
                    return _NOT_SHOWN
                items.append(element)
            return items
        if major == 5:
            members: dict[str, object] = {}
            for _ in range(arg):
                if self.pos >= len(raw) or raw[self.pos] >> 5 != 3:
                    return _NOT_SHOWN  # keys other than text are left to cbor2
                key = self.text()
                if key is _NOT_SHOWN:
                    return _NOT_SHOWN
                element = self.item(depth + 1)
                if element is _NOT_SHOWN:
                    return _NOT_SHOWN
                members[cast(str, key)] = element
            return members if len(members) == arg else _NOT_SHOWN  # a key repeated
        return _NOT_SHOWN  # tags


def surely_canonical_json(raw: bytes, value: object) -> bool:
    """True only if keripy's JSON of `value` is certainly `raw`; False: "check the slow way"."""
    if _BACKSLASH in raw:  # only strings can hold one: an escape, left to the reference
        return False
    return _json_item(raw, 0, value, 0) == len(raw)


_QUOTE: Final = 0x22
_BACKSLASH: Final = b"\\"


def _json_item(raw: bytes, pos: int, value: object, depth: int) -> int:
    """End of the JSON value at `pos` if written as keripy writes `value`, else -1."""
    size = len(raw)
    if pos >= size or depth > MAX_DEPTH:
        return _FAIL
    if isinstance(value, str):
        return _json_string(raw, pos, value)
    if isinstance(value, dict):
        return _json_object(raw, pos, value, depth)
    if isinstance(value, list):
        return _json_array(raw, pos, value, depth)
    if value is None:
        text = b"null"
    elif isinstance(value, bool):
        text = b"true" if value else b"false"
    elif isinstance(value, int):
        text = str(value).encode("ascii")
    else:  # floats: their spelling is not checked here
        return _FAIL
    return pos + len(text) if raw.startswith(text, pos) else _FAIL


def _json_string(raw: bytes, pos: int, text: str) -> int:
    # With no backslash in the body (checked first), the string's bytes are its UTF-8 and
    # nothing else: the decoder refuses raw control characters, and a quote inside would
    # have needed an escape.
    if raw[pos] != _QUOTE:
        return _FAIL
    if text.isascii():
        length = len(text)
    else:
        try:
            length = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: the encoder cannot write it either
            return _FAIL
    end = pos + 1 + length
    if end >= len(raw) or raw[end] != _QUOTE:
        return _FAIL
    return end + 1


def _json_object(raw: bytes, pos: int, members: dict[object, object], depth: int) -> int:
    if raw[pos] != 0x7B:  # {
        return _FAIL
    pos += 1
    first = True
    for key, element in members.items():
        if not first:
            if pos >= len(raw) or raw[pos] != 0x2C:  # ,
                return _FAIL
            pos += 1
        first = False
        if type(key) is not str:
            return _FAIL
        pos = _json_string(raw, pos, key) if pos < len(raw) else _FAIL
        if pos < 0 or pos >= len(raw) or raw[pos] != 0x3A:  # :
            return _FAIL
        pos = _json_item(raw, pos + 1, element, depth + 1)
        if pos < 0:
            return _FAIL
    return pos + 1 if pos < len(raw) and raw[pos] == 0x7D else _FAIL  # }


def _json_array(raw: bytes, pos: int, elements: list[object], depth: int) -> int:
    if raw[pos] != 0x5B:  # [
        return _FAIL
    pos += 1
    for index, element in enumerate(elements):
        if index:
            if pos >= len(raw) or raw[pos] != 0x2C:  # ,
                return _FAIL
            pos += 1
        pos = _json_item(raw, pos, element, depth + 1)
        if pos < 0:
            return _FAIL
    return pos + 1 if pos < len(raw) and raw[pos] == 0x5D else _FAIL  # ]
