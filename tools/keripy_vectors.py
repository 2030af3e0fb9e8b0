"""Generate byte-exact KERI test vectors with keripy, the reference implementation.

Run (from anywhere; needs keri==1.3.6 on Python >= 3.12.2, kept in its own venv):

    python3 tools/keripy_env.py          # builds .venv-keripy/ once (tools/keripy_env.py)
    .venv-keripy/bin/python tools/keripy_vectors.py

It writes tests/vectors/keripy-seeded/vectors.json and then re-reads that file
with keripy to check it.  The project itself never imports keri: this script is
only a dev tool, and the JSON it writes is what the tests consume.

All keys come from fixed test-only seeds, seed(n) = bytes([n]) * 32, so every
value is reproducible (Ed25519 signatures are deterministic) and re-running
yields identical bytes.  Seed numbers used:
    1-3 single-key KEL, 4-9 three-key KEL, 10-15 weighted KEL,
    16-18 witnessed KEL, 20-21 delegator, 22-24 delegate, 0x30 non-transferable,
    0x41-0x45 witnesses (non-transferable), 0x50.. long KEL, 0x60.. witnessed stream,
    0x70-0x72 watched KEL (witnesses 0x41-0x44).

Each case record holds: name, kind, ilk, ked (as keripy built it), raw_b64 (body),
said, signer/next/witness seeds (hex, in ked order), sigs_qb64 (controller Sigers,
index = position in k), attachments (qb64 text messagize() appends) and
message_b64 (body + attachments).  Notes on the less obvious fields:
    witness_seeds_hex     for rot: the witness list *after* applying br/ba.
    witness_receipt_couples  rct of the event with a -C couple per witness.
    witness_indexed_sigs  event with controller -A sigs plus witness -B sigs (index =
                          position in the witness list in force after the event).
    rct cases             sigs sign the *receipted* event's raw, not the rct body;
                          signer_seeds_hex is empty, receiptor_seeds_hex says who.
    dip/drt cases         also carry the -G source seal couple of the delegating event.
Each stream holds the concatenated messages and keripy's final key state record
(minus its wall-clock "dt") for every AID, after a fresh Kevery parsed the stream.

"watched" is a CBOR KEL (key 0x70, next 0x71, four witnesses, toad 3) for our own
witnesses to receipt and watch, so its messages carry controller -A sigs only:
    kel_b64               icp + ixn sn 1.
    ixn_a_b64, ixn_b_b64  two different ixn at sn 2 after ixn sn 1 (duplicity).
    rot_b64               rot at sn 2 by the pre-rotated key 0x71 (next 0x72), which
                          keripy accepts as a recovery superseding an ixn at sn 2.
"""

import base64
import json
import sys
from dataclasses import asdict
from pathlib import Path

import keri
from keri import kering
from keri.core import eventing, parsing, serdering
from keri.core.coring import Diger, MtrDex, Seqner
from keri.core.counting import Codens, Counter
from keri.core.eventing import SealEvent, messagize
from keri.core.indexing import Siger
from keri.core.signing import Signer, Verfer
from keri.db import basing
from keri.kering import Ilks, Kinds, TraitDex

OUT = Path(__file__).resolve().parents[1] / "tests/vectors/keripy-seeded/vectors.json"
SAID = MtrDex.Blake3_256  # force self-addressing prefixes; keripy defaults to key-as-prefix
WITS = [0x41, 0x42, 0x43]
WATCH_WITS = [0x41, 0x42, 0x43, 0x44]


def seed(n):
    return bytes([n]) * 32


def signer(n, transferable=True):
    return Signer(raw=seed(n), transferable=transferable)


def keys(*ns):
    return [signer(n).verfer.qb64 for n in ns]


def wits(*ns):
    return [signer(n, transferable=False).verfer.qb64 for n in ns]


def ndigs(*ns):
    return [Diger(ser=signer(n).verfer.qb64b, code=SAID).qb64 for n in ns]


def hexes(ns):
    return [seed(n).hex() for n in ns]


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def sign(raw, ns, transferable=True):
    # Ed25519 signatures depend only on the seed, so a transferable and a
    # non-transferable Signer over the same seed give the same Siger bytes.
    return [signer(n, transferable).sign(raw, index=i) for i, n in enumerate(ns)]


def seal(serder):
    return dict(i=serder.pre, s=serder.snh, d=serder.said)


def source_couple(anchor):
    # keripy appends this -G couple (sn + said of the delegating event) after the
    # controller sigs of a dip/drt so a validator can find the anchoring seal.
    return (
        Counter(Codens.SealSourceCouples, count=1, gvrsn=kering.Vrsn_1_0).qb64b
        + Seqner(sn=anchor.sn).qb64b
        + anchor.said.encode()
    )


def event_msg(serder, cur, wit_ns=(), anchor=None):
    """Full stream message: body, -A controller sigs, -B witness sigs, -G source."""
    wigers = sign(serder.raw, wit_ns, transferable=False) or None
    msg = messagize(serder, sigers=sign(serder.raw, cur), wigers=wigers)
    if anchor is not None:
        msg.extend(source_couple(anchor))
    return msg


def witness_receipt(serder, wit_ns):
    rct = eventing.receipt(serder.pre, serder.sn, serder.said, kind=serder.kind)
    cigars = [signer(w, transferable=False).sign(serder.raw) for w in wit_ns]
    return messagize(rct, cigars=cigars)


def case(name, serder, cur=(), nxt=(), wit_ns=(), msg=None, **extra):
    sigers = sign(serder.raw, cur)
    if msg is None:
        msg = messagize(serder, sigers=sigers)
    rec = dict(
        name=name,
        kind=serder.kind,
        ilk=serder.ilk,
        ked=serder.ked,
        raw_b64=b64(serder.raw),
        said=serder.said,
        signer_seeds_hex=hexes(cur),
        next_seeds_hex=hexes(nxt),
        witness_seeds_hex=hexes(wit_ns),
        sigs_qb64=[s.qb64 for s in sigers],
        attachments=bytes(msg[len(serder.raw) :]).decode(),
        message_b64=b64(msg),
    )
    if wit_ns:
        rec["witness_receipt_couples"] = b64(witness_receipt(serder, wit_ns))
        rec["witness_indexed_sigs"] = b64(event_msg(serder, cur, wit_ns))
    rec.update(extra)
    return rec


def delegation(dgr_kind, dge_kind):
    """Delegator KEL interleaved with a delegate's dip/ixn/drt, in stream order.

    Returns (serder, current seeds, anchoring delegator event or None) tuples."""
    dgr = eventing.incept(keys(20), ndigs=ndigs(21), code=SAID, kind=dgr_kind)
    dip = eventing.incept(keys(22), ndigs=ndigs(23), delpre=dgr.pre, code=SAID, kind=dge_kind)
    a1 = eventing.interact(dgr.pre, dgr.said, sn=1, data=[seal(dip)], kind=dgr_kind)
    dixn = eventing.interact(dip.pre, dip.said, sn=1, kind=dge_kind)
    drt = eventing.rotate(
        dip.pre, keys(23), dixn.said, ilk=Ilks.drt, sn=2, ndigs=ndigs(24), kind=dge_kind
    )
    a2 = eventing.interact(dgr.pre, a1.said, sn=2, data=[seal(drt)], kind=dgr_kind)
    return [
        (dgr, [20], None),
        (a1, [20], None),
        (dip, [22], a1),
        (dixn, [22], None),
        (a2, [20], None),
        (drt, [23], a2),
    ]


def long_kel(kind, count=30):
    """Single-key KEL: rot at every 5th sn, ixn elsewhere (sn 26 -> "1a")."""
    base, rots = 0x50, 0
    ev = eventing.incept(keys(base), ndigs=ndigs(base + 1), code=SAID, kind=kind)
    out = [(ev, [base], ())]
    for sn in range(1, count):
        if sn % 5 == 0:
            rots += 1
            ev = eventing.rotate(
                ev.pre, keys(base + rots), ev.said, sn=sn, ndigs=ndigs(base + rots + 1), kind=kind
            )
        else:  # every third ixn anchors a digest seal so `a` is not always empty
            data = [dict(d=Diger(ser=b"payload %d" % sn, code=SAID).qb64)] if sn % 3 == 0 else []
            ev = eventing.interact(ev.pre, ev.said, sn=sn, data=data, kind=kind)
        out.append((ev, [base + rots], ()))
    return out


def witnessed_kel(kind):
    """Weighted multi-key KEL whose witness pool and thresholds change over time.

    Rotations reuse the prior next keys in the same order, so each Siger index is
    valid both for the current keys and for the prior `n` list."""
    w = list(WITS)
    ev = eventing.incept(
        keys(0x60, 0x61, 0x62),
        isith=["1/2"] * 3,
        ndigs=ndigs(0x63, 0x64, 0x65),
        nsith=[["1/2", "1/2"], ["1"]],
        toad=2,
        wits=wits(*w),
        code=SAID,
        kind=kind,
    )
    out = [(ev, [0x60, 0x61, 0x62], list(w))]
    # (sn, new keys, new kt, next keys, next nt, cuts, adds, toad); None = ixn
    plan = {
        2: ([0x63, 0x64, 0x65], [["1/2", "1/2"], ["1"]], [0x66, 0x67], "1", [0x41], [0x44], 2),
        4: ([0x66, 0x67], "2", [0x68], "1", [], [0x45], 3),
        7: ([0x68], "1", [0x69, 0x6A], ["1/2", "1/2"], [0x42, 0x43], [], 1),
    }
    cur = out[0][1]
    for sn in range(1, 9):
        if sn in plan:
            new, kt, nxt, nt, cuts, adds, toad = plan[sn]
            ev = eventing.rotate(
                ev.pre,
                keys(*new),
                ev.said,
                sn=sn,
                isith=kt,
                ndigs=ndigs(*nxt),
                nsith=nt,
                toad=toad,
                wits=wits(*w),
                cuts=wits(*cuts),
                adds=wits(*adds),
                kind=kind,
            )
            w = [x for x in w if x not in cuts] + adds
            cur = new
        else:
            ev = eventing.interact(ev.pre, ev.said, sn=sn, kind=kind)
        out.append((ev, cur, list(w)))
    return out


def watched_kel():
    """icp, ixn sn 1, two conflicting ixn at sn 2 and a recovery rot at sn 2."""
    kind, w = Kinds.cbor, wits(*WATCH_WITS)
    icp = eventing.incept(keys(0x70), ndigs=ndigs(0x71), toad=3, wits=w, code=SAID, kind=kind)
    ixn1 = eventing.interact(icp.pre, icp.said, sn=1, kind=kind)

    def ixn2(payload):
        data = [dict(d=Diger(ser=payload, code=SAID).qb64)]
        return eventing.interact(icp.pre, ixn1.said, sn=2, data=data, kind=kind)

    rot = eventing.rotate(
        icp.pre, keys(0x71), ixn1.said, sn=2, ndigs=ndigs(0x72), toad=3, wits=w, kind=kind
    )
    return icp, ixn1, ixn2(b"watched a"), ixn2(b"watched b"), rot


def build_watched():
    icp, ixn1, ixn_a, ixn_b, rot = watched_kel()

    def msg(serder, cur):
        return messagize(serder, sigers=sign(serder.raw, cur))

    return dict(
        witness_seeds_hex=hexes(WATCH_WITS),
        prefix=icp.pre,
        kel_b64=b64(msg(icp, [0x70]) + msg(ixn1, [0x70])),
        ixn_a_b64=b64(msg(ixn_a, [0x70])),
        ixn_b_b64=b64(msg(ixn_b, [0x70])),
        rot_b64=b64(msg(rot, [0x71])),
        saids=dict(icp=icp.said, ixn1=ixn1.said, ixn_a=ixn_a.said, ixn_b=ixn_b.said, rot=rot.said),
    )


def build_cases(kind):
    icp = eventing.incept
    e1 = icp(keys(1), ndigs=ndigs(2), code=SAID, kind=kind)
    e1b = icp(keys(1), ndigs=ndigs(2), kind=kind)  # no code: prefix is the key itself
    e2 = icp(keys(4, 5, 6), isith="2", ndigs=ndigs(7, 8, 9), nsith="2", code=SAID, kind=kind)
    e3 = icp(
        keys(10, 11, 12),
        isith=["1/2"] * 3,
        ndigs=ndigs(13, 14, 15),
        nsith=[["1/2", "1/2"], ["1"]],
        code=SAID,
        kind=kind,
    )
    eo = icp(
        keys(16),
        ndigs=ndigs(17),
        toad=2,
        wits=wits(*WITS),
        cnfg=[TraitDex.EstOnly],
        code=SAID,
        kind=kind,
    )
    dnd = icp(
        keys(16),
        ndigs=ndigs(17),
        toad=2,
        wits=wits(*WITS),
        cnfg=[TraitDex.DoNotDelegate],
        code=SAID,
        kind=kind,
    )
    nontrans = icp([signer(0x30, transferable=False).verfer.qb64], kind=kind)
    rot1 = eventing.rotate(e1.pre, keys(2), e1.said, sn=1, ndigs=ndigs(3), kind=kind)
    rotw = eventing.rotate(
        dnd.pre,
        keys(17),
        dnd.said,
        sn=1,
        ndigs=ndigs(18),
        toad=2,
        wits=wits(*WITS),
        cuts=wits(0x41),
        adds=wits(0x44),
        kind=kind,
    )
    ixn_seal = eventing.interact(e1.pre, rot1.said, sn=2, data=[seal(e2)], kind=kind)
    ixn_empty = eventing.interact(e1.pre, ixn_seal.said, sn=3, kind=kind)
    rct = eventing.receipt(e1.pre, e1.sn, e1.said, kind=kind)
    rct_nt = messagize(rct, cigars=[signer(0x41, transferable=False).sign(e1.raw)])
    rct_tr = messagize(rct, sigers=sign(e1.raw, [4, 5, 6]), seal=SealEvent(**seal(e2)))
    deleg = {ev.ilk: (ev, cur, anchor) for ev, cur, anchor in delegation(kind, kind)}
    ixn_1a, ixn_1a_cur, _ = long_kel(kind)[26]

    def delegated(name, ilk, nxt):
        ev, cur, anchor = deleg[ilk]
        return case(
            name,
            ev,
            cur,
            nxt,
            delegator_prefix=anchor.pre,
            source_seal_couple=source_couple(anchor).decode(),
            message_with_source_seal_b64=b64(event_msg(ev, cur, anchor=anchor)),
        )

    return [
        case("icp_single_key", e1, [1], [2]),
        case("icp_single_key_basic_prefix", e1b, [1], [2]),
        case("icp_3keys_kt2_nt2", e2, [4, 5, 6], [7, 8, 9]),
        case("icp_weighted_nested_nt", e3, [10, 11, 12], [13, 14, 15]),
        case("icp_witnessed_EO", eo, [16], [17], WITS),
        case("icp_witnessed_DND", dnd, [16], [17], WITS),
        case("icp_nontransferable", nontrans, [0x30]),
        case("rot_single_key", rot1, [2], [3]),
        case("rot_witnessed_cut_add", rotw, [17], [18], [0x42, 0x43, 0x44]),
        case("ixn_with_seal", ixn_seal, [2]),
        case("ixn_empty", ixn_empty, [2]),
        delegated("dip", Ilks.dip, [23]),
        delegated("drt", Ilks.drt, [24]),
        case(
            "rct_nontrans_couple",
            rct,
            msg=rct_nt,
            receiptor_seeds_hex=hexes([0x41]),
            receipted_said=e1.said,
        ),
        case(
            "rct_trans_group",
            rct,
            msg=rct_tr,
            receiptor_seeds_hex=hexes([4, 5, 6]),
            receipted_said=e1.said,
        ),
        case("ixn_sn_1a", ixn_1a, ixn_1a_cur),
    ]


def key_states(stream):
    """Feed a stream to a fresh keripy Kevery; return final state of every AID."""
    with basing.openDB(name="vectors", temp=True) as db:
        kvy = eventing.Kevery(db=db, lax=False, local=False)
        parsing.Parser().parse(ims=bytearray(stream), kvy=kvy, local=False)
        states = {}
        for pre, kever in sorted(kvy.kevers.items()):
            state = asdict(kever.state())
            del state["dt"]  # wall-clock timestamp: would break determinism
            states[pre] = state
        return states


def stream(name, messages, expect):
    raw = b"".join(bytes(m) for m in messages)
    states = key_states(raw)
    got = {pre: int(st["s"], 16) for pre, st in states.items()}
    if got != expect:  # an event keripy escrowed or rejected: vector would be wrong
        sys.exit(f"stream {name}: keripy accepted {got}, expected {expect}")
    return dict(name=name, message_count=len(messages), stream_b64=b64(raw), key_states=states)


def build_streams():
    longk = long_kel(Kinds.json)
    witk = witnessed_kel(Kinds.cbor)
    msgs = []
    for ev, cur, w in witk:  # each event fully witnessed, then its receipts
        msgs += [event_msg(ev, cur, w), witness_receipt(ev, w)]
    deleg = delegation(Kinds.json, Kinds.cbor)  # mixed kinds in one stream on purpose
    return [
        stream(
            "long_kel_json", [event_msg(ev, cur) for ev, cur, _ in longk], {longk[0][0].pre: 29}
        ),
        stream("witnessed_kel_cbor", msgs, {witk[0][0].pre: 8}),
        stream(
            "delegation_mixed",
            [event_msg(ev, cur, anchor=a) for ev, cur, a in deleg],
            {deleg[0][0].pre: 2, deleg[2][0].pre: 2},
        ),
    ]


def split_messages(data):
    """Split body + -A controller sig messages, as stored in the watched record."""
    msgs = []
    while data:
        end = serdering.SerderKERI(raw=data).size
        counter = Counter(qb64b=data[end:], gvrsn=kering.Vrsn_1_0)
        assert counter.name == Codens.ControllerIdxSigs, counter.qb64
        end += counter.fullSize
        for _ in range(counter.count):
            end += len(Siger(qb64b=data[end:]).qb64b)
        msgs.append(data[:end])
        data = data[end:]
    return msgs


def check_watched(rec):
    """Witness the stored messages with all 4 witnesses; keripy must accept
    ixn_a or ixn_b at sn 2, and the rot at sn 2 as a recovery after ixn_a."""
    wit_ns = [bytes.fromhex(h)[0] for h in rec["witness_seeds_hex"]]
    assert hexes(wit_ns) == rec["witness_seeds_hex"]
    saids = rec["saids"]
    msgs = dict(zip(("icp", "ixn1"), split_messages(base64.b64decode(rec["kel_b64"])), strict=True))
    for name in ("ixn_a", "ixn_b", "rot"):
        (msgs[name],) = split_messages(base64.b64decode(rec[name + "_b64"]))
    serders = {name: serdering.SerderKERI(raw=msg) for name, msg in msgs.items()}
    for name, serder in serders.items():
        assert serder.pre == rec["prefix"] and serder.said == saids[name], name
    for name in ("ixn_a", "ixn_b", "rot"):
        assert serders[name].sn == 2 and serders[name].prior == saids["ixn1"], name
    assert saids["ixn_a"] != saids["ixn_b"]

    def witnessed(name):  # append -B witness sigs, then an rct with -C couples
        serder = serders[name]
        wigers = sign(serder.raw, wit_ns, transferable=False)
        counter = Counter(Codens.WitnessIdxSigs, count=len(wigers), gvrsn=kering.Vrsn_1_0)
        sigs = counter.qb64b + b"".join(wiger.qb64b for wiger in wigers)
        return msgs[name] + sigs + bytes(witness_receipt(serder, wit_ns))

    for names, last in (
        (("icp", "ixn1", "ixn_a"), "ixn_a"),
        (("icp", "ixn1", "ixn_b"), "ixn_b"),
        (("icp", "ixn1", "ixn_a", "rot"), "rot"),
    ):
        states = key_states(b"".join(witnessed(name) for name in names))
        got = {pre: (st["s"], st["d"]) for pre, st in states.items()}
        assert got == {rec["prefix"]: ("2", saids[last])}, (names, got)


def check(path):
    """Re-read the written file with keripy: bodies, SAIDs, sigs, streams."""
    data = json.loads(path.read_text())
    for rec in data["cases"]:
        raw = base64.b64decode(rec["raw_b64"])
        for field in ("message_b64", "witness_indexed_sigs", "message_with_source_seal_b64"):
            if field in rec:
                msg = base64.b64decode(rec[field])
                serder = serdering.SerderKERI(raw=msg)
                assert serder.raw == raw == msg[: serder.size], rec["name"]
                assert serder.said == rec["said"] == rec["ked"]["d"], rec["name"]
                assert serder.ked == rec["ked"], rec["name"]
        for sig, k in zip(rec["sigs_qb64"], rec["ked"].get("k", []), strict=False):
            siger = Siger(qb64=sig)
            assert Verfer(qb64=k).verify(siger.raw, raw), rec["name"]
        if rec["ilk"] == Ilks.icp:  # standalone inceptions must be accepted as-is
            msg = base64.b64decode(rec.get("witness_indexed_sigs", rec["message_b64"]))
            states = key_states(msg)
            assert states[rec["ked"]["i"]]["d"] == rec["said"], rec["name"]
    for st in data["streams"]:
        assert key_states(base64.b64decode(st["stream_b64"])) == st["key_states"], st["name"]
    check_watched(data["watched"])
    return len(data["cases"]), len(data["streams"])


def main():
    cases = [rec for kind in (Kinds.cbor, Kinds.json) for rec in build_cases(kind)]
    doc = dict(
        generator=dict(
            tool="tools/keripy_vectors.py",
            keri=keri.__version__,
            seed_rule="seed(n) = bytes([n]) * 32",
        ),
        cases=cases,
        streams=build_streams(),
        watched=build_watched(),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    cases, streams = check(OUT)
    print(f"wrote {OUT}: {cases} cases, {streams} streams, watched KEL verified")


if __name__ == "__main__":
    main()
