"""A p2psip node calls ``sip:bob@example.test``: RFC 3263 over DNS (NAPTR -> SRV -> A, from
the in-process test DNS server on loopback) finds Kamailio, which routes the INVITE to the
user registered there (baresip, REGISTER with digest auth), and audio flows both ways.

Kamailio: ``configs/kamailio.cfg`` with ``WITH_AUTH`` (``alias="example.test"``, so the
domain is "myself"; ``lookup("location")``; record-route). The zone::

    example.test.            NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp.example.test.
                             NAPTR 20 50 "s" "SIP+D2T" "" _sip._tcp.example.test.
    _sip._udp.example.test.  SRV   10 100 <kamailio port> sip1.example.test.
    _sip._tcp.example.test.  SRV   10 100 <kamailio port> sip1.example.test.
    sip1.example.test.       A     127.0.0.2   (Kamailio; the UAs are on 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from p2psip.media.aio.stream import AudioStreamConfig
from p2psip.media.audio import ToneSource, WavFileSink
from p2psip.media.offer_answer import SRTPMode
from tests.dnsserver import DNSServer
from tests.interop.callpeers import (
    HOST,
    OUR_TONE_HZ,
    PEER_TONE_HZ,
    SETUP_TIMEOUT,
    TALK_SECONDS,
    Baresip,
    assert_media,
    assert_wav_tone,
    p2psip_node,
    talk,
    write_tone_wav,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

DOMAIN = "example.test"
KAMAILIO_HOST = "127.0.0.2"
MIN_AUDIO = TALK_SECONDS - 0.8


def zone(port: int) -> dict[str, dict[str, list[str]]]:
    return {
        DOMAIN: {
            "NAPTR": [
                f'10 50 "s" "SIP+D2U" "" _sip._udp.{DOMAIN}',
                f'20 50 "s" "SIP+D2T" "" _sip._tcp.{DOMAIN}',
            ],
        },
        f"_sip._udp.{DOMAIN}": {"SRV": [f"10 100 {port} sip1.{DOMAIN}"]},
        f"_sip._tcp.{DOMAIN}": {"SRV": [f"10 100 {port} sip1.{DOMAIN}"]},
        f"sip1.{DOMAIN}": {"A": [KAMAILIO_HOST]},
    }


def _wait_registered(kamailio, user: str, timeout: float = SETUP_TIMEOUT) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    dump = ""
    while time.monotonic() < deadline:
        dump = kamailio.kamcmd("ul.dump")
        if f"AoR: {user}\n" in dump:
            return str(dump)
        time.sleep(0.1)
    raise AssertionError(f"{user} did not register at Kamailio:\n{dump}")


async def test_p2psip_calls_user_registered_at_kamailio_through_dns(
    kamailio_factory, tmp_path: Path, process_factory, free_port
) -> None:  # type: ignore[no-untyped-def]
    # Kamailio on 127.0.0.2: its config makes its host "myself" on any port (alias), which on
    # 127.0.0.1 would also cover the UAs' in-dialog targets and break loose routing of ACK/BYE
    kamailio = kamailio_factory(defines=("WITH_AUTH",), host=KAMAILIO_HOST)
    password = kamailio.users["bob"]
    tone = write_tone_wav(tmp_path / "tone440-48k.wav", PEER_TONE_HZ, 48000, 10)
    bob = Baresip(
        process_factory,
        free_port,
        tmp_path,
        tone,
        user="bob",
        aor=f"sip:bob@{DOMAIN}",
        registrar=f"sip:{kamailio.hostport};transport=udp",
        params=f";auth_pass={password};regint=120;answermode=auto",
    ).start()
    dump = await asyncio.to_thread(_wait_registered, kamailio, "bob")
    assert f"@{HOST}:{bob.sip_port}" in dump, dump  # baresip's contact
    # WITH_AUTH challenges every REGISTER (401): a 200 means baresip's digest was accepted
    assert kamailio.auth
    assert f"bob@{DOMAIN}: {{0/UDP/v4}} 200 OK (kamailio-interop)" in bob.log(), bob.log()

    heard = tmp_path / "p2psip-heard.wav"
    async with DNSServer(zone(kamailio.port), port=free_port("udp")) as dns:
        audio = AudioStreamConfig(codecs=("PCMU",), srtp=SRTPMode.OFF, rtp_timeout=None)
        async with p2psip_node("alice", audio=audio, dns_servers=[f"{HOST}:{dns.port}"]) as node:
            sink = WavFileSink(heard, 8000)
            call = await node.call(
                f"sip:bob@{DOMAIN}",
                source=ToneSource(OUR_TONE_HZ, 8000, 0.5),
                sink=sink,
                timeout=SETUP_TIMEOUT,
            )
            stats = await talk(call)
            await call.hangup()
            sink.close()
            await bob.wait_closed()
        queries = list(dns.queries)
    # baresip un-REGISTERs when stopped: stop it while Kamailio still answers
    await asyncio.to_thread(bob.process.stop)

    # RFC 3263 §4.1/§4.2: NAPTR of the domain, then the SRV it points to, then the target's A
    assert (DOMAIN, "NAPTR") in queries, queries
    assert (f"_sip._udp.{DOMAIN}", "SRV") in queries, queries
    assert queries.index((DOMAIN, "NAPTR")) < queries.index((f"_sip._udp.{DOMAIN}", "SRV"))
    first = call.contacts[0]
    assert (first.transport.lower(), first.host, first.port) == (
        "udp",
        KAMAILIO_HOST,
        kamailio.port,
    )
    assert call.resolve_time is not None

    # Kamailio routed it: bob's side saw the INVITE for bob@example.test from alice
    log = bob.log()
    assert "Call established: sip:alice@p2p.test" in log, log[-3000:]
    assert_media(stats, codec="PCMU", srtp=False)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    assert_wav_tone(bob.received_wav(), OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="bob heard")
