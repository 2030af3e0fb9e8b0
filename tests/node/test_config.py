"""Node configuration: TOML file, flags over it, one clear error for each mistake."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from dkms.node.config import ConfigError, NodeConfig, load
from dkms.node.configvalues import BadValue, bootstrap_introduction
from dkms.node.daemon import NodeError, serve
from dkms.node.p2p import NodeIdentity

NODE = NodeIdentity(bytes([7]) * 32)
GOV = "E" + "A" * 43  # well-formed prefixes of no real identifier
IDS = ("E" + "B" * 43, "E" + "C" * 43)


def test_defaults() -> None:
    assert load() == NodeConfig()


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nlisten = "/ip4/0.0.0.0/tcp/4001"\n'
        f'bootstrap = ["{NODE.prefix}@/ip4/127.0.0.1/tcp/5000"]\n'
        'request-timeout = 2\ndata_dir = "~/wit"\n'
    )
    config = load(path, listen="/ip4/127.0.0.1/tcp/4002", bootstrap=None)
    assert config.listen == "/ip4/127.0.0.1/tcp/4002"
    assert config.bootstrap == (f"{NODE.prefix}@/ip4/127.0.0.1/tcp/5000",)
    assert config.request_timeout == 2.0
    assert config.data_dir == Path("~/wit").expanduser()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role = 'judge'", "node.toml: role 'judge': not a role (expected witness or watcher)"),
        ("listen = 'localhost:4001'", "node.toml: listen 'localhost:4001': not a multiaddr"),
        ("colour = 'blue'", "node.toml: unknown setting 'colour'"),
        ("max_message = 'big'", "node.toml: max_message 'big': not a number of bytes"),
        ("request_timeout = -1", "node.toml: request_timeout -1: not a positive number"),
        ("request_timeout = inf", "node.toml: request_timeout inf: not a positive number"),
        ("http_port = 70000", "node.toml: http_port 70000: not a TCP port (expected 1-65535)"),
        ("metrics-port = 0", "node.toml: metrics-port 0: not a TCP port"),  # the old name
        ("bootstrap = [1, 2]", "node.toml: bootstrap [1, 2]: not a list of strings"),
        ("escrow_entries = 2.5", "node.toml: escrow_entries 2.5: not a whole number"),
        ("log_level = 'INFO'", "node.toml: log_level 'INFO': not a log level"),
        ("this is not toml", "node.toml: not valid TOML"),
        (
            "listen = '/ip4/127.0.0.1/tcp/1'\n[node]\nrole = 'witness'",
            "'listen' is outside the [node]",
        ),
        ("[node]\n[node.extra]\na = 1", "node.toml: unknown table [node.extra]"),
        ("[server]\nport = 1", "node.toml: unknown table [server]"),
        ("loglevel = 'info'", "unknown setting 'loglevel' (did you mean 'log_level'?)"),
        ("http_port = 1\nmetrics_port = 2", "'http_port' and 'metrics_port' both set http_port"),
        ("[node.bootstrap]\na = 'b'", "node.toml: bootstrap {'a': 'b'}: not a list of strings"),
    ],
)
def test_bad_settings_say_what_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    """Each names where the value was written (the file, as given, and the key), the value,
    what is wrong and what would do."""
    monkeypatch.chdir(tmp_path)
    Path("node.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load(Path("node.toml"))
    said = str(info.value)
    assert said.startswith("node.toml: ") and message in said, said
    assert "\n" not in str(info.value)


def test_the_same_mistake_as_a_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load(http_port="70000")
    assert str(info.value) == "--http-port 70000: not a TCP port (expected 1-65535)"
    assert load(http_port="8080", escrow_bytes="1KiB").http_port == 8080  # text, from argv
    assert load(metrics_port=8081).http_port == 8081  # the old name still reads
    assert load(max_message="2MiB", kel_page="512 KiB").kel_page == 512 << 10


def test_a_config_built_in_code_is_checked_by_check() -> None:
    with pytest.raises(ConfigError, match=r"^listen '/ip4/127\.0\.0\.1': no TCP port"):
        NodeConfig(listen="/ip4/127.0.0.1").check()
    assert NodeConfig(listen="/ip6/::/tcp/0").check().listen == "/ip6/::/tcp/0"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "nope.toml")


def test_bootstrap_accepts_a_libp2p_multiaddr() -> None:
    addr = "/ip4/127.0.0.1/tcp/4001"
    assert bootstrap_introduction(f"{addr}/p2p/{NODE.peer_id.to_base58()}") == (
        f"{NODE.prefix}@{addr}"
    )
    assert bootstrap_introduction(f"{NODE.prefix}@{addr}") == f"{NODE.prefix}@{addr}"
    with pytest.raises(BadValue, match="not the id of a dkms node"):
        bootstrap_introduction(f"{addr}/p2p/notapeerid")
    other = NodeIdentity(bytes([8]) * 32).peer_id.to_base58()
    with pytest.raises(BadValue, match="is not the peer of prefix"):
        bootstrap_introduction(f"{NODE.prefix}@{addr}/p2p/{other}")
    ip6 = f"{NODE.prefix}@/ip6/::1/tcp/4001"
    assert bootstrap_introduction(ip6) == ip6
    dns = f"{NODE.prefix}@/dns4/node.example.org/tcp/4001"
    assert bootstrap_introduction(dns) == dns  # py-libp2p resolves it when dialling
    config = load(bootstrap=(f"{addr}/p2p/{NODE.peer_id.to_base58()}",))
    assert config.bootstrap == (f"{addr}/p2p/{NODE.peer_id.to_base58()}",)  # kept as given


def test_a_watcher_needs_its_governance(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--governance"):
        load(role="watcher")
    config = load(role="watcher", governance=GOV, watch=IDS)
    assert config.watch == IDS
    path = tmp_path / "w.toml"
    path.write_text(
        f'role = "watcher"\ngovernance = "{GOV}"\nwatch = ["{IDS[0]}"]\nanomaly-after = 5\n'
    )
    assert load(path).anomaly_after == 5.0
    with pytest.raises(ConfigError, match="is a watcher setting"):
        load(governance=GOV)  # a witness has no governance to follow
    with pytest.raises(ConfigError, match=r"^--watch 'Ea': not an identifier prefix"):
        load(role="watcher", governance=GOV, watch=("Ea",))


async def test_one_identity_is_never_both_witness_and_watcher(tmp_path: Path) -> None:
    """The seed's rule: the witness of an identifier may not be a watcher judging it; a data
    directory (so a node key) that served as a witness refuses to start as a watcher."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(serve, load(data_dir=tmp_path), announce=lambda _: None)
            )
            nursery.cancel_scope.cancel()
        watcher = load(role="watcher", governance=GOV, data_dir=tmp_path)
        with pytest.raises(NodeError, match="may not be both a witness and a watcher"):
            await serve(watcher, announce=lambda _: None)
