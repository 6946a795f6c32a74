"""The static locator: AoR -> contacts from a file (or a dict), for fixed peers and tests.

File format (JSON)::

    {"sip:bob@example.net": ["sip:bob@192.0.2.7:5061;transport=tls",
                             {"uri": "sip:bob@192.0.2.8:5060", "priority": 10}]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from p2psip.errors import LocatorError, NotFound
from p2psip.locator.base import LocatedContact, normalize_aor_text
from p2psip.locator.rfc3263 import parse_sip_target

__all__ = ["StaticLocator", "contact_from_uri"]

_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def contact_from_uri(uri: str, priority: int = 0, source: str = "static") -> LocatedContact:
    """A :class:`LocatedContact` from a contact URI (RFC 3261 §19.1 / RFC 3263 §4.1 defaults:
    UDP for ``sip:``, TLS for ``sips:``, ports 5060/5061).

    Raises:
        LocatorError: when the URI has no usable host.
    """
    target = parse_sip_target(uri)
    transport = target.transport or ("tls" if target.secure else "udp")
    port = target.port if target.port is not None else _DEFAULT_PORTS.get(transport, 5060)
    return LocatedContact(
        uri.strip().strip("<>"), transport, target.destination, port, priority, source
    )


class StaticLocator:
    """Resolves from a fixed table.

    Args:
        table: AoR -> list of URIs or ``{"uri": ..., "priority": ...}`` objects.
    """

    name = "static"

    def __init__(self, table: Mapping[str, Sequence[object]] | None = None) -> None:
        self._table: dict[str, list[LocatedContact]] = {}
        for aor, entries in (table or {}).items():
            self._table[normalize_aor_text(aor)] = [self._entry(e) for e in entries]

    @classmethod
    def from_file(cls, path: str | Path) -> StaticLocator:
        """Load the JSON table at ``path``.

        Raises:
            LocatorError: unreadable file or wrong shape.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LocatorError(f"cannot read static locator file {path}: {error}") from error
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) for k, v in data.items()
        ):
            raise LocatorError(f"{path}: expected an object mapping AoRs to lists of contacts")
        return cls(data)

    @staticmethod
    def _entry(entry: object) -> LocatedContact:
        if isinstance(entry, str):
            return contact_from_uri(entry)
        if isinstance(entry, dict) and isinstance(entry.get("uri"), str):
            priority = entry.get("priority", 0)
            if not isinstance(priority, int):
                raise LocatorError(f"priority must be an integer: {entry!r}")
            return contact_from_uri(entry["uri"], priority)
        raise LocatorError(f"bad static contact entry: {entry!r}")

    async def resolve(self, aor: str) -> list[LocatedContact]:
        """The table's contacts for ``aor``, by priority (stable)."""
        contacts = self._table.get(normalize_aor_text(aor))
        if not contacts:
            raise NotFound(f"{aor}: not in the static table")
        return sorted(contacts, key=lambda c: c.priority)

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        """Replace the table entry for ``aor``."""
        self._table[normalize_aor_text(aor)] = list(contacts)

    async def withdraw(self, aor: str) -> None:
        """Remove ``aor`` from the table."""
        self._table.pop(normalize_aor_text(aor), None)

    async def close(self) -> None:
        """Nothing to release."""
