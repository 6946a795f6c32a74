"""``p2psip overlay`` / ``publish`` / ``lookup`` as a user runs them (real processes, loopback)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def p2psip(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "p2psip.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def overlay_nodes(
    process_factory: Callable[..., object], free_port: Callable[..., int], tmp_path: Path
) -> list[str]:
    """A bootstrap node (with a state dir) and a second node; their HOST:PORT."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    addresses = []
    for i in range(2):
        port = free_port("udp")
        argv = [sys.executable, "-m", "p2psip.cli.main", "overlay", "--listen", f"127.0.0.1:{port}"]
        if i == 0:
            argv += ["--state", str(tmp_path / "state")]
        else:
            argv += ["--bootstrap", addresses[0]]
        proc = process_factory(argv, name=f"overlay{i}", env=env)
        proc.wait_for_log(r"listening on udp:127\.0\.0\.1:", timeout=20)  # type: ignore[attr-defined]
        addresses.append(f"127.0.0.1:{port}")
    return addresses


def test_publish_then_lookup(overlay_nodes: list[str], tmp_path: Path) -> None:
    boot, other = overlay_nodes
    key = tmp_path / "alice.key"
    published = p2psip(
        "publish",
        "sip:alice@p2p.example",
        "--contact",
        "sip:alice@127.0.0.1:5061;transport=tls",
        "--identity",
        str(key),
        "--bootstrap",
        boot,
    )
    assert published.returncode == 0, published.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    found = p2psip("lookup", "alice@p2p.example", "--bootstrap", other, "--json")
    assert found.returncode == 0, found.stderr
    [entry] = json.loads(found.stdout)
    assert entry["uri"] == "sip:alice@127.0.0.1:5061;transport=tls"
    assert (entry["transport"], entry["host"], entry["port"]) == ("tls", "127.0.0.1", 5061)
    assert entry["key_fingerprint"].startswith("sha256:")
    assert entry["key_fingerprint"] in published.stdout

    # another identity cannot take the AoR: the storing nodes refuse it
    hijack = p2psip(
        "publish",
        "sip:alice@p2p.example",
        "--contact",
        "sip:x@127.0.0.1:6666",
        "--identity",
        str(tmp_path / "mallory.key"),
        "--bootstrap",
        boot,
    )
    assert hijack.returncode != 0
    assert len(hijack.stderr.strip().splitlines()) == 1, hijack.stderr
    again = p2psip("lookup", "sip:alice@p2p.example", "--bootstrap", other, "--json")
    assert json.loads(again.stdout)[0]["port"] == 5061


def test_lookup_failures_are_one_line(
    overlay_nodes: list[str], free_port: Callable[..., int]
) -> None:
    missing = p2psip("lookup", "sip:nobody@p2p.example", "--bootstrap", overlay_nodes[1])
    assert missing.returncode != 0
    assert missing.stderr.count("\n") == 1 and "not found" in missing.stderr
    dead = p2psip(
        "lookup",
        "sip:alice@p2p.example",
        "--bootstrap",
        f"127.0.0.1:{free_port('udp')}",
        "--timeout",
        "5",
    )
    assert dead.returncode != 0
    assert dead.stderr.count("\n") == 1 and "no overlay node answered" in dead.stderr


def test_static_lookup(tmp_path: Path) -> None:
    table = tmp_path / "peers.json"
    table.write_text(json.dumps({"sip:bob@example.net": ["sip:bob@127.0.0.1:5080"]}))
    found = p2psip(
        "lookup", "sip:bob@example.net", "--locator", "static", "--static", str(table), "--json"
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["port"] == 5080


async def test_bonjour_lookup_finds_a_published_aor() -> None:
    import asyncio

    from p2psip.locator.aio.bonjour import BonjourLocator
    from p2psip.locator.static import contact_from_uri

    publisher = await BonjourLocator.start(interfaces=["127.0.0.1"], probe=False)
    try:
        await publisher.publish(
            "sip:dora@lan.example", [contact_from_uri("sip:dora@127.0.0.1:5095")]
        )
        found = await asyncio.to_thread(
            p2psip, "lookup", "sip:dora@lan.example", "--locator", "bonjour", "--json"
        )
        assert found.returncode == 0, found.stderr
        [entry] = json.loads(found.stdout)
        assert (entry["host"], entry["port"], entry["source"]) == ("127.0.0.1", 5095, "bonjour")
    finally:
        await publisher.close()


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no ::1 on this machine")
def test_ipv6_overlay_publish_and_lookup(
    process_factory: Callable[..., object], free_port: Callable[..., int], tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    port = free_port("udp", host="::1")
    argv = [sys.executable, "-m", "p2psip.cli.main", "overlay", "--listen", f"[::1]:{port}"]
    proc = process_factory(argv, name="overlay6", env=env)
    proc.wait_for_log(r"listening on udp:\[?::1\]?:", timeout=20)  # type: ignore[attr-defined]
    boot = f"[::1]:{port}"
    published = p2psip(
        "publish",
        "sip:bob@p2p.example",
        "--contact",
        "sip:bob@[::1]:5062",
        "--identity",
        str(tmp_path / "bob.key"),
        "--bootstrap",
        boot,
    )
    assert published.returncode == 0, published.stderr
    found = p2psip("lookup", "sip:bob@p2p.example", "--bootstrap", boot, "--json")
    assert found.returncode == 0, found.stderr
    [entry] = json.loads(found.stdout)
    assert (entry["host"], entry["port"]) == ("::1", 5062)
    assert entry["uri"] == "sip:bob@[::1]:5062"
