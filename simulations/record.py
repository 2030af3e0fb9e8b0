"""What a simulation decided, recorded as it happens, and summarised into results.

Clocks kept (virtual seconds):

    created       an honest controller made an event
    witnessed     its controller holds `bt` receipts (fully witnessed)
    to_watchers   every honest, non-eclipsed watcher has it accepted in its own KEL copy
    t0            an equivocation's second version reached its first witness
    detected      a watcher holds verified evidence against the equivocating identifier

With capacity on (`capacity.py`), `capacity` says what the CPU queues did: gossip copies
dropped, requests refused, the busiest CPU's share of the run. Delivery ratio: of every valid
KEL message published, the share of the topic's members up at the end that received it (by
second of publication, and overall). Nothing here reads the
machine's clock: results depend on the scenario and seed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dkms.node.roles.controller import Controller
from dkms.node.roles.effects import Send, Tag
from dkms.node.roles.topics import DUPLICITY_TOPIC
from dkms.node.roles.watcher import Watcher
from dkms.protocol.errors import ProtocolError
from dkms.protocol.ids import Said
from dkms.protocol.stream import Message

from .gossip import Msg

if TYPE_CHECKING:
    from .world import World


@dataclass(frozen=True, slots=True)
class Rival(Tag):
    """An equivocator's own submission of version `said`: it wants no receipts."""

    said: Said


@dataclass
class EventClock:
    prefix: str
    sn: int
    created: float
    witnessed: float | None = None
    watchers: dict[int, float] = field(default_factory=dict)


@dataclass
class Equivocation:
    prefix: str
    second: str  # SAID of the second version
    controller: int
    t0: float | None = None
    detected: dict[int, float] = field(default_factory=dict)


class Recorder:
    def __init__(self, world: World) -> None:
        self.world = world
        self.events: dict[str, EventClock] = {}
        self.pending: dict[int, list[str]] = {}  # controller -> SAIDs not witnessed yet
        self.equivocations: dict[str, Equivocation] = {}
        self.colluders: set[str] = set()
        self.messages: list[Msg] = []
        self.skipped = 0
        self.spam = 0

    # ---------------------------------------------------------------- hooks

    def created(self, node: int, said: str, prefix: str, sn: int) -> None:
        if prefix in self.equivocations:
            return
        self.events[said] = EventClock(prefix, sn, self.world.sim.now)
        self.pending.setdefault(node, []).append(said)

    def equivocation(self, prefix: str, second: str, controller: int) -> None:
        self.equivocations[prefix] = Equivocation(prefix, second, controller)
        for said in [s for s, e in self.events.items() if e.prefix == prefix]:
            del self.events[said]  # an equivocator's events are not honest traffic
        self.pending.pop(controller, None)

    def published(self, node: int, msg: Msg) -> None:
        if msg.topic != DUPLICITY_TOPIC and msg.valid:
            self.messages.append(msg)

    def request(self, node: int, sends: list[Send]) -> None:
        for send in sends:
            if not isinstance(send.tag, Rival):
                continue
            for eq in self.equivocations.values():
                if eq.second == send.tag.said and eq.t0 is None:
                    eq.t0 = self.world.sim.now

    def stepped(self, node: int) -> None:
        ctl = self.world.controllers.get(node)
        if ctl is not None:
            self._witnessed(node, ctl)
        watcher = self.world.watchers.get(node)
        if watcher is not None:
            self._detected(node, watcher)

    def heard(self, node: int, msg: Msg) -> None:
        role = self.world.watchers.get(node)
        if role is None:
            return
        now = self.world.sim.now
        if msg.topic != DUPLICITY_TOPIC:
            try:
                frames = self.world.parse(msg.payload)
            except ProtocolError:
                frames = []
            for frame in frames:
                if not isinstance(frame, Message):
                    continue
                said = frame.event.said
                clock = self.events.get(said)
                if clock is None or node in clock.watchers:
                    continue
                if role.validator.record(said) is not None:
                    clock.watchers[node] = now
        self._detected(node, role)

    def _witnessed(self, node: int, ctl: Controller) -> None:
        pending = self.pending.get(node)
        if not pending:
            return
        now = self.world.sim.now
        still = []
        for said in pending:
            if ctl.done(said):
                self.events[said].witnessed = now
            else:
                still.append(said)
        self.pending[node] = still

    def _detected(self, node: int, role: Watcher) -> None:
        if not self.equivocations:
            return
        now = self.world.sim.now
        for eq in self.equivocations.values():
            if (
                node not in eq.detected
                and role.holdings.standing(eq.prefix, True)[0] == "duplicitous"
            ):
                eq.detected[node] = now

    # ---------------------------------------------------------------- summary

    def summary(self) -> dict[str, Any]:
        w = self.world
        honest_watchers = [v for v in w.watcher_ids if v not in w.eclipsed]
        witnessed = [
            (e.witnessed - e.created) * 1000
            for e in self.events.values()
            if e.witnessed is not None
        ]
        to_watchers = []
        for e in self.events.values():
            if honest_watchers and all(v in e.watchers for v in honest_watchers):
                to_watchers.append((max(e.watchers[v] for v in honest_watchers) - e.created) * 1000)
        detection, fractions, eclipsed_fractions = [], [], []
        for eq in self.equivocations.values():
            t0 = eq.t0 if eq.t0 is not None else math.inf
            detection += [(eq.detected[v] - t0) * 1000 for v in honest_watchers if v in eq.detected]
            if honest_watchers:
                fractions.append(
                    sum(v in eq.detected for v in honest_watchers) / len(honest_watchers)
                )
            if w.eclipsed:
                eclipsed_fractions.append(
                    sum(v in eq.detected for v in w.eclipsed) / len(w.eclipsed)
                )
        adversaries = set(self.equivocations) | self.colluders
        false_alarms = 0
        for v in w.watcher_ids:
            role = w.watchers[v]
            false_alarms += sum(
                1 for accused in role.holdings.accused() if accused not in adversaries
            )
        named = []
        for colluder in sorted(self.colluders):
            holds = [w.watchers[v] for v in honest_watchers]
            named.append(
                sum(colluder in r.holdings.accused() for r in holds) / max(len(holds), 1)
            )
        ratio, by_second = self._delivery()
        members = sorted(set(w.witness_ids + w.watcher_ids + w.relay_ids))
        g = w.gossip
        return {
            "scenario": w.sc.name,
            "seed": w.sc.seed,
            "nodes": w.sc.nodes,
            "virtual_s": round(w.sim.now, 3),
            "events": len(self.events),
            "events_skipped": self.skipped,
            "deliveries": g.deliveries,
            "duplicates": g.duplicates,
            "invalid_dropped": g.invalid,
            "control_messages": g.control,
            "requests": w.requests,
            "delivery_ratio": round(ratio, 6),
            "delivery_ratio_by_second": by_second,
            "witnessed_ms": stats(witnessed, ("p50", "p90", "p99", "max")),
            "to_watchers_ms": stats(to_watchers, ("p50", "p90", "p99", "max")),
            "events_reaching_every_watcher": len(to_watchers),
            "detection_ms": stats(detection, ("p50", "p99", "max")),
            "detected_fraction": round(sum(fractions) / len(fractions), 6) if fractions else None,
            "eclipsed_detected_fraction": (
                round(sum(eclipsed_fractions) / len(eclipsed_fractions), 6)
                if eclipsed_fractions
                else None
            ),
            "false_alarms": false_alarms,
            "colluders_named_fraction": round(sum(named) / len(named), 6) if named else None,
            "sent_per_event": per_event(w.traffic, len(witnessed)),
            "messages_per_node": stats(
                [g.recv_msgs[n] for n in members], ("mean", "p50", "p99", "max")
            ),
            "bytes_per_node": stats(
                [g.recv_bytes[n] for n in members], ("mean", "p50", "p99", "max")
            ),
            **({} if w.links.cpu is None else {"capacity": w.links.cpu.summary()}),
        }

    def _delivery(self) -> tuple[float, list[list[float]]]:
        w = self.world
        down = w.links.down
        total = reached = 0
        buckets: dict[int, list[int]] = {}
        for msg in self.messages:
            assert msg.net is not None
            members = msg.net.members
            live = len(members) - len(down & members) if down else len(members)
            got = min(msg.reached, live)
            total += live
            reached += got
            bucket = buckets.setdefault(int(msg.sent), [0, 0])
            bucket[0] += got
            bucket[1] += live
        by_second = [[s, round(b[0] / b[1], 6)] for s, b in sorted(buckets.items()) if b[1]]
        return (reached / total if total else 1.0), by_second

    def rows(self) -> list[dict[str, Any]]:
        """One row per honest event, for events.csv."""
        honest = [v for v in self.world.watcher_ids if v not in self.world.eclipsed]
        out = []
        for said, e in self.events.items():
            full = all(v in e.watchers for v in honest) and bool(honest)
            out.append(
                {
                    "said": said,
                    "prefix": e.prefix,
                    "sn": e.sn,
                    "created_s": round(e.created, 6),
                    "witnessed_ms": _ms(e.witnessed, e.created),
                    "to_watchers_ms": (
                        round((max(e.watchers[v] for v in honest) - e.created) * 1000, 3)
                        if full
                        else ""
                    ),
                }
            )
        return out

    def detection_rows(self) -> list[dict[str, Any]]:
        out = []
        for eq in self.equivocations.values():
            for v in self.world.watcher_ids:
                t = eq.detected.get(v)
                out.append(
                    {
                        "prefix": eq.prefix,
                        "watcher": v,
                        "eclipsed": int(v in self.world.eclipsed),
                        "detection_ms": _ms(t, eq.t0)
                        if t is not None and eq.t0 is not None
                        else "",
                    }
                )
        return out


def _ms(t: float | None, since: float | None) -> float | str:
    if t is None or since is None:
        return ""
    return round((t - since) * 1000, 3)


def per_event(traffic: dict[str, int], delivered: int) -> dict[str, float] | None:
    """What the nodes sent of their own accord (`outbox.TRAFFIC`), per event witnessed."""
    if not delivered:
        return None
    return {name: round(count / delivered, 3) for name, count in traffic.items()}


def stats(values: list[float] | list[int], keys: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    out: dict[str, float] = {}
    for key in keys:
        if key == "mean":
            out[key] = round(sum(ordered) / len(ordered), 3)
        elif key == "max":
            out[key] = round(float(ordered[-1]), 3)
        else:
            q = int(key[1:]) / 100
            out[key] = round(
                float(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]), 3
            )
    return out
