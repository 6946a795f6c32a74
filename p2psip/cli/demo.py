"""``p2psip demo``: the README's main job until the node exists.

Two local user agents, Alice and Bob, exchange OPTIONS and MESSAGE over UDP, TCP and TLS on
loopback; the SIP trace and a summary are printed.
"""

from __future__ import annotations

import argparse
import time

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.useragent import ServerRequest, UserAgent
from p2psip.endpoint.useragent import UserAgentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to use")
    parser.add_argument("--quiet", action="store_true", help="no SIP trace, summary only")


async def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every exchange succeeded."""
    from p2psip.endpoint.aio.tls import client_context, make_self_signed, server_context

    def tracer(name: str):
        def trace(direction: str, data: bytes, addr: TransportAddress) -> None:
            if args.quiet:
                return
            arrow = f"{name} <<< {addr}" if direction == "in" else f"{name} >>> {addr}"
            text = data.decode("utf-8", "replace").rstrip("\r\n")
            print(f"--- {arrow}\n{text}\n", flush=True)

        return trace

    config = UserAgentConfig(trying_delay=0.2)
    alice = UserAgent(config, trace=tracer("alice"))
    bob = UserAgent(config, trace=tracer("bob"))
    received: list[str] = []

    def on_message(req: ServerRequest) -> None:
        received.append(req.request.body.decode("utf-8", "replace"))
        req.respond(200)

    bob.on("MESSAGE", on_message)
    cert, key = make_self_signed("bob.p2psip.test")
    bob_addr: dict[str, TransportAddress] = {}
    for t in ("udp", "tcp", "tls"):
        ctx = server_context(cert, key) if t == "tls" else None
        bob_addr[t] = await bob.listen(t, args.host, 0, ssl_context=ctx)
        await alice.listen(
            t,
            args.host,
            0,
            ssl_context=server_context(*make_self_signed("alice.p2psip.test"))
            if t == "tls"
            else None,
        )
    assert alice.transports is not None
    # Alice verifies Bob's certificate (the overlay later pins the key from his record).
    alice.transports.tls_client_context = client_context(cadata=cert, check_hostname=False)
    results = []
    ok = True
    for t in ("udp", "tcp", "tls"):
        dest = bob_addr[t]
        uri = f"sip:bob@{dest.host_for_uri}:{dest.port};transport={t}"
        for method, body in (("OPTIONS", b""), ("MESSAGE", f"hello bob over {t}".encode())):
            start = time.perf_counter()
            response = await alice.request(
                method,
                uri,
                from_=f"<sip:alice@{args.host}>",
                to=f"<sip:bob@{args.host}>",
                body=body,
                content_type="text/plain" if body else None,
                destination=dest,
            )
            ms = (time.perf_counter() - start) * 1000
            results.append((t.upper(), method, response.status, response.reason, ms))
            ok &= response.status == 200
    await alice.close()
    await bob.close()
    print("transport  method    answer                 time")
    for t, method, status, reason, ms in results:
        print(f"{t:10} {method:9} {status} {reason:18} {ms:7.2f} ms")
    print(f"Bob received {len(received)} messages: {received}")
    return 0 if ok and len(received) == 3 else 1
