"""Record what keripy 1.3.6's `kli` and keripy's own witnesses say to each other over HTTP.

Run from the checkout (any Python >= 3.11; keripy's venv is built by tools/keripy_env.py):

    .venv/bin/python tools/keripy_http_capture.py [--out tests/vectors/keripy-http]

It starts three keripy witnesses (keri.app.indirecting.setupWitness, the code behind `kli
witness start`, with the seeds of `kli witness demo`'s wan, wil and wes, so their prefixes are
keripy's well-known demo ones) in one keripy process on 127.0.0.1, each behind a logging TCP
relay on 127.0.0.1 (their `/loc/scheme` URLs name the relay, so everything kli sends, including
what it learns from OOBIs, goes through it). Then it runs, in a fresh keystore, the steps
below and writes what crossed each relay, byte for byte, parsed into HTTP exchanges, as one
JSON file per step:

    init             kli init with the three witness OOBIs in its config (iurls)
    oobi-witness     kli oobi resolve of a witness's controller OOBI, from a second keystore
    incept-mailbox   kli incept, 3 witnesses, toad 2: receipts come back by mailbox (SSE)
    rotate-mailbox   kli rotate
    interact-mailbox kli interact
    incept-endpoint  kli incept --receipt-endpoint (a second identifier): POST /receipts
    rotate-endpoint  kli rotate --receipt-endpoint
    interact-endpoint kli interact --receipt-endpoint
    oobi-controller  kli oobi resolve of the first identifier's witness OOBI
    errors           requests made here: wrong content type, missing attachment header,
                     bad JSON, unknown OOBI, GET /receipts, /ksn, /log, /query

Keripy's own storage (witnesses) goes to a temporary folder; kli's keystores go where kli
always puts them (/usr/local/var/keri or ~/.keri) under a `--base` made for the run, removed
at the end. Timestamps (`dt` fields, signatures over them, `t` offsets) differ from run to
run; the keys do not (fixed salts), so prefixes and inception events are the same each time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "vectors" / "keripy-http"
# `kli witness demo`'s salts (keri/app/cli/commands/witness/demo.py): wan, wil, wes.
WITNESSES = {"wan": b"wann-the-witness", "wil": b"will-the-witness", "wes": b"wess-the-witness"}
CONTROLLER_SALT = "0ACDEyMzQ1Njc4OWxtbm9aBc"  # a qb64 salt, so the controller's keys are fixed
KLI_TIMEOUT = 90.0  # seconds; kli itself waits for receipts forever
DT = "2025-01-01T00:00:00.000000+00:00"


# ---- the witnesses, run inside keripy's venv ---------------------------------------------


def serve_witnesses(spec_file: str) -> None:
    """Run the witnesses `spec_file` describes until killed (in keripy's Python)."""
    # keripy lives in its own venv: these import only in the process that venv runs.
    from hio.base import filing  # noqa: PLC0415
    from keri.app import configing, directing, habbing, indirecting  # noqa: PLC0415
    from keri.core import Salter  # noqa: PLC0415
    from keri.db import dbing  # noqa: PLC0415

    spec = json.loads(Path(spec_file).read_text())
    head = spec["head"]
    # Every LMDB, mailbox and config file keripy opens lands under `head`, not /usr/local/var.
    for klass in (filing.Filer, dbing.LMDBer):
        klass.HeadDirPath = head
        klass.AltHeadDirPath = head
    original = indirecting.createHttpServer

    def loopback(host: str, port: int, app: Any, *args: Any) -> Any:
        return original("127.0.0.1", port, app, *args)  # keripy binds 0.0.0.0

    indirecting.createHttpServer = loopback
    doers: list[Any] = []
    for wit in spec["witnesses"]:
        name = wit["name"]
        cfdir = Path(head) / "keri" / "cf"
        cfdir.mkdir(parents=True, exist_ok=True)
        (cfdir / f"{name}.json").write_text(
            json.dumps({"dt": DT, name: {"dt": DT, "curls": [wit["url"]]}})
        )
        cf = configing.Configer(name=name, base="", temp=False, reopen=True, clear=False)
        salt = Salter(raw=base64.b64decode(wit["salt_b64"])).qb64
        hby = habbing.Habery(name=name, base="", salt=salt, temp=False, cf=cf)
        doers.append(habbing.HaberyDoer(habery=hby))
        doers.extend(indirecting.setupWitness(alias=name, hby=hby, tcpPort=None,
                                              httpPort=wit["port"]))
    sys.stdout.flush()
    directing.runController(doers=doers, expire=0.0)


# ---- the logging relay -------------------------------------------------------------------


@dataclass
class Connection:
    witness: str
    step: str
    opened: float
    up: bytearray = field(default_factory=bytearray)  # client -> witness
    down: bytearray = field(default_factory=bytearray)  # witness -> client
    marks: list[tuple[float, str, int]] = field(default_factory=list)  # (time, dir, offset)
    closed: float | None = None


class Relay:
    """127.0.0.1:port -> 127.0.0.1:target, every byte kept per connection."""

    def __init__(self, witness: str, target: int, log: list[Connection], step: list[str]):
        self.witness, self.target, self.log, self.step = witness, target, log, step
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            conn = Connection(self.witness, self.step[0], time.monotonic())
            with self.lock:
                self.log.append(conn)
            server = socket.create_connection(("127.0.0.1", self.target))
            done = threading.Barrier(
                2, action=lambda c=conn: setattr(c, "closed", time.monotonic())
            )
            for src, dst, buf, tag in ((client, server, conn.up, "up"),
                                       (server, client, conn.down, "down")):
                threading.Thread(target=self._pump, args=(src, dst, buf, tag, conn, done),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray, tag: str,
              conn: Connection, done: threading.Barrier) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            conn.marks.append((time.monotonic(), tag, len(buf)))
            buf.extend(data)
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)
        done.wait()
        src.close()

    def close(self) -> None:
        self.sock.close()


# ---- HTTP/1.1 parsing of what was recorded -----------------------------------------------


def _head(data: bytes, at: int) -> tuple[str, list[list[str]], int] | None:
    end = data.find(b"\r\n\r\n", at)
    if end < 0:
        return None
    lines = data[at:end].decode("latin-1").split("\r\n")
    headers = [[k.strip(), v.strip()] for k, _, v in (line.partition(":") for line in lines[1:])]
    return lines[0], headers, end + 4


def _get(headers: list[list[str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def _body(data: bytes, at: int, headers: list[list[str]], to_close: bool) -> tuple[bytes, int, str]:
    """The body at `at`, where the next message starts, and how it was framed."""
    if (_get(headers, "Transfer-Encoding") or "").lower() == "chunked":
        out = bytearray()
        while True:
            eol = data.find(b"\r\n", at)
            if eol < 0:
                return bytes(out), len(data), "chunked, cut off"
            size = int(data[at:eol].split(b";")[0] or b"0", 16)
            at = eol + 2
            if size == 0:
                trailer_end = data.find(b"\r\n", at)
                return bytes(out), len(data) if trailer_end < 0 else trailer_end + 2, "chunked"
            out += data[at:at + size]
            at += size + 2
    length = _get(headers, "Content-Length")
    if length is not None:
        n = int(length)
        return data[at:at + n], at + n, "content-length" if len(data) >= at + n else "cut off"
    if to_close:
        return data[at:], len(data), "until close"
    return b"", at, "none"


def _text(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode()}


def _time_of(conn: Connection, tag: str, offset: int, start: float) -> float | None:
    best = None
    for t, mark_tag, at in conn.marks:
        if mark_tag == tag and at <= offset:
            best = t
    return None if best is None else round(best - start, 3)


def exchanges(conn: Connection, start: float, prefixes: dict[str, str]) -> list[dict[str, Any]]:
    """The request/response pairs of one connection, in order."""
    up, down = bytes(conn.up), bytes(conn.down)
    out: list[dict[str, Any]] = []
    ui = di = 0
    while ui < len(up):
        head = _head(up, ui)
        if head is None:
            out.append({"witness": conn.witness, "unparsed_request": _text(up[ui:])})
            break
        line, headers, at = head
        body, ui_next, _ = _body(up, at, headers, to_close=False)
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        request = {"method": method, "target": target, "headers": headers, **_text(body)}
        record: dict[str, Any] = {
            "witness": conn.witness, "witness_prefix": prefixes[conn.witness],
            "t_request": _time_of(conn, "up", ui, start), "request": request,
        }
        ui = ui_next
        rhead = _head(down, di)
        if rhead is None:
            record["response"] = None if di >= len(down) else {"unparsed": _text(down[di:])}
            out.append(record)
            continue
        status, rheaders, rat = rhead
        code = status.split(" ")[1] if status.count(" ") else "?"
        # hio answers 204 with `Transfer-Encoding: chunked` and a last chunk (RFC 9110 says a
        # 204 has no body): follow the headers, as hio's client does.
        chunked = (_get(rheaders, "Transfer-Encoding") or "").lower() == "chunked"
        no_body = method == "HEAD" or (code in ("204", "304") and not chunked)
        rbody, di_next, rframing = (b"", rat, "none") if no_body else _body(
            down, rat, rheaders, to_close=True)
        record["t_response"] = _time_of(conn, "down", di, start)
        record["response"] = {
            "status": int(code) if code.isdigit() else None, "status_line": status,
            "headers": rheaders, "framing": rframing, **_text(rbody),
        }
        di = di_next
        out.append(record)
    if conn.closed is not None:
        for record in out[-1:]:
            record["t_closed"] = round(conn.closed - start, 3)
    return out


# ---- the steps ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


class Capture:
    def __init__(self, out: Path, kli: Path, python: Path, work: Path):
        self.out, self.kli, self.python, self.work = out, kli, python, work
        self.log: list[Connection] = []
        self.step = ["setup"]
        token = secrets.token_hex(4)
        self.base = f"dkms-capture-{token}"
        self.names = (f"ctl-{token}", f"peer-{token}")
        self.relays: dict[str, Relay] = {}
        self.prefixes: dict[str, str] = {}
        self.started = time.monotonic()
        self.written: list[str] = []

    def start_witnesses(self) -> subprocess.Popen[str]:
        ports = {name: free_port() for name in WITNESSES}
        for name in WITNESSES:
            self.relays[name] = Relay(name, ports[name], self.log, self.step)
        spec = {"head": str(self.work / "witnesses"), "witnesses": [
            {"name": name, "port": ports[name], "salt_b64": base64.b64encode(salt).decode(),
             "url": f"http://127.0.0.1:{self.relays[name].port}/"}
            for name, salt in WITNESSES.items()]}
        spec_file = self.work / "witnesses.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [str(self.python), __file__, "--serve-witnesses", str(spec_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(self.prefixes) < len(WITNESSES):
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise SystemExit(f"keripy witnesses did not start: {line.strip()!r}")
            if line.startswith("Witness "):  # indirecting.WitnessStart: "Witness wan : B..."
                name, _, prefix = line[len("Witness "):].partition(" : ")
                self.prefixes[name.strip()] = prefix.strip()
        for name, port in ports.items():
            self._wait_listening(port, name)
        return proc

    @staticmethod
    def _wait_listening(port: int, name: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"witness {name} is not listening on {port}") from None
                time.sleep(0.05)

    def oobi(self, name: str, aid: str | None = None) -> str:
        url = f"http://127.0.0.1:{self.relays[name].port}/oobi"
        wit = self.prefixes[name]
        return f"{url}/{wit}/controller" if aid is None else f"{url}/{aid}/witness/{wit}"

    def kli_run(self, *args: str) -> str:
        cmd = [str(self.kli), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=KLI_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise SystemExit(f"kli {args[0]} did not finish in {KLI_TIMEOUT:.0f} s: "
                             f"{(exc.stdout or b'')!r}") from None
        if done.returncode != 0:
            raise SystemExit(f"kli {' '.join(args)} failed ({done.returncode}): "
                             f"{done.stdout.strip()} {done.stderr.strip()[-400:]}")
        return done.stdout

    def record(self, step: str, command: list[str], run: Any) -> Any:
        """Run one step and write the exchanges of the connections it opened."""
        self.step[0] = step
        before = len(self.log)
        start = time.monotonic()
        result = run()
        time.sleep(0.5)  # let the relays see the last bytes and closes of the step
        conns = self.log[before:]
        data = {
            "step": step,
            "command": command,
            "keripy": "1.3.6",
            "witnesses": self.prefixes,
            "witness_urls": {n: f"http://127.0.0.1:{r.port}/" for n, r in self.relays.items()},
            "stdout": result if isinstance(result, str) else None,
            "exchanges": [x for c in conns for x in exchanges(c, start, self.prefixes)],
        }
        text = json.dumps(data, indent=1) + "\n"
        # Bodies stay byte for byte (signatures cover them); only what kli printed and was
        # told names this run's temporary keystore.
        for run_name, shown in ((self.base, "<base>"), (self.names[0], "ctl"),
                                   (self.names[1], "peer"), (str(self.work), "<work>")):
            text = text.replace(run_name, shown)
        (self.out / f"{step}.json").write_text(text)
        self.written.append(step)
        return result

    def kli_step(self, step: str, *args: str) -> str:
        return str(self.record(step, ["kli", *args], lambda: self.kli_run(*args)))

    def run(self) -> None:
        wits = list(self.prefixes.values())
        b, cfdir = self.base, self.work / "ctl-config"
        ctl, peer = self.names
        (cfdir / "keri" / "cf").mkdir(parents=True)
        (cfdir / "keri" / "cf" / f"{ctl}.json").write_text(json.dumps(
            {"dt": DT, "iurls": [self.oobi(name) for name in WITNESSES]}))
        self.kli_step("init", "init", "--name", ctl, "--base", b, "--nopasscode", "--salt",
                      CONTROLLER_SALT, "--config-dir", str(cfdir), "--config-file", ctl)
        self.kli_run("init", "--name", peer, "--base", b, "--nopasscode")
        self.kli_step("oobi-witness", "oobi", "resolve", "--name", peer, "--base", b,
                      "--oobi-alias", "wan", "--oobi", self.oobi("wan"))
        incept = ["--transferable", "--toad", "2", "--icount", "1", "--isith", "1",
                  "--ncount", "1", "--nsith", "1"]
        for w in wits:
            incept += ["--wits", w]
        for mode, extra in (("mailbox", []), ("endpoint", ["--receipt-endpoint"])):
            alias = f"ctl-{mode}"
            common = ["--name", ctl, "--base", b, "--alias", alias]
            self.kli_step(f"incept-{mode}", "incept", *common, *incept, *extra)
            self.kli_step(f"rotate-{mode}", "rotate", *common, *extra)
            self.kli_step(f"interact-{mode}", "interact", *common, "--data",
                          json.dumps([{"d": "EBabiu_JCkE0GbiglDXNB5C4NQq-hiGgxhHKXBxkiojg"}]),
                          *extra)
        aid = self.kli_run("aid", "--name", ctl, "--base", b, "--alias", "ctl-mailbox").strip()
        self.kli_step("oobi-controller", "oobi", "resolve", "--name", peer, "--base", b,
                      "--oobi-alias", "ctl", "--oobi", self.oobi("wan", aid))
        self.record("errors", ["(raw requests, tools/keripy_http_capture.py)"],
                    lambda: self.errors(aid))

    def errors(self, aid: str) -> None:
        wan = self.relays["wan"].port
        prefix = self.prefixes["wan"]
        body = json.dumps({"v": "KERI10JSON000000_", "t": "ixn"}).encode()
        attach = "-AAB" + "A" * 88
        cases: list[tuple[str, str, bytes | None, dict[str, str]]] = [
            ("POST", "/", body, {"Content-Type": "application/json", "CESR-ATTACHMENT": attach}),
            ("POST", "/", body, {"Content-Type": "application/cesr+json"}),
            ("POST", "/", b"{not json", {"Content-Type": "application/cesr+json",
                                         "CESR-ATTACHMENT": attach}),
            ("POST", "/", body, {"Content-Type": "application/cesr", "CESR-ATTACHMENT": attach}),
            ("GET", f"/oobi/{'E' + 'A' * 43}/controller", None, {}),
            ("GET", f"/oobi/{aid}/witness/{prefix}", None, {}),
            ("GET", f"/oobi/{aid}", None, {}),
            ("GET", f"/oobi/{prefix}", None, {}),
            ("GET", "/oobi", None, {}),
            ("GET", f"/receipts?pre={aid}&sn=0", None, {}),
            ("GET", f"/receipts?pre={aid}&sn=9", None, {}),
            ("GET", f"/ksn?pre={aid}", None, {}),
            ("GET", f"/log?pre={aid}", None, {}),
            ("GET", f"/query?typ=kel&pre={aid}", None, {}),
            ("GET", "/nowhere", None, {}),
        ]
        for method, path, data, headers in cases:
            conn = HTTPConnection("127.0.0.1", wan, timeout=10)
            conn.request(method, path, body=data, headers={**headers,
                                                           "CESR-DESTINATION": prefix})
            conn.getresponse().read()
            conn.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve-witnesses"]:
        serve_witnesses(argv[1])
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    import keripy_env  # noqa: PLC0415 (a sibling file, found once tools/ is on the path)

    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else OUT
    try:
        env = keripy_env.ensure()
    except keripy_env.KeripyEnvError as exc:
        print(f"keripy_http_capture: {exc}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keripy-capture-") as work:
        capture = Capture(out, env.kli, env.python, Path(work))
        proc = capture.start_witnesses()
        try:
            capture.run()
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            for relay in capture.relays.values():
                relay.close()
            keripy_env.forget_base(capture.base, capture.names)
    print(f"wrote {', '.join(capture.written)} to {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
