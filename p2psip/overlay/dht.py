"""Kademlia DHT core, sans-IO: value storage, routing table, iterative lookups, state files.

The asyncio node that puts these on the wire is :class:`p2psip.overlay.aio.dht.DHTNode`
(it wraps the ``kademlia`` package's ``Server`` with our protocol class). Everything here takes
``now`` as an argument and opens no socket, so it is tested without a network.

What this module decides, and which bug of ``kademlia`` 2.2.3 each part replaces
(numbers from ``shared/DEPENDENCY_NOTES.md``):

* :class:`ValueStore` — bytes keys and values only, size-bounded, per-node and per-sender
  limits, our own expiry per key, and every write (a peer's STORE *and* the node's own set)
  goes through a :data:`StoreValidator` that may refuse or merge. The stock storage took any
  msgpack value (a raw datagram stored a dict) and every holder republished every key hourly.
* :class:`RoutingTable` — :meth:`RoutingTable.closest` scans every bucket (bug 1: the stock
  ``TableTraverser`` can stop before visiting the buckets that hold contacts); a contact is
  evicted only after ``max_failures`` consecutive failed RPCs (each already retried); only a
  contact really *added* to a bucket is reported as new, so a peer parked in a full bucket's
  replacement list is not "welcomed" again and again (the store storm, bug 5); pings of a full
  bucket's head are rate-limited.
* :func:`handover` — which stored values a newly added contact should receive, computed on the
  stored 160-bit keys themselves (bug 2: the stock ``welcome_if_new`` hashed them again).
* :class:`Lookup` — the iterative lookup as a state machine (``next_queries`` /
  ``answered`` / ``failed`` / ``slow``). A value lookup does not stop at the first answer and
  takes no majority vote: it runs to convergence and keeps every value it was given.
* :func:`join_refresh_targets` — the ids a joining node looks up to fill its far buckets
  (bug 4: the stock package left them empty until the hourly refresh).
* :func:`encode_state` / :func:`decode_state` — routing state as JSON (the stock
  ``save_state`` pickles, and loading an untrusted pickle runs code).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
import json
import logging
import random
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from p2psip.errors import P2PSIPError

__all__ = [
    "ID_BITS",
    "ID_BYTES",
    "MAX_VALUE_BYTES",
    "Bucket",
    "Contact",
    "DHTConfig",
    "DHTError",
    "DHTStats",
    "Lookup",
    "PublishError",
    "ReadValidator",
    "RoutingState",
    "RoutingTable",
    "StateFileError",
    "StorageLimits",
    "StoreDecision",
    "StoreValidator",
    "Touched",
    "ValueStore",
    "accept_any",
    "decode_state",
    "dht_key",
    "encode_state",
    "handover",
    "join_refresh_targets",
    "newest_by",
    "parse_contact",
    "random_id_in_range",
]

logger = logging.getLogger(__name__)

ID_BYTES = 20
ID_BITS = 8 * ID_BYTES
#: the largest value we store or send: an rpcudp request over 8192 bytes is refused by the
#: sender, and a STORE carries the key, the node id and msgpack framing besides the value
MAX_VALUE_BYTES = 8000

StoreValidator = Callable[[bytes, bytes, bytes | None, float], bytes | None]
"""``validator(key, new_value, old_value, now) -> value to keep | None``.

Called for every write into a :class:`ValueStore`: a peer's STORE, a handover and the node's
own ``set``. It returns the value to keep (``new_value``, or a merge of ``old_value`` and
``new_value``) or ``None`` to refuse. ``key`` is the 20-byte DHT key (:func:`dht_key`). The node
layer always passes the signed-records validator; :func:`accept_any` is for tests.
"""

ReadValidator = Callable[[bytes, list[bytes], float], bytes | None]
"""``read_validator(key, values, now) -> value | None``: turns every value a lookup collected
(one per answering replica, local copy included) into the answer of ``get``."""


class DHTError(P2PSIPError):
    """Base class of the DHT's errors."""


class PublishError(DHTError):
    """Fewer replicas than required accepted a value.

    Attributes:
        accepted: how many replicas really stored it.
        required: how many were asked for.
    """

    def __init__(self, key: bytes, accepted: int, required: int) -> None:
        super().__init__(
            f"publishing {key.hex()} reached {accepted} replica(s), {required} required"
        )
        self.key = key
        self.accepted = accepted
        self.required = required


class StateFileError(DHTError):
    """A routing-state file is unreadable, corrupt or hostile."""


def dht_key(key: bytes | str) -> bytes:
    """The 160-bit DHT key of an application key: SHA-1 of its bytes (str as UTF-8).

    Args:
        key: the application key.

    Returns:
        20 bytes. Validators receive this form, the only one a storing node sees.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"DHT keys are bytes or str, not {type(key).__name__}")
    return hashlib.sha1(bytes(key)).digest()


def accept_any(key: bytes, new_value: bytes, old_value: bytes | None, now: float) -> bytes:
    """A :data:`StoreValidator` that keeps every new value (tests only)."""
    return new_value


def newest_by(order: Callable[[bytes], Any]) -> ReadValidator:
    """A :data:`ReadValidator` answering the greatest value by ``order`` (the newest).

    Args:
        order: a sort key; for example a parser of the value's version field.

    Returns:
        the validator. The node layer uses its signed-records merge instead.
    """

    def pick(key: bytes, values: list[bytes], now: float) -> bytes | None:
        return max(values, key=order) if values else None

    return pick


def _identity(value: bytes) -> bytes:
    return value


#: default ``get`` answer: the greatest value byte-wise (tests give values a sortable prefix)
newest_bytes: ReadValidator = newest_by(_identity)


def random_id_in_range(low: int, high: int, rng: random.Random) -> bytes:
    """A random node id in ``[low, high]`` (inclusive), from the injected ``rng``."""
    return rng.randint(low, high).to_bytes(ID_BYTES, "big")


# ---------------------------------------------------------------------------------------------
# contacts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """A peer: its 160-bit id and its UDP address (an IP literal, never a name)."""

    node_id: bytes
    host: str
    port: int
    int_id: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "int_id", int.from_bytes(self.node_id, "big"))

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.host else 4

    def distance_to(self, node_id: bytes | int) -> int:
        other = node_id if isinstance(node_id, int) else int.from_bytes(node_id, "big")
        return self.int_id ^ other

    def to_wire(self) -> tuple[bytes, str, int]:
        """The ``(id, ip, port)`` triple of a FIND_NODE answer."""
        return (self.node_id, self.host, self.port)


def normalise_host(host: object) -> str | None:
    """The canonical text of a unicast IP literal, or None (names, wildcards, multicast)."""
    if not isinstance(host, str) or len(host) > 64:
        return None
    return _normalise_host(host)


@functools.lru_cache(maxsize=4096)  # every FIND_NODE answer repeats the same few hosts
def _normalise_host(host: str) -> str | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # what a dual-stack socket reports for an IPv4 peer: the peer is that IPv4 address
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return None
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return ip.compressed


def is_node_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == ID_BYTES


def parse_contact(raw: object, family: int | None = None) -> Contact | None:
    """A :class:`Contact` from an untrusted ``(id, ip, port)`` triple, or None when malformed.

    Args:
        raw: the triple as decoded from msgpack.
        family: 4 or 6 to drop contacts this node cannot reach (one address family per node).
    """
    if not isinstance(raw, list | tuple) or len(raw) != 3:
        return None
    node_id, host, port = raw
    if not is_node_id(node_id) or type(port) is not int or not 0 < port < 65536:
        return None
    canonical = normalise_host(host)
    if canonical is None:
        return None
    contact = Contact(node_id, canonical, port)
    if family is not None and contact.family != family:
        return None
    return contact


# ---------------------------------------------------------------------------------------------
# configuration and counters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageLimits:
    """Bounds of one node's :class:`ValueStore`.

    Args:
        max_value_bytes: largest value accepted (default 8000: the UDP RPC limit is 8192).
        max_keys: keys held at most.
        max_bytes: sum of value sizes held at most.
        max_keys_per_sender: keys one peer (one ``(ip, port)``) may have stored on us; updates
            of a key it already stored do not count again. The node's own writes are exempt.
        ttl: seconds a value is kept after its last accepted write (kademlia values carry no
            TTL; a record's own expiry is the validator's and ``expires_of``'s business).
    """

    max_value_bytes: int = MAX_VALUE_BYTES
    max_keys: int = 5000
    max_bytes: int = 8 * 1024 * 1024
    max_keys_per_sender: int = 256
    ttl: float = 24 * 3600.0


@dataclass(frozen=True)
class DHTConfig:
    """Timers and sizes of a DHT node, as data.

    Args:
        ksize: k, the bucket size and the replica count (Kademlia paper §2.2).
        alpha: lookups in flight at once.
        rpc_timeout: seconds to wait for an answer to a resend, and the most the first send
            waits (0.5 s, the RFC 3261 T1 estimate of an Internet RTT, instead of the package's
            fixed 5 s: with 30 % of the nodes gone the stock gets took 5 s median). The first
            send waits the adaptive RTT-based timeout (``min_rpc_timeout`` .. ``rpc_timeout``);
            then a lookup stops waiting for that node (it is marked slow, the next one is asked).
        rpc_retries: resends before an RPC fails (same message id, so a late answer to the
            first send still counts): a contact is unreachable after at most
            ``(1 + rpc_retries) * rpc_timeout`` = 1.5 s.
        max_failures: consecutive failed RPCs (each already retried) before a contact is
            evicted; one lost datagram never evicts.
        join_refresh_width: after joining, each far-bucket refresh lookup converges on this
            many nodes (a full k-wide lookup costs ~k RPCs per distance range).
        refresh_interval: a bucket with no lookup for this long is refreshed (paper: 1 h).
        maintenance_interval: period of the expiry and refresh pass.
        welcome_interval: a contact handed our values is not handed them again within this time.
        ping_interval: at most one ping of a full bucket's head per bucket per interval.
        max_handover_tasks: handovers running at once (more new contacts are not welcomed).
        value_quorum: a value lookup ends once this many replicas answered a value that the
            reader's check accepts (:class:`Lookup`); 0 reads all k replicas.
        read_repair_chance: with read repair on (``DHTNode(read_repair=True)``), the share of
            quorum reads followed by a background read of every replica, which then offers
            each replica the values the others held: a quorum read can stop at replicas that
            all missed an update, and this brings them up to date. Replicas seen disagreeing
            by any read are repaired at once, at no extra lookup.
        read_repair_interval: at most one background read per key per this many seconds.
        min_rpc_timeout: lower bound of the adaptive first-send timeout (:class:`RttEstimator`);
            later resends wait ``rpc_timeout``.
        suspect_time: a contact whose first send timed out is a suspect for this long, unless
            it is heard from again: other lookups ask it without waiting for it.
        bootstrap_rounds: times the bootstrap addresses are pinged (each ping with its
            resends) before a join gives up.
        socket_buffer: SO_RCVBUF/SO_SNDBUF asked for (bytes, 0 = system default): answers to
            parallel lookups arrive in bursts.
        limits: storage bounds.
    """

    ksize: int = 20
    alpha: int = 3
    rpc_timeout: float = 0.5
    rpc_retries: int = 2
    max_failures: int = 2
    join_refresh_width: int = 4
    refresh_interval: float = 3600.0
    maintenance_interval: float = 60.0
    welcome_interval: float = 600.0
    ping_interval: float = 2.0
    max_handover_tasks: int = 32
    value_quorum: int = 3
    read_repair_chance: float = 0.1
    read_repair_interval: float = 60.0
    min_rpc_timeout: float = 0.05
    suspect_time: float = 30.0
    bootstrap_rounds: int = 2
    socket_buffer: int = 1024 * 1024
    limits: StorageLimits = field(default_factory=StorageLimits)

    def __post_init__(self) -> None:
        if self.ksize < 1 or self.alpha < 1:
            raise ValueError("ksize and alpha must be >= 1")
        if self.rpc_timeout <= 0 or self.rpc_retries < 0 or self.max_failures < 1:
            raise ValueError("rpc_timeout > 0, rpc_retries >= 0 and max_failures >= 1 required")
        if not 0 < self.min_rpc_timeout <= self.rpc_timeout or self.value_quorum < 0:
            raise ValueError("0 < min_rpc_timeout <= rpc_timeout and value_quorum >= 0 required")


@dataclass
class DHTStats:
    """Counters of one node (all monotonic)."""

    requests_sent: int = 0
    retransmissions: int = 0
    rpc_failures: int = 0
    requests_received: int = 0
    malformed_datagrams: int = 0
    stores_accepted: int = 0
    stores_refused: int = 0
    handover_stores: int = 0
    contacts_evicted: int = 0
    read_repairs: int = 0  # background full reads after a quorum read
    repair_stores: int = 0  # values offered to replicas that held another one


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------


class StoreDecision(enum.Enum):
    """What :meth:`ValueStore.offer` did with a value."""

    STORED = "stored"
    UNCHANGED = "unchanged"  # the kept value is the one already held (still an acceptance)
    REFUSED_TYPE = "refused: key or value is not bytes / key is not 20 bytes"
    REFUSED_SIZE = "refused: value too large"
    REFUSED_BY_VALIDATOR = "refused by the validator"
    REFUSED_STORE_FULL = "refused: storage full"
    REFUSED_SENDER_LIMIT = "refused: this sender stored too many keys"
    REFUSED_EXPIRED = "refused: expired"

    @property
    def accepted(self) -> bool:
        return self in (StoreDecision.STORED, StoreDecision.UNCHANGED)


@dataclass(slots=True)
class _Entry:
    value: bytes
    stored_at: float
    expires_at: float
    sender: Hashable | None


class ValueStore:
    """Bounded key -> value storage whose every write goes through a validator.

    Args:
        validator: decides what to keep (see :data:`StoreValidator`); a validator that
            raises refuses.
        limits: size bounds and the default time-to-live.
        expires_of: optional ``expires_of(value) -> absolute expiry | None`` (same clock as
            ``now``) so that a record is dropped at its own expiry when that comes before
            ``limits.ttl``.
    """

    def __init__(
        self,
        validator: StoreValidator = accept_any,
        limits: StorageLimits | None = None,
        expires_of: Callable[[bytes], float | None] | None = None,
    ) -> None:
        self.validator = validator
        self.limits = limits or StorageLimits()
        self.expires_of = expires_of
        self._entries: dict[bytes, _Entry] = {}
        self._per_sender: dict[Hashable, int] = {}
        self.bytes_used = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys_stored_by(self, sender: Hashable) -> int:
        """How many of our keys ``sender`` stored first."""
        return self._per_sender.get(sender, 0)

    def offer(
        self, key: object, value: object, now: float, sender: Hashable | None = None
    ) -> StoreDecision:
        """Validate ``value`` for ``key`` and keep what the validator returns.

        Args:
            key: the 20-byte DHT key (anything else is refused).
            value: the value (bytes only).
            now: current time, handed to the validator.
            sender: the storing peer's address, or None for this node's own writes.

        Returns:
            the decision; ``decision.accepted`` is the STORE RPC's answer.
        """
        if not is_node_id(key) or not isinstance(value, bytes):
            return StoreDecision.REFUSED_TYPE
        assert isinstance(key, bytes)
        limits = self.limits
        if len(value) > limits.max_value_bytes:
            return StoreDecision.REFUSED_SIZE
        entry = self._live_entry(key, now)
        old = entry.value if entry is not None else None
        if old is not None and value == old:
            # A resent or refreshed identical value: already held, so accepted (a validator
            # refusing "equal seq" would otherwise turn a lost STORE answer into a refusal).
            kept: bytes | None = old
        else:
            if entry is None:
                refusal = self._room_for_new_key(sender, len(value), now)
                if refusal is not None:
                    return refusal
            try:
                kept = self.validator(key, value, old, now)
            except Exception:
                logger.exception("store validator raised for key %s; refusing", key.hex())
                kept = None
            if kept is None:
                return StoreDecision.REFUSED_BY_VALIDATOR
            if not isinstance(kept, bytes):
                logger.error("store validator returned %s, not bytes", type(kept).__name__)
                return StoreDecision.REFUSED_BY_VALIDATOR
            if len(kept) > limits.max_value_bytes:
                return StoreDecision.REFUSED_SIZE
            grow = len(kept) - (len(old) if old is not None else 0)
            if grow > 0 and self.bytes_used + grow > limits.max_bytes:
                self.expire(now)
                if self.bytes_used + grow > limits.max_bytes:
                    return StoreDecision.REFUSED_STORE_FULL
        expires_at = now + limits.ttl
        if self.expires_of is not None:
            try:
                own = self.expires_of(kept)
            except Exception:
                logger.exception("expires_of raised for key %s; refusing", key.hex())
                return StoreDecision.REFUSED_BY_VALIDATOR
            if own is not None:
                if own <= now:
                    return StoreDecision.REFUSED_EXPIRED
                expires_at = min(expires_at, own)
        if entry is None:
            self._entries[key] = _Entry(kept, now, expires_at, sender)
            self.bytes_used += len(kept)
            if sender is not None:
                self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
            return StoreDecision.STORED
        self.bytes_used += len(kept) - len(entry.value)
        changed = kept != entry.value
        entry.value = kept
        entry.stored_at = now
        entry.expires_at = expires_at
        return StoreDecision.STORED if changed else StoreDecision.UNCHANGED

    def _room_for_new_key(
        self, sender: Hashable | None, size: int, now: float
    ) -> StoreDecision | None:
        limits = self.limits
        if sender is not None and self._per_sender.get(sender, 0) >= limits.max_keys_per_sender:
            self.expire(now)
            if self._per_sender.get(sender, 0) >= limits.max_keys_per_sender:
                return StoreDecision.REFUSED_SENDER_LIMIT
        if len(self._entries) >= limits.max_keys or self.bytes_used + size > limits.max_bytes:
            # Full: expired entries go first; live ones are never evicted for a newcomer
            # (that would let any peer flush our store by flooding it).
            self.expire(now)
            if len(self._entries) >= limits.max_keys or self.bytes_used + size > limits.max_bytes:
                return StoreDecision.REFUSED_STORE_FULL
        return None

    def _live_entry(self, key: bytes, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            self.remove(key)
            return None
        return entry

    def get(self, key: bytes, now: float) -> bytes | None:
        """The live value of ``key``, or None."""
        entry = self._live_entry(key, now)
        return entry.value if entry is not None else None

    def remove(self, key: bytes) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes_used -= len(entry.value)
        if entry.sender is not None:
            left = self._per_sender[entry.sender] - 1
            if left:
                self._per_sender[entry.sender] = left
            else:
                del self._per_sender[entry.sender]
        return True

    def expire(self, now: float) -> int:
        """Drop every expired entry; returns how many."""
        dead = [key for key, entry in self._entries.items() if entry.expires_at <= now]
        for key in dead:
            self.remove(key)
        return len(dead)

    def items(self, now: float) -> list[tuple[bytes, bytes]]:
        """Every live ``(key, value)``."""
        self.expire(now)
        return [(key, entry.value) for key, entry in self._entries.items()]


# ---------------------------------------------------------------------------------------------
# routing table
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    contact: Contact
    failures: int = 0


class Bucket:
    """A k-bucket: ids in ``[low, high]``, live contacts oldest first, and replacements."""

    def __init__(self, low: int, high: int, now: float) -> None:
        self.low = low
        self.high = high
        self.slots: OrderedDict[bytes, _Slot] = OrderedDict()
        self.replacements: OrderedDict[bytes, Contact] = OrderedDict()
        self.last_lookup = now
        self.next_ping_at = 0.0

    def __len__(self) -> int:
        return len(self.slots)

    def covers(self, int_id: int) -> bool:
        return self.low <= int_id <= self.high

    def contacts(self) -> list[Contact]:
        return [slot.contact for slot in self.slots.values()]

    def depth(self) -> int:
        """Bits shared by every id in the bucket (the paper's bucket depth, §4.2)."""
        ids = [slot.contact.int_id for slot in self.slots.values()]
        if not ids:
            return 0
        return ID_BITS - (min(ids) ^ max(ids)).bit_length()


@dataclass(frozen=True, slots=True)
class Touched:
    """Result of :meth:`RoutingTable.touch`.

    Attributes:
        added: the contact was not live in the table and now is (the only case to welcome).
        ping: the head of a full bucket to ping (its answer keeps it; its failure makes room).
    """

    added: bool
    ping: Contact | None = None


class RoutingTable:
    """Kademlia k-buckets (paper §2.2, §2.4, §4.2), sans-IO.

    Args:
        own_id: this node's id (never stored in the table).
        ksize: contacts per bucket.
        max_failures: consecutive failed RPCs before a contact is evicted.
        ping_interval: minimum time between two pings of a bucket's head.
        replacement_factor: a bucket keeps ``ksize * replacement_factor`` replacements.
        depth_modulus: the paper's *b*: a bucket not covering our id is still split while its
            depth is not a multiple of b (keeps the unbalanced-tree case working).
        now: creation time (buckets count as looked-up then).
    """

    def __init__(
        self,
        own_id: bytes,
        ksize: int = 20,
        *,
        max_failures: int = 2,
        ping_interval: float = 2.0,
        replacement_factor: int = 5,
        depth_modulus: int = 5,
        now: float = 0.0,
    ) -> None:
        if not is_node_id(own_id):
            raise ValueError("own_id must be 20 bytes")
        self.own_id = own_id
        self.own_int = int.from_bytes(own_id, "big")
        self.ksize = ksize
        self.max_failures = max_failures
        self.ping_interval = ping_interval
        self.max_replacements = ksize * replacement_factor
        self.depth_modulus = depth_modulus
        self.buckets: list[Bucket] = [Bucket(0, 2**ID_BITS - 1, now)]
        self._highs: list[int] = [2**ID_BITS - 1]

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets)

    def __contains__(self, node_id: object) -> bool:
        if not is_node_id(node_id):
            return False
        assert isinstance(node_id, bytes)
        return node_id in self.bucket_for(node_id).slots

    def bucket_for(self, node_id: bytes | int) -> Bucket:
        int_id = node_id if isinstance(node_id, int) else int.from_bytes(node_id, "big")
        # ranges are inclusive and contiguous: the first bucket whose high end >= id
        return self.buckets[bisect_left(self._highs, int_id)]

    def contacts(self) -> list[Contact]:
        return [c for b in self.buckets for c in b.contacts()]

    def get(self, node_id: bytes) -> Contact | None:
        slot = self.bucket_for(node_id).slots.get(node_id)
        return slot.contact if slot else None

    def touch(self, contact: Contact, now: float) -> Touched:
        """Record that ``contact`` sent us a valid message or answered one of ours.

        A known contact moves to its bucket's tail and its failure count is reset; a new one is
        added if its bucket has room or can be split, else parked in the replacements (and the
        bucket's head, the least recently seen, is offered for a ping).
        """
        if contact.node_id == self.own_id:
            return Touched(False)
        while True:
            bucket = self.bucket_for(contact.int_id)
            slot = bucket.slots.get(contact.node_id)
            if slot is not None:
                if slot.contact.address != contact.address:
                    if slot.failures == 0:
                        # An id seen at a new address while the old one answers: keep the
                        # old one (an id is no proof of identity).
                        return Touched(False)
                    slot.contact = contact
                slot.failures = 0
                bucket.slots.move_to_end(contact.node_id)
                return Touched(False)
            if len(bucket.slots) < self.ksize:
                bucket.replacements.pop(contact.node_id, None)
                bucket.slots[contact.node_id] = _Slot(contact)
                return Touched(True)
            if bucket.covers(self.own_int) or bucket.depth() % self.depth_modulus != 0:
                self._split(bucket, now)
                continue
            bucket.replacements.pop(contact.node_id, None)
            bucket.replacements[contact.node_id] = contact
            while len(bucket.replacements) > self.max_replacements:
                bucket.replacements.popitem(last=False)
            if now >= bucket.next_ping_at:
                bucket.next_ping_at = now + self.ping_interval
                return Touched(False, next(iter(bucket.slots.values())).contact)
            return Touched(False)

    def _split(self, bucket: Bucket, now: float) -> None:
        index = self.buckets.index(bucket)
        middle = (bucket.low + bucket.high) // 2
        lower = Bucket(bucket.low, middle, bucket.last_lookup)
        upper = Bucket(middle + 1, bucket.high, bucket.last_lookup)
        for node_id, slot in bucket.slots.items():
            (lower if slot.contact.int_id <= middle else upper).slots[node_id] = slot
        for node_id, contact in bucket.replacements.items():
            half = lower if contact.int_id <= middle else upper
            if len(half.slots) < self.ksize:
                half.slots[node_id] = _Slot(contact)
            else:
                half.replacements[node_id] = contact
        self.buckets[index : index + 1] = [lower, upper]
        self._highs[index : index + 1] = [middle, bucket.high]

    def failed(self, node_id: bytes, now: float) -> Contact | None:
        """Record a failed RPC (after its retries) to ``node_id``.

        Returns:
            the replacement promoted into the table when the contact was evicted, else None.
        """
        bucket = self.bucket_for(node_id)
        if bucket.replacements.pop(node_id, None) is not None:
            return None
        slot = bucket.slots.get(node_id)
        if slot is None:
            return None
        slot.failures += 1
        if slot.failures < self.max_failures:
            return None
        return self.remove(node_id)

    def remove(self, node_id: bytes) -> Contact | None:
        """Evict ``node_id``; returns the replacement promoted in its place, if any."""
        bucket = self.bucket_for(node_id)
        bucket.replacements.pop(node_id, None)
        if bucket.slots.pop(node_id, None) is None or not bucket.replacements:
            return None
        promoted_id, promoted = bucket.replacements.popitem(last=True)  # most recently seen
        bucket.slots[promoted_id] = _Slot(promoted)
        return promoted

    def closest(
        self,
        target: bytes | int,
        k: int | None = None,
        exclude: bytes | None = None,
        family: int | None = None,
    ) -> list[Contact]:
        """The ``k`` known contacts closest to ``target`` by XOR distance, closest first.

        Every bucket is considered (the stock ``TableTraverser`` could stop early and answer
        nothing although the table was full: upstream #51/#28). With ``family`` (4 or 6) only
        contacts of that address family are returned.
        """
        t = target if isinstance(target, int) else int.from_bytes(target, "big")
        k = k or self.ksize
        # Buckets come from halving splits, so each is the set of ids with one prefix: the XOR
        # distances from t to one bucket form an aligned interval, and the intervals of two
        # buckets never overlap. Visiting buckets by their smallest distance and sorting inside
        # each gives the exact order while touching only the few buckets needed.
        order = sorted(
            (((b.low ^ t) & ~(b.high - b.low), i) for i, b in enumerate(self.buckets) if b.slots)
        )
        out: list[Contact] = []
        buckets = self.buckets
        for _, index in order:
            found = [
                slot.contact
                for slot in buckets[index].slots.values()
                if slot.contact.node_id != exclude
                and (family is None or slot.contact.family == family)
            ]
            found.sort(key=lambda c: c.int_id ^ t)
            out.extend(found)
            if len(out) >= k:
                return out[:k]
        return out

    def mark_lookup(self, target: bytes, now: float) -> None:
        """A lookup for ``target`` happened: its bucket needs no refresh for a while."""
        self.bucket_for(target).last_lookup = now

    def stale_targets(self, now: float, interval: float, rng: random.Random) -> list[bytes]:
        """One random id in each bucket with no lookup for ``interval`` s (paper §2.3)."""
        return [
            random_id_in_range(b.low, b.high, rng)
            for b in self.buckets
            if b.last_lookup <= now - interval
        ]


def join_refresh_targets(
    own_id: bytes,
    nearest: bytes | None,
    rng: random.Random,
    known: Iterable[Contact] = (),
    enough: int = 0,
) -> list[bytes]:
    """Ids a joining node looks up, after its own, to fill the buckets farther than its
    nearest neighbour (paper §2.3: "refreshes all k-buckets further away than its closest
    neighbor").

    For each prefix length ``p`` shorter than the one shared with ``nearest``, a random id
    sharing exactly ``p`` leading bits with ``own_id``: one id per distance range, skipping
    ranges where ``known`` already has ``enough`` contacts (when ``enough`` > 0).
    """
    if nearest is None:
        return []
    own = int.from_bytes(own_id, "big")
    shared = ID_BITS - (own ^ int.from_bytes(nearest, "big")).bit_length()
    per_range: dict[int, int] = {}
    for c in known:
        p = ID_BITS - (own ^ c.int_id).bit_length()
        per_range[p] = per_range.get(p, 0) + 1
    targets = []
    for p in range(min(shared, ID_BITS)):
        if enough and per_range.get(p, 0) >= enough:
            continue
        bit = ID_BITS - 1 - p
        low_bits = rng.getrandbits(bit) if bit else 0
        target = ((own >> (bit + 1)) << (bit + 1)) | ((~own >> bit & 1) << bit) | low_bits
        targets.append(target.to_bytes(ID_BYTES, "big"))
    return targets


def handover(
    table: RoutingTable, newcomer: Contact, items: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The stored values a newly added contact should receive (paper §2.5).

    A value goes to ``newcomer`` when it is closer to the key than the k-th closest contact
    we know (or we know fewer than k) and this node is closer to the key than every contact
    it knows, so only one holder sends. Keys are the stored 160-bit keys, not hashed again
    (the stock ``welcome_if_new`` hashed them a second time: 3/30 values handed over).
    """
    own = table.own_int
    newcomer_id = newcomer.node_id
    out = []
    for key, value in items:
        k_int = int.from_bytes(key, "big")
        ours = own ^ k_int
        # Buckets are prefix blocks: when the key's own bucket holds a contact, the closest
        # contact to the key is in it. Most keys are decided here, without closest().
        bucket = table.bucket_for(k_int)
        if any(
            (slot.contact.int_id ^ k_int) <= ours
            for node, slot in bucket.slots.items()
            if node != newcomer_id
        ):
            continue  # a contact we know is closer to the key: it hands the value over
        neighbours = table.closest(k_int, exclude=newcomer_id)
        if neighbours:
            if (own ^ k_int) >= neighbours[0].int_id ^ k_int:
                continue
            if len(neighbours) >= table.ksize and (
                newcomer.int_id ^ k_int >= neighbours[-1].int_id ^ k_int
            ):
                continue
        out.append((key, value))
    return out


# ---------------------------------------------------------------------------------------------
# iterative lookup
# ---------------------------------------------------------------------------------------------


class _Query(enum.Enum):
    PENDING = "pending"  # known, not asked yet
    WAITING = "waiting"  # asked, no answer yet
    SLOW = "slow"  # asked, first send timed out: out of consideration unless it answers
    ANSWERED = "answered"
    FAILED = "failed"


class Lookup:
    """One iterative node or value lookup (paper §2.3), sans-IO.

    Drive it with :meth:`next_queries` (contacts to ask now), then :meth:`answered`,
    :meth:`failed` or :meth:`slow` per contact, until :attr:`done`. At most ``alpha`` queries
    are waiting at once; a slow contact frees its slot. Once ``alpha`` answers (or slow
    contacts) in a row brought no contact closer than the closest known, every contact not yet
    asked among the ``k`` closest is asked at once (paper §2.3: "the initiator resends the
    FIND_NODE to all of the k closest nodes it has not already queried"), so dead contacts
    cost one timeout, not one per ``alpha`` of them. The lookup ends when the ``k`` closest
    contacts not failed or slow have all answered.

    A value lookup does not stop at the first value (a stale or forged copy must not win):
    :attr:`values` holds every ``(contact, value)`` answered, so readers merge them. With
    ``value_quorum`` it ends as soon as that many values passed ``value_check`` (the reader's
    own verification, e.g. signatures): the closest replicas answer first, so this reads the
    newest record at the cost of a few RPCs instead of all ``k``.

    Args:
        target: the 20-byte id looked up.
        seeds: contacts to start from (usually the routing table's closest).
        own_id: our id (never asked).
        ksize: width of the result.
        alpha: queries in flight at once.
        value_quorum: end once this many checked values were answered (None: full lookup).
        value_check: ``value_check(value) -> bool``; values failing it are kept in
            :attr:`values` but do not count towards the quorum. Default: every value counts.
        skip: ``skip(contact) -> True`` for suspects (their last first send timed out): asked
            at once but never waited for, as if already slow.
        local_value: a copy this node holds itself (counts towards the quorum when it checks).
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        own_id: bytes,
        ksize: int = 20,
        alpha: int = 3,
        value_quorum: int | None = None,
        value_check: Callable[[bytes], bool] | None = None,
        skip: Callable[[Contact], bool] | None = None,
        local_value: bytes | None = None,
    ) -> None:
        self.target = target
        self._t = int.from_bytes(target, "big")
        self.own_id = own_id
        self.ksize = ksize
        self.alpha = alpha
        self.value_quorum = value_quorum
        self._check = value_check
        self._skip = skip
        self._state: dict[bytes, _Query] = {}
        self._contacts: dict[bytes, Contact] = {}
        self._depth: dict[bytes, int] = {}
        self._order: list[tuple[int, bytes]] = []  # (distance, id), kept sorted
        self.values: list[tuple[Contact, bytes]] = []
        #: values that passed ``value_check`` (the local copy included)
        self.good_values = 0
        #: RPCs sent (contacts asked)
        self.queries = 0
        #: answers received
        self.answers = 0
        self._value_hops: int | None = None
        self._stale_answers = 0  # answers in a row that found nobody closer
        self._probes: list[Contact] = []  # suspects to ask without waiting for them
        self._outstanding_slow = 0  # slow contacts (and probes) that may still answer
        if local_value is not None and self._passes(local_value):
            self.good_values += 1
            self._value_hops = 0
        self._add(seeds, 1)

    def _passes(self, value: bytes) -> bool:
        if self._check is None:
            return True
        try:
            return bool(self._check(value))
        except Exception:  # a value from a peer that chokes the checker does not count
            return False

    def _add(self, contacts: Iterable[Contact], depth: int) -> bool:
        """Add new candidates; True when one is closer than every candidate known before."""
        best = self._order[0][0] if self._order else None
        closer = False
        added = False
        for c in contacts:
            node_id = c.node_id
            if node_id == self.own_id or node_id in self._state:
                continue
            self._contacts[node_id] = c
            self._depth[node_id] = depth
            distance = c.int_id ^ self._t
            self._order.append((distance, node_id))
            if self._skip is not None and self._skip(c):
                # A suspect (its last first-send timed out) is asked without being waited
                # for, like a slow contact: if it is alive its answer still counts, and a
                # lossy link does not cut a node off from the few contacts it has.
                self._state[node_id] = _Query.SLOW
                self._probes.append(c)
                continue
            self._state[node_id] = _Query.PENDING
            added = True
            closer = closer or best is None or distance < best
        if added:
            self._order.sort()
        return closer

    def _window(self) -> list[bytes]:
        """The ``k`` closest contacts still in consideration."""
        window = []
        state = self._state
        for _, node_id in self._order:
            if state[node_id] is not _Query.FAILED and state[node_id] is not _Query.SLOW:
                window.append(node_id)
                if len(window) == self.ksize:
                    break
        return window

    def next_queries(self) -> list[Contact]:
        """Contacts to ask now (marked waiting)."""
        if self.done:
            return []
        out: list[Contact] = []
        if self._probes:
            out.extend(self._probes)
            self._outstanding_slow += len(self._probes)
            self._probes = []
        waiting = sum(1 for s in self._state.values() if s is _Query.WAITING)
        limit = self.ksize if self._stale_answers >= self.alpha else self.alpha
        for node_id in self._window():
            if waiting >= limit:
                break
            if self._state[node_id] is _Query.PENDING:
                self._state[node_id] = _Query.WAITING
                out.append(self._contacts[node_id])
                waiting += 1
        self.queries += len(out)
        return out

    @property
    def done(self) -> bool:
        if self.value_quorum is not None and self.good_values >= self.value_quorum:
            return True
        window = self._window()
        if not window:
            # nothing better to wait for: keep waiting for slow contacts that may answer
            return self._outstanding_slow == 0 and not self._probes
        return all(self._state[i] is _Query.ANSWERED for i in window)

    @property
    def hops(self) -> int:
        """Sequential RPC rounds to the result: a seed is 1 hop, a contact it named 2, ...

        For a value lookup, the hops to the first checked value (0 when we hold it); else to
        the closest contact that answered (0 when none did).
        """
        if self._value_hops is not None:
            return self._value_hops
        for _, node_id in self._order:
            if self._state[node_id] is _Query.ANSWERED:
                return self._depth[node_id]
        return 0

    def answered(
        self, node_id: bytes, contacts: Iterable[Contact] = (), value: bytes | None = None
    ) -> None:
        """``node_id`` answered with closer ``contacts`` and/or a ``value``."""
        state = self._state.get(node_id)
        if state is not _Query.WAITING and state is not _Query.SLOW:
            return
        if state is _Query.SLOW:
            self._outstanding_slow -= 1
        self._state[node_id] = _Query.ANSWERED
        self.answers += 1
        depth = self._depth[node_id]
        if value is not None:
            self.values.append((self._contacts[node_id], value))
            if self._passes(value):
                self.good_values += 1
                if self._value_hops is None:
                    self._value_hops = depth
        if self._add(contacts, depth + 1):
            self._stale_answers = 0
        else:
            self._stale_answers += 1

    def failed(self, node_id: bytes) -> None:
        """``node_id`` did not answer (after retries) or answered nonsense."""
        state = self._state.get(node_id)
        if state is _Query.SLOW:
            self._outstanding_slow -= 1
        if state in (_Query.WAITING, _Query.SLOW, _Query.PENDING):
            self._state[node_id] = _Query.FAILED

    def slow(self, node_id: bytes) -> None:
        """The first send to ``node_id`` timed out: stop waiting for it (it may still answer)."""
        if self._state.get(node_id) is _Query.WAITING:
            self._state[node_id] = _Query.SLOW
            self._outstanding_slow += 1
            self._stale_answers += 1

    def nearest(self) -> list[Contact]:
        """The ``k`` closest contacts known that did not fail (answered, slow or not asked),
        closest first: where the key's replicas should be."""
        out = []
        for _, node_id in self._order:
            if self._state[node_id] is not _Query.FAILED:
                out.append(self._contacts[node_id])
                if len(out) == self.ksize:
                    break
        return out

    def closest(self) -> list[Contact]:
        """The ``k`` closest contacts that answered, closest first."""
        out = []
        for _, node_id in self._order:
            if self._state[node_id] is _Query.ANSWERED:
                out.append(self._contacts[node_id])
                if len(out) == self.ksize:
                    break
        return out


class RttEstimator:
    """Smoothed round-trip time and retransmission timeout (RFC 6298 §2), sans-IO.

    The first send of an RPC waits :attr:`timeout` before the lookup stops waiting for the
    contact and resends: on a LAN or loopback that is a few milliseconds instead of a fixed
    half second, so a vanished contact costs little; on the Internet it follows the paths'
    RTTs. Only answers to a first send are sampled (Karn's rule, RFC 6298 §3).

    Args:
        initial: the timeout before any sample (RFC 6298 §2.1 says 1 s; the DHT's
            ``rpc_timeout``).
        minimum: lower bound of the timeout (RFC 6298 §2.4 says 1 s for TCP; a datagram RPC
            whose late answer still counts can afford less).
        maximum: upper bound.
    """

    ALPHA = 1 / 8
    BETA = 1 / 4
    K = 4

    def __init__(self, initial: float, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._timeout = min(max(initial, minimum), maximum)

    @property
    def timeout(self) -> float:
        return self._timeout

    def sample(self, rtt: float) -> None:
        """Add one measured round trip (seconds)."""
        if rtt < 0:
            return
        if self.srtt is None:  # §2.2
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:  # §2.3
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt
        self._timeout = min(max(self.srtt + self.K * self.rttvar, self.minimum), self.maximum)


# ---------------------------------------------------------------------------------------------
# routing state files (JSON, never pickle)
# ---------------------------------------------------------------------------------------------

STATE_FORMAT = "p2psip-dht-state"
STATE_VERSION = 1
MAX_STATE_BYTES = 1024 * 1024
MAX_STATE_CONTACTS = 4096


@dataclass(frozen=True)
class RoutingState:
    """What a node remembers across restarts: its id and contacts to bootstrap from."""

    node_id: bytes
    contacts: tuple[Contact, ...] = ()


def encode_state(state: RoutingState) -> str:
    """JSON text of ``state``."""
    return json.dumps(
        {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "node_id": state.node_id.hex(),
            "contacts": [
                {"id": c.node_id.hex(), "host": c.host, "port": c.port} for c in state.contacts
            ],
        },
        indent=1,
    )


def decode_state(text: str | bytes) -> RoutingState:
    """Parse and check a state file's text.

    Raises:
        StateFileError: not JSON, too large, wrong format or version, or any malformed field.
    """
    if len(text) > MAX_STATE_BYTES:
        raise StateFileError(f"state file larger than {MAX_STATE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(f"state file is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise StateFileError(f"not a {STATE_FORMAT} file")
    if data.get("version") != STATE_VERSION:
        raise StateFileError(f"unsupported state version {data.get('version')!r}")
    node_id = _hex_id(data.get("node_id"), "node_id")
    raw_contacts = data.get("contacts")
    if not isinstance(raw_contacts, list) or len(raw_contacts) > MAX_STATE_CONTACTS:
        raise StateFileError(f"contacts must be a list of at most {MAX_STATE_CONTACTS}")
    contacts = []
    for n, raw in enumerate(raw_contacts):
        if not isinstance(raw, dict) or set(raw) != {"id", "host", "port"}:
            raise StateFileError(f"contact {n}: expected an object with id, host, port")
        contact = parse_contact((_hex_id(raw["id"], f"contact {n} id"), raw["host"], raw["port"]))
        if contact is None:
            raise StateFileError(f"contact {n}: bad address {raw['host']!r}:{raw['port']!r}")
        contacts.append(contact)
    return RoutingState(node_id, tuple(contacts))


def _hex_id(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * ID_BYTES:
        raise StateFileError(f"{what}: expected {2 * ID_BYTES} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise StateFileError(f"{what}: not hex") from None
