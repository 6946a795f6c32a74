"""The ``p2psip`` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from types import ModuleType

from p2psip.errors import P2PSIPError

#: command -> (module in p2psip.cli, its add-arguments function, its run function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "uas": ("uas", "add_arguments", "run", "standalone answering SIP agent (benchmarks, interop)"),
    "demo": (
        "demo",
        "add_arguments",
        "run",
        "local demo: Alice calls Bob by AoR in a small overlay",
    ),
    "overlay": (
        "overlay",
        "add_overlay_arguments",
        "run_overlay",
        "run a bare overlay (DHT) node, e.g. a bootstrap node",
    ),
    "publish": (
        "overlay",
        "add_publish_arguments",
        "run_publish",
        "publish a signed AoR record into the overlay",
    ),
    "lookup": (
        "overlay",
        "add_lookup_arguments",
        "run_lookup",
        "resolve an AoR (DHT, Bonjour, DNS, static)",
    ),
    "audio-test": (
        "audio_test",
        "add_arguments",
        "run",
        "two audio streams on loopback: check a codec",
    ),
    "node": (
        "node",
        "add_node_arguments",
        "run_node",
        "run a node: join, publish, answer and place calls",
    ),
    "call": (
        "node",
        "add_call_arguments",
        "run_call",
        "call an AoR (or a SIP URI), report the figures, hang up",
    ),
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"p2psip.cli.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Args:
        command: the subcommand being run: only its module is imported (a running node does
            not carry the audio-test's or the media engine's imports); None imports all.
    """
    parser = argparse.ArgumentParser(prog="p2psip", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings and info")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or the one named "
        "(uvloop is faster per packet; asyncio's uses ~3 MB less memory)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, add_arguments, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            getattr(_module(module), add_arguments)(p)
    return parser


def _command_of(argv: list[str]) -> str | None:
    items = iter(argv)
    for item in items:
        if item in COMMANDS:
            return item
        if item == "--loop":
            next(items, None)  # its value
        elif not item.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``p2psip`` script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(argv)).parse_args(argv)
    # Library warnings (a dead bootstrap node, a refused record...) are summed up by each
    # command in one line; -v shows them as they happen.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module, _, run, _ = COMMANDS[args.command]
    runner = getattr(_module(module), run)
    choice = args.loop
    if choice == "auto" and not getattr(args, "uvloop", True):
        choice = "asyncio"  # the command's own switch (p2psip uas --no-uvloop...)
    uvloop = None
    if choice != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            if choice == "uvloop":
                print("p2psip: --loop uvloop: uvloop is not installed", file=sys.stderr)
                return 1
    try:
        if uvloop is not None:
            return uvloop.run(runner(args))
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130
    except (P2PSIPError, OSError, ValueError) as error:
        print(f"p2psip {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
