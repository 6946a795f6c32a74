"""The locator interface: resolve an AoR to an ordered list of contacts, publish, withdraw.

Every locator (DHT, Bonjour, DNS per RFC 3263, static file) returns
:class:`LocatedContact` values, best first. A cache shared by the chain keeps positive
answers for their TTL and negative answers for a short time (sans-IO: ``now`` passed in).
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote

from p2psip.overlay.records import normalize_aor

__all__ = [
    "LocatedContact",
    "Locator",
    "LocatorCache",
    "aor_domain",
    "display_aor",
    "normalize_aor_text",
]


@dataclass(frozen=True)
class LocatedContact:
    """One place where an AoR can be reached.

    Attributes:
        uri: the contact URI (``sip:alice@192.0.2.4:5061;transport=tls``).
        transport: ``udp``, ``tcp`` or ``tls``.
        host: IP address (or host name for DNS targets before address lookup).
        port: port number.
        priority: lower is preferred (SRV-style); ties keep the locator's order.
        source: which locator found it: ``dht``, ``bonjour``, ``dns`` or ``static``.
        key_fingerprint: for overlay records, the fingerprint of the verified key.
        public_key: for overlay records, the verified Ed25519 public key (raw bytes).
        device_id: for overlay records, the device the contact belongs to.
    """

    uri: str
    transport: str
    host: str
    port: int
    priority: int = 0
    source: str = "static"
    key_fingerprint: str | None = None
    public_key: bytes | None = field(default=None, repr=False)
    device_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dict (``p2psip lookup --json``)."""
        out: dict[str, object] = {
            "uri": self.uri,
            "transport": self.transport,
            "host": self.host,
            "port": self.port,
            "priority": self.priority,
            "source": self.source,
        }
        if self.key_fingerprint is not None:
            out["key_fingerprint"] = self.key_fingerprint
        if self.device_id is not None:
            out["device_id"] = self.device_id
        return out


@runtime_checkable
class Locator(Protocol):
    """What every locator offers.

    ``resolve`` raises :class:`~p2psip.errors.NotFound` when the AoR is unknown,
    :class:`~p2psip.errors.RecordRefused` when only invalid records exist and
    :class:`~p2psip.errors.LocatorError` for other failures. ``publish``/``withdraw`` raise
    :class:`NotImplementedError` for locators that cannot publish (DNS).
    """

    name: str

    async def resolve(self, aor: str) -> list[LocatedContact]:
        """Contacts for ``aor``, best first."""
        ...

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        """Make ``aor`` resolvable to ``contacts``."""
        ...

    async def withdraw(self, aor: str) -> None:
        """Stop publishing ``aor``."""
        ...

    async def close(self) -> None:
        """Release sockets and tasks."""
        ...


def normalize_aor_text(aor: str) -> str:
    """``alice@Example.COM`` / ``sip:alice@example.com;x=y`` -> ``sip:alice@example.com``.

    An AoR with a user part is normalised exactly as the overlay's signed records are
    (:func:`p2psip.overlay.records.normalize_aor`: scheme and host lower-cased, the user keeps
    its case (RFC 3261 §19.1.4) with escapes of unreserved characters decoded; port,
    parameters and headers dropped), so every locator and the overlay agree on one key per
    AoR. A bare host (``sip:example.com``, a DNS or static target) is lower-cased the same way.

    Raises:
        ValueError: not a usable AoR (:class:`~p2psip.errors.InvalidAoR` is a ValueError).
    """
    text = aor.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    text = _wire_form(text)
    if "@" in text.split(";", 1)[0].split("?", 1)[0]:
        return normalize_aor(text)
    scheme = "sip"
    if ":" in text and not text.startswith("["):
        head, _, rest = text.partition(":")
        if head.lower() in ("sip", "sips"):
            scheme, text = head.lower(), rest
    host = text.split(";", 1)[0].split("?", 1)[0]
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if not host or not host.isascii() or any(c <= " " or c == "\x7f" for c in host):
        raise ValueError(f"not an address-of-record: {aor!r}")
    return f"{scheme}:{host.lower()}"


#: what an RFC 3261 §25.1 ``user`` may hold unescaped: unreserved / user-unreserved
_USER_OK = frozenset(string.ascii_letters + string.digits + "-_.!~*'()" + "&=+$,;?/")
_HEXDIGITS = frozenset(string.hexdigits)


def _wire_form(text: str) -> str:
    """An AoR as typed, in its SIP form: characters a user part may not hold unescaped
    (non-ASCII, controls, spaces, a ``%`` that starts no escape...) %-escaped as UTF-8
    (RFC 3261 §19.1.2, §25.1 ``escaped``), and a non-ASCII host in IDNA (RFC 3261 hostnames
    are ASCII; RFC 3490 ToASCII)."""
    head, at, hostpart = text.rpartition("@")
    if not at:
        head, hostpart = "", text
    scheme, colon, user = head.partition(":")
    if not colon or not scheme.isascii() or not scheme.isalpha():
        scheme, colon, user = "", "", head  # no scheme ("alice@host")
    out = []
    for i, char in enumerate(user):
        if char in _USER_OK or (
            char == "%" and len(user) > i + 2 and {user[i + 1], user[i + 2]} <= _HEXDIGITS
        ):
            out.append(char)
        else:
            out.append(quote(char, safe=""))
    host, sep, tail = hostpart.partition(":")
    host, semi, params = host.partition(";")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise ValueError(f"not an address-of-record: {text!r} ({error})") from None
    return f"{scheme}{colon}{''.join(out)}{at}{host}{semi}{params}{sep}{tail}"


def display_aor(aor: str) -> str:
    """A normalised AoR as people write it: escapes decoded (UTF-8), IDNA host in Unicode.

    ``sip:j%C3%BCrgen@xn--r8jz45g.jp`` -> ``sip:jürgen@例え.jp``. For display only: the
    normalised form is what is signed, stored and compared.
    """
    scheme, _, rest = aor.partition(":")
    user, at, host = rest.rpartition("@")
    try:
        host = host.encode("ascii").decode("idna") if "xn--" in host.lower() else host
    except UnicodeError:
        pass
    return f"{scheme}:{unquote(user, errors='replace')}{at}{host}"


def aor_domain(aor: str) -> str:
    """The host part of an AoR (``sip:alice@p2p.example`` -> ``p2p.example``)."""
    rest = normalize_aor_text(aor).partition(":")[2]
    return rest.rpartition("@")[2]


class LocatorCache:
    """Positive and negative answers with TTLs (sans-IO: ``now`` passed in).

    Args:
        max_entries: LRU bound on remembered AoRs.
        max_ttl: cap on a positive answer's lifetime, seconds.
        negative_ttl: how long "not found" is remembered, seconds.
    """

    def __init__(
        self, max_entries: int = 4096, max_ttl: float = 300.0, negative_ttl: float = 10.0
    ) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self._entries: OrderedDict[str, tuple[float, list[LocatedContact] | None]] = OrderedDict()

    def get(self, aor: str, now: float) -> list[LocatedContact] | bool | None:
        """The cached contacts, ``False`` for a cached "not found", ``None`` for a miss."""
        entry = self._entries.get(aor)
        if entry is None:
            return None
        expires, contacts = entry
        if now >= expires:
            del self._entries[aor]
            return None
        self._entries.move_to_end(aor)
        return False if contacts is None else list(contacts)

    def put(self, aor: str, contacts: Sequence[LocatedContact], ttl: float, now: float) -> None:
        """Remember a positive answer for ``min(ttl, max_ttl)`` seconds."""
        self._store(aor, now + max(0.0, min(ttl, self.max_ttl)), list(contacts))

    def put_negative(self, aor: str, now: float) -> None:
        """Remember that ``aor`` was not found."""
        self._store(aor, now + self.negative_ttl, None)

    def invalidate(self, aor: str) -> None:
        """Forget ``aor`` (after a failed call attempt, a withdrawal...)."""
        self._entries.pop(aor, None)

    def _store(self, aor: str, expires: float, contacts: list[LocatedContact] | None) -> None:
        self._entries[aor] = (expires, contacts)
        self._entries.move_to_end(aor)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
