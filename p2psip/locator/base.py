"""The locator interface: resolve an AoR to an ordered list of contacts, publish, withdraw.

Every locator (DHT, Bonjour, DNS per RFC 3263, static file) returns
:class:`LocatedContact` values, best first. A cache shared by the chain keeps positive
answers for their TTL and negative answers for a short time (sans-IO: ``now`` passed in).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "LocatedContact",
    "Locator",
    "LocatorCache",
    "aor_domain",
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

    The user part keeps its case (RFC 3261 §19.1.4: user comparison is case-sensitive);
    scheme and host are lower-cased; port, parameters and headers are dropped.
    """
    text = aor.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    scheme = "sip"
    if ":" in text.split("@", 1)[0]:
        scheme, _, text = text.partition(":")
        scheme = scheme.lower()
    text = text.split(";", 1)[0].split("?", 1)[0]
    user, at, host = text.rpartition("@")
    if not at:
        user, host = "", text
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if not host:
        raise ValueError(f"not an address-of-record: {aor!r}")
    return f"{scheme}:{user}@{host.lower()}" if user else f"{scheme}:{host.lower()}"


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
