"""Names for the strings that identify things, so a signature cannot take a SAID's place.

`NewType`s cost nothing at run time (the compiled modules see plain `str`); they let the type
checker tell an identifier prefix from an event's SAID from a node's (witness's) prefix.
"""

from __future__ import annotations

from typing import NewType

Prefix = NewType("Prefix", str)  # an identifier prefix (an AID)
Said = NewType("Said", str)  # an event's self-addressing identifier (its digest)
NodePrefix = NewType("NodePrefix", str)  # a node's non-transferable (B) prefix: witnesses, watchers
