"""Helpers for the call interop tests: test tones, WAV analysis, a p2psip node for plain SIP
URIs, and drivers for the independent peers (baresip, linphonec, pjsua2-python).

Every peer runs as a child process through the ``process_factory`` fixture (log in
``tmp_path``, stopped by PID at teardown), bound to 127.0.0.1 on ports from ``free_port``.
Audio is checked on the receiving side's recording: the dominant frequency of the far end's
tone (:data:`PEER_TONE_HZ` from the peers, :data:`OUR_TONE_HZ` from p2psip), its level and
its duration.

Configs follow /work/shared/interop/INTEROP_NOTES.md (§3 baresip, §4 linphonec, §5 pjsua2);
see ``configs/SOURCE.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from p2psip.endpoint.session import SessionState
from p2psip.media.aio.stream import AudioStreamConfig, AudioStreamStatistics
from p2psip.media.audio import dominant_frequency, rms_dbfs
from p2psip.node import Call, IncomingCall, Node, NodeConfig
from tests.conftest import require_binary

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "configs"

PEER_TONE_HZ = 440.0  #: what the independent peers send
OUR_TONE_HZ = 1000.0  #: what p2psip sends
FREQ_TOLERANCE_HZ = 15.0
MIN_LEVEL_DBFS = -30.0  #: a 0.5 full-scale tone is about -9 dBFS; silence is -inf
TALK_SECONDS = 2.5  #: audio time of each call
SETUP_TIMEOUT = 10.0


def missing(message: str) -> None:
    """Skip the test, or fail it on CI (CI=true) where every peer must be installed."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------------------------------------
# Tones and WAV analysis
# ---------------------------------------------------------------------------------------------


def write_tone_wav(
    path: Path, freq: float, rate: int, seconds: float, amplitude: float = 0.5
) -> Path:
    """A 16-bit mono WAV of a sine tone."""
    t = np.arange(round(rate * seconds)) / rate
    pcm = np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The first channel of a 16-bit WAV and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise AssertionError(f"{path}: {8 * w.getsampwidth()}-bit WAV, expected 16-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0].astype(np.int16)
    return pcm, rate


@dataclass(frozen=True)
class ToneReport:
    """What a recording holds: its length, the dominant frequency and the level of its audio
    part (leading silence skipped)."""

    seconds: float
    audio_seconds: float
    freq_hz: float
    level_dbfs: float

    def __str__(self) -> str:
        return (
            f"{self.seconds:.2f} s recorded, {self.audio_seconds:.2f} s of audio, "
            f"{self.freq_hz:.1f} Hz, {self.level_dbfs:.1f} dBFS"
        )


def analyse(pcm: np.ndarray, rate: int) -> ToneReport:
    """Analyse the non-silent part of ``pcm`` (from its first loud 20 ms block to its last)."""
    block = max(1, rate // 50)
    usable = len(pcm) // block * block
    blocks = pcm[:usable].astype(np.float64).reshape(-1, block) if usable else np.zeros((0, 1))
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) > 32768 * 10 ** (MIN_LEVEL_DBFS / 20))
    if len(loud) == 0:
        return ToneReport(len(pcm) / rate, 0.0, 0.0, rms_dbfs(pcm) if len(pcm) else -np.inf)
    audio = pcm[loud[0] * block : (loud[-1] + 1) * block]
    return ToneReport(
        len(pcm) / rate,
        len(audio) / rate,
        dominant_frequency(audio, rate) if len(audio) >= 4 else 0.0,
        rms_dbfs(audio),
    )


def assert_tone(
    pcm: np.ndarray, rate: int, freq: float, *, min_seconds: float, what: str
) -> ToneReport:
    """``pcm`` holds at least ``min_seconds`` of a tone of ``freq`` Hz at a normal level."""
    report = analyse(pcm, rate)
    assert report.audio_seconds >= min_seconds, f"{what}: too little audio ({report})"
    assert abs(report.freq_hz - freq) <= FREQ_TOLERANCE_HZ, f"{what}: wrong tone ({report})"
    assert report.level_dbfs >= MIN_LEVEL_DBFS, f"{what}: too quiet ({report})"
    return report


def assert_wav_tone(path: Path, freq: float, *, min_seconds: float, what: str) -> ToneReport:
    """Like :func:`assert_tone` for a WAV file."""
    assert path.is_file(), f"{what}: no recording at {path}"
    pcm, rate = read_wav(path)
    return assert_tone(pcm, rate, freq, min_seconds=min_seconds, what=f"{what} ({path.name})")


# ---------------------------------------------------------------------------------------------
# The p2psip side
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def p2psip_node(
    user: str = "p2p", *, audio: AudioStreamConfig | None = None, **fields: Any
) -> AsyncIterator[Node]:
    """A started node on 127.0.0.1 (no Bonjour, an overlay of its own) for calls to and from
    plain SIP URIs; stopped on exit."""
    fields.setdefault("bonjour", False)
    fields.setdefault("stats_interval", 0)
    node = Node(
        NodeConfig(
            aor=f"sip:{user}@p2p.test",
            listen=HOST,
            audio=audio or AudioStreamConfig(rtp_timeout=None),
            **fields,
        )
    )
    await node.start()
    try:
        yield node
    finally:
        await asyncio.wait_for(node.stop(), 15)


def node_uri(node: Node, user: str = "p2p") -> str:
    """``sip:user@127.0.0.1:PORT`` - the node's UDP address, for a peer to call."""
    assert node.ua is not None
    return f"sip:{user}@{HOST}:{node.ua.core.local_address('udp').port}"


class IncomingCalls:
    """Collects a node's incoming calls (``await calls.next()``)."""

    def __init__(self, node: Node) -> None:
        self._queue: asyncio.Queue[Call] = asyncio.Queue()
        node.on(self._on_event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, IncomingCall):
            self._queue.put_nowait(event.call)

    async def next(self, timeout: float = SETUP_TIMEOUT) -> Call:
        return await asyncio.wait_for(self._queue.get(), timeout)


async def talk(call: Call, seconds: float = TALK_SECONDS) -> AudioStreamStatistics:
    """Let the call run ``seconds`` and return its media figures (taken while it is up: the
    figures go with the streams when the call ends)."""
    await asyncio.wait_for(call.wait_established(), SETUP_TIMEOUT)
    await asyncio.sleep(seconds)
    stats = call.statistics()
    assert stats is not None, f"{call}: no media statistics"
    assert call.state is SessionState.CONFIRMED, f"{call} ended early: {call.ended}"
    return stats


def assert_media(
    stats: AudioStreamStatistics, *, codec: str, srtp: bool, seconds: float = TALK_SECONDS
) -> None:
    """Codec and SRTP as expected, and RTP flowed both ways for most of ``seconds``."""
    assert stats.codec.casefold().startswith(codec.casefold() + "/"), stats.codec
    assert stats.srtp is srtp, f"srtp={stats.srtp} suite={stats.srtp_suite}"
    expected = seconds / 0.02
    assert stats.packets_sent >= 0.7 * expected, stats
    assert stats.packets_received >= 0.7 * expected, stats
    dropped = stats.dropped
    # baresip sends a plain RTCP APP "PING" at the start and an unencrypted SRTCP BYE (E bit
    # clear, RFC 3711 §3.4) at hangup; our SRTP session refuses and counts them
    assert dropped.srtp_rejected <= 3 and dropped.decode_errors == 0, dropped
    assert dropped.rtcp_malformed == 0, dropped
    # not_rtp: linphone's STUN keep-alives (RFC 7983 demultiplexing), harmless
    assert dropped.dropped - dropped.not_rtp <= 0.05 * stats.packets_received, dropped


# ---------------------------------------------------------------------------------------------
# baresip
# ---------------------------------------------------------------------------------------------


def baresip_module_dir() -> Path:
    """Where baresip's modules are (``g711.so``): from ``dpkg -L baresip-core``, else the
    usual locations."""
    candidates: list[Path] = []
    if shutil.which("dpkg"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listing = subprocess.run(
                ["dpkg", "-L", "baresip-core"], capture_output=True, text=True, timeout=30
            ).stdout
            candidates += [Path(x).parent for x in listing.splitlines() if x.endswith("/g711.so")]
    candidates += [Path("/usr/lib/baresip/modules"), Path("/usr/local/lib/baresip/modules")]
    for candidate in candidates:
        if (candidate / "g711.so").is_file():
            return candidate
    missing("baresip modules (g711.so) not found (apt-get install baresip-core)")
    raise AssertionError("unreachable")


class Baresip:
    """One baresip 1.0 instance, headless (INTEROP_NOTES §3): sends ``source_wav`` into every
    call, records what it receives (``sndfile``), is driven through ``ctrl_tcp``.

    Args:
        user: the account's user part; the account is ``<sip:user@127.0.0.1:PORT>``.
        params: extra account parameters (``;answermode=auto;mediaenc=srtp-mand``...).
        aor / registrar: to register instead (``aor="sip:bob@example.test"``,
            ``registrar="sip:127.0.0.1:5060"``, with ``;auth_pass=...`` in ``params``).
    """

    def __init__(
        self,
        process_factory: Any,
        free_port: Callable[..., int],
        workdir: Path,
        source_wav: Path,
        *,
        user: str = "bob",
        params: str = "",
        aor: str | None = None,
        registrar: str | None = None,
        name: str = "baresip",
    ) -> None:
        self.binary = require_binary("baresip")
        self._process_factory = process_factory
        self.name = name
        self.user = user
        self.dir = workdir / name
        self.rec_dir = self.dir / "rec"
        self.rec_dir.mkdir(parents=True)
        self.sip_port = free_port("both", count=2)  # TLS would take sip_port + 1
        self.ctrl_port = free_port("tcp")
        rtp = free_port("udp", count=8)
        modules = baresip_module_dir()
        config = (CONFIG_DIR / "baresip.config").read_text()
        values = {
            "@@SIP@@": f"{HOST}:{self.sip_port}",
            "@@HOST@@": HOST,
            "@@SOURCE@@": str(source_wav),
            "@@RTP@@": f"{rtp}-{rtp + 7}",
            "@@MODULES@@": str(modules),
            "@@CTRL@@": f"{HOST}:{self.ctrl_port}",
            "@@REC@@": str(self.rec_dir),
        }
        for key, value in values.items():
            config = config.replace(key, value)
        (self.dir / "config").write_text(config)
        if aor is None:
            account = f"<sip:{user}@{HOST}:{self.sip_port}>;regint=0{params}"
        else:
            account = f'<{aor}>;outbound="{registrar}"{params}'
        (self.dir / "accounts").write_text(account + "\n")
        # without a contacts file baresip writes a template and SUBSCRIBEs to an outside URI
        (self.dir / "contacts").write_text("")
        self.process: Any = None
        self._token = 0

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    def start(self) -> Baresip:
        self.process = self._process_factory(
            [self.binary, "-f", str(self.dir)], name=self.name, cwd=self.dir
        )
        self.process.wait_for_log(r"baresip is ready", timeout=15)
        self.process.wait_for_tcp_port(self.ctrl_port, host=HOST, timeout=10)
        return self

    def log(self) -> str:
        """The log without its colour escapes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.process.log_text())

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a ctrl_tcp command (netstring-framed JSON) and return its response."""
        self._token += 1
        token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        deadline = time.monotonic() + timeout
        with socket.create_connection((HOST, self.ctrl_port), timeout=timeout) as sock:
            sock.sendall(str(len(body)).encode() + b":" + body + b",")
            buf = b""
            while time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    break
                buf += data
                while b":" in buf:
                    size, _, rest = buf.partition(b":")
                    if len(rest) < int(size) + 1:
                        break
                    message = json.loads(rest[: int(size)])
                    buf = rest[int(size) + 1 :]
                    if message.get("response") and message.get("token") == token:
                        return dict(message)
        raise AssertionError(f"baresip: no answer to {command!r} {params!r}\n{self.log()[-2000:]}")

    async def acommand(self, command: str, params: str = "") -> dict[str, Any]:
        return await asyncio.to_thread(self.command, command, params)

    async def wait_log(self, pattern: str, timeout: float = SETUP_TIMEOUT) -> re.Match[str]:
        return await asyncio.to_thread(self.process.wait_for_log, pattern, timeout)

    async def wait_closed(self, timeout: float = SETUP_TIMEOUT) -> None:
        """Until baresip logged the end of a call (and closed its recording)."""
        await self.wait_log(r"terminated \(duration", timeout)

    def received_wav(self) -> Path:
        """The recording of what baresip received (``dump-*-dec.wav``)."""
        found = sorted(self.rec_dir.glob("dump-*-dec.wav"))
        assert len(found) == 1, f"baresip recordings: {sorted(self.rec_dir.iterdir())}"
        return found[0]


# ---------------------------------------------------------------------------------------------
# linphonec
# ---------------------------------------------------------------------------------------------


class Linphonec:
    """linphonec (INTEROP_NOTES §4.2) with its commands fed through a FIFO on stdin: files
    instead of a sound card (``soundcard use files``), ``play`` a WAV into calls, ``record``
    what it receives.

    Args:
        srtp: SDES SRTP mandatory (``media_encryption=srtp``, ``media_encryption_mandatory``).
    """

    def __init__(
        self,
        process_factory: Any,
        free_port: Callable[..., int],
        workdir: Path,
        play_wav: Path,
        *,
        user: str = "lin",
        srtp: bool = False,
        name: str = "linphonec",
    ) -> None:
        self.binary = require_binary("linphonec")
        self._process_factory = process_factory
        self.name = name
        self.user = user
        self.play_wav = play_wav
        self.home = workdir / name
        # linphone keeps its database there ("Unable to open linphone database" otherwise)
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True)
        self.record_wav = self.home / "received.wav"
        self.sip_port = free_port("both")
        rtp = free_port("udp", count=4)
        rc = (CONFIG_DIR / "linphonerc").read_text()
        values = {
            "@@PORT@@": str(self.sip_port),
            "@@HOST@@": HOST,
            "@@USER@@": user,
            "@@RTP@@": str(rtp),
            "@@ENCRYPTION@@": "srtp" if srtp else "none",
            "@@MANDATORY@@": "1" if srtp else "0",
            "@@HOME@@": str(self.home),
        }
        for key, value in values.items():
            rc = rc.replace(key, value)
        self.rc = self.home / "linphonerc"
        self.rc.write_text(rc)
        self.fifo = self.home / "stdin"
        os.mkfifo(self.fifo)
        self._fd: int | None = None
        self.process: Any = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    def start(self, *, auto_answer: bool) -> Linphonec:
        # O_RDWR: opening a FIFO this way does not wait for the reader (Linux)
        self._fd = os.open(self.fifo, os.O_RDWR)
        argv = ["/bin/sh", "-c", 'exec "$0" "$@" < "$FIFO"', self.binary, "-c", str(self.rc)]
        argv += ["-d", "0", *(["-a"] if auto_answer else [])]
        env = {**os.environ, "HOME": str(self.home), "FIFO": str(self.fifo)}
        self.process = self._process_factory(argv, name=self.name, env=env, cwd=self.home)
        self.send("soundcard use files")
        self.process.wait_for_log(r"Using wav files instead of soundcard", timeout=15)
        self.send(f"record {self.record_wav}")
        self.send(f"play {self.play_wav}")
        if auto_answer:
            self.send("autoanswer enable")
            self.process.wait_for_log(r"Auto answer enabled", timeout=10)
        self.process.wait_for_udp_port(self.sip_port, host=HOST, timeout=10)
        return self

    def send(self, command: str) -> None:
        assert self._fd is not None
        os.write(self._fd, command.encode() + b"\n")

    async def wait_log(self, pattern: str, timeout: float = SETUP_TIMEOUT) -> re.Match[str]:
        return await asyncio.to_thread(self.process.wait_for_log, pattern, timeout)

    def log(self) -> str:
        return str(self.process.log_text())

    async def quit(self) -> None:
        """``quit``, then wait for the exit (the recording is complete then)."""
        self.send("quit")
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.process.wait, 10)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------------------------------
# pjsua2-python
# ---------------------------------------------------------------------------------------------

PJSUA2_PEER = HERE / "pjsua2_peer.py"


def require_pjsua2() -> str:
    """The Python that has ``pjsua2`` (this one), or skip/fail (pip install pjsua2-python)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import pjsua2"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        missing("pjsua2 not importable (pip install pjsua2-python; wheels for Python <= 3.12)")
    return sys.executable
