"""The peer-exchange policy alone (no hosts): what it dials, lists and forgets, seeded."""

from __future__ import annotations

import random

from dkms.node.p2p.peering import BOOT_FIRST, BOOT_MAX, RETRY_FIRST, RETRY_MAX, PeerBook


def book(seed: int = 1, max_known: int = 1024) -> PeerBook[str, str]:
    return PeerBook(random.Random(seed), max_known=max_known)


def test_the_same_seed_makes_the_same_choices() -> None:
    choices = []
    for _ in range(2):
        b = book(7)
        for n in range(50):
            b.remember(f"p{n}", f"intro{n}")
        choices.append((b.to_dial({}, set(), "me", 10, 0.0), b.listing("p3", ["p1"], 8)))
    assert choices[0] == choices[1]
    other = book(8)
    for n in range(50):
        other.remember(f"p{n}", f"intro{n}")
    assert other.to_dial({}, set(), "me", 10, 0.0) != choices[0][0]


def test_never_dials_itself_the_connected_or_the_backed_off() -> None:
    b = book()
    candidates = {"me": "i-me", "a": "i-a", "b": "i-b", "c": "i-c"}
    b.failed("c", now=100.0)
    chosen = b.to_dial(candidates, connected={"a"}, me="me", wanted=10, now=100.0)
    assert chosen == [("b", "i-b")]
    assert b.to_dial(candidates, {"a"}, "me", wanted=0, now=100.0) == []


def test_back_off_doubles_up_to_its_cap_and_a_success_clears_it() -> None:
    b = book()
    now = 0.0
    delays = []
    for _ in range(12):
        b.failed("x", now)
        until = now
        while b.to_dial({"x": "i-x"}, set(), "me", 1, until) == []:
            until += 1.0
        delays.append(until - now)
        now = until
    assert delays[0] == RETRY_FIRST
    assert delays[1] == 2 * RETRY_FIRST
    assert max(delays) == RETRY_MAX
    b.dialled("x", "i-x")
    assert b.to_dial({}, set(), "me", 1, now) == [("x", "i-x")]


def test_listing_puts_reachable_peers_first_and_leaves_out_the_asker() -> None:
    b = book()
    for name in "abcdef":
        b.remember(name, f"i-{name}")
    listed = b.listing("a", live={"e", "f"}, limit=3)
    assert "i-a" not in listed
    assert set(listed[:2]) == {"i-e", "i-f"}
    assert len(listed) == 3


def test_what_is_known_is_bounded_oldest_first() -> None:
    b = book(max_known=3)
    for name in "abcd":
        b.remember(name, f"i-{name}")
    b.remember("b", "i-b2")  # learnt again: newest now
    b.remember("e", "i-e")
    assert list(b.known) == ["d", "b", "e"]


def test_the_back_off_table_is_bounded_too() -> None:
    b = book(max_known=3)
    for n in range(10):
        b.failed(f"made-up-{n}", now=0.0)
    assert len(b._retry) == 3


def test_bootstrap_peers_are_retried_however_often_they_fail_with_a_short_capped_back_off() -> None:
    b = book()
    b.set_bootstrap({"boot": "i-boot", "other": "i-other"})
    assert b.bootstrap_due({"other"}, 0.0) == [("boot", "i-boot")]  # the connected one is not
    now, delays = 0.0, []
    for _ in range(40):  # a bootstrap peer that stays down for minutes
        b.bootstrap_failed("boot", now, "connection refused")
        due = b.next_bootstrap({"other"})
        assert due is not None and b.bootstrap_due({"other"}, due - 0.01) == []
        assert b.bootstrap_due({"other"}, due) == [("boot", "i-boot")]
        delays.append(due - now)
        now = due
    assert delays[:3] == [BOOT_FIRST, 2 * BOOT_FIRST, 4 * BOOT_FIRST]
    assert max(delays) == BOOT_MAX == delays[-1]
    assert b.boot_errors == {"boot": "connection refused"}
    b.dialled("boot", "i-boot")
    assert b.boot_errors == {} and b.bootstrap_due(set(), now) == [
        ("boot", "i-boot"),
        ("other", "i-other"),
    ]
    assert b.next_bootstrap({"boot", "other"}) is None
