"""One side of an audio call for tests that run peers as separate processes (network namespaces).

    python tests/media_peer.py --role offer|answer --address IP [--seconds S] [--record WAV]

The SDP goes through stdin/stdout, one JSON object per line: the offerer prints
``{"sdp": offer}`` and reads ``{"sdp": answer}``; the answerer reads the offer and prints the
answer. Both send a 1 kHz tone through ICE (host candidate on ``--address``) and SRTP with
PCMU, run ``--seconds``, then print ``{"stats": {...}}`` and exit 0. Errors go to stderr with
exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2psip.media.aio.stream import AudioStream, AudioStreamConfig
from p2psip.media.audio import ToneSource, WavFileSink
from p2psip.media.offer_answer import OfferAnswer, SRTPMode


def _send(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _receive() -> dict[str, object]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise SystemExit("stdin closed before the SDP came")
    return json.loads(line)  # type: ignore[no-any-return]


async def main(args: argparse.Namespace) -> int:
    sink = WavFileSink(args.record, 8000) if args.record else None
    config = AudioStreamConfig(
        codecs=["PCMU"],
        srtp=SRTPMode.MANDATORY,
        host_addresses=[args.address],
        rtcp_interval=1.0,
        rtp_timeout=None,
        ice_timeout=10.0,
    )
    stream = AudioStream(config, source=ToneSource(1000, 8000), sink=sink)
    try:
        negotiation = OfferAnswer(args.address, [await stream.prepare()], username=args.role)
        if args.role == "offer":
            _send({"sdp": negotiation.create_offer().to_bytes().decode()})
            answer = str((await _receive())["sdp"])
            (negotiated,) = negotiation.receive_answer(answer)
        else:
            offer = str((await _receive())["sdp"])
            _send({"sdp": negotiation.answer(offer).to_bytes().decode()})
            (negotiated,) = negotiation.streams
        await stream.start(negotiated, controlling=args.role == "offer")
        await asyncio.sleep(args.seconds)
        _send({"stats": stream.statistics().as_dict()})
    finally:
        await stream.stop()
        if sink is not None:
            sink.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("offer", "answer"), required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--record")
    sys.exit(asyncio.run(main(parser.parse_args())))
