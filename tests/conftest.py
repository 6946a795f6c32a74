"""Shared test helpers and fixtures.

Helpers (plain functions/classes in this module, also offered as fixtures):

* ``require_binary(name) -> str`` - absolute path of an external program; skips the test when it
  is missing (fails instead when ``CI=true``), naming the Debian package to install.
* ``free_port(kind="both", host="127.0.0.1", count=1) -> int`` - a port (or ``count`` consecutive
  ports) free for UDP and/or TCP, never handed out twice in one session.
* ``ManagedProcess`` - a subprocess with its output in a log file, readiness waits
  (``wait_for_udp_port``, ``wait_for_tcp_port``, ``wait_for_log``) and stop-by-PID.
  ``process_factory(argv, name=...)`` creates one, logs to ``tmp_path`` and stops it at teardown.
  The last 50 log lines of every process a failed test used are appended to the failure report.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

# ---------------------------------------------------------------------------------------------
# require_binary
# ---------------------------------------------------------------------------------------------

#: executable -> Debian (bookworm) package that ships it
DEBIAN_PACKAGES: dict[str, str] = {
    "sipp": "sip-tester",
    "kamailio": "kamailio",
    "kamcmd": "kamailio",
    "sip-dig": "sofia-sip-bin",
    "sip-options": "sofia-sip-bin",
    "stunc": "sofia-sip-bin",
    "dnsmasq": "dnsmasq-base",
    "turnserver": "coturn",
    "turnutils_stunclient": "coturn",
    "turnutils_uclient": "coturn",
    "turnutils_peer": "coturn",
    "sox": "sox",
    "ip": "iproute2",
    "tc": "iproute2",
    "espeak-ng": "espeak-ng",
    "sipsak": "sipsak",
    "baresip": "baresip-core",
    "linphonec": "linphone-cli",
    "tshark": "tshark",
    "sngrep": "sngrep",
    "dig": "dnsutils",
}

# Non-root users on Debian usually have no sbin directories in PATH (kamailio is /usr/sbin).
_EXTRA_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _on_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_binary(name: str) -> str:
    """Return the absolute path of executable ``name``.

    When it is missing the current test is skipped, or failed when ``CI=true`` (CI installs every
    peer, so a missing one is a broken CI image, not a reason to skip).
    """
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_BIN_DIRS))
    if path:
        return path
    package = DEBIAN_PACKAGES.get(name, name)
    message = f"{name} not installed (apt-get install {package})"
    if _on_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover - skip() raises


@pytest.fixture(name="require_binary", scope="session")
def _require_binary_fixture() -> Callable[[str], str]:
    """Fixture form of :func:`require_binary`: ``require_binary("sipp") -> "/usr/bin/sipp"``."""
    return require_binary


# ---------------------------------------------------------------------------------------------
# free_port
# ---------------------------------------------------------------------------------------------

PortKind = Literal["udp", "tcp", "both"]

_handed_out: set[int] = set()
_port_lock = threading.Lock()
_rng = random.SystemRandom()


def _candidate_range() -> tuple[int, int]:
    """Ports to draw from: below the kernel's ephemeral range, so outgoing sockets never race us."""
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if low - 1 >= 12000:
        return 10000, low - 1
    return high + 1, 65000


def _bindable(port: int, host: str, kinds: Sequence[int]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for sock_type in kinds:
            s = socket.socket(family, sock_type)
            socks.append(s)
            # No SO_REUSEADDR: a port with TIME_WAIT leftovers is treated as taken.
            s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port(kind: PortKind = "both", host: str = "127.0.0.1", count: int = 1) -> int:
    """Return a port free on ``host`` for UDP, TCP or both (default), by binding and releasing.

    With ``count > 1`` the ports ``port .. port+count-1`` are all free (e.g. SIPp's ``-mp``
    media port needs RTP+RTCP for audio and video = 4 ports). Ports handed out earlier in this
    session are never returned again. Ports are drawn at random below the ephemeral range.
    """
    if kind not in ("udp", "tcp", "both"):
        raise ValueError(f"kind must be 'udp', 'tcp' or 'both', not {kind!r}")
    kinds = {
        "udp": (socket.SOCK_DGRAM,),
        "tcp": (socket.SOCK_STREAM,),
        "both": (socket.SOCK_DGRAM, socket.SOCK_STREAM),
    }[kind]
    low, high = _candidate_range()
    with _port_lock:
        for _ in range(5000):
            base = _rng.randint(low, high - count + 1)
            ports = range(base, base + count)
            if any(p in _handed_out for p in ports):
                continue
            if all(_bindable(p, host, kinds) for p in ports):
                _handed_out.update(ports)
                return base
    raise RuntimeError(f"no free {kind} port (x{count}) found on {host} in {low}-{high}")


@pytest.fixture(name="free_port", scope="session")
def _free_port_fixture() -> Callable[..., int]:
    """Fixture form of :func:`free_port`: ``free_port("both") -> 23456``."""
    return free_port


# ---------------------------------------------------------------------------------------------
# ManagedProcess
# ---------------------------------------------------------------------------------------------

LOG_TAIL_LINES = 50


class ManagedProcessError(RuntimeError):
    """A managed process died or did not become ready; the message holds its log tail."""


def _proc_children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), empty list when unknown."""
    children: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError, ValueError):
                children.extend(int(c) for c in (task / "children").read_text().split())
    return children


def _proc_descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for child in _proc_children(p):
            if child not in seen and child != pid:
                seen.append(child)
                todo.append(child)
    return seen


def _socket_inodes(pids: Sequence[int]) -> set[int] | None:
    """Socket inodes held by ``pids``; None when /proc/<pid>/fd is not readable."""
    inodes: set[int] = set()
    readable = False
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        readable = True
        for entry in entries:
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes if readable else None


def _decode_proc_addr(hex_addr: str) -> str:
    """Decode the address part of /proc/net/{udp,tcp}[6] (32-bit words in host byte order)."""
    raw = bytes.fromhex(hex_addr)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    native = b"".join(
        int.from_bytes(w, "big").to_bytes(4, sys.byteorder) for w in words
    )  # undo the host-order print
    if len(native) == 4:
        return socket.inet_ntop(socket.AF_INET, native)
    return socket.inet_ntop(socket.AF_INET6, native)


def _proc_net_sockets(proto: str, port: int) -> list[tuple[str, int]] | None:
    """(local address, inode) of sockets on ``port`` (tcp: listening only); None without /proc."""
    found: list[tuple[str, int]] = []
    any_table = False
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        any_table = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            addr_hex, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port:
                continue
            if proto == "tcp" and fields[3] != "0A":  # 0A = LISTEN
                continue
            with contextlib.suppress(ValueError, OSError):
                found.append((_decode_proc_addr(addr_hex), int(fields[9])))
    return found if any_table else None


_WILDCARDS = {"0.0.0.0", "::"}


class ManagedProcess:
    """A subprocess whose stdout+stderr go to ``log_path``; stopped by PID.

    ``ManagedProcess(["kamailio", ...], tmp_path / "kamailio.log").start()`` then
    ``wait_for_udp_port(5060)``; ``stop()`` sends SIGTERM to the PID, waits, then SIGKILLs it (and
    any descendant still alive, each by PID). Prefer the ``process_factory`` fixture, which also
    stops the process at teardown and adds its log tail to the report of a failed test.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        log_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = Path(log_path)
        self.name = name or Path(self.argv[0]).name
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._descendants: set[int] = set()
        #: log size when the tail went into a ManagedProcessError (not repeated in the report)
        self.reported_log_size: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        if self.popen is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._log_file.write(f"# argv: {self.argv}\n".encode())
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # keep terminal signals (Ctrl-C) away from the peer
        )
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} not started")
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status (negative = killed by that signal), None while running."""
        return None if self.popen is None else self.popen.poll()

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit on its own; on timeout stop it and raise."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} not started")
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ManagedProcessError(
                self._describe(f"did not exit within {timeout} s (stopped)")
            ) from None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the PID, wait ``timeout`` s, then SIGKILL; also kill leftover descendants."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._remember_descendants()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        self._reap_descendants()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.popen.returncode

    def _remember_descendants(self) -> None:
        if self.popen is not None:
            self._descendants.update(_proc_descendants(self.popen.pid))

    def _reap_descendants(self) -> None:
        """SIGKILL (by PID) children that outlived their parent, e.g. after a SIGKILL."""
        for pid in self._descendants:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._descendants.clear()

    # -- logs -------------------------------------------------------------------------------

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return -1

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _describe(self, problem: str) -> str:
        self.reported_log_size = self._log_size()
        rc = self.returncode
        state = "running" if rc is None else f"exit status {rc}"
        return (
            f"{self.name} (pid {self.popen.pid if self.popen else '-'}, {state}) {problem}\n"
            f"argv: {self.argv}\n"
            f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{self.log_tail()}"
        )

    # -- readiness --------------------------------------------------------------------------

    def _poll(self, what: str, check: Callable[[], object], timeout: float) -> object:
        if self.popen is None:
            raise RuntimeError(f"{self.name} not started")
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            result = check()
            if result:
                return result
            if self.popen.poll() is not None:
                raise ManagedProcessError(self._describe(f"exited while waiting for {what}"))
            if time.monotonic() >= deadline:
                raise ManagedProcessError(self._describe(f"not ready after {timeout} s: {what}"))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _owns_port(self, proto: str, port: int, host: str) -> bool:
        sockets = _proc_net_sockets(proto, port)
        if sockets is None:  # no /proc/net: fall back to probing
            return self._probe_port(proto, port, host)
        matching = [inode for addr, inode in sockets if addr == host or addr in _WILDCARDS]
        if not matching:
            return False
        inodes = _socket_inodes([self.pid, *_proc_descendants(self.pid)])
        return inodes is None or any(i in inodes for i in matching)

    @staticmethod
    def _probe_port(proto: str, port: int, host: str) -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if proto == "tcp":
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                return s.connect_ex((host, port)) == 0
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                return exc.errno == errno.EADDRINUSE
            return False

    def wait_for_udp_port(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
        """Wait until this process (or a child) has a UDP socket bound to ``host:port``."""
        self._poll(f"UDP {host}:{port}", lambda: self._owns_port("udp", port, host), timeout)

    def wait_for_tcp_port(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
        """Wait until this process (or a child) listens on TCP ``host:port``."""
        self._poll(f"TCP {host}:{port}", lambda: self._owns_port("tcp", port, host), timeout)

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        """Wait until the log matches regex ``pattern`` (str: MULTILINE, so ``^``/``$`` are line
        anchors); return the match."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        match = self._poll(
            f"log line matching {regex.pattern!r}", lambda: regex.search(self.log_text()), timeout
        )
        assert isinstance(match, re.Match)
        return match

    def __repr__(self) -> str:
        pid = self.popen.pid if self.popen else None
        return f"<ManagedProcess {self.name} pid={pid} rc={self.returncode} log={self.log_path}>"


# Processes used by a test (or by a module/session fixture) are kept in the stash of the pytest
# node that owns them, so that a failure report can show their logs.
_PROCESSES = pytest.StashKey[list[ManagedProcess]]()
_DUMPED = pytest.StashKey[set[int]]()


def register_process(node: pytest.Item | pytest.Collector, process: ManagedProcess) -> None:
    """Attach ``process`` to ``node`` so its log tail is added to failure reports below it."""
    node.stash.setdefault(_PROCESSES, []).append(process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        dumped = item.stash.setdefault(_DUMPED, set())
        for node in item.listchain():
            for proc in node.stash.get(_PROCESSES, []):
                if id(proc) in dumped or proc.reported_log_size == proc._log_size():
                    continue
                dumped.add(id(proc))
                report.sections.append(
                    (
                        f"{proc.name} (pid {proc.popen.pid if proc.popen else '-'}, "
                        f"rc {proc.returncode}) last {LOG_TAIL_LINES} lines of {proc.log_path}",
                        proc.log_tail(),
                    )
                )
    return report


class ProcessFactory:
    """Callable returned by the ``process_factory`` fixture."""

    def __init__(self, node: pytest.Item | pytest.Collector, log_dir: Path) -> None:
        self._node = node
        self._log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def __call__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        start: bool = True,
    ) -> ManagedProcess:
        """Create (and by default start) a process logging to ``<tmp_path>/<name>.log``."""
        name = name or Path(os.fspath(argv[0])).name
        log_path = self._log_dir / f"{name}.log"
        n = 1
        while log_path.exists():
            n += 1
            log_path = self._log_dir / f"{name}-{n}.log"
        proc = ManagedProcess(argv, log_path, name=name, env=env, cwd=cwd)
        register_process(self._node, proc)
        self.processes.append(proc)
        if start:
            proc.start()
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


@pytest.fixture
def process_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessFactory]:
    """``process_factory(argv, name=None, env=None, cwd=None, start=True) -> ManagedProcess``.

    Logs go to ``tmp_path/<name>.log``; every process is stopped by PID at teardown (in reverse
    start order) and the last 50 log lines are added to the report if the test fails.
    """
    factory = ProcessFactory(request.node, tmp_path)
    yield factory
    factory.stop_all()
