"""Scenarios: who is in the network, how it behaves, and who attacks it.

A scenario is a TOML file (shipped ones in `simulations/scenarios/`) or a `Scenario` object.
Top-level keys set the population and the workload; tables set the rest:

    name, seed, nodes, witnesses, watchers, identifiers, witnesses_per_id, bt, event_rate,
    duration, settle
    [link]         kind, median_ms, sigma, low_ms, high_ms, loss, bandwidth_kbps,
                   processing_ms, regions, region_ms
    [gossip]       d, d_low, d_high, d_lazy, heartbeat_s, history, degree, invalid_penalty,
                   graylist_score
    [adversaries]  equivocations, colluding_witnesses, sybil_fraction, eclipsed_watchers,
                   withholding_witnesses, spammers, spam_rate, rivals, forks,
                   malformed_senders, malformed_rate   (see `attacks.py`)
    [partition]    at, heal, fraction        (a fraction of relays cut off, then healed)
    [churn]        rate, downtime            (relays leaving per second, and for how long)
    [capacity]     gossip_ms, duplicate_ms, request_ms, queue, window_kb, slots, cpus, share
                   (every node's CPU as a queue with py-libp2p's drops and BUSY refusals:
                   `capacity.py`; off unless a cost is set)

`nodes` counts everyone: witnesses, watchers, one controller per identifier, and relays (the
rest: nodes that run the node program and relay gossip, as any participant does).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .capacity import Capacity
from .gossip import GossipParams
from .links import LinkModel

SHIPPED = Path(__file__).parent / "scenarios"


class ScenarioError(Exception):
    """A scenario cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Adversaries:
    equivocations: int = 0  # identifiers that each sign two versions of one event
    colluding_witnesses: int = 0  # per equivocation: witnesses that receipt both versions
    sybil_fraction: float = 0.0  # relays that take part in meshes but forward nothing
    eclipsed_watchers: int = 0  # watchers whose every connection is a sybil
    withholding_witnesses: int = 0  # witnesses that receipt but never gossip
    spammers: int = 0  # relays publishing invalid messages
    spam_rate: float = 1.0  # invalid messages per second per spammer
    rivals: int = 0  # identifiers signing a rival of a witnessed event for their witnesses
    forks: int = 0  # identifiers showing a victim a fork their bt witnesses receipted
    malformed_senders: int = 0  # relays sending witnesses and watchers malformed frames
    malformed_rate: float = 5.0  # malformed frames per second per sender


@dataclass(frozen=True)
class Partition:
    at: float = 0.0
    heal: float = 0.0
    fraction: float = 0.0  # of relays cut off from everyone else


@dataclass(frozen=True)
class Churn:
    rate: float = 0.0  # relays leaving per virtual second
    downtime: float = 10.0  # seconds each stays away


@dataclass(frozen=True)
class Scenario:
    name: str = "custom"
    seed: int = 1
    nodes: int = 1000
    witnesses: int = 40
    watchers: int = 10
    identifiers: int = 10
    witnesses_per_id: int = 4
    bt: int = 3
    event_rate: float = 1.0  # new events per virtual second, over all identifiers
    duration: float = 60.0  # virtual seconds of workload
    settle: float = 5.0  # virtual seconds after it, for the last messages to land
    link: LinkModel = field(default_factory=LinkModel)
    gossip: GossipParams = field(default_factory=GossipParams)
    adversaries: Adversaries = field(default_factory=Adversaries)
    partition: Partition = field(default_factory=Partition)
    churn: Churn = field(default_factory=Churn)
    capacity: Capacity = field(default_factory=Capacity)

    @property
    def relays(self) -> int:
        return self.nodes - self.witnesses - self.watchers - self.identifiers

    def check(self) -> Scenario:
        try:
            self.link.check()
            self.gossip.check()
            self.capacity.check()
        except ValueError as err:
            raise ScenarioError(f"scenario {self.name}: {err}") from None
        a = self.adversaries
        problems = [
            (self.relays < 0, "nodes must cover witnesses + watchers + identifiers"),
            (self.watchers < 1, "at least one watcher is needed"),
            (
                not 1 <= self.witnesses_per_id <= self.witnesses,
                "witnesses_per_id must be between 1 and witnesses",
            ),
            (not 1 <= self.bt <= self.witnesses_per_id, "bt must be 1..witnesses_per_id"),
            (self.event_rate <= 0 or self.duration <= 0, "event_rate and duration must be > 0"),
            (a.equivocations > self.identifiers, "more equivocations than identifiers"),
            (
                a.equivocations and self.witnesses_per_id < 2,
                "an equivocation splits witnesses: needs witnesses_per_id >= 2",
            ),
            (
                a.colluding_witnesses > self.witnesses_per_id // 2,
                "colluding_witnesses must be at most half of witnesses_per_id",
            ),
            (not 0 <= a.sybil_fraction < 1, "sybil_fraction must be in [0, 1)"),
            (a.eclipsed_watchers > self.watchers, "more eclipsed watchers than watchers"),
            (a.withholding_witnesses > self.witnesses, "more withholding than witnesses"),
            (a.spammers > max(self.relays, 0), "spammers are relays: too many"),
            (
                a.equivocations + a.rivals + a.forks > self.identifiers,
                "equivocations, rivals and forks each need an identifier of their own",
            ),
            (
                a.spammers + a.forks + a.malformed_senders > max(self.relays, 0),
                "spammers, fork victims and malformed senders are relays: too many",
            ),
            (a.malformed_rate <= 0, "malformed_rate must be > 0"),
            (not 0 <= self.partition.fraction < 1, "partition fraction must be in [0, 1)"),
        ]
        for bad, why in problems:
            if bad:
                raise ScenarioError(f"scenario {self.name}: {why}")
        return self

    def with_params(self, **changes: Any) -> Scenario:
        """A copy with `key=value` changes; `link.median_ms` style keys reach into tables."""
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            table, _, sub = key.partition(".")
            if sub:
                nested.setdefault(table, {})[sub] = value
            else:
                top[key] = value
        out = self
        for table, values in nested.items():
            current = getattr(out, table, None)
            if current is None or not hasattr(current, "__dataclass_fields__"):
                raise ScenarioError(f"unknown scenario table {table!r}")
            merged = replace(current, **_coerce(type(current), values, table))
            out = replace(out, **{table: merged})
        out = replace(out, **_coerce(Scenario, top, "scenario"))
        if (
            "nodes" in top
            and out.relays < 0
            and not {"witnesses", "watchers", "identifiers"} & set(top)
        ):
            out = out.fit()
        return out.check()

    def fit(self) -> Scenario:
        """Scale witnesses, watchers and identifiers down to fit `nodes` (a fifth or more of
        the nodes stay relays), keeping enough witnesses for `witnesses_per_id`."""
        room = max(int(self.nodes * 0.8), 3)
        total = self.witnesses + self.watchers + self.identifiers
        factor = min(1.0, room / total)
        a = self.adversaries
        witnesses = max(self.witnesses_per_id, round(self.witnesses * factor))
        watchers = max(1, a.eclipsed_watchers + 1, round(self.watchers * factor))
        acting = a.equivocations + a.rivals + a.forks
        identifiers = max(1, acting + 1, round(self.identifiers * factor))
        return replace(self, witnesses=witnesses, watchers=watchers, identifiers=identifiers)


def load(source: str) -> Scenario:
    """A shipped scenario by name, or a TOML file by path."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = SHIPPED / f"{source}.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        names = ", ".join(shipped())
        raise ScenarioError(f"no scenario {source!r} (shipped: {names})") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ScenarioError(f"cannot read {path}: {err.strerror}") from None
    return from_dict(data, default_name=path.stem)


def from_dict(data: dict[str, Any], default_name: str = "custom") -> Scenario:
    tables = {"link", "gossip", "adversaries", "partition", "churn", "capacity"}
    top = {k: v for k, v in data.items() if k not in tables}
    top.setdefault("name", default_name)
    scenario = Scenario(**_coerce(Scenario, top, "scenario"))
    for table in tables & set(data):
        values = data[table]
        if not isinstance(values, dict):
            raise ScenarioError(f"[{table}] must be a table")
        current = getattr(scenario, table)
        scenario = replace(scenario, **{table: _typed(type(current), values, table)})
    return scenario.check()


def shipped() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def _typed(cls: type, values: dict[str, Any], where: str) -> Any:
    return cls(**_coerce(cls, values, where))


def _coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ScenarioError(f"unknown setting {where}.{key}")
        default = getattr(cls(), name) if name not in ("link", "gossip") else None
        if isinstance(default, bool) or default is None:
            out[name] = value
        elif isinstance(default, float) and isinstance(value, int | float):
            out[name] = float(value)
        elif (
            isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool)
        ) or (isinstance(default, str) and isinstance(value, str)):
            out[name] = value
        elif isinstance(default, tuple) and isinstance(value, list):
            out[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kind = {"int": "an integer", "float": "a number", "str": "a string"}.get(
                type(default).__name__, f"a {type(default).__name__}"
            )
            raise ScenarioError(f"{where}.{key} must be {kind}, not {value!r}")
    return out
