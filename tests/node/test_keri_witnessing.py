"""keripy's witness surface (`POST /`, `POST /receipts`, `GET /receipts`, the mailbox) over
real HTTP on 127.0.0.1, on a real witness node (libp2p host, SQLite store), with events and
queries signed as kli signs them (JSON bodies, qb64 attachments in `CESR-ATTACHMENT`).

The identifier names two witnesses: the node, and a key of the test's (`OTHER`) whose
receipts the test makes itself, as kli relays another witness's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from dkms.node.config import NodeConfig
from dkms.node.http import HttpApp, HttpLimits, serve_http
from dkms.node.http.mailbox import Mailboxes
from dkms.node.http.witnessing import KeriWitness
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.keys import node_signer, seed
from dkms.node.testing.localnet import LOOPBACK, start_node
from dkms.protocol import cesr
from dkms.protocol.attachments import Attachments
from dkms.protocol.crypto import Signer, next_key_digest, verify
from dkms.protocol.events import Event, Kind, incept, interact, receipt
from dkms.protocol.queries import mailbox_query
from dkms.protocol.replies import loc_scheme
from dkms.protocol.stream import messagize

from .test_http_app import fetch

DT = "2026-12-05T19:02:46.953616+00:00"
OTHER = node_signer(37)  # the identifier's second witness: not running, the test signs for it
KEYS = [Signer(seed(n)) for n in (1, 2)]  # current and next keys of the identifier


@dataclass
class Ctl:
    """The identifier: its events so far."""

    events: list[Event]

    @property
    def prefix(self) -> str:
        return self.events[0].prefix


def signed(event: Event, signer: Signer = KEYS[0]) -> str:
    """The `-A` attachment text of `event` signed by `signer` at index 0."""
    return Attachments(sigs=(signer.sign_indexed(event.raw, 0),)).qb64()


def headers(
    attachments: str | None, to: str, kind: str = "application/cesr+json"
) -> dict[str, str]:
    found = {"Content-Type": kind, "Cesr-Destination": to}
    if attachments is not None:
        found["Cesr-Attachment"] = attachments
    return found


def mailbox(pre: str, at: int, witness: str, signer: Signer = KEYS[0]) -> tuple[bytes, str]:
    query = mailbox_query(
        [signer], pre, {"/receipt": at, "/replay": 0, "/reply": 0}, DT, src=witness
    )
    return query.message.raw, query.endorsements.qb64()


class Stream:
    """A server-sent-event answer read as it comes (HTTP/1.1 chunked, by hand)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.buffer, self.status, self.head = stream, b"", 0, b""

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the stream")
        self.buffer += data

    async def start(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status = int(self.head.split(b" ", 2)[1])

    async def chunk(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._more()
        size_line, rest = self.buffer.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            await self._more()
            size_line, rest = self.buffer.split(b"\r\n", 1)
        self.buffer = rest[size + 2 :]
        return rest[:size]

    async def block(self) -> dict[str, str]:
        """The next server-sent event, as field -> value."""
        text = b""
        while not text.endswith(b"\n\n"):
            text += await self.chunk()
        fields = {}
        for line in text.decode().strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        return fields


@asynccontextmanager
async def posted(port: int, body: bytes, head: dict[str, str]) -> AsyncIterator[Stream]:
    """A request left open: its answer read as a stream."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        lines = ["POST / HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in head.items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        yield Stream(stream)


@asynccontextmanager
async def witness(tmp_path: Path, **bounds: float) -> AsyncIterator[tuple[int, str, Runtime]]:
    """A witness node and its keripy routes on 127.0.0.1: the port, its prefix, its runtime."""
    async with trio.open_nursery() as nursery:
        runtimes: dict[str, Runtime] = {}
        host = await start_node(
            nursery, NodeConfig(data_dir=tmp_path / "w", listen=LOOPBACK), runtimes
        )
        runtime = runtimes[host.prefix]
        boxes = Mailboxes(runtime, host.prefix, timeout=5.0, **bounds)  # type: ignore[arg-type]
        routes = KeriWitness(runtime, host.prefix, timeout=5.0, mailboxes=boxes).routes()
        url: str = await nursery.start(
            serve_http, HttpApp(runtime, routes, HttpLimits()), "127.0.0.1", 0
        )
        yield int(url.rsplit(":", 1)[1]), host.prefix, runtime
        nursery.cancel_scope.cancel()


def inception(w: str) -> Event:
    return incept(
        [KEYS[0].verfer],
        next_digests=[next_key_digest(KEYS[1].verfer)],
        witnesses=[w, OTHER.verfer],
        toad=1,
        kind=Kind.JSON,
    )


def own_receipt(event: Event, w: Signer | str, sig: bytes) -> bytes:
    prefix = w if isinstance(w, str) else w.verfer
    rct = receipt(event.prefix, event.sn, event.said, kind=Kind.JSON)
    return messagize(rct, Attachments(couples=((prefix, sig),)))


async def test_events_receipts_and_the_mailbox(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with witness(tmp_path, settle=2.0, per_client=2) as (port, w, runtime):
            icp = inception(w)
            pre = icp.prefix
            # keripy's checks, in its order.
            got = await fetch(port, "/", "POST", icp.raw, headers(signed(icp), w, "text/plain"))
            assert got.status == 406 and "not application/cesr+json" in got.error
            got = await fetch(port, "/", "POST", b"{not json", headers(signed(icp), w))
            assert got.status == 400 and got.error.startswith("malformed JSON")
            got = await fetch(port, "/", "POST", icp.raw, headers(None, w))
            assert got.status == 412 and "CESR-ATTACHMENT" in got.error
            got = await fetch(port, "/", "POST", icp.raw, headers(signed(icp), OTHER.verfer))
            assert got.status == 400 and "is not this witness" in got.error
            assert runtime.role.validator.kel(pre) is None  # type: ignore[attr-defined]

            # kli polls the mailbox as it posts the inception: the query waits for it.
            body, atc = mailbox(pre, 0, w)
            async with posted(port, body, headers(atc, w)) as first:
                got = await fetch(
                    port, "/", "POST", icp.raw, headers(signed(icp), w, "application/cesr")
                )
                assert got.status == 204 and got.body == b""
                assert "content-length" not in got.headers
                await first.start()
                assert first.status == 200 and b"text/event-stream" in first.head
                assert await first.block() == {"retry": "5000"}
                block = await first.block()
                assert block["id"] == "0" and block["event"] == "/receipt"
                data = block["data"].encode()
                sig = cesr.decode(data[-88:].decode())[1]
                assert verify(cesr.decode_key(w), sig, icp.raw)
                assert data == own_receipt(icp, w, sig)
                # the same event again (kli sends it replayed, then as signed): held, 204
                got = await fetch(port, "/", "POST", icp.raw, headers(signed(icp), w))
                assert got.status == 204

                # A new event's receipt comes down the open stream.
                ixn = interact(pre, prior=icp.said, sn=1, anchors=[{"n": 1}], kind=Kind.JSON)
                got = await fetch(port, "/", "POST", ixn.raw, headers(signed(ixn), w))
                assert got.status == 204
                block = await first.block()
                assert block["id"] == "1" and block["event"] == "/receipt"

                # POST /receipts answers the same receipt (held already: receipted again)
                got = await fetch(port, "/receipts", "POST", ixn.raw, headers(signed(ixn), w))
                assert got.status == 200 and got.headers["content-type"] == "application/json+cesr"
                assert got.body == block["data"].encode()

                # per client: two streams at most (this one, the next), the third refused
                body, atc = mailbox(pre, 1, w)
                async with posted(port, body, headers(atc, w)) as second:
                    await second.start()
                    assert await second.block() == {"retry": "5000"}
                    assert (await second.block())["id"] == "1"  # resumed where it was asked
                    got = await fetch(port, "/", "POST", body, headers(atc, w))
                    assert got.status == 429 and "2 mailbox streams open" in got.error

            # An other witness's receipt, relayed as kli does (-B, indexed in the list)
            other_sig = OTHER.sign_raw(icp.raw)
            rct = receipt(pre, 0, icp.said, kind=Kind.JSON)
            wigs = Attachments(wigs=(cesr.IndexedSig(1, None, other_sig),)).qb64()
            got = await fetch(port, "/", "POST", rct.raw, headers(wigs, w))
            assert got.status == 200 and got.body == b""
            got = await fetch(port, f"/receipts?pre={pre}&sn=0")
            assert got.status == 200 and got.headers["content-type"] == "application/json+cesr"
            assert got.body.startswith(rct.raw + b"-BAC")
            assert got.body.endswith(cesr.IndexedSig(1, None, other_sig).qb64().encode())
            assert (await fetch(port, f"/receipts?pre={pre}&said={icp.said}")).body == got.body
            bad = Attachments(wigs=(cesr.IndexedSig(1, None, OTHER.sign_raw(b"x")),)).qb64()
            got = await fetch(port, "/", "POST", rct.raw, headers(bad, w))
            assert got.status == 400 and "no receipt verified" in got.error
            for query, status in (
                ("sn=0", 400), (f"pre={pre}", 400), (f"pre={pre}&sn=x", 400),
                (f"pre={pre}&sn=9", 404), (f"pre=E{'A' * 43}&sn=0", 404),
            ):  # fmt: skip
                got = await fetch(port, f"/receipts?{query}")
                assert got.status == status, (query, got.body)

            # Replies are read and answered 204; garbage ones, 400.
            reply = loc_scheme(OTHER, "http://127.0.0.1:1/", DT)
            got = await fetch(
                port, "/", "POST", reply.message.raw, headers(reply.endorsements.qb64(), w)
            )
            assert got.status == 204
            got = await fetch(port, "/", "POST", reply.message.raw[:-3] + b'x"}}', headers("", w))
            assert got.status == 400 and got.error.startswith("reply does not read")

            # Queries: unsigned 401; signed by keys that are not the identifier's, 403.
            body, atc = mailbox(pre, 0, w)
            got = await fetch(port, "/", "POST", body, headers("", w))
            assert got.status == 401 and "not signed by its requester" in got.error
            body, atc = mailbox(pre, 0, w, signer=KEYS[1])
            got = await fetch(port, "/", "POST", body, headers(atc, w))
            assert got.status == 403 and got.error.startswith("mailbox query refused")
            body, atc = mailbox("E" + "A" * 43, 0, w)
            got = await fetch(port, "/", "POST", body, headers(atc, w))
            assert got.status == 404

            # An identifier that does not name this witness: /receipts says so
            alone = incept(
                [KEYS[0].verfer], next_digests=[next_key_digest(KEYS[1].verfer)],
                witnesses=[OTHER.verfer], toad=1, kind=Kind.JSON,
            )  # fmt: skip
            got = await fetch(port, "/receipts", "POST", alone.raw, headers(signed(alone), w))
            assert got.status == 202  # unknown to us and not receipted: escrowed, as keripy's
            full = Attachments(
                sigs=(KEYS[0].sign_indexed(alone.raw, 0),),
                wigs=(cesr.IndexedSig(0, None, OTHER.sign_raw(alone.raw)),),
            ).qb64()
            got = await fetch(port, "/receipts", "POST", alone.raw, headers(full, w))
            assert got.status == 400 and "not a designated witness" in got.error
            got = await fetch(port, "/receipts", "POST", rct.raw, headers(wigs, w))
            assert got.status == 400 and "invalid event type 'rct'" in got.error
            got = await fetch(port, "/", "POST", json.dumps({"t": "vcp"}).encode(), headers("", w))
            assert got.status == 400 and "'vcp' is not served" in got.error
