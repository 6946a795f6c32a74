"""SIP dialogs: state, in-dialog requests and responses (RFC 3261 §12, §13.2.2.4, §14, §15).

A :class:`Dialog` is a plain state object: the UA core creates it from the messages that
establish it (:meth:`Dialog.from_uac`, :meth:`Dialog.from_uas`), asks it to build requests
(:meth:`Dialog.create_request`, :meth:`Dialog.create_ack`) and feeds it what it receives
(:meth:`Dialog.receive_request`, :meth:`Dialog.receive_response`) and what it answers
(:meth:`Dialog.send_response`). Nothing here does I/O, reads a clock or raises on peer
misbehaviour: a bad in-dialog request becomes the status to answer with.

:class:`DialogSet` follows the early dialogs one outgoing INVITE forks into (§13.2.2.4);
:class:`DialogTable` finds the dialog of an incoming request or response.

Not here yet (later issues): RFC 4028 session timers; re-INVITE glare (§14.1/§14.2: 491 and
500 answers to overlapping INVITEs, retry timers); RFC 5057 dialog usages (a 481 to NOTIFY
ends one usage, not the dialog); RFC 6141 refinements of when a target refresh takes effect;
RFC 3262 RSeq/RAck state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from p2psip.endpoint.headers import NameAddress
from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.uri import URI
from p2psip.errors import P2PSIPError, SIPParseError

__all__ = [
    "DIALOG_CREATING_METHODS",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogRequestCheck",
    "DialogSet",
    "DialogState",
    "DialogTable",
]

#: Requests that create a dialog when answered with 101-299 and a To tag.
DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
#: Requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311 §5,
#: RFC 6665 §4.1.2 / §4.2.1).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
DEFAULT_MAX_FORWARDS = 70
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the number must be less than 2**31
# RFC 3261 §19.1.1 table 1: parameters and headers not allowed in a Request-URI.
_NOT_IN_REQUEST_URI = frozenset({"method"})


class DialogError(P2PSIPError):
    """A dialog was used in a way RFC 3261 forbids (request on a terminated dialog, ...)."""


class DialogState(enum.Enum):
    """Dialog states (RFC 3261 §12)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# The dialog state machine: state -> states it may move to.
_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.EARLY: frozenset({DialogState.CONFIRMED, DialogState.TERMINATED}),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """Dialog identifier, seen from this UA (RFC 3261 §12).

    Attributes:
        call_id: the Call-ID (compared byte by byte, §19.3).
        local_tag: our tag: the From tag of requests we send.
        remote_tag: the peer's tag; ``""`` when the peer sent none (RFC 2543 peers).
    """

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The id of the dialog an incoming request belongs to.

        RFC 3261 §12.2.2: the request's To tag is our local tag, its From tag the remote one.
        """
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The id of the dialog a response to one of our requests belongs to.

        RFC 3261 §12.1.2: the From tag is ours, the To tag the peer's.
        """
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


@dataclass(frozen=True, slots=True)
class DialogRequestCheck:
    """Outcome of :meth:`Dialog.receive_request`.

    Attributes:
        status: None when the request is accepted; otherwise the error status the UA core
            answers with (500 out of order, 481 no such dialog, 400 malformed).
        reason: the reason phrase for that answer.
        target_refreshed: the remote target was replaced by the request's Contact.
        ends_dialog: the request is a BYE: the dialog ends once it is answered with 2xx
            (:meth:`Dialog.send_response` or :meth:`Dialog.terminate`).
    """

    status: int | None = None
    reason: str | None = None
    target_refreshed: bool = False
    ends_dialog: bool = False

    @property
    def accepted(self) -> bool:
        """True when the UA core should process the request."""
        return self.status is None


_ACCEPTED = DialogRequestCheck()


def _copy_address(address: NameAddress) -> NameAddress:
    """A NameAddress that shares no mutable state with a message's parsed cache."""
    return NameAddress(address.uri, address.display_name, dict(address.params))


def _first_contact(message: Request | Response) -> NameAddress | None:
    """The first Contact value, or None when absent, ``*`` or malformed."""
    try:
        contacts = message.contacts
    except SIPParseError:
        return None
    return contacts[0] if contacts else None


def _request_uri_of(uri: URI) -> URI:
    """``uri`` with what a Request-URI may not carry removed (RFC 3261 §12.2.1.1, §19.1.1)."""
    if uri.headers or any(name in _NOT_IN_REQUEST_URI for name in uri.params):
        params = {k: v for k, v in uri.params.items() if k not in _NOT_IN_REQUEST_URI}
        return uri.with_(params=params, headers=())
    return uri


class Dialog:
    """The state of one dialog (RFC 3261 §12).

    Create with :meth:`from_uac` or :meth:`from_uas`.

    Attributes:
        id: the dialog id (fixed for the dialog's life; a fork is another dialog).
        local_uri: our address (From of our requests), with our tag.
        remote_uri: the peer's address (To of our requests), with its tag when it has one.
        local_seq: CSeq number of the last request we sent, None until we send one (UAS).
        remote_seq: CSeq number of the last request the peer sent, None until it sends one.
        remote_target: where requests go (the peer's Contact), updated by target refreshes.
        route_set: the Route values of our requests, in order (from Record-Route).
        secure: True when the dialog was created over TLS with a SIPS Request-URI.
        is_uac: True when we sent the dialog-creating request.
        local_contact: the Contact we advertise; added to target refresh requests.
    """

    def __init__(
        self,
        *,
        id: DialogId,
        state: DialogState,
        local_uri: NameAddress,
        remote_uri: NameAddress,
        local_seq: int | None,
        remote_seq: int | None,
        remote_target: URI,
        route_set: list[NameAddress],
        secure: bool,
        is_uac: bool,
        local_contact: NameAddress | None = None,
    ) -> None:
        self.id = id
        self._state = state
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = route_set
        self.secure = secure
        self.is_uac = is_uac
        self.local_contact = local_contact

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_uac(
        cls, request: Request, response: Response, *, secure: bool | None = None
    ) -> Dialog:
        """The dialog a response to our dialog-creating request establishes (§12.1.2).

        Args:
            request: the request we sent (INVITE, SUBSCRIBE...), with our From tag.
            response: a 101-199 response with a To tag (early dialog) or a 2xx (confirmed).
            secure: whether the request went over TLS; by default, whether its Request-URI
                is a SIPS URI.

        Returns:
            A dialog in state EARLY (1xx) or CONFIRMED (2xx).

        Raises:
            DialogError: when the response does not create a dialog (100, 3xx-6xx, 1xx
                without To tag) or the request has no From tag.
            SIPParseError: for a malformed Record-Route.
        """
        status = response.status
        remote_tag = response.to.tag
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response does not create a dialog")
        if status < 200 and not remote_tag:
            raise DialogError("a provisional response without To tag does not create a dialog")
        local_tag = request.from_.tag
        if not local_tag:
            raise DialogError("the request has no From tag")
        contact = _first_contact(response)
        return cls(
            id=DialogId(request.call_id, local_tag, remote_tag or ""),
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            local_uri=_copy_address(request.from_),
            remote_uri=_copy_address(response.to),
            local_seq=request.cseq.seq,
            remote_seq=None,
            # A response without Contact violates §12.1.1; keep using the Request-URI.
            remote_target=contact.uri if contact else request.uri,
            # §12.1.2: the route set is the Record-Route of the response, reversed.
            route_set=[_copy_address(r) for r in reversed(response.record_routes)],
            secure=request.uri.scheme == "sips" if secure is None else secure,
            is_uac=True,
            local_contact=_first_contact(request),
        )

    @classmethod
    def from_uas(
        cls, request: Request, response: Response, *, secure: bool | None = None
    ) -> Dialog:
        """The dialog our response to a dialog-creating request establishes (§12.1.1).

        Args:
            request: the request received (INVITE, SUBSCRIBE...).
            response: our 101-299 response to it, carrying our To tag.
            secure: whether the request arrived over TLS; by default, whether its
                Request-URI is a SIPS URI.

        Returns:
            A dialog in state EARLY (1xx) or CONFIRMED (2xx).

        Raises:
            DialogError: when the response does not create a dialog or has no To tag.
            SIPParseError: for a malformed Record-Route (answer with its status, 400).
        """
        status = response.status
        local_tag = response.to.tag
        if not 101 <= status <= 299:
            raise DialogError(f"a {status} response does not create a dialog")
        if not local_tag:
            raise DialogError("the response has no To tag")
        contact = _first_contact(request)
        return cls(
            id=DialogId(request.call_id, local_tag, request.from_.tag or ""),
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            local_uri=_copy_address(request.to).with_tag(local_tag),
            remote_uri=_copy_address(request.from_),
            local_seq=None,
            remote_seq=request.cseq.seq,
            # A request without Contact violates §8.1.1.8; fall back to its From URI.
            remote_target=contact.uri if contact else request.from_.uri,
            # §12.1.1: the route set is the Record-Route of the request, in order.
            route_set=[_copy_address(r) for r in request.record_routes],
            secure=request.uri.scheme == "sips" if secure is None else secure,
            is_uac=False,
            local_contact=_first_contact(response),
        )

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> DialogState:
        """The current state."""
        return self._state

    @property
    def call_id(self) -> str:
        """The dialog's Call-ID."""
        return self.id.call_id

    def _move_to(self, state: DialogState) -> None:
        if state is self._state:
            return
        if state not in _TRANSITIONS[self._state]:
            raise DialogError(f"dialog cannot go from {self._state.name} to {state.name}")
        self._state = state

    def terminate(self) -> None:
        """End the dialog (after answering a BYE, on a transaction timeout...). Idempotent."""
        self._move_to(DialogState.TERMINATED)

    # -- building requests ------------------------------------------------------------------
    def next_hop(self) -> URI:
        """The URI the next request is sent to: the first route, else the remote target.

        RFC 3261 §12.2.1.1 / §8.1.2; resolve it with RFC 3263 to get an address.
        """
        return self.route_set[0].uri if self.route_set else self.remote_target

    def _request_uri_and_routes(self) -> tuple[URI, list[str]]:
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        if "lr" in routes[0].uri.params:
            # §12.2.1.1: loose routing: R-URI = remote target, Route = route set.
            return self.remote_target, [str(r) for r in routes]
        # §12.2.1.1 (strict routing, RFC 2543 proxies): R-URI = first route; the remote target
        # goes last in the Route header.
        values = [str(r) for r in routes[1:]]
        values.append(str(NameAddress(self.remote_target)))
        return _request_uri_of(routes[0].uri), values

    def _build(
        self,
        method: str,
        cseq: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        items: list[tuple[str, str]] = [("Route", value) for value in routes]
        items += [
            ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
            ("To", str(self.remote_uri)),
            ("From", str(self.local_uri)),
            ("Call-ID", self.id.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        extra = list(headers)
        has_contact = any(name.lower() in ("contact", "m") for name, _ in extra)
        # §12.2.1.1: target refresh requests carry our Contact.
        if method in TARGET_REFRESH_METHODS and not has_contact and self.local_contact:
            items.append(("Contact", str(self.local_contact)))
        items += extra
        if content_type is not None:
            items.append(("Content-Type", content_type))
        return Request(method, uri, items, body)

    def create_request(
        self,
        method: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """Build a request within the dialog (RFC 3261 §12.2.1.1); the caller adds the Via.

        Increments :attr:`local_seq` (starting at 1 when the peer created the dialog).

        Args:
            method: the method (not ACK or CANCEL: see :meth:`create_ack`; a CANCEL is
                built from the INVITE it cancels, §9.1).
            headers: extra header lines (Contact, Authorization, Event, ...).
            body: the body.
            content_type: the Content-Type of the body, if any.

        Returns:
            The request; send it to :meth:`next_hop`.

        Raises:
            DialogError: for ACK/CANCEL, on a terminated dialog, for a BYE from the callee
                on an early dialog (§15), or when the CSeq space is exhausted.
        """
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} reuses the INVITE's CSeq; use create_ack() or §9.1")
        if self._state is DialogState.TERMINATED:
            raise DialogError(f"cannot send {method} on a terminated dialog")
        if method == "BYE" and not self.is_uac and self._state is DialogState.EARLY:
            # §15: the callee MUST NOT send a BYE on an early dialog.
            raise DialogError("the callee cannot send BYE on an early dialog")
        seq = 1 if self.local_seq is None else self.local_seq + 1
        if seq > _MAX_CSEQ:
            raise DialogError("CSeq sequence number space exhausted")
        self.local_seq = seq
        return self._build(method, seq, headers, body, content_type)

    def create_ack(
        self,
        invite_cseq: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """Build the ACK for a 2xx to an INVITE (RFC 3261 §13.2.2.4).

        The ACK is built like any in-dialog request but keeps the INVITE's CSeq number and
        does not change :attr:`local_seq`. Allowed in any state: every 2xx must be ACKed,
        even one from a fork the UA is about to hang up.

        Args:
            invite_cseq: the CSeq number of the INVITE being acknowledged.
            headers: extra header lines (the INVITE's Authorization/Proxy-Authorization).
            body: the body (an answer when the 2xx carried the offer).
            content_type: the Content-Type of the body, if any.

        Returns:
            The ACK request; send it to :meth:`next_hop`.
        """
        return self._build("ACK", invite_cseq, headers, body, content_type)

    # -- incoming requests (we are the UAS of the transaction) ------------------------------
    def receive_request(self, request: Request) -> DialogRequestCheck:
        """Check an in-dialog request and update the dialog (RFC 3261 §12.2.2).

        Args:
            request: a request whose To tag is our local tag (see :class:`DialogTable`).

        Returns:
            The verdict: accepted, or the status to answer with. An accepted request has
            updated :attr:`remote_seq` and, for a target refresh, :attr:`remote_target`.
        """
        try:
            if DialogId.of_request(request) != self.id:
                return DialogRequestCheck(481, "Call/Transaction Does Not Exist")
            seq = request.cseq.seq
        except SIPParseError as exc:
            return DialogRequestCheck(exc.status, exc.reason)
        if self._state is DialogState.TERMINATED:
            return DialogRequestCheck(481, "Call/Transaction Does Not Exist")
        method = request.method
        if method in ("ACK", "CANCEL"):
            # The ACK for a 2xx and a CANCEL carry the INVITE's number (§13.2.2.4, §9.1);
            # they never get an answer and do not move remote_seq.
            return _ACCEPTED
        if self.remote_seq is not None and seq <= self.remote_seq:
            # §12.2.2: lower -> out of order, 500. Equal: the transaction layer absorbed
            # retransmissions, so this is a new request reusing a number; same answer.
            return DialogRequestCheck(500, "CSeq Out of Order")
        self.remote_seq = seq
        refreshed = False
        if method in TARGET_REFRESH_METHODS:
            # §12.2.2: a target refresh replaces the remote target with its Contact.
            contact = _first_contact(request)
            if contact is not None:
                self.remote_target = contact.uri
                refreshed = True
        return DialogRequestCheck(target_refreshed=refreshed, ends_dialog=method == "BYE")

    def send_response(self, request: Request, response: Response) -> None:
        """Record a response we send to a request of this dialog.

        A 2xx to the dialog-creating request confirms an early dialog; a 3xx-6xx to it
        ends it (§12.3 is symmetric for the UAS). A 2xx to a BYE ends the dialog (§15.1.2).

        Args:
            request: the request answered.
            response: our response.
        """
        status = response.status
        if request.to.tag is None:  # the dialog-creating request
            if self._state is DialogState.EARLY:
                if 200 <= status < 300:
                    self._move_to(DialogState.CONFIRMED)
                elif status >= 300:
                    self._move_to(DialogState.TERMINATED)
            contact = _first_contact(response)
            if contact is not None and status < 300:
                self.local_contact = contact
        elif request.method == "BYE" and 200 <= status < 300:
            self.terminate()

    # -- responses to our requests (we are the UAC of the transaction) ----------------------
    def receive_response(self, request: Request, response: Response) -> None:
        """Update the dialog from a response to a request we sent (§12.1.2, §12.2.1.2).

        Args:
            request: the request the response answers (the dialog-creating request, or one
                built by :meth:`create_request`).
            response: the response; one whose To tag is not this dialog's remote tag is
                ignored (it belongs to another fork, see :class:`DialogSet`).
        """
        if self._state is DialogState.TERMINATED:
            return
        status = response.status
        try:
            if (response.to.tag or "") != self.id.remote_tag:
                return
        except SIPParseError:
            return
        if request.to.tag is None:
            self._receive_creating_response(response)
            return
        if status in (408, 481):
            # §12.2.1.2: a 481 or 408 to an in-dialog request terminates the dialog.
            self.terminate()
        elif request.method == "BYE" and status >= 200 and status not in (401, 407):
            # §15.1.1: the BYE ends the dialog whatever the answer, unless it must be resent
            # with credentials.
            self.terminate()
        elif 200 <= status < 300 and request.method in TARGET_REFRESH_METHODS:
            # §12.2.1.2: a 2xx to a target refresh replaces the remote target; the route set
            # stays as it is.
            contact = _first_contact(response)
            if contact is not None:
                self.remote_target = contact.uri

    def _receive_creating_response(self, response: Response) -> None:
        status = response.status
        if self._state is not DialogState.EARLY:
            return  # a retransmitted 2xx changes nothing
        if status >= 300:
            # §12.3: a non-2xx final response ends the early dialogs of the request.
            self._move_to(DialogState.TERMINATED)
            return
        if status < 101:
            return
        contact = _first_contact(response)
        if contact is not None:
            self.remote_target = contact.uri
        if status >= 200:
            # §13.2.2.4: the 2xx confirms the dialog and the route set is recomputed from it.
            try:
                self.route_set = [_copy_address(r) for r in reversed(response.record_routes)]
            except SIPParseError:
                pass  # keep the route set of the early dialog
            self._move_to(DialogState.CONFIRMED)

    def __repr__(self) -> str:
        return (
            f"<Dialog {self._state.name} {'UAC' if self.is_uac else 'UAS'} "
            f"call_id={self.id.call_id!r} local={self.id.local_tag!r} "
            f"remote={self.id.remote_tag!r}>"
        )


class DialogSet:
    """The dialogs one outgoing dialog-creating request forks into (RFC 3261 §13.2.2.4).

    Each response with a new To tag creates a dialog; responses with a known tag update it.
    A 3xx-6xx final response ends the early dialogs (§12.3). When the INVITE transaction is
    over (64*T1 after the first 2xx, §13.2.2.4) call :meth:`terminate_early`.

    Args:
        request: the request we sent, with our From tag.

    Raises:
        DialogError: when the request has no From tag.
    """

    def __init__(self, request: Request) -> None:
        local_tag = request.from_.tag
        if not local_tag:
            raise DialogError("the request has no From tag")
        self.request = request
        self.call_id = request.call_id
        self.local_tag = local_tag
        self._dialogs: dict[str, Dialog] = {}

    @property
    def dialogs(self) -> list[Dialog]:
        """Every dialog created so far, in order of creation."""
        return list(self._dialogs.values())

    def get(self, remote_tag: str) -> Dialog | None:
        """The dialog with the peer tag ``remote_tag``, if any."""
        return self._dialogs.get(remote_tag)

    def receive_response(self, response: Response) -> Dialog | None:
        """Handle a response to :attr:`request`.

        Args:
            response: a response to the request (others are ignored).

        Returns:
            The dialog it created or updated, or None (100 Trying, a 1xx without To tag,
            a 3xx-6xx final response, a response to another request).

        Raises:
            SIPParseError: for a malformed Record-Route in a response creating a dialog.
        """
        request = self.request
        if (
            response.call_id != self.call_id
            or response.from_.tag != self.local_tag
            or response.cseq != request.cseq
        ):
            return None
        status = response.status
        if status >= 300:
            # §12.3: a non-2xx final response ends every early dialog of the request.
            self.terminate_early()
            return None
        tag = response.to.tag
        if status < 101 or (status < 200 and not tag):
            return None
        key = tag or ""
        dialog = self._dialogs.get(key)
        if dialog is None:
            dialog = Dialog.from_uac(request, response)
            self._dialogs[key] = dialog
        else:
            dialog.receive_response(request, response)
        return dialog

    def terminate_early(self) -> list[Dialog]:
        """End the dialogs still early (§13.2.2.4: the INVITE transaction is over).

        Returns:
            The dialogs this terminated.
        """
        ended = [d for d in self._dialogs.values() if d.state is DialogState.EARLY]
        for dialog in ended:
            dialog.terminate()
        return ended


class DialogTable:
    """The dialogs of a UA, indexed by :class:`DialogId`, plus the pending dialog sets."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}
        self._sets: dict[tuple[str, str], DialogSet] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Dialog):
            return self._dialogs.get(item.id) is item
        return item in self._dialogs

    def add(self, dialog: Dialog) -> None:
        """Register a dialog (for example one made by :meth:`Dialog.from_uas`).

        Raises:
            DialogError: when another dialog has the same id.
        """
        other = self._dialogs.get(dialog.id)
        if other is not None and other is not dialog:
            raise DialogError(f"a dialog with id {dialog.id} exists")
        self._dialogs[dialog.id] = dialog

    def get(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with this id, or None."""
        return self._dialogs.get(dialog_id)

    def remove(self, dialog_id: DialogId) -> Dialog | None:
        """Forget a dialog; returns it, or None when unknown."""
        return self._dialogs.pop(dialog_id, None)

    def find_for_request(self, request: Request) -> Dialog | None:
        """The dialog of an incoming request (RFC 3261 §12.2.2).

        Returns None for a request without To tag (outside any dialog); for one with a To
        tag the UA core answers 481 when this returns None.
        """
        if request.to.tag is None:
            return None
        return self._dialogs.get(DialogId.of_request(request))

    def find_for_response(self, response: Response) -> Dialog | None:
        """The dialog of a response to a request we sent, or None."""
        return self._dialogs.get(DialogId.of_response(response))

    # -- outgoing dialog-creating requests --------------------------------------------------
    def start_dialog_set(self, request: Request) -> DialogSet:
        """Follow the dialogs an outgoing INVITE (or SUBSCRIBE, REFER) will create.

        A request resent with credentials (same Call-ID and From tag) replaces the set.
        """
        dialog_set = DialogSet(request)
        self._sets[(dialog_set.call_id, dialog_set.local_tag)] = dialog_set
        return dialog_set

    def dialog_set(self, call_id: str, local_tag: str) -> DialogSet | None:
        """The pending dialog set of the request with this Call-ID and From tag."""
        return self._sets.get((call_id, local_tag))

    def end_dialog_set(self, call_id: str, local_tag: str) -> list[Dialog]:
        """Stop following a request's forks; terminates (and returns) its early dialogs."""
        dialog_set = self._sets.pop((call_id, local_tag), None)
        return dialog_set.terminate_early() if dialog_set else []

    def receive_response(self, request: Request, response: Response) -> Dialog | None:
        """Route a response to a request we sent to its dialog, creating forked ones.

        Args:
            request: the request answered.
            response: the response.

        Returns:
            The dialog created or updated, or None.

        Raises:
            SIPParseError: for a malformed Record-Route in a response creating a dialog.
        """
        if request.to.tag is None:
            dialog_set = self._sets.get((request.call_id, request.from_.tag or ""))
            if dialog_set is None:
                return None
            dialog = dialog_set.receive_response(response)
            if dialog is not None and dialog.id not in self._dialogs:
                self._dialogs[dialog.id] = dialog
            return dialog
        dialog = self.find_for_response(response)
        if dialog is not None:
            dialog.receive_response(request, response)
        return dialog

    def purge_terminated(self) -> list[Dialog]:
        """Remove the terminated dialogs; returns them."""
        ended = [d for d in self._dialogs.values() if d.state is DialogState.TERMINATED]
        for dialog in ended:
            del self._dialogs[dialog.id]
        return ended
