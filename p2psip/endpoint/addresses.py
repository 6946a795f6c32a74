"""Transport-level addresses shared by the SIP core and its asyncio adapters."""

from __future__ import annotations

from dataclasses import dataclass

RELIABLE_TRANSPORTS = frozenset(("tcp", "tls", "sctp", "ws", "wss"))
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "sctp": 5060, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class TransportAddress:
    """Where a message comes from or goes to.

    Attributes:
        transport: lower-case transport name: ``udp``, ``tcp`` or ``tls``.
        host: an IP address literal (IPv6 without brackets) or a host name.
        port: the port number.
    """

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True for stream transports (no retransmissions, RFC 3261 §17.1.1.2)."""
        return self.transport in RELIABLE_TRANSPORTS

    @property
    def host_for_uri(self) -> str:
        """The host as it appears in a URI or Via (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.transport}:{self.host_for_uri}:{self.port}"
