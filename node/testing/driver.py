"""Roles wired together in memory, the h11 way: no network, no clock, no threads.

Theory of operation. A `Driver` holds named roles and a queue of deliveries in flight:

    Send       a `Request` to the named role (its `Reply` comes back as an `Answered` for the
               sender's tag), or at once an `Answered(UNREACHABLE)` when the target is down,
               unknown, or does not serve the surface
    Publish    a `Heard` for every other role that listens to the topic (it subscribed, or it
               published there: the runtime subscribes a role to the topics it publishes on)
    SetTimer   kept; `advance` moves the clock and fires what is due, earliest first
    Persist*   each step's appended to the role's `disk` as one batch (what a restart
               replays, what a store's group commit would take; `stored` leaves out the
               loose events a later `DropLoose` dropped); Report and Blame kept

By default every effect is carried out as soon as it is made, in order (`settle`). With
`hold=True` deliveries wait in `pending` until a test delivers, drops or duplicates them in
any order it likes, which is how the property tests shuffle the network. Every role is driven
through `roles.role.Role` only: the driver knows nothing of witnesses or watchers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dkms.node.roles.codes import Code
from dkms.node.roles.effects import (
    Blame,
    ChainLoose,
    DropLoose,
    Effect,
    Persist,
    PersistEvent,
    PersistReceipts,
    Publish,
    Reply,
    Report,
    Send,
    SetTimer,
    Subscribe,
    TimerKey,
)
from dkms.node.roles.inputs import Answered, Heard, Input, Request, TimerFired
from dkms.node.roles.role import Role
from dkms.protocol.events import receipt
from dkms.protocol.ids import NodePrefix
from dkms.protocol.stream import Attachments, messagize


@dataclass(frozen=True, slots=True)
class Delivery:
    """One input on its way to the role `to`; a request's reply goes back to `reply_to`."""

    to: str
    event: Input
    reply_to: Send | None = None
    sender: str = ""


@dataclass
class Driver:
    roles: dict[str, Role] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    hold: bool = False
    gossip: bool = True
    now: float = 0.0
    pending: list[Delivery] = field(default_factory=list)
    disk: dict[str, list[list[Persist]]] = field(default_factory=dict)
    published: list[tuple[str, Publish]] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    blames: list[tuple[str, Blame]] = field(default_factory=list)
    timers: dict[tuple[str, TimerKey], float] = field(default_factory=dict)
    listening: dict[str, set[str]] = field(default_factory=dict)  # topic -> role names
    requests: int = 0

    # ---------------------------------------------------------------- set-up

    def add(self, name: str, role: Role, *, start: bool = True) -> None:
        """Add (or replace, as after a restart) the role called `name`."""
        self.roles[name] = role
        self.disk.setdefault(name, [])
        if start:
            self.run(role.start(self.now), name)

    # ---------------------------------------------------------------- driving

    def run(self, effects: Iterable[Effect], origin: str) -> None:
        """Carry out effects that `origin` made (a command's, say), then settle."""
        self._perform(origin, list(effects), None)
        if not self.hold:
            self.settle()

    def step(self, name: str, event: Input) -> list[Effect]:
        """Hand `event` to `name` directly and carry out what it returns; its effects."""
        effects = self.roles[name].step(event, self.now)
        self._perform(name, effects, None)
        if not self.hold:
            self.settle()
        return effects

    def settle(self, limit: int = 1_000_000) -> None:
        """Deliver everything in flight, first in first out, until nothing is left."""
        for _ in range(limit):
            if not self.pending:
                return
            self.deliver(0)
        raise RuntimeError(f"still busy after {limit} deliveries: a message loop?")

    def deliver(self, index: int) -> None:
        item = self.pending.pop(index)
        role = self.roles.get(item.to)
        if role is None or item.to in self.down:
            if item.reply_to is not None:  # the request never arrived: the sender hears so
                self._answer(item.sender, item.reply_to, Reply.refuse(Code.UNREACHABLE, "down"))
            return
        effects = role.step(item.event, self.now)
        self._perform(item.to, effects, item)

    def drop(self, index: int) -> None:
        """Lose a delivery; a lost request still gets its sender an UNREACHABLE answer."""
        item = self.pending.pop(index)
        if item.reply_to is not None:
            self._answer(item.sender, item.reply_to, Reply.refuse(Code.UNREACHABLE, "lost"))

    def duplicate(self, index: int) -> None:
        self.pending.append(self.pending[index])

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing every timer that comes due (earliest first)."""
        self.now += seconds
        while True:
            due = sorted((at, repr(k), k) for k, at in self.timers.items() if at <= self.now)
            if not due:
                return
            key = due[0][2]
            del self.timers[key]
            self.step(key[0], TimerFired(key[1]))

    # ---------------------------------------------------------------- views

    def stored(self, name: str) -> bytes:
        """What `name` persisted, as the CESR stream a store replays into a fresh role."""
        out: list[tuple[str, bytes]] = []  # (prefix of a loose event or "", message)
        for effect in (e for batch in self.disk.get(name, []) for e in batch):
            if isinstance(effect, PersistEvent):
                out.append((effect.prefix if effect.loose else "", effect.message))
            elif isinstance(effect, PersistReceipts):
                rct = receipt(effect.prefix, effect.sn, effect.said)
                out.append(("", messagize(rct, Attachments(couples=effect.couples))))
            elif isinstance(effect, DropLoose):
                out = [(loose, m) for loose, m in out if loose != effect.prefix]
            elif isinstance(effect, ChainLoose):
                out = [("" if loose == effect.prefix else loose, m) for loose, m in out]
        return b"".join(m for _, m in out)

    # ---------------------------------------------------------------- internals

    def _perform(self, who: str, effects: list[Effect], handling: Delivery | None) -> None:
        batch: list[Persist] = []
        for effect in effects:
            if isinstance(effect, Reply):
                if handling is not None and handling.reply_to is not None:
                    self._answer(handling.sender, handling.reply_to, effect)
            elif isinstance(effect, Send):
                self._send(who, effect)
            elif isinstance(effect, Publish):
                self.published.append((who, effect))
                self.listening.setdefault(effect.topic, set()).add(who)
                if self.gossip:
                    for name in sorted(self.listening[effect.topic] - {who}):
                        heard = Heard(effect.topic, NodePrefix(who), effect.payload)
                        if name not in self.down and self.roles[name].admits(
                            effect.topic, effect.payload
                        ):
                            self.pending.append(Delivery(name, heard))
            elif isinstance(effect, Subscribe):
                self.listening.setdefault(effect.topic, set()).add(who)
            elif isinstance(effect, SetTimer):
                self.timers[(who, effect.key)] = effect.at
            elif isinstance(effect, Report):
                self.reports.append(effect)
            elif isinstance(effect, Blame):
                self.blames.append((who, effect))
            else:
                batch.append(effect)
        if batch:
            self.disk.setdefault(who, []).append(batch)

    def _send(self, who: str, send: Send) -> None:
        self.requests += 1
        target = self.roles.get(send.to)
        if target is None or send.to in self.down or send.surface not in target.surfaces:
            self._answer(who, send, Reply.refuse(Code.UNREACHABLE, f"{send.to} unreachable"))
            return
        request = Request(send.surface, NodePrefix(who), send.payload)
        self.pending.append(Delivery(send.to, request, send, who))

    def _answer(self, who: str, send: Send, reply: Reply) -> None:
        answered = Answered(send.tag, reply.code, reply.payload, reply.reason)
        self.pending.append(Delivery(who, answered))
