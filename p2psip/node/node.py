"""The p2psip node: identity, transports, overlay, locators, Bonjour and calls, in one object.

    async with Node(NodeConfig(aor="sip:alice@p2p.example", bootstrap=[("127.0.0.1", 4000)])) as n:
        call = await n.call("sip:bob@p2p.example", source=ToneSource(440, 8000))
        async for event in call.events():
            print(event)

Start order (:meth:`Node.start`): identity -> SIP transports (UDP, TCP, TLS with a certificate
bound to the identity) -> session layer -> overlay node (joins through ``bootstrap``) ->
Bonjour -> locator chain -> publish our contacts (DHT and Bonjour) and keep re-publishing
before the record expires. Stop order is the reverse: calls hung up, records withdrawn (a
signed tombstone in the DHT, goodbyes in mDNS), Bonjour and overlay closed, transports closed.

Calls to an AoR resolve through the chain (static, then Bonjour and the DHT at once for
overlay domains, DNS per RFC 3263 otherwise). A contact found in a verified overlay record is
called over TLS only, and the peer's certificate must be bound to the Ed25519 key of that
record (:func:`~p2psip.overlay.identity.verify_tls_binding`), or the call is refused before
the INVITE is sent; SRTP is then mandatory. A plain SIP URI with a numeric host
(``sip:carol@127.0.0.1:5080``) is called directly, with SRTP as negotiated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from p2psip.endpoint.aio.session import Refusal, Session, SessionManager
from p2psip.endpoint.aio.tls import client_context, server_context
from p2psip.endpoint.aio.useragent import UserAgent
from p2psip.endpoint.message import Request
from p2psip.endpoint.passport import (
    FRESHNESS,
    IdentityHeaderError,
    create_identity_header,
    parse_identity_header,
)
from p2psip.endpoint.session import (
    Established,
    SessionConfig,
    SessionEvent,
    SessionState,
    Terminated,
)
from p2psip.endpoint.uri import parse_uri
from p2psip.endpoint.useragent import UserAgentConfig
from p2psip.errors import LocatorError, P2PSIPError, SIPParseError
from p2psip.locator.aio.chain import ChainLocator
from p2psip.locator.aio.dht import DHTLocator
from p2psip.locator.base import LocatedContact, Locator, aor_domain, normalize_aor_text
from p2psip.media.config import AudioStreamConfig
from p2psip.media.offer_answer import SRTPMode
from p2psip.overlay.dht import DHTConfig
from p2psip.overlay.identity import Identity, TLSKeyType, fingerprint_of, verify_tls_binding

if TYPE_CHECKING:  # the media engine (numpy, PyAV, libsrtp, aioice) loads at the first call
    from p2psip.media.aio.stream import AudioStreamStatistics
    from p2psip.media.audio import AudioSink, AudioSource
    from p2psip.node.media import AudioMedia

__all__ = [
    "Call",
    "CallEnded",
    "CallStateChanged",
    "CallerIdentity",
    "IncomingCall",
    "MediaStatistics",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeEvent",
]

log = logging.getLogger("p2psip.node")


class NodeError(P2PSIPError):
    """The node cannot do what was asked (not started, nothing to call...)."""


# -- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeEvent:
    """Base class of the node's events."""


@dataclass(frozen=True)
class IncomingCall(NodeEvent):
    """Someone calls us; answer with ``call.accept()`` or ``call.reject()``."""

    call: Call


@dataclass(frozen=True)
class CallStateChanged(NodeEvent):
    """A call moved to a new session state."""

    call: Call
    state: SessionState


@dataclass(frozen=True)
class CallEnded(NodeEvent):
    """A call is over."""

    call: Call
    reason: str
    status: int | None


@dataclass(frozen=True)
class MediaStatistics(NodeEvent):
    """Periodic media statistics of an established call."""

    call: Call
    statistics: AudioStreamStatistics


def _nameserver(server: str | tuple[str, int]) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"``, ``"10.0.0.1"`` (port 53) or ``(host, port)``.

    Raises:
        NodeError: not an address with an optional port.
    """
    if isinstance(server, tuple):
        return server[0], int(server[1])
    text = server.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise NodeError(f"bad DNS server {server!r}: expected IP[:port]") from None
    if not 0 < number < 65536:
        raise NodeError(f"bad DNS server {server!r}: port out of range")
    return host, number


def _same_aor(a: str, b: str) -> bool:
    """Whether two URIs name the same AoR (RFC 3261 §19.1.4 rules, via the locators')."""
    try:
        return normalize_aor_text(a) == normalize_aor_text(b)
    except P2PSIPError:
        return False


# -- configuration ----------------------------------------------------------------------------
@dataclass
class NodeConfig:
    """What a node is and where it runs.

    Attributes:
        aor: our address-of-record (``sip:alice@p2p.example``).
        identity: the Ed25519 key file (created with mode 0600 when absent); None makes an
            ephemeral identity (its records die with the node).
        listen: the SIP address: host for UDP, TCP and TLS; ``sip_port`` for UDP and TCP
            (0: any free port), ``tls_port`` for TLS (0: any).
        overlay_port: the DHT node's UDP port (0: any).
        bootstrap: overlay nodes to join through; empty starts a new overlay.
        lan_only: no DHT at all: Bonjour only.
        bonjour: publish and browse with mDNS/DNS-SD.
        bonjour_interfaces: interfaces for mDNS; default the listen address when it is
            loopback (tests), else every interface.
        overlay_domains: domains resolved through the overlay, besides the AoR's own.
        dns_servers: ``host:port`` of DNS servers for other domains (default: the system's).
        static_file: a static locator table (JSON), consulted first.
        state_dir: where the DHT node keeps its id and routing table across restarts.
        record_lifetime: seconds a published record stays valid; re-published at 80 %.
        audio: stream preferences of every call (codecs, ICE, SRTP default for legacy peers).
        device_id: this device's id within the AoR (default from the identity).
        dht_config: overlay timers and sizes.
        session_config: session-layer behaviour.
        auto_answer: accept incoming calls at once (otherwise they ring until answered).
        stats_interval: seconds between :class:`MediaStatistics` events of a call (0: none).
        answer_source / answer_sink: make the audio source / sink of each incoming call
            (``p2psip node --tone/--play/--record``); None: silence / dropped.
        publish: publish our contacts (and withdraw them on stop). False makes a node that
            only calls out (``p2psip call``): it must not announce the AoR, nor withdraw the
            entry a long-running node of the same identity published.
        sign_calls: put an ``Identity`` header (RFC 8224, a PASSporT signed by our key) in
            INVITEs, so that callees can check who calls: to p2psip peers found in the overlay
            and over TLS/TCP; not to plain UDP targets (see :meth:`call`).
        caller_identity: what incoming calls must prove (:class:`CallerIdentity`):
            ``"verify"`` (default) checks an Identity header when there is one: a bad
            signature, a stale or replayed one, or one for another From/To is refused (438 /
            403); a call without one, or whose caller's key cannot be found, rings unverified.
            ``"require"`` also refuses those (428 / 436). ``"off"`` checks nothing.
        caller_lookup_timeout: seconds to find the caller's key (its AoR record).
        max_caller_lookups: caller key lookups at once; calls beyond ring unverified (or are
            refused with ``"require"``) instead of queueing more overlay lookups.
        tls_key_type: the key of our TLS certificate (bound to the identity either way):
            ``"ed25519"`` (OpenSSL-based peers, TLS 1.2 and 1.3) or ``"ecdsa-p256"`` (every
            TLS stack, e.g. mbedTLS; loads the ``cryptography`` package, ~9 MB more memory).
    """

    aor: str
    identity: str | Path | None = None
    listen: str = "127.0.0.1"
    sip_port: int = 0
    tls_port: int = 0
    overlay_port: int = 0
    bootstrap: Sequence[tuple[str, int]] = ()
    lan_only: bool = False
    bonjour: bool = True
    bonjour_interfaces: Sequence[str] | None = None
    overlay_domains: Sequence[str] = ()
    dns_servers: Sequence[str] = ()
    static_file: str | Path | None = None
    state_dir: str | Path | None = None
    record_lifetime: float = 3600.0
    audio: AudioStreamConfig = field(default_factory=AudioStreamConfig)
    device_id: str | None = None
    dht_config: DHTConfig | None = None
    session_config: SessionConfig | None = None
    auto_answer: bool = False
    stats_interval: float = 5.0
    answer_source: Callable[[], AudioSource | None] | None = None
    answer_sink: Callable[[], AudioSink | None] | None = None
    publish: bool = True
    sign_calls: bool = True
    caller_identity: str = "verify"
    caller_lookup_timeout: float = 3.0
    max_caller_lookups: int = 16
    tls_key_type: TLSKeyType = "ed25519"

    def __post_init__(self) -> None:
        if self.tls_key_type not in ("ed25519", "ecdsa-p256"):
            raise NodeError(
                f"tls_key_type must be 'ed25519' or 'ecdsa-p256', not {self.tls_key_type!r}"
            )
        if self.caller_identity not in ("off", "verify", "require"):
            raise NodeError(
                f"caller_identity must be 'off', 'verify' or 'require', "
                f"not {self.caller_identity!r}"
            )


@dataclass(frozen=True)
class CallerIdentity:
    """What an incoming call proved about its caller (RFC 8224).

    Attributes:
        status: ``"verified"`` (the Identity header is signed by the key of the caller's AoR
            record, fresh, and names this call's From and To), ``"absent"`` (no Identity
            header: a legacy caller, or one that does not sign), ``"unverifiable"`` (no key
            could be found for the caller's AoR) or ``"off"`` (not checked).
        aor: the caller's AoR (From).
        key_fingerprint: the key that signed, when verified.
        source: the locator that gave that key (``"dht"``: a signed overlay record;
            ``"bonjour"``: a LAN announcement, which is not authenticated).
        detail: why the caller is not verified.
    """

    status: str
    aor: str
    key_fingerprint: str | None = None
    source: str | None = None
    detail: str = ""

    @property
    def verified(self) -> bool:
        """Whether the caller proved it holds the key of its AoR."""
        return self.status == "verified"


# -- calls ----------------------------------------------------------------------------------------
class Call:
    """One call: its signalling session, its audio and its figures.

    Attributes:
        session: the INVITE session (state, events, hold/unhold...).
        media: the audio (:class:`~p2psip.node.media.AudioMedia`).
        direction: ``"outgoing"`` or ``"incoming"``.
        target: what was called (outgoing) or who calls (incoming).
        contacts: the contacts tried (outgoing).
        resolve_time: seconds spent resolving the AoR (outgoing).
        verified_key: the callee's key fingerprint when its record was verified (outgoing),
            the caller's when its Identity header was (incoming).
        caller_identity: what the caller proved (incoming calls).
    """

    def __init__(
        self,
        node: Node,
        session: Session,
        media: AudioMedia,
        direction: str,
        target: str,
        *,
        contacts: Sequence[LocatedContact] = (),
        resolve_time: float | None = None,
        caller_identity: CallerIdentity | None = None,
    ) -> None:
        self.node = node
        self.caller_identity = caller_identity
        self.session = session
        self.media = media
        self.direction = direction
        self.target = target
        self.contacts = list(contacts)
        self.resolve_time = resolve_time
        self.verified_key = next((c.key_fingerprint for c in contacts if c.key_fingerprint), None)
        if caller_identity is not None and caller_identity.verified:
            self.verified_key = caller_identity.key_fingerprint
        self.started_at = time.monotonic()
        self.established_at: float | None = None
        self.ended: CallEnded | None = None
        self._stats_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Call {self.direction} {self.target} {self.state.name}>"

    @property
    def state(self) -> SessionState:
        return self.session.state

    @property
    def setup_time(self) -> float | None:
        """Seconds from the INVITE to the call being up."""
        return self.session.setup_time

    @property
    def srtp(self) -> bool:
        """Whether the audio is encrypted (SRTP)."""
        stats = self.media.statistics()
        return bool(stats is not None and stats.srtp)

    @property
    def codec(self) -> str | None:
        """The codec audio is sent with."""
        stats = self.media.statistics()
        return stats.codec if stats is not None else None

    def statistics(self) -> AudioStreamStatistics | None:
        """The audio statistics (None before media started)."""
        return self.media.statistics()

    def events(self) -> AsyncIterator[SessionEvent]:
        """The session's events (earlier ones first), ending after it terminated."""
        return self.session.events()

    async def wait_established(self) -> None:
        """Until the call is up (raises the session's error if it failed)."""
        await self.session.wait_established()

    async def wait_ended(self) -> Terminated:
        """Until the call is over."""
        return await self.session.wait_terminated()

    async def accept(self) -> None:
        """Answer an incoming call (200 with our SDP)."""
        await self.session.accept()

    async def ring(self) -> None:
        """Tell an incoming caller we are ringing (180)."""
        await self.session.ring()

    async def reject(self, status: int = 603, reason: str | None = None) -> None:
        """Refuse an incoming call (603 Decline by default; 486 for busy)."""
        await self.session.reject(status, reason)

    async def hold(self) -> None:
        """Put the peer on hold (re-INVITE, sendonly)."""
        await self.session.hold()

    async def unhold(self) -> None:
        """Take the peer off hold."""
        await self.session.unhold()

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits (RFC 4733 events in the audio stream)."""
        self.media.send_dtmf(digits)

    def set_audio(
        self, *, source: AudioSource | None = None, sink: AudioSink | None = None
    ) -> None:
        """Change what the first stream sends and where its received audio goes (for an
        incoming call: before :meth:`accept`)."""
        self.media.set_primary_audio(source=source, sink=sink)

    async def add_stream(self, *, source: AudioSource | None = None) -> int:
        """Add an audio stream with a re-INVITE; its m-line index."""
        config = await self.media.add_local_stream(source=source)
        return await self.session.add_stream(config)

    async def remove_stream(self, index: int) -> None:
        """Remove (disable) a stream with a re-INVITE."""
        await self.session.remove_stream(index)

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call whatever its state (CANCEL, reject or BYE) and wait until it is over."""
        if self.session.state is not SessionState.TERMINATED:
            await self.session.terminate(reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.session.wait_terminated(), 10.0)

    def summary(self) -> dict[str, object]:
        """Figures of the call as plain values (``p2psip call --json``)."""
        stats = self.media.statistics()
        out: dict[str, object] = {
            "target": self.target,
            "direction": self.direction,
            "state": self.state.name.lower(),
            "resolve_ms": None if self.resolve_time is None else round(1000 * self.resolve_time, 2),
            "setup_ms": None if self.setup_time is None else round(1000 * self.setup_time, 2),
            "codec": stats.codec if stats is not None else None,
            "srtp": bool(stats is not None and stats.srtp),
            "verified_key": self.verified_key,
        }
        if stats is not None:
            media = stats.as_dict()
            for key in (
                "packets_sent",
                "packets_received",
                "packets_lost",
                "loss_percent",
                "jitter_ms",
                "rtt_ms",
                "concealed_frames",
            ):
                if key in media:
                    out[key] = media[key]
        if self.ended is not None:
            out["ended"] = self.ended.reason
        return out


# -- the node -------------------------------------------------------------------------------------
class Node:
    """A serverless SIP node (see the module docstring).

    Args:
        config: what the node is; or give the :class:`NodeConfig` fields as keywords.
    """

    def __init__(self, config: NodeConfig | None = None, **fields: object) -> None:
        if config is None:
            config = NodeConfig(**fields)  # type: ignore[arg-type]
        elif fields:
            config = replace(config, **fields)  # type: ignore[arg-type]
        self.config = config
        self.aor = normalize_aor_text(config.aor)
        self.identity: Identity | None = None
        self.ua: UserAgent | None = None
        self.sessions: SessionManager | None = None
        self.dht: DHTLocator | None = None
        self.bonjour: Locator | None = None
        self.locator: ChainLocator | None = None
        self.contacts: list[LocatedContact] = []
        self.calls: list[Call] = []
        self._caller_ids: dict[int, CallerIdentity] = {}
        self._seen_identities: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._caller_lookups = 0  # caller key lookups in flight
        self._listeners: list[Callable[[NodeEvent], Awaitable[None] | None]] = []
        self._queues: list[asyncio.Queue[NodeEvent | None]] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self._republish: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    async def start(self) -> None:
        """Bring the node up in order (see the module docstring).

        Raises:
            OverlayUnreachable: bootstrap nodes were given and none answered.
            IdentityError: the identity file is unreadable or unsafe.
        """
        if self._started:
            return
        config = self.config
        try:
            self.identity = (
                Identity.load_or_create(config.identity)
                if config.identity is not None
                else Identity.generate()
            )
            await self._start_sip()
            await self._start_locators()
            self._started = True
            if config.publish:
                await self.publish()
        except BaseException:
            await self._teardown()
            raise
        if config.publish:
            self._republish = asyncio.create_task(self._republish_loop())

    async def _start_sip(self) -> None:
        config = self.config
        assert self.identity is not None
        host = config.listen
        ua = UserAgent(UserAgentConfig())
        self.ua = ua
        await ua.listen("udp", host, config.sip_port)
        await ua.listen("tcp", host, config.sip_port if config.sip_port else 0)
        credentials = self.identity.tls_certificate(
            f"p2psip {self.identity.short_fingerprint}",
            datetime.datetime.now(datetime.UTC),
            days=30,
            aors=[self.aor],
            key_type=self.config.tls_key_type,
        )
        await ua.listen(
            "tls",
            host,
            config.tls_port,
            ssl_context=server_context(credentials.certificate_pem, credentials.private_key_pem),
        )
        assert ua.transports is not None
        # Peers' certificates are self-signed: the handshake accepts any, and the session
        # layer checks the binding to the key of the verified record before any INVITE.
        ua.transports.tls_client_context = client_context(verify=False)
        user = self.aor.partition(":")[2].rpartition("@")[0] or "p2psip"
        self.sessions = SessionManager(
            ua,
            config=replace(config.session_config or SessionConfig(), contact_user=user),
            media_factory=self._media_for,
            verify_peer=self._verify_peer,
            local_uri=self.aor,
            on_incoming=self._on_incoming,
            resolve_target=self._contacts_for,  # 3xx targets: the same rules as a call
            screen_incoming=self._screen_caller,
        )
        self.sessions.add_listener(self._on_session_event)
        device = self.device_id
        # TLS first: p2psip callers use it and check the certificate against our key
        self.contacts = []
        for rank, transport in enumerate(("tls", "udp", "tcp")):
            local = ua.core.local_address(transport)
            param = "" if transport == "udp" else f";transport={transport}"
            self.contacts.append(
                LocatedContact(
                    f"sip:{user}@{local.host_for_uri}:{local.port}{param}",
                    transport,
                    local.host,
                    local.port,
                    10 * rank,
                    device_id=device,
                )
            )

    @property
    def device_id(self) -> str:
        """This device's id within the AoR."""
        if self.config.device_id:
            return self.config.device_id
        assert self.identity is not None
        return "d-" + self.identity.short_fingerprint.replace(":", "")[-12:].lower()

    def _loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.config.listen).is_loopback
        except ValueError:
            return False

    async def _start_locators(self) -> None:
        config = self.config
        overlay: list[Locator] = []
        if not config.lan_only:
            state_path = None
            if config.state_dir is not None:
                Path(config.state_dir).mkdir(parents=True, exist_ok=True)
                state_path = Path(config.state_dir) / "dht-state.json"
            self.dht = await DHTLocator.start(
                host=config.listen,
                port=config.overlay_port,
                bootstrap=list(config.bootstrap),
                identity=self.identity,
                config=config.dht_config,
                state_path=state_path,
                device_id=self.device_id,
                lifetime=config.record_lifetime,
                min_replicas=1 if config.bootstrap else 0,
            )
            overlay.append(self.dht)
        if config.bonjour or config.lan_only:
            from p2psip.locator.aio.bonjour import BonjourLocator

            interfaces = config.bonjour_interfaces
            if interfaces is None and self._loopback():
                interfaces = [config.listen]
            self.bonjour = await BonjourLocator.start(
                interfaces=list(interfaces) if interfaces is not None else None,
                device_id=self.device_id,
                probe=False,
            )
            overlay.append(self.bonjour)
        dns = None
        if config.dns_servers:
            from p2psip.locator.aio.dns import DNSLocator, DNSResolver

            dns = DNSLocator(DNSResolver(nameservers=[_nameserver(s) for s in config.dns_servers]))
        static = None
        if config.static_file is not None:
            from p2psip.locator.static import StaticLocator

            static = StaticLocator.from_file(config.static_file)
        domains = {aor_domain(self.aor), *config.overlay_domains}
        self.locator = ChainLocator(
            overlay=overlay, dns=dns, static=static, overlay_domains=sorted(domains)
        )

    async def publish(self) -> None:
        """Publish our contacts (signed record in the DHT, services in Bonjour).

        Raises:
            RecordRefused: the DHT replicas refused the record (e.g. the AoR is pinned to
                another key).
        """
        if self.dht is not None:
            keyed = [
                replace(c, key_fingerprint=self.identity.fingerprint if self.identity else None)
                for c in self.contacts
            ]
            await self.dht.publish(self.aor, keyed)
        if self.bonjour is not None:
            assert self.identity is not None
            keyed = [
                replace(
                    c,
                    key_fingerprint=self.identity.fingerprint,
                    public_key=self.identity.public_key_bytes,
                )
                for c in self.contacts
            ]
            await self.bonjour.publish(self.aor, keyed)

    async def _republish_loop(self) -> None:
        lifetime = self.config.record_lifetime
        delay = 0.8 * lifetime
        while True:
            await asyncio.sleep(delay)
            try:
                await self.publish()
                delay = 0.8 * lifetime
            except Exception as exc:  # keep trying: the overlay may come back
                log.warning("re-publishing %s failed: %s", self.aor, exc)
                delay = min(30.0, 0.1 * lifetime)

    async def stop(self) -> None:
        """Hang up, withdraw our records and close everything (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        if self._republish is not None:
            self._republish.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._republish
        calls = [c for c in self.calls if c.state is not SessionState.TERMINATED]
        await asyncio.gather(*(c.hangup("node stopping") for c in calls), return_exceptions=True)
        if self._started and self.config.publish:
            for locator in (self.dht, self.bonjour):
                if locator is None:
                    continue
                try:
                    await asyncio.wait_for(locator.withdraw(self.aor), 5.0)
                except Exception as exc:
                    log.warning("withdrawing %s from %s failed: %s", self.aor, locator.name, exc)
        await self._teardown()
        for queue in self._queues:
            queue.put_nowait(None)

    async def _teardown(self) -> None:
        if self.dht is not None and self.config.state_dir is not None:
            with contextlib.suppress(Exception):
                self.dht.node.save_state(Path(self.config.state_dir) / "dht-state.json")
        for task in list(self._tasks):
            task.cancel()
        if self.sessions is not None:
            with contextlib.suppress(Exception):
                await self.sessions.close()
        for closer in (self.bonjour, self.dht):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()  # type: ignore[attr-defined]
        if self.ua is not None:
            with contextlib.suppress(Exception):
                await self.ua.close()

    # -- events -------------------------------------------------------------------------------
    def on(self, callback: Callable[[NodeEvent], Awaitable[None] | None]) -> None:
        """Call ``callback(event)`` (sync or async) for every :class:`NodeEvent`."""
        self._listeners.append(callback)

    async def events(self) -> AsyncIterator[NodeEvent]:
        """The node's events from now on, until it stops."""
        queue: asyncio.Queue[NodeEvent | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def _emit(self, event: NodeEvent) -> None:
        for queue in self._queues:
            queue.put_nowait(event)
        for callback in self._listeners:
            try:
                result = callback(event)
            except Exception:
                log.exception("node event callback failed")
                continue
            if asyncio.iscoroutine(result):
                self._spawn(result)

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- calls --------------------------------------------------------------------------------
    def _call_of(self, session: Session) -> Call | None:
        return next((c for c in self.calls if c.session is session), None)

    def _media_for(self, session: Session) -> AudioMedia:
        from p2psip.node.media import AudioMedia

        # incoming calls: the session layer asks the factory; SRTP as the caller offers it
        # (p2psip callers always make it mandatory)
        config = self.config
        return AudioMedia(
            self._audio_config(None),
            source=config.answer_source() if config.answer_source else None,
            sink=config.answer_sink() if config.answer_sink else None,
            spare=True,
            # answering an offer: controlled from the start (see AudioMedia)
            ice_controlling=False if session.remote_offer is not None else None,
        )

    def _audio_config(
        self, codecs: Sequence[str] | None, *, srtp: bool = False
    ) -> AudioStreamConfig:
        audio = self.config.audio
        if codecs:
            audio = replace(audio, codecs=tuple(codecs))
        if audio.ice and audio.host_addresses is None and self._loopback():
            audio = replace(audio, host_addresses=[self.config.listen])
        if not audio.ice:
            audio = replace(audio, address=self.config.listen)
        if srtp:
            audio = replace(audio, srtp=SRTPMode.MANDATORY)
        return audio

    async def _verify_peer(self, cert: bytes | None, contact: LocatedContact, aor: str) -> bool:
        if contact.public_key is None:
            return True  # not from a verified record: a legacy peer, nothing to check against
        if cert is None:
            return False
        return verify_tls_binding(cert, contact.public_key, datetime.datetime.now(datetime.UTC))

    async def _screen_caller(self, session: Session, request: Request) -> Refusal | None:
        """RFC 8224 §6.2 on an incoming INVITE: who signed it, and is it this call's?"""
        mode = self.config.caller_identity
        aor = session.remote_aor

        def note(status: str, detail: str = "", **kw: str | None) -> Refusal | None:
            self._caller_ids[session.id] = CallerIdentity(status, aor, detail=detail, **kw)
            if mode == "require" and status != "verified":
                code = 428 if status == "absent" else 436
                return Refusal(code, None, detail or f"caller identity {status}")
            return None

        if mode == "off":
            return note("off")
        lines = request.headers.get_lines("Identity")
        if not lines:
            return note("absent", "no Identity header")
        try:
            passport = parse_identity_header(lines[0])
            passport.check(
                from_aor=aor,
                to_aor=str(request.to.uri.with_(params={}, headers=())),
                now=time.time(),
                same=_same_aor,
            )
        except (IdentityHeaderError, SIPParseError) as exc:
            status = getattr(exc, "status", 438)
            phrase = getattr(exc, "phrase", None)
            return Refusal(status, phrase, str(exc))
        if not _same_aor(passport.info, passport.orig):
            return note("unverifiable", f"key source {passport.info!r} is not the caller's AoR")
        if self.locator is None or not self.locator.is_overlay_aor(passport.orig):
            return note("unverifiable", "the caller's AoR is not in an overlay domain")
        if self._caller_lookups >= self.config.max_caller_lookups:
            # a flood of INVITEs with well-formed tokens must not become a flood of lookups
            return note("unverifiable", "too many caller checks at once")
        self._caller_lookups += 1
        try:
            async with asyncio.timeout(self.config.caller_lookup_timeout):
                contacts = await self.resolve(passport.orig)
        except TimeoutError:
            return note("unverifiable", "the caller's AoR record was not found in time")
        except P2PSIPError as exc:
            return note("unverifiable", f"the caller's AoR record: {exc}")
        finally:
            self._caller_lookups -= 1
        keys = {(c.public_key, c.source) for c in contacts if c.public_key is not None}
        if not keys:
            return note("unverifiable", "the caller's AoR has no signed record")
        if passport.kid is not None:
            keys = {(k, src) for k, src in keys if fingerprint_of(k) == passport.kid}
            if not keys:  # the AoR's record names other keys: someone else signed
                return Refusal(438, None, f"the Identity is not signed by {aor}'s key")
        for key, source in sorted(keys, key=lambda item: item[1] != "dht"):
            if passport.verify(key, Identity.verify):
                if self._first_call_of(passport.signature, request.call_id) != request.call_id:
                    return Refusal(438, None, "the Identity header was replayed from another call")
                return note("verified", key_fingerprint=fingerprint_of(key), source=source)
        return Refusal(438, None, f"the Identity signature does not verify with {aor}'s key")

    def _first_call_of(self, signature: bytes, call_id: str) -> str:
        """The Call-ID a verified token was first seen with (RFC 8224 §12.1: a token copied
        into another call is refused). Only verified tokens are kept (junk cannot fill the
        table), oldest first, and dropped once older than twice the freshness window, after
        which the token is refused as stale anyway."""
        seen = self._seen_identities
        now = time.time()
        while seen and next(iter(seen.values()))[1] < now - 2 * FRESHNESS:
            seen.popitem(last=False)
        return seen.setdefault(signature, (call_id, now))[0]

    async def _on_incoming(self, session: Session) -> None:
        media = session.media
        from p2psip.node.media import AudioMedia

        assert isinstance(media, AudioMedia)
        media.bind_failure(session.media_failed)
        call = Call(
            self,
            session,
            media,
            "incoming",
            session.remote_uri,
            caller_identity=self._caller_ids.pop(session.id, None),
        )
        self.calls.append(call)
        self._emit(IncomingCall(call))
        if self.config.auto_answer:
            try:
                await call.accept()
            except P2PSIPError as exc:
                log.warning("auto-answer failed: %s", exc)

    def _on_session_event(self, session: Session, event: SessionEvent) -> None:
        call = self._call_of(session)
        if call is None:
            return
        if isinstance(event, Established):
            call.established_at = time.monotonic()
            if self.config.stats_interval > 0:
                self._spawn(self._stats_loop(call))
        if isinstance(event, Terminated):
            call.ended = CallEnded(call, event.reason, event.status)
            self._emit(call.ended)
            return
        state = getattr(event, "state", None)
        if isinstance(state, SessionState):
            self._emit(CallStateChanged(call, state))

    async def _stats_loop(self, call: Call) -> None:
        while call.state is not SessionState.TERMINATED:
            await asyncio.sleep(self.config.stats_interval)
            stats = call.statistics()
            if stats is not None and call.state is SessionState.CONFIRMED:
                self._emit(MediaStatistics(call, stats))

    async def resolve(self, target: str) -> list[LocatedContact]:
        """Where ``target`` (an AoR) can be reached, best first.

        Raises:
            NotFound, RecordRefused, LocatorError: as the locators do.
        """
        if self.locator is None:
            raise NodeError("the node is not started")
        return await self.locator.resolve(target)

    async def call(
        self,
        target: str,
        *,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        codecs: Sequence[str] | None = None,
        timeout: float | None = None,
        wait: bool = True,
    ) -> Call:
        """Call an AoR (resolved through the locators) or a SIP URI with a numeric host.

        Args:
            target: ``sip:bob@p2p.example`` or ``sip:carol@127.0.0.1:5080``.
            source / sink: the audio to send and where received audio goes.
            codecs: codec preference for this call (names), default the node's.
            timeout: seconds for the whole call setup.
            wait: return once the call is up (True) or at once (False, follow the events).

        Raises:
            NotFound, RecordRefused, LocatorError: the AoR could not be resolved.
            CallFailed (and subclasses), PeerVerificationFailed: the call did not happen.
        """
        if not self.running or self.sessions is None:
            raise NodeError("the node is not running")
        started = time.monotonic()
        contacts = await self._contacts_for(target)
        resolve_time = time.monotonic() - started
        verified = any(c.public_key is not None for c in contacts)
        if verified:
            # a p2psip peer: TLS to the contact, its certificate bound to the record's key
            tls = [c for c in contacts if c.transport.lower() == "tls" and c.public_key]
            if tls:
                contacts = tls
        from p2psip.node.media import AudioMedia

        media = AudioMedia(self._audio_config(codecs, srtp=verified), source=source, sink=sink)
        to = self._to_uri(target)
        headers = []
        # p2psip peers (overlay records) and stream transports get the Identity header; a plain
        # UDP target does not: its ~450 bytes would push the INVITE past the 1,300 bytes that
        # RFC 3261 §18.1.1 moves to TCP, which a UDP-only phone behind a firewall never answers
        signed = verified or all(c.transport.lower() in ("tls", "tcp") for c in contacts)
        if self.config.sign_calls and signed and self.identity is not None and self.aor:
            # RFC 8224 §5: who calls whom, when; signed with the key of our AoR record
            identity = create_identity_header(
                self.identity.sign,
                orig=self.aor,
                dest=[to],
                iat=int(time.time()),
                kid=self.identity.fingerprint,
            )
            headers.append(("Identity", identity))
        session = self.sessions.start_call(
            contacts, to=to, media=media, timeout=timeout, headers=headers
        )
        media.bind_failure(session.media_failed)
        call = Call(
            self, session, media, "outgoing", target, contacts=contacts, resolve_time=resolve_time
        )
        self.calls.append(call)
        if wait:
            try:
                await call.wait_established()
            except BaseException:
                if call.state is not SessionState.TERMINATED:
                    await call.hangup("setup abandoned")
                raise
        return call

    @staticmethod
    def _to_uri(target: str) -> str:
        text = target.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        return text if ":" in text.split("@", 1)[0] else "sip:" + text

    async def _contacts_for(self, target: str) -> list[LocatedContact]:
        from p2psip.locator.static import contact_from_uri

        uri = self._to_uri(target)
        try:
            host = parse_uri(uri).host_plain
        except SIPParseError as exc:
            raise NodeError(f"cannot call {target!r}: {exc}") from exc
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # a numeric host: call it directly
            try:
                return [contact_from_uri(uri)]
            except LocatorError as exc:
                raise NodeError(f"cannot call {target!r}: {exc}") from exc
        contacts = await self.resolve(uri)
        # RFC 3263 picks where the request goes, not what it is for: the Request-URI of a
        # call found through DNS stays the AoR called (RFC 3261 §8.1.1.1).
        return [replace(c, uri=uri) if c.source == "dns" else c for c in contacts]
