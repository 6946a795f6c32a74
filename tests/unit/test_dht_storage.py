"""The DHT's sans-IO core: storage, routing table, handover, lookups, state files."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.overlay.dht import (
    ID_BITS,
    Contact,
    DHTConfig,
    Lookup,
    RoutingState,
    RoutingTable,
    StateFileError,
    StorageLimits,
    StoreDecision,
    ValueStore,
    accept_any,
    decode_state,
    dht_key,
    encode_state,
    handover,
    join_refresh_targets,
    newest_by,
    parse_contact,
)

KEY = dht_key("sip:alice@p2p.example")
ALICE = ("127.0.0.1", 4000)
BOB = ("127.0.0.1", 4001)


def node_id(n: int) -> bytes:
    return n.to_bytes(20, "big")


def contact(n: int, port: int | None = None) -> Contact:
    return Contact(node_id(n), "127.0.0.1", port or 10000 + (n % 50000))


def random_contacts(rng: random.Random, count: int) -> list[Contact]:
    return [Contact(rng.randbytes(20), "127.0.0.1", 20000 + i) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# keys and validators
# ---------------------------------------------------------------------------------------------


def test_dht_key_is_sha1_of_the_bytes() -> None:
    assert dht_key("abc") == dht_key(b"abc")
    assert len(dht_key(b"")) == 20
    with pytest.raises(TypeError):
        dht_key(42)  # type: ignore[arg-type]


def test_newest_by_picks_the_greatest_by_order() -> None:
    pick = newest_by(lambda v: int(v.split(b":")[0]))
    assert pick(KEY, [b"2:x", b"10:y", b"3:z"], 0.0) == b"10:y"
    assert pick(KEY, [], 0.0) is None


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        DHTConfig(rpc_timeout=0)
    with pytest.raises(ValueError):
        DHTConfig(ksize=0)
    assert DHTConfig().rpc_timeout == 0.5


# ---------------------------------------------------------------------------------------------
# ValueStore
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (KEY, {"a": 1}),  # the stock package stored a dict from a raw datagram
        (KEY, "text"),
        (KEY, 42),
        (KEY, None),
        (KEY, [b"x"]),
        (b"short", b"v"),
        ("0" * 20, b"v"),
        (KEY + b"x", b"v"),
        (None, b"v"),
    ],
)
def test_store_refuses_what_is_not_bytes(key: object, value: object) -> None:
    store = ValueStore()
    assert store.offer(key, value, 0.0, ALICE) is StoreDecision.REFUSED_TYPE
    assert len(store) == 0


def test_store_bounds_value_size() -> None:
    store = ValueStore(limits=StorageLimits(max_value_bytes=10))
    assert store.offer(KEY, b"x" * 11, 0.0) is StoreDecision.REFUSED_SIZE
    assert store.offer(KEY, b"x" * 10, 0.0) is StoreDecision.STORED
    assert ValueStore().limits.max_value_bytes == 8000


def test_validator_sees_old_and_new_and_may_merge_or_refuse() -> None:
    calls = []

    def validator(key: bytes, new: bytes, old: bytes | None, now: float) -> bytes | None:
        calls.append((key, new, old, now))
        if new.startswith(b"bad"):
            return None
        return new if old is None else old + b"+" + new

    store = ValueStore(validator)
    assert store.offer(KEY, b"one", 1.0, ALICE) is StoreDecision.STORED
    assert store.offer(KEY, b"bad", 2.0, ALICE) is StoreDecision.REFUSED_BY_VALIDATOR
    assert store.offer(KEY, b"two", 3.0, BOB) is StoreDecision.STORED
    assert store.get(KEY, 3.0) == b"one+two"
    assert calls == [
        (KEY, b"one", None, 1.0),
        (KEY, b"bad", b"one", 2.0),
        (KEY, b"two", b"one", 3.0),
    ]


def test_validator_returning_old_value_is_an_acceptance_without_change() -> None:
    store = ValueStore(lambda k, new, old, now: old or new)
    store.offer(KEY, b"newer", 0.0)
    assert store.offer(KEY, b"older", 1.0) is StoreDecision.UNCHANGED
    assert StoreDecision.UNCHANGED.accepted
    assert store.get(KEY, 1.0) == b"newer"


def test_identical_resend_is_accepted_without_asking_the_validator() -> None:
    # A STORE whose answer was lost is resent: "equal seq" must not turn it into a refusal.
    seen = []

    def strict(key: bytes, new: bytes, old: bytes | None, now: float) -> bytes | None:
        seen.append(new)
        return None if old is not None else new

    store = ValueStore(strict)
    assert store.offer(KEY, b"v1", 0.0, ALICE) is StoreDecision.STORED
    assert store.offer(KEY, b"v1", 1.0, ALICE) is StoreDecision.UNCHANGED
    assert seen == [b"v1"]


def test_a_raising_or_ill_typed_validator_refuses() -> None:
    def boom(key: bytes, new: bytes, old: bytes | None, now: float) -> bytes | None:
        raise RuntimeError("bug")

    assert ValueStore(boom).offer(KEY, b"v", 0.0) is StoreDecision.REFUSED_BY_VALIDATOR
    ill = ValueStore(lambda *a: "str")  # type: ignore[arg-type,return-value]
    assert ill.offer(KEY, b"v", 0.0) is StoreDecision.REFUSED_BY_VALIDATOR
    big = ValueStore(lambda k, n, o, t: n * 100, StorageLimits(max_value_bytes=50))
    assert big.offer(KEY, b"v" * 10, 0.0) is StoreDecision.REFUSED_SIZE


def test_values_expire_after_the_ttl_and_a_new_write_renews() -> None:
    store = ValueStore(limits=StorageLimits(ttl=100.0))
    store.offer(KEY, b"v", 0.0)
    assert store.get(KEY, 99.0) == b"v"
    store.offer(KEY, b"v", 50.0)
    assert store.get(KEY, 149.0) == b"v"
    assert store.get(KEY, 150.0) is None
    assert len(store) == 0 and store.bytes_used == 0


def test_expires_of_shortens_the_ttl_and_refuses_expired_records() -> None:
    store = ValueStore(
        limits=StorageLimits(ttl=1000.0), expires_of=lambda v: float(v.decode().split()[1])
    )
    assert store.offer(KEY, b"rec 5", 10.0) is StoreDecision.REFUSED_EXPIRED
    assert store.offer(KEY, b"rec 60", 10.0) is StoreDecision.STORED
    assert store.get(KEY, 59.9) == b"rec 60"
    assert store.get(KEY, 60.0) is None


def test_store_is_bounded_in_keys_and_bytes_and_never_evicts_live_values() -> None:
    store = ValueStore(limits=StorageLimits(max_keys=3, max_bytes=1000, ttl=10.0))
    for n in range(3):
        assert store.offer(dht_key(str(n)), b"v", 0.0) is StoreDecision.STORED
    assert store.offer(dht_key("3"), b"v", 1.0) is StoreDecision.REFUSED_STORE_FULL
    assert store.offer(dht_key("0"), b"updated", 1.0) is StoreDecision.STORED  # updates go on
    assert store.offer(dht_key("3"), b"v", 11.0) is StoreDecision.STORED  # expired ones left
    by_bytes = ValueStore(limits=StorageLimits(max_bytes=10))
    assert by_bytes.offer(dht_key("a"), b"x" * 8, 0.0) is StoreDecision.STORED
    assert by_bytes.offer(dht_key("b"), b"x" * 3, 0.0) is StoreDecision.REFUSED_STORE_FULL
    assert by_bytes.offer(dht_key("a"), b"x" * 11, 0.0) is StoreDecision.REFUSED_STORE_FULL


def test_per_sender_limit_counts_new_keys_only_and_frees_on_expiry() -> None:
    store = ValueStore(limits=StorageLimits(max_keys_per_sender=2, ttl=10.0))
    assert store.offer(dht_key("a"), b"1", 0.0, ALICE).accepted
    assert store.offer(dht_key("b"), b"1", 0.0, ALICE).accepted
    assert store.offer(dht_key("c"), b"1", 0.0, ALICE) is StoreDecision.REFUSED_SENDER_LIMIT
    assert store.offer(dht_key("a"), b"2", 1.0, ALICE).accepted  # update, not a new key
    assert store.offer(dht_key("c"), b"1", 1.0, BOB).accepted  # another peer
    assert store.offer(dht_key("d"), b"1", 1.0, None).accepted  # our own writes are exempt
    assert store.keys_stored_by(ALICE) == 2
    # "b" expires at 10 (written at 0); "a" was renewed at 1
    assert store.offer(dht_key("e"), b"1", 10.5, ALICE).accepted
    assert store.keys_stored_by(ALICE) == 2


# ---------------------------------------------------------------------------------------------
# RoutingTable
# ---------------------------------------------------------------------------------------------


def brute_closest(contacts: list[Contact], target: bytes, k: int) -> list[Contact]:
    t = int.from_bytes(target, "big")
    return sorted(contacts, key=lambda c: c.int_id ^ t)[:k]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(0, 400), k=st.sampled_from([2, 8, 20]))
def test_closest_matches_brute_force_over_the_live_contacts(seed: int, count: int, k: int) -> None:
    # Regression for upstream #51/#28: the stock TableTraverser could answer nothing (or not
    # the closest) although the table was full.
    rng = random.Random(seed)
    table = RoutingTable(rng.randbytes(20), ksize=k)
    for c in random_contacts(rng, count):
        table.touch(c, 0.0)
    live = table.contacts()
    assert len(live) == len(table)
    if count:
        assert live, "a non-empty table"
    for _ in range(5):
        target = rng.randbytes(20)
        assert table.closest(target) == brute_closest(live, target, k)
        assert table.closest(target, 3 * k) == brute_closest(live, target, 3 * k)


def test_touch_splits_the_own_bucket_and_parks_the_rest_in_replacements() -> None:
    table = RoutingTable(node_id(0), ksize=2, ping_interval=5.0)
    assert table.touch(contact(1), 0.0).added
    assert table.touch(contact(2), 0.0).added
    # the far half (ids with the top bit set) fills up...
    far = [contact((1 << 159) + n) for n in range(1, 5)]
    assert table.touch(far[0], 0.0).added
    assert table.touch(far[1], 0.0).added
    # ...and is not split again (it does not cover our id, depth 1 % 5 != 0 -> it *is* split
    # once more; fill the deeper buckets until one refuses)
    results = [table.touch(contact((1 << 159) + (1 << 158) + n), 0.0) for n in range(1, 4)]
    assert [r.added for r in results][:2] == [True, True]
    assert all(c.node_id != node_id(0) for c in table.contacts())


def test_a_contact_in_the_replacement_list_is_not_new_again_and_again() -> None:
    # The store storm: the stock is_new_node() looked at bucket.nodes only, so a peer stuck in
    # a full bucket's replacement list was "new" (and sent every value) on each message.
    table = RoutingTable(node_id(0), ksize=1, ping_interval=10.0, depth_modulus=1)
    head = contact(1 << 159)
    assert table.touch(contact(1), 0.0).added  # own side
    assert table.touch(head, 0.0).added
    parked = contact((1 << 159) + 5)
    first = table.touch(parked, 0.0)
    assert not first.added and first.ping == head
    for t in range(1, 50):
        again = table.touch(parked, t * 0.1)
        assert not again.added
        assert again.ping is None  # head pings are rate-limited per bucket
    assert table.touch(parked, 10.0).ping == head


def test_eviction_needs_consecutive_failures_and_promotes_a_replacement() -> None:
    table = RoutingTable(node_id(0), ksize=1, max_failures=2, depth_modulus=1)
    table.touch(contact(1), 0.0)
    head = contact(1 << 159)
    table.touch(head, 0.0)
    spare = contact((1 << 159) + 7)
    table.touch(spare, 0.0)
    assert table.failed(head.node_id, 1.0) is None  # one failure: kept
    table.touch(head, 2.0)  # it answered: failures reset
    assert table.failed(head.node_id, 3.0) is None
    assert head.node_id in table
    assert table.failed(head.node_id, 4.0) == spare
    assert head.node_id not in table and spare.node_id in table


def test_a_known_id_at_a_new_address_is_ignored_while_the_old_one_answers() -> None:
    table = RoutingTable(node_id(0), ksize=4, max_failures=3)
    table.touch(contact(5, port=1111), 0.0)
    table.touch(contact(5, port=2222), 0.0)
    assert table.get(node_id(5)).port == 1111  # type: ignore[union-attr]
    table.failed(node_id(5), 1.0)
    table.touch(contact(5, port=2222), 2.0)
    assert table.get(node_id(5)).port == 2222  # type: ignore[union-attr]


def test_own_id_is_never_added() -> None:
    table = RoutingTable(node_id(7))
    assert not table.touch(contact(7), 0.0).added
    assert len(table) == 0


def test_stale_buckets_are_refreshed_with_an_id_in_their_range() -> None:
    table = RoutingTable(node_id(0), ksize=2, now=0.0)
    for n in (1, 2, 1 << 159, (1 << 159) + 1, (1 << 158) + 1):
        table.touch(contact(n), 0.0)
    rng = random.Random(3)
    assert table.stale_targets(100.0, 3600.0, rng) == []
    targets = table.stale_targets(4000.0, 3600.0, rng)
    assert len(targets) == len(table.buckets)
    for target, bucket in zip(targets, table.buckets, strict=True):
        assert bucket.covers(int.from_bytes(target, "big"))
    table.mark_lookup(targets[0], 4000.0)
    assert len(table.stale_targets(4000.0, 3600.0, rng)) == len(table.buckets) - 1


def test_join_refresh_targets_cover_each_distance_range_beyond_the_nearest() -> None:
    rng = random.Random(5)
    own = rng.randbytes(20)
    own_int = int.from_bytes(own, "big")
    nearest = (own_int ^ (1 << (ID_BITS - 1 - 9)) ^ 12345).to_bytes(20, "big")  # shares 9 bits
    targets = join_refresh_targets(own, nearest, rng)
    assert len(targets) == 9
    for p, target in enumerate(targets):
        distance = own_int ^ int.from_bytes(target, "big")
        assert ID_BITS - distance.bit_length() == p  # shares exactly p leading bits
    assert join_refresh_targets(own, None, rng) == []


# ---------------------------------------------------------------------------------------------
# handover (welcome_if_new)
# ---------------------------------------------------------------------------------------------


def test_handover_uses_the_stored_key_not_its_hash() -> None:
    # The stock welcome_if_new computed digest(key) of an already hashed key.
    rng = random.Random(11)
    own = rng.randbytes(20)
    table = RoutingTable(own, ksize=4)
    others = random_contacts(rng, 40)
    for c in others:
        table.touch(c, 0.0)
    store = ValueStore()
    own_int = int.from_bytes(own, "big")
    # keys for which we are the closest node we know of
    keys = []
    while len(keys) < 10:
        key = (own_int ^ rng.getrandbits(120)).to_bytes(20, "big")
        if table.closest(key)[0].distance_to(key) > own_int ^ int.from_bytes(key, "big"):
            keys.append(key)
            store.offer(key, b"v" + key, 0.0)
    handed = 0
    for key in keys:
        newcomer = Contact((int.from_bytes(key, "big") ^ 1).to_bytes(20, "big"), "127.0.0.1", 9)
        table.touch(newcomer, 0.0)
        items = handover(table, newcomer, store.items(0.0))
        handed += (key, b"v" + key) in items
        table.remove(newcomer.node_id)
    assert handed == 10


def test_handover_only_from_the_closest_holder_and_only_to_close_newcomers() -> None:
    own = node_id(0b1000)
    table = RoutingTable(own, ksize=2)
    key = node_id(0)
    table.touch(contact(1 << 100), 0.0)
    table.touch(contact(1 << 101), 0.0)
    items = [(key, b"v")]
    near = contact(0b1)  # closer to the key than the k-th known
    far = contact(1 << 120)
    assert handover(table, near, items) == items
    assert handover(table, far, items) == []
    table.touch(contact(0b10), 0.0)  # now someone we know is closer to the key than we are
    assert handover(table, near, items) == []


def _reference_handover(
    table: RoutingTable, newcomer: Contact, items: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    # the rule of handover() written out with closest() for every key
    own = table.own_int
    out = []
    for key, value in items:
        k = int.from_bytes(key, "big")
        near = table.closest(k, exclude=newcomer.node_id)
        if near and (own ^ k) >= near[0].int_id ^ k:
            continue
        if len(near) >= table.ksize and newcomer.int_id ^ k >= near[-1].int_id ^ k:
            continue
        out.append((key, value))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_handover_shortcut_agrees_with_the_rule(seed: int) -> None:
    rng = random.Random(seed)
    own = rng.randbytes(20)
    own_int = int.from_bytes(own, "big")
    table = RoutingTable(own, ksize=rng.choice([2, 4, 20]))
    for c in random_contacts(rng, rng.randrange(0, 300)):
        table.touch(c, 0.0)
    # keys near us (the ones we store) and anywhere
    keys = [(own_int ^ rng.getrandbits(rng.choice([8, 40, 120, 160]))) for _ in range(150)]
    items = [(k.to_bytes(20, "big"), b"v") for k in keys]
    newcomers = [Contact(rng.randbytes(20), "127.0.0.1", 9) for _ in range(3)]
    newcomers += [Contact((keys[i] ^ 1).to_bytes(20, "big"), "127.0.0.1", 9) for i in range(5)]
    for newcomer in newcomers:
        table.touch(newcomer, 0.0)
        assert handover(table, newcomer, items) == _reference_handover(table, newcomer, items)
        table.remove(newcomer.node_id)


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------


class FakeNetwork:
    """Every node knows its k closest peers plus a few random ones; answers are instant."""

    def __init__(self, rng: random.Random, count: int, k: int) -> None:
        self.contacts = random_contacts(rng, count)
        self.tables: dict[bytes, RoutingTable] = {}
        for c in self.contacts:
            table = RoutingTable(c.node_id, ksize=k)
            for other in brute_closest(self.contacts, c.node_id, 3 * k):
                table.touch(other, 0.0)
            for other in rng.sample(self.contacts, 10):
                table.touch(other, 0.0)
            self.tables[c.node_id] = table

    def run(
        self,
        lookup: Lookup,
        dead: frozenset[bytes] | set[bytes] = frozenset(),
        values: dict[bytes, bytes] | None = None,
    ) -> None:
        values = values or {}
        while not lookup.done:
            asked = lookup.next_queries()
            if not asked:
                break
            for c in asked:
                if c.node_id in dead:
                    lookup.slow(c.node_id)
                    lookup.failed(c.node_id)
                elif c.node_id in values:
                    lookup.answered(c.node_id, value=values[c.node_id])
                else:
                    lookup.answered(c.node_id, self.tables[c.node_id].closest(lookup.target))


@pytest.mark.parametrize("dead_count", [0, 90])
def test_lookup_converges_on_the_k_closest_live_nodes(dead_count: int) -> None:
    rng = random.Random(1)
    net = FakeNetwork(rng, 300, 8)
    overlap = 0
    for _ in range(20):
        me, target = rng.choice(net.contacts), rng.randbytes(20)
        dead = {c.node_id for c in rng.sample(net.contacts, dead_count)} - {me.node_id}
        seeds = net.tables[me.node_id].closest(target)
        lookup = Lookup(target, seeds, own_id=me.node_id, ksize=8, alpha=3)
        net.run(lookup, dead=dead)
        assert lookup.done
        live = [c for c in net.contacts if c.node_id not in dead and c != me]
        expected = brute_closest(live, target, 8)
        found = lookup.closest()
        assert not {c.node_id for c in found} & dead
        if not dead:
            assert found == expected
        else:
            # peers still list dead contacts, so a live one may hide behind them; most are found
            assert found[0] == expected[0]
        overlap += len(set(found) & set(expected))
        assert lookup.queries < 100
    assert overlap >= 0.85 * 20 * 8


def test_lookup_collects_every_value_not_the_first_or_the_majority() -> None:
    rng = random.Random(2)
    net = FakeNetwork(rng, 100, 8)
    target = rng.randbytes(20)
    holders = brute_closest(net.contacts, target, 8)
    values = {c.node_id: b"old" for c in holders[:5]}
    values[holders[6].node_id] = b"new"  # one replica has the newer value
    me = net.contacts[0] if net.contacts[0] not in holders else net.contacts[1]
    lookup = Lookup(target, net.tables[me.node_id].closest(target), own_id=me.node_id, ksize=8)
    net.run(lookup, values=values)
    got = sorted(v for _, v in lookup.values)
    assert got == [b"new"] + [b"old"] * 5


def test_a_slow_node_frees_its_slot_and_may_still_answer() -> None:
    seeds = [contact(n) for n in (1, 2, 3, 4)]
    lookup = Lookup(node_id(0), seeds, own_id=node_id(99), ksize=4, alpha=2)
    first = lookup.next_queries()
    assert [c.node_id for c in first] == [node_id(1), node_id(2)]
    assert lookup.next_queries() == []
    lookup.slow(node_id(1))
    assert [c.node_id for c in lookup.next_queries()] == [node_id(3)]
    lookup.answered(node_id(2))
    lookup.answered(node_id(3))
    assert [c.node_id for c in lookup.next_queries()] == [node_id(4)]
    lookup.answered(node_id(4))
    assert lookup.done  # the slow one is out of consideration
    lookup.answered(node_id(1), value=b"late")  # but a late answer still counts
    assert lookup.values == [(seeds[0], b"late")]
    assert [c.node_id for c in lookup.closest()] == [node_id(n) for n in (1, 2, 3, 4)]


def test_lookup_without_seeds_is_done_at_once_and_skips_our_own_id() -> None:
    assert Lookup(node_id(1), [], own_id=node_id(2)).done
    lookup = Lookup(node_id(1), [contact(2)], own_id=node_id(2))
    assert lookup.done and lookup.next_queries() == []


# ---------------------------------------------------------------------------------------------
# contacts from the wire and state files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        [node_id(1), "127.0.0.1"],
        [node_id(1)[:19], "127.0.0.1", 5],
        [node_id(1), "example.com", 5],  # a name would make sendto() resolve it
        [node_id(1), "0.0.0.0", 5],
        [node_id(1), "224.0.0.1", 5],
        [node_id(1), "127.0.0.1", 0],
        [node_id(1), "127.0.0.1", 70000],
        [node_id(1), "127.0.0.1", True],
        [node_id(1), "127.0.0.1", "5"],
        [node_id(1), b"127.0.0.1", 5],
    ],
)
def test_malformed_wire_contacts_are_dropped(raw: object) -> None:
    assert parse_contact(raw) is None


def test_wire_contacts_are_normalised_and_filtered_by_family() -> None:
    assert parse_contact([node_id(1), "::0001", 5]) == Contact(node_id(1), "::1", 5)
    assert parse_contact([node_id(1), "::1", 5], family=4) is None
    assert parse_contact((node_id(1), "127.0.0.1", 5), family=4) is not None


def test_state_round_trip() -> None:
    state = RoutingState(node_id(3), (contact(1), Contact(node_id(2), "::1", 7)))
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(state).encode()) == state


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"\x80\x04garbage",
        pickle.dumps({"id": node_id(1), "neighbors": [("127.0.0.1", 5)]}),  # the stock format
        "[]",
        '{"format": "p2psip-dht-state", "version": 2, "node_id": "00", "contacts": []}',
        '{"format": "p2psip-dht-state", "version": 1, "node_id": "zz", "contacts": []}',
        '{"format": "p2psip-dht-state", "version": 1, "node_id": "' + "00" * 20 + '"}',
        '{"format": "p2psip-dht-state", "version": 1, "node_id": "'
        + "00" * 20
        + '", "contacts": [{"id": "'
        + "11" * 20
        + '", "host": "evil.example", "port": 5}]}',
        '{"format": "p2psip-dht-state", "version": 1, "node_id": "'
        + "00" * 20
        + '", "contacts": [{"id": "'
        + "11" * 20
        + '", "host": "127.0.0.1", "port": 5, "extra": 1}]}',
        "x" * (2 * 1024 * 1024),
    ],
)
def test_corrupt_or_hostile_state_is_refused_with_a_clear_error(text: str | bytes) -> None:
    with pytest.raises(StateFileError):
        decode_state(text)


def test_accept_any_keeps_the_new_value() -> None:
    assert accept_any(KEY, b"n", b"o", 0.0) == b"n"


def test_a_lookup_that_stops_improving_asks_all_remaining_closest_at_once() -> None:
    # Paper §2.3: a round that finds nobody closer -> query all k closest not yet asked.
    seeds = [contact(n) for n in range(1, 8)]
    lookup = Lookup(node_id(0), seeds, own_id=node_id(99), ksize=6, alpha=2)
    assert len(lookup.next_queries()) == 2
    lookup.answered(node_id(1), [contact(50)])  # nothing closer than node 1
    assert [c.node_id for c in lookup.next_queries()] == [node_id(3)]
    lookup.answered(node_id(2), [])
    # two answers in a row without progress: the other 3 of the 6 closest go out together
    assert [c.node_id for c in lookup.next_queries()] == [node_id(n) for n in (4, 5, 6)]
    progress = Lookup(node_id(0), [contact(8), contact(9)], own_id=node_id(99), ksize=6, alpha=1)
    progress.next_queries()
    progress.answered(node_id(8), [contact(1), contact(2), contact(3)])  # closer: keep alpha
    assert len(progress.next_queries()) == 1
