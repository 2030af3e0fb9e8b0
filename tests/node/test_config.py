"""Node configuration: TOML file, flags over it, one clear error for each mistake."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from dkms.node.config import ConfigError, NodeConfig, load
from dkms.node.daemon import NodeError, bootstrap_introduction, serve
from dkms.node.p2p import NodeIdentity


def test_defaults() -> None:
    assert load() == NodeConfig()


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nlisten = "/ip4/0.0.0.0/tcp/4001"\nbootstrap = ["/ip4/127.0.0.1/tcp/5000"]\n'
        'request-timeout = 2\ndata_dir = "~/wit"\n'
    )
    config = load(path, listen="/ip4/127.0.0.1/tcp/4002", bootstrap=None)
    assert config.listen == "/ip4/127.0.0.1/tcp/4002"
    assert config.bootstrap == ("/ip4/127.0.0.1/tcp/5000",)
    assert config.request_timeout == 2.0
    assert config.data_dir == Path("~/wit").expanduser()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role = 'judge'", "role must be one of"),
        ("listen = 'localhost:4001'", "listen must be a multiaddr"),
        ("colour = 'blue'", "unknown setting"),
        ("max_message = 'big'", "max_message must be a int"),
        ("request_timeout = -1", "request_timeout must be positive"),
        ("http_port = 70000", "http_port must be a TCP port"),
        ("bootstrap = [1, 2]", "bootstrap must be a list"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_settings_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")


def test_bootstrap_accepts_a_libp2p_multiaddr() -> None:
    node = NodeIdentity(bytes([7]) * 32)
    addr = "/ip4/127.0.0.1/tcp/4001"
    assert bootstrap_introduction(f"{addr}/p2p/{node.peer_id.to_base58()}") == (
        f"{node.prefix}@{addr}"
    )
    assert bootstrap_introduction(f"{node.prefix}@{addr}") == f"{node.prefix}@{addr}"
    with pytest.raises(NodeError, match="not the id of a dkms node"):
        bootstrap_introduction(f"{addr}/p2p/notapeerid")


def test_a_watcher_needs_its_governance(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--governance"):
        load(role="watcher")
    config = load(role="watcher", governance="Egov", watch=("Ea", "Eb"))
    assert config.watch == ("Ea", "Eb")
    path = tmp_path / "w.toml"
    path.write_text('role = "watcher"\ngovernance = "Egov"\nwatch = ["Ea"]\nanomaly-after = 5\n')
    assert load(path).anomaly_after == 5.0
    with pytest.raises(ConfigError, match="watcher settings"):
        load(governance="Egov")  # a witness has no governance to follow


async def test_one_identity_is_never_both_witness_and_watcher(tmp_path: Path) -> None:
    """The seed's rule: the witness of an identifier may not be a watcher judging it; a data
    directory (so a node key) that served as a witness refuses to start as a watcher."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(serve, load(data_dir=tmp_path), announce=lambda _: None)
            )
            nursery.cancel_scope.cancel()
        watcher = load(role="watcher", governance="Egov", data_dir=tmp_path)
        with pytest.raises(NodeError, match="may not be both a witness and a watcher"):
            await serve(watcher, announce=lambda _: None)
