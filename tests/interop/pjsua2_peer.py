"""A headless PJSUA2 (pjsua2-python) peer for the interop tests, run as a child process.

    python pjsua2_peer.py uas --port 5096 --play tone.wav --record rx.wav --secs 12 --srtp
    python pjsua2_peer.py uac --port 5098 --call sip:bob@127.0.0.1:5080 --play tone.wav \
        --record rx.wav --secs 4 --srtp

It prints one line per milestone, which the tests wait for: ``READY`` (SIP transport bound),
``STATE <text> <status>`` (call states), ``MEDIA codec=<name> srtp=<0|1>`` (audio connected) and
``DONE`` (clean exit). ``uas`` answers the first call with 200 and exits once it is over (or
after ``--secs``); ``uac`` calls, keeps the call ``--secs`` seconds after it is confirmed, hangs
up and exits.

SOURCE: written for p2psip after /work/shared/interop/pjsua2/pj_peer.py (INTEROP_NOTES §5):
null sound device (no sound card), the recorder and player reconnected on every
``onCallMediaState`` (it fires again after a re-INVITE), ``os._exit`` after ``libDestroy``
(SWIG destructors abort otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import pjsua2 as pj  # type: ignore[import-not-found]


def say(*words: object) -> None:
    print(*words, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["uas", "uac"])
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="pj")
    ap.add_argument("--call", help="uac: the URI to call")
    ap.add_argument("--play", help="WAV file sent into the call (16-bit mono)")
    ap.add_argument("--record", help="WAV file for the received audio")
    ap.add_argument("--secs", type=float, default=10.0)
    ap.add_argument("--srtp", action="store_true", help="SDES SRTP mandatory")
    ap.add_argument("--codec", default=None, help="only this codec, e.g. PCMU/8000")
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 3
    cfg.logConfig.consoleLevel = 3
    cfg.uaConfig.maxCalls = 2
    cfg.uaConfig.userAgent = "pjsua2-interop"
    ep.libInit(cfg)
    tc = pj.TransportConfig()
    tc.port = args.port
    tc.boundAddress = args.ip
    tc.publicAddress = args.ip
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    ep.audDevManager().setNullDev()
    if args.codec:
        for info in ep.codecEnum2():
            ep.codecSetPriority(info.codecId, 255 if info.codecId.startswith(args.codec) else 0)

    state: dict[str, Any] = {"confirmed_at": None, "disconnected": False}
    calls: list[Any] = []

    class Call(pj.Call):  # type: ignore[misc]
        def __init__(self, acc: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
            super().__init__(acc, call_id)
            self.keep: list[Any] = []
            self.recorder: Any = None
            self.player: Any = None

        def onCallState(self, prm: Any) -> None:
            info = self.getInfo()
            say("STATE", info.stateText, info.lastStatusCode)
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED and state["confirmed_at"] is None:
                state["confirmed_at"] = time.monotonic()
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                state["disconnected"] = True

        def onCallMediaState(self, prm: Any) -> None:
            info = self.getInfo()
            for index, media in enumerate(info.media):
                if media.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                if media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                    continue
                audio = self.getAudioMedia(index)
                if args.record:
                    if self.recorder is None:
                        self.recorder = pj.AudioMediaRecorder()
                        self.recorder.createRecorder(args.record)
                        self.keep.append(self.recorder)
                    audio.startTransmit(self.recorder)
                if args.play:
                    if self.player is None:
                        self.player = pj.AudioMediaPlayer()
                        self.player.createPlayer(args.play, pj.PJMEDIA_FILE_NO_LOOP)
                        self.keep.append(self.player)
                    self.player.startTransmit(audio)
                stream = self.getStreamInfo(index)
                # RTP/SAVP = 0xC004: the S bit (0x4000) marks a secure profile
                srtp = stream.proto in (pj.PJMEDIA_TP_PROTO_RTP_SAVP, pj.PJMEDIA_TP_PROTO_RTP_SAVPF)
                say(f"MEDIA codec={stream.codecName}/{stream.codecClockRate} srtp={int(srtp)}")

    class Account(pj.Account):  # type: ignore[misc]
        def onIncomingCall(self, prm: Any) -> None:
            call = Call(self, prm.callId)
            calls.append(call)
            op = pj.CallOpParam()
            op.statusCode = 200
            call.answer(op)

    ac = pj.AccountConfig()
    ac.idUri = f"sip:{args.user}@{args.ip}:{args.port}"
    ac.regConfig.registrarUri = ""
    if args.srtp:
        ac.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        ac.mediaConfig.srtpSecureSignaling = 0  # SDES over plain UDP SIP (loopback test)
    ac.mediaConfig.transportConfig.boundAddress = args.ip
    acc = Account()
    acc.create(ac)
    say("READY", args.port)

    if args.mode == "uac":
        call = Call(acc)
        calls.append(call)
        call.makeCall(args.call, pj.CallOpParam(True))

    start = time.monotonic()
    while not state["disconnected"]:
        ep.libHandleEvents(20)
        now = time.monotonic()
        confirmed = state["confirmed_at"]
        if args.mode == "uas" and now > start + args.secs:
            break  # --secs caps the whole run
        if args.mode == "uac" and confirmed is not None and now > confirmed + args.secs:
            break  # --secs of talk after the call was confirmed
        if args.mode == "uac" and confirmed is None and now > start + args.secs + 10:
            break  # never answered
    if not state["disconnected"]:
        ep.hangupAllCalls()
        for _ in range(25):
            ep.libHandleEvents(20)
    for call in calls:
        call.keep.clear()  # the recorder closes (and finishes) its WAV file here
    calls.clear()
    acc.shutdown()
    ep.libDestroy()
    say("DONE")
    sys.stdout.flush()
    os._exit(0)  # SWIG destructors after libDestroy() abort (exit 134)


if __name__ == "__main__":
    main()
