"""Call setup by AoR in a 100-node overlay on loopback, next to baresip; idle node RSS.

    python benchmarks/call_setup.py [--nodes 100] [--calls 50] [--cold-calls 20]
                                    [--no-baresip] [--json FILE]

Three processes, as on three machines: the overlay (``--nodes`` - 2 bare DHT nodes in one
asyncio loop, each joined through a random earlier node), Bob (a real ``p2psip node
--auto-answer --tone 1000`` process that joins through a random overlay node and publishes his
signed record) and Alice (a :class:`~p2psip.node.Node` in this process, also joined through a
random overlay node): ``--nodes`` overlay members in all.

Each call is timed by Alice with ``time.perf_counter`` from ``node.call(AoR)`` to the first
SRTP packet from Bob being counted by her stream (statistics polled every millisecond):

* resolve: the DHT lookup of Bob's AoR and the check of his signed record (the locator's
  answer cache is cleared before every call, so every call looks up the DHT);
* INVITE/200: the INVITE over TLS (Bob's certificate checked against the key of his record)
  until the 200 OK;
* ICE: from the 200 OK until ICE has connected and the SRTP media started;
* first RTP: from there until the first SRTP packet from Bob arrived;
* total: the sum, the call setup a user waits for.

``warm`` calls come from one long-running Alice (her TLS connection to Bob is reused, Bob's key
is pinned); ``cold`` calls each come from a fresh Alice node (new overlay node, new TLS
connection), like ``p2psip call`` does. Each call then lasts 0.2 s and is hung up.

Baseline: baresip 1.0 to baresip on the same machine (Debian ``baresip-core``), dialled over
its ``ctrl_tcp`` socket, PCMU with mandatory SRTP (SDES); timed from the ``dial`` command to
its ``CALL_ESTABLISHED`` (200 OK) and ``CALL_RTPESTAB`` (first RTP packet received) events.
baresip does no ICE on loopback (it skips loopback candidates) and resolves nothing (it dials
``sip:bob@127.0.0.1:PORT``), so its figure is INVITE/200 + first RTP only.

RSS: an idle ``p2psip node`` process (default options: DHT node, Bonjour, UDP/TCP/TLS
transports), 3 s after it printed ``ready``, next to ``python -c "import asyncio"``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOMAIN = "bench.p2psip.test"
BOB = f"sip:bob@{DOMAIN}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the overlay process ----------------------------------------------------------------------
async def run_overlay(count: int, seed: int) -> None:
    """Start ``count`` DHT nodes, print their addresses, run until stdin closes."""
    from p2psip.locator.aio.dht import DHTLocator

    rng = random.Random(seed)
    nodes: list[Any] = []
    for _ in range(count):
        boot = [rng.choice(nodes).node.address] if nodes else []
        nodes.append(await DHTLocator.start(host="127.0.0.1", bootstrap=boot))
    print("READY " + " ".join(f"{h}:{p}" for h, p in (n.node.address[:2] for n in nodes)))
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for n in nodes:
        await n.close()


# -- Alice's calls ----------------------------------------------------------------------------
async def one_call(alice: Any, rate: int = 8000) -> dict[str, float]:
    """Call Bob by AoR; the setup phases in ms."""
    from p2psip.endpoint.session import SessionState, StateChanged
    from p2psip.locator.base import normalize_aor_text
    from p2psip.media.audio import ToneSource

    assert alice.locator is not None
    alice.locator.cache.invalidate(normalize_aor_text(BOB))
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    call = await alice.call(BOB, source=ToneSource(440, rate), wait=False, timeout=10)
    marks["resolved"] = time.perf_counter()

    def on_event(_session: object, event: object) -> None:
        if isinstance(event, StateChanged) and event.state is SessionState.CONFIRMED:
            marks["200"] = time.perf_counter()

    call.session.add_listener(on_event)
    await call.wait_established()
    marks["media"] = time.perf_counter()
    deadline = time.perf_counter() + 5
    while True:
        stats = call.statistics()
        if stats is not None and stats.packets_received > 0:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError("no RTP from Bob within 5 s")
        await asyncio.sleep(0.001)
    marks["rtp"] = time.perf_counter()
    srtp = call.srtp
    verified = call.verified_key is not None
    await asyncio.sleep(0.2)
    await call.hangup()
    if not (srtp and verified):
        raise RuntimeError(f"call without SRTP ({srtp}) or verified key ({verified})")
    ok_200 = marks.get("200", marks["media"])
    return {
        "resolve": 1000 * (marks["resolved"] - t0),
        "invite_200": 1000 * (ok_200 - marks["resolved"]),
        "ice": 1000 * (marks["media"] - ok_200),
        "first_rtp": 1000 * (marks["rtp"] - marks["media"]),
        "total": 1000 * (marks["rtp"] - t0),
    }


async def alice_calls(
    overlay: list[tuple[str, int]], warm: int, cold: int, seed: int
) -> dict[str, list[dict[str, float]]]:
    from p2psip.node import Node, NodeConfig

    rng = random.Random(seed)

    def alice() -> Any:
        return Node(
            NodeConfig(
                aor=f"sip:alice@{DOMAIN}",
                bootstrap=[rng.choice(overlay)],
                bonjour=False,
                publish=False,
                stats_interval=0,
            )
        )

    out: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
    node = alice()
    await node.start()
    try:
        for _ in range(warm):
            out["warm"].append(await one_call(node))
            await asyncio.sleep(0.05)
    finally:
        await node.stop()
    for _ in range(cold):
        node = alice()
        await node.start()
        try:
            out["cold"].append(await one_call(node))
        finally:
            await node.stop()
        await asyncio.sleep(0.05)
    return out


def p2psip_setup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    overlay_proc = subprocess.Popen(
        [sys.executable, __file__, "--role", "overlay", "--nodes", str(args.nodes - 2)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    bob = None
    try:
        assert overlay_proc.stdout is not None
        line = overlay_proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"overlay did not start: {line!r}")
        overlay = []
        for item in line.split()[1:]:
            host, _, port = item.rpartition(":")
            overlay.append((host, int(port)))
        rng = random.Random(args.seed)
        boot = rng.choice(overlay)
        bob_log = open(work / "bob.log", "w")  # noqa: SIM115 - closed below
        bob = subprocess.Popen(
            [
                sys.executable, "-m", "p2psip.cli.main", "node", "--aor", BOB,
                "--bootstrap", f"{boot[0]}:{boot[1]}", "--auto-answer", "--tone", "1000",
                "--no-bonjour", "--codec", "PCMU",
            ],
            stdin=subprocess.DEVNULL,
            stdout=bob_log,
            stderr=subprocess.STDOUT,
            env=env(),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "ready" not in (work / "bob.log").read_text():
            if bob.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bob did not start:\n" + (work / "bob.log").read_text())
            time.sleep(0.05)
        calls = asyncio.run(alice_calls(overlay, args.calls, args.cold_calls, args.seed))
        bob_log.close()
        return {"overlay_nodes": len(overlay) + 2, **calls}
    finally:
        if bob is not None and bob.poll() is None:
            bob.terminate()
            bob.wait(15)
        if overlay_proc.stdin is not None:
            overlay_proc.stdin.close()
        try:
            overlay_proc.wait(30)
        except subprocess.TimeoutExpired:
            overlay_proc.kill()
            overlay_proc.wait()


# -- baresip ----------------------------------------------------------------------------------
def _free_ports(count: int, step: int = 1) -> list[int]:
    """``count`` port numbers free for UDP and TCP on 127.0.0.1 (and the next ``step - 1``)."""
    rng = random.SystemRandom()
    found: list[int] = []
    while len(found) < count:
        base = rng.randrange(20000, 30000)
        ok = True
        for port in range(base, base + step):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError:
                        ok = False
        if ok and all(abs(base - f) > 200 for f in found):
            found.append(base)
    return found


BARESIP_CONFIG = """\
poll_method\tepoll
sip_listen\t127.0.0.1:{sip}
net_interface\t127.0.0.1
dns_server\t127.0.0.1:9
call_max_calls\t4
audio_player\talsa,null
audio_alert\talsa,null
audio_source\taufile,{wav}
ausrc_srate\t8000
ausrc_channels\t1
audio_level\tno
rtp_ports\t{rtp}-{rtp_end}
statmode_default\toff
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\talsa.so
module\taufile.so
module\tsrtp.so
module_tmp\tuuid.so
module_tmp\taccount.so
module_app\tcontact.so
module_app\tmenu.so
module_app\tctrl_tcp.so
ctrl_tcp_listen\t127.0.0.1:{ctrl}
"""


class BaresipControl:
    """A client of baresip's ctrl_tcp socket (JSON in netstrings)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        self.token = 0

    def send(self, command: str, params: str = "") -> None:
        self.token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self.token)})
        data = body.encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.perf_counter() + timeout
        while True:
            if b":" in self.buffer:
                size, rest = self.buffer.split(b":", 1)
                n = int(size)
                if len(rest) >= n + 1:
                    self.buffer = rest[n + 1 :]
                    return json.loads(rest[:n])  # type: ignore[no-any-return]
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def wait_event(self, kinds: set[str], timeout: float = 5.0) -> tuple[str, float]:
        while True:
            message = self.next_message(timeout)
            if message is None:
                raise RuntimeError(f"no {kinds} from baresip within {timeout} s")
            if message.get("event") and message.get("type") in kinds:
                return str(message["type"]), time.perf_counter()

    def close(self) -> None:
        self.sock.close()


def baresip_setup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from p2psip.media.audio import ToneSource, WavFileSink

    binary = shutil.which("baresip")
    if binary is None:
        return {"skipped": "baresip not installed (apt-get install baresip-core)"}
    wav = work / "tone8k.wav"
    with WavFileSink(wav, 8000) as sink:
        sink.write(ToneSource(1000, 8000, 0.5).read(8000 * 30))
    sip_a, sip_b, ctrl_a, ctrl_b, rtp_a, rtp_b = _free_ports(6, step=2)
    procs = []
    usage = subprocess.run([binary, "-h"], capture_output=True, text=True)
    version = next(
        (
            x.split(" Copyright")[0]
            for x in (usage.stdout + usage.stderr).splitlines()
            if x.startswith("baresip v")
        ),
        "baresip",
    )
    try:
        for name, sip, ctrl, rtp in (
            ("bob", sip_b, ctrl_b, rtp_b),
            ("alice", sip_a, ctrl_a, rtp_a),
        ):
            folder = work / f"baresip-{name}"
            folder.mkdir()
            (folder / "config").write_text(
                BARESIP_CONFIG.format(sip=sip, wav=wav, rtp=rtp, rtp_end=rtp + 99, ctrl=ctrl)
            )
            (folder / "accounts").write_text(
                f"<sip:{name}@127.0.0.1:{sip}>;regint=0;answermode=auto;mediaenc=srtp-mand\n"
            )
            (folder / "contacts").write_text("")  # else baresip subscribes to an outside URI
            log = open(work / f"baresip-{name}.log", "w")  # noqa: SIM115 - closed with the run
            procs.append(
                (
                    subprocess.Popen(
                        [binary, "-f", str(folder)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )
        control = None
        deadline = time.monotonic() + 10
        while control is None:
            try:
                control = BaresipControl(ctrl_a)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("baresip's ctrl_tcp did not open") from None
                time.sleep(0.05)
        time.sleep(0.5)  # let Bob's instance finish starting too
        results = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            control.send("dial", f"sip:bob@127.0.0.1:{sip_b}")
            marks: dict[str, float] = {}
            while "CALL_RTPESTAB" not in marks:
                kind, at = control.wait_event({"CALL_ESTABLISHED", "CALL_RTPESTAB", "CALL_CLOSED"})
                if kind == "CALL_CLOSED":
                    raise RuntimeError("baresip call closed during setup")
                marks[kind] = at
            established = marks.get("CALL_ESTABLISHED", marks["CALL_RTPESTAB"])
            results.append(
                {
                    "invite_200": 1000 * (established - t0),
                    "first_rtp": 1000 * (marks["CALL_RTPESTAB"] - established),
                    "total": 1000 * (marks["CALL_RTPESTAB"] - t0),
                }
            )
            time.sleep(0.2)
            control.send("hangup")
            control.wait_event({"CALL_CLOSED"})
            time.sleep(0.05)
        control.close()
        return {"version": version, "calls": results}
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


# -- RSS --------------------------------------------------------------------------------------
def rss_figures(work: Path) -> dict[str, float]:
    # VmRSS read by the child itself (ru_maxrss would carry the forking parent's high-water mark)
    probe = (
        "import asyncio\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmRSS:'): print(int(line.split()[1]))\n"
    )
    baseline = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    out = {"python_import_asyncio_mib": int(baseline.stdout) / 1024}
    cases: list[tuple[str, list[str], list[str]]] = [
        ("node_mib", ["--loop", "asyncio"], []),
        ("node_lan_only_mib", ["--loop", "asyncio"], ["--lan-only"]),
    ]
    if importlib.util.find_spec("uvloop") is not None:
        cases.append(("node_uvloop_mib", ["--loop", "uvloop"], []))
    for label, options, extra in cases:
        log_path = work / f"rss-{label}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "p2psip.cli.main",
                    *options,
                    "node",
                    "--aor",
                    f"sip:idle@{DOMAIN}",
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env(),
            )
            try:
                deadline = time.monotonic() + 30
                while "ready" not in log_path.read_text():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("idle node did not start: " + log_path.read_text())
                    time.sleep(0.05)
                time.sleep(3.0)
                out[label] = rss_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(15)
    return out


# -- report -----------------------------------------------------------------------------------
PHASES = ("resolve", "invite_200", "ice", "first_rtp", "total")


def summarize(calls: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for phase in PHASES:
        values = [c[phase] for c in calls if phase in c]
        if values:
            out[phase] = {
                "median": statistics.median(values),
                "p95": percentile(values, 0.95),
                "min": min(values),
                "max": max(values),
            }
    return out


def print_table(report: dict[str, Any]) -> None:
    rows = []
    p2p = report["p2psip"]
    for mode in ("warm", "cold"):
        calls = p2p.get(mode) or []
        if calls:
            first = calls[0]["total"]
            rows.append((f"p2psip by AoR, {mode} ({len(calls)} calls)", summarize(calls), first))
    bare = report.get("baresip", {})
    if bare.get("calls"):
        rows.append(
            (f"baresip -> baresip ({len(bare['calls'])} calls)", summarize(bare["calls"]), None)
        )
    print(
        f"call setup on loopback, {p2p['overlay_nodes']}-node overlay; median / p95 in ms "
        "(first call in brackets)"
    )
    header = f"{'':38}" + "".join(f"{p:>16}" for p in PHASES)
    print(header)
    for name, summary, first in rows:
        cells = []
        for phase in PHASES:
            s = summary.get(phase)
            cells.append(f"{s['median']:7.1f} /{s['p95']:6.1f}" if s else f"{'-':>14}")
        line = f"{name:38}" + "".join(f"{c:>16}" for c in cells)
        if first is not None:
            line += f"  [{first:.1f}]"
        print(line)
    if "skipped" in bare:
        print(f"baresip: {bare['skipped']}")
    elif bare.get("version"):
        print(f"baresip: {bare['version']}, PCMU + SDES SRTP (mandatory), no ICE, no resolve")
    rss = report["rss"]
    print(
        f"idle RSS: p2psip node {rss['node_mib']:.1f} MiB "
        f"({rss['node_mib'] * 1.048576:.1f} MB), --lan-only {rss['node_lan_only_mib']:.1f} MiB"
        + (
            f", with uvloop {rss['node_uvloop_mib']:.1f} MiB "
            f"({rss['node_uvloop_mib'] * 1.048576:.1f} MB)"
            if "node_uvloop_mib" in rss
            else ""
        )
        + f"; python -c 'import asyncio' {rss['python_import_asyncio_mib']:.1f} MiB"
        " (target <= 40 MB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--role", choices=["main", "overlay"], default="main", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--nodes", type=int, default=100, help="overlay members, Alice and Bob included"
    )
    parser.add_argument("--calls", type=int, default=50, help="warm calls (and baresip calls)")
    parser.add_argument("--cold-calls", type=int, default=20, help="calls from a fresh node each")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baresip", action="store_true", help="skip the baresip baseline")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.role == "overlay":
        asyncio.run(run_overlay(args.nodes, args.seed))
        return 0
    if args.nodes < 4:
        parser.error("--nodes must be at least 4")
    with tempfile.TemporaryDirectory(prefix="p2psip-bench-") as tmp:
        work = Path(tmp)
        report: dict[str, Any] = {"p2psip": p2psip_setup(args, work)}
        report["baresip"] = (
            {"skipped": "--no-baresip"} if args.no_baresip else baresip_setup(args, work)
        )
        report["rss"] = rss_figures(work)
    report["summary"] = {
        "p2psip_warm": summarize(report["p2psip"]["warm"]),
        "p2psip_cold": summarize(report["p2psip"]["cold"]),
        "baresip": summarize(report["baresip"].get("calls", [])),
    }
    report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
