"""Secrets at rest: the node seed, the passphrase sources, and the controller keystore."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkms.node.client.keystore import HEADER, KEYS, MINIMUM, Keystore, KeystoreError
from dkms.node.secretfiles import (
    SEED_FILE,
    Passphrase,
    SecretError,
    load_or_create_node_seed,
    passphrase_from,
)

PASS = "correct horse battery staple"


def record() -> dict[str, object]:
    return {
        "prefix": "Eabc",
        "current": [os.urandom(32), os.urandom(32)],
        "next": [os.urandom(32)],
        "history": [[os.urandom(32)]],
        "kt": 2,
    }


def files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------- node seed


def test_node_seed_is_made_once_private_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "node"
    seed = load_or_create_node_seed(data)
    assert len(seed) == 32
    assert mode(data / SEED_FILE) == 0o600
    assert mode(data) == 0o700
    assert load_or_create_node_seed(data) == seed
    assert [p.name for p in data.iterdir()] == [SEED_FILE]  # no temporary file left behind


def test_node_seed_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    load_or_create_node_seed(tmp_path)
    (tmp_path / SEED_FILE).chmod(0o640)
    with pytest.raises(SecretError, match=r"mode 640.*chmod 600 .*node\.seed"):
        load_or_create_node_seed(tmp_path)
    (tmp_path / SEED_FILE).chmod(0o600)
    load_or_create_node_seed(tmp_path)


def test_node_seed_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SEED_FILE
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="5 bytes instead of 32"):
        load_or_create_node_seed(tmp_path)


# ------------------------------------------------------------------------- passphrases


def test_passphrase_precedence_file_env_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "pass"
    file.write_text("from file\n")
    file.chmod(0o600)  # a passphrase file others may read is refused
    monkeypatch.setenv("DKMS_PASSPHRASE", "from env")

    def ask(prompt: str) -> str:
        return "from prompt"

    assert passphrase_from(file=file, ask=ask).reveal() == b"from file"
    assert passphrase_from(ask=ask).reveal() == b"from env"
    monkeypatch.delenv("DKMS_PASSPHRASE")
    assert passphrase_from(ask=ask).reveal() == b"from prompt"
    with pytest.raises(SecretError, match="no passphrase"):
        passphrase_from(prompt=None)


def test_passphrase_problems_are_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="is empty"):
        passphrase_from(file=empty)
    with pytest.raises(SecretError, match="cannot read passphrase file"):
        passphrase_from(file=tmp_path / "missing")
    monkeypatch.setenv("DKMS_PASSPHRASE", "")
    with pytest.raises(SecretError, match="DKMS_PASSPHRASE is set but empty"):
        passphrase_from()
    monkeypatch.delenv("DKMS_PASSPHRASE")
    answers = iter(["one", "two"])
    with pytest.raises(SecretError, match="differ"):
        passphrase_from(confirm=True, ask=lambda _: next(answers))


def test_passphrase_never_shows_itself() -> None:
    phrase = Passphrase(PASS)
    assert PASS not in repr(phrase) and PASS not in str(phrase) and PASS not in f"{phrase}"
    # The same phrase typed composed or decomposed is the same passphrase.
    assert Passphrase("caf\u00e9").reveal() == Passphrase("cafe\u0301").reveal()


# ------------------------------------------------------------------------- keystore


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    home = tmp_path / "home"
    alice, bob = record(), record()
    store = Keystore.open(home, Passphrase(PASS), cost=MINIMUM)
    store.save("alice", alice)
    store.save("bob", bob)
    assert store.names() == ["alice", "bob"]
    again = Keystore.open(home, PASS)  # the cost is read from keystore.json
    assert again.load("alice") == alice
    assert again.load("bob") == bob
    alice["next"] = [os.urandom(32)]
    again.save("alice", alice)  # overwrite (a rotation)
    assert Keystore.open(home, PASS).load("alice") == alice
    assert PASS not in repr(again)


def test_wrong_passphrase(tmp_path: Path) -> None:
    Keystore.open(tmp_path, PASS, cost=MINIMUM).save("alice", record())
    with pytest.raises(KeystoreError, match=rf"^wrong passphrase for {tmp_path}") as info:
        Keystore.open(tmp_path, "not it")
    assert "\n" not in str(info.value)


def test_files_are_private_and_hold_no_secret_in_the_clear(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = record()
    store = Keystore.open(home, PASS, cost=MINIMUM)
    store.save("alice", secret)
    assert mode(home) == 0o700 and mode(home / KEYS) == 0o700
    seeds = [s for group in ("current", "next") for s in secret[group]]  # type: ignore[attr-defined]
    needles = [PASS.encode()]
    for s in seeds:
        needles += [s, s.hex().encode(), base64.b64encode(s), base64.urlsafe_b64encode(s)]
        needles += [base64.b64encode(s).rstrip(b"=")]
    assert len(files(home)) == 2
    for path in files(home):
        assert mode(path) == 0o600, path
        content = path.read_bytes()
        assert not any(n in content for n in needles), path


def test_unknown_and_bad_names(tmp_path: Path) -> None:
    store = Keystore.open(tmp_path, PASS, cost=MINIMUM)
    with pytest.raises(KeystoreError, match="no identifier named 'carol'"):
        store.load("carol")
    for bad in ("../escape", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(KeystoreError, match="bad identifier name"):
            store.save(bad, record())


def test_tampered_key_file_is_reported(tmp_path: Path) -> None:
    store = Keystore.open(tmp_path, PASS, cost=MINIMUM)
    store.save("alice", record())
    path = tmp_path / KEYS / "alice.key"
    document = json.loads(path.read_text())
    box = bytearray(base64.b64decode(document["box"]))
    box[-1] ^= 1
    document["box"] = base64.b64encode(bytes(box)).decode()
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match=r"alice\.key is damaged or was altered"):
        store.load("alice")
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match="damaged: not JSON"):
        store.load("alice")


def test_swapped_key_files_are_reported(tmp_path: Path) -> None:
    store = Keystore.open(tmp_path, PASS, cost=MINIMUM)
    store.save("alice", record())
    store.save("bob", record())
    keys = tmp_path / KEYS
    os.replace(keys / "bob.key", keys / "alice.key")
    with pytest.raises(KeystoreError, match="holds the keys of 'bob', not 'alice'"):
        store.load("alice")


@settings(max_examples=150, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255))
def test_any_byte_change_to_a_key_file_fails_cleanly_or_changes_nothing(
    tmp_path_factory: pytest.TempPathFactory, where: float, value: int
) -> None:
    home = tmp_path_factory.mktemp("ks")
    store = Keystore.open(home, PASS, cost=MINIMUM)
    original = record()
    store.save("alice", original)
    path = home / KEYS / "alice.key"
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] = value
    path.write_bytes(bytes(data))
    with contextlib.suppress(KeystoreError):
        assert store.load("alice") == original  # e.g. a space became a tab


def test_tampered_header(tmp_path: Path) -> None:
    Keystore.open(tmp_path, PASS, cost=MINIMUM)
    header = tmp_path / HEADER
    document = json.loads(header.read_text())
    document["kdf"]["memlimit"] = 1 << 42  # would make every open allocate 4 TiB
    header.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="out-of-range argon2id cost"):
        Keystore.open(tmp_path, PASS)
    header.write_text("[]")
    with pytest.raises(KeystoreError, match="not a dkms-keystore file"):
        Keystore.open(tmp_path, PASS)


def test_missing_header_with_keys_is_not_silently_replaced(tmp_path: Path) -> None:
    Keystore.open(tmp_path, PASS, cost=MINIMUM).save("alice", record())
    (tmp_path / HEADER).unlink()
    with pytest.raises(KeystoreError, match=r"keystore\.json is missing"):
        Keystore.open(tmp_path, PASS, cost=MINIMUM)


def test_change_passphrase_keeps_the_keys(tmp_path: Path) -> None:
    store = Keystore.open(tmp_path, PASS, cost=MINIMUM)
    alice = record()
    store.save("alice", alice)
    store.change_passphrase("new phrase", cost=MINIMUM)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        Keystore.open(tmp_path, PASS)
    assert Keystore.open(tmp_path, "new phrase").load("alice") == alice
    assert Keystore.exists(tmp_path) and not Keystore.exists(tmp_path / "elsewhere")
