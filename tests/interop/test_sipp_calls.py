"""Calls between p2psip and SIPp's built-in scenarios, UDP and TCP.

* SIPp ``-sn uac`` (INVITE, [180], 200, ACK, BYE, 200) against the ``p2psip uas`` command.
* The in-process p2psip :class:`UserAgent` calling SIPp ``-sn uas``, calls one after the other
  and all at once.
* OPTIONS from the p2psip client to SIPp's UAS: the built-in ``uas`` scenario only expects
  INVITE, so SIPp answers OPTIONS only in its automatic-answer mode (``-aa``).

SIPp's ``uas`` scenario ends every call with a 4 s pause (it absorbs BYE retransmissions); a
TCP connection closed during that pause counts as a failed call (``FailedTcpClosed``), so the
client stays up until SIPp has exited by itself (``-m N``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from p2psip.cli.uas import answer_sdp
from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.useragent import UserAgent

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
SIPP_TRANSPORT = {"udp": (), "tcp": ("-t", "t1")}


def _describe(result) -> str:
    """SIPp's outcome for assertion messages."""
    keys = (
        "TotalCallCreated",
        "SuccessfulCall(C)",
        "FailedCall(C)",
        "Retransmissions(C)",
        "FailedTcpClosed(C)",
        "FailedUnexpectedMessage(C)",
        "FailedTimeoutOnRecv(C)",
        "AutoAnswered(C)",
    )
    stats = {k: result.stats.get(k) for k in keys}
    return f"sipp rc={result.returncode} {stats}\n{result.errors_text()[-2000:]}"


# ---------------------------------------------------------------------------------------------
# (a) SIPp uac -> p2psip uas
# ---------------------------------------------------------------------------------------------


def _start_uas(process_factory, free_port, transport: str, *extra: str):
    port = free_port(transport)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "p2psip.cli.main", "uas", "--listen", f"{HOST}:{port}"]
    argv += ["--transport", transport, *extra]
    proc = process_factory(argv, name=f"p2psip-uas-{transport}", env=env)
    proc.wait_for_log(rf"p2psip uas listening on {transport}:{re.escape(HOST)}:{port}")
    return proc, port


@pytest.mark.parametrize("ringing", [False, True], ids=["200", "180-200"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_uac_calls_p2psip_uas(sipp, process_factory, free_port, transport, ringing):
    uas, port = _start_uas(
        process_factory, free_port, transport, *(["--ringing"] if ringing else [])
    )
    calls = 200
    result = sipp.run(
        "uac",
        f"{HOST}:{port}",
        *SIPP_TRANSPORT[transport],
        "-r", "50",
        "-m", str(calls),
        "-d", "0",
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == calls, _describe(result)
    assert result.failed_calls == 0, _describe(result)
    # SIPp's uac scenario takes 180 as optional: count the ones it saw
    expected_180 = calls if ringing else 0
    assert re.search(rf"180 <-+\s+{expected_180}\s", result.screen_text()), result.screen_text()

    uas.stop()  # SIGTERM: the uas prints its statistics and exits 0
    assert uas.returncode == 0, uas.log_tail()
    match = re.search(r"p2psip uas: (\d+) calls answered", uas.log_text())
    assert match, uas.log_tail()
    assert int(match.group(1)) == calls, uas.log_tail()


# ---------------------------------------------------------------------------------------------
# (b) p2psip UserAgent -> SIPp uas
# ---------------------------------------------------------------------------------------------

OFFER = answer_sdp(b"", HOST, 7000)


async def _call(ua: UserAgent, target: TransportAddress) -> None:
    uri = f"sip:service@{target.host}:{target.port}"
    call = await asyncio.wait_for(ua.invite(uri, sdp=OFFER, destination=target), 10)
    assert call.response.status == 200
    assert call.response.body.startswith(b"v=0"), call.response.body  # SIPp's SDP answer
    assert call.dialog is not None
    bye = await asyncio.wait_for(call.bye(), 10)
    assert bye.status == 200


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_p2psip_calls_sipp_uas(sipp, transport):
    sequential, concurrent = 20, 20
    server = sipp.start("uas", None, *SIPP_TRANSPORT[transport], "-m", str(sequential + concurrent))
    target = TransportAddress(transport, server.host, server.port)
    ua = UserAgent()
    try:
        await ua.listen(transport, HOST, 0)
        for _ in range(sequential):
            await _call(ua, target)
        await asyncio.gather(*(_call(ua, target) for _ in range(concurrent)))
        # SIPp exits after the last call's final 4 s pause; keep our side (TCP) open till then.
        result = await asyncio.to_thread(server.wait, 20)
    finally:
        await ua.close()
    assert result.returncode == 0, _describe(result)
    assert result.successful_calls == sequential + concurrent, _describe(result)
    assert result.failed_calls == 0, _describe(result)


# ---------------------------------------------------------------------------------------------
# (c) OPTIONS -> SIPp uas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_p2psip_options_to_sipp_uas(sipp, transport):
    # Without -aa SIPp's uas scenario treats OPTIONS as an unexpected first message of a new
    # call, aborts it and never answers; with -aa it sends an automatic 200.
    server = sipp.start("uas", None, *SIPP_TRANSPORT[transport], "-aa")
    target = TransportAddress(transport, server.host, server.port)
    ua = UserAgent()
    try:
        await ua.listen(transport, HOST, 0)
        response = await asyncio.wait_for(
            ua.request("OPTIONS", f"sip:service@{server.hostport}", destination=target), 10
        )
        assert response.status == 200
        # The answer came from SIPp's automatic-answer mode (counted once stats are written).
        await asyncio.sleep(1.2)
    finally:
        await ua.close()
    result = server.stop()  # the OPTIONS "call" never ends by itself: stop SIPp
    assert result.stat("AutoAnswered(C)") == 1, _describe(result)
