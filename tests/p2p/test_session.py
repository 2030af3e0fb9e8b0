"""Sessions (node/p2p/session.py) between real hosts on 127.0.0.1: one stream per peer carries
every request, answers come back as they are ready, and nothing a peer writes on it ends more
than that session. What sessions share with per-request streams (answers, refusals, limits,
BUSY, timeouts) is tested both ways in test_reqresp.py."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from libp2p.custom_types import TProtocol

from dkms.node.p2p import HostConfig, P2PHost, Refused, RequestTimeout, Response, open_host
from dkms.node.p2p.reqresp import Handler
from dkms.node.p2p.session import MAX_SESSIONS_PER_PEER, SESSION_PROTOCOL
from dkms.node.p2p.sessionframes import (
    ANSWER_HEAD,
    MAX_SESSION_REQUEST,
    NO_HANDLER,
    REQUEST_HEAD,
    SessionViolation,
    decode_answer_head,
    decode_protocol,
    decode_request_head,
    encode_answer,
    encode_request,
)
from dkms.node.roles.codes import Code

ECHO = "/dkms/1/echo"
SLOW = "/dkms/1/slow"
LIMIT = 30  # seconds any test may take


@asynccontextmanager
async def pair(
    first: HostConfig | None = None, second: HostConfig | None = None
) -> AsyncIterator[tuple[P2PHost, P2PHost]]:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_host(b"\x01" * 32, config=first))
        b = await stack.enter_async_context(open_host(b"\x02" * 32, config=second))
        b.handle(ECHO, echo)
        yield a, b


async def echo(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
    return Code.OK, payload, ""


def streams_between(a: P2PHost, b: P2PHost) -> int:
    """Streams open on a's one connection to b (py-libp2p's Yamux bookkeeping)."""
    [conn] = a.libp2p.get_network().connections[b.peer_id]
    return sum(not s.closed for s in conn.muxed_conn.streams.values())


async def test_many_requests_share_one_stream_and_answers_overtake() -> None:
    release = trio.Event()

    async def slow(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        await release.wait()
        return Code.OK, b"slow " + payload, ""

    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle(SLOW, slow)
            answers: list[Response] = []

            async def ask_slow() -> None:
                answers.append(await a.request(b.introduction, SLOW, b"first"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_slow)
                # 200 quick ones, 50 at a time, while the slow one waits: none waits on it.
                for start in range(0, 200, 50):
                    async with trio.open_nursery() as burst:
                        for n in range(start, start + 50):
                            burst.start_soon(lambda n=n: a.request(b.introduction, ECHO, b"%d" % n))
                assert answers == []
                assert b._session_server.sessions == 1
                # One session stream (plus gossip's and identify's, not one per request).
                assert streams_between(a, b) <= 4
                release.set()
            assert answers == [Response(Code.OK, b"slow first", "")]


async def test_an_answer_after_the_deadline_is_dropped_and_the_session_goes_on() -> None:
    release = trio.Event()
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle(SLOW, answering_late(release))
            with pytest.raises(RequestTimeout):
                await a.request(b.introduction, SLOW, b"", timeout=0.3)
            release.set()
            # The late answer arrives on the session and nobody takes it for this one.
            for n in range(5):
                assert await a.request(b.prefix, ECHO, b"%d" % n) == (Code.OK, b"%d" % n, "")
            assert b._session_server.sessions == 1


async def test_a_protocol_not_served_is_refused_as_on_a_stream() -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            with pytest.raises(Refused, match="does not serve /dkms/1/nonesuch"):
                await a.request(b.introduction, "/dkms/1/nonesuch", b"?")
            assert await a.request(b.prefix, ECHO, b"ok") == (Code.OK, b"ok", "")


async def test_a_peer_without_sessions_is_asked_on_streams() -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.libp2p.get_mux().handlers.pop(TProtocol(SESSION_PROTOCOL))  # an older node
            for n in range(3):
                assert await a.request(b.introduction, ECHO, b"%d" % n) == (Code.OK, b"%d" % n, "")
            assert b._session_server.sessions == 0
            assert b.peer_id in a._without_sessions


def answering_late(release: trio.Event) -> Handler:
    """A handler that answers `late` once `release` is set."""

    async def slow(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        await release.wait()
        return Code.OK, b"late", ""

    return slow


def hanging(entered: trio.Event) -> Handler:
    """A handler that never answers; `entered` is set once it is called."""

    async def hang(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError

    return hang


async def test_a_lost_connection_fails_waiting_requests_and_the_next_one_redials() -> None:
    entered = trio.Event()
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle(SLOW, hanging(entered))
            failures: list[Exception] = []

            async def waiting() -> None:
                try:
                    await a.request(b.introduction, SLOW, b"", timeout=20)
                except Exception as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting)
                await entered.wait()
                start = trio.current_time()
                await b.libp2p.disconnect(a.peer_id)
            assert trio.current_time() - start < 5  # not the request's 20 s
            assert len(failures) == 1 and type(failures[0]).__name__ in {
                "PeerUnreachable",
                "Refused",
            }
            assert await a.request(b.introduction, ECHO, b"again") == (Code.OK, b"again", "")


async def test_a_full_host_answers_busy_on_sessions() -> None:
    both_held = trio.Event()
    release = trio.Event()
    held: list[bytes] = []

    async def hold(peer: str, payload: bytes) -> tuple[Code, bytes, str]:
        held.append(payload)
        if len(held) == 2:
            both_held.set()
        await release.wait()
        return Code.OK, b"held", ""

    with trio.fail_after(LIMIT):
        async with pair(None, HostConfig(max_inbound_requests=2)) as (a, b):
            b.handle(SLOW, hold)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.request, b.introduction, SLOW, b"1")
                nursery.start_soon(a.request, b.introduction, SLOW, b"2")
                await both_held.wait()  # no slot left
                busy = await a.request(b.prefix, ECHO, b"3")
                assert busy == Response(Code.BUSY, b"", "too many requests in progress")
                release.set()
            assert await a.request(b.prefix, ECHO, b"4") == (Code.OK, b"4", "")


async def raw_session(a: P2PHost, b: P2PHost) -> object:
    await a.connect([b.introduction])
    return await a.libp2p.new_stream(b.peer_id, [TProtocol(SESSION_PROTOCOL)])


async def test_garbage_on_a_session_ends_that_session_only() -> None:
    with trio.fail_after(LIMIT):
        async with pair(None, HostConfig(read_timeout=0.5)) as (a, b):
            bad = [
                REQUEST_HEAD.pack(7, MAX_SESSION_REQUEST + 1, 5) + b"/x/yz",  # too long
                REQUEST_HEAD.pack(7, 3, 0) + b"abc",  # no protocol name
                REQUEST_HEAD.pack(7, 0, 2) + b"\xff\xfe",  # not ASCII
                REQUEST_HEAD.pack(7, 100, 13) + b"/dkms/1/echo",  # never completes
            ]
            for frame in bad:
                stream = await raw_session(a, b)
                await stream.write(frame)  # type: ignore[attr-defined]
                with trio.move_on_after(3):  # each ends with a reset (or read deadline)
                    try:
                        while await stream.read(4096):  # type: ignore[attr-defined]
                            pass
                    except Exception:
                        pass
            assert b.faults.counts.get(SESSION_PROTOCOL, 0) == 3
            assert b._session_server.sessions <= 1
            assert await a.request(b.prefix, ECHO, b"fine") == (Code.OK, b"fine", "")


async def test_a_raw_session_gets_answers_by_id_and_no_handler() -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            stream = await raw_session(a, b)
            frames = encode_request(41, ECHO, b"hi") + encode_request(42, "/dkms/1/none", b"")
            await stream.write(frames)  # type: ignore[attr-defined]
            got = b""
            want = 2 * ANSWER_HEAD.size + 2
            while len(got) < want:
                got += await stream.read(4096)  # type: ignore[attr-defined]
            answers = {}
            while got:  # in whichever order they were ready
                head = ANSWER_HEAD.unpack(got[: ANSWER_HEAD.size])
                answers[head[0]] = (head, got[ANSWER_HEAD.size :][: head[2]])
                got = got[ANSWER_HEAD.size + head[2] :]
            assert answers == {41: ((41, Code.OK, 2, 0), b"hi"), 42: ((42, NO_HANDLER, 0, 0), b"")}


# ----------------------------------------------------------------------------- frames alone


@given(st.integers(0, 2**32 - 1), st.text(alphabet="/abcdkms1._-", min_size=1, max_size=80),
       st.binary(max_size=600))  # fmt: skip
def test_request_frames_round_trip(request_id: int, protocol: str, payload: bytes) -> None:
    frame = encode_request(request_id, protocol, payload)
    rid, length, name_length = decode_request_head(frame[: REQUEST_HEAD.size])
    rest = frame[REQUEST_HEAD.size :]
    assert (rid, decode_protocol(rest[:name_length]), rest[name_length:]) == (
        request_id,
        protocol,
        payload,
    )
    assert length == len(payload)


@given(st.binary(min_size=REQUEST_HEAD.size, max_size=REQUEST_HEAD.size), st.binary(max_size=40))
def test_any_request_head_reads_or_is_a_violation(head: bytes, name: bytes) -> None:
    try:
        _, length, name_length = decode_request_head(head)
        decode_protocol(name)
    except SessionViolation:
        return
    assert length <= MAX_SESSION_REQUEST and name_length > 0


@given(st.binary(min_size=ANSWER_HEAD.size, max_size=ANSWER_HEAD.size), st.integers(0, 1 << 21))
def test_any_answer_head_reads_or_names_its_violation(head: bytes, limit: int) -> None:
    request_id, body, violation = decode_answer_head(head, limit)
    assert request_id == struct.unpack(">I", head[:4])[0]
    if violation:
        assert body == 0
    else:
        assert body <= limit + 1024


def test_answers_carry_no_reason_when_ok() -> None:
    frame = encode_answer(5, Code.OK, b"x", "ignored")
    assert ANSWER_HEAD.unpack(frame[: ANSWER_HEAD.size]) == (5, Code.OK, 1, 0)
    frame = encode_answer(6, Code.REFUSED, b"", "why")
    assert ANSWER_HEAD.unpack(frame[: ANSWER_HEAD.size]) == (6, Code.REFUSED, 0, 3)
    with pytest.raises(ValueError, match="protocol name"):
        encode_request(1, "", b"")


async def test_queries_go_on_streams_of_their_own() -> None:
    """Their answers can be 1 MiB KEL pages, which on a session would hold up the rest."""
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle("/dkms/1/query", echo)
            big = bytes(200_000)
            assert await a.request(b.introduction, "/dkms/1/query", big) == (Code.OK, big, "")
            assert b._session_server.sessions == 0
            assert await a.request(b.prefix, ECHO, b"x") == (Code.OK, b"x", "")
            assert b._session_server.sessions == 1


async def test_a_session_silent_past_a_deadline_is_replaced() -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle(SLOW, hanging(trio.Event()))
            assert await a.request(b.introduction, ECHO, b"1") == (Code.OK, b"1", "")
            first = a._sessions[b.peer_id]
            with pytest.raises(RequestTimeout):
                await a.request(b.prefix, SLOW, b"", timeout=0.3)
            assert first.ended is not None and "no answer" in first.ended
            assert await a.request(b.prefix, ECHO, b"2") == (Code.OK, b"2", "")
            assert a._sessions[b.peer_id] is not first


async def test_a_slow_answer_does_not_end_a_session_that_answers_others() -> None:
    release = trio.Event()
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            b.handle(SLOW, answering_late(release))
            assert await a.request(b.introduction, ECHO, b"0") == (Code.OK, b"0", "")
            session = a._sessions[b.peer_id]
            failed: list[BaseException] = []

            async def ask_slow() -> None:
                try:
                    await a.request(b.prefix, SLOW, b"", timeout=1.0)
                except RequestTimeout as exc:
                    failed.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_slow)
                await trio.lowlevel.checkpoint()
                with trio.move_on_after(1.5):  # answers keep coming while it waits
                    while True:
                        await a.request(b.prefix, ECHO, b"x")
            assert len(failed) == 1
            assert session.ended is None and a._sessions[b.peer_id] is session
            release.set()


async def test_a_peers_sessions_are_bounded_and_a_new_one_ends_the_oldest() -> None:
    with trio.fail_after(LIMIT):
        async with pair() as (a, b):
            streams = [await raw_session(a, b) for _ in range(MAX_SESSIONS_PER_PEER + 2)]
            await streams[-1].write(encode_request(1, ECHO, b"hi"))  # type: ignore[attr-defined]
            got = await streams[-1].read(4096)  # type: ignore[attr-defined]
            assert got.endswith(b"hi")  # the newest is served ...
            assert b._session_server.sessions == MAX_SESSIONS_PER_PEER
            with pytest.raises(Exception):  # noqa: B017 - ... the oldest was reset
                await streams[0].write(encode_request(1, ECHO, b"hi"))  # type: ignore[attr-defined]
                while await streams[0].read(4096):  # type: ignore[attr-defined]
                    pass
            assert await a.request(b.prefix, ECHO, b"ok") == (Code.OK, b"ok", "")
