"""Fixtures for interop tests against independent SIP peers (Kamailio, SIPp).

* ``kamailio`` -> :class:`KamailioServer`: a private Kamailio registrar/proxy on a free
  127.0.0.1 UDP+TCP port, digest auth on (users alice/alicepass, bob/bobpass, carol/carolpass,
  sipp/sippass). A fresh instance per test, so no registrations leak between tests.
* ``kamailio_factory(defines=("WITH_AUTH",), host="127.0.0.1", port=None)`` -> KamailioServer,
  for other defines (``()`` = no auth, ``("WITH_AUTH", "WITH_PRESENCE")``) or several instances.
* ``sipp`` -> :class:`SippRunner`: ``sipp.run(scenario, remote, *args) -> SippResult``
  (foreground, returns exit code + statistics) and ``sipp.start(...) -> SippProcess``
  (background, e.g. a UAS). Scenario = built-in name (``"uas"``) or XML file (relative names are
  looked up in ``tests/interop/scenarios/``).

All programs are stopped by PID at teardown; their logs are in ``tmp_path`` and the last 50 lines
are added to the report of a failing test (see ``tests/conftest.py``).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "configs"
SCENARIO_DIR = HERE / "scenarios"
KAMAILIO_TEMPLATE = CONFIG_DIR / "kamailio.cfg"

#: The user table built into configs/kamailio.cfg (event_route[htable:mod-init]).
KAMAILIO_USERS: dict[str, str] = {
    "alice": "alicepass",
    "bob": "bobpass",
    "carol": "carolpass",
    "sipp": "sippass",
}

# sockaddr_un.sun_path is 108 bytes including the NUL.
_MAX_UNIX_SOCKET_PATH = 100


def _missing(message: str) -> None:
    """Skip the test, or fail it on CI (CI=true) where every peer must be installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------------------------------------
# Kamailio
# ---------------------------------------------------------------------------------------------


@functools.cache
def kamailio_module_dir() -> Path | None:
    """Directory holding Kamailio's modules (``tm.so``), e.g. /usr/lib/<multiarch>/kamailio/modules.

    Order: ``$KAMAILIO_MPATH``, ``dpkg -L kamailio``, then the usual install locations.
    """
    candidates: list[Path] = []
    if os.environ.get("KAMAILIO_MPATH"):
        candidates.append(Path(os.environ["KAMAILIO_MPATH"]))
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "kamailio"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        candidates += [
            Path(line).parent for line in listing.splitlines() if line.endswith("/modules/tm.so")
        ]
    for prefix in ("/usr/lib", "/usr/local/lib"):
        candidates += sorted(Path(prefix).glob("*/kamailio/modules"))
    candidates += [
        Path(p) / "kamailio" / "modules"
        for p in ("/usr/lib64", "/usr/lib", "/usr/local/lib64", "/usr/local/lib")
    ]
    for candidate in candidates:
        if (candidate / "tm.so").is_file():
            return candidate
    return None


@dataclass
class KamailioServer:
    """A running Kamailio (registrar + stateful proxy) owned by one test."""

    host: str
    port: int
    users: dict[str, str]  #: user -> password (enforced only when ``auth`` is true)
    auth: bool  #: True when started with WITH_AUTH (REGISTER -> 401, other requests -> 407)
    defines: tuple[str, ...]
    cfg_path: Path
    run_dir: Path
    ctl_socket: Path  #: binrpc socket for ``kamcmd -s unix:<ctl_socket>``
    process: Any  #: tests/conftest.py ManagedProcess (``.pid``, ``.log_path``, ``.log_tail()``)
    kamailio_binary: str

    @property
    def domain(self) -> str:
        """Digest realm / AoR domain used by the config (``$td`` / ``$fd`` = host)."""
        return self.host

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def uri(self) -> str:
        """``sip:127.0.0.1:PORT`` - Request-URI for REGISTER / OPTIONS, or an outbound proxy."""
        return f"sip:{self.hostport}"

    def aor(self, user: str) -> str:
        """Address of record, e.g. ``sip:alice@127.0.0.1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{user}@{host}"

    def log_text(self) -> str:
        return self.process.log_text()

    def kamcmd(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``kamcmd -s unix:<ctl> ARGS`` (e.g. ``"ul.dump", "brief"``) and return stdout."""
        binary = shutil.which("kamcmd") or str(Path(self.kamailio_binary).with_name("kamcmd"))
        done = subprocess.run(
            [binary, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout


def render_kamailio_config(
    *, host: str, port: int, ctl_socket: Path, mpath: Path, dbtext: Path
) -> str:
    """Fill the placeholders of configs/kamailio.cfg (comment lines are left alone)."""
    host_token = f"[{host}]" if ":" in host else host
    values = {
        "@@HOST@@": host_token,
        "@@PORT@@": str(port),
        "@@CTL@@": str(ctl_socket),
        "@@MPATH@@": str(mpath).rstrip("/") + "/",
        "@@DBTEXT@@": str(dbtext),
    }
    lines = []
    for line in KAMAILIO_TEMPLATE.read_text().splitlines(keepends=True):
        if not line.startswith("#") or line.startswith("#!"):
            for placeholder, value in values.items():
                line = line.replace(placeholder, value)
        lines.append(line)
    text = "".join(lines)
    leftover = [p for p in values if any(p in ln for ln in text.splitlines() if ln[:1] != "#")]
    assert not leftover, f"unreplaced placeholders {leftover} in {KAMAILIO_TEMPLATE}"
    return text


class KamailioFactory:
    """``kamailio_factory(defines=("WITH_AUTH",), host="127.0.0.1", port=None)``."""

    def __init__(
        self,
        tmp_path: Path,
        require_binary: Callable[[str], str],
        free_port: Callable[..., int],
        process_factory: Any,
    ) -> None:
        self._tmp_path = tmp_path
        self._require_binary = require_binary
        self._free_port = free_port
        self._process_factory = process_factory
        self._short_dirs: list[Path] = []
        self.servers: list[KamailioServer] = []

    def __call__(
        self,
        *,
        defines: Sequence[str] = ("WITH_AUTH",),
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> KamailioServer:
        binary = self._require_binary("kamailio")
        mpath = kamailio_module_dir()
        if mpath is None:
            _missing(
                "kamailio modules (tm.so) not found; set KAMAILIO_MPATH (apt-get install kamailio)"
            )
            raise AssertionError("unreachable")
        defines = tuple(defines)
        if "WITH_PRESENCE" in defines and not (mpath / "presence.so").is_file():
            _missing("kamailio presence module missing (apt-get install kamailio-presence-modules)")

        if port is None:
            port = self._free_port("both", host=host)
        index = len(self.servers) + 1
        base = self._tmp_path / (f"kamailio{index}" if index > 1 else "kamailio")
        run_dir = base / "run"
        run_dir.mkdir(parents=True)
        ctl_socket = run_dir / "kamailio_ctl"
        if len(str(ctl_socket)) > _MAX_UNIX_SOCKET_PATH:
            short = Path(tempfile.mkdtemp(prefix="p2psip-kam-"))
            self._short_dirs.append(short)
            ctl_socket = short / "ctl"
        dbtext = base / "dbtext"
        if "WITH_PRESENCE" in defines:
            shutil.copytree("/usr/share/kamailio/dbtext/kamailio", dbtext)

        cfg_path = base / "kamailio.cfg"
        cfg_path.write_text(
            render_kamailio_config(
                host=host, port=port, ctl_socket=ctl_socket, mpath=mpath, dbtext=dbtext
            )
        )
        define_args = [arg for d in defines for arg in ("-A", d)]

        check = subprocess.run(
            [binary, "-f", str(cfg_path), "-c", *define_args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode != 0:
            pytest.fail(
                f"kamailio -c rejected {cfg_path} (exit {check.returncode}):\n"
                f"{check.stdout}{check.stderr}",
                pytrace=False,
            )

        pid_file = run_dir / "kamailio.pid"
        argv = [
            binary,
            "-f", str(cfg_path),
            "-DD",
            "-E",
            "-Y", str(run_dir),
            "-P", str(pid_file),
            "-m", "64",
            "-M", "8",
            *define_args,
        ]  # fmt: skip
        name = "kamailio" if index == 1 else f"kamailio{index}"
        proc = self._process_factory(argv, name=name)
        proc.wait_for_udp_port(port, host=host, timeout=startup_timeout)
        proc.wait_for_tcp_port(port, host=host, timeout=startup_timeout)
        server = KamailioServer(
            host=host,
            port=port,
            users=dict(KAMAILIO_USERS),
            auth="WITH_AUTH" in defines,
            defines=defines,
            cfg_path=cfg_path,
            run_dir=run_dir,
            ctl_socket=ctl_socket,
            process=proc,
            kamailio_binary=binary,
        )
        self.servers.append(server)
        return server

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            server.process.stop()
        for short in self._short_dirs:
            shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def kamailio_factory(
    tmp_path: Path,
    require_binary: Callable[[str], str],
    free_port: Callable[..., int],
    process_factory: Any,
) -> Iterator[KamailioFactory]:
    factory = KamailioFactory(tmp_path, require_binary, free_port, process_factory)
    yield factory
    factory.cleanup()


@pytest.fixture
def kamailio(kamailio_factory: KamailioFactory) -> KamailioServer:
    """Kamailio on a free 127.0.0.1 UDP+TCP port with WITH_AUTH (digest auth required)."""
    return kamailio_factory(defines=("WITH_AUTH",))


# ---------------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------------


def _parse_sipp_stats(path: Path) -> dict[str, str]:
    """Last row of a ``-trace_stat`` CSV (``;``-separated) as {column: value}."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    values = lines[-1].split(";")
    return {k.strip(): v.strip() for k, v in zip(header, values, strict=False) if k.strip()}


@dataclass
class SippResult:
    """Outcome of one SIPp run. Exit codes: 0 all calls ok, 1 some failed, 97 exit on internal
    command, 99 normal exit without calls processed, 255 fatal error, 254 cannot bind port."""

    returncode: int
    stats: dict[str, str]  #: last ``-trace_stat`` row: "SuccessfulCall(C)" -> "10", ...
    argv: list[str]
    log_path: Path  #: stdout+stderr
    stats_path: Path
    errors_path: Path  #: unexpected messages (``-trace_err``)
    screen_path: Path  #: final statistics screen (``-trace_screen``)

    def stat(self, column: str, default: int = 0) -> int:
        try:
            return int(float(self.stats[column]))
        except (KeyError, ValueError):
            return default

    @property
    def successful_calls(self) -> int:
        return self.stat("SuccessfulCall(C)")

    @property
    def failed_calls(self) -> int:
        return self.stat("FailedCall(C)")

    @property
    def total_calls(self) -> int:
        return self.stat("TotalCallCreated")

    def errors_text(self) -> str:
        try:
            return self.errors_path.read_text(errors="replace")
        except OSError:
            return ""

    def screen_text(self) -> str:
        try:
            return self.screen_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class SippProcess:
    """A SIPp instance running in the background (see :meth:`SippRunner.start`)."""

    process: Any  #: ManagedProcess
    host: str
    port: int  #: local SIP port (-p)
    media_port: int  #: -mp (uses media_port .. media_port+3)
    argv: list[str]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def _result(self) -> SippResult:
        rc = self.process.returncode
        return SippResult(
            returncode=-999 if rc is None else rc,
            stats=_parse_sipp_stats(self.paths["stats"]),
            argv=self.argv,
            log_path=self.process.log_path,
            stats_path=self.paths["stats"],
            errors_path=self.paths["errors"],
            screen_path=self.paths["screen"],
        )

    def wait(self, timeout: float = 60.0) -> SippResult:
        """Wait for SIPp to exit by itself (``-m N`` reached or ``-timeout``)."""
        self.process.wait(timeout)
        return self._result()

    def stop(self) -> SippResult:
        """Stop it by PID (SIGTERM, then SIGKILL); returncode is then negative."""
        self.process.stop()
        return self._result()


def _uses_tcp(args: Sequence[str]) -> bool:
    """True when SIPp arguments select TCP (``-t t1`` / ``-t tn``)."""
    return any(a == "-t" and b.startswith("t") for a, b in itertools.pairwise(args))


class SippRunner:
    """Runs SIPp with loopback-only addresses, free ports and statistics files in ``tmp_path``.

    Every run gets: ``-i HOST -p PORT -mi HOST -mp MEDIA -cp CTRL -nostdin -trace_stat -fd 1
    -trace_err -trace_screen`` and, for :meth:`run`, ``-timeout T -timeout_error``.
    """

    def __init__(
        self,
        binary: str,
        tmp_path: Path,
        free_port: Callable[..., int],
        process_factory: Any,
    ) -> None:
        self.binary = binary
        self._tmp_path = tmp_path
        self._free_port = free_port
        self._process_factory = process_factory
        self._count = 0

    @staticmethod
    def scenario_args(scenario: str | os.PathLike[str]) -> list[str]:
        """``-sn NAME`` for built-ins, ``-sf FILE`` for XML (relative: tests/interop/scenarios)."""
        text = os.fspath(scenario)
        if isinstance(scenario, os.PathLike) or text.endswith(".xml") or "/" in text:
            path = Path(text)
            if not path.is_absolute() and not path.exists():
                path = SCENARIO_DIR / path
            if not path.is_file():
                raise FileNotFoundError(f"SIPp scenario {path} not found")
            return ["-sf", str(path)]
        return ["-sn", text]

    def _prepare(
        self,
        scenario: str | os.PathLike[str],
        remote: str | None,
        extra: Sequence[str],
        *,
        host: str,
        port: int | None,
        name: str | None,
    ) -> tuple[str, list[str], int, int, dict[str, Path]]:
        self._count += 1
        label = name or f"sipp{self._count}"
        work = self._tmp_path / label
        work.mkdir(parents=True, exist_ok=False)
        kind = "tcp" if _uses_tcp(extra) else "udp"
        sip_port = port if port is not None else self._free_port(kind, host=host)
        media_port = self._free_port("udp", host=host, count=4)
        ctrl_port = self._free_port("udp", host=host)
        paths = {
            "stats": work / "stats.csv",
            "errors": work / "errors.log",
            "screen": work / "screen.log",
        }
        argv = [
            self.binary,
            *self.scenario_args(scenario),
            *([remote] if remote else []),
            "-i", host,
            "-p", str(sip_port),
            "-mi", host,
            "-mp", str(media_port),
            "-cp", str(ctrl_port),
            "-nostdin",
            "-trace_stat", "-stf", str(paths["stats"]), "-fd", "1",
            "-trace_err", "-error_file", str(paths["errors"]),
            "-trace_screen", "-screen_file", str(paths["screen"]),
            *extra,
        ]  # fmt: skip
        return label, argv, sip_port, media_port, paths

    def start(
        self,
        scenario: str | os.PathLike[str],
        remote: str | None = None,
        *extra: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        name: str | None = None,
        ready_timeout: float = 10.0,
    ) -> SippProcess:
        """Start SIPp in the background and wait until its SIP port is bound.

        ``extra`` are further SIPp arguments, e.g. ``"-m", "10"`` so that it exits by itself.
        """
        label, argv, sip_port, media_port, paths = self._prepare(
            scenario, remote, extra, host=host, port=port, name=name
        )
        proc = self._process_factory(argv, name=label, cwd=paths["stats"].parent)
        if not _uses_tcp(extra):
            proc.wait_for_udp_port(sip_port, host=host, timeout=ready_timeout)
        elif remote is None:  # TCP server; a TCP client has no listening port to wait for
            proc.wait_for_tcp_port(sip_port, host=host, timeout=ready_timeout)
        return SippProcess(proc, host, sip_port, media_port, argv, paths)

    def run(
        self,
        scenario: str | os.PathLike[str],
        remote: str | None = None,
        *extra: str,
        timeout: float = 60.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        name: str | None = None,
    ) -> SippResult:
        """Run SIPp to completion (give ``-m N``!) and return exit code + statistics.

        ``-timeout <timeout>s -timeout_error`` is added so a hung run fails instead of hanging.
        """
        extra = (*extra, "-timeout", f"{max(1, int(timeout))}s", "-timeout_error")
        label, argv, sip_port, media_port, paths = self._prepare(
            scenario, remote, extra, host=host, port=port, name=name
        )
        proc = self._process_factory(argv, name=label, cwd=paths["stats"].parent)
        sp = SippProcess(proc, host, sip_port, media_port, argv, paths)
        return sp.wait(timeout + 15)


@pytest.fixture
def sipp(
    require_binary: Callable[[str], str],
    tmp_path: Path,
    free_port: Callable[..., int],
    process_factory: Any,
) -> SippRunner:
    """:class:`SippRunner` - ``sipp.run(scenario, remote, *args) -> SippResult``,
    ``sipp.start(scenario, remote, *args) -> SippProcess``."""
    return SippRunner(require_binary("sipp"), tmp_path, free_port, process_factory)
