"""keripy's read routes (`/ksn`, `/log`, `/query`) over real HTTP on 127.0.0.1, from a real
witness (libp2p hosts, SQLite stores) holding a KEL with an interaction, a rotation that cuts a
witness, and an interaction after it: the key state notice is keripy's record, signed by the
witness; the KEL streams are the events held, from where they were asked; refusals are one
line each."""

from __future__ import annotations

from pathlib import Path

import trio

from dkms.node.http import HttpLimits, node_app, serve_http
from dkms.node.http.kelreads import CESR, JSON_CESR
from dkms.node.testing.keys import seed
from dkms.protocol.crypto import Signer, verify
from dkms.protocol.replies import KSN_FIELDS, read_reply
from dkms.protocol.routed import check_endorsement
from dkms.protocol.stream import Message, parse_stream

from .test_duplicity_network import incept_and_interact, network
from .test_http_app import fetch

DT = "2025-01-01T00:00:00.000000+00:00"
UNKNOWN = "E" + "A" * 43


def events_of(body: bytes) -> list[Message]:
    return [f for f in parse_stream(body) if isinstance(f, Message)]


async def test_key_state_notices_and_kels_as_keripy_reads_them(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with network(tmp_path) as net, trio.open_nursery() as nursery:
            witness = net.witnesses[0].prefix
            runtime = net.runtimes[witness]
            signer = runtime.role.signer
            assert isinstance(signer, Signer)
            app = node_app(
                runtime,
                witness,
                watcher=False,
                limits=HttpLimits(),
                timeout=10.0,
                oobi=(signer, lambda: "http://127.0.0.1:1/", DT),
            )
            url: str = await nursery.start(serve_http, app, "127.0.0.1", 0)
            port = int(url.rsplit(":", 1)[1])

            alice = await incept_and_interact(net, "alice", 1, "hello")
            ctl = net.client.controller
            cut = net.witnesses[3].prefix
            rot = ctl.rotate("alice", [seed(3)], now=net.client.runtime.now(), cuts=[cut], toad=2)
            await net.client.witnessed(rot, ctl.identity("alice").last_said)
            rot_said = ctl.identity("alice").last_said
            ixn = ctl.interact("alice", [{"d": "after"}], now=net.client.runtime.now())
            await net.client.witnessed(ixn, ctl.identity("alice").last_said)
            role = runtime.role
            await net.until(lambda: role.key_state(alice)["sn"] == 3)
            await net.until(lambda: bool(role.key_state(alice)["fully_witnessed"]))
            held = ctl.identity("alice")

            got = await fetch(port, f"/ksn?pre={alice}")
            assert got.status == 200, got.body
            assert got.headers["content-type"] == CESR
            size = int(got.body[16:22], 16)
            reply = read_reply(got.body[:size], got.body[size:])
            assert reply.message.route == f"/ksn/{witness}"
            endorsements = reply.endorsements
            endorsed = check_endorsement(reply.message.raw, endorsements, witness, None, verify)
            assert endorsed.ok, endorsed
            record = reply.message.ked["a"]
            assert tuple(record) == KSN_FIELDS
            kel = events_of((await fetch(port, f"/log?pre={alice}")).body)
            assert [m.event.sn for m in kel] == [0, 1, 2, 3]
            assert record["i"] == alice and record["s"] == "3" and record["f"] == "3"
            assert record["d"] == held.last_said and record["p"] == rot_said
            assert record["et"] == "ixn" and record["vn"] == [1, 0]
            assert record["k"] == [Signer(seed(2)).verfer]
            assert record["b"] == [w.prefix for w in net.witnesses[:3]] and record["bt"] == "2"
            assert record["ee"] == {"s": "2", "d": rot_said, "br": [cut], "ba": []}
            assert record["di"] == "" and record["c"] == []
            assert record["dt"] == reply.message.ked["dt"]

            # /log from a first-seen ordinal (hex); /query from an sn (decimal).
            got = await fetch(port, f"/log?pre={alice}&fn=2&s=3")
            assert got.status == 200 and got.headers["content-type"] == CESR
            assert [m.event.sn for m in events_of(got.body)] == [2, 3]
            assert events_of(got.body)[0].attachments.sigs
            got = await fetch(port, f"/query?typ=kel&pre={alice}&sn=1")
            assert got.status == 200 and got.headers["content-type"] == JSON_CESR
            assert [m.event.sn for m in events_of(got.body)] == [1, 2, 3]
            whole = await fetch(port, f"/query?typ=kel&pre={alice}")
            assert [m.event.said for m in events_of(whole.body)] == [m.event.said for m in kel]
            assert kel[2].event.ked["br"] == [cut]

            for path, status in (
                (f"/ksn?pre={UNKNOWN}", 404),
                ("/ksn", 400),
                ("/ksn?pre=nonsense", 400),
                (f"/log?pre={UNKNOWN}", 404),
                (f"/log?pre={alice}&s=4", 404),
                (f"/log?pre={alice}&s=0x1", 400),
                (f"/log?pre={alice}&fn=-1", 400),
                (f"/log?pre={alice}&fn=9", 404),
                (f"/log?pre={alice}&a=EAnchor", 400),
                ("/query", 400),
                (f"/query?typ=tel&reg={alice}", 400),
                (f"/query?typ=what&pre={alice}", 400),
                ("/query?typ=kel", 400),
                (f"/query?typ=kel&pre={alice}&sn=4", 400),
                (f"/query?typ=kel&pre={alice}&sn=1_0", 400),
                (f"/query?typ=kel&pre={UNKNOWN}", 404),
            ):
                refused = await fetch(port, path)
                assert refused.status == status, (path, refused.status, refused.body)
                assert refused.error

            # A watcher answers a state query about an identifier it holds nothing of with its
            # standing and no sn: that is a 404 too (it was a 500, found by test_http_fuzz).
            watcher = net.watchers[0].prefix
            wsigner = net.runtimes[watcher].role.signer
            assert isinstance(wsigner, Signer)
            watched = node_app(
                net.runtimes[watcher],
                watcher,
                watcher=True,
                limits=HttpLimits(),
                timeout=10.0,
                oobi=(wsigner, lambda: "http://127.0.0.1:1/", DT),
            )
            url = await nursery.start(serve_http, watched, "127.0.0.1", 0)
            wport = int(url.rsplit(":", 1)[1])
            for path in (f"/log?pre={UNKNOWN}&s=1", f"/ksn?pre={UNKNOWN}", f"/log?pre={UNKNOWN}"):
                refused = await fetch(wport, path)
                assert refused.status == 404, (path, refused.status, refused.body)
                assert "here" in refused.error, refused.error  # ours, not "no such route"
            nursery.cancel_scope.cancel()
