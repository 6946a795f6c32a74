"""The README's hello world runs as printed (against a local callee node)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from p2psip.node import Node

README = Path(__file__).resolve().parents[2] / "README.md"


def hello_world_source() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Hello world") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


async def test_hello_world_calls_a_node_by_aor(capsys) -> None:
    source = hello_world_source()
    assert "asyncio.run(main())" in source
    async with Node(aor="sip:bob@p2p.example", auto_answer=True, bonjour=False) as bob:
        host, port = bob.dht.node.address
        code = (
            source.replace('("127.0.0.1", 4000)', f"({host!r}, {port})")
            .replace("asyncio.sleep(5)", "asyncio.sleep(0.5)")
            .replace("asyncio.run(main())", "")
        )
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        await asyncio.wait_for(namespace["main"](), 30)  # type: ignore[operator]
    printed = capsys.readouterr().out
    assert "Established CONFIRMED" in printed
    assert printed.rstrip().endswith("Terminated TERMINATED")
