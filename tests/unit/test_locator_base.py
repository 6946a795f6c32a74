"""Locator interface pieces: AoR normalisation, the TTL cache, the static locator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2psip.errors import LocatorError, NotFound
from p2psip.locator.base import LocatedContact, LocatorCache, aor_domain, normalize_aor_text
from p2psip.locator.static import StaticLocator, contact_from_uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@P2P.Example", "sip:alice@p2p.example"),
        ("alice@p2p.example", "sip:alice@p2p.example"),
        ("SIP:Alice@Example.COM:5070;transport=tcp", "sip:Alice@example.com"),
        ("<sips:bob@example.net?Subject=x>", "sips:bob@example.net"),
        ("sip:[2001:DB8::1]:5060", "sip:[2001:db8::1]"),
        ("sip:carol@[::1]:5080", "sip:carol@[::1]"),
    ],
)
def test_normalize_aor(text: str, expected: str) -> None:
    assert normalize_aor_text(text) == expected


def test_aor_domain() -> None:
    assert aor_domain("sip:alice@p2p.example") == "p2p.example"
    assert aor_domain("sip:carol@[::1]:5080") == "[::1]"
    with pytest.raises(ValueError):
        normalize_aor_text("sip:alice@")


def test_cache_positive_negative_and_expiry() -> None:
    cache = LocatorCache(max_entries=2, max_ttl=60.0, negative_ttl=5.0)
    c = LocatedContact("sip:a@127.0.0.1", "udp", "127.0.0.1", 5060)
    assert cache.get("sip:a@x", 0.0) is None
    cache.put("sip:a@x", [c], ttl=3600.0, now=0.0)  # capped at 60 s
    assert cache.get("sip:a@x", 59.9) == [c]
    assert cache.get("sip:a@x", 60.0) is None
    cache.put_negative("sip:b@x", 0.0)
    assert cache.get("sip:b@x", 4.9) is False
    assert cache.get("sip:b@x", 5.0) is None
    # LRU bound
    for i in range(3):
        cache.put(f"sip:{i}@x", [c], 10.0, 100.0)
    assert cache.get("sip:0@x", 100.0) is None
    assert cache.get("sip:2@x", 100.0) == [c]


@pytest.mark.parametrize(
    ("uri", "transport", "host", "port"),
    [
        ("sip:bob@192.0.2.7", "udp", "192.0.2.7", 5060),
        ("sips:bob@192.0.2.7", "tls", "192.0.2.7", 5061),
        ("sip:bob@192.0.2.7:5080;transport=TCP", "tcp", "192.0.2.7", 5080),
        ("<sip:bob@[2001:db8::7]:5070>", "udp", "2001:db8::7", 5070),
    ],
)
def test_contact_from_uri(uri: str, transport: str, host: str, port: int) -> None:
    c = contact_from_uri(uri)
    assert (c.transport, c.host, c.port) == (transport, host, port)


@pytest.mark.parametrize("uri", ["tel:+123", "sip:bob@host:99999", "sip:", "garbage"])
def test_contact_from_bad_uri(uri: str) -> None:
    with pytest.raises(LocatorError):
        contact_from_uri(uri)


async def test_static_locator_from_file(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text(
        json.dumps(
            {
                "sip:bob@example.net": [
                    {"uri": "sip:bob@127.0.0.2:5080", "priority": 10},
                    "sip:bob@127.0.0.1:5070;transport=tcp",
                ]
            }
        )
    )
    locator = StaticLocator.from_file(path)
    contacts = await locator.resolve("bob@EXAMPLE.net")
    assert [(c.host, c.port, c.transport) for c in contacts] == [
        ("127.0.0.1", 5070, "tcp"),
        ("127.0.0.2", 5080, "udp"),
    ]
    with pytest.raises(NotFound):
        await locator.resolve("sip:carol@example.net")
    await locator.withdraw("sip:bob@example.net")
    with pytest.raises(NotFound):
        await locator.resolve("sip:bob@example.net")


@pytest.mark.parametrize(
    "content", ["not json", "[]", '{"sip:a@b": "sip:a@127.0.0.1"}', '{"sip:a@b": [42]}']
)
def test_static_locator_bad_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LocatorError):
        StaticLocator.from_file(path)


# -- one AoR normaliser for every locator and the overlay -------------------------------------


def test_user_aors_normalise_exactly_as_the_overlay_records_do() -> None:
    from p2psip.overlay.records import normalize_aor

    for aor in (
        "sip:Alice@P2P.Example:5060;transport=tcp",
        "<SIPS:bob@Example.COM>",
        "carol@example.com",
        "sip:%61lice@example.com",  # escaped unreserved: decoded
        "sip:a%2fb@example.com",  # other escapes: upper-cased
        "sip:alice@[2001:DB8::1]:5070",
    ):
        assert normalize_aor_text(aor) == normalize_aor(aor)


def test_typed_unicode_aors_become_their_sip_form_and_display_readably() -> None:
    from p2psip.locator.base import display_aor

    norm = normalize_aor_text("jürgen@例え.JP")
    assert norm == "sip:j%C3%BCrgen@xn--r8jz45g.jp"
    assert normalize_aor_text("sip:j%C3%BCrgen@xn--r8jz45g.jp") == norm  # one key either way
    assert display_aor(norm) == "sip:jürgen@例え.jp"
    assert normalize_aor_text("sip:al ice@example.com") == "sip:al%20ice@example.com"
    assert normalize_aor_text("sip:100%@example.com") == "sip:100%25@example.com"


def test_host_only_targets_and_bad_aors() -> None:
    assert normalize_aor_text("SIP:Example.COM:5060;transport=udp") == "sip:example.com"
    assert normalize_aor_text("sips:[::1]:5061") == "sips:[::1]"
    for bad in ("", "   ", "mailto:alice@example.com", "sip:alice@"):
        with pytest.raises(ValueError):
            normalize_aor_text(bad)
