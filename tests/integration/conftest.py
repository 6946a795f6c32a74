"""Fixtures shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from p2psip.media.aio.stream import AudioStreamConfig
from p2psip.node import Node, NodeConfig

DOMAIN = "p2p.test"
AUDIO = AudioStreamConfig(rtp_timeout=None)

Factory = Callable[..., Any]


@pytest.fixture
async def nodes() -> AsyncIterator[Factory]:
    """``await nodes(user, **config)`` -> a started Node; the first one seeds the overlay."""
    started: list[Node] = []

    async def make(user: str, **fields: Any) -> Node:
        fields.setdefault("bonjour", False)
        fields.setdefault("audio", AUDIO)
        fields.setdefault("stats_interval", 0)
        if not fields.get("lan_only") and "bootstrap" not in fields:
            seeds = [n for n in started if n.dht is not None]
            fields["bootstrap"] = [seeds[0].dht.node.address] if seeds else []
        node = Node(NodeConfig(aor=f"sip:{user}@{DOMAIN}", **fields))
        await node.start()
        started.append(node)
        return node

    yield make
    await asyncio.gather(*(n.stop() for n in reversed(started)), return_exceptions=True)
