"""What the runtime publishes: KEL gossip queued on one topic goes out as one CESR stream, but
CBOR objects (evidence, rulings, rosters) each in a payload of their own: a reader decodes one
CBOR object per payload, and one joined after it was silently lost."""

from __future__ import annotations

import cbor2
import trio

from dkms.node.roles.effects import Effect, Publish, Subscribe, Surface
from dkms.node.roles.inputs import Input
from dkms.node.roles.topics import DUPLICITY_TOPIC, GOVERNANCE_TOPIC, kel_topic
from dkms.node.runtime.loop import Runtime
from dkms.node.runtime.transport import MemoryNetwork

KEL = kel_topic("EAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
TOPICS = (KEL, DUPLICITY_TOPIC, GOVERNANCE_TOPIC)


class Publisher:
    """A role that publishes three items on each topic in one step, at start."""

    surfaces: frozenset[Surface] = frozenset()

    def start(self, now: float) -> list[Effect]:
        return [
            Publish(topic, cbor2.dumps({"topic": topic, "n": n}))
            for topic in TOPICS
            for n in range(3)
        ]

    def admits(self, topic: str, payload: bytes) -> bool:
        return True

    def step(self, event: Input, now: float) -> list[Effect]:
        return []


class Listener(Publisher):
    def start(self, now: float) -> list[Effect]:
        return [Subscribe(topic) for topic in TOPICS]


class NoStore:
    blocking = False

    def apply(self, effects: object) -> None:
        pass


async def test_cbor_gossip_goes_one_object_per_payload_and_kel_gossip_may_join() -> None:
    net = MemoryNetwork()
    heard: dict[str, list[bytes]] = {topic: [] for topic in TOPICS}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener = net.join("listener")
            channels = {topic: await listener.subscribe(topic) for topic in TOPICS}
            runtime = Runtime(Publisher(), net.join("publisher"), NoStore())  # type: ignore[arg-type]
            await nursery.start(runtime.run)
            for topic in (DUPLICITY_TOPIC, GOVERNANCE_TOPIC):
                while len(heard[topic]) < 3:
                    heard[topic].append((await channels[topic].receive())[1])
            kel_bytes = b""
            expected = b"".join(cbor2.dumps({"topic": KEL, "n": n}) for n in range(3))
            while len(kel_bytes) < len(expected):
                kel_bytes += (await channels[KEL].receive())[1]
            nursery.cancel_scope.cancel()
    for topic in (DUPLICITY_TOPIC, GOVERNANCE_TOPIC):
        assert [cbor2.loads(p) for p in heard[topic]] == [
            {"topic": topic, "n": n} for n in range(3)
        ]
    assert kel_bytes == expected  # a stream: joined or not, nothing lost
