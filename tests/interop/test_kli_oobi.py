"""keripy 1.3.6's `kli oobi resolve` of our witness's OOBI: a real node (libp2p host, SQLite
store) serving `--http-listen 127.0.0.1:0`, and kli in its own venv, resolving
`http://127.0.0.1:PORT/oobi/{W}/controller` (our `icp`, signed `/loc/scheme` and
`/end/role/add`), then listing what it learned with `kli oobi ... ` and `kli contacts`."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest
import trio

from dkms.node.config import NodeConfig
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.localnet import LOOPBACK, start_node

from .conftest import load_tool

KLI_TIMEOUT = 60.0  # seconds; kli resolves a reachable OOBI in about one


def run_kli(kli: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(kli), *args], capture_output=True, text=True, timeout=KLI_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"kli {args[0]} {args[1]} did not finish in {KLI_TIMEOUT:g} s: {exc.stdout!r}")


async def test_kli_resolves_our_witness_oobi(
    kli: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkms.node")
    base = f"dkms-oobi-{tmp_path.name}"[:60]
    env_tool = load_tool("keripy_env")
    try:
        with trio.fail_after(3 * KLI_TIMEOUT):
            async with trio.open_nursery() as nursery:
                runtimes: dict[str, Runtime] = {}
                config = NodeConfig(
                    data_dir=tmp_path / "w", listen=LOOPBACK, http_listen="127.0.0.1:0"
                )
                host = await start_node(nursery, config, runtimes)
                lines = [r.getMessage() for r in caplog.records]
                (line,) = [m for m in lines if "HTTP API on" in m]
                found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                assert found is not None, line
                url = f"{found.group(0)}/oobi/{host.prefix}/controller"

                done = await trio.to_thread.run_sync(
                    run_kli, kli, "init", "--name", "peer", "--base", base, "--nopasscode"
                )
                assert done.returncode == 0, done.stderr[-800:]
                done = await trio.to_thread.run_sync(
                    run_kli, kli, "oobi", "resolve", "--name", "peer", "--base", base,
                    "--oobi-alias", "ours", "--oobi", url,
                )  # fmt: skip
                assert done.returncode == 0, (done.stdout, done.stderr[-800:])
                assert f"{url} resolved" in done.stdout, done.stdout
                done = await trio.to_thread.run_sync(
                    run_kli, kli, "contacts", "list", "--name", "peer", "--base", base
                )
                assert done.returncode == 0, done.stderr[-800:]
                assert host.prefix in done.stdout and "ours" in done.stdout, done.stdout
                nursery.cancel_scope.cancel()
    finally:
        env_tool.forget_base(base, ("peer",))
