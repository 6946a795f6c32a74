"""The DHT locator: signed AoR records in the Kademlia overlay.

Publishing signs one entry per device with the node's identity and stores it on the k
closest nodes, which validate it (signature, pinned key, newer seq, expiry, size) before
keeping it. Resolving reads every replica's copy, validates each entry again, keeps the newest
entry per device and returns its contacts with the verified key.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from pathlib import Path

from p2psip.errors import (
    LocatorError,
    NotFound,
    OverlayUnreachable,
    RecordError,
    RecordRefused,
)
from p2psip.locator.base import LocatedContact
from p2psip.locator.static import contact_from_uri
from p2psip.overlay.aio.dht import DHTNode
from p2psip.overlay.dht import DHTConfig
from p2psip.overlay.identity import Identity, fingerprint_of
from p2psip.overlay.records import (
    DHT_KEY_PREFIX,
    AoRRecord,
    Contact,
    DeviceEntry,
    RecordPolicy,
    merge_for_store,
    normalize_aor,
    parse_record,
    select_valid,
    sign_entry,
)
from p2psip.overlay.records import dht_key as records_dht_key

__all__ = ["DHTLocator", "records_validator"]

log = logging.getLogger("p2psip.locator.dht")


def _application_key(aor: str) -> bytes:
    # The DHT hashes application keys with SHA-1; with this prefix the stored key equals
    # records.dht_key(aor), which storing nodes check against the AoR inside the value.
    return DHT_KEY_PREFIX + normalize_aor(aor).encode("ascii")


def records_validator(
    policy: RecordPolicy, pins: MutableMapping[str, bytes]
) -> Callable[[bytes, bytes, bytes | None, float], bytes | None]:
    """The store validator every overlay node runs (see :func:`merge_for_store`)."""

    def validate(key: bytes, new: bytes, old: bytes | None, now: float) -> bytes | None:
        decision = merge_for_store(key, new, old, now, policy, pins)
        if not decision.accepted:
            log.debug("refused a store for %s: %s", key.hex(), decision.reason)
            return None
        return decision.value

    return validate


def _withdrawn_or_expired(value: bytes, aor: str, now: float, pinned: bytes | None) -> bool:
    """Whether ``value`` is a record of ``aor`` whose entries are all tombstones or expired
    (signed by the pinned key, when one is pinned): the AoR is gone, not hijacked."""
    try:
        record = parse_record(value)
    except RecordError:
        return False
    if record.aor != aor or not record.entries:
        return False
    return all(
        (not entry.contacts or entry.expires <= now)
        and (pinned is None or entry.public_key == pinned)
        for entry in record.entries
    )


def _record_expiry(value: bytes) -> float | None:
    try:
        record = parse_record(value)
    except RecordError:
        return None
    return float(max((e.expires for e in record.entries), default=0)) or None


class DHTLocator:
    """Resolve and publish AoRs through the overlay.

    Args:
        node: a listening, bootstrapped :class:`DHTNode` built with :func:`records_validator`
            (use :meth:`start`).
        identity: the key that signs our records (None: resolve only).
        policy: the overlay's record policy (open by default).
        device_id: this device's id within its AoRs.
        min_replicas: how many replicas must accept a publish.
        lifetime: seconds a published entry stays valid.
        clock: wall-clock time source (record expiry is absolute).
    """

    name = "dht"

    def __init__(
        self,
        node: DHTNode,
        identity: Identity | None = None,
        *,
        policy: RecordPolicy | None = None,
        device_id: str = "default",
        min_replicas: int = 1,
        lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.identity = identity
        self.policy = policy or RecordPolicy.open()
        self.device_id = device_id
        self.min_replicas = min_replicas
        self.lifetime = lifetime
        self.clock = clock
        #: keys seen per AoR (trust on first use); a changed key is refused
        self.known_keys: dict[str, bytes] = {}
        self._seq: dict[str, int] = {}

    @staticmethod
    def node_arguments(
        policy: RecordPolicy,
        *,
        config: DHTConfig | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> dict[str, object]:
        """Keyword arguments of a :class:`DHTNode` that stores and serves signed AoR records.

        For embedding the locator in your own node set-up (simulations pass a seeded ``rng``
        and a virtual ``clock``): ``DHTLocator(DHTNode(**DHTLocator.node_arguments(p)), ...)``.
        """
        args: dict[str, object] = {
            "config": config,
            "validator": records_validator(policy, {}),
            "expires_of": _record_expiry,
            "read_repair": True,  # the records validator merges per device by seq
        }
        if rng is not None:
            args["rng"] = rng
        if clock is not None:
            args["clock"] = clock
        return args

    @classmethod
    async def start(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Iterable[tuple[str, int]] = (),
        identity: Identity | None = None,
        policy: RecordPolicy | None = None,
        config: DHTConfig | None = None,
        state_path: str | Path | None = None,
        **kwargs: object,
    ) -> DHTLocator:
        """Start an overlay node that validates records, join, and wrap it.

        With ``state_path`` naming a file written by ``node.save_state``, the node keeps its
        id and first re-joins through the contacts it knew (a restart rejoins quickly).

        Raises:
            OverlayUnreachable: bootstrap addresses were given and none answered.
        """
        policy = policy or RecordPolicy.open()
        node_args = cls.node_arguments(policy, config=config)
        if state_path is not None and Path(state_path).exists():
            node = DHTNode.load_state(state_path, **node_args)  # type: ignore[arg-type]
        else:
            node = DHTNode(**node_args)  # type: ignore[arg-type]
        await node.listen(port, host)
        addresses = list(bootstrap)
        joined = 0
        if node.saved_contacts:
            joined = await node.bootstrap_from_state()
        if addresses:
            joined += await node.bootstrap(addresses)
        if (addresses or node.saved_contacts) and not joined:
            await node.stop()
            raise OverlayUnreachable(
                "no overlay node answered at " + ", ".join(f"{h}:{p}" for h, p in addresses)
            )
        return cls(node, identity, policy=policy, **kwargs)  # type: ignore[arg-type]

    # -- resolving ----------------------------------------------------------------------------
    async def resolve(self, aor: str) -> list[LocatedContact]:
        """Verified contacts of ``aor``, best priority first.

        Raises:
            NotFound: no replica holds a record for the AoR.
            RecordRefused: records exist but none verifies (or the AoR's key changed).
        """
        try:
            norm = normalize_aor(aor)
        except RecordError as error:
            raise LocatorError(str(error)) from error
        now = self.clock()
        pinned = self.known_keys.get(norm)

        verified: dict[bytes, list[DeviceEntry]] = {}  # replicas mostly answer the same bytes

        def valid_entries(value: bytes) -> list[DeviceEntry]:
            entries = verified.get(value)
            if entries is None:
                try:
                    entries = select_valid(value, now, norm, pinned, self.policy)
                except RecordError:
                    entries = []
                verified[value] = entries
            return entries

        def verifies(value: bytes) -> bool:
            # the lookup ends once enough replicas answered a copy that verifies: forged,
            # stale-keyed or expired copies do not count (they cannot end a read early)
            return bool(valid_entries(value))

        values = await self.node.get_values(_application_key(norm), check=verifies)
        if not values:
            raise NotFound(f"{norm}: no record in the overlay")
        found: list[DeviceEntry] = []
        keys_seen: dict[bytes, int] = {}
        for value in values:
            for entry in valid_entries(value):
                keys_seen[entry.public_key] = keys_seen.get(entry.public_key, 0) + 1
                found.append(entry)
        if not found:
            if any(_withdrawn_or_expired(v, norm, now, pinned) for v in values):
                raise NotFound(f"{norm}: withdrawn or expired")
            reason = "key changed" if pinned is not None else "no valid entry"
            raise RecordRefused(f"{norm}: records found but refused ({reason})")
        key = next(iter(keys_seen))
        if len(keys_seen) > 1:
            # Unpinned first contact with replicas disagreeing on the key: trust the key most
            # replicas hold, and say so. The newest entry per device is then taken among that
            # key's entries only (a newer one signed by the other key does not count).
            key = max(keys_seen, key=lambda k: keys_seen[k])
            log.warning("%s: replicas disagree on the key; using %s", norm, fingerprint_of(key))
        newest: dict[str, DeviceEntry] = {}
        for entry in found:
            if entry.public_key != key:
                continue
            held = newest.get(entry.device_id)
            if held is None or entry.seq > held.seq:
                newest[entry.device_id] = entry
        entries = list(newest.values())
        self.known_keys.setdefault(norm, entries[0].public_key)
        contacts: list[LocatedContact] = []
        for entry in entries:
            fingerprint = fingerprint_of(entry.public_key)
            for c in entry.contacts:
                try:
                    located = contact_from_uri(c.uri, c.priority, source="dht")
                except LocatorError:
                    continue
                contacts.append(
                    LocatedContact(
                        located.uri,
                        c.transport or located.transport,
                        located.host,
                        located.port,
                        c.priority,
                        "dht",
                        fingerprint,
                        entry.public_key,
                        entry.device_id,
                    )
                )
        if not contacts:
            raise NotFound(f"{norm}: no usable contact in the record")
        return sorted(contacts, key=lambda c: c.priority)

    # -- publishing ---------------------------------------------------------------------------
    def _next_seq(self, aor: str) -> int:
        # Monotonic across restarts as long as the clock does not go back: milliseconds.
        seq = max(self._seq.get(aor, 0) + 1, int(self.clock() * 1000))
        self._seq[aor] = seq
        return seq

    def _signed_value(self, aor: str, contacts: Sequence[LocatedContact]) -> bytes:
        if self.identity is None:
            raise LocatorError("publishing needs an identity")
        norm = normalize_aor(aor)
        entry = sign_entry(
            self.identity,
            norm,
            self.device_id,
            [Contact(c.uri, c.transport, c.priority, self.device_id) for c in contacts],
            expires=self.clock() + self.lifetime,
            seq=self._next_seq(norm),
        )
        return AoRRecord(norm, (entry,)).to_bytes()

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> int:
        """Sign and store this device's contacts for ``aor``.

        Returns:
            how many other replicas accepted the record.

        Raises:
            RecordRefused: fewer than ``min_replicas`` replicas accepted (for instance the
                AoR is pinned to another key).
        """
        value = self._signed_value(aor, contacts)
        accepted = await self.node.set(_application_key(aor), value)
        # Our own copy proves nothing (a node always trusts itself, and a short-lived
        # publisher takes it away when it stops): only other replicas count.
        if self._holds_own_copy(aor):
            accepted -= 1
        if accepted < self.min_replicas:
            raise RecordRefused(
                f"{aor}: publish accepted by {accepted} other replica(s), "
                f"{self.min_replicas} required"
            )
        return accepted

    def _holds_own_copy(self, aor: str) -> bool:
        local = self.node.storage.get(records_dht_key(aor), self.clock())
        if local is None:
            return False
        try:
            entry = parse_record(local).entry(self.device_id)
        except RecordError:
            return False
        return entry is not None and entry.seq == self._seq.get(normalize_aor(aor))

    async def withdraw(self, aor: str) -> None:
        """Replace this device's entry with a signed tombstone (no contacts)."""
        value = self._signed_value(aor, [])
        await self.node.set(_application_key(aor), value)

    async def close(self) -> None:
        """Stop the overlay node."""
        await self.node.stop()
