"""Parsing throughput: p2psip next to sipmessage and pyVoIP on the same bytes, same run.

    python benchmarks/parse.py [--seconds 2]

Rows:
  parse            framing + start line + header split (each library's ``parse``).
  parse+headers    the same, then the values a UA needs on every request (top Via branch,
                   CSeq, Call-ID, From/To tags, Contact) read through each library's API.
pyVoIP's SIPMessage parses everything eagerly, so it has one row (its parse includes
headers). The figure to watch is the p2psip/sipmessage ratio on the first row (target >= 2x).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2psip.endpoint.message import parse_message

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 pc33.atlanta.example.com\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def rate(fn: Callable[[bytes], object], seconds: float) -> float:
    """Messages per second over about ``seconds`` (best of 3 runs)."""
    fn(INVITE)
    n = 2000
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn(INVITE)
        dt = time.perf_counter() - t
        if dt > seconds / 6:
            break
        n *= 2
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn(INVITE)
        best = max(best, n / (time.perf_counter() - t))
    return best


def p2psip_full(data: bytes) -> object:
    m = parse_message(data)
    return (m.top_via.branch, m.cseq, m.call_id, m.from_.tag, m.to.tag, m.contacts, m.uri)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    rows: list[tuple[str, str, float]] = []
    rows.append(("p2psip", "parse", rate(parse_message, args.seconds)))
    rows.append(("p2psip", "parse+headers", rate(p2psip_full, args.seconds)))
    try:
        from sipmessage import Message

        def sm_full(data: bytes) -> object:
            m = Message.parse(data)
            return (
                m.via[0].parameters.get("branch"),
                m.cseq,
                m.call_id,
                m.from_address.parameters.get("tag"),
                m.to_address.parameters.get("tag"),
                m.contact,
                m.uri,
            )

        rows.append(("sipmessage", "parse", rate(Message.parse, args.seconds)))
        rows.append(("sipmessage", "parse+headers", rate(sm_full, args.seconds)))
    except ImportError:
        print("sipmessage not installed (pip install sipmessage): no baseline", file=sys.stderr)
    try:
        import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP has a circular import otherwise)
        from pyVoIP.SIP import SIPMessage

        rows.append(("pyVoIP", "parse+headers", rate(SIPMessage, args.seconds)))
    except ImportError:
        print("pyVoIP not installed (pip install pyVoIP): no baseline", file=sys.stderr)
    print(f"{'library':12} {'work':15} {'messages/s':>12} {'us/message':>11}")
    for lib, work, r in rows:
        print(f"{lib:12} {work:15} {r:12,.0f} {1e6 / r:11.2f}")
    table = {(lib, work): r for lib, work, r in rows}
    for work in ("parse", "parse+headers"):
        if ("sipmessage", work) in table:
            ratio = table[("p2psip", work)] / table[("sipmessage", work)]
            print(f"ratio p2psip/sipmessage ({work}): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
