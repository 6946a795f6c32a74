"""``p2psip demo``: the README's main job -- Alice calls Bob by his AoR, with no server.

Everything runs in this process on loopback, no sound card needed: a small overlay of bare DHT
nodes (3 by default), then two :class:`~p2psip.node.Node` s, Alice and Bob, that join it.
Bob publishes a signed record for ``sip:bob@demo.p2psip.test``; Alice resolves the AoR through
the DHT, calls the TLS contact of the record (Bob's certificate must be bound to the key that
signed it), ICE connects the media and SRTP protects it. Alice sends a 1000 Hz tone, Bob
answers with 600 Hz; each side records what it hears and the dominant frequency of both
recordings is checked. The figures print (resolve and setup time, codec, SRTP, verified key,
packets, loss, jitter, received frequencies) and the exit status is 0 when the tone crossed
both ways.

Without ``--quiet`` the SIP messages Alice sends and receives and the call's events are shown
as they happen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from p2psip.errors import P2PSIPError

__all__ = ["DemoError", "add_arguments", "run", "run_demo"]

DOMAIN = "demo.p2psip.test"
ALICE_HZ = 1000.0
BOB_HZ = 600.0


class DemoError(P2PSIPError):
    """Bad options for ``p2psip demo``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to use")
    parser.add_argument("--quiet", action="store_true", help="no SIP trace, figures only")
    parser.add_argument("--codec", default="PCMU", help="codec of the call (default PCMU)")
    parser.add_argument(
        "--duration", type=float, default=1.5, metavar="S", help="seconds of audio (default 1.5)"
    )
    parser.add_argument(
        "--overlay-nodes", type=int, default=3, metavar="N", help="bare DHT nodes (default 3)"
    )


async def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Start the overlay, Alice and Bob, make the call; the figures (what ``run`` prints)."""
    import ipaddress

    from p2psip.locator.aio.dht import DHTLocator
    from p2psip.media.aio.stream import AudioStreamConfig, resolve_codecs
    from p2psip.media.audio import MemorySink, ToneSource, dominant_frequency
    from p2psip.node import CallStateChanged, IncomingCall, Node, NodeConfig, NodeEvent

    if not ipaddress.ip_address(args.host).is_loopback:
        raise DemoError(f"--host must be a loopback address, not {args.host}")
    if not 0.5 <= args.duration <= 30:
        raise DemoError("--duration must be between 0.5 and 30 s")
    if not 1 <= args.overlay_nodes <= 20:
        raise DemoError("--overlay-nodes must be between 1 and 20")
    (codec,) = resolve_codecs([args.codec])
    rate = codec.sample_rate if codec.sample_rate <= 16000 else 16000
    t0 = time.perf_counter()

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[{1000 * (time.perf_counter() - t0):7.1f} ms] {text}", flush=True)

    overlay: list[DHTLocator] = []
    nodes: list[Node] = []
    try:
        for _ in range(args.overlay_nodes):
            boot = [overlay[0].node.address] if overlay else []
            overlay.append(await DHTLocator.start(host=args.host, bootstrap=boot))
        seed = overlay[0].node.address
        say(
            f"overlay of {len(overlay)} DHT nodes: "
            + ", ".join(f"udp:{h}:{p}" for h, p in (o.node.address[:2] for o in overlay))
        )
        audio = AudioStreamConfig(codecs=(codec.name,), rtp_timeout=None)

        def node(user: str, **extra: Any) -> Node:
            return Node(
                NodeConfig(
                    aor=f"sip:{user}@{DOMAIN}",
                    listen=args.host,
                    bootstrap=[seed],
                    bonjour=False,  # the DHT finds Bob; Bonjour is for LAN-only mode
                    audio=audio,
                    stats_interval=0,
                    **extra,
                )
            )

        bob = node("bob", auto_answer=True)
        bob_hears = MemorySink(rate)

        def bob_answers(event: NodeEvent) -> None:
            if isinstance(event, IncomingCall):
                say(f"bob: incoming call from {event.call.target}, answering with {BOB_HZ:g} Hz")
                event.call.set_audio(source=ToneSource(BOB_HZ, rate, 0.5), sink=bob_hears)

        bob.on(bob_answers)
        nodes.append(bob)
        await bob.start()
        assert bob.identity is not None
        say(f"bob: published {bob.aor} (key {bob.identity.fingerprint})")
        for contact in bob.contacts:
            say(f"bob:   contact {contact.uri}")
        alice = node("alice")
        nodes.append(alice)
        await alice.start()
        say(f"alice: joined the overlay as {alice.aor}")
        if not args.quiet:
            assert alice.ua is not None
            alice.ua.trace = _tracer(say)

        def alice_sees(event: NodeEvent) -> None:
            if isinstance(event, CallStateChanged):
                say(f"alice: call {event.state.name.lower()}")

        alice.on(alice_sees)
        alice_hears = MemorySink(rate)
        say(f"alice: calling {bob.aor} by AoR, sending {ALICE_HZ:g} Hz")
        dialled = time.perf_counter()
        call = await asyncio.wait_for(
            alice.call(
                bob.aor, source=ToneSource(ALICE_HZ, rate, 0.5), sink=alice_hears, timeout=10
            ),
            15,
        )
        call_up_ms = 1000 * (time.perf_counter() - dialled)
        say(f"alice: call up; {args.duration:g} s of audio")
        await asyncio.sleep(args.duration)
        sent = call.statistics()
        bob_call = bob.calls[-1] if bob.calls else None
        received = bob_call.statistics() if bob_call is not None else None
        summary = call.summary()
        await call.hangup()
        say("alice: hung up")
    finally:
        for n in reversed(nodes):
            with contextlib.suppress(Exception):
                await n.stop()
        for o in overlay:
            with contextlib.suppress(Exception):
                await o.close()
    pcm_bob, pcm_alice = bob_hears.pcm, alice_hears.pcm
    skip = rate // 5  # the first 0.2 s: jitter buffer start
    bob_hz = dominant_frequency(pcm_bob[skip:], rate) if len(pcm_bob) > 2 * skip else None
    alice_hz = dominant_frequency(pcm_alice[skip:], rate) if len(pcm_alice) > 2 * skip else None
    contact = call.contacts[0] if call.contacts else None
    figures: dict[str, Any] = {
        **summary,
        "call_up_ms": call_up_ms,
        "contact": contact.uri if contact is not None else None,
        "resolved_by": contact.source if contact is not None else None,
        "expected_key": bob.identity.fingerprint,
        "srtp_suite": sent.srtp_suite if sent is not None else None,
        "transport": sent.transport if sent is not None else None,
        "bob_packets_sent": received.packets_sent if received is not None else 0,
        "bob_packets_received": received.packets_received if received is not None else 0,
        "bob_loss_percent": received.loss_percent if received is not None else None,
        "bob_jitter_ms": received.jitter_ms if received is not None else None,
        "bob_hears_hz": bob_hz,
        "alice_hears_hz": alice_hz,
        "bob_heard_s": len(pcm_bob) / rate,
        "alice_heard_s": len(pcm_alice) / rate,
        "elapsed_s": time.perf_counter() - t0,
    }
    return figures


def _tracer(say: Any) -> Any:
    def trace(direction: str, data: bytes, addr: object) -> None:
        text = data.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n")
        arrow = "alice <<<" if direction == "in" else "alice >>>"
        say(f"{arrow} {addr}\n{text}\n")

    return trace


def _check(figures: dict[str, Any]) -> list[str]:
    """What went wrong (empty: the demo succeeded)."""
    problems = []
    if not figures.get("srtp"):
        problems.append("the media was not encrypted (SRTP off)")
    if figures.get("verified_key") != figures["expected_key"]:
        problems.append("Bob's TLS certificate was not verified against his record's key")
    if figures.get("resolved_by") != "dht":
        problems.append(f"Bob was not found through the DHT ({figures.get('resolved_by')})")
    for who, hz, expected, seconds in (
        ("Bob", figures["bob_hears_hz"], ALICE_HZ, figures["bob_heard_s"]),
        ("Alice", figures["alice_hears_hz"], BOB_HZ, figures["alice_heard_s"]),
    ):
        if hz is None or abs(hz - expected) > 10:
            problems.append(f"{who} did not hear the {expected:g} Hz tone ({hz} Hz)")
        elif seconds < 0.5:
            problems.append(f"{who} heard only {seconds:.2f} s of audio")
    return problems


def _ms(value: object) -> str:
    return f"{value:.2f} ms" if isinstance(value, int | float) else "n/a"


def _report(f: dict[str, Any]) -> str:
    suite = f" ({f['srtp_suite']})" if f.get("srtp_suite") else ""
    hz = [
        f"{v:.1f} Hz" if isinstance(v, float) else "nothing"
        for v in (f["bob_hears_hz"], f["alice_hears_hz"])
    ]
    rows = [
        ("call", f"sip:alice@{DOMAIN} -> sip:bob@{DOMAIN} by AoR, no server"),
        ("resolve", f"{_ms(f['resolve_ms'])} ({f['resolved_by']}: {f['contact']})"),
        ("setup", f"{_ms(f['setup_ms'])} (INVITE over TLS to 200 OK)"),
        ("call up", f"{_ms(f['call_up_ms'])} (resolve + INVITE/200 + ICE + SRTP media start)"),
        ("codec", f"{f['codec']} over {f['transport']}"),
        ("SRTP", ("on" + suite) if f.get("srtp") else "off"),
        (
            "TLS key",
            f"verified {f['verified_key']}" if f.get("verified_key") else "NOT verified",
        ),
        (
            "packets",
            f"alice sent {f.get('packets_sent', 0)} received {f.get('packets_received', 0)}; "
            f"bob sent {f['bob_packets_sent']} received {f['bob_packets_received']}",
        ),
        (
            "loss",
            f"alice {f.get('loss_percent', 0.0):.2f} %, bob "
            + (f"{f['bob_loss_percent']:.2f} %" if f["bob_loss_percent"] is not None else "n/a"),
        ),
        (
            "jitter",
            f"alice {_ms(f.get('jitter_ms'))}, bob {_ms(f['bob_jitter_ms'])}",
        ),
        (
            "received",
            f"bob hears {hz[0]} (alice sent {ALICE_HZ:g} Hz), "
            f"alice hears {hz[1]} (bob sent {BOB_HZ:g} Hz)",
        ),
    ]
    return "\n".join(f"{name:10} {value}" for name, value in rows)


async def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when the call worked and the tone crossed both ways."""
    figures = await run_demo(args)
    print(_report(figures))
    problems = _check(figures)
    for problem in problems:
        print(f"FAILED     {problem}")
    if not problems:
        print(f"result     OK in {figures['elapsed_s']:.1f} s")
    return 0 if not problems else 1
