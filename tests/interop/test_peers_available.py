"""The interop peers and their fixtures work - checked without the p2psip SIP stack.

If these fail, interop failures elsewhere are about the environment, not about p2psip.
"""

from __future__ import annotations

import secrets
import socket

import pytest

pytestmark = pytest.mark.interop


def _raw_request(method: str, server, transport: str, *, user: str | None = None) -> str:
    """Send one hand-written SIP request to ``server`` and return the first response (text)."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    with socket.socket(family, sock_type) as sock:
        sock.settimeout(5)
        sock.bind((server.host, 0))
        local_port = sock.getsockname()[1]
        if transport == "TCP":
            sock.connect((server.host, server.port))
        branch = "z9hG4bK" + secrets.token_hex(8)
        from_user = user or "probe"
        to_uri = server.aor(user) if user else server.uri
        request = (
            f"{method} {server.uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {server.host}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{server.aor(from_user)}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{to_uri}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{server.host}\r\n"
            f"CSeq: 1 {method}\r\n"
            + (f"Contact: <sip:{user}@{server.host}:{local_port}>\r\n" if user else "")
            + "Content-Length: 0\r\n\r\n"
        ).encode()
        if transport == "UDP":
            sock.sendto(request, (server.host, server.port))
            data, _ = sock.recvfrom(65535)
        else:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65535)
                if not chunk:
                    break
                data += chunk
    return data.decode(errors="replace")


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_kamailio_answers_options_keepalive(kamailio, transport):
    response = _raw_request("OPTIONS", kamailio, transport)
    assert response.startswith("SIP/2.0 200"), response
    assert "Server: kamailio-interop" in response


def test_kamailio_challenges_register(kamailio):
    assert kamailio.auth
    assert kamailio.users["alice"] == "alicepass"
    assert kamailio.users["bob"] == "bobpass"
    response = _raw_request("REGISTER", kamailio, "UDP", user="alice")
    assert response.startswith("SIP/2.0 401"), response
    assert f'WWW-Authenticate: Digest realm="{kamailio.domain}"' in response


def test_kamailio_without_auth_accepts_register(kamailio_factory):
    server = kamailio_factory(defines=())
    assert not server.auth
    response = _raw_request("REGISTER", server, "UDP", user="bob")
    assert response.startswith("SIP/2.0 200"), response


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_register_with_digest_auth(kamailio, sipp, transport):
    result = sipp.run(
        "register_auth.xml",
        kamailio.hostport,
        "-t", transport,
        "-s", "alice",
        "-au", "alice",
        "-ap", kamailio.users["alice"],
        "-m", "1",
        timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.errors_text()
    assert result.successful_calls == 1
    assert result.failed_calls == 0
    # the binding is in Kamailio's location table (via the kamcmd control socket)
    assert "AoR: alice" in kamailio.kamcmd("ul.dump", "brief")


def test_sipp_register_with_wrong_password_fails(kamailio, sipp):
    result = sipp.run(
        "register_auth.xml",
        kamailio.hostport,
        "-s", "bob",
        "-au", "bob",
        "-ap", "not-" + kamailio.users["bob"],
        "-m", "1",
        timeout=20,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.successful_calls == 0
    assert result.failed_calls == 1
    assert "SIP/2.0 401" in result.errors_text()  # the second challenge was unexpected


def test_sipp_uac_against_sipp_uas(sipp):
    uas = sipp.start("uas", None, "-m", "10", "-timeout", "60s", name="uas")
    uac = sipp.run("uac", uas.hostport, "-m", "10", "-r", "20", name="uac", timeout=30)
    assert uac.returncode == 0, uac.errors_text()
    assert uac.successful_calls == 10
    assert uac.failed_calls == 0
    served = uas.wait(timeout=30)
    assert served.returncode == 0
    assert served.successful_calls == 10
