"""asyncio DHT node: the ``kademlia`` package's ``Server`` with our protocol class and storage.

:class:`DHTNode` is the overlay's Kademlia node. It keeps the package's wire format (rpcudp
datagrams: a type byte, a 20-byte message id, msgpack ``[method, args]``; methods ``ping``,
``store``, ``find_node``, ``find_value``) and its ``Server`` for the socket, and replaces what
``shared/DEPENDENCY_NOTES.md`` found broken. The pure decisions are in
:mod:`p2psip.overlay.dht`; this module sends, waits and schedules:

* :class:`DHTProtocol` (a ``KademliaProtocol``) handles each datagram synchronously inside
  ``datagram_received``: no task per datagram, so a malformed one is counted and dropped
  instead of leaving "Task exception was never retrieved"; only the four RPCs are dispatched,
  with their arity and argument types checked; an answer is accepted only from the address the
  request went to. Requests are resent ``rpc_retries`` times every ``rpc_timeout`` (0.5 s, not
  the package's fixed 5 s) with the same message id; message ids come from the injected RNG.
* STORE answers True only when our :class:`~p2psip.overlay.dht.ValueStore` (validator, sizes,
  per-sender limit) accepted, so :meth:`DHTNode.set` counts real replicas (the stock ``set``
  returned True when every peer refused, a refusal being a truthy tuple).
* No holder republishing: the stock ``Server`` re-stored every held key every hour, which reset
  the TTL forever and let stale copies overwrite newer ones. A value lives on through its
  publisher's refreshes and through handovers to newly added close nodes; storing nodes
  validate every write (newest ``seq`` wins), so even a stale republish could not win.
* Routing state is saved as JSON (:meth:`DHTNode.save_state`), never pickled.

Address families follow the listen address: a node on an IPv4 address speaks IPv4 only, one
on an IPv6 address IPv6 only (contacts of the other family are dropped), and one listening on
``::`` is dual-stack: one IPv6 socket with ``IPV6_V6ONLY`` off reaches IPv4 peers through
IPv4-mapped addresses, keeps contacts of both families, and answers an IPv4 requester with
IPv4 contacts only (it could not use the others).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import msgpack
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from p2psip.overlay.dht import (
    ID_BYTES,
    MAX_STATE_BYTES,
    MAX_STATE_CONTACTS,
    Contact,
    DHTConfig,
    DHTStats,
    Lookup,
    PublishError,
    ReadValidator,
    RoutingState,
    RoutingTable,
    RttEstimator,
    StateFileError,
    StoreValidator,
    ValueStore,
    accept_any,
    decode_state,
    dht_key,
    encode_state,
    handover,
    is_node_id,
    join_refresh_targets,
    newest_bytes,
    normalise_host,
    parse_contact,
)

__all__ = ["DHTNode", "DHTProtocol"]

logger = logging.getLogger(__name__)

_REQUEST = 0x00
_RESPONSE = 0x01
_HEADER = 1 + ID_BYTES
#: rpcudp refuses to send a packed request over 8192 bytes; answers are bounded the same way
MAX_PAYLOAD = 8192
#: method -> number of arguments (the requester's node id included)
_ARITY = {"ping": 1, "store": 3, "find_node": 2, "find_value": 2}
_MAX_WELCOMED = 10_000
#: upper bound of one packed (id, ip, port) triple: 22 + 41 + 3 bytes, plus array header
_CONTACT_WIRE_BYTES = 70


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> object:
    # The C msgpack codec (same wire format as rpcudp's u-msgpack: str as str, bytes as bin)
    # at a tenth of the pure-Python cost. Sizes are bounded by the datagram already.
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)


class _Drop:
    """A request to leave unanswered (malformed)."""


_DROP = _Drop()
_CLOSED = object()  # what a pending RPC gets when the socket closes


def _host_family(host: str) -> int:
    return 6 if ipaddress.ip_address(host.split("%", 1)[0]).version == 6 else 4


class DHTProtocol(KademliaProtocol):
    """Our ``KademliaProtocol``: validated RPCs, retries, our routing table and storage.

    Args:
        node: the owning :class:`DHTNode` (its config, storage, routing table, RNG and clock).
    """

    def __init__(self, node: DHTNode) -> None:
        super().__init__(Node(node.node_id), node.storage, node.config.ksize)
        # KademliaProtocol built the stock RoutingTable, whose TableTraverser can find no
        # neighbours in a full table (upstream #51/#28): ours replaces it.
        self.router = node.router  # type: ignore[assignment]
        self._node = node
        self._config = node.config
        self._wait_timeout = node.config.rpc_timeout
        self._outstanding: dict[bytes, tuple[asyncio.Future[Any], tuple[str, int]]] = {}

    def __getattr__(self, name: str) -> Any:
        # rpcudp turns any unknown attribute into a remote call: here a typo stays a typo.
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- datagrams ------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._receive(data, addr)
        except Exception:  # peer misbehaviour never escapes (no task, no unretrieved error)
            self._node.stats.malformed_datagrams += 1
            logger.debug("dropped a malformed datagram from %s", addr, exc_info=True)

    def _receive(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not _HEADER < len(data) <= _HEADER + MAX_PAYLOAD:
            self._node.stats.malformed_datagrams += 1
            return
        kind, msg_id = data[0], data[1:_HEADER]
        if kind == _RESPONSE:
            pending = self._outstanding.get(msg_id)
            if pending is None:
                return  # late or stray answer
            future, expected = pending
            if (addr[0], addr[1]) != expected and (
                normalise_host(addr[0]) != expected[0] or addr[1] != expected[1]
            ):
                return  # an answer must come from where the request went
            payload = _unpack(data[_HEADER:])
            if not future.done():
                future.set_result(payload)
        elif kind == _REQUEST:
            answer = self._dispatch(_unpack(data[_HEADER:]), addr)
            if answer is _DROP:
                self._node.stats.malformed_datagrams += 1
                return
            packed = _pack(answer)
            if len(packed) <= MAX_PAYLOAD and self.transport is not None:
                self.transport.sendto(bytes([_RESPONSE]) + msg_id + packed, addr)
        else:
            self._node.stats.malformed_datagrams += 1

    def _dispatch(self, payload: object, addr: tuple[Any, ...]) -> object:
        if not (
            isinstance(payload, list)
            and len(payload) == 2
            and isinstance(payload[0], str)
            and isinstance(payload[1], list)
        ):
            return _DROP
        method, args = payload
        if _ARITY.get(method) != len(args) or not is_node_id(args[0]):
            return _DROP
        host = normalise_host(addr[0])
        if host is None:
            return _DROP
        self._node.stats.requests_received += 1
        handler = getattr(self, f"rpc_{method}")
        return handler((host, addr[1]), *args)

    def error_received(self, exc: Exception) -> None:
        logger.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        # Pending RPCs end as "no answer" (not CancelledError, which would hit the caller of
        # set() whose STOREs run in its own task).
        for future, _ in self._outstanding.values():
            if not future.done():
                future.set_result(_CLOSED)
        self._outstanding.clear()

    # -- RPC handlers (sender is a normalised (ip, port); nodeid checked by _dispatch) --------

    def _sender(self, sender: tuple[str, int], nodeid: bytes) -> Contact:
        contact = Contact(nodeid, sender[0], sender[1])
        self._seen(contact)
        return contact

    def rpc_ping(self, sender: tuple[str, int], nodeid: bytes) -> bytes:
        self._sender(sender, nodeid)
        return self._node.node_id

    def rpc_store(self, sender: tuple[str, int], nodeid: bytes, key: object, value: object) -> bool:
        self._sender(sender, nodeid)
        decision = self._node.storage.offer(key, value, self._node.clock(), sender=sender)
        if decision.accepted:
            self._node.stats.stores_accepted += 1
        else:
            self._node.stats.stores_refused += 1
            logger.debug("STORE from %s: %s", sender, decision.value)
        return decision.accepted

    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: bytes, key: object
    ) -> list[tuple[bytes, str, int]] | _Drop:
        if not is_node_id(key):
            return _DROP
        assert isinstance(key, bytes)
        self._sender(sender, nodeid)
        family = self._node.answer_family(sender)
        return [c.to_wire() for c in self.router.closest(key, exclude=nodeid, family=family)]

    def rpc_find_value(
        self, sender: tuple[str, int], nodeid: bytes, key: object
    ) -> dict[str, Any] | list[tuple[bytes, str, int]] | _Drop:
        if not is_node_id(key):
            return _DROP
        assert isinstance(key, bytes)
        self._sender(sender, nodeid)
        value = self._node.storage.get(key, self._node.clock())
        family = self._node.answer_family(sender)
        closest = [c.to_wire() for c in self.router.closest(key, exclude=nodeid, family=family)]
        if value is None:
            return closest
        # Readers collect every replica, so a holder also names its closest contacts (the
        # stock answer had the value only, and a lookup could not get past the holders).
        # Stock readers only read "value". Dropped when the datagram would be too large.
        if len(value) + _CONTACT_WIRE_BYTES * len(closest) <= MAX_PAYLOAD - 64:
            return {"value": value, "nodes": closest}
        return {"value": value}

    # -- routing-table upkeep -------------------------------------------------------------

    def _seen(self, contact: Contact) -> None:
        if not self._node.reachable(contact.family):
            return
        if self._node._suspects:
            self._node._suspects.pop(contact.address, None)
        touched = self.router.touch(contact, self._node.clock())
        if touched.added:
            self._node._welcome(contact)
        if touched.ping is not None:
            self._node._spawn(self._ping_head(touched.ping))

    def welcome_if_new(self, node: Contact) -> None:  # type: ignore[override]
        """Stock name: a contact was heard from (see :meth:`RoutingTable.touch`)."""
        self._seen(node)

    def handle_call_response(  # type: ignore[override]
        self, result: tuple[bool, Any], node: Contact
    ) -> tuple[bool, Any]:
        if result[0]:
            self._seen(node)
        else:
            self._rpc_failed(node)
        return result

    def _rpc_failed(self, contact: Contact) -> None:
        promoted = self.router.failed(contact.node_id, self._node.clock())
        if contact.node_id not in self.router:
            self._node.stats.contacts_evicted += 1
        if promoted is not None:
            self._node._welcome(promoted)

    async def _ping_head(self, contact: Contact) -> None:
        # A full bucket's least recently seen contact: an answer keeps it, failures make room.
        await self.call_ping(contact)

    def get_refresh_ids(self) -> list[bytes]:
        return self.router.stale_targets(
            self._node.clock(), self._config.refresh_interval, self._node.rng
        )

    # -- RPC client -----------------------------------------------------------------------

    async def request(
        self,
        address: tuple[str, int],
        method: str,
        args: Iterable[object],
        on_slow: Callable[[], None] | None = None,
    ) -> tuple[bool, Any]:
        """Send one RPC, resending it ``rpc_retries`` times every ``rpc_timeout`` seconds.

        Args:
            address: the peer's ``(ip, port)``.
            method: ``ping``, ``store``, ``find_node`` or ``find_value``.
            args: the arguments after none (our node id is not added here).
            on_slow: called once when the first send timed out.

        Returns:
            ``(True, answer)`` or ``(False, None)`` when no answer came.
        """
        packed = _pack([method, list(args)])
        if len(packed) > MAX_PAYLOAD:
            raise ValueError(f"{method} request of {len(packed)} bytes exceeds {MAX_PAYLOAD}")
        rng = self._node.rng
        msg_id = rng.randbytes(ID_BYTES)
        while msg_id in self._outstanding:
            msg_id = rng.randbytes(ID_BYTES)
        datagram = bytes([_REQUEST]) + msg_id + packed
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outstanding[msg_id] = (future, address)
        stats = self._node.stats
        loop = asyncio.get_running_loop()
        node = self._node
        try:
            for attempt in range(1 + self._config.rpc_retries):
                if self.transport is None or self.transport.is_closing():
                    break
                sent_at = loop.time()
                self.transport.sendto(datagram, node.wire_address(address))
                if attempt:
                    stats.retransmissions += 1
                    wait = self._config.rpc_timeout
                else:
                    stats.requests_sent += 1
                    wait = node.rtt.timeout
                done, _ = await asyncio.wait((future,), timeout=wait)
                if done:
                    answer = future.result()
                    if answer is _CLOSED:
                        break
                    if attempt == 0:  # Karn: only an answer to a single send is a sample
                        node.rtt.sample(loop.time() - sent_at)
                    return (True, answer)
                if attempt == 0:
                    node._suspect(address)
                    if on_slow is not None:
                        on_slow()
        finally:
            self._outstanding.pop(msg_id, None)
        stats.rpc_failures += 1
        return (False, None)

    async def call_ping(self, node_to_ask: Contact) -> tuple[bool, Any]:  # type: ignore[override]
        result = await self.request(node_to_ask.address, "ping", (self._node.node_id,))
        return self.handle_call_response(result, node_to_ask)

    async def ping_address(self, address: tuple[str, int]) -> Contact | None:
        """Ping an address whose node id we do not know (bootstrap)."""
        ok, answer = await self.request(address, "ping", (self._node.node_id,))
        if not ok or not is_node_id(answer):
            return None
        contact = Contact(answer, address[0], address[1])
        self._seen(contact)
        return contact

    async def call_store(  # type: ignore[override]
        self, node_to_ask: Contact, key: bytes, value: bytes
    ) -> bool | None:
        """STORE on a contact: True accepted, False refused, None no answer."""
        result = await self.request(node_to_ask.address, "store", (self._node.node_id, key, value))
        ok, answer = self.handle_call_response(result, node_to_ask)
        if not ok:
            return None
        return answer is True

    async def call_find(
        self,
        node_to_ask: Contact,
        target: bytes,
        find_value: bool,
        on_slow: Callable[[], None] | None = None,
    ) -> tuple[bool, list[Contact], bytes | None]:
        """FIND_NODE or FIND_VALUE: ``(answered, closer contacts, value)``."""
        method = "find_value" if find_value else "find_node"
        ok, answer = await self.request(
            node_to_ask.address, method, (self._node.node_id, target), on_slow
        )
        if not ok:
            self._rpc_failed(node_to_ask)
            return (False, [], None)
        self._seen(node_to_ask)
        value = None
        if find_value and isinstance(answer, dict):
            value = answer.get("value")
            if (
                not isinstance(value, bytes)
                or len(value) > self._node.storage.limits.max_value_bytes
            ):
                value = None
            answer = answer.get("nodes")
        if not isinstance(answer, list):
            return (True, [], value)
        family = None if self._node.dual_stack else self._node.family
        found = (parse_contact(raw, family) for raw in answer[: 2 * self._config.ksize])
        return (True, [c for c in found if c is not None], value)

    async def call_find_node(self, node_to_ask: Any, node_to_find: Any) -> Any:
        raise NotImplementedError("use call_find(): the stock crawlers are not used")

    async def call_find_value(self, node_to_ask: Any, node_to_find: Any) -> Any:
        raise NotImplementedError("use call_find(): the stock crawlers stop at the first value")


class _KademliaServer(Server):
    """The package's ``Server`` for the socket; its other entry points go to :class:`DHTNode`."""

    protocol_class = DHTProtocol

    def __init__(self, node: DHTNode) -> None:
        super().__init__(
            ksize=node.config.ksize,
            alpha=node.config.alpha,
            node_id=node.node_id,
            storage=node.storage,
        )
        self._dht = node

    def _create_protocol(self) -> DHTProtocol:
        return DHTProtocol(self._dht)

    async def listen_socket(self, sock: socket.socket) -> None:
        """:meth:`listen` on a socket we bound ourselves (dual stack)."""
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            self._create_protocol, sock=sock
        )

    def refresh_table(self, interval: int = 3600) -> None:
        # The stock hourly refresh re-stores every held key from every holder (stale copies
        # overwrite newer ones; at 1,000 nodes it cost ~5x the whole join): DHTNode refreshes
        # buckets itself and leaves re-publishing to each value's publisher.
        return None

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> Any:
        return await self._dht.bootstrap(addrs)

    async def get(self, key: Any) -> bytes | None:
        return await self._dht.get(key)

    async def set(self, key: Any, value: Any) -> int:
        return await self._dht.set(key, value)

    async def set_digest(self, dkey: bytes, value: Any) -> int:
        return await self._dht.set_digest(dkey, value)

    def save_state(self, fname: str) -> None:
        self._dht.save_state(fname)

    @classmethod
    async def load_state(cls, fname: str, port: int, interface: str = "0.0.0.0") -> Any:
        raise NotImplementedError("pickled state is never loaded: use DHTNode.load_state (JSON)")

    def save_state_regularly(self, fname: str, frequency: int = 600) -> None:
        raise NotImplementedError("use DHTNode.save_state (JSON) from your own timer")


class DHTNode:
    """A Kademlia node on one UDP socket.

    Args:
        node_id: 20 bytes; drawn from ``rng`` when omitted.
        config: timers and sizes (:class:`~p2psip.overlay.dht.DHTConfig`).
        validator: decides every write into our storage (a peer's STORE, a handover, our own
            ``set``); the node layer always passes the signed-records validator.
            :func:`~p2psip.overlay.dht.accept_any` (the default) is for tests.
        read_validator: turns the values a lookup collected into ``get``'s answer; default the
            byte-wise greatest (tests); the node layer merges signed records.
        expires_of: optional ``expires_of(value) -> absolute expiry | None`` (clock of ``clock``)
            so stored records go at their own expiry.
        rng: source of the node id, message ids and refresh targets. Default
            ``random.SystemRandom()``; pass a seeded ``random.Random`` only in tests and
            simulations (predictable message ids let an off-path host forge answers).
        clock: wall-clock seconds handed to validators and storage (default ``time.time``).
        read_repair: after a quorum read (which can stop at replicas that all missed an
            update), read every replica in the background and offer each one the values the
            others held. Only for validators that merge monotonically (the signed-records one
            keeps the newest entry per device); with ``accept_any`` the last write would win.
    """

    def __init__(
        self,
        *,
        node_id: bytes | None = None,
        config: DHTConfig | None = None,
        validator: StoreValidator = accept_any,
        read_validator: ReadValidator | None = None,
        expires_of: Callable[[bytes], float | None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        read_repair: bool = False,
    ) -> None:
        self.config = config or DHTConfig()
        self.read_repair = read_repair
        self._repaired: OrderedDict[bytes, float] = OrderedDict()
        self.rng = rng if rng is not None else random.SystemRandom()
        self.clock = clock
        self.node_id = node_id if node_id is not None else self.rng.randbytes(ID_BYTES)
        if not is_node_id(self.node_id):
            raise ValueError("node_id must be 20 bytes")
        self.storage = ValueStore(validator, self.config.limits, expires_of)
        self.router = RoutingTable(
            self.node_id,
            self.config.ksize,
            max_failures=self.config.max_failures,
            ping_interval=self.config.ping_interval,
            now=clock(),
        )
        self.read_validator = read_validator or newest_bytes
        self.stats = DHTStats()
        #: contacts remembered by :meth:`load_state`, used by :meth:`bootstrap_from_state`
        self.saved_contacts: tuple[Contact, ...] = ()
        #: 4 or 6 once listening (6 for a dual-stack node)
        self.family: int | None = None
        #: listening on ``::`` with IPv4-mapped addresses: IPv4 and IPv6 peers
        self.dual_stack = False
        self._server = _KademliaServer(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._welcomed: OrderedDict[bytes, float] = OrderedDict()
        self._handovers = 0
        self._stopped = False
        #: adaptive first-send timeout of our RPCs
        self.rtt = RttEstimator(
            self.config.rpc_timeout, self.config.min_rpc_timeout, self.config.rpc_timeout
        )
        # addresses whose first send timed out -> until when lookups treat them as slow
        self._suspects: OrderedDict[tuple[str, int], float] = OrderedDict()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def protocol(self) -> DHTProtocol:
        if self._server.protocol is None:
            raise RuntimeError("DHTNode is not listening")
        return self._server.protocol

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(ip, port)``."""
        if self._server.transport is None:
            raise RuntimeError("DHTNode is not listening")
        sockname = self._server.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    @property
    def contact(self) -> Contact:
        host, port = self.address
        return Contact(self.node_id, host, port)

    async def listen(self, port: int = 0, host: str = "127.0.0.1") -> tuple[str, int]:
        """Bind the UDP socket (``port=0``: any free port) and start maintenance.

        Args:
            port: UDP port.
            host: an IP literal; its family (4 or 6) is the node's only family, except
                ``::``: a dual-stack node (IPv4 peers through IPv4-mapped addresses).

        Returns:
            the bound ``(ip, port)``.
        """
        self.family = _host_family(host)
        if ipaddress.ip_address(host.split("%", 1)[0]) == ipaddress.IPv6Address("::"):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            except OSError:
                sock.close()
                raise
            self.dual_stack = True
            await self._server.listen_socket(sock)
        else:
            await self._server.listen(port, host)
        sock = self._server.transport.get_extra_info("socket")
        if sock is not None and self.config.socket_buffer:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:  # best effort: the kernel caps it at net.core.rmem_max / wmem_max
                    sock.setsockopt(socket.SOL_SOCKET, option, self.config.socket_buffer)
                except OSError as exc:
                    logger.debug("cannot set socket buffer: %s", exc)
        self._spawn(self._maintain())
        return self.address

    async def stop(self) -> None:
        """Close the socket, cancel in-flight RPCs and every task of this node, and wait."""
        self._stopped = True
        self._server.stop()
        protocol = self._server.protocol
        if protocol is not None:
            protocol.connection_lost(None)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def reachable(self, family: int) -> bool:
        """Whether this node can talk to peers of address ``family`` (4 or 6)."""
        return self.dual_stack or self.family is None or family == self.family

    def wire_address(self, address: tuple[str, int]) -> tuple[str, int]:
        """Where to send a datagram for ``address``: IPv4-mapped on a dual-stack socket."""
        if self.dual_stack and ":" not in address[0]:
            return ("::ffff:" + address[0], address[1])
        return address

    def answer_family(self, sender: tuple[str, int]) -> int | None:
        """Contacts of which family a requester at ``sender`` can use (None: any)."""
        if self.dual_stack and ":" not in sender[0]:
            return 4
        return None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        if self._stopped:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("DHT task failed", exc_info=task.exception())

    async def _maintain(self) -> None:
        config = self.config
        while True:
            await asyncio.sleep(config.maintenance_interval)
            now = self.clock()
            self.storage.expire(now)
            for target in self.router.stale_targets(now, config.refresh_interval, self.rng):
                await self._lookup(target, find_value=False)

    # -- joining --------------------------------------------------------------------------

    async def bootstrap(self, addresses: Iterable[tuple[str, int]]) -> int:
        """Join through known nodes: ping them, look up our own id, then fill far buckets.

        Args:
            addresses: ``(ip, port)`` pairs (IP literals of this node's family).

        Returns:
            how many contacts the routing table holds afterwards.

        Raises:
            ValueError: an address is not an IP literal.
        """
        targets = []
        for host, port in addresses:
            canonical = normalise_host(host)
            if canonical is None:
                raise ValueError(f"bootstrap address {host!r} is not a unicast IP literal")
            if self.reachable(_host_family(canonical)):
                targets.append((canonical, int(port)))
        limit = asyncio.Semaphore(32)

        async def ping(address: tuple[str, int]) -> Contact | None:
            async with limit:
                return await self.protocol.ping_address(address)

        answered: list[Contact] = []
        for _ in range(self.config.bootstrap_rounds):
            # each ping already resends rpc_retries times; a second round makes a joiner
            # isolated by a lossy link (every try lost) a one-in-a-million event at 5 % loss
            answered = [c for c in await asyncio.gather(*map(ping, targets)) if c is not None]
            if answered or not targets:
                break
        if not answered:
            logger.warning("no bootstrap node answered (%d tried)", len(targets))
            return len(self.router)
        await self._lookup(self.node_id, find_value=False)
        await self.refresh_far_buckets()
        return len(self.router)

    async def refresh_far_buckets(self) -> None:
        """Look up one random id per distance range farther than our nearest neighbour.

        A late joiner's far buckets otherwise stay empty until the hourly refresh (stock bug 4).
        Ranges already holding k contacts are skipped; each lookup converges on
        ``join_refresh_width`` nodes only (a few contacts per far bucket is what lookups need;
        incoming traffic fills them further); they run one after the other (run together they
        made answer bursts that overflowed the joining node's socket buffer).
        """
        nearest = self.router.closest(self.node_id, 1)
        targets = join_refresh_targets(
            self.node_id,
            nearest[0].node_id if nearest else None,
            self.rng,
            self.router.contacts(),
            self.config.ksize,
        )
        for target in targets:
            await self._lookup(target, find_value=False, width=self.config.join_refresh_width)

    # -- lookups --------------------------------------------------------------------------

    def _suspect(self, address: tuple[str, int]) -> None:
        """The first send to ``address`` timed out: other lookups ask it without waiting."""
        self._suspects[address] = self.clock() + self.config.suspect_time
        self._suspects.move_to_end(address)
        while len(self._suspects) > _MAX_WELCOMED:
            self._suspects.popitem(last=False)

    def _is_suspect(self, contact: Contact) -> bool:
        until = self._suspects.get(contact.address)
        if until is None:
            return False
        if until < self.clock():
            del self._suspects[contact.address]
            return False
        return True

    async def _lookup(
        self,
        target: bytes,
        *,
        find_value: bool,
        width: int | None = None,
        value_quorum: int | None = None,
        value_check: Callable[[bytes], bool] | None = None,
        local_value: bytes | None = None,
    ) -> Lookup:
        config = self.config
        self.router.mark_lookup(target, self.clock())
        lookup = Lookup(
            target,
            self.router.closest(target),
            own_id=self.node_id,
            ksize=width or config.ksize,
            alpha=config.alpha,
            value_quorum=value_quorum,
            value_check=value_check,
            skip=self._is_suspect if self._suspects else None,
            local_value=local_value,
        )
        events: asyncio.Queue[tuple[str, bytes, list[Contact], bytes | None]] = asyncio.Queue()
        in_flight = 0

        async def ask(contact: Contact) -> None:
            def slow() -> None:
                events.put_nowait(("slow", contact.node_id, [], None))

            outcome: tuple[str, bytes, list[Contact], bytes | None] = (
                "fail",
                contact.node_id,
                [],
                None,
            )
            try:
                answered, contacts, value = await self.protocol.call_find(
                    contact, target, find_value, slow
                )
                if answered:
                    outcome = ("answer", contact.node_id, contacts, value)
            finally:  # also when stop() cancels us: the lookup must not wait forever
                events.put_nowait(outcome)

        while True:
            for contact in lookup.next_queries():
                if self._spawn(ask(contact)) is not None:
                    in_flight += 1
            if lookup.done or in_flight == 0:
                # RPCs still in flight finish in their own tasks (their answers still feed
                # the routing table); the lookup does not wait for them.
                return lookup
            kind, node_id, contacts, value = await events.get()
            if kind == "slow":
                lookup.slow(node_id)
                continue
            in_flight -= 1
            if kind == "answer":
                lookup.answered(node_id, contacts, value)
            else:
                lookup.failed(node_id)

    async def lookup(
        self,
        key: bytes | str,
        *,
        find_value: bool = False,
        quorum: int | None = None,
        check: Callable[[bytes], bool] | None = None,
    ) -> Lookup:
        """One network lookup of ``key``, returned whole (values, hops, queries, closest).

        Args:
            key: application key (hashed with :func:`~p2psip.overlay.dht.dht_key`) or a
                20-byte DHT key.
            find_value: FIND_VALUE instead of FIND_NODE.
            quorum: for a value lookup, stop after this many checked values (default
                ``config.value_quorum``; 0 reads every replica).
            check: the reader's verification of one value (see :class:`Lookup`).
        """
        dkey = dht_key(key)
        if not find_value:
            return await self._lookup(dkey, find_value=False)
        return await self._value_lookup(dkey, quorum, check)

    async def _value_lookup(
        self, dkey: bytes, quorum: int | None, check: Callable[[bytes], bool] | None
    ) -> Lookup:
        quorum = self.config.value_quorum if quorum is None else quorum
        return await self._lookup(
            dkey,
            find_value=True,
            value_quorum=quorum or None,
            value_check=check,
            local_value=self.storage.get(dkey, self.clock()),
        )

    async def find_nodes(self, key: bytes | str) -> list[Contact]:
        """The k closest live nodes to ``key`` (a network lookup)."""
        return (await self._lookup(dht_key(key), find_value=False)).closest()

    async def get_values(
        self,
        key: bytes | str,
        *,
        quorum: int | None = None,
        check: Callable[[bytes], bool] | None = None,
    ) -> list[bytes]:
        """Values of ``key`` held by the closest replicas, our own copy included.

        The lookup does not stop at the first value and does not vote: it ends once
        ``quorum`` values passed ``check`` (default ``config.value_quorum``; 0 reads all k
        replicas) and returns every value it was answered, for the reader to merge.
        """
        dkey = dht_key(key)
        lookup = await self._value_lookup(dkey, quorum, check)
        if self.read_repair and (self.config.value_quorum if quorum is None else quorum):
            self._after_quorum_read(dkey, check, lookup)
        values = [value for _, value in lookup.values]
        local = self.storage.get(dkey, self.clock())
        if local is not None:
            values.append(local)
        return values

    def _after_quorum_read(
        self, dkey: bytes, check: Callable[[bytes], bool] | None, lookup: Lookup
    ) -> None:
        """Read repair (see ``DHTConfig.read_repair_chance``), at most once per key per
        ``read_repair_interval``."""
        disagree = len({v for _, v in lookup.values}) > 1
        if not disagree and self.rng.random() >= self.config.read_repair_chance:
            return
        now = asyncio.get_running_loop().time()
        last = self._repaired.get(dkey)
        if last is not None and now - last < self.config.read_repair_interval:
            return
        self._repaired[dkey] = now
        self._repaired.move_to_end(dkey)
        while len(self._repaired) > _MAX_WELCOMED:
            self._repaired.popitem(last=False)
        # replicas seen disagreeing are repaired from this read; otherwise read them all
        self._spawn(self._repair(dkey, check, lookup if disagree else None))

    async def _repair(
        self, dkey: bytes, check: Callable[[bytes], bool] | None, lookup: Lookup | None
    ) -> None:
        """Offer each replica the values the others hold (only values that pass ``check``:
        forged copies are never spread); their validators keep what is newer. Without a
        ``lookup``, every replica is read first."""
        if lookup is None:
            self.stats.read_repairs += 1
            lookup = await self._value_lookup(dkey, 0, check)
        held = {c.node_id: v for c, v in lookup.values if check is None or check(v)}
        local = self.storage.get(dkey, self.clock())
        distinct = list(dict.fromkeys([*held.values(), *([local] if local else [])]))
        if len(distinct) < 2:
            return
        # every replica the lookup saw holding another value, and the nearest nodes that it
        # did not hear a value from (slow ones included: they may hold the stale copy)
        targets = {c.node_id: c for c, _ in lookup.values}
        targets.update((c.node_id, c) for c in lookup.nearest())
        stores = [
            self.protocol.call_store(contact, dkey, value)
            for node_id, contact in targets.items()
            for value in distinct
            if value != held.get(node_id)
        ]
        if local is not None:  # we are a replica too
            for value in distinct:
                if value != local:
                    self.storage.offer(dkey, value, self.clock())
        self.stats.repair_stores += len(stores)
        await asyncio.gather(*stores, return_exceptions=True)

    async def get(self, key: bytes | str) -> bytes | None:
        """Look ``key`` up in the network and merge what the replicas hold.

        Returns:
            ``read_validator(dht_key(key), values, now)``, or None when no replica answered a
            value (or the read validator refused them all).
        """
        values = await self.get_values(key)
        if not values:
            return None
        try:
            return self.read_validator(dht_key(key), values, self.clock())
        except Exception:  # values come from peers: a validator choking on one is logged
            logger.exception("read validator raised for key %r", key)
            return None

    # -- publishing -----------------------------------------------------------------------

    async def set(self, key: bytes | str, value: bytes) -> int:
        """Store ``value`` under ``key`` on the k nodes closest to ``dht_key(key)``.

        Returns:
            how many replicas really accepted it (this node counts when it is one of the k
            closest and its validator accepted). 0 when nobody did.

        Raises:
            TypeError: ``value`` is not bytes.
            ValueError: ``value`` is larger than ``config.limits.max_value_bytes``.
        """
        if not isinstance(value, bytes):
            raise TypeError(f"DHT values are bytes, not {type(value).__name__}")
        if len(value) > self.config.limits.max_value_bytes:
            raise ValueError(
                f"value of {len(value)} bytes exceeds {self.config.limits.max_value_bytes}"
            )
        return await self.set_digest(dht_key(key), value)

    async def set_digest(self, dkey: bytes, value: bytes) -> int:
        """:meth:`set` with the 20-byte DHT key already computed."""
        if not is_node_id(dkey):
            raise ValueError("a DHT key is 20 bytes")
        lookup = await self._lookup(dkey, find_value=False)
        closest = lookup.closest()
        ksize = self.config.ksize
        target = int.from_bytes(dkey, "big")
        accepted = 0
        # Empty `closest` (every node dead) is fine here: the stock set_digest crashed on
        # max() of an empty list (bug 3).
        own_distance = self.router.own_int ^ target
        closer = sum(1 for c in closest if c.int_id ^ target < own_distance)
        if closer < ksize:
            closest = closest[: ksize - 1]
            if self.storage.offer(dkey, value, self.clock()).accepted:
                accepted += 1
        results = await asyncio.gather(*(self.protocol.call_store(c, dkey, value) for c in closest))
        accepted += sum(1 for r in results if r is True)
        return accepted

    async def publish(self, key: bytes | str, value: bytes, min_replicas: int = 1) -> int:
        """:meth:`set`, failing when fewer than ``min_replicas`` replicas accepted.

        Raises:
            PublishError: with ``accepted`` and ``required``.
        """
        accepted = await self.set(key, value)
        if accepted < min_replicas:
            raise PublishError(dht_key(key), accepted, min_replicas)
        return accepted

    # -- handover to new close nodes --------------------------------------------------------

    def _welcome(self, contact: Contact) -> None:
        """``contact`` was just added to a bucket: hand it the values it should hold now.

        Each contact at most once per ``welcome_interval``; at most ``max_handover_tasks``
        handovers at once (the stock package re-welcomed a peer stuck in a replacement list
        on every message: the store storm).
        """
        if self._stopped or len(self.storage) == 0:
            return
        now = self.clock()
        last = self._welcomed.get(contact.node_id)
        if last is not None and now - last < self.config.welcome_interval:
            return
        if self._handovers >= self.config.max_handover_tasks:
            return
        self._welcomed[contact.node_id] = now
        self._welcomed.move_to_end(contact.node_id)
        while len(self._welcomed) > _MAX_WELCOMED:
            self._welcomed.popitem(last=False)
        items = handover(self.router, contact, self.storage.items(now))
        if items:
            self._handovers += 1
            if self._spawn(self._hand_over(contact, items)) is None:
                self._handovers -= 1

    async def _hand_over(self, contact: Contact, items: list[tuple[bytes, bytes]]) -> None:
        try:
            for key, value in items:
                result = await self.protocol.call_store(contact, key, value)
                if result is None:
                    return  # gone
                self.stats.handover_stores += 1
        finally:
            self._handovers -= 1

    # -- routing state --------------------------------------------------------------------

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write our node id and known contacts (closest first) to ``path`` as JSON, atomically."""
        contacts = self.router.closest(self.node_id, MAX_STATE_CONTACTS)
        text = encode_state(RoutingState(self.node_id, tuple(contacts)))
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load_state(cls, path: str | os.PathLike[str], **kwargs: Any) -> DHTNode:
        """A node with the id saved in ``path``; its contacts go to :attr:`saved_contacts`.

        Args:
            path: a file written by :meth:`save_state`.
            **kwargs: the other :class:`DHTNode` arguments (not ``node_id``).

        Raises:
            StateFileError: unreadable, not JSON, or any field malformed.
        """
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            raise StateFileError(f"cannot read DHT state {os.fspath(path)!r}: {exc}") from exc
        try:
            state = decode_state(data)
        except StateFileError as exc:
            raise StateFileError(f"{os.fspath(path)!r}: {exc}") from None
        node = cls(node_id=state.node_id, **kwargs)
        node.saved_contacts = state.contacts
        return node

    async def bootstrap_from_state(self) -> int:
        """:meth:`bootstrap` from :attr:`saved_contacts` (those of our address family)."""
        return await self.bootstrap(
            c.address for c in self.saved_contacts if self.reachable(c.family)
        )
