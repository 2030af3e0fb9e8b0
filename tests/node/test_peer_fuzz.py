"""Fuzzing every libp2p surface of real `dkms-node` processes: a peer's bytes never end a node.

A witness and a watcher run as `dkms-node run` processes on 127.0.0.1 for the whole module.
Each Hypothesis example is a batch of attacks from one real libp2p host: a new stream on one
of the protocols the nodes speak (meshsub 1.0/1.1, identify and its push, ping, every
`/dkms/1/...` surface, and one they do not speak), carrying random bytes, truncated or
oversized length prefixes, huge varints, or structurally valid protobufs with hostile fields
(pubsub RPCs with made-up messages, signed by the attacker so they reach our validators,
control messages naming unknown topics and peers; identify records with garbage keys and
addresses). After each batch both processes must still run and answer a legitimate query, and
their logs must hold no traceback. The first test sends the six bytes that killed 0.8.1 nodes.

The protocols fuzzed are checked against what the nodes announce through identify, so a
surface added later fails this test until it is fuzzed too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from libp2p.custom_types import TProtocol
from libp2p.identity.identify.pb import identify_pb2
from libp2p.pubsub.pb import rpc_pb2

from dkms.node.p2p import open_host, parse_introduction
from dkms.node.p2p.config import HostConfig
from dkms.node.p2p.framing import encode_request
from dkms.node.p2p.host import P2PHost
from dkms.node.p2p.session import SESSION_PROTOCOL
from dkms.node.p2p.sessionframes import REQUEST_HEAD
from dkms.node.p2p.sessionframes import encode_request as session_request
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Surface
from dkms.node.roles.topics import DUPLICITY_TOPIC, GOVERNANCE_TOPIC, LOCATIONS_TOPIC, kel_topics
from dkms.node.testing.keys import node_signer

pytestmark = pytest.mark.slow  # real processes

ATTACK_WAIT = 2.0  # seconds an attack may wait for the node's answer or reset (most get none)
STARTUP = 30.0  # seconds for a node process to print its introduction
MESHSUB = ("/meshsub/1.0.0", "/meshsub/1.1.0")
IDENTIFY = ("/ipfs/id/1.0.0", "/ipfs/id/push/1.0.0")
PING = ("/ipfs/ping/1.0.0",)
DKMS = (*(s.value for s in Surface), "/dkms/1/peers")
SESSION = (SESSION_PROTOCOL,)
UNSPOKEN = ("/dkms/1/nonesuch",)
FUZZED = frozenset((*MESHSUB, *IDENTIFY, *PING, *DKMS, *SESSION))
TOPICS = (DUPLICITY_TOPIC, GOVERNANCE_TOPIC, LOCATIONS_TOPIC, *kel_topics()[:4], "/not/a/topic")


@dataclass
class NodeProcess:
    name: str
    process: subprocess.Popen[bytes]
    introduction: str
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _start(name: str, data_dir: Path, args: tuple[str, ...]) -> NodeProcess:
    log = data_dir.with_name(name + ".log")
    command = [sys.executable, "-m", "dkms.node.cli.node", "run", "--data-dir", str(data_dir)]
    command += ["--listen", "/ip4/127.0.0.1/tcp/0", *args]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=sink, stdin=subprocess.DEVNULL
        )
    assert process.stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(STARTUP)
    words = (lines[0] if lines else b"").decode(errors="replace").split()
    if len(words) != 2:
        process.kill()
        raise AssertionError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
    return NodeProcess(name, process, words[1], log)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    root = tmp_path_factory.mktemp("fuzzed")
    governance = node_signer(50).verfer  # no roster ever comes: the watcher still serves
    started: list[NodeProcess] = []
    try:
        started.append(_start("witness", root / "witness", ("--role", "witness")))
        watcher_args = ("--role", "watcher", "--governance", governance)
        started.append(_start("watcher", root / "watcher", watcher_args))
        yield started
    finally:
        for node in started:
            node.process.kill()
            node.process.wait()
            if node.process.stdout is not None:
                node.process.stdout.close()


# ----------------------------------------------------------------------------- what is sent


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


small = st.binary(max_size=64)
text = st.one_of(st.sampled_from(TOPICS), st.text(max_size=40))


@st.composite
def pubsub_rpcs(draw: st.DrawFn) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    for _ in range(draw(st.integers(0, 3))):
        rpc.subscriptions.add(subscribe=draw(st.booleans()), topicid=draw(text))
    for _ in range(draw(st.integers(0, 3))):
        msg = rpc.publish.add()
        msg.data = draw(st.binary(max_size=512))
        msg.seqno = draw(small)
        msg.topicIDs.extend(draw(st.lists(text, max_size=3)))
        msg.from_id = draw(small)
        msg.signature = draw(small)
        msg.key = draw(small)
    if draw(st.booleans()):
        control = rpc.control
        for _ in range(draw(st.integers(0, 2))):
            control.ihave.add(topicID=draw(text), messageIDs=draw(st.lists(small, max_size=4)))
        for _ in range(draw(st.integers(0, 2))):
            control.iwant.add(messageIDs=draw(st.lists(small, max_size=4)))
        for _ in range(draw(st.integers(0, 2))):
            control.graft.add(topicID=draw(text))
        for _ in range(draw(st.integers(0, 2))):
            prune = control.prune.add(topicID=draw(text), backoff=draw(st.integers(0, 2**64 - 1)))
            for _ in range(draw(st.integers(0, 2))):
                prune.peers.add(peerID=draw(small), signedPeerRecord=draw(small))
    if draw(st.booleans()):
        rpc.senderRecord = draw(small)
    return rpc


@st.composite
def identify_records(draw: st.DrawFn) -> identify_pb2.Identify:
    record = identify_pb2.Identify()
    record.protocol_version = draw(st.text(max_size=20))
    record.agent_version = draw(st.text(max_size=20))
    record.public_key = draw(small)
    record.listen_addrs.extend(draw(st.lists(small, max_size=3)))
    record.observed_addr = draw(small)
    record.protocols.extend(draw(st.lists(st.text(max_size=20), max_size=3)))
    if draw(st.booleans()):
        record.signedPeerRecord = draw(small)
    return record


def framed(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Varint-prefixed bodies: exact, truncated (the prefix promises more), or over-long."""
    return st.tuples(body, st.integers(-8, 64)).map(
        lambda pair: _varint(max(0, len(pair[0]) + pair[1])) + pair[0]
    )


huge_varints = st.integers(1, 10).map(lambda n: b"\xff" * n + b"\x7f")
junk = st.one_of(st.binary(max_size=300), huge_varints, framed(st.binary(max_size=200)))


@dataclass(frozen=True)
class Attack:
    node: int  # which node process
    protocol: str
    payload: bytes
    signed_publish: bool = False  # sign the RPC's messages as the attacker (reach validators)


@st.composite
def attacks(draw: st.DrawFn) -> Attack:
    node = draw(st.integers(0, 1))
    family = draw(st.sampled_from(["meshsub", "identify", "ping", "dkms", "session", "unspoken"]))
    if family == "meshsub":
        protocol = draw(st.sampled_from(MESHSUB))
        rpc = draw(pubsub_rpcs())
        body = st.just(rpc.SerializeToString())
        payload = draw(st.one_of(framed(body), junk))
        return Attack(node, protocol, payload, signed_publish=draw(st.booleans()))
    if family == "identify":
        protocol = draw(st.sampled_from(IDENTIFY))
        body = st.just(draw(identify_records()).SerializeToString())
        return Attack(node, protocol, draw(st.one_of(framed(body), junk)))
    if family == "ping":
        return Attack(node, PING[0], draw(st.binary(max_size=100)))
    cbor = st.recursive(
        st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        ),
        max_leaves=10,
    ).map(cbor2.dumps)
    if family == "session":
        # Frames on one session stream: well-formed requests to any surface (or one not
        # served) with hostile payloads, then garbage: lengths over the session limit, empty
        # or non-ASCII protocol names, truncated frames, random bytes.
        ask = st.builds(
            session_request,
            st.integers(0, 2**32 - 1),
            st.sampled_from((*DKMS, *UNSPOKEN)),
            st.one_of(cbor, st.binary(max_size=200)),
        )
        bad = st.one_of(
            st.builds(
                REQUEST_HEAD.pack,
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(0, 255),
            ).map(lambda head: head + b"/dkms/1/query"),
            st.binary(max_size=120),
            ask.map(lambda frame: frame[: max(1, len(frame) // 2)]),
        )
        frames = st.lists(st.one_of(ask, bad), min_size=1, max_size=6)
        return Attack(node, SESSION_PROTOCOL, b"".join(draw(frames)))
    if family == "dkms":
        protocol = draw(st.sampled_from(DKMS))
        request = st.one_of(
            cbor.map(encode_request),
            st.binary(max_size=300).map(encode_request),
            st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=64)).map(
                lambda pair: pair[0].to_bytes(4, "big") + pair[1]
            ),
            st.binary(max_size=6),
        )
        return Attack(node, protocol, draw(request))
    return Attack(node, UNSPOKEN[0], draw(st.binary(max_size=32)))


# ----------------------------------------------------------------------------- how it is sent


def _sign_messages(host: P2PHost, data: bytes) -> bytes:
    """Re-sign every message of a varint-framed RPC as `host` (libp2p's pubsub signature)."""
    length, shift, i = 0, 0, 0
    while i < len(data) and i < 10:
        byte = data[i]
        i += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    rpc = rpc_pb2.RPC()
    try:
        rpc.ParseFromString(data[i : i + length])
    except Exception:
        return data
    key = host.identity.key_pair.private_key
    for msg in rpc.publish:
        msg.from_id = host.peer_id.to_bytes()
        msg.ClearField("signature")
        msg.ClearField("key")
        msg.signature = key.sign(b"libp2p-pubsub:" + msg.SerializeToString())
    out = rpc.SerializeToString()
    return _varint(len(out)) + out


async def _send(host: P2PHost, target: str, attack: Attack) -> None:
    intro = parse_introduction(target)
    payload = _sign_messages(host, attack.payload) if attack.signed_publish else attack.payload
    with trio.move_on_after(ATTACK_WAIT):
        try:
            stream = await host.libp2p.new_stream(intro.peer_id, [TProtocol(attack.protocol)])
        except Exception:
            return  # refused (an unspoken protocol) or the node reset us: both fine
        try:
            await stream.write(payload)
            await stream.close()  # half-close: the node reads to the end of what we sent
            while await stream.read(4096):
                pass
        except Exception:
            pass  # the node reset the stream: what it should do with garbage
        finally:
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.reset()


async def _legitimate_query(host: P2PHost, target: str) -> None:
    """A well-formed question gets its answer: a witness refuses it (UNKNOWN: no such
    identifier), a watcher answers with the standing `unknown`."""
    ask = cbor2.dumps({"t": "state", "i": node_signer(51).verfer})
    answer = await host.request(target, Surface.QUERY.value, ask, timeout=10)
    assert answer.code is Code.UNKNOWN or cbor2.loads(answer.payload)["standing"] == "unknown"


async def _attack(nodes: list[NodeProcess], batch: list[Attack]) -> set[str]:
    """Run `batch` from a fresh host; return the protocols the nodes announce."""
    async with open_host(os.urandom(32), config=HostConfig(dial_timeout=5)) as host:
        with trio.fail_after(60):
            await host.connect([n.introduction for n in nodes])
            async with trio.open_nursery() as nursery:  # all at once: a burst, and quick
                for attack in batch:
                    nursery.start_soon(_send, host, nodes[attack.node].introduction, attack)
            for node in nodes:
                await _legitimate_query(host, node.introduction)
            store = host.libp2p.get_peerstore()
            spoken: set[str] = set()
            for node in nodes:
                spoken |= {
                    str(p)
                    for p in store.get_protocols(parse_introduction(node.introduction).peer_id)
                }
            return spoken


def _check(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        assert node.alive(), f"{node.name} died:\n{node.log_text()[-3000:]}"
        assert "Traceback" not in node.log_text(), node.log_text()[-3000:]


# ----------------------------------------------------------------------------- the tests


def test_the_six_bytes_that_ended_nodes(nodes: list[NodeProcess]) -> None:
    batch = [
        Attack(i, protocol, bytes.fromhex("05ffffffffff"))
        for i in range(len(nodes))
        for protocol in MESHSUB
    ]
    spoken = trio.run(_attack, nodes, batch)
    _check(nodes)
    unfuzzed = {p for p in spoken if p.startswith("/") and p not in FUZZED}
    assert not unfuzzed, f"protocols the nodes speak that this test does not fuzz: {unfuzzed}"


@settings(
    max_examples=int(os.environ.get("DKMS_FUZZ_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(attacks(), min_size=10, max_size=30))
def test_no_peer_bytes_end_a_node(nodes: list[NodeProcess], batch: list[Attack]) -> None:
    trio.run(_attack, nodes, batch)
    _check(nodes)
