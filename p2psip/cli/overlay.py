"""``p2psip overlay``, ``p2psip publish`` and ``p2psip lookup``: the overlay from a shell."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from pathlib import Path

from p2psip.cli.args import hostport as _hostport
from p2psip.errors import LocatorError, NotFound
from p2psip.locator.aio.chain import ChainLocator
from p2psip.locator.aio.dht import DHTLocator
from p2psip.locator.base import LocatedContact, Locator, aor_domain, normalize_aor_text
from p2psip.locator.static import StaticLocator, contact_from_uri
from p2psip.overlay.identity import Identity


def client_host(bootstrap: list[tuple[str, int]]) -> str:
    """Where a short-lived publish/lookup node binds: the family of the first bootstrap
    address (a node speaks one family), loopback when that address is loopback."""
    if not bootstrap:
        return "127.0.0.1"
    ip = ipaddress.ip_address(bootstrap[0][0].split("%", 1)[0])
    if ip.version == 6:
        return "::1" if ip.is_loopback else "::"
    return "127.0.0.1" if ip.is_loopback else "0.0.0.0"


def add_overlay_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip overlay``."""
    parser.add_argument(
        "--listen",
        type=_hostport,
        default=("127.0.0.1", 0),
        help="HOST:PORT of the overlay node (UDP)",
    )
    parser.add_argument(
        "--bootstrap",
        type=_hostport,
        action="append",
        default=[],
        help="HOST:PORT of a running overlay node (repeatable)",
    )
    parser.add_argument("--state", type=Path, help="directory keeping the routing state")


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip publish``."""
    parser.add_argument("aor", help="address-of-record, e.g. sip:alice@p2p.example")
    parser.add_argument(
        "--contact",
        action="append",
        required=True,
        help="contact URI with a numeric host (repeatable)",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        required=True,
        help="Ed25519 identity file (created, mode 0600, when absent)",
    )
    parser.add_argument(
        "--bootstrap",
        type=_hostport,
        action="append",
        required=True,
        help="HOST:PORT of an overlay node (repeatable)",
    )
    parser.add_argument("--expires", type=int, default=3600, help="record lifetime, seconds")
    parser.add_argument("--device", default="default", help="device id within the AoR")
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas that must accept the record"
    )


def add_lookup_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip lookup``."""
    parser.add_argument("aor")
    parser.add_argument(
        "--locator", choices=["auto", "dht", "bonjour", "dns", "static"], default="auto"
    )
    parser.add_argument(
        "--bootstrap",
        type=_hostport,
        action="append",
        default=[],
        help="HOST:PORT of an overlay node (repeatable)",
    )
    parser.add_argument(
        "--dns-server",
        type=_hostport,
        action="append",
        default=[],
        help="HOST:PORT of a DNS server (repeatable; no system resolver)",
    )
    parser.add_argument("--static", type=Path, help="JSON table for the static locator")
    parser.add_argument(
        "--overlay-domain",
        action="append",
        default=[],
        help="domains served by the overlay (auto: the AoR's domain when --bootstrap is given)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print a JSON list")


async def run_overlay(args: argparse.Namespace) -> int:
    """Run a bare overlay node until SIGINT/SIGTERM."""
    state_file = None
    if args.state is not None:
        args.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        state_file = args.state / "routing.json"
    host, port = args.listen
    locator = await DHTLocator.start(
        host=host, port=port, bootstrap=args.bootstrap, state_path=state_file
    )
    node = locator.node
    h, p = node.address
    print(f"p2psip overlay node {node.node_id.hex()} listening on udp:{h}:{p}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def save_regularly() -> None:
        while state_file is not None:
            await asyncio.sleep(60)
            node.save_state(state_file)

    saver = asyncio.ensure_future(save_regularly())
    try:
        await stop.wait()
    finally:
        saver.cancel()
        if state_file is not None:
            node.save_state(state_file)
        await locator.close()
    return 0


async def run_publish(args: argparse.Namespace) -> int:
    """Publish a signed record and exit."""
    aor = normalize_aor_text(args.aor)
    contacts = [contact_from_uri(uri) for uri in args.contact]
    identity = Identity.load_or_create(args.identity)
    locator = await DHTLocator.start(
        host=client_host(args.bootstrap),
        bootstrap=args.bootstrap,
        identity=identity,
        device_id=args.device,
        lifetime=float(args.expires),
        min_replicas=args.replicas,
    )
    try:
        await locator.publish(aor, contacts)
    finally:
        await locator.close()
    print(
        f"published {aor} -> {', '.join(c.uri for c in contacts)} "
        f"(key {identity.fingerprint}, expires in {args.expires} s)"
    )
    return 0


async def _build_locator(args: argparse.Namespace) -> Locator:
    locators: dict[str, Locator] = {}
    kind = args.locator
    if kind in ("dht", "auto") and args.bootstrap:
        locators["dht"] = await DHTLocator.start(
            host=client_host(args.bootstrap), bootstrap=args.bootstrap
        )
    if kind == "dht" and "dht" not in locators:
        raise LocatorError("--locator dht needs --bootstrap HOST:PORT")
    if kind in ("bonjour", "auto"):
        from p2psip.locator.aio.bonjour import BonjourLocator

        if kind == "bonjour" or not args.bootstrap:
            locators["bonjour"] = await BonjourLocator.start(interfaces=["127.0.0.1"])
    if kind in ("dns", "auto") and args.dns_server:
        from p2psip.locator.aio.dns import DNSLocator, DNSResolver

        locators["dns"] = DNSLocator(DNSResolver(nameservers=args.dns_server))
    if kind == "dns" and "dns" not in locators:
        raise LocatorError("--locator dns needs --dns-server HOST:PORT")
    if args.static is not None:
        locators["static"] = StaticLocator.from_file(args.static)
    if kind == "static" and "static" not in locators:
        raise LocatorError("--locator static needs --static FILE")
    if kind != "auto":
        return locators[kind]
    domains = args.overlay_domain or ([aor_domain(args.aor)] if args.bootstrap else [])
    overlay = [loc for name, loc in locators.items() if name in ("dht", "bonjour")]
    if not args.overlay_domain and not args.bootstrap and "bonjour" in locators:
        domains = [aor_domain(args.aor)]
    return ChainLocator(
        overlay=overlay,
        dns=locators.get("dns"),
        static=locators.get("static"),
        overlay_domains=domains,
    )


async def run_lookup(args: argparse.Namespace) -> int:
    """Resolve an AoR and print its contacts (exit 0), or one line saying why not (exit 2)."""
    locator = await _build_locator(args)
    try:
        contacts = await asyncio.wait_for(locator.resolve(args.aor), args.timeout)
    except TimeoutError:
        print(f"p2psip lookup: {args.aor}: no answer within {args.timeout:g} s", file=sys.stderr)
        return 2
    except NotFound as error:
        print(f"p2psip lookup: not found: {error}", file=sys.stderr)
        return 2
    except LocatorError as error:
        print(f"p2psip lookup: {type(error).__name__}: {error}", file=sys.stderr)
        return 3
    finally:
        await locator.close()
    _print_contacts(contacts, args.json)
    return 0


def _print_contacts(contacts: list[LocatedContact], as_json: bool) -> None:
    if as_json:
        print(json.dumps([c.as_dict() for c in contacts], indent=2))
        return
    for c in contacts:
        key = f"  key {c.key_fingerprint}" if c.key_fingerprint else ""
        print(f"{c.priority:5d}  {c.transport:4} {c.host}:{c.port}  {c.uri}  [{c.source}]{key}")
