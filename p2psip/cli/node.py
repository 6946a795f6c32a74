"""``p2psip node`` and ``p2psip call``: a serverless SIP node from a shell.

``p2psip node --aor AOR [--bootstrap HOST:PORT ...]`` starts a :class:`~p2psip.node.Node`: it
joins the overlay (or starts one), publishes its contacts (signed record in the DHT, services
in Bonjour), answers calls and reads console commands from stdin, one per line::

    call AOR          call an AoR (or a SIP URI with a numeric host and port)
    answer [N]        answer a ringing call          reject [N] / busy [N]   refuse it (603/486)
    hangup [N]        end a call (CANCEL, BYE)        hold [N] / unhold [N]   re-INVITE
    dtmf DIGITS [N]   send RFC 4733 digits            status                  node and calls
    sleep S           wait (scripts)                  help / quit

A command acts on call ``N`` (numbers are printed as ``#N``) or else on the latest call still
going; ``hold``, ``unhold`` and ``dtmf`` first wait until a call being set up is up. At start
the node prints its overlay address (``overlay udp:HOST:PORT``, to bootstrap other nodes from)
and its SIP contacts. stdin may be a pipe or ``/dev/null``: at end of input the node keeps
running until SIGINT or SIGTERM, which stop it cleanly (calls hung up, recordings closed,
records withdrawn), exit status 0. ``--record FILE`` records every call the node answers or
places: the first to FILE, the next ones to FILE-2, FILE-3... (before the suffix).

``p2psip call AOR`` starts a node that does not publish anything, resolves the AoR (or calls a
SIP URI with a numeric host directly, e.g. ``sip:carol@127.0.0.1:5080``: no overlay needed),
keeps the call for ``--duration`` seconds, hangs up and reports resolve time, setup time,
codec, SRTP, packets, loss and jitter (``--json``: one object, key ``srtp`` true/false).
Exit status: 0 the call happened; 1 bad options or a local error; 2 the AoR was not found;
3 it could not be resolved (record refused, overlay unreachable); 4 the call failed (a SIP
status such as 486 busy or 603 declined, no answer, unreachable); 5 the callee's TLS
certificate is not bound to the key of its record; 130 / 143 interrupted by SIGINT / SIGTERM
(the call is hung up and the recording closed first). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from p2psip.cli.args import hostport as _hostport
from p2psip.cli.args import split_hostport
from p2psip.endpoint.session import (
    CallFailed,
    CallTimeout,
    DTMFReceived,
    Established,
    Held,
    PeerVerificationFailed,
    RemoteHeld,
    RemoteResumed,
    Resumed,
    Ringing,
    SessionEvent,
    SessionState,
    StreamsChanged,
    Terminated,
)
from p2psip.errors import LocatorError, NotFound, P2PSIPError
from p2psip.media.config import CODEC_RATES, AudioStreamConfig, codec_available
from p2psip.node import (
    Call,
    CallEnded,
    CallStateChanged,
    IncomingCall,
    MediaStatistics,
    Node,
    NodeConfig,
    NodeEvent,
)

if TYPE_CHECKING:
    from p2psip.media.audio import AudioSource

__all__ = [
    "CallCommandError",
    "NodeConsole",
    "Recording",
    "StopSignals",
    "add_call_arguments",
    "add_node_arguments",
    "call_figures",
    "numbered_path",
    "parse_listen",
    "run_call",
    "run_node",
]

ANONYMOUS = "sip:anonymous@anonymous.invalid"  # RFC 3323 §4.1.1.3


class CallCommandError(P2PSIPError):
    """Bad options for ``p2psip node`` / ``p2psip call``."""


# -- options ----------------------------------------------------------------------------------
def parse_listen(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT`` (``[::1]:5070``, bare ``::1``) with a numeric host; port 0
    when absent (any free port).

    Raises:
        argparse.ArgumentTypeError: with a one-line explanation.
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        host, port = text[1:-1], 0
    elif text.startswith("[") or text.count(":") == 1:
        try:
            host, port = split_hostport(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    else:
        host, port = text, 0
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a numeric HOST[:PORT] (e.g. 127.0.0.1:5070 or [::1]), got {text!r}"
        ) from None
    return host, port


def _add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--play", metavar="FILE", help="send this WAV file (looped)")
    source.add_argument("--tone", type=float, metavar="HZ", help="send a tone")
    parser.add_argument(
        "--record",
        metavar="FILE",
        help="write the received audio to a WAV file (node: FILE, FILE-2... one per call)",
    )


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip node``."""
    parser.add_argument(
        "--aor", required=True, help="our address-of-record (sip:alice@p2p.example)"
    )
    parser.add_argument(
        "--bootstrap",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="an overlay node to join through (repeatable); none starts a new overlay",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST[:PORT]",
        help="SIP address: UDP and TCP on PORT, TLS on PORT+1 (default 127.0.0.1, any ports)",
    )
    parser.add_argument(
        "--overlay-port", type=int, default=0, metavar="P", help="UDP port of the DHT node"
    )
    parser.add_argument("--lan-only", action="store_true", help="no DHT at all: Bonjour only")
    parser.add_argument("--no-bonjour", action="store_true", help="no Bonjour (DHT only)")
    parser.add_argument("--auto-answer", action="store_true", help="answer every call at once")
    _add_audio_arguments(parser)
    parser.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="NAME",
        help="codec preference (repeatable; default every available: PCMU PCMA G722 opus)",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="Ed25519 identity file (created, mode 0600, when absent; default: "
        "STATE/identity.key with --state, else a new key each run)",
    )
    parser.add_argument(
        "--state", type=Path, metavar="DIR", help="directory keeping the overlay routing state"
    )
    parser.add_argument(
        "--expires", type=float, default=3600.0, metavar="S", help="record lifetime (default 3600)"
    )
    parser.add_argument(
        "--call-timeout", type=float, default=30.0, metavar="S", help="setup time of a call"
    )
    parser.add_argument(
        "--json-events", action="store_true", help="print every event as one JSON object a line"
    )
    parser.add_argument(
        "--caller-identity",
        choices=("verify", "require", "off"),
        default="verify",
        help="check callers' RFC 8224 Identity against their AoR record: verify (default: "
        "forgeries refused, unsigned callers ring unverified), require (unsigned refused), off",
    )
    parser.add_argument(
        "--tls-key",
        choices=("ed25519", "ecdsa-p256"),
        default="ed25519",
        help="key of the TLS certificate (ecdsa-p256 for TLS stacks without Ed25519)",
    )


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip call``."""
    parser.add_argument("target", metavar="AOR", help="sip:bob@p2p.example or sip:x@HOST:PORT")
    parser.add_argument(
        "--bootstrap",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="an overlay node to join through (repeatable)",
    )
    parser.add_argument("--lan-only", action="store_true", help="resolve through Bonjour only")
    parser.add_argument(
        "--dns-server",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DNS server, for AoRs of ordinary SIP domains (RFC 3263; repeatable)",
    )
    parser.add_argument(
        "--static", type=Path, metavar="FILE", help="JSON table for the static locator"
    )
    parser.add_argument("--identity", type=Path, metavar="FILE", help="Ed25519 identity file")
    parser.add_argument(
        "--from",
        dest="from_",
        default=ANONYMOUS,
        metavar="AOR",
        help=f"our address-of-record (default {ANONYMOUS})",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=None,
        metavar="HOST[:PORT]",
        help="local SIP address (default: loopback or the family of the target)",
    )
    _add_audio_arguments(parser)
    parser.add_argument(
        "--duration", type=float, default=5.0, metavar="S", help="seconds of call (default 5)"
    )
    parser.add_argument(
        "--codec", action="append", default=[], metavar="NAME", help="codec to offer (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="call setup timeout (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# -- audio ------------------------------------------------------------------------------------
def _codec_names(requested: list[str]) -> list[str]:
    """Validated codec names; every available codec (cheapest first) when none was asked.

    Checked against :data:`~p2psip.media.config.CODEC_RATES` so that an idle node does not load
    the media engine (numpy, PyAV, libsrtp, aioice) before its first call.
    """
    if requested:
        names = []
        for name in requested:
            key = name.casefold()
            if key not in CODEC_RATES:
                known = ", ".join(sorted(CODEC_RATES))
                raise CallCommandError(f"unknown codec {name!r} (known: {known})")
            if not codec_available(key):
                raise CallCommandError(f"{name} needs PyAV: pip install av")
            names.append(key.upper() if key != "opus" else "opus")
        return names
    order = ("pcmu", "pcma", "g722", "opus")
    return [n.upper() if n != "opus" else "opus" for n in order if codec_available(n)]


def _audio_rate(codecs: list[str]) -> int:
    """The rate of sources and recordings: the widest of the codecs, at most 16 kHz."""
    rates = [CODEC_RATES[c.casefold()] for c in codecs]
    return 8000 if max(rates) <= 8000 else 16000


def _source_factory(args: argparse.Namespace, rate: int) -> Callable[[], AudioSource | None]:
    """What each call sends (``--play``/``--tone``), checked now so that errors come early."""
    if args.play:
        from p2psip.media.audio import WavFileSource

        WavFileSource(args.play, rate).close()  # AudioFileError (one line) if unreadable
        path = args.play
        return lambda: WavFileSource(path, rate, loop=True)
    if args.tone is not None:
        from p2psip.media.audio import ToneSource

        tone = float(args.tone)
        if not 0 < tone < rate / 2:
            raise CallCommandError(f"--tone must be between 0 and {rate // 2} Hz")
        return lambda: ToneSource(tone, rate, 0.5)
    return lambda: None


def numbered_path(path: str | os.PathLike[str], n: int) -> Path:
    """``rec.wav`` for the first call, ``rec-2.wav``, ``rec-3.wav``... for the next ones."""
    base = Path(path)
    return base if n <= 1 else base.with_name(f"{base.stem}-{n}{base.suffix}")


class Recording:
    """A WAV recording of one call; frames that arrive after :meth:`close` (the media may
    deliver one more while the call ends) are dropped instead of failing."""

    def __init__(self, path: str | os.PathLike[str], sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        from p2psip.media.audio import WavFileSink

        self._sink = WavFileSink(self.path, sample_rate)

    @property
    def samples_written(self) -> int:
        return self._sink.samples_written

    def write(self, pcm: Any) -> None:
        """Append ``pcm`` (ignored once closed)."""
        if not self._sink.closed:
            self._sink.write(pcm)

    def close(self) -> None:
        """Fix the WAV header and close (idempotent)."""
        self._sink.close()


def _close_quietly(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


# -- figures ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-safe values (non-finite floats become None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def call_figures(call: Call) -> dict[str, Any]:
    """``call.summary()`` plus the SRTP suite, the media transport, DTMF counts and whether
    the callee's TLS key was verified against its record."""
    out: dict[str, Any] = dict(call.summary())
    out["tls_verified"] = call.verified_key is not None
    stats = call.statistics()
    if stats is not None:
        out["srtp_suite"] = stats.srtp_suite
        out["transport"] = stats.transport
        out["dtmf_sent"] = stats.dtmf_sent
        out["dtmf_received"] = stats.dtmf_received
    contact = call.session.contact
    if contact is not None:
        out["contact"] = contact.uri
    return _plain(out)


def _media_line(fig: dict[str, Any]) -> str:
    if "packets_received" not in fig:
        return "no media"
    rtt = fig.get("rtt_ms")
    return (
        f"packets sent {fig.get('packets_sent', 0)} received {fig['packets_received']} "
        f"lost {fig.get('packets_lost', 0)} ({fig.get('loss_percent', 0.0):.2f} %), "
        f"jitter {fig.get('jitter_ms', 0.0):.2f} ms"
        + (f", rtt {rtt:.2f} ms" if isinstance(rtt, float | int) else "")
    )


def _up_line(fig: dict[str, Any]) -> str:
    srtp = "on" + (f" ({fig['srtp_suite']})" if fig.get("srtp_suite") else "")
    text = (
        f"codec {fig.get('codec')}, SRTP {srtp if fig.get('srtp') else 'off'}, "
        f"setup {fig.get('setup_ms')} ms"
    )
    if fig.get("verified_key"):
        text += f", TLS key verified ({fig['verified_key']})"
    return text


def _failure(exc: BaseException) -> tuple[int, str]:
    """Exit status and one-line reason for a call that did not happen."""
    if isinstance(exc, PeerVerificationFailed):
        return 5, (
            "verification failed: the TLS certificate of the callee is not bound to the key "
            "of its record"
        )
    if isinstance(exc, NotFound):
        detail = str(exc).split(": ", 1)[-1]  # without the AoR the message starts with
        return 2, detail if detail.startswith("not found") else f"not found: {detail}"
    if isinstance(exc, LocatorError):
        return 3, f"cannot resolve: {type(exc).__name__}: {exc}"
    if isinstance(exc, CallTimeout):
        return 4, f"no answer: {exc}"
    if isinstance(exc, CallFailed):
        response = exc.response
        if response is not None:
            reason = exc.reason or response.reason
            return 4, f"{reason}: {response.status} {response.reason}"
        if exc.status == 503 or exc.reason == "unreachable":
            tried = ", ".join(uri for uri, _ in exc.attempts) or "no contact"
            return 4, f"unreachable: no contact answered ({tried})"
        return 4, f"call failed: {exc.reason or exc}"
    return 1, str(exc)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


# -- signals and stdin ------------------------------------------------------------------------
class StopSignals:
    """SIGINT/SIGTERM set :attr:`event` (the first one is kept in :attr:`signum`); a second
    signal exits at once (recordings are valid WAV files at every moment)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> StopSignals:
        """Catch SIGINT and SIGTERM on the running loop."""
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._fire, sig)
        return self

    def _fire(self, sig: int) -> None:
        if self.signum is not None:
            print(f"p2psip: signal {sig} again, exiting at once", file=sys.stderr, flush=True)
            os._exit(128 + sig)
        self.signum = sig
        self.event.set()

    def remove(self) -> None:
        """Give the signals back to Python."""
        if self._loop is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    self._loop.remove_signal_handler(sig)
            self._loop = None

    async def wait(self) -> None:
        await self.event.wait()


def _read_lines(stream: TextIO | None, queue: asyncio.Queue[str | None]) -> None:
    """Feed the lines of ``stream`` (stdin) to ``queue`` from a daemon thread; None at EOF.

    A thread works for terminals, pipes, files and ``/dev/null`` alike, and never changes the
    terminal's mode."""
    loop = asyncio.get_running_loop()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def reader() -> None:
        try:
            if stream is None:
                return
            for line in stream:
                put(line)
        except (OSError, ValueError):
            pass
        finally:
            put(None)

    threading.Thread(target=reader, name="p2psip-stdin", daemon=True).start()


# -- output -----------------------------------------------------------------------------------
class _Output:
    """Human lines, or one JSON object a line (``--json-events``)."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def emit(self, kind: str, text: str | None, **fields: Any) -> None:
        if self.json_mode:
            print(json.dumps(_plain({"event": kind, **fields})), flush=True)
        elif text is not None:
            print(text, flush=True)


# -- the node's console -----------------------------------------------------------------------
HELP = """commands:
  call AOR          call an AoR or a SIP URI (sip:x@127.0.0.1:5080)
  answer [N]        answer a ringing call
  reject [N]        refuse it (603 Decline); busy [N]: 486 Busy Here
  hangup [N]        end a call
  hold [N]          put a call on hold; unhold [N] takes it off
  dtmf DIGITS [N]   send DTMF (0-9 * # A-D)
  status            the node and its calls
  sleep S           wait S seconds (for scripts)
  quit              hang up, withdraw our records and stop
N is the call number (#N); default: the latest call still going."""


class NodeConsole:
    """The events and console commands of ``p2psip node`` (usable without a terminal).

    Args:
        node: a started node.
        output_json: one JSON object a line instead of human lines.
        source: makes the audio each call sends (None: silence).
        record: WAV path of the first recorded call (numbered after), None: no recording.
        rate: sample rate of the recordings.
        auto_answer: the node accepts calls itself (NodeConfig.auto_answer); the console then
            gives each incoming call its audio before the answer.
        call_timeout: setup timeout of the calls placed with ``call``.
    """

    def __init__(
        self,
        node: Node,
        *,
        output_json: bool = False,
        source: Callable[[], AudioSource | None] = lambda: None,
        record: str | os.PathLike[str] | None = None,
        rate: int = 8000,
        auto_answer: bool = False,
        call_timeout: float = 30.0,
    ) -> None:
        self.node = node
        self.out = _Output(output_json)
        self.source = source
        self.record = record
        self.rate = rate
        self.auto_answer = auto_answer
        self.call_timeout = call_timeout
        self.numbers: dict[Call, int] = {}
        self.calls: dict[int, Call] = {}
        self._audio: dict[int, list[object]] = {}
        #: calls being placed (resolving): number -> the call, or None if it failed
        self._pending: dict[int, asyncio.Future[Call | None]] = {}
        self._recordings = 0
        self._next = 1
        self._tasks: set[asyncio.Task[object]] = set()
        node.on(self.on_node_event)

    # -- bookkeeping ------------------------------------------------------------------------
    def _number(self) -> int:
        n = self._next
        self._next += 1
        return n

    def _register(self, call: Call, n: int | None = None) -> int:
        if call in self.numbers:
            return self.numbers[call]
        n = self._number() if n is None else n
        self.numbers[call] = n
        self.calls[n] = call
        call.session.add_listener(lambda _s, event, n=n: self._on_session_event(n, event))
        return n

    def _give_audio(self, n: int, call: Call | None = None) -> tuple[Any, Any]:
        """The source and recording of call ``n`` (set on ``call`` when given)."""
        if n in self._audio:
            source, sink = self._audio[n]
        else:
            source = self.source()
            sink = None
            if self.record is not None:
                self._recordings += 1
                sink = Recording(numbered_path(self.record, self._recordings), self.rate)
            self._audio[n] = [source, sink]
        if call is not None and (source is not None or sink is not None):
            call.set_audio(source=source, sink=sink)
        return source, sink

    def _release_audio(self, n: int) -> None:
        for obj in self._audio.pop(n, []):
            _close_quietly(obj)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events -----------------------------------------------------------------------------
    def on_node_event(self, event: NodeEvent) -> None:
        """Print node events; give incoming calls their audio; close it when a call ends."""
        if isinstance(event, IncomingCall):
            call = event.call
            n = self._register(call)
            if self.auto_answer:
                self._give_audio(n, call)  # before the node's accept()
                hint = "answering"
            else:
                self._spawn(self._ring(call))
                hint = f"type 'answer {n}' or 'reject {n}'"
            caller = call.caller_identity
            if caller is None or caller.status == "off":
                who = ""
            elif caller.verified:
                via = "" if caller.source == "dht" else f" by a {caller.source} announcement"
                who = f" [verified caller{via}, key {caller.key_fingerprint}]"
            else:
                who = f" [caller NOT verified: {caller.detail or caller.status}]"
            self.out.emit(
                "incoming_call",
                f"#{n} incoming call from {call.target}{who} ({hint})",
                call=n,
                remote=call.target,
                caller_verified=bool(caller and caller.verified),
                caller_key=caller.key_fingerprint if caller else None,
            )
        elif isinstance(event, CallStateChanged):
            n = self.numbers.get(event.call)
            if n is not None:
                self.out.emit("state", None, call=n, state=event.state.name.lower())
        elif isinstance(event, CallEnded):
            n = self.numbers.get(event.call)
            if n is None:
                return
            fig = call_figures(event.call)
            status = f" ({event.status})" if event.status else ""
            self.out.emit(
                "call_ended",
                f"#{n} ended: {event.reason}{status}; {_media_line(fig)}",
                call=n,
                reason=event.reason,
                status=event.status,
                summary=fig,
                recording=self._recording_path(n),
            )
            self._release_audio(n)
        elif isinstance(event, MediaStatistics):
            n = self.numbers.get(event.call)
            if n is not None:
                self.out.emit("statistics", None, call=n, statistics=event.statistics.as_dict())

    def _recording_path(self, n: int) -> str | None:
        audio = self._audio.get(n)
        sink = audio[1] if audio else None
        return str(sink.path) if isinstance(sink, Recording) else None

    async def _ring(self, call: Call) -> None:
        with contextlib.suppress(P2PSIPError):
            await call.ring()

    def _on_session_event(self, n: int, event: SessionEvent) -> None:
        call = self.calls.get(n)
        if call is None:
            return
        if isinstance(event, Established):
            fig = call_figures(call)
            audio = next((st for st in event.streams if st.media == "audio" and st.codec), None)
            if fig.get("codec") is None and audio is not None and audio.codec is not None:
                # the answerer's media may still be connecting (ICE): say what was negotiated
                fig["codec"] = f"{audio.codec.name}/{audio.codec.clock_rate}"
                fig["srtp"] = audio.srtp is not None
                fig["srtp_suite"] = audio.srtp.suite if audio.srtp is not None else None
            self.out.emit("established", f"#{n} connected: {_up_line(fig)}", call=n, summary=fig)
        elif isinstance(event, Ringing):
            self.out.emit("ringing", f"#{n} ringing ({event.status} {event.reason})", call=n)
        elif isinstance(event, Held | Resumed | RemoteHeld | RemoteResumed):
            kind = {
                Held: "held",
                Resumed: "resumed",
                RemoteHeld: "remote_held",
                RemoteResumed: "remote_resumed",
            }[type(event)]
            self.out.emit(kind, f"#{n} {kind.replace('_', ' ')}", call=n)
        elif isinstance(event, StreamsChanged):
            self.out.emit(
                "streams_changed",
                None,
                call=n,
                added=list(event.added),
                removed=list(event.removed),
            )
        elif isinstance(event, DTMFReceived):
            self.out.emit("dtmf", f"#{n} DTMF {event.digit} (INFO)", call=n, digit=event.digit)

    # -- commands ---------------------------------------------------------------------------
    async def _pick(self, arg: str | None) -> tuple[int, Call]:
        """Call ``arg`` (a number), else the latest call still going; a call still being
        resolved is waited for."""
        if arg is not None:
            try:
                n = int(arg.lstrip("#"))
            except ValueError:
                raise CallCommandError(f"not a call number: {arg!r}") from None
            if n not in self.calls and n not in self._pending:
                raise CallCommandError(f"no call #{n}")
        else:
            going = [n for n, c in self.calls.items() if c.state is not SessionState.TERMINATED]
            going += [n for n, f in self._pending.items() if not f.done()]
            if not going:
                raise CallCommandError("no call")
            n = max(going)
        pending = self._pending.get(n)
        if n not in self.calls and pending is not None:
            await asyncio.wait({pending}, timeout=self.call_timeout + 5)
        call = self.calls.get(n)
        if call is None:
            raise CallCommandError(f"call #{n} failed")
        return n, call

    async def _wait_up(self, n: int, call: Call) -> None:
        if call.state is SessionState.CONFIRMED and call.established_at is not None:
            return
        if call.state is SessionState.TERMINATED:
            raise CallCommandError(f"call #{n} is over")
        try:
            await asyncio.wait_for(call.wait_established(), self.call_timeout + 5)
        except (P2PSIPError, TimeoutError):
            raise CallCommandError(f"call #{n} did not come up") from None

    async def execute(self, line: str) -> bool:
        """Run one console line; False when the node should stop (``quit``)."""
        words = line.split()
        if not words or words[0].startswith("#"):
            return True
        command, args = words[0].lower(), words[1:]
        try:
            return await self._execute(command, args)
        except CallCommandError as exc:
            self.out.emit("error", f"error: {exc}", command=command, message=str(exc))
        except (P2PSIPError, RuntimeError, ValueError) as exc:
            message = _one_line(f"{type(exc).__name__}: {exc}")
            self.out.emit("error", f"error: {message}", command=command, message=message)
        return True

    async def _execute(self, command: str, args: list[str]) -> bool:
        def arg(i: int) -> str | None:
            return args[i] if len(args) > i else None

        if command in ("quit", "exit"):
            return False
        if command in ("help", "?"):
            self.out.emit("help", HELP, text=HELP)
        elif command == "call":
            if not args:
                raise CallCommandError("usage: call AOR")
            n = self._number()
            self.out.emit("calling", f"#{n} calling {args[0]}", call=n, target=args[0])
            self._pending[n] = asyncio.get_running_loop().create_future()
            self._spawn(self._place(n, args[0]))
        elif command == "answer":
            n, call = await self._pick(arg(0))
            self._give_audio(n, call)
            await call.accept()
        elif command in ("reject", "busy"):
            n, call = await self._pick(arg(0))
            await call.reject(486 if command == "busy" else 603)
        elif command == "hangup":
            n, call = await self._pick(arg(0))
            await call.hangup()
        elif command in ("hold", "unhold"):
            n, call = await self._pick(arg(0))
            await self._wait_up(n, call)
            await (call.hold() if command == "hold" else call.unhold())
        elif command == "dtmf":
            digits = arg(0)
            if not digits or any(d not in "0123456789*#ABCDabcd" for d in digits):
                raise CallCommandError("usage: dtmf DIGITS [N] (digits 0-9 * # A-D)")
            n, call = await self._pick(arg(1))
            await self._wait_up(n, call)
            call.send_dtmf(digits.upper())
            self.out.emit("dtmf_sent", f"#{n} sent DTMF {digits.upper()}", call=n, digits=digits)
        elif command == "status":
            self._status()
        elif command == "sleep":
            try:
                seconds = float(arg(0) or "")
            except ValueError:
                raise CallCommandError("usage: sleep SECONDS") from None
            await asyncio.sleep(max(0.0, min(seconds, 3600.0)))
        else:
            raise CallCommandError(f"unknown command {command!r} ('help' lists them)")
        return True

    async def _place(self, n: int, target: str) -> None:
        pending = self._pending[n]
        try:
            await self._dial(n, target, pending)
        finally:
            if not pending.done():
                pending.set_result(None)
            self._pending.pop(n, None)

    async def _dial(self, n: int, target: str, pending: asyncio.Future[Call | None]) -> None:
        source, sink = self._give_audio(n)
        try:
            call = await self.node.call(
                target, source=source, sink=sink, timeout=self.call_timeout, wait=False
            )
        except P2PSIPError as exc:
            _, reason = _failure(exc)
            self.out.emit("call_failed", f"#{n} {target}: {reason}", call=n, reason=reason)
            self._release_audio(n)
            return
        self._register(call, n)
        pending.set_result(call)
        contacts = ", ".join(f"{c.transport} {c.host}:{c.port}" for c in call.contacts)
        resolve = call.summary()["resolve_ms"]
        self.out.emit(
            "resolved",
            f"#{n} resolved in {resolve} ms: {contacts}",
            call=n,
            resolve_ms=resolve,
            contacts=[c.uri for c in call.contacts],
        )
        try:
            await call.wait_established()
        except P2PSIPError as exc:
            _, reason = _failure(exc)
            self.out.emit("call_failed", f"#{n} {target}: {reason}", call=n, reason=reason)

    def _status(self) -> None:
        node = self.node
        overlay = _overlay_address(node)
        going = {
            n: call_figures(c)
            for n, c in self.calls.items()
            if c.state is not SessionState.TERMINATED
        }
        lines = [
            f"node {node.aor}  overlay {overlay or 'none'}  "
            f"{len(going)} call(s) going, {len(self.calls) - len(going)} ended"
        ]
        for n, fig in going.items():
            lines.append(
                f"#{n} {fig['direction']} {fig['target']} {fig['state']}  "
                f"codec {fig.get('codec')} srtp={'on' if fig.get('srtp') else 'off'}  "
                + _media_line(fig)
            )
        self.out.emit(
            "status",
            "\n".join(lines),
            aor=node.aor,
            overlay=overlay,
            calls=[{"call": n, **fig} for n, fig in going.items()],
        )

    async def close(self) -> None:
        """Stop the node (calls hung up, records withdrawn) and close every recording."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.node.stop()
        finally:
            for n in list(self._audio):
                self._release_audio(n)


def _overlay_address(node: Node) -> str | None:
    if node.dht is None:
        return None
    host, port = node.dht.node.address[:2]
    return f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"


# -- p2psip node ------------------------------------------------------------------------------
async def run_node(args: argparse.Namespace) -> int:
    """Run a node until ``quit``, SIGINT or SIGTERM (exit 0 after a clean stop)."""
    codecs = _codec_names(args.codec)
    rate = _audio_rate(codecs)
    source = _source_factory(args, rate)
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    identity = args.identity
    if args.state is not None:
        args.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        if identity is None:
            identity = args.state / "identity.key"
    host, sip_port = args.listen
    if sip_port > 65534:
        raise CallCommandError("--listen PORT must be below 65535 (TLS listens on PORT+1)")
    config = NodeConfig(
        aor=args.aor,
        identity=identity,
        listen=host,
        sip_port=sip_port,
        tls_port=sip_port + 1 if sip_port else 0,
        overlay_port=args.overlay_port,
        bootstrap=list(args.bootstrap),
        lan_only=args.lan_only,
        bonjour=not args.no_bonjour,
        caller_identity=args.caller_identity,
        tls_key_type=args.tls_key,
        state_dir=args.state,
        record_lifetime=args.expires,
        audio=AudioStreamConfig(codecs=tuple(codecs)),
        auto_answer=args.auto_answer,
    )
    if args.lan_only and args.no_bonjour:
        raise CallCommandError("--lan-only needs Bonjour (drop --no-bonjour)")
    node = Node(config)
    console = NodeConsole(
        node,
        output_json=args.json_events,
        source=source,
        record=args.record,
        rate=rate,
        auto_answer=args.auto_answer,
        call_timeout=args.call_timeout,
    )
    signals = StopSignals().install()
    try:
        cut, start = await _race(node.start(), signals)
        if cut:  # stopped while joining
            start.cancel()
            with contextlib.suppress(BaseException):
                await start
            await node.stop()
            return 0
        start.result()  # OverlayUnreachable, IdentityError...: one line from main
        _print_started(node, console.out, codecs)
        try:
            await _console_loop(console, signals)
        finally:
            await console.close()
            how = f"signal {signals.signum}" if signals.signum else "quit"
            console.out.emit(
                "stopped",
                f"stopped ({how}): calls hung up, records withdrawn",
                signal=signals.signum,
            )
    finally:
        signals.remove()
    return 0


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


async def _console_loop(console: NodeConsole, signals: StopSignals) -> None:
    """Run stdin's commands one after the other until ``quit`` or a signal; at the end of
    input (a pipe closed, ``/dev/null``, Ctrl-D) wait for the signal."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    _read_lines(sys.stdin, lines)
    stop = asyncio.ensure_future(signals.wait())
    try:
        while True:
            getter = asyncio.ensure_future(lines.get())
            await asyncio.wait({getter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                getter.cancel()
                return
            line = getter.result()
            if line is None:
                if _interactive():
                    console.out.emit("eof", "end of input: running until Ctrl-C")
                await stop
                return
            command = asyncio.ensure_future(console.execute(line))
            await asyncio.wait({command, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not command.done():  # a signal during a command
                command.cancel()
                with contextlib.suppress(BaseException):
                    await command
                return
            if not command.result():
                return
    finally:
        stop.cancel()


def _print_started(node: Node, out: _Output, codecs: list[str]) -> None:
    assert node.identity is not None
    overlay = _overlay_address(node)
    contacts = [c.uri for c in node.contacts]
    if out.json_mode:
        out.emit(
            "started",
            None,
            aor=node.aor,
            key=node.identity.fingerprint,
            device=node.device_id,
            overlay=overlay,
            bonjour=node.bonjour is not None,
            contacts=contacts,
            codecs=codecs,
        )
        return
    lines = [
        f"p2psip node {node.aor} (key {node.identity.fingerprint}, device {node.device_id})",
        f"overlay {overlay}" if overlay else "overlay none (LAN only: Bonjour)",
        *(f"contact {uri}" for uri in contacts),
        f"bonjour {'on' if node.bonjour is not None else 'off'}; codecs {' '.join(codecs)}",
        "ready: call AOR, answer, reject, hangup, hold, unhold, dtmf DIGITS, status, quit ('help')",
    ]
    print("\n".join(lines), flush=True)


# -- p2psip call ------------------------------------------------------------------------------
def _direct_host(target: str) -> str | None:
    """The numeric host of a SIP URI called without any locator (``sip:x@127.0.0.1:5080``),
    None for an AoR to resolve (the same test as :meth:`Node.call`)."""
    text = target.strip().strip("<>")
    if ":" not in text.split("@", 1)[0]:
        text = "sip:" + text
    host = text.partition("@")[2] or text.partition(":")[2]
    host = host.split(";", 1)[0].split("?", 1)[0]
    bare = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return None
    return bare


def _target_domain(target: str) -> str:
    text = target.strip().strip("<>")
    rest = text.split(":", 1)[1] if text.lower().startswith(("sip:", "sips:")) else text
    return rest.rpartition("@")[2].split(";", 1)[0].split(":", 1)[0].lower()


def _local_address_towards(host: str) -> str:
    """Our address on the route to ``host`` (a connected UDP socket: nothing is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def _call_host(args: argparse.Namespace) -> tuple[str, int]:
    """Where ``p2psip call`` binds: ``--listen``, else the address that reaches the target
    (a direct URI's host) or the first bootstrap node; loopback when that is loopback."""
    if args.listen is not None:
        return args.listen
    hints = [h for h, _ in args.bootstrap]
    direct = _direct_host(args.target)
    if direct is not None:
        hints.insert(0, direct)
    if not hints:
        return ("127.0.0.1", 0)
    ip = ipaddress.ip_address(hints[0].split("%", 1)[0])
    if ip.is_loopback:
        return (str(ip), 0)
    return (_local_address_towards(str(ip)), 0)


async def run_call(args: argparse.Namespace) -> int:
    """Call, keep the call ``--duration`` seconds, hang up and report (see the module doc)."""
    if args.duration < 0:
        raise CallCommandError("--duration must not be negative")
    if args.timeout <= 0:
        raise CallCommandError("--timeout must be positive")
    codecs = _codec_names(args.codec) if args.codec else ["PCMU", "PCMA"]
    rate = _audio_rate(codecs)
    source = _source_factory(args, rate)()
    direct = _direct_host(args.target) is not None
    overlay = bool(args.bootstrap) or args.lan_only
    if not direct and not (overlay or args.dns_server or args.static):
        _close_quietly(source)
        raise CallCommandError(
            f"cannot resolve {args.target}: give --bootstrap HOST:PORT (overlay), --lan-only "
            "(Bonjour), --dns-server or --static, or call a SIP URI with a numeric host"
        )
    host, port = _call_host(args)
    if port > 65534:
        raise CallCommandError("--listen PORT must be below 65535 (TLS listens on PORT+1)")
    config = NodeConfig(
        aor=args.from_,
        identity=args.identity,
        listen=host,
        sip_port=port,
        tls_port=port + 1 if port else 0,
        bootstrap=list(args.bootstrap),
        lan_only=args.lan_only,
        bonjour=args.lan_only,
        overlay_domains=[_target_domain(args.target)] if overlay and not direct else [],
        dns_servers=[f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in args.dns_server],
        static_file=args.static,
        audio=AudioStreamConfig(codecs=tuple(codecs)),
        publish=False,
        stats_interval=0,
    )
    recording = Recording(args.record, rate) if args.record else None
    signals = StopSignals().install()
    node = Node(config)
    try:
        return await _place_call(args, node, signals, source, recording, codecs)
    finally:
        await node.stop()
        _close_quietly(recording)
        _close_quietly(source)
        signals.remove()


async def _race(aw: Any, signals: StopSignals) -> tuple[bool, asyncio.Future[Any]]:
    """Run ``aw`` until done or a stop signal; (interrupted, its future)."""
    task = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(signals.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    return (not task.done()), task


async def _place_call(
    args: argparse.Namespace,
    node: Node,
    signals: StopSignals,
    source: AudioSource | None,
    recording: Recording | None,
    codecs: list[str],
) -> int:
    def fail(exc: BaseException) -> int:
        status, reason = _failure(exc)
        reason = _one_line(reason)
        if args.json:
            extra = {"status": getattr(exc, "status", None)}
            print(json.dumps({"target": args.target, "ok": False, "error": reason, **extra}))
        print(f"p2psip call: {args.target}: {reason}", file=sys.stderr, flush=True)
        return status

    def interrupted() -> int:
        print(f"p2psip call: {args.target}: interrupted", file=sys.stderr, flush=True)
        return 128 + (signals.signum or signal.SIGINT)

    cut, task = await _race(node.start(), signals)
    if cut:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return interrupted()
    task.result()  # OverlayUnreachable / IdentityError -> main's one-line error
    cut, task = await _race(
        node.call(
            args.target,
            source=source,
            sink=recording,
            codecs=codecs,
            timeout=args.timeout,
            wait=False,
        ),
        signals,
    )
    if cut:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return interrupted()
    if task.exception() is not None:
        exc = task.exception()
        if isinstance(exc, P2PSIPError):
            return fail(exc)
        raise exc  # type: ignore[misc]
    call: Call = task.result()
    last: dict[str, Any] = {}

    def snapshot(_session: object, event: SessionEvent) -> None:
        if isinstance(event, Terminated):  # emitted before the media stops: figures are whole
            last.update(call_figures(call))

    call.session.add_listener(snapshot)
    if not args.json:
        contacts = ", ".join(
            f"{c.transport} {c.host}:{c.port}"
            + (f" key {c.key_fingerprint}" if c.key_fingerprint else "")
            for c in call.contacts
        )
        print(
            f"resolved {args.target} in {call.summary()['resolve_ms']} ms: {contacts}", flush=True
        )
    cut, task = await _race(call.wait_established(), signals)
    if cut:
        task.cancel()
        await call.hangup("interrupted")
        return interrupted()
    if task.exception() is not None:
        exc = task.exception()
        await call.hangup("setup failed")
        if isinstance(exc, P2PSIPError):
            return fail(exc)
        raise exc  # type: ignore[misc]
    up_at = time.monotonic()
    if not args.json:
        print(f"connected: {_up_line(call_figures(call))}", flush=True)
    cut, task = await _race(
        asyncio.wait_for(asyncio.shield(call.wait_ended()), args.duration), signals
    )
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await task
    by_peer = call.state is SessionState.TERMINATED
    figures = call_figures(call)
    await call.hangup("interrupted" if cut else "hangup")
    figures.update(last)
    ended = call.session.termination
    figures.update(
        duration_s=round(time.monotonic() - up_at, 3),
        ended=ended.reason if ended is not None else None,
        ended_by="remote" if by_peer else "local",
        interrupted=cut,
        recording=str(recording.path) if recording is not None else None,
        ok=True,
    )
    if recording is not None:
        recording.close()
    if args.json:
        print(json.dumps(_plain(figures)), flush=True)
    else:
        who = "the peer" if by_peer else "us"
        print(
            f"call of {figures['duration_s']:.1f} s: {_media_line(figures)}\n"
            f"ended by {who}: {figures['ended']}"
            + (f"\nrecorded {recording.path}" if recording is not None else ""),
            flush=True,
        )
    return interrupted() if cut else 0
