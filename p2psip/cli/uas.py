"""``p2psip uas``: a standalone answering agent for benchmarks and interop tests.

200 to OPTIONS and MESSAGE, 200 with an SDP answer to INVITE, BYE answered in the dialog;
every malformed request gets the answer RFC 4475 prescribes (done by the UA core).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

from p2psip.cli.args import split_hostport
from p2psip.endpoint.aio.useragent import ServerRequest, UserAgent
from p2psip.endpoint.useragent import UserAgentConfig


def answer_sdp(offer: bytes, host: str, port: int) -> bytes:
    """A minimal SDP answer accepting the first offered payload type (RFC 3264 §6).

    The media engine owns real offer/answer; this answer only serves signalling tests.
    """
    fmt = "0"
    rtpmap = "a=rtpmap:0 PCMU/8000"
    for line in offer.decode("utf-8", "replace").splitlines():
        if line.startswith("m=audio"):
            parts = line.split()
            if len(parts) > 3:
                fmt = parts[3]
        elif line.startswith("a=rtpmap:"):
            pt = line[9:].split(" ", 1)[0]
            if pt == fmt:
                rtpmap = line.strip()
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=p2psip 1 1 IN {ip} {host}",
        "s=p2psip",
        f"c=IN {ip} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {fmt}",
        rtpmap,
        "a=sendrecv",
        "",
    ]
    return "\r\n".join(lines).encode()


class AnsweringAgent:
    """The logic of ``p2psip uas`` on a :class:`UserAgent`."""

    def __init__(
        self, ua: UserAgent, host: str, media_port: int = 6000, ringing: bool = False
    ) -> None:
        self.ua = ua
        self.host = host
        self.media_port = media_port
        self.ringing = ringing
        # (Call-ID, our tag) -> None, insertion-ordered; bounded so that calls whose BYE was
        # lost (overload, packet loss) cannot grow it forever.
        self.dialogs: dict[tuple[str, str], None] = {}
        self.max_dialogs = 100_000
        self.calls = 0
        ua.core.known_dialog = self._known
        ua.on("INVITE", self.on_invite)
        ua.on("BYE", self.on_bye)
        ua.on("MESSAGE", self.on_message)
        ua.on("ACK", lambda req: None)

    def _known(self, request: object) -> bool:
        req = request  # a Request with a To tag
        try:
            return (req.call_id, req.to.tag) in self.dialogs  # type: ignore[attr-defined]
        except Exception:
            return False

    def on_invite(self, req: ServerRequest) -> None:
        request = req.request
        if request.to.tag is not None:  # re-INVITE: same answer
            req.respond(
                200,
                body=answer_sdp(request.body, self.host, self.media_port),
                headers=[("Contact", self._contact(req))],
            )
            return
        tag = self.ua.core.new_tag()
        if self.ringing:
            req.respond(180, to_tag=tag)
        dialogs = self.dialogs
        dialogs[(request.call_id, tag)] = None
        if len(dialogs) > self.max_dialogs:
            del dialogs[next(iter(dialogs))]
        self.calls += 1
        req.respond(
            200,
            to_tag=tag,
            body=answer_sdp(request.body, self.host, self.media_port),
            headers=[("Contact", self._contact(req))],
        )

    def _contact(self, req: ServerRequest) -> str:
        local = self.ua.core.local_address(req.source.transport)
        return f"<sip:uas@{local.host_for_uri}:{local.port};transport={local.transport}>"

    def on_bye(self, req: ServerRequest) -> None:
        self.dialogs.pop((req.request.call_id, req.request.to.tag or ""), None)
        req.respond(200)

    def on_message(self, req: ServerRequest) -> None:
        req.respond(200)


def tune_gc(loop: asyncio.AbstractEventLoop, period: float = 1.0) -> None:
    """Keep the garbage collector from pausing a busy agent.

    Every call keeps its transactions for 64*T1 (32 s) to absorb retransmissions, so a loaded
    agent holds hundreds of thousands of long-lived objects; CPython's automatic full
    collections then pause the loop for up to half a second, longer than T1, and peers
    retransmit. The SIP core frees its objects by reference counting (it creates no cycles),
    so automatic collection is switched off, start-up objects are frozen, and the young
    generations are still collected every ``period`` seconds as a safety net.
    """
    gc.collect()
    gc.freeze()
    gc.disable()

    def collect_young() -> None:
        gc.collect(1)
        loop.call_later(period, collect_young)

    loop.call_later(period, collect_young)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``p2psip uas``."""
    parser.add_argument("--listen", default="127.0.0.1:5060", help="HOST:PORT to bind")
    parser.add_argument(
        "--transport",
        choices=["udp", "tcp", "tls", "all"],
        default="all",
        help="transport(s) to listen on (all: UDP+TCP on PORT, TLS on PORT+1)",
    )
    parser.add_argument("--ringing", action="store_true", help="send 180 before 200")
    parser.add_argument("--trace", action="store_true", help="print every SIP message")
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use uvloop when installed (default: yes)",
    )
    parser.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned (default): no automatic full collections, young generations collected "
        "every second; default: Python's collector as it is",
    )


async def run(args: argparse.Namespace) -> int:
    """Run the answering agent until SIGINT/SIGTERM."""
    from p2psip.endpoint.aio.tls import make_self_signed, server_context

    host, port = split_hostport(args.listen)
    trace = None
    if args.trace:

        def trace(direction: str, data: bytes, addr: object) -> None:
            arrow = "<<" if direction == "in" else ">>"
            print(f"{arrow} {addr}\n{data.decode('utf-8', 'replace')}", flush=True)

    ua = UserAgent(UserAgentConfig(trying_delay=0.2), trace=trace)
    agent = AnsweringAgent(ua, host, ringing=args.ringing)
    transports = ["udp", "tcp", "tls"] if args.transport == "all" else [args.transport]
    for t in transports:
        ctx = None
        p = port
        if t == "tls":
            cert, key = make_self_signed("p2psip-uas")
            ctx = server_context(cert, key)
            p = port + 1 if args.transport == "all" and port else port
        bound = await ua.listen(t, host, p, ssl_context=ctx)
        print(f"p2psip uas listening on {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if args.gc == "tuned":
        tune_gc(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ua.close()
    print(f"p2psip uas: {agent.calls} calls answered, stats {ua.core.stats}", file=sys.stderr)
    return 0
