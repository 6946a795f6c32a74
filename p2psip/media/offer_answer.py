"""The SDP offer/answer model (RFC 3264), sans-IO.

An :class:`OfferAnswer` holds what we can do (one :class:`MediaConfig` per stream we may run:
codecs, port, ptime, rtcp-mux, SRTP, ICE) and the state of the negotiation with one peer. It
never touches the network: SDP in, SDP and :class:`NegotiatedStream` results out::

    pcmu = CodecDescription("PCMU", 8000)
    alice = OfferAnswer("192.0.2.10", [MediaConfig(port=4000, codecs=[pcmu])])
    offer = alice.create_offer()                 # SessionDescription: send it in the INVITE
    streams = alice.receive_answer(answer_body)  # (NegotiatedStream, ...), or SDPError(488)

    bob = OfferAnswer("192.0.2.20", [...])
    answer = bob.answer(offer_body)          # receive_offer() + create_answer()

The states are those of RFC 3264 (and RFC 6337 §2): STABLE -> create_offer() -> OFFER_SENT ->
receive_answer() -> STABLE, and STABLE -> receive_offer() -> OFFER_RECEIVED -> create_answer()
-> STABLE; :meth:`OfferAnswer.rollback` abandons the exchange in progress (our offer refused
with 488/491, or the peer's offer answered with an error) and keeps the last negotiated session.

What it implements:

* the initial offer (one m-line per configured stream) and the answer (RFC 3264 §5, §6):
  codecs intersected in the offerer's order (or ours, :class:`CodecOrder`), the offerer's
  payload type numbers kept in the answer, dynamic numbers mapped both ways (we send with the
  peer's numbers and receive with ours), ``telephone-event`` and ``CN`` matched by clock rate
  (RFC 4733 §2.1), a stream with nothing in common rejected with port 0, the direction of the
  answer from the table of RFC 3264 §6.1, ``rtcp-mux`` only when offered (RFC 5761 §5.1.1),
  SDES crypto: the first offered suite we have a key for, answered with the offer's tag and our
  key (RFC 4568 §7.1.2); an ``RTP/SAVP`` stream without acceptable crypto is rejected;
* the check of an answer against our offer (same m-lines, media and transport, only offered
  codecs, an offered crypto tag, no unoffered rtcp-mux): a mismatch raises SDPError(488);
* re-offers (RFC 3264 §8): the ``o=`` version goes up by one whenever our description changes
  and stays when it does not (§8, RFC 4317 §2.5), hold with sendonly/inactive and unhold
  (§8.4), a new stream at the end (§8.1) or in a disabled slot (§8.3), a stream removed with
  port 0 while its m-line stays (§8.2), codec payload types kept for the session (§8.3.2);
* ICE (RFC 8839) carried, not run: our ufrag/pwd/candidates go out as configured (in an answer
  only when the offer has ICE), the peer's come back in :class:`NegotiatedStream`; an offer
  whose default destination is none of its candidates gets ``a=ice-mismatch`` (RFC 8839 §4.4.1).

Not implemented: DTLS-SRTP (``UDP/TLS/RTP/SAVP`` streams are rejected), non-RTP media,
bundling, capability negotiation (RFC 5939).
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from p2psip.media.sdp import (
    DEFAULT_MAX_SIZE,
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Candidate,
    Connection,
    Crypto,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SDPError,
    SessionDescription,
    format_fmtp_params,
    parse_sdp,
)

__all__ = [
    "CodecDescription",
    "CodecOrder",
    "MediaConfig",
    "NegotiatedCodec",
    "NegotiatedStream",
    "OfferAnswer",
    "OfferAnswerState",
    "SRTPMode",
    "SRTPParameters",
]

_AUXILIARY = frozenset({"telephone-event", "cn"})
_DYNAMIC = range(96, 128)


class SRTPMode(enum.Enum):
    """How a stream uses SRTP with SDES keys (RFC 4568)."""

    #: plain RTP: ``RTP/AVP`` offered, ``RTP/SAVP`` offers rejected
    OFF = "off"
    #: best effort: ``RTP/AVP`` offered with crypto lines; SRTP whenever the peer agrees
    OPTIONAL = "optional"
    #: ``RTP/SAVP`` offered; a stream without acceptable crypto is rejected
    MANDATORY = "mandatory"


class CodecOrder(enum.Enum):
    """Whose preference orders the codecs of an answer."""

    OFFERER = "offerer"
    LOCAL = "local"


class OfferAnswerState(enum.Enum):
    """Where the offer/answer exchange stands (RFC 3264 §4, RFC 6337 §2)."""

    STABLE = "stable"
    OFFER_SENT = "offer-sent"
    OFFER_RECEIVED = "offer-received"


@dataclass(frozen=True)
class CodecDescription:
    """A codec we can use, as SDP names it.

    Attributes:
        name: the encoding name (``PCMU``, ``opus``, ``telephone-event``); compared without case.
        clock_rate: the RTP clock rate of ``a=rtpmap`` (8000 for G.722).
        channels: the channel count of ``a=rtpmap`` (2 for Opus).
        fmtp: the format parameters we put in our ``a=fmtp`` (what we want to receive).
        payload_type: the payload type we prefer to offer it with; None picks the static
            type of RFC 3551 when there is one, else a free dynamic one (96-127).
        match_params: format parameters that must agree for an offered codec to match
            (``("octet-align",)`` for AMR); absent counts as ``""``.
    """

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: Mapping[str, str] = field(default_factory=dict, hash=False)
    payload_type: int | None = None
    match_params: tuple[str, ...] = ()

    @classmethod
    def telephone_event(cls, clock_rate: int = 8000, events: str = "0-16") -> CodecDescription:
        """DTMF and other named events (RFC 4733), with its ``fmtp`` event list."""
        return cls("telephone-event", clock_rate, fmtp={events: ""} if events else {})

    @property
    def key(self) -> tuple[str, int, int]:
        """``(name casefolded, clock rate, channels)``, as :attr:`RtpMap.codec_key`."""
        return (self.name.casefold(), self.clock_rate, self.channels)

    @property
    def is_telephone_event(self) -> bool:
        """Whether this is ``telephone-event`` (RFC 4733)."""
        return self.name.casefold() == "telephone-event"

    @property
    def is_auxiliary(self) -> bool:
        """``telephone-event`` and comfort noise (``CN``) ride along a real codec."""
        return self.name.casefold() in _AUXILIARY

    def matches(self, rtpmap: RtpMap, params: Mapping[str, str]) -> bool:
        """Whether an offered format (its rtpmap and fmtp parameters) is this codec."""
        if rtpmap.codec_key != self.key:
            return False
        return all(self.fmtp.get(p, "") == params.get(p, "") for p in self.match_params)


@dataclass(frozen=True)
class MediaConfig:
    """What we can do for one stream, and the transport details we supply for it.

    Attributes:
        port: our RTP port (1-65535).
        codecs: our codecs in order of preference.
        media: the media type (``audio``, ``video``...).
        address: our address for this stream, when not the session's.
        ptime / maxptime: our ``a=ptime`` / ``a=maxptime`` in ms, if any.
        rtcp_mux: offer (and accept) RTP/RTCP multiplexing (RFC 5761).
        rtcp_port: our RTCP port when it is not ``port + 1``, sent as ``a=rtcp`` (RFC 3605).
        srtp: the :class:`SRTPMode`.
        crypto: our ``a=crypto`` lines (text or :class:`Crypto`), one per suite we accept, each
            with our key; an answer uses the key of the suite chosen and the offer's tag.
        ice_ufrag / ice_pwd / ice_candidates / ice_options / end_of_candidates: our ICE
            attributes (RFC 8839), none when we do no ICE.
        direction: the direction we want when not on hold.
        avpf: offer ``RTP/AVPF`` / ``RTP/SAVPF`` (RFC 4585) instead of AVP / SAVP.

    Raises:
        ValueError: a bad port, no codec, SRTP without crypto, half of the ICE credentials,
            or a malformed crypto line or candidate.
    """

    port: int
    codecs: Sequence[CodecDescription]
    media: str = "audio"
    address: str | None = None
    ptime: int | None = None
    maxptime: int | None = None
    rtcp_mux: bool = True
    rtcp_port: int | None = None
    srtp: SRTPMode = SRTPMode.OFF
    crypto: Sequence[Crypto | str] = ()
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_candidates: Sequence[Candidate | str] = ()
    ice_options: Sequence[str] = ()
    end_of_candidates: bool = False
    direction: Direction = Direction.SENDRECV
    avpf: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535, not {self.port}")
        if self.rtcp_port is not None and not 1 <= self.rtcp_port <= 65535:
            raise ValueError(f"rtcp_port must be 1-65535, not {self.rtcp_port}")
        codecs = tuple(self.codecs)
        if not codecs:
            raise ValueError("a stream needs at least one codec")
        try:
            crypto = tuple(c if isinstance(c, Crypto) else Crypto.parse(c) for c in self.crypto)
            candidates = tuple(
                c if isinstance(c, Candidate) else Candidate.parse(c) for c in self.ice_candidates
            )
        except SDPError as exc:
            raise ValueError(str(exc)) from None
        if self.srtp is not SRTPMode.OFF and not crypto:
            raise ValueError(f"SRTP {self.srtp.value} needs at least one crypto line")
        if len({c.tag for c in crypto}) != len(crypto):
            raise ValueError("crypto tags must differ")
        if (self.ice_ufrag is None) != (self.ice_pwd is None):
            raise ValueError("ice_ufrag and ice_pwd go together")
        object.__setattr__(self, "codecs", codecs)
        object.__setattr__(self, "crypto", crypto)
        object.__setattr__(self, "ice_candidates", candidates)
        object.__setattr__(self, "ice_options", tuple(self.ice_options))

    @property
    def proto(self) -> str:
        """The transport we offer: ``RTP/AVP``, ``RTP/SAVP`` (mandatory SRTP), ``...F``."""
        base = "RTP/SAVP" if self.srtp is SRTPMode.MANDATORY else "RTP/AVP"
        return base + "F" if self.avpf else base

    @property
    def crypto_lines(self) -> tuple[Crypto, ...]:
        """Our crypto lines, parsed."""
        return self.crypto  # type: ignore[return-value]  # converted in __post_init__


@dataclass(frozen=True)
class NegotiatedCodec:
    """The codec a stream sends with.

    Attributes:
        name / clock_rate / channels: as in the peer's ``a=rtpmap``.
        fmtp: the peer's format parameters for it (what it wants to receive).
        local_fmtp: ours.
    """

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: Mapping[str, str] = field(default_factory=dict, hash=False)
    local_fmtp: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SRTPParameters:
    """The SDES keys of a stream (RFC 4568).

    Attributes:
        suite: the crypto suite both sides use.
        tag: the tag of the accepted crypto attribute.
        local_key: our key parameters (``inline:...``): we protect what we send with them.
        remote_key: the peer's key parameters: we unprotect what we receive with them.
    """

    suite: str
    tag: int
    local_key: str
    remote_key: str


@dataclass(frozen=True)
class NegotiatedStream:
    """The outcome of the negotiation for one m-line.

    Attributes:
        index: the m-line's position.
        media: ``audio``, ``video``...
        rejected: True when the stream is disabled (port 0 on either side); the other
            fields are then empty.
        proto: the transport (``RTP/AVP``...).
        local_address / local_port / local_rtcp_port: where we receive.
        remote_address / remote_port: where we send RTP.
        remote_rtcp_address / remote_rtcp_port: where we send RTCP (``a=rtcp``, else
            ``port + 1``; the RTP port with rtcp-mux).
        rtcp_mux: RTP and RTCP share the port (RFC 5761).
        codec: the codec we send with (the first of the answer).
        send_payload_type: its payload type in packets we send (the peer's number).
        recv_payload_type: its payload type in packets we receive (our number).
        telephone_event_send_payload_type / telephone_event_recv_payload_type: the
            ``telephone-event`` with the codec's clock rate, None when not negotiated.
        ptime: the packetization to send with, in ms: the peer's ``a=ptime``, else ours,
            else 20.
        direction: the direction as seen by us (sendonly = we send).
        srtp: the SDES keys, None for plain RTP.
        remote_ice: the peer does ICE (credentials present, no ``a=ice-mismatch``).
        remote_ice_ufrag / remote_ice_pwd / remote_candidates: its ICE attributes.
        remote_ice_lite: the peer is ICE lite.
        remote_end_of_candidates: the peer sent all its candidates.
        ice_mismatch: our answer said ``a=ice-mismatch``, or the peer's did.
    """

    index: int
    media: str
    rejected: bool
    proto: str = ""
    local_address: str | None = None
    local_port: int = 0
    local_rtcp_port: int | None = None
    remote_address: str | None = None
    remote_port: int = 0
    remote_rtcp_address: str | None = None
    remote_rtcp_port: int | None = None
    rtcp_mux: bool = False
    codec: NegotiatedCodec | None = None
    send_payload_type: int | None = None
    recv_payload_type: int | None = None
    telephone_event_send_payload_type: int | None = None
    telephone_event_recv_payload_type: int | None = None
    ptime: int = 20
    direction: Direction = Direction.INACTIVE
    srtp: SRTPParameters | None = None
    remote_ice: bool = False
    remote_ice_ufrag: str | None = None
    remote_ice_pwd: str | None = None
    remote_candidates: tuple[str, ...] = ()
    remote_ice_lite: bool = False
    remote_end_of_candidates: bool = False
    ice_mismatch: bool = False

    @property
    def can_send(self) -> bool:
        """Whether we send media on this stream."""
        return not self.rejected and self.direction.can_send

    @property
    def can_receive(self) -> bool:
        """Whether we receive media on this stream."""
        return not self.rejected and self.direction.can_receive

    @property
    def telephone_event_payload_type(self) -> int | None:
        """The ``telephone-event`` payload type we send DTMF with."""
        return self.telephone_event_send_payload_type


@dataclass
class _Slot:
    """One m-line position of the session."""

    media: str
    config: MediaConfig | None  # None: disabled (port 0)
    local: MediaDescription | None = None  # our m-line in the last completed exchange
    remote: MediaDescription | None = None  # the peer's
    hold: Direction | None = None  # SENDONLY (drop receive) or INACTIVE
    pt_map: dict[tuple[str, int, int], int] = field(default_factory=dict)

    def copy(self) -> _Slot:
        return replace(self, pt_map=dict(self.pt_map))


def _not_acceptable(message: str) -> SDPError:
    return SDPError(message, status=488)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.casefold() == b.casefold()


def _describe_codecs(media: MediaDescription) -> str:
    names = []
    for pt, rtpmap in media.codecs():
        names.append(f"{rtpmap.encoding}/{rtpmap.clock_rate}" if rtpmap else str(pt))
    return ", ".join(names) or "none"


class OfferAnswer:
    """One peer's side of an SDP offer/answer negotiation (RFC 3264), for one session.

    Args:
        address: our address for the ``o=`` and session-level ``c=`` lines.
        streams: our stream configurations. The initial offer has one m-line per
            configuration, in order; when answering, each offered m-line takes the first
            unused configuration of its media type, and an m-line with none is rejected.
        spare_streams: configurations never offered by us, kept to answer streams the peer
            adds later (RFC 3264 §8.1).
        username: the ``o=`` username.
        session_name: the ``s=`` text.
        session_id: the ``o=`` session id (drawn from ``rng`` when None); the version starts
            at the same number.
        codec_order: whose preference orders the codecs of our answers.
        answer_all_codecs: list every common codec in answers (so the peer may switch without
            a new exchange); False lists only the first.
        ice_lite: say ``a=ice-lite`` (RFC 8839 §5.3) when we send ICE attributes.
        allow_mki: accept offered crypto lines with an MKI (our SRTP layer may not).
        max_size: the largest SDP body accepted.
        rng: the source of the session id.
    """

    def __init__(
        self,
        address: str,
        streams: Iterable[MediaConfig] = (),
        *,
        spare_streams: Iterable[MediaConfig] = (),
        username: str = "-",
        session_name: str = "-",
        session_id: int | None = None,
        codec_order: CodecOrder = CodecOrder.OFFERER,
        answer_all_codecs: bool = True,
        ice_lite: bool = False,
        allow_mki: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        try:
            Connection.parse(f"IN {_addrtype(address)} {address}")
        except SDPError:
            raise ValueError(f"bad address {address!r}") from None
        self._address = address
        self._username = username
        self._session_name = session_name
        self._session_id = (
            session_id if session_id is not None else (rng or random.Random()).randrange(1, 2**31)
        )
        self._version = self._session_id
        self._codec_order = codec_order
        self._answer_all = answer_all_codecs
        self._ice_lite = ice_lite
        self._allow_mki = allow_mki
        self._max_size = max_size

        self._state = OfferAnswerState.STABLE
        self._slots: list[_Slot] = []
        self._first_offer: list[MediaConfig] = list(streams)  # what an initial offer has
        self._spare: list[MediaConfig] = [*self._first_offer, *spare_streams]
        self._initial = True  # no exchange completed yet
        self._additions: list[tuple[MediaConfig, bool]] = []
        self._removals: set[int] = set()
        self._last_sent_key: str | None = None
        self._local: SessionDescription | None = None
        self._remote: SessionDescription | None = None
        self._streams: tuple[NegotiatedStream, ...] = ()
        # the exchange in progress
        self._offer: SessionDescription | None = None
        self._proposal: tuple[list[_Slot], list[MediaConfig]] | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> OfferAnswerState:
        """Where the exchange stands."""
        return self._state

    @property
    def streams(self) -> tuple[NegotiatedStream, ...]:
        """The streams of the last completed exchange, one per m-line (empty before)."""
        return self._streams

    @property
    def local_description(self) -> SessionDescription | None:
        """The last description we sent (offer or answer), a copy."""
        return None if self._local is None else self._local.copy()

    @property
    def remote_description(self) -> SessionDescription | None:
        """The last description the peer sent, a copy."""
        return None if self._remote is None else self._remote.copy()

    @property
    def session_id(self) -> int:
        """Our ``o=`` session id."""
        return self._session_id

    @property
    def session_version(self) -> int:
        """The ``o=`` version of the last description we sent."""
        return self._version

    def is_held(self, index: int) -> bool:
        """Whether we put stream ``index`` on hold."""
        return self._slots[index].hold is not None

    # -- local changes (take effect in our next offer; hold also in answers) -----------------

    def hold(self, index: int | None = None, *, inactive: bool = False) -> None:
        """Put one stream (or every stream) on hold (RFC 3264 §8.4).

        Our offers then say sendonly (inactive where we only received), or inactive when
        ``inactive`` is set; our answers never ask to receive.

        Raises:
            SDPError: (491) our offer is outstanding.
            IndexError: no such stream.
        """
        self._check_changeable()
        for slot in self._selected(index):
            slot.hold = Direction.INACTIVE if inactive else Direction.SENDONLY

    def unhold(self, index: int | None = None) -> None:
        """Take one stream (or every stream) off hold.

        Raises:
            SDPError: (491) our offer is outstanding.
            IndexError: no such stream.
        """
        self._check_changeable()
        for slot in self._selected(index):
            slot.hold = None

    def add_stream(self, config: MediaConfig, *, reuse_slot: bool = True) -> int:
        """Add a stream to our next offer.

        It takes the first disabled m-line (RFC 3264 §8.3) when ``reuse_slot`` is set and there
        is one, else a new m-line at the end (§8.1).

        Returns:
            The index the stream gets in our next offer (if the peer adds none first).

        Raises:
            SDPError: (491) our offer is outstanding.
        """
        self._check_changeable()
        if self._initial and not self._slots:
            self._first_offer.append(config)
            self._spare.append(config)
            return len(self._first_offer) - 1
        self._additions.append((config, reuse_slot))
        slots, _ = self._offer_proposal()
        return next(i for i, s in enumerate(slots) if s.config is config)

    def remove_stream(self, index: int) -> None:
        """Disable a stream in our next offer: port 0, its m-line kept (RFC 3264 §8.2).

        Raises:
            SDPError: (491) our offer is outstanding.
            IndexError: no such stream, or it is already disabled.
        """
        self._check_changeable()
        if not 0 <= index < len(self._slots) or self._slots[index].config is None:
            raise IndexError(f"no active stream {index}")
        self._removals.add(index)

    def update_stream(self, index: int, config: MediaConfig) -> None:
        """Replace the configuration of an active stream (new port, keys, candidates...).

        Raises:
            SDPError: (491) our offer is outstanding.
            IndexError: no such active stream.
            ValueError: the media type differs.
        """
        self._check_changeable()
        if not 0 <= index < len(self._slots) or self._slots[index].config is None:
            raise IndexError(f"no active stream {index}")
        if config.media != self._slots[index].media:
            raise ValueError("update_stream cannot change the media type")
        self._slots[index].config = config

    # -- offering ----------------------------------------------------------------------------

    def create_offer(self) -> SessionDescription:
        """Build our offer (initial or re-offer) and wait for the answer.

        Returns:
            The offer (ours to keep: later changes to it are not seen).

        Raises:
            SDPError: (491) an exchange is in progress.
        """
        if self._state is not OfferAnswerState.STABLE:
            raise SDPError(f"cannot offer in state {self._state.value}", status=491)
        slots, spare = self._offer_proposal()
        media = [self._offer_media(slot) for slot in slots]
        offer = self._stamp(self._description(media))
        self._offer = offer
        self._proposal = (slots, spare)
        self._state = OfferAnswerState.OFFER_SENT
        return offer.copy()

    def receive_answer(
        self, data: bytes | bytearray | memoryview | str | SessionDescription
    ) -> tuple[NegotiatedStream, ...]:
        """Take the peer's answer to our offer.

        Returns:
            The negotiated streams, one per m-line.

        Raises:
            SDPError: 400 when the answer does not parse, 488 when it does not fit our offer
                (different m-lines, unoffered codecs or crypto tags...); the offer is then
                withdrawn and the previous session stays.
        """
        if self._state is not OfferAnswerState.OFFER_SENT:
            raise SDPError(f"no offer is waiting for an answer (state {self._state.value})")
        try:
            answer = self._parse(data)
            streams = self._apply_answer(answer)
        except SDPError:
            self.rollback()
            raise
        return streams

    def rollback(self) -> None:
        """Abandon the exchange in progress; the last negotiated session stays.

        Use it when our offer was refused (488, 491, timeout) or when we answered the peer's
        offer with an error. Local changes (hold, added or removed streams) are kept for the
        next offer; the ``o=`` version never goes back.
        """
        self._offer = None
        self._proposal = None
        self._state = OfferAnswerState.STABLE

    # -- answering ---------------------------------------------------------------------------

    def receive_offer(
        self, data: bytes | bytearray | memoryview | str | SessionDescription
    ) -> SessionDescription:
        """Take the peer's offer; :meth:`create_answer` answers it.

        Returns:
            The parsed offer.

        Raises:
            SDPError: 491 when our own offer is outstanding (glare), 400 when the offer does
                not parse, 488 when nothing in it is acceptable or it breaks RFC 3264 §8 (fewer
                m-lines than the session, an active m-line changing media type).
        """
        if self._state is not OfferAnswerState.STABLE:
            raise SDPError(f"offer received in state {self._state.value}", status=491)
        offer = self._parse(data)
        self._check_reoffer(offer)
        self._answer_plan(offer)  # raises 488 when nothing is acceptable
        self._offer = offer
        self._state = OfferAnswerState.OFFER_RECEIVED
        return offer.copy()

    def create_answer(self) -> SessionDescription:
        """Answer the offer taken by :meth:`receive_offer`; the exchange is then complete.

        Returns:
            The answer.

        Raises:
            SDPError: 488 as in :meth:`receive_offer`; 400 when no offer is waiting.
        """
        if self._state is not OfferAnswerState.OFFER_RECEIVED or self._offer is None:
            raise SDPError(f"no offer to answer (state {self._state.value})")
        offer = self._offer
        slots, spare, media = self._answer_plan(offer)
        answer = self._stamp(self._description(media))
        self._commit(slots, spare, local=answer, remote=offer, local_is_answer=True)
        self._removals.clear()
        return answer.copy()

    def answer(
        self, data: bytes | bytearray | memoryview | str | SessionDescription
    ) -> SessionDescription:
        """:meth:`receive_offer` and :meth:`create_answer` in one step.

        Raises:
            SDPError: as those two; the exchange is rolled back on 488.
        """
        self.receive_offer(data)
        try:
            return self.create_answer()
        except SDPError:
            self.rollback()
            raise

    # -- internals: offers -------------------------------------------------------------------

    def _check_changeable(self) -> None:
        if self._state is OfferAnswerState.OFFER_SENT:
            raise SDPError("our offer is outstanding", status=491)

    def _selected(self, index: int | None) -> list[_Slot]:
        if index is None:
            return [s for s in self._slots if s.config is not None]
        if not 0 <= index < len(self._slots):
            raise IndexError(f"no stream {index}")
        return [self._slots[index]]

    def _parse(
        self, data: bytes | bytearray | memoryview | str | SessionDescription
    ) -> SessionDescription:
        if isinstance(data, SessionDescription):
            return data.copy()
        return parse_sdp(data, max_size=self._max_size)

    def _offer_proposal(self) -> tuple[list[_Slot], list[MediaConfig]]:
        """The m-line slots of our next offer: current slots plus pending changes."""
        slots = [s.copy() for s in self._slots]
        spare = list(self._spare)
        if self._initial and not slots:
            slots = [_Slot(c.media, c) for c in self._first_offer]
            spare = [c for c in spare if not any(c is f for f in self._first_offer)]
        for config, reuse in self._additions:
            free = [i for i, s in enumerate(slots) if s.config is None and i not in self._removals]
            if reuse and free:
                # RFC 3264 §8.3: a new stream may take the m-line of a disabled one
                slots[free[0]] = _Slot(config.media, config, local=slots[free[0]].local)
            else:
                slots.append(_Slot(config.media, config))
        for index in self._removals:
            slots[index].config = None
            slots[index].hold = None
        return slots, spare

    def _local_direction(self, slot: _Slot) -> Direction:
        assert slot.config is not None
        direction = slot.config.direction
        if slot.hold is Direction.INACTIVE:
            return Direction.INACTIVE
        if slot.hold is not None:
            return direction.without_receive()  # RFC 3264 §8.4
        return direction

    def _payload_types(self, slot: _Slot) -> list[tuple[int, CodecDescription]]:
        """Our payload type per codec: kept for the session (RFC 3264 §8.3.2), else chosen."""
        assert slot.config is not None
        used: set[int] = set()
        reserved = set(slot.pt_map.values())
        result = []
        for codec in slot.config.codecs:
            pt = slot.pt_map.get(codec.key)
            if pt is None or pt in used:
                pt = None
                candidates = []
                if codec.payload_type is not None and 0 <= codec.payload_type <= 127:
                    candidates.append(codec.payload_type)
                candidates += [
                    n for n, m in STATIC_PAYLOAD_TYPES.items() if m.codec_key == codec.key
                ]
                candidates += list(_DYNAMIC)
                for n in candidates:
                    if n not in used and n not in reserved:
                        pt = n
                        break
                if pt is None:
                    raise ValueError("more codecs than free payload types")
            used.add(pt)
            slot.pt_map[codec.key] = pt
            reserved.add(pt)
            result.append((pt, codec))
        return result

    def _offer_media(self, slot: _Slot) -> MediaDescription:
        if slot.config is None:
            return self._disabled_media(slot.local or slot.remote, slot.media)
        config = slot.config
        codecs = self._payload_types(slot)
        media = MediaDescription(
            config.media, config.port, config.proto, [str(p) for p, _ in codecs]
        )
        self._add_connection(media, config)
        for pt, codec in codecs:
            channels = codec.channels if codec.channels != 1 else None
            media.add_attribute("rtpmap", RtpMap(pt, codec.name, codec.clock_rate, channels))
            if codec.fmtp:
                media.add_attribute("fmtp", f"{pt} {format_fmtp_params(codec.fmtp)}")
        self._add_transport(media, config, rtcp_mux=config.rtcp_mux, rtcp=True)
        if config.srtp is not SRTPMode.OFF:
            for crypto in config.crypto_lines:
                media.add_attribute("crypto", crypto)
        self._add_ice(media, config)
        media.add_attribute(str(self._local_direction(slot)))
        return media

    @staticmethod
    def _disabled_media(previous: MediaDescription | None, media_type: str) -> MediaDescription:
        """An m-line with port 0 (RFC 3264 §6, §8.2), keeping one format of ``previous``."""
        if previous is None or not previous.formats:
            return MediaDescription(media_type, 0, "RTP/AVP", ["0"])
        fmt = previous.formats[0]
        media = MediaDescription(previous.media, 0, previous.proto, [fmt])
        for value in previous.attribute_values("rtpmap"):
            if value.split(" ", 1)[0] == fmt:
                media.add_attribute("rtpmap", value)
                break
        return media

    def _add_connection(self, media: MediaDescription, config: MediaConfig) -> None:
        if config.address is not None and config.address != self._address:
            media.connections.append(Connection(config.address, _addrtype(config.address)))

    @staticmethod
    def _add_transport(
        media: MediaDescription, config: MediaConfig, *, rtcp_mux: bool, rtcp: bool
    ) -> None:
        """ptime, maxptime, rtcp (RFC 3605; in an offer also with rtcp-mux, RFC 5761 §5.1.3)."""
        if config.ptime is not None:
            media.add_attribute("ptime", config.ptime)
        if config.maxptime is not None:
            media.add_attribute("maxptime", config.maxptime)
        if config.rtcp_port is not None and rtcp:
            media.add_attribute("rtcp", config.rtcp_port)
        if rtcp_mux:
            media.add_attribute("rtcp-mux")

    @staticmethod
    def _add_ice(media: MediaDescription, config: MediaConfig) -> None:
        if config.ice_ufrag is None:
            return
        media.add_attribute("ice-ufrag", config.ice_ufrag)
        media.add_attribute("ice-pwd", config.ice_pwd)
        if config.ice_options:
            media.add_attribute("ice-options", " ".join(config.ice_options))
        for candidate in config.ice_candidates:
            media.add_attribute("candidate", candidate)
        if config.end_of_candidates:
            media.add_attribute("end-of-candidates")

    def _description(self, media: list[MediaDescription]) -> SessionDescription:
        description = SessionDescription(
            origin=Origin(
                self._username,
                self._session_id,
                self._version,
                "IN",
                _addrtype(self._address),
                self._address,
            ),
            session_name=self._session_name,
            connection=Connection(self._address, _addrtype(self._address)),
            media=media,
        )
        if self._ice_lite and any(m.ice_ufrag for m in media):
            description.attributes.append(Attribute("ice-lite"))
        return description

    def _stamp(self, description: SessionDescription) -> SessionDescription:
        """Set the ``o=`` version: +1 when the description changed since the last we sent."""
        description.origin = replace(description.origin, session_version=0)
        key = description.to_text()
        if self._last_sent_key is not None and key != self._last_sent_key:
            self._version += 1  # RFC 3264 §8
        self._last_sent_key = key
        description.origin = replace(description.origin, session_version=self._version)
        return description

    # -- internals: answers to our offers ----------------------------------------------------

    def _apply_answer(self, answer: SessionDescription) -> tuple[NegotiatedStream, ...]:
        offer = self._offer
        assert offer is not None and self._proposal is not None
        if len(answer.media) != len(offer.media):
            raise _not_acceptable(
                f"answer has {len(answer.media)} m-lines, the offer {len(offer.media)}"
            )
        slots, spare = self._proposal
        slots = [s.copy() for s in slots]
        spare = list(spare)
        for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
            self._check_answer_media(index, answer, ours, theirs)
            if theirs.port == 0 and slots[index].config is not None:
                spare.append(slots[index].config)  # type: ignore[arg-type]
                slots[index].config = None
        self._commit(slots, spare, local=offer, remote=answer, local_is_answer=False)
        self._additions.clear()
        self._removals.clear()
        return self._streams

    def _check_answer_media(
        self, index: int, answer: SessionDescription, ours: MediaDescription,
        theirs: MediaDescription,
    ) -> None:  # fmt: skip
        where = f"m-line {index}"
        if theirs.media != ours.media:
            raise _not_acceptable(f"{where}: answer has {theirs.media}, the offer {ours.media}")
        if theirs.proto.upper() != ours.proto.upper():
            raise _not_acceptable(f"{where}: answer has {theirs.proto}, the offer {ours.proto}")
        if ours.port == 0:
            if theirs.port != 0:
                raise _not_acceptable(f"{where}: a disabled stream must be answered with port 0")
            return
        if theirs.port == 0:
            return
        if answer.media_connection(theirs) is None:
            raise SDPError(f"{where}: no connection address")
        offered = dict(ours.codecs())
        offered_keys = {m.codec_key for m in offered.values() if m is not None}
        answered_main = False
        for pt, rtpmap in theirs.codecs():
            if rtpmap is None:  # a dynamic type without rtpmap: only as the offer's own
                rtpmap = offered.get(pt)
                if rtpmap is None:
                    raise _not_acceptable(f"{where}: answer format {pt} is unknown")
            if rtpmap.codec_key not in offered_keys:
                raise _not_acceptable(
                    f"{where}: answer codec {rtpmap.encoding}/{rtpmap.clock_rate} was not offered"
                )
            answered_main = answered_main or rtpmap.encoding.casefold() not in _AUXILIARY
        offered_main = any(
            m is not None and m.encoding.casefold() not in _AUXILIARY for m in offered.values()
        )
        if offered_main and not answered_main:
            raise _not_acceptable(f"{where}: answer has no usable codec")
        if theirs.rtcp_mux and not ours.rtcp_mux:
            raise _not_acceptable(f"{where}: rtcp-mux in the answer was not offered")
        self._check_answer_crypto(where, ours, theirs)

    @staticmethod
    def _check_answer_crypto(where: str, ours: MediaDescription, theirs: MediaDescription) -> None:
        lines = theirs.attribute_values("crypto")
        if not lines:
            if theirs.is_secure:
                raise _not_acceptable(f"{where}: {theirs.proto} answer without crypto")
            return
        if len(lines) > 1:
            raise _not_acceptable(f"{where}: answer has {len(lines)} crypto attributes, not one")
        try:
            crypto = Crypto.parse(lines[0])
        except SDPError as exc:
            raise _not_acceptable(f"{where}: bad crypto in answer: {exc}") from None
        offered = {c.tag: c for c in ours.usable_crypto()}
        if crypto.tag not in offered or offered[crypto.tag].suite != crypto.suite:
            raise _not_acceptable(
                f"{where}: answer crypto {crypto.tag} {crypto.suite} was not offered"
            )
        if not crypto.has_valid_key_length():
            raise _not_acceptable(f"{where}: answer key has the wrong length for {crypto.suite}")

    # -- internals: answering offers ---------------------------------------------------------

    def _check_reoffer(self, offer: SessionDescription) -> None:
        if len(offer.media) < len(self._slots):
            raise _not_acceptable(
                f"offer has {len(offer.media)} m-lines, the session {len(self._slots)} "
                "(RFC 3264 §8: m-lines are never removed)"
            )
        for index, slot in enumerate(self._slots):
            media = offer.media[index]
            if slot.config is not None and media.port != 0 and media.media != slot.media:
                raise _not_acceptable(
                    f"m-line {index} changes from {slot.media} to {media.media} while active"
                )

    def _answer_plan(
        self, offer: SessionDescription
    ) -> tuple[list[_Slot], list[MediaConfig], list[MediaDescription]]:
        """Slots, spare configurations and answer m-lines for an offer (nothing changed yet).

        Raises:
            SDPError: 488 when the offer has active streams and we accept none of them.
        """
        slots = [s.copy() for s in self._slots]
        spare = list(self._spare)
        answers: list[MediaDescription] = []
        reasons: list[str] = []
        for index, offered in enumerate(offer.media):
            if index == len(slots):
                slots.append(_Slot(offered.media, None))
            slot = slots[index]
            if index in self._removals and slot.config is not None:
                slot.config = None  # we were about to remove it anyway (RFC 3264 §8.2)
                slot.hold = None
            if offered.port == 0:
                if slot.config is not None:
                    spare.append(slot.config)  # the peer removed it; it may come back
                    slot.config = None
                answers.append(self._disabled_media(offered, offered.media))
                continue
            if slot.config is None or slot.config.media != offered.media:
                config = next((c for c in spare if c.media == offered.media), None)
                if config is None:
                    reasons.append(f"m-line {index}: no {offered.media} stream configured")
                    answers.append(self._disabled_media(offered, offered.media))
                    slots[index] = _Slot(offered.media, None, local=slot.local)
                    continue
                spare.remove(config)
                slot = slots[index] = _Slot(offered.media, config)
            media, reason = self._answer_media(slot, offer, offered)
            if media is None:
                reasons.append(f"m-line {index}: {reason}")
                assert slot.config is not None
                spare.append(slot.config)
                slot.config = None
                media = self._disabled_media(offered, offered.media)
            answers.append(media)
        active = [m for m in offer.media if m.port != 0]
        if active and not any(m.port != 0 for m in answers):
            raise _not_acceptable("no acceptable stream: " + "; ".join(reasons))
        return slots, spare, answers

    def _choose_crypto(
        self, config: MediaConfig, offered: MediaDescription
    ) -> tuple[Crypto, Crypto] | None:
        """RFC 4568 §7.1.2: the first offered crypto line we can use, and our line for it."""
        ours: dict[str, Crypto] = {}
        for crypto in config.crypto_lines:
            ours.setdefault(crypto.suite, crypto)
        for crypto in offered.usable_crypto():
            if crypto.suite not in ours or crypto.unsupported_session_params():
                continue
            if not crypto.has_valid_key_length():
                continue
            if not self._allow_mki and any(k.mki is not None for k in crypto.key_params):
                continue
            return crypto, ours[crypto.suite]
        return None

    def _answer_media(
        self, slot: _Slot, offer: SessionDescription, offered: MediaDescription
    ) -> tuple[MediaDescription | None, str]:
        config = slot.config
        assert config is not None
        if not offered.is_rtp:
            return None, f"transport {offered.proto} is not supported"
        if offered.is_dtls:
            return None, "DTLS-SRTP is not supported"
        if offer.media_connection(offered) is None:
            raise SDPError("an active m-line has no connection address")
        chosen = None
        if config.srtp is not SRTPMode.OFF:
            chosen = self._choose_crypto(config, offered)
        if offered.is_secure and chosen is None:
            if config.srtp is SRTPMode.OFF:
                return None, f"{offered.proto} offered but SRTP is off"
            return None, f"{offered.proto} offered with no acceptable crypto attribute"
        if config.srtp is SRTPMode.MANDATORY and chosen is None:
            return None, "SRTP is mandatory and the offer has no acceptable crypto attribute"

        formats = self._answer_formats(config, offered)
        if not formats:
            return None, f"no common codec (offered: {_describe_codecs(offered)})"

        media = MediaDescription(offered.media, config.port, offered.proto, [])
        self._add_connection(media, config)
        for pt, rtpmap, codec in formats:
            media.formats.append(str(pt))
            media.add_attribute("rtpmap", replace(rtpmap, payload_type=pt))
            if codec.fmtp:
                media.add_attribute("fmtp", f"{pt} {format_fmtp_params(codec.fmtp)}")
        mux = config.rtcp_mux and offered.rtcp_mux  # RFC 5761 §5.1.1: only when offered
        self._add_transport(media, config, rtcp_mux=mux, rtcp=not mux)
        if chosen is not None:
            theirs, ours = chosen
            media.add_attribute("crypto", Crypto(theirs.tag, theirs.suite, ours.key_params))
        if config.ice_ufrag is not None and offer.ice_credentials(offered) is not None:
            if self._ice_mismatch(offer, offered):
                media.add_attribute("ice-mismatch")  # RFC 8839 §4.4.1
            else:
                self._add_ice(media, config)
        direction = self._local_direction(slot).intersect(
            offer.effective_direction(offered).reversed()
        )
        media.add_attribute(str(direction))  # RFC 3264 §6.1
        return media, ""

    def _answer_formats(
        self, config: MediaConfig, offered: MediaDescription
    ) -> list[tuple[int, RtpMap, CodecDescription]]:
        """The formats of our answer: common codecs, then matching telephone-event/CN."""
        common: list[tuple[int, RtpMap, CodecDescription]] = []
        auxiliary: list[tuple[int, RtpMap]] = []
        offered_main = False
        for pt, rtpmap in offered.codecs():
            if rtpmap is None:
                continue
            if rtpmap.encoding.casefold() in _AUXILIARY:
                auxiliary.append((pt, rtpmap))
                continue
            offered_main = True
            params = offered.fmtp_params(pt)
            codec = next((c for c in config.codecs if c.matches(rtpmap, params)), None)
            if codec is not None:
                common.append((pt, rtpmap, codec))
        if self._codec_order is CodecOrder.LOCAL:
            order = {c: i for i, c in enumerate(config.codecs)}
            common.sort(key=lambda item: order[item[2]])
        if not self._answer_all and common:
            common = common[:1]
        if common:
            rates = {rtpmap.clock_rate for _, rtpmap, _ in common}
        elif offered_main:
            return []
        else:  # a stream of telephone-events only (RFC 4317 §2.4)
            rates = {c.clock_rate for c in config.codecs if c.is_auxiliary}
        # RFC 4733 §2.1: events use the clock rate of the audio codec
        seen: set[tuple[str, int]] = set()
        for pt, rtpmap in auxiliary:
            name = rtpmap.encoding.casefold()
            local = [c for c in config.codecs if c.name.casefold() == name]
            if not local or rtpmap.clock_rate not in rates or (name, rtpmap.clock_rate) in seen:
                continue
            seen.add((name, rtpmap.clock_rate))
            codec = next((c for c in local if c.clock_rate == rtpmap.clock_rate), local[0])
            common.append((pt, rtpmap, codec))
        return common

    @staticmethod
    def _ice_mismatch(offer: SessionDescription, offered: MediaDescription) -> bool:
        """RFC 8839 §4.4.1: the default destination is none of the RTP candidates."""
        connection = offer.media_connection(offered)
        candidates = []
        for value in offered.attribute_values("candidate"):
            try:
                candidates.append(Candidate.parse(value))
            except SDPError:
                continue
        rtp = [c for c in candidates if c.component == 1]
        if not rtp or connection is None or connection.is_unspecified:
            return False  # trickle ICE: nothing to compare yet (RFC 8840)
        return not any(
            c.port == offered.port and _same_address(c.address, connection.address) for c in rtp
        )

    # -- internals: results ------------------------------------------------------------------

    def _commit(
        self, slots: list[_Slot], spare: list[MediaConfig], *, local: SessionDescription,
        remote: SessionDescription, local_is_answer: bool,
    ) -> None:  # fmt: skip
        streams = []
        for index, slot in enumerate(slots):
            mine, theirs = local.media[index], remote.media[index]
            slot.local, slot.remote = mine, theirs
            if slot.config is None or mine.port == 0 or theirs.port == 0:
                streams.append(NegotiatedStream(index, mine.media, True, proto=mine.proto))
                continue
            for pt, rtpmap in mine.codecs():
                if rtpmap is not None:
                    slot.pt_map[rtpmap.codec_key] = pt
            streams.append(
                self._negotiated(index, slot.config, local, mine, remote, theirs, local_is_answer)
            )
        self._slots = slots
        self._spare = spare
        self._streams = tuple(streams)
        self._local, self._remote = local, remote
        self._initial = False
        self._offer = None
        self._proposal = None
        self._state = OfferAnswerState.STABLE

    @staticmethod
    def _negotiated(
        index: int, config: MediaConfig, local_sd: SessionDescription, mine: MediaDescription,
        remote_sd: SessionDescription, theirs: MediaDescription, local_is_answer: bool,
    ) -> NegotiatedStream:  # fmt: skip
        answer = mine if local_is_answer else theirs
        my_codecs = mine.codecs()
        their_codecs = theirs.codecs()
        # a dynamic payload type without rtpmap in the answer means the offer's codec
        their_pts = dict(their_codecs)
        mine_pts = dict(my_codecs)
        for pt, rtpmap in list(their_pts.items()):
            if rtpmap is None:
                their_pts[pt] = mine_pts.get(pt)
        for pt, rtpmap in list(mine_pts.items()):
            if rtpmap is None:
                mine_pts[pt] = their_pts.get(pt)

        def pt_for(pts: Mapping[int, RtpMap | None], key: tuple[str, int, int]) -> int | None:
            return next((pt for pt, m in pts.items() if m is not None and m.codec_key == key), None)

        answer_pts = their_pts if answer is theirs else mine_pts
        ordered = [(pt, answer_pts.get(pt)) for pt in answer.payload_types]
        ordered = [(pt, m) for pt, m in ordered if m is not None]
        main = next(
            ((pt, m) for pt, m in ordered if m.encoding.casefold() not in _AUXILIARY),
            ordered[0] if ordered else None,
        )
        codec = send_pt = recv_pt = te_send = te_recv = None
        if main is not None:
            rtpmap = main[1]
            send_pt = pt_for(their_pts, rtpmap.codec_key)
            recv_pt = pt_for(mine_pts, rtpmap.codec_key)
            codec = NegotiatedCodec(
                rtpmap.encoding,
                rtpmap.clock_rate,
                rtpmap.channel_count,
                theirs.fmtp_params(send_pt) if send_pt is not None else {},
                mine.fmtp_params(recv_pt) if recv_pt is not None else {},
            )
            events = [m for _, m in ordered if m.encoding.casefold() == "telephone-event"]
            event = next((m for m in events if m.clock_rate == rtpmap.clock_rate), None)
            if event is not None:
                te_send = pt_for(their_pts, event.codec_key)
                te_recv = pt_for(mine_pts, event.codec_key)

        direction = local_sd.effective_direction(mine).intersect(
            remote_sd.effective_direction(theirs).reversed()
        )
        remote_connection = remote_sd.media_connection(theirs)
        assert remote_connection is not None
        credentials = remote_sd.ice_credentials(theirs)
        mismatch = mine.has_attribute("ice-mismatch") or theirs.has_attribute("ice-mismatch")
        remote_ice = credentials is not None and not mismatch
        if remote_connection.is_unspecified and not remote_ice:
            direction = Direction.from_flags(False, direction.can_receive)  # RFC 3264 §8.4

        mux = mine.rtcp_mux and theirs.rtcp_mux
        local_connection = local_sd.media_connection(mine)
        if mux:
            local_rtcp: int | None = mine.port
            remote_rtcp_port: int | None = theirs.port
            remote_rtcp_address = remote_connection.address
        else:
            local_rtcp = mine.rtcp.port if mine.rtcp else mine.port + 1
            rtcp = theirs.rtcp
            remote_rtcp_port = rtcp.port if rtcp else theirs.port + 1
            remote_rtcp_address = (
                rtcp.address if rtcp and rtcp.address else remote_connection.address
            )
        local_rtcp = local_rtcp if local_rtcp is not None and local_rtcp <= 65535 else None
        if remote_rtcp_port is not None and remote_rtcp_port > 65535:
            remote_rtcp_port = None

        srtp = None
        answered = answer.usable_crypto()
        if answered:
            tag = answered[0].tag
            local_crypto = next((c for c in mine.usable_crypto() if c.tag == tag), None)
            remote_crypto = next((c for c in theirs.usable_crypto() if c.tag == tag), None)
            if local_crypto is not None and remote_crypto is not None:
                srtp = SRTPParameters(
                    answered[0].suite,
                    tag,
                    ";".join(str(k) for k in local_crypto.key_params),
                    ";".join(str(k) for k in remote_crypto.key_params),
                )

        candidates = []
        for value in theirs.attribute_values("candidate"):
            try:
                candidates.append(str(Candidate.parse(value)))
            except SDPError:
                continue
        ptime = theirs.ptime or config.ptime or 20
        if theirs.maxptime:
            ptime = min(ptime, theirs.maxptime)
        return NegotiatedStream(
            index=index,
            media=mine.media,
            rejected=False,
            proto=mine.proto,
            local_address=None if local_connection is None else local_connection.address,
            local_port=mine.port,
            local_rtcp_port=local_rtcp,
            remote_address=remote_connection.address,
            remote_port=theirs.port,
            remote_rtcp_address=remote_rtcp_address,
            remote_rtcp_port=remote_rtcp_port,
            rtcp_mux=mux,
            codec=codec,
            send_payload_type=send_pt,
            recv_payload_type=recv_pt,
            telephone_event_send_payload_type=te_send,
            telephone_event_recv_payload_type=te_recv,
            ptime=ptime,
            direction=direction,
            srtp=srtp,
            remote_ice=remote_ice,
            remote_ice_ufrag=None if credentials is None else credentials[0],
            remote_ice_pwd=None if credentials is None else credentials[1],
            remote_candidates=tuple(candidates),
            remote_ice_lite=remote_sd.ice_lite,
            remote_end_of_candidates=theirs.end_of_candidates,
            ice_mismatch=mismatch,
        )
