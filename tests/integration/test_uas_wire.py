"""``p2psip uas`` on the wire: every RFC 4475 and RFC 5118 request as a raw UDP datagram, a few
over TCP, and the status line that comes back (or nothing, for what must be dropped).

One ``p2psip uas --transport all`` process serves the whole module (loopback only). The torture
messages are the copies in ``tests/conformance/messages/`` (RFC 4475 archive; RFC 5118 in the
CRLF wire form of ``rfc5118/wire-crlf-ersip/``; see the ``SOURCE.md`` files there).

Two changes are made to the messages, never to the defects they are about:

* over UDP, ``;rport`` is added after the sent-by of the top Via (RFC 3581), so that the answer
  comes back to this test's socket (and to 127.0.0.1) instead of to port 5060 or to a
  ``received`` address written in the message; a top Via that is itself the defect (badinv01,
  badvers) makes the agent answer to the source address anyway;
* several archive messages share a branch, sent-by and method (``z9hG4bKkdjuw...``): the agent,
  correctly, takes the later one for a retransmission of the earlier (RFC 3261 §17.2.3) and
  repeats the earlier answer; and a message sent twice (RFC 5118 §4.10's two variants, the TCP
  test's repeats) with another branch is a merged request, 482 (§8.2.2.2). Such a message gets
  a suffix on its branch and its Call-ID so that it is processed on its own.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psip.endpoint.message import Response, parse_message
from p2psip.errors import SIPParseError
from tests.conftest import ManagedProcess, free_port, register_process

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = ROOT / "tests" / "conformance" / "messages"
RFC4475 = MESSAGES / "rfc4475"
RFC5118 = MESSAGES / "rfc5118" / "wire-crlf-ersip"
HOST = "127.0.0.1"
ANSWER_TIMEOUT = 3.0  # only reached when an answer is missing
SILENCE = 0.5  # how long "no answer" is awaited (once, for the whole batch)

DROP = None

# Status line expected from ``p2psip uas`` (UA core defaults + the answering agent: 200 to
# INVITE, OPTIONS and MESSAGE; no REGISTER; only the dialogs it created are known).
RFC4475_ANSWERS: dict[str, int | None] = {
    "wsinv": 481,  # a To tag: a re-INVITE in a dialog the agent does not have (§12.2.2)
    "intmeth": 501,
    "esc01": 200,
    "escnull": 405,
    "esc02": 501,
    "lwsdisp": 200,
    "longreq": 200,
    "dblreq": 405,
    "semiuri": 200,
    "transports": 200,
    "mpart01": 415,  # multipart/mixed is not in the agent's Accept (RFC 3261 §8.2.3)
    "unreason": DROP,  # response
    "noreason": DROP,  # response
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": DROP,  # response
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "baddate": 200,  # liberal: Date does not matter to an OPTIONS/INVITE answer
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 501,
    "bigcode": DROP,  # response
    "badbranch": 200,
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": 405,
    "bext01": 420,
    "invut": 415,
    "regaut01": 405,
    "multi01": 400,
    "mcl01": 400,
    "bcast": DROP,  # response with two Vias
    "zeromf": 200,
    "cparam01": 405,
    "cparam02": 405,
    "regescrt": 405,
    "sdp01": 406,
    "inv2543": 200,
    "test": DROP,  # no Via: nothing to answer to
}

RFC5118_ANSWERS: dict[str, int | None] = {
    "ipv4-mapped-ipv6": 200,
    "ipv6-bad": 400,  # Request-URI IPv6 address without [ ]
    "ipv6-bug-abnf-3-colons": 200,  # must be tolerated
    "ipv6-correct-abnf-2-colons": 200,
    "ipv6-good": 405,  # REGISTER
    "ipv6-in-sdp": 200,
    "mult-ip-in-header": 481,  # BYE for a dialog the agent does not have
    "mult-ip-in-sdp": 200,
    "port-ambiguous": 405,
    "port-unambiguous": 405,
    "via-received-param-no-delim": 200,
    "via-received-param-with-delim": 481,  # BYE for a dialog the agent does not have
}

MESSAGE_FILES = {
    **{f"rfc4475/{name}": RFC4475 / f"{name}.dat" for name in RFC4475_ANSWERS},
    **{f"rfc5118/{name}": RFC5118 / f"{name}.dat" for name in RFC5118_ANSWERS},
}
EXPECTED = {
    **{f"rfc4475/{name}": status for name, status in RFC4475_ANSWERS.items()},
    **{f"rfc5118/{name}": status for name, status in RFC5118_ANSWERS.items()},
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
_FIRST_VIA = re.compile(rb"(?im)^(?:via|v)[ \t]*:")


def with_rport(data: bytes) -> bytes:
    """``data`` with ``;rport`` after the sent-by of the first Via value (unchanged when there
    is no Via or the first value already has rport)."""
    match = _FIRST_VIA.search(data)
    if match is None:
        return data
    i = match.end()
    while i < len(data):
        c = data[i : i + 1]
        if c in (b";", b","):
            break
        if data[i : i + 2] == b"\r\n" and data[i + 2 : i + 3] not in (b" ", b"\t"):
            break
        i += 1
    end = data.find(b"\r\n", i)
    line_rest = data[i:end]
    if re.search(rb";[ \t]*rport\b", line_rest.split(b",", 1)[0]):
        return data
    return data[:i] + b";rport" + data[i:]


_BRANCH = re.compile(rb"(branch[ \t]*=[ \t]*)([^;,\s]+)", re.I)
_CALL_ID = re.compile(rb"(?im)^((?:call-id|i)[ \t]*:[ \t]*[^\r\n]*?)([ \t]*\r?\n)")
_USED: set[tuple[object, ...]] = set()  # keys of the server transactions opened in the agent


def transaction_keys(data: bytes) -> list[tuple[object, ...]]:
    """The keys under which the agent remembers the server transaction ``data`` opens: the
    RFC 3261 §17.2.3 matching key and the §8.2.2.2 merged-request key. Empty when it is
    answered statelessly (does not parse or check), is a response or has no magic cookie."""
    try:
        message = parse_message(data)
        message.check()
    except SIPParseError:
        return []
    if isinstance(message, Response):
        return []
    via = message.top_via
    if not (via.branch or "").startswith("z9hG4bK"):
        return []
    host, port = via.sent_by
    cseq = message.cseq
    return [
        ("branch", via.branch, host.lower(), port, message.method),
        ("merge", message.from_.tag, message.call_id, cseq.seq, cseq.method),
    ]


def prepared(data: bytes, *, udp: bool = True) -> bytes:
    """``data`` as sent to the agent (see the module docstring): rport added over UDP; a suffix
    on the branch and the Call-ID when an earlier message opened a transaction with the same
    keys."""
    if udp:
        data = with_rport(data)
    original, n = data, 1
    while (keys := transaction_keys(data)) and _USED.intersection(keys):
        n += 1
        suffix = f"-{n}".encode()
        via = _FIRST_VIA.search(original)
        assert via is not None
        branch = _BRANCH.search(original, via.end())
        call_id = _CALL_ID.search(original)
        assert branch is not None and call_id is not None
        cuts = sorted([branch.end(), call_id.end(1)])
        data = original[: cuts[0]] + suffix + original[cuts[0] : cuts[1]] + suffix
        data += original[cuts[1] :]
    _USED.update(keys)
    return data


def status_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def key_of(data: bytes) -> tuple[str, int, str] | None:
    """(Call-ID, CSeq number, CSeq method) of raw bytes, read without the parser (None when
    absent)."""
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0].decode("utf-8", "surrogateescape")
    head = re.sub(r"\r?\n[ \t]+", " ", head)  # unfold
    call_id = re.search(r"(?im)^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", head)
    cseq = re.search(r"(?im)^cseq[ \t]*:[ \t]*(\d+)[ \t]+([^\s]+)", head)
    if call_id is None or cseq is None:
        return None
    return call_id.group(1), int(cseq.group(1)), cseq.group(2)


def ack_for(response: Response, port: int, local_port: int) -> bytes:
    """The ACK for a 2xx (RFC 3261 §13.2.2.4), so the agent stops retransmitting it."""
    headers = response.headers
    return (
        f"ACK sip:uas@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};rport;branch=z9hG4bK-ack-{response.cseq.seq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {headers.get('From')}\r\n"
        f"To: {headers.get('To')}\r\n"
        f"Call-ID: {headers.get('Call-ID')}\r\n"
        f"CSeq: {response.cseq.seq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode("utf-8", "surrogateescape")


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    return sock


def final_answer(sock: socket.socket, key: tuple[str, int, str] | None, timeout: float) -> bytes:
    """The first final response on ``sock`` whose Call-ID and CSeq are ``key`` (provisional
    responses and retransmissions of earlier answers are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        if data.startswith(b"SIP/2.0 1"):
            continue
        if key is None or key_of(data) == key:
            return data
    raise AssertionError(f"no answer for {key} within {timeout} s")


# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``p2psip uas`` on UDP and TCP 127.0.0.1:PORT (TLS on PORT+1); yields PORT."""
    port = free_port("both", host=HOST, count=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "p2psip.cli.main", "uas"]
    argv += ["--listen", f"{HOST}:{port}", "--transport", "all"]
    log = tmp_path_factory.mktemp("uas") / "p2psip-uas.log"
    process = ManagedProcess(argv, log, name="p2psip-uas", env=env, cwd=ROOT)
    register_process(request.node, process)
    process.start()
    try:
        process.wait_for_udp_port(port, HOST)
        process.wait_for_tcp_port(port, HOST)
        yield port
    finally:
        process.stop()


# --------------------------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------------------------
def test_every_message_file_is_there() -> None:
    assert {p.stem for p in RFC4475.glob("*.dat")} == set(RFC4475_ANSWERS)
    assert {p.stem for p in RFC5118.glob("*.dat")} == set(RFC5118_ANSWERS)


def test_rport_is_added_to_every_top_via_that_parses() -> None:
    for name, path in MESSAGE_FILES.items():
        data = path.read_bytes()
        sent = with_rport(data)
        if _FIRST_VIA.search(data) is None:
            assert sent == data, name
            continue
        try:
            via = parse_message(sent).top_via
        except SIPParseError:
            continue  # the message (or its Via) is the defect: answered to the source anyway
        assert "rport" in via.params, name


def test_messages_that_must_be_dropped_get_no_answer(uas: int) -> None:
    names = [name for name, status in EXPECTED.items() if status is DROP]
    with udp_socket() as sock:
        for name in names:
            sock.sendto(prepared(MESSAGE_FILES[name].read_bytes()), (HOST, uas))
        sock.settimeout(SILENCE)
        with pytest.raises(TimeoutError):
            data, _ = sock.recvfrom(65535)
            pytest.fail(f"an answer to a dropped message: {status_line(data)!r}")


def test_every_request_gets_its_status_line_over_udp(uas: int) -> None:
    got: dict[str, str] = {}
    with udp_socket() as sock:
        local_port = sock.getsockname()[1]
        for name, status in EXPECTED.items():
            if status is DROP:
                continue
            data = prepared(MESSAGE_FILES[name].read_bytes())
            sock.sendto(data, (HOST, uas))
            answer = final_answer(sock, key_of(data), ANSWER_TIMEOUT)
            got[name] = status_line(answer)
            response = parse_message(answer)
            assert isinstance(response, Response)
            if response.status == 200 and response.cseq.method == "INVITE":
                sock.sendto(ack_for(response, uas, local_port), (HOST, uas))
    wanted = {name: status for name, status in EXPECTED.items() if status is not DROP}
    assert {name: int(line.split()[1]) for name, line in got.items()} == wanted, got


# --------------------------------------------------------------------------------------------
# TCP
# --------------------------------------------------------------------------------------------
def tcp_connection(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=ANSWER_TIMEOUT)
    sock.settimeout(ANSWER_TIMEOUT)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> bytes:
    """One response framed by Content-Length from the stream."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65535)
        assert chunk, "connection closed before a response"
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
    total = len(head) + 4 + (int(length.group(1)) if length else 0)
    while len(buffer) < total:
        chunk = sock.recv(65535)
        assert chunk, "connection closed inside a response"
        buffer += chunk
    frame = bytes(buffer[:total])
    del buffer[:total]
    return frame


def closed_by_peer(sock: socket.socket) -> tuple[bool, list[str]]:
    """Read until EOF (or the timeout); (closed, status lines seen before)."""
    seen = b""
    try:
        while chunk := sock.recv(65535):
            seen += chunk
    except TimeoutError:
        return False, []
    except ConnectionResetError:
        pass
    return True, [status_line(m) for m in re.findall(rb"(SIP/2\.0 [^\r\n]*)", seen)]


def test_tcp_answers_and_a_malformed_message_does_not_close_the_connection(uas: int) -> None:
    # Over a stream the answers come back on the connection; Via sent-by is not used.
    sequence = ["zeromf", "quotbal", "bext01", "badinv01", "inv2543", "lwsdisp"]
    expected = [200, 400, 420, 400, 200, 200]
    buffer = bytearray()
    statuses = []
    with tcp_connection(uas) as sock:
        for name in sequence:
            data = (RFC4475 / f"{name}.dat").read_bytes()
            if name == "inv2543":  # RFC 2543 framing is for datagrams: give it a Content-Length
                head, _, body = data.partition(b"\r\n\r\n")
                data = head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            data = prepared(data, udp=False)
            sock.sendall(data)
            while True:
                answer = read_response(sock, buffer)
                if not answer.startswith(b"SIP/2.0 1"):
                    break
            assert key_of(answer) == key_of(data), name
            statuses.append(int(status_line(answer).split()[1]))
    assert statuses == expected


@pytest.mark.parametrize("name", ["ncl", "mcl01"])
def test_tcp_framing_error_closes_the_connection(uas: int, name: str) -> None:
    # RFC 4475 §3.1.2.3, §3.3.9: negative or conflicting Content-Length on a stream is a
    # framing error; the connection cannot be resynchronised and is closed.
    with tcp_connection(uas) as sock:
        sock.sendall((RFC4475 / f"{name}.dat").read_bytes())
        closed, lines = closed_by_peer(sock)
    assert closed
    assert all(line.startswith("SIP/2.0 400") for line in lines), lines
