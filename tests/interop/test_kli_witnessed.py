"""keripy 1.3.6's `kli` uses our witnesses over HTTP: three real witness nodes (libp2p hosts,
SQLite stores, `--http-listen 127.0.0.1:PORT`), `kli init` resolving their OOBIs (its config
file's `iurls`), then `kli incept` (three witnesses, toad 2), `kli rotate` and `kli interact`,
each done only once kli holds every witness's receipt: by the mailbox (server-sent events),
and with `--receipt-endpoint`. Two of our watchers then hold both KELs, and `dkms keystate
--json` asked of each says `ok`.

kli waits for its receipts with no timeout of its own; each command is bounded here, and a
command that does not finish says what it printed.

Then the endpoint-mode identifier equivocates: keripy signs, with kli's own keystore, a second
interaction at sn 2 (`tools/keripy_rival.py`), which is posted over HTTP (`POST /`, as kli
posts) to one witness only, after the first was fully witnessed. That witness refuses it, keeps
it in its rivals log and publishes it; both watchers then stand the identifier duplicitous from
sn 2, and `GET /keystate/{prefix}` on a watcher's HTTP API says so, with evidence that `dkms
evidence verify` accepts offline."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from dkms.node.cli.main import main
from dkms.node.config import NodeConfig
from dkms.node.runtime.loop import Runtime
from dkms.node.testing.cluster import Cluster, free_port
from dkms.node.testing.keys import node_signer
from dkms.node.testing.localnet import LOOPBACK, start_node
from tests.node.test_http_app import fetch

from .conftest import load_tool

KLI_TIMEOUT = 60.0  # seconds; each step takes one or two against keripy's witnesses


def run_kli(kli: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(kli), *args], capture_output=True, text=True, timeout=KLI_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"kli {' '.join(args[:1])} did not finish in {KLI_TIMEOUT:g} s; it printed"
            f" {exc.stdout!r} {exc.stderr!r}"
        )


def port_of(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def keripy_rival(python: Path, *args: str) -> dict[str, str]:
    """tools/keripy_rival.py's answer: the rival's JSON body and its attachments."""
    script = Path(__file__).resolve().parents[2] / "tools" / "keripy_rival.py"
    done = subprocess.run(
        [str(python), str(script), *args],
        capture_output=True,
        text=True,
        timeout=KLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    answer: dict[str, str] = json.loads(done.stdout)
    return answer


async def test_kli_incepts_rotates_and_interacts_with_our_witnesses(
    kli: Path, keripy_env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"dkms-wit-{tmp_path.name}"[:60]
    env_tool = load_tool("keripy_env")
    try:
        with trio.fail_after(12 * KLI_TIMEOUT):
            async with trio.open_nursery() as nursery:
                runtimes: dict[str, Runtime] = {}
                hosts, urls = [], []
                for i in range(3):
                    port = free_port()
                    config = NodeConfig(
                        data_dir=tmp_path / f"w{i}",
                        listen=LOOPBACK,
                        http_listen=f"127.0.0.1:{port}",
                        bootstrap=tuple(h.introduction for h in hosts),
                    )
                    hosts.append(await start_node(nursery, config, runtimes))
                    urls.append(f"http://127.0.0.1:{port}/oobi/{hosts[-1].prefix}/controller")

                watchers = []
                watcher_port = free_port()
                for i in range(2):  # a governance that sends no roster: they follow every KEL
                    config = NodeConfig(
                        role="watcher",
                        http_listen=f"127.0.0.1:{watcher_port}" if i == 0 else None,
                        data_dir=tmp_path / f"v{i}",
                        listen=LOOPBACK,
                        governance=node_signer(41).verfer,
                        bootstrap=tuple(h.introduction for h in [*hosts, *watchers]),
                    )
                    watchers.append(await start_node(nursery, config, runtimes))

                async def kli_(*args: str) -> str:
                    done = await trio.to_thread.run_sync(lambda: run_kli(kli, *args))
                    assert done.returncode == 0, (args, done.stdout, done.stderr[-1500:])
                    return done.stdout

                name = "ctl"
                # kli init with our witnesses' OOBIs in its config file (`iurls`), resolved
                # before it returns.
                config_dir = tmp_path / "kli-config"
                (config_dir / "keri" / "cf").mkdir(parents=True)
                oobis = {"dt": "2026-01-01T00:00:00.000000+00:00", "iurls": urls}
                (config_dir / "keri" / "cf" / "ctl-oobis.json").write_text(json.dumps(oobis))
                out = await kli_(
                    "init", "--name", name, "--base", base, "--nopasscode",
                    "--config-dir", str(config_dir), "--config-file", "ctl-oobis",
                )  # fmt: skip
                for url in urls:
                    assert f"{url} succeeded" in out, out
                incept = ["--transferable", "--toad", "2", "--icount", "1", "--isith", "1"]
                incept += ["--ncount", "1", "--nsith", "1"]
                for host in hosts:
                    incept += ["--wits", host.prefix]
                prefixes = {}
                for mode, extra in (("mailbox", []), ("endpoint", ["--receipt-endpoint"])):
                    alias = f"ctl-{mode}"
                    common = ["--name", name, "--base", base, "--alias", alias]
                    out = await kli_("incept", *common, *incept, *extra)
                    prefix = out.split("Prefix", 1)[1].split()[0]
                    prefixes[mode] = prefix
                    out = await kli_("rotate", *common, *extra)
                    assert "New Sequence No.  1" in out, out
                    data = json.dumps([{"d": "EBabiu_JCkE0GbiglDXNB5C4NQq-hiGgxhHKXBxkiojg"}])
                    out = await kli_("interact", *common, "--data", data, *extra)
                    assert "New Sequence No.  2" in out, out
                for prefix in prefixes.values():
                    for host in hosts:
                        kel = runtimes[host.prefix].role.validator.kel(prefix)  # type: ignore[attr-defined]
                        assert kel is not None and kel.sn == 2
                        assert len(kel.last.receipts) == 3

                # Our watchers hold both KELs, fully receipted, with standing ok.
                def held() -> bool:
                    for watcher in watchers:
                        role = runtimes[watcher.prefix].role
                        for prefix in prefixes.values():
                            kel = role.validator.kel(prefix)  # type: ignore[attr-defined]
                            if kel is None or kel.sn != 2 or len(kel.last.receipts) < 2:
                                return False
                    return True

                while not held():
                    await runtimes[watchers[0].prefix].changed.wait()
                cluster = Cluster(tmp_path)
                for watcher in watchers:
                    for prefix in prefixes.values():
                        ask = ("keystate", prefix, "--from", watcher.introduction, "--json")
                        asked = await trio.to_thread.run_sync(functools.partial(cluster.dkms, *ask))
                        assert asked.returncode == 0, asked.stderr.decode()[-800:]
                        state = json.loads(asked.stdout)
                        assert state["standing"] == "ok" and state["sn"] == 2, state

                # keripy's keys sign a second sn 2, posted to one witness as kli posts.
                prefix = prefixes["endpoint"]
                kel = runtimes[hosts[0].prefix].role.validator.kel(prefix)  # type: ignore[attr-defined]
                honest = kel.at(2).event.said
                anchors = json.dumps([{"d": "EAnother_anchor_than_the_first_one_at_sn_2xy"}])
                rival = await trio.to_thread.run_sync(
                    functools.partial(
                        keripy_rival, keripy_env.python,
                        "--name", name, "--base", base, "--alias", "ctl-endpoint",
                        "--sn", "2", "--prior", kel.at(1).event.said, "--data", anchors,
                    )
                )  # fmt: skip
                assert json.loads(rival["body"])["d"] != honest
                headers = {
                    "Content-Type": "application/cesr+json",
                    "CESR-ATTACHMENT": rival["attachments"],
                    "CESR-DESTINATION": hosts[0].prefix,
                }
                got = await fetch(port_of(urls[0]), "/", "POST", rival["body"].encode(), headers)
                assert got.status == 409, (got.status, got.body)  # a conflict: refused, kept

                def flagged() -> bool:
                    return all(
                        runtimes[w.prefix].role.holdings.standing(prefix, True)  # type: ignore[attr-defined]
                        == ("duplicitous", 2)
                        for w in watchers
                    )

                while not flagged():
                    await runtimes[watchers[0].prefix].changed.wait()
                got = await fetch(watcher_port, f"/keystate/{prefix}")
                assert got.status == 200, got.body
                state = json.loads(got.body)
                assert state["standing"] == "duplicitous" and state["duplicitous_from"] == 2
                assert state["evidence"], state
                (tmp_path / "keystate.json").write_bytes(got.body)
                capsys.readouterr()
                assert main(["evidence", "verify", str(tmp_path / "keystate.json")]) == 0
                verified = capsys.readouterr().out
                assert "INVALID" not in verified and prefix in verified, verified
                nursery.cancel_scope.cancel()
    finally:
        env_tool.forget_base(base, ("ctl",))
