"""How a node batches what it sends: one policy, used by the runtime and by the simulator.

Theory of operation. Requests to one peer on one surface go one at a time: while one is in
flight, later ones queue, and the next request carries everything queued (up to `BATCH`
bytes) as one CESR stream, since submissions and receipts concatenate; its single answer goes
to every request it carried. Queries are never batched (each has its own answer). Gossip is
queued per topic the same way: what queues while a publish is in progress goes out as one
payload, on the topics whose payloads are streams (`joinable`: KEL gossip is CESR, location
payloads are split record by record). Elsewhere a payload is one CBOR object (evidence, a
ruling, a roster bundle), and a reader decodes one object per payload: those go one each.
The driver owns the clock and the I/O; this module only decides what goes together:

    put(key, item, size) -> True     the key was idle: the driver starts a drain for it
    take(key) -> batch | None        the next batch to send; None: the key is idle again

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, Generic, TypeVar

from .effects import Send, Surface
from .topics import KEL_TOPIC_PREFIX, LOCATIONS_TOPIC

BATCH: Final = 256 * 1024  # bytes at most in one batched request or gossip payload

# What a node sends of its own accord, counted alike by the runtime and the simulator.
SENDS: Final = "sends"  # Send effects, before batching
REQUESTS: Final = "requests_sent"  # the requests that carried them (a batch counts once)
REQUEST_BYTES: Final = "request_bytes_sent"
GOSSIP: Final = "gossip_published"  # gossip payloads (a batch counts once)
GOSSIP_BYTES: Final = "gossip_bytes_published"
TRAFFIC: Final = (SENDS, REQUESTS, REQUEST_BYTES, GOSSIP, GOSSIP_BYTES)

_JOINABLE: Final = (KEL_TOPIC_PREFIX, LOCATIONS_TOPIC)


def joinable(topic: str) -> bool:
    """May payloads queued on `topic` go out joined into one?"""
    return topic.startswith(_JOINABLE)


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Outbox(Generic[K, T]):
    """Items queued per key, drained one batch at a time."""

    def __init__(self, limit: int = BATCH) -> None:
        self.limit = limit
        self._queues: dict[K, list[tuple[T, int]]] = {}

    def put(self, key: K, item: T, size: int) -> bool:
        """Queue `item` (of `size` bytes); True if `key` was idle and needs a drain started."""
        queue = self._queues.get(key)
        if queue is not None:
            queue.append((item, size))
            return False
        self._queues[key] = [(item, size)]
        return True

    def take(self, key: K) -> list[T] | None:
        """The next batch for `key`: at least one item, more while under the byte limit.
        None when nothing is queued, and `key` is idle from then on."""
        queue = self._queues.get(key)
        if not queue:
            self._queues.pop(key, None)
            return None
        size, count = 0, 0
        while count < len(queue) and (count == 0 or size + queue[count][1] <= self.limit):
            size += queue[count][1]
            count += 1
        self._queues[key] = queue[count:]
        return [item for item, _ in queue[:count]]


def batched(send: Send) -> bool:
    """Whether a request may share a batch with others to the same peer and surface."""
    return send.surface is not Surface.QUERY


def joined(sends: list[Send]) -> bytes:
    return b"".join(s.payload for s in sends)
