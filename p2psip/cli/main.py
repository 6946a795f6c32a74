"""The ``p2psip`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from p2psip.cli import audio_test, demo, node, overlay, uas
from p2psip.errors import P2PSIPError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="p2psip", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings and info")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("uas", help="standalone answering SIP agent (benchmarks, interop)")
    uas.add_arguments(p)
    p = sub.add_parser("demo", help="local demo: Alice calls Bob by AoR in a small overlay")
    demo.add_arguments(p)
    p = sub.add_parser("overlay", help="run a bare overlay (DHT) node, e.g. a bootstrap node")
    overlay.add_overlay_arguments(p)
    p = sub.add_parser("publish", help="publish a signed AoR record into the overlay")
    overlay.add_publish_arguments(p)
    p = sub.add_parser("lookup", help="resolve an AoR (DHT, Bonjour, DNS, static)")
    overlay.add_lookup_arguments(p)
    p = sub.add_parser("audio-test", help="two audio streams on loopback: check a codec")
    audio_test.add_arguments(p)
    p = sub.add_parser("node", help="run a node: join, publish, answer and place calls")
    node.add_node_arguments(p)
    p = sub.add_parser("call", help="call an AoR (or a SIP URI), report the figures, hang up")
    node.add_call_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``p2psip`` script."""
    args = build_parser().parse_args(argv)
    # Library warnings (a dead bootstrap node, a refused record...) are summed up by each
    # command in one line; -v shows them as they happen.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    runner = {
        "uas": uas.run,
        "demo": demo.run,
        "overlay": overlay.run_overlay,
        "publish": overlay.run_publish,
        "lookup": overlay.run_lookup,
        "audio-test": audio_test.run,
        "node": node.run_node,
        "call": node.run_call,
    }[args.command]
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None and getattr(args, "uvloop", True):
            return uvloop.run(runner(args))
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130
    except (P2PSIPError, OSError, ValueError) as error:
        print(f"p2psip {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
