"""Nodes as `dkms-node run` processes and the `dkms` command, driven as a user drives them.

For tests and benchmarks that must see what only separate processes show (a node dying, the
commands' own behaviour under load). Everything listens on 127.0.0.1 only. `Cluster` starts
witnesses and watchers (each bootstrapped from those started before it) and stops them all on
exit; `Cluster.dkms(...)` runs the command line with a home and passphrase of its own;
`signed_kel` makes a long KEL for an identifier the home created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Final

import trio

from dkms.node.client.controller import ControllerClient
from dkms.node.client.keystore import Keystore
from dkms.node.testing.keys import node_signer
from dkms.protocol.attachments import Attachments
from dkms.protocol.crypto import Signer
from dkms.protocol.events import interact
from dkms.protocol.stream import Message, messagize, parse_stream

BIN: Final = Path(sys.executable).parent
LOOPBACK: Final = "/ip4/127.0.0.1/tcp/0"
PASSPHRASE: Final = "cluster passphrase"  # a throw-away home's, never a real secret
STARTUP: Final = 30.0  # seconds for a node process to print its introduction


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """One `dkms-node run` process; its log is `DATA_DIR.log`, its metrics on a free port."""

    def __init__(
        self,
        data_dir: Path,
        args: list[str],
        bootstrap: list[str],
        listen: str = LOOPBACK,
        startup: float = STARTUP,
    ) -> None:
        self.data_dir = data_dir
        self.args, self.bootstrap = args, bootstrap
        self.metrics_port = free_port()
        self.log_path = data_dir.with_name(data_dir.name + ".log")
        self.log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [str(BIN / "dkms-node"), "run", "--data-dir", str(data_dir)]
        command += ["--listen", listen, "--metrics-port", str(self.metrics_port), *args]
        for intro in bootstrap:
            command += ["--bootstrap", intro]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
            )
        self.intro = self._introduction(startup)
        self.prefix = self.intro.split("@", 1)[0]

    def _introduction(self, startup: float) -> str:
        lines: list[bytes] = []
        stdout = self.process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup)
        words = (lines[0] if lines else b"").decode(errors="replace").split()
        if len(words) != 2:
            self.kill()
            said = self.log()[self.log_from :][-2000:] or "(nothing on stderr)"
            raise RuntimeError(f"{self.data_dir} did not start in {startup:g} s:\n{said}")
        return words[1]

    def alive(self) -> bool:
        return self.process.poll() is None

    def restart(self, startup: float = STARTUP) -> NodeProcess:
        """The same node (data dir, arguments, address) started again; this one must be down."""
        assert not self.alive()
        listen = self.intro.split("@", 1)[1]
        return NodeProcess(self.data_dir, self.args, self.bootstrap, listen, startup)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metric(self, name: str) -> float | None:
        """A metric's value (unlabelled), or None while the node cannot say."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class Cluster:
    """Witness and watcher processes under `root`, and a `dkms` home; `with` stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.nodes: list[NodeProcess] = []

    def start(self, role: str, *args: str) -> NodeProcess:
        name = f"{role}{sum(1 for n in self.nodes if n.data_dir.name.startswith(role))}"
        boot = [n.intro for n in self.nodes[-3:]]
        node = NodeProcess(self.root / name, ["--role", role, *args], boot)
        self.nodes.append(node)
        return node

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            node.stop()

    def dead(self) -> list[str]:
        return [f"{n.data_dir.name}:\n{n.log()[-3000:]}" for n in self.nodes if not n.alive()]

    def command(self, *args: str) -> list[str]:
        return [str(BIN / "dkms"), "--home", str(self.home), *args]

    def env(self) -> dict[str, str]:
        return os.environ | {"DKMS_PASSPHRASE": PASSPHRASE}

    def dkms(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
        """Run `dkms --home HOME ARGS...` to the end; its output is captured."""
        return subprocess.run(
            self.command(*args), capture_output=True, env=self.env(), timeout=timeout, check=False
        )

    def spawn(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start `dkms --home HOME ARGS...` in the background, its output going to `log`."""
        with log.open("wb") as sink:
            return subprocess.Popen(
                self.command(*args), stdout=sink, stderr=subprocess.STDOUT, env=self.env()
            )

    def signed_kel(self, name: str, count: int) -> tuple[str, bytes]:
        """The home's inception of `name` followed by `count - 1` interactions it signs."""
        record = Keystore.open(self.home, PASSPHRASE).load(name)
        signer = Signer(record["current"][0])
        icp = (self.home / "kels" / f"{name}.cesr").read_bytes()
        (first,) = [f for f in parse_stream(icp) if isinstance(f, Message)]
        prefix, prior = first.event.prefix, first.event.said
        parts = [icp]
        for sn in range(1, count):
            event = interact(prefix, prior=prior, sn=sn, anchors=[{"n": sn}])
            parts.append(messagize(event, Attachments(sigs=(signer.sign_indexed(event.raw, 0),))))
            prior = event.said
        return prefix, b"".join(parts)


def wait_until(what: str, done: object, timeout: float, every: float = 0.5) -> float:
    """Poll `done()` until true; the seconds it took, or `TimeoutError` naming `what`."""
    assert callable(done)
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(every)
    return time.monotonic() - start


async def start_network(
    cluster: Cluster, witnesses: int = 4, watchers: int = 2
) -> tuple[list[NodeProcess], list[NodeProcess]]:
    """Witness processes, then watcher processes (of a governance that never sends a roster:
    they follow every KEL anyway), each started from a worker thread."""
    started = [await trio.to_thread.run_sync(cluster.start, "witness") for _ in range(witnesses)]
    governance = node_signer(41).verfer
    watching = [
        await trio.to_thread.run_sync(cluster.start, "watcher", "--governance", governance)
        for _ in range(watchers)
    ]
    return started, watching


async def incept_all(
    client: ControllerClient, names: list[str], witnesses: list[str], toad: int
) -> None:
    """Incept each of `names` with fresh keys and `witnesses`, one after another, each
    fully witnessed before the next."""
    ctl = client.controller
    for name in names:
        seeds = ([os.urandom(32)], [os.urandom(32)])
        effects = ctl.incept(name, *seeds, witnesses=witnesses, toad=toad, now=0.0)
        await client.witnessed(effects, ctl.identity(name).last_said)
