"""Every setting of `dkms-node run`, as README.md's tables list them: each wrong value stops the
command before anything starts, with exit status 2 and exactly the one line the table shows.

The README tables are the specification and this test reads them, so the two cannot drift:
each row is fed to `dkms-node run` in this process (`main(argv)`), by its flag or, for a
setting without one, in a config file; and the table must name every flag of `run` and every
key of `NodeConfig` (old names too), with the defaults `NodeConfig` has. `serve` is replaced
by a recorder, so a wrong value that was let through shows as a node started, at once.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

import dkms.node.daemon
from dkms.node.cli import node as node_cli
from dkms.node.config import _RENAMED, NodeConfig, load

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS_HEADER = "| flag | config key | default | a wrong value | prints, after `dkms-node: ` |"
FILE_HEADER = "| `node.toml` holds | prints, after `dkms-node: ` |"
GOV = "E" + "A" * 43  # a well-formed prefix, for the rows of watcher settings
WATCHER_ONLY = {"governance", "watch", "anomaly_after"}


@dataclass(frozen=True)
class Row:
    flags: tuple[str, ...]  # `--http-port`, `--metrics-port`
    keys: tuple[str, ...]  # `http_port`, `metrics_port`
    default: str  # the cell as written; "" on a row that repeats the setting above
    value: str
    prints: str


def spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def table(header: str) -> Iterator[list[str]]:
    """The cells of each row of the README table under `header`."""
    lines = README.read_text().splitlines()
    start = lines.index(header) + 2  # past the header and its |---| line
    for line in lines[start:]:
        if not line.startswith("|"):
            return
        yield [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def settings_rows() -> list[Row]:
    rows: list[Row] = []
    for flag, key, default, value, prints in table(SETTINGS_HEADER):
        if flag or key:
            flags, keys = tuple(spans(flag)), tuple(spans(key))
        else:  # another wrong value of the setting above
            flags, keys = rows[-1].flags, rows[-1].keys
        (wrong,), (line,) = spans(value), spans(prints)
        rows.append(Row(flags, keys, default, wrong, line))
    return rows


ROWS = settings_rows()
FILE_ROWS = [(spans(holds), spans(prints)[0]) for holds, prints in table(FILE_HEADER)]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Runs in an empty directory; a node that would start is recorded instead."""
    calls: list[Any] = []

    async def serve(config: NodeConfig, **kwargs: Any) -> None:
        calls.append(config)

    monkeypatch.setattr(dkms.node.daemon, "serve", serve)  # `main` imports it when it runs
    monkeypatch.chdir(tmp_path)
    return calls


def dkms_node(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = node_cli.main(argv)
    out, err = capsys.readouterr()
    assert out == "", out
    return status, err


def test_the_tables_were_found() -> None:
    assert len(ROWS) >= 30 and len(FILE_ROWS) >= 6


@pytest.mark.parametrize("row", ROWS, ids=[f"{(r.flags or r.keys)[0]} {r.value}" for r in ROWS])
def test_each_wrong_value_is_the_line_the_readme_shows(
    row: Row, started: list[Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--data-dir", "node"]
    if set(row.keys) & WATCHER_ONLY:
        argv += ["--role", "watcher", "--governance", GOV]
    if row.flags:
        argv += [row.flags[0], row.value]
    else:
        Path("node.toml").write_text(f"{row.keys[0]} = {row.value}\n")
        argv += ["--config", "node.toml"]
    status, err = dkms_node(argv, capsys)
    assert err == f"dkms-node: {row.prints}\n"
    assert status == 2
    assert started == []
    assert {p.name for p in tmp_path.iterdir()} <= {"node.toml"}  # no data directory made


@pytest.mark.parametrize(("holds", "prints"), FILE_ROWS, ids=[" ".join(h) for h, _ in FILE_ROWS])
def test_each_mistake_of_the_file_is_the_line_the_readme_shows(
    holds: list[str],
    prints: str,
    started: list[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("node.toml").write_text("\n".join(holds) + "\n")
    status, err = dkms_node(["run", "--config", "node.toml", "--data-dir", "node"], capsys)
    assert (status, err) == (2, f"dkms-node: {prints}\n")
    assert started == []
    assert {p.name for p in tmp_path.iterdir()} == {"node.toml"}


def test_the_table_names_every_flag_and_key_with_its_default() -> None:
    parser = node_cli._parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    run = commands.choices["run"]
    flags = {o for a in run._actions for o in a.option_strings} - {"-h", "--help"}
    assert {f for r in ROWS for f in r.flags} == flags
    keys = {f.name for f in fields(NodeConfig)} | set(_RENAMED)
    assert {k for r in ROWS for k in r.keys} == keys
    defaults = NodeConfig()
    for row in ROWS:
        if not row.keys or not row.default:
            continue
        key, written = row.keys[0], spans(row.default)
        if written:  # as a flag would give it
            assert getattr(load(**{key: written[0]}), key) == getattr(defaults, key), row
        else:  # none, off, every identifier: unset
            assert getattr(defaults, key) in ((), None, ""), row


def test_a_good_command_line_starts_the_node(
    started: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The counterpart of the rows above: the recorder does see a node start."""
    Path("node.toml").write_text('[node]\nlog-level = "warning"\nkel_page = "128KiB"\n')
    argv = ["run", "--data-dir", "node", "--config", "node.toml", "--http-port", "8080"]
    argv += ["--listen", "/ip6/::/tcp/4001", "--announce", "/dns4/node.example.org/tcp/4001"]
    status, err = dkms_node(argv, capsys)
    assert (status, err) == (0, "")
    (config,) = started
    assert (config.http_port, config.kel_page, config.log_level) == (8080, 128 << 10, "warning")
    assert config.announce == ("/dns4/node.example.org/tcp/4001",)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", "--bogus"], "dkms-node: unrecognized arguments: --bogus (see `dkms-node --help`)"),
        (
            ["run", "--listen"],
            "dkms-node: argument --listen: expected one argument (see `dkms-node run --help`)",
        ),
        (["launch"], "dkms-node: argument command: invalid choice: 'launch'"),
    ],
)
def test_usage_errors_are_one_line_too(
    argv: list[str], line: str, started: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = dkms_node(argv, capsys)
    assert status == 2 and err.startswith(line) and err.count("\n") == 1, err
    assert started == []
