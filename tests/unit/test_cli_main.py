"""The p2psip entry point: per-command imports and the event-loop choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2psip.cli.main import _command_of, build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["node", "--aor", "sip:a@b"], "node"),
        (["-v", "call", "sip:a@b"], "call"),
        (["--loop", "asyncio", "node"], "node"),
        (["--loop=uvloop", "-v", "demo"], "demo"),
        (["--loop"], None),
        (["frobnicate", "node"], None),
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert _command_of(argv) == command


def test_loop_option_parses() -> None:
    args = build_parser("node").parse_args(["--loop", "asyncio", "node", "--aor", "sip:a@b"])
    assert (args.loop, args.command) == ("asyncio", "node")
    with pytest.raises(SystemExit):
        build_parser("node").parse_args(["--loop", "trio", "node", "--aor", "sip:a@b"])


def test_node_command_imports_only_its_stack() -> None:
    """``p2psip --loop asyncio node`` must not import other commands, the media engine,
    cryptography or uvloop (the idle node's memory)."""
    code = (
        "import sys\n"
        "from p2psip.cli.main import build_parser, _command_of\n"
        "argv = ['--loop', 'asyncio', 'node', '--aor', 'sip:a@b']\n"
        "build_parser(_command_of(argv)).parse_args(argv)\n"
        "import p2psip.cli.node, p2psip.node\n"
        "bad = [m for m in ('numpy', 'av', 'pylibsrtp', 'aioice', 'cryptography', 'uvloop',\n"
        "       'p2psip.cli.demo', 'p2psip.cli.audio_test', 'p2psip.media.aio.stream')\n"
        "       if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "", out.stdout
