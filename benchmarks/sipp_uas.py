"""Call rate of ``p2psip uas`` under SIPp load, next to SIPp's own ``-sn uas`` in the same run.

    python benchmarks/sipp_uas.py [--seconds 30] [--transport udp|tcp] [--quick]

What is measured: the highest rate (calls per second, INVITE-200-ACK-BYE-200 with ``-d 0``) that
a server *sustains* for ``--seconds``. A probe at rate R runs

    sipp -sn uac HOST:PORT -r R -m R*seconds -d 0 -timeout (seconds+15)s -timeout_error ...

against a freshly started server and counts as sustained when SIPp exits 0, no call failed,
retransmissions stay at or below ``--max-retrans`` (fraction of calls; default 0.1 %; every
count is shown) and the achieved rate - successful calls / (SIPp's last stats time - its start
time), so late answers at the end count against it - is within ``--tolerance`` (5 %) of R.

Search (identical for both servers): start at ``--start`` cps and double until a probe fails, the
rate would pass ``--max-rate`` or, for p2psip, the best rate SIPp's own UAS sustained (which is
then SIPp's limit, not the server's); then bisect between the last good and the first bad rate
for ``--bisect-steps`` steps. At most ``--max-probes`` probes per server. SIPp's UAS is measured
first. A probe is cut short as soon as a call fails or the target rate has become unreachable.

CPU: utime+stime from /proc/PID/stat of the server (and of the SIPp client, via wait4) over the
probe, in % of one core. The last line is ``ratio p2psip/sipp: X.XX`` (best p2psip rate / best
SIPp rate).

The SIPp client and the server under test share the machine's cores (2 on the reference
box) and compete for them - the figures are for that set-up, loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# small helpers: ports, /proc, SIPp statistics
# ---------------------------------------------------------------------------------------------

_used_ports: set[int] = set()
_rng = random.SystemRandom()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port(count: int = 1) -> int:
    """``count`` consecutive ports free for UDP and TCP, below the ephemeral range."""
    low, high = 10000, 32000
    with contextlib.suppress(OSError, ValueError):
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = max(low + 1000, min(high, eph_low - 1))
    for _ in range(2000):
        base = _rng.randint(low, high - count)
        ports = range(base, base + count)
        if any(p in _used_ports for p in ports):
            continue
        if all(_bindable(p) for p in ports):
            _used_ports.update(ports)
            return base
    raise RuntimeError("no free port")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def port_bound(proto: str, port: int) -> bool:
    """A socket on ``port`` exists (tcp: listening) according to /proc/net."""
    for table in (proto, proto + "6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) != port:
                    continue
                if proto == "udp" or fields[3] == "0A":
                    return True
    return False


def read_stats(path: Path) -> dict[str, str]:
    """Last row of SIPp's ``-trace_stat`` CSV (``;``-separated; time stamps contain TABs)."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header, values = lines[0].split(";"), lines[-1].split(";")
    return {k.strip(): v.strip() for k, v in zip(header, values, strict=False) if k.strip()}


def stat_int(stats: dict[str, str], column: str) -> int:
    try:
        return int(float(stats.get(column, "0")))
    except ValueError:
        return 0


def stat_epoch(stats: dict[str, str], column: str) -> float | None:
    """``2026-01-01<TAB>12:00:00.000000<TAB>1767268800.000000`` -> the epoch part."""
    try:
        return float(stats[column].split("\t")[-1])
    except (KeyError, ValueError):
        return None


def sipp_common(port: int, transport: str) -> list[str]:
    """Loopback-only addresses and explicit ports for every SIPp process (no 5060/6000/8888)."""
    return [
        "-i", HOST,
        "-p", str(port),
        "-mi", HOST,
        "-mp", str(free_port(4)),
        "-cp", str(free_port()),
        "-nostdin",
        *(["-t", "t1"] if transport == "tcp" else []),
    ]  # fmt: skip


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM, wait, SIGKILL - by PID, only processes this script started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
    return proc.returncode


# ---------------------------------------------------------------------------------------------
# servers under test
# ---------------------------------------------------------------------------------------------


class Server:
    """A server process started fresh for each probe."""

    name = "?"

    def __init__(self, workdir: Path, transport: str) -> None:
        self.workdir = workdir
        self.transport = transport
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log = None
        self._n = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> None:
        self._n += 1
        self.port = free_port()
        self.log_path = self.workdir / f"{self.name}-{self._n}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def answered(self) -> int | None:
        """Calls the server itself counted (after stop), None when it does not say."""
        return None


class SippServer(Server):
    name = "sipp"

    def __init__(self, workdir: Path, transport: str, binary: str) -> None:
        super().__init__(workdir, transport)
        self.binary = binary

    def argv(self) -> list[str]:
        return [self.binary, "-sn", "uas", *sipp_common(self.port, self.transport)]

    def ready(self) -> bool:
        return port_bound(self.transport, self.port)


class P2psipServer(Server):
    name = "p2psip"

    def __init__(
        self, workdir: Path, transport: str, uvloop_flag: str | None, gc: bool = True
    ) -> None:
        super().__init__(workdir, transport)
        self.uvloop_flag = uvloop_flag
        self.gc = gc

    def argv(self) -> list[str]:
        if self.gc:
            argv = [sys.executable, "-m", "p2psip.cli.main", "uas"]
        else:  # diagnostic: the same CLI with Python's cyclic garbage collector switched off
            code = "import gc, sys; gc.disable(); from p2psip.cli.main import main; "
            code += "sys.exit(main(sys.argv[1:]))"
            argv = [sys.executable, "-c", code, "uas"]
        argv += ["--listen", f"{HOST}:{self.port}", "--transport", self.transport]
        if self.uvloop_flag:
            argv.append(self.uvloop_flag)
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def ready(self) -> bool:
        return "p2psip uas listening on" in self.log_text()

    def answered(self) -> int | None:
        m = re.search(r"p2psip uas: (\d+) calls answered", self.log_text())
        return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# one probe
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Probe:
    server: str
    rate: int
    calls: int = 0
    ok: int = 0
    failed: int = 0
    retrans: int = 0
    achieved: float = 0.0
    rc: int | None = None
    server_cpu: float = 0.0  #: % of one core
    client_cpu: float = 0.0
    wall: float = 0.0
    answered: int | None = None
    sustained: bool = False
    note: str = ""


def run_probe(
    server: Server, sipp: str, rate: int, args: argparse.Namespace, probe_no: int
) -> Probe:
    probe = Probe(server.name, rate)
    total = rate * args.seconds
    stats_path = args.workdir / f"uac-{server.name}-{probe_no}-{rate}.csv"
    server.start()
    assert server.proc is not None
    argv = [
        sipp, "-sn", "uac", f"{HOST}:{server.port}",
        *sipp_common(free_port(), args.transport),
        "-r", str(rate),
        "-m", str(total),
        "-d", "0",
        "-timeout", f"{args.seconds + 15}s", "-timeout_error",
        "-trace_stat", "-stf", str(stats_path), "-fd", "1",
    ]  # fmt: skip
    try:
        uac_log = open(args.workdir / f"uac-{server.name}-{probe_no}-{rate}.log", "wb")  # noqa: SIM115
        cpu0 = cpu_ticks(server.proc.pid) or 0
        t0 = time.monotonic()
        uac = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=uac_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        server.stop()
        raise
    # Give up early once a call failed or the target rate can no longer be reached.
    give_up_at = t0 + args.seconds / (1 - args.tolerance) + 1.5
    client_ticks = 0
    try:
        while True:
            pid, status, rusage = os.wait4(uac.pid, os.WNOHANG)
            if pid == uac.pid:
                uac.returncode = os.waitstatus_to_exitcode(status)
                client_ticks = round((rusage.ru_utime + rusage.ru_stime) * CLK_TCK)
                break
            now = time.monotonic()
            if stat_int(read_stats(stats_path), "FailedCall(C)") > 0:
                probe.note = "stopped: failed calls"
            elif now > give_up_at:
                probe.note = "stopped: rate unreachable"
            if probe.note:
                with contextlib.suppress(ProcessLookupError):
                    uac.send_signal(signal.SIGTERM)
                # wait4 above reaps it; escalate if it lingers
                end = time.monotonic() + 5
                while uac.returncode is None and time.monotonic() < end:
                    pid, status, rusage = os.wait4(uac.pid, os.WNOHANG)
                    if pid == uac.pid:
                        uac.returncode = os.waitstatus_to_exitcode(status)
                        client_ticks = round((rusage.ru_utime + rusage.ru_stime) * CLK_TCK)
                    else:
                        time.sleep(0.05)
                if uac.returncode is None:
                    stop_pid(uac)
                break
            time.sleep(0.1)
    finally:
        if uac.returncode is None:
            stop_pid(uac)
        uac_log.close()
        probe.wall = time.monotonic() - t0
        cpu1 = cpu_ticks(server.proc.pid)
        server.stop()
    probe.server_cpu = 100.0 * ((cpu1 or cpu0) - cpu0) / CLK_TCK / probe.wall
    probe.client_cpu = 100.0 * client_ticks / CLK_TCK / probe.wall
    probe.rc = uac.returncode
    probe.answered = server.answered()

    stats = read_stats(stats_path)
    probe.calls = stat_int(stats, "TotalCallCreated")
    probe.ok = stat_int(stats, "SuccessfulCall(C)")
    probe.failed = stat_int(stats, "FailedCall(C)")
    probe.retrans = stat_int(stats, "Retransmissions(C)")
    start, end = stat_epoch(stats, "StartTime"), stat_epoch(stats, "CurrentTime")
    if start is not None and end is not None and end > start:
        probe.achieved = probe.ok / (end - start)
    reasons = []
    if probe.rc != 0:
        reasons.append(f"exit {probe.rc}")
    if probe.failed:
        reasons.append("failed calls")
    if probe.ok < total:
        reasons.append(f"{total - probe.ok} calls missing")
    if probe.retrans > args.max_retrans * total:
        reasons.append("retransmissions")
    if probe.achieved < (1 - args.tolerance) * rate:
        reasons.append("rate below target")
    probe.sustained = not reasons
    if reasons and not probe.note:
        probe.note = ", ".join(reasons)
    elif reasons:
        probe.note += "; " + ", ".join(reasons)
    return probe


# ---------------------------------------------------------------------------------------------
# rate search
# ---------------------------------------------------------------------------------------------

HEADER = (
    f"{'server':<7} {'target':>7} {'calls':>8} {'ok':>8} {'failed':>6} {'retrans':>7} "
    f"{'achieved':>9} {'rc':>4} {'srvCPU%':>7} {'uacCPU%':>7} {'wall s':>6}  verdict"
)


def print_probe(p: Probe) -> None:
    verdict = "ok" if p.sustained else "FAIL"
    if p.note:
        verdict += f" ({p.note})"
    if p.answered is not None and p.answered != p.calls:
        verdict += f" [server counted {p.answered}]"
    print(
        f"{p.server:<7} {p.rate:>7} {p.calls:>8} {p.ok:>8} {p.failed:>6} {p.retrans:>7} "
        f"{p.achieved:>9.1f} {p.rc if p.rc is not None else '-':>4} {p.server_cpu:>7.1f} "
        f"{p.client_cpu:>7.1f} {p.wall:>6.1f}  {verdict}",
        flush=True,
    )


def search(
    server: Server, sipp: str, args: argparse.Namespace, cap: int
) -> tuple[Probe | None, list[Probe], str]:
    """Double from ``args.start`` up to ``cap``, then bisect. Returns (best, probes, why stop)."""
    probes: list[Probe] = []
    best: Probe | None = None
    bad: int | None = None
    rate = min(args.start, cap)
    why = ""

    def probe(r: int) -> Probe:
        p = run_probe(server, sipp, r, args, len(probes) + 1)
        probes.append(p)
        print_probe(p)
        return p

    while len(probes) < args.max_probes:
        p = probe(rate)
        if not p.sustained:
            bad = rate
            break
        best = p
        if rate >= cap:
            why = f"reached the cap ({cap} cps)"
            break
        rate = min(rate * 2, cap)
    else:
        why = "probe limit"
    steps = 0
    while bad is not None and steps < args.bisect_steps and len(probes) < args.max_probes:
        lo = best.rate if best else 0
        if bad - lo <= max(1, lo * args.tolerance):
            break
        mid = (lo + bad) // 2 if lo else bad // 2
        if mid <= 0:
            break
        p = probe(mid)
        steps += 1
        if p.sustained:
            best = p
        else:
            bad = mid
    if bad is not None and not why:
        why = f"first failing rate {bad} cps"
    elif not why:
        why = "probe limit"
    return best, probes, why


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def cli_supports(flag: str) -> bool:
    """Does ``p2psip uas --help`` list ``flag``?"""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "p2psip.cli.main", "uas", "--help"],
            capture_output=True, text=True, timeout=30, env=env,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return flag in out


def uvloop_installed() -> bool:
    try:
        import uvloop  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=int, default=None, help="probe length (default 30; --quick 5)")
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="event loop of p2psip uas (default: uvloop when installed)",
    )
    p.add_argument(
        "--gc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="diagnostic: --no-gc runs p2psip uas with gc.disable() (default: as shipped)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 5 s probes, 1 bisect step")
    p.add_argument("--start", type=int, default=250, help="first rate, cps (default 250)")
    p.add_argument("--max-rate", type=int, default=20000, help="rate cap, cps (default 20000)")
    p.add_argument("--max-probes", type=int, default=None, help="per server (default 12; quick 6)")
    p.add_argument("--bisect-steps", type=int, default=None, help="default 3; quick 1")
    p.add_argument("--tolerance", type=float, default=0.05, help="achieved-rate slack (0.05)")
    p.add_argument(
        "--max-retrans",
        type=float,
        default=0.001,
        help="retransmissions allowed, as a fraction of calls (default 0.001)",
    )
    p.add_argument("--servers", default="sipp,p2psip", help="which servers, in order (sipp,p2psip)")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs/CSVs here")
    p.add_argument("--sipp", default=None, help="SIPp binary (default: from PATH)")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 5 if args.quick else 30
    if args.max_probes is None:
        args.max_probes = 6 if args.quick else 12
    if args.bisect_steps is None:
        args.bisect_steps = 1 if args.quick else 3
    args.seconds = max(1, args.seconds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sipp = args.sipp or shutil.which("sipp")
    if not sipp:
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if any(s not in ("sipp", "p2psip") for s in servers):
        print("--servers takes sipp and/or p2psip", file=sys.stderr)
        return 2

    # Which loop p2psip uas runs: the CLI picks uvloop when importable; a switch is passed only
    # when the uas subcommand offers one.
    flag = "--uvloop" if args.uvloop else "--no-uvloop"
    uvloop_flag = flag if cli_supports("--no-uvloop") else None
    if uvloop_flag:
        loop = "uvloop" if args.uvloop and uvloop_installed() else "asyncio"
    else:
        loop = "uvloop" if uvloop_installed() else "asyncio"
        if not args.uvloop:
            loop += " (p2psip uas has no --no-uvloop switch; --no-uvloop ignored)"
    if not args.gc:
        loop += ", cyclic GC disabled (--no-gc)"

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="sipp_uas_bench_")
        args.workdir = Path(tmp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)

    print(
        f"SIPp uac -> server, INVITE-200-ACK-BYE-200, -d 0, {args.transport.upper()} on {HOST}; "
        f"{args.seconds} s probes; sustained = exit 0, 0 failed, retransmissions <= "
        f"{args.max_retrans:.2%} of calls, achieved rate >= {1 - args.tolerance:.0%} of target"
    )
    print(
        f"machine: {os.cpu_count()} cores shared by the SIPp client and the server under test "
        f"(they compete for CPU); p2psip uas loop: {loop}; python {sys.version.split()[0]}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "CPU columns: % of one core over each probe (srv = server under test, uac = SIPp "
        "client); other jobs on the machine skew the figures - see the load averages"
    )
    print(HEADER, flush=True)

    results: dict[str, tuple[Probe | None, list[Probe], str]] = {}
    try:
        cap = args.max_rate
        for name in servers:
            if name == "sipp":
                server: Server = SippServer(args.workdir, args.transport, sipp)
                results[name] = search(server, sipp, args, args.max_rate)
                best = results[name][0]
                # p2psip is searched only up to what SIPp sustains against itself
                if best is not None:
                    cap = best.rate
            else:
                server = P2psipServer(args.workdir, args.transport, uvloop_flag, args.gc)
                results[name] = search(server, sipp, args, cap)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    sipp_best = results.get("sipp", (None,))[0]
    p2_best = results.get("p2psip", (None,))[0]
    for name, (best, probes, why) in results.items():
        label = "SIPp -sn uas" if name == "sipp" else f"p2psip uas ({loop})"
        if best is None:
            print(f"{label}: no rate sustained ({len(probes)} probes; {why})")
            continue
        print(
            f"{label}: best sustained {best.rate} cps (achieved {best.achieved:.1f} cps, "
            f"{best.ok} calls, {best.retrans} retransmissions, server CPU {best.server_cpu:.0f}% "
            f"of one core, SIPp uac CPU {best.client_cpu:.0f}%); {len(probes)} probes; "
            f"stop: {why}"
        )
        if name == "p2psip" and sipp_best is not None and best.rate >= sipp_best.rate:
            print("  (p2psip reached the best rate measured for SIPp: the ratio is a lower bound)")
    if sipp_best is not None and "p2psip" in results:
        ratio = (p2_best.rate if p2_best else 0) / sipp_best.rate
        print(f"ratio p2psip/sipp: {ratio:.2f}")
    else:
        print(f"ratio p2psip/sipp: {math.nan}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
