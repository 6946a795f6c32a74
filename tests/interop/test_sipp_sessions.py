"""The INVITE session layer against SIPp's built-in scenarios (UDP, loopback).

* SIPp ``-sn uac`` (INVITE, [180], 200, ACK, BYE) calls a :class:`SessionManager` that rings and
  accepts every call: each session must be established and then ended by SIPp's BYE.
* A :class:`SessionManager` calls SIPp ``-sn uas`` (180, 200 with SDP, expects ACK and BYE),
  one call after the other and several at once, hanging up each call itself.

SIPp's ``uas`` scenario ends each call with a 4 s pause, so the second test lasts that long.
"""

from __future__ import annotations

import asyncio

import pytest

from p2psip.endpoint.aio.session import Session, SessionManager
from p2psip.endpoint.aio.useragent import UserAgent
from p2psip.endpoint.session import SessionState

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"


def _describe(result) -> str:
    keys = ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)")
    stats = {k: result.stats.get(k) for k in keys}
    return f"sipp rc={result.returncode} {stats}\n{result.errors_text()[-2000:]}"


async def _sipp_calls_a_ringing_session_layer(
    sipp, scenario: str, *args: str
) -> tuple[object, list[Session]]:
    """SIPp runs ``scenario`` against a SessionManager that rings and accepts every call;
    returns SIPp's result and the sessions, once all of them ended."""
    ua = UserAgent()
    address = await ua.listen("udp", HOST, 0)
    answered: list[Session] = []

    async def answer(session: Session) -> None:
        answered.append(session)
        await session.ring()
        await session.accept()

    manager = SessionManager(ua, on_incoming=answer)
    try:
        result = await asyncio.to_thread(
            sipp.run, scenario, f"{HOST}:{address.port}", *args, timeout=30
        )
        await asyncio.wait_for(asyncio.gather(*(s.wait_terminated() for s in answered)), timeout=10)
    finally:
        await manager.close()
        await ua.close()
    return result, answered


async def test_sipp_uac_calls_the_session_layer(sipp) -> None:
    calls = 20
    result, answered = await _sipp_calls_a_ringing_session_layer(
        sipp, "uac", "-r", "20", "-m", str(calls), "-d", "0"
    )
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == calls, _describe(result)
    assert len(answered) == calls
    for session in answered:
        assert session.setup_time is not None  # established (ACK received)
        assert session.termination is not None and session.termination.by == "remote"
        assert session.streams and session.streams[0].codec is not None


async def test_session_layer_calls_sipp_uas(sipp) -> None:
    sequential, concurrent = 5, 5
    server = sipp.start("uas", None, "-m", str(sequential + concurrent))
    ua = UserAgent()
    await ua.listen("udp", HOST, 0)
    manager = SessionManager(ua)
    target = f"sip:service@{server.host}:{server.port}"

    async def one_call() -> None:
        session = await asyncio.wait_for(manager.call(target), 10)
        assert session.state is SessionState.CONFIRMED
        assert session.ringing_at is not None  # SIPp's uas rings first
        assert session.streams[0].codec is not None
        assert session.streams[0].codec.name == "PCMU"
        ended = await asyncio.wait_for(session.terminate(), 10)
        assert ended.by == "local"

    try:
        for _ in range(sequential):
            await one_call()
        await asyncio.gather(*(one_call() for _ in range(concurrent)))
        result = await asyncio.to_thread(server.wait, 20)
    finally:
        await manager.close()
        await ua.close()
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == sequential + concurrent, _describe(result)
    assert result.failed_calls == 0, _describe(result)


async def test_session_layer_pracks_a_sipp_uas_that_requires_100rel(sipp) -> None:
    """RFC 3262 against SIPp: reliable 183 with SDP, our PRACK (RAck checked by the
    scenario), 200 to the INVITE after the PRACK, ACK, BYE."""
    calls = 3
    server = sipp.start("uas_100rel.xml", None, "-m", str(calls))
    ua = UserAgent()
    await ua.listen("udp", HOST, 0)
    manager = SessionManager(ua)
    target = f"sip:service@{server.host}:{server.port}"
    try:
        for _ in range(calls):
            session = await asyncio.wait_for(manager.call(target), 10)
            assert session.state is SessionState.CONFIRMED
            assert session.streams[0].codec is not None
            await asyncio.wait_for(session.terminate(), 10)
        result = await asyncio.to_thread(server.wait, 20)
    finally:
        await manager.close()
        await ua.close()
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == calls, _describe(result)


async def test_sipp_uac_requiring_100rel_calls_the_session_layer(sipp) -> None:
    """RFC 3262, callee side, against SIPp: its INVITE requires 100rel; our 180 is reliable
    (RSeq), SIPp PRACKs it, the 200 and the rest of the call follow."""
    calls = 3
    result, answered = await _sipp_calls_a_ringing_session_layer(
        sipp, "uac_100rel.xml", "-m", str(calls)
    )
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == calls, _describe(result)
    assert len(answered) == calls
    for session in answered:
        invite = session.invite
        assert invite is not None and "100rel" in invite.tokens("Require")
        assert session.termination is not None and session.termination.by == "remote"
