"""This node's own location record: signed with the wall clock, handed to the role, published.

Theory of operation. A location record (`protocol/location.py`) carries its signer's wall
clock time, which roles and the protocol never read; so it is made here, on the I/O side,
from the addresses the host announces, and handed to the role's table (`Locations.own`,
`roles/locations.py`), whose effects (the record kept, so the node answers for itself; a
`Publish`) the runtime performs like any step's. Gossip keeps no history and is lost while a
mesh forms, so the record goes out at start, again `AFTER_NEIGHBOURS` seconds after the node
first has a neighbour, then every `REPUBLISH` seconds, each time signed afresh (a newer time,
the addresses announced then). Times only grow: a clock stepped back signs one millisecond
past the last record rather than an older one, which every table would refuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from dkms.node.roles.locations import Locations
from dkms.node.runtime.loop import Runtime
from dkms.protocol.crypto import Signer
from dkms.protocol.errors import ProtocolError
from dkms.protocol.location import MAX_ADDRESS, MAX_ADDRESSES, LocationRecord

log = logging.getLogger("dkms.node")
AFTER_NEIGHBOURS: Final = (2.0, 10.0, 60.0)  # seconds after the first neighbour
REPUBLISH: Final = 300.0  # seconds between records after that


def fitting(addresses: Sequence[str]) -> list[str]:
    """The addresses a record can carry, in order: at most `MAX_ADDRESSES`, each printable
    ASCII of at most `MAX_ADDRESS` characters (a longer one is left out, not cut)."""
    kept = [a for a in addresses if 0 < len(a) <= MAX_ADDRESS and a.isascii() and a.isprintable()]
    return kept[:MAX_ADDRESSES]


class OwnRecord:
    """Signs and hands over this node's records; `run` keeps them going out."""

    def __init__(
        self,
        runtime: Runtime,
        locations: Locations,
        signer: Signer,
        addresses: Callable[[], Sequence[str]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.locations = locations
        self.signer = signer
        self.addresses = addresses
        self.clock = clock
        self.last = 0  # the time (ms) of the last record signed
        self.published = 0

    async def publish(self) -> LocationRecord:
        """Sign a record now and hand it to the role (which keeps and publishes it)."""
        stamp = max(int(self.clock() * 1000), self.last + 1)
        record = LocationRecord.sign(self.signer, fitting(self.addresses()), stamp)
        self.last = stamp
        await self.runtime.perform(self.locations.own(record.raw, self.runtime.now()))
        self.published += 1
        return record

    async def run(
        self,
        neighbours: Callable[[int], Awaitable[None]],
        *,
        after: Sequence[float] = AFTER_NEIGHBOURS,
        every: float = REPUBLISH,
    ) -> None:
        """Publish at start, `after` the first neighbour (`neighbours(1)` returns once there
        is one), then `every` seconds, until cancelled."""
        await self._publish()
        await neighbours(1)
        joined = trio.current_time()
        for delay in after:
            await trio.sleep_until(joined + delay)
            await self._publish()
        while True:
            await trio.sleep(every)
            await self._publish()

    async def _publish(self) -> None:
        try:
            await self.publish()
        except ProtocolError as err:  # not expected (what fits is chosen): say so, keep going
            log.warning("location record not published: %s", err)
