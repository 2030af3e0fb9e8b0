"""How fast a rival shown to one witness is caught: from the second, conflicting version
reaching that witness to every watcher answering `standing: duplicitous`.

A 10-node network on loopback (by default 6 witnesses with bt=4 and 4 watchers, every
watcher a juror, the first the judge), all real nodes (libp2p hosts, SQLite stores, the
`dkms-node` code) in this one process (`dkms.node.testing.localnet`). Each trial, a fresh
identifier is incepted with every witness, its interaction a (sn 1) is fully witnessed, and
the trial waits until every watcher holds a with every receipt, then `--settle` seconds
more: just after an event the ten nodes of this one process stay busy for up to a second
(and the witnesses republish a KEL's tail 5 s after its last change), which would be
measured instead of the rival's own way. Then the same keys sign version b of sn 1,
submitted to one witness only (a different one each trial). That witness refuses b, keeps it
in its duplicitous-event log and publishes it on the KEL's gossip shard (`roles/rivals.py`);
the watchers' validators find the conflict. Clocks (`time.perf_counter`):

    sent        just before the submission left the client
    judged      the witness's role step that refused b and put it in its log returned
    standing    the end of each watcher's first step at which it stands the identifier
                duplicitous (verified evidence held: what its key-state answer says), as
                `benchmarks/duplicity.py` takes it

Reported: over every (trial, watcher) pair, p50, p90 and max of standing - judged (b
reaching the witness to a watcher's duplicitous standing) and of standing - sent; per trial,
the slowest watcher's; judged - sent; and a key-state query's round trip to the same
witness just before b, for the speed of the request path at that moment. Everything shares
one event loop, on a machine that may be shared with other work: upper bounds for nodes in
their own processes on a quiet machine.

    python benchmarks/rival_detection.py [--trials 20] [--witnesses 6] [--watchers 4]
                                         [--settle 6]

Output: one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from dkms.node.p2p.logs import quiet_libp2p
from dkms.node.roles.codes import Code
from dkms.node.roles.effects import Effect
from dkms.node.roles.inputs import Input
from dkms.node.roles.witness import Witness
from dkms.node.testing.localnet import LocalNet, local_network
from dkms.protocol.events import interact
from dkms.protocol.stream import Attachments, messagize


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": round(statistics.median(ordered), 1), "p90": at(0.9), "max": at(1.0)}


def toad(witnesses: int) -> int:
    """A witness threshold for n witnesses tolerating f = (n - 1) // 3 faulty:
    ceil((n + f + 1) / 2)."""
    f = (witnesses - 1) // 3
    return -(-(witnesses + f + 1) // 2)


async def one_trial(net: LocalNet, n: int, bt: int, settle: float) -> dict[str, Any]:
    name = f"r{n}"
    ctl = net.client.controller
    prefix = await net.incept(name, (os.urandom(32), os.urandom(32)), toad=bt)
    ident = ctl.identity(name)
    icp = ident.last_said
    effects = ctl.interact(name, [{"trial": n, "v": "a"}], now=net.client.runtime.now())
    await net.client.witnessed(effects, ident.last_said)

    def held_a() -> bool:  # with every witness's receipt: the traffic of a is over
        kels = [net.watcher(i).validator.kel(prefix) for i in range(len(net.watchers))]
        everyone = len(net.witnesses)
        return all(k is not None and k.sn == 1 and len(k.last.receipts) == everyone for k in kels)

    await net.until(held_a)
    await net.client.runtime.quiet()
    # Let a's traffic die down (with the tails republished 5 s after a KEL's last change):
    # just after an event the ten nodes in this one process are busy for up to a second,
    # which would be measured instead of the rival's way to the watchers.
    await trio.sleep(settle)
    b = interact(prefix, prior=icp, sn=1, anchors=[{"trial": n, "v": "b"}])
    sigs = tuple(s.sign_indexed(b.raw, i) for i, s in enumerate(ident.signers))
    message = messagize(b, Attachments(sigs=sigs))
    target = n % len(net.witnesses)
    witness = net.runtimes[net.w[target]]
    watchers = [(h.prefix, net.runtimes[h.prefix]) for h in net.watchers]
    judged: list[float] = []
    standing: dict[str, float] = {}
    role = witness.role
    assert isinstance(role, Witness)
    judge = role.step

    def judging(event: Input, now: float) -> list[Effect]:
        effects = judge(event, now)
        if not judged and role.rivals.held(prefix, 1, b.said):
            judged.append(time.perf_counter())
        return effects

    def watcher_step() -> None:
        now = time.perf_counter()
        for who, runtime in watchers:
            held = runtime.role.holdings  # type: ignore[attr-defined]
            if who not in standing and held.standing(prefix, True)[0] == "duplicitous":
                standing[who] = now

    role.step = judging  # type: ignore[method-assign]
    for _, runtime in watchers:
        runtime.after_step = watcher_step
    asked = time.perf_counter()  # the same path's speed now: a key-state query to the witness
    await net.ask(net.w[target], {"t": "state", "i": prefix})
    rtt = time.perf_counter() - asked
    try:
        sent = time.perf_counter()
        code, _, reason = await net.submit(target, message)
        if code is not Code.CONFLICT:
            raise RuntimeError(f"witness {target} answered {code.name} to version b: {reason}")
        await net.until(lambda: len(standing) == len(watchers))
    finally:
        del role.step  # the class's own again
        for _, runtime in watchers:
            runtime.after_step = None
    t0 = judged[0]
    return {
        "witness": target,
        "judged_after_sent_ms": (t0 - sent) * 1000,
        "query_round_trip_ms": rtt * 1000,
        "from_judged_ms": [(t - t0) * 1000 for t in standing.values()],
        "from_sent_ms": [(t - sent) * 1000 for t in standing.values()],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bt = toad(args.witnesses)
    with tempfile.TemporaryDirectory(prefix="dkms-bench-rival-") as tmp:
        async with local_network(
            Path(tmp), witnesses=args.witnesses, watchers=args.watchers
        ) as net:
            trials = []
            for n in range(args.trials):
                with trio.fail_after(60 + args.settle):
                    result = await one_trial(net, n, bt, args.settle)
                trials.append(result)
                print(
                    f"trial {n + 1}/{args.trials}: rival shown to witness {result['witness']} "
                    f"(judged {result['judged_after_sent_ms']:.1f} ms after the submit left); "
                    f"every watcher duplicitous {max(result['from_judged_ms']):.1f} ms after",
                    file=sys.stderr,
                )
    judged = [t for r in trials for t in r["from_judged_ms"]]
    sent = [t for r in trials for t in r["from_sent_ms"]]
    return {
        "nodes": args.witnesses + args.watchers,
        "witnesses": args.witnesses,
        "bt": bt,
        "watchers": args.watchers,
        "trials": args.trials,
        "settle_s": args.settle,
        "watcher_duplicitous_after_witness_judged_ms": percentiles(judged),
        "slowest_watcher_per_trial_ms": percentiles([max(r["from_judged_ms"]) for r in trials]),
        "watcher_duplicitous_after_submit_sent_ms": percentiles(sent),
        "witness_judged_after_submit_sent_ms": percentiles(
            [r["judged_after_sent_ms"] for r in trials]
        ),
        "query_round_trip_ms": percentiles([r["query_round_trip_ms"] for r in trials]),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--witnesses", type=int, default=6)
    parser.add_argument("--watchers", type=int, default=4)
    parser.add_argument(
        "--settle", type=float, default=6.0, help="seconds between a's witnessing and b"
    )
    args = parser.parse_args()
    if args.witnesses < 1 or args.watchers < 1 or args.trials < 1:
        parser.error("need a witness, a watcher and a trial")
    quiet_libp2p()
    logging.getLogger("dkms").setLevel(logging.ERROR)
    print(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()
